/**
 * QEMU's NBD client as the judge: qemu-io pattern writes and reads at odd offsets (QEMU obeys
 * the advertised minimum block size with read-modify-write), qemu-img info/convert/compare.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requireTool, tempDir } from '../helpers/tools.js';
import { MiB, runAsync, sha256, sha256File, startServer, TestTarget, type TestServer } from './helpers.js';

const SIZE = 32 * MiB;

describe('nbd with qemu-io and qemu-img', () => {
  const dir = tempDir('nbd-qemu');
  let srv: TestServer;
  const disk = new TestTarget(SIZE);
  const ro = new TestTarget(MiB, { readOnly: true });

  before(async () => {
    srv = await startServer(
      [
        { name: 'disk', target: disk },
        { name: 'ro', target: ro },
      ],
      dir.path,
    );
  });
  after(async () => {
    await srv.close();
    dir.cleanup();
  });

  async function qemuIo(uri: string, cmds: string[], ro = false) {
    const args = ['-f', 'raw', ...(ro ? ['-r'] : []), uri];
    for (const c of cmds) args.push('-c', c);
    return runAsync('qemu-io', args, { timeoutMs: 15000 });
  }

  test('pattern writes and reads at odd offsets (TCP and Unix socket)', async (t) => {
    if (!requireTool(t, 'qemu-io')) return;
    const r = await qemuIo(srv.uri('disk'), [
      'write -P 0xab 1000 3000',
      'read -P 0xab 1000 3000',
      'read -P 0 0 1000',
      'read -P 0 4000 1000',
      'write -P 0x11 1048575 70001',
      'aio_write -P 0x22 2097152 65536',
      'aio_write -P 0x33 4194304 131072',
      'aio_flush',
      'read -P 0x22 2097152 65536',
      'read -P 0x33 4194304 131072',
      'write -z 4194304 4096',
      'read -P 0 4194304 4096',
      'read -P 0x33 4198400 126976',
      'discard 2097152 65536',
      'flush',
    ]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr, /Pattern verification failed|failed/i);
    // the same bytes through the Unix socket, and in the target itself
    const u = await qemuIo(srv.unixUri('disk'), ['read -P 0xab 1000 3000', 'read -P 0x11 1048575 70001']);
    assert.equal(u.status, 0, u.stdout + u.stderr);
    assert.doesNotMatch(u.stdout + u.stderr, /failed/i);
    const b = new Uint8Array(5000);
    disk.dev.readSync(b, 0);
    assert.ok(b.subarray(0, 1000).every((x) => x === 0));
    assert.ok(b.subarray(1000, 4000).every((x) => x === 0xab));
    assert.ok(b.subarray(4000).every((x) => x === 0));
    assert.ok(disk.calls.flush >= 2);
  });

  test('read-only export: reads work, writes are refused', async (t) => {
    if (!requireTool(t, 'qemu-io')) return;
    const r = await qemuIo(srv.uri('ro'), ['read -P 0 0 4096'], true);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const w = await qemuIo(srv.uri('ro'), ['write -P 1 0 512']);
    assert.match(w.stdout + w.stderr, /read-only|Permission|not permitted/i);
  });

  test('qemu-img info, convert in and out, compare', async (t) => {
    if (!requireTool(t, 'qemu-img')) return;
    const input = join(dir.path, 'in.img');
    const data = randomBytes(SIZE);
    writeFileSync(input, data);
    const info = await runAsync('qemu-img', ['info', '--output=json', srv.uri('disk')]);
    assert.equal(info.status, 0, info.stderr);
    assert.equal((JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'], SIZE);
    const cin = await runAsync('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', input, srv.uri('disk')], { timeoutMs: 30000 });
    assert.equal(cin.status, 0, cin.stderr);
    const cmp = await runAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', input, srv.unixUri('disk')], { timeoutMs: 30000 });
    assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
    assert.match(cmp.stdout, /Images are identical/);
    const out = join(dir.path, 'out.qcow2');
    const cout = await runAsync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', srv.uri('disk'), out], { timeoutMs: 30000 });
    assert.equal(cout.status, 0, cout.stderr);
    const cmp2 = await runAsync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', out, input], { timeoutMs: 30000 });
    assert.equal(cmp2.status, 0, cmp2.stdout + cmp2.stderr);
    // a difference is seen as one
    disk.dev.writeSync(new Uint8Array(512).fill(1), 5 * MiB);
    const cmp3 = await runAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', input, srv.uri('disk')], { timeoutMs: 30000 });
    assert.equal(cmp3.status, 1, cmp3.stdout + cmp3.stderr);
    const raw = join(dir.path, 'out.raw');
    const craw = await runAsync('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri('disk'), raw], { timeoutMs: 30000 });
    assert.equal(craw.status, 0, craw.stderr);
    const b = new Uint8Array(SIZE);
    disk.dev.readSync(b, 0);
    assert.equal(await sha256File(raw), sha256(b));
  });
});
