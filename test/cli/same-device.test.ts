/**
 * Issue 15 item 5: one device named twice. mdadm 4.2 opens each --create member O_EXCL and keeps
 * it open (Create.c, super1 add_to_super), so the second open of the same device fails:
 * "failed to open DEV after earlier success - aborting", exit 1, nothing written. --add of a
 * device an array already holds fails its O_EXCL open in Manage_subdevs: "Cannot open DEV:
 * Device or resource busy", exit 1. The real mdadm cannot judge here (it needs the md driver to
 * get that far: without it, it stops at opening /dev/mdX), so the expected text is mdadm's
 * message as its source prints it.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultCtx, main } from '../../src/mdadm/main.js';
import { sparseFile, tempDir, tsmd } from '../helpers/tools.js';

const MiB = 1024 * 1024;

describe('the same device twice', () => {
  let dir: { path: string; cleanup: () => void };
  const p = (n: string) => join(dir.path, n);
  const hash = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
  before(() => {
    dir = tempDir('samedev');
    for (const n of ['u0', 'u1', 'u2', 'u3']) sparseFile(p(n), 32 * MiB);
    symlinkSync(p('u0'), p('link0'));
  });
  after(() => dir.cleanup());

  test('--create with one device twice is refused, exit 1, nothing written', () => {
    const before = hash(p('u0'));
    for (const second of [p('u0'), `${dir.path}/./u0`, p('link0')]) {
      const r = tsmd(['--create', '/dev/md40', '-l1', '-n2', '--run', p('u0'), second]);
      assert.equal(r.status, 1, r.stderr);
      assert.equal(r.stderr, `tsmd: failed to open ${second} after earlier success - aborting\n`);
      assert.equal(hash(p('u0')), before, 'a refused create writes nothing');
    }
  });

  test('--create names the device as given (relative path)', async () => {
    const err: string[] = [];
    const io = { out: () => {}, err: (s: string) => void err.push(s), interactive: false, ask: async () => '', env: {} };
    const ctx = { ...defaultCtx(), cwd: dir.path };
    assert.equal(await main(['--create', '/dev/md40', '-l1', '-n2', '--run', 'u0', 'u0'], io, ctx), 1);
    assert.equal(err.join(''), 'tsmd: failed to open u0 after earlier success - aborting\n');
  });

  test('--add of a member (under any name) or of one device twice is refused, exit 1', async () => {
    const err: string[] = [];
    const io = { out: () => {}, err: (s: string) => void err.push(s), interactive: false, ask: async () => '', env: { TSMD_HOMEHOST: 'h' } };
    const ctx = { ...defaultCtx(), daemon: true, cwd: dir.path };
    try {
      assert.equal(await main(['--create', '/dev/md41', '-l1', '-n2', '--run', '--assume-clean', '-q', 'u1', 'u2'], io, ctx), 0, err.join(''));
      err.length = 0;
      assert.equal(await main(['/dev/md41', '--add', 'u1'], io, ctx), 1);
      assert.equal(err.join(''), 'tsmd: Cannot open u1: Device or resource busy\n');
      err.length = 0;
      // another spelling of a member is the member
      assert.equal(await main(['/dev/md41', '--add', `${dir.path}/../${dir.path.split('/').pop()}/u2`], io, ctx), 1);
      assert.match(err.join(''), /Device or resource busy/);
      err.length = 0;
      assert.equal(await main(['/dev/md41', '--add', 'u3', 'u3'], io, ctx), 1);
      assert.equal(err.join(''), 'tsmd: added u3\ntsmd: Cannot open u3: Device or resource busy\n');
      assert.equal(ctx.registry.get('/dev/md41').array.members.length, 3, 'u3 once, as a spare');
    } finally {
      await main(['--stop', '/dev/md41'], io, ctx);
    }
  });
});
