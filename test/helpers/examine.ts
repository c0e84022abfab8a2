/** tsmd --examine run in this process, as bin/tsmd runs it (a spawn per member is slow). */
import assert from 'node:assert/strict';
import { main } from '../../src/mdadm/main.js';

/** What `tsmd --examine path` prints (TZ=UTC, as the tests run the real mdadm). */
export async function tsmdExamine(path: string): Promise<string> {
  let out = '';
  let errs = '';
  const io = { out: (x: string) => (out += x), err: (x: string) => (errs += x), interactive: false, ask: async () => '', env: { ...process.env, TZ: 'UTC' } };
  const tz = process.env.TZ;
  process.env.TZ = 'UTC';
  try {
    assert.equal(await main(['--examine', path], io), 0, errs);
  } finally {
    if (tz === undefined) delete process.env.TZ;
    else process.env.TZ = tz;
  }
  return out;
}
