/**
 * fio's nbd engine (libnbd) against the server: random writes with verification at queue
 * depth 16, then sequential reads with verification, over TCP and a Unix socket.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { requireTool, tempDir } from '../helpers/tools.js';
import { MiB, runAsync, startServer, TestTarget, type TestServer } from './helpers.js';

describe('nbd with fio --ioengine=nbd', () => {
  const dir = tempDir('nbd-fio');
  let srv: TestServer;

  before(async () => {
    srv = await startServer([{ name: 'disk', target: new TestTarget(64 * MiB) }], dir.path);
  });
  after(async () => {
    await srv.close();
    dir.cleanup();
  });

  async function fio(uri: string, args: string[]) {
    // fio saves a verify state file in its working directory: keep it in the temp dir
    const r = await runAsync('fio', ['--name=nbdtest', '--ioengine=nbd', `--uri=${uri}`, '--output-format=json', '--verify_state_save=0', ...args], {
      timeoutMs: 30000,
      cwd: dir.path,
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stderr, /verify|bad magic|crc32c/i, r.stderr);
    const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: { error: number; read: { io_bytes: number }; write: { io_bytes: number } }[] };
    assert.equal(j.jobs[0].error, 0);
    return j.jobs[0];
  }

  test('8 MiB randwrite bs=4k iodepth=16 verify=crc32c', async (t) => {
    if (!requireTool(t, 'fio')) return;
    const j = await fio(srv.uri('disk'), ['--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=8m', '--verify=crc32c', '--do_verify=1']);
    assert.equal(j.write.io_bytes, 8 * MiB);
    assert.equal(j.read.io_bytes, 8 * MiB, 'every block read back and verified');
  });

  test('mixed block sizes at an offset, written with FUA-free writes and verified, over the Unix socket', async (t) => {
    if (!requireTool(t, 'fio')) return;
    const j = await fio(srv.unixUri('disk'), [
      '--rw=randwrite',
      '--bsrange=4k-256k',
      '--iodepth=32',
      '--offset=16m',
      '--size=16m',
      '--verify=crc32c',
      '--verify_backlog=64',
      '--do_verify=1',
    ]);
    assert.ok(j.write.io_bytes >= 16 * MiB);
  });
});
