/**
 * Bulk data through the server with libnbd's nbdcopy: a random 64 MiB file copied in and out,
 * with one and with four connections (multi-conn), over TCP and a Unix socket.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requireTool, tempDir } from '../helpers/tools.js';
import { MiB, runAsync, sha256, sha256File, startServer, TestTarget, type TestServer } from './helpers.js';

const SIZE = 64 * MiB;

describe('nbd with nbdcopy', () => {
  const dir = tempDir('nbd-copy');
  let srv: TestServer;
  const target = new TestTarget(SIZE);
  const input = join(dir.path, 'in.img');
  let inputSum = '';

  before(async () => {
    const data = randomBytes(SIZE);
    writeFileSync(input, data);
    inputSum = sha256(data);
    srv = await startServer([{ name: 'disk', target }], dir.path);
  });
  after(async () => {
    await srv.close();
    dir.cleanup();
  });

  function targetSum(): string {
    const b = new Uint8Array(SIZE);
    target.dev.readSync(b, 0);
    return sha256(b);
  }

  for (const connections of [1, 4]) {
    test(`64 MiB in and out, --connections=${connections}`, async (t) => {
      if (!requireTool(t, 'nbdcopy')) return;
      target.dev.writeSync(new Uint8Array(SIZE), 0);
      const inUri = connections === 1 ? srv.uri('disk') : srv.unixUri('disk');
      const outUri = connections === 1 ? srv.unixUri('disk') : srv.uri('disk');
      const w = await runAsync('nbdcopy', [`--connections=${connections}`, input, inUri], { timeoutMs: 30000 });
      assert.equal(w.status, 0, w.stderr);
      assert.equal(targetSum(), inputSum, 'the target holds the file');
      const out = join(dir.path, `out${connections}.img`);
      const r = await runAsync('nbdcopy', [`--connections=${connections}`, '--requests=16', outUri, out], { timeoutMs: 30000 });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(await sha256File(out), inputSum, 'the copy out equals the input');
    });
  }

  test('nbdcopy between two exports of the same server (zeroes and flush on the way)', async (t) => {
    if (!requireTool(t, 'nbdcopy')) return;
    const second = new TestTarget(SIZE);
    // a server per export set: reuse this one's listener by adding the export through a new server
    const dir2 = tempDir('nbd-copy2');
    const s2 = await startServer([{ name: 'copy', target: second }], dir2.path);
    try {
      const r = await runAsync('nbdcopy', ['--flush', srv.uri('disk'), s2.uri('copy')], { timeoutMs: 30000 });
      assert.equal(r.status, 0, r.stderr);
      const b = new Uint8Array(SIZE);
      second.dev.readSync(b, 0);
      assert.equal(sha256(b), targetSum());
      assert.ok(second.calls.flush >= 1, 'nbdcopy --flush reached the target');
    } finally {
      await s2.close();
      dir2.cleanup();
    }
  });
});
