/**
 * libnbd's nbdinfo as the judge of the handshake: size, transmission flags, block sizes,
 * descriptions, --list, --json, over TCP and a Unix socket.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { requireTool, tempDir } from '../helpers/tools.js';
import { MiB, runAsync, startServer, TestTarget, type TestServer } from './helpers.js';

interface InfoExport {
  'export-name': string;
  description?: string;
  'export-size': number;
  is_read_only: boolean;
  can_multi_conn: boolean;
  can_fua: boolean;
  can_trim: boolean;
  can_zero: boolean;
  can_fast_zero: boolean;
  can_flush: boolean;
  can_cache: boolean;
  can_df: boolean;
  block_size_minimum: number;
  block_size_preferred: number;
  block_size_maximum: number;
}
interface Info {
  protocol: string;
  TLS: boolean;
  structured: boolean;
  exports: InfoExport[];
}

describe('nbd with nbdinfo', () => {
  const dir = tempDir('nbd-info');
  let srv: TestServer;

  before(async () => {
    srv = await startServer(
      [
        { name: 'disk', description: 'RAID5 of 4 files', target: new TestTarget(64 * MiB) },
        { name: 'ro', target: new TestTarget(MiB, { readOnly: true }) },
        {
          name: 'big-blocks',
          description: 'minimum 4096',
          target: new TestTarget(16 * MiB, { noTrim: true, blockSize: { min: 4096, preferred: 65536, max: 8 * MiB } }),
        },
      ],
      dir.path,
    );
  });
  after(async () => {
    await srv.close();
    dir.cleanup();
  });

  async function info(uri: string, extra: string[] = []): Promise<Info> {
    const r = await runAsync('nbdinfo', ['--json', ...extra, uri], { timeoutMs: 15000 });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as Info;
  }

  test('size, flags and block sizes of a read-write export (TCP and Unix socket)', async (t) => {
    if (!requireTool(t, 'nbdinfo')) return;
    for (const uri of [srv.uri('disk'), srv.unixUri('disk')]) {
      const i = await info(uri);
      assert.equal(i.protocol, 'newstyle-fixed');
      assert.equal(i.TLS, false);
      assert.equal(i.structured, true);
      assert.equal(i.exports.length, 1);
      const e = i.exports[0];
      assert.equal(e['export-name'], 'disk');
      assert.equal(e.description, 'RAID5 of 4 files');
      assert.equal(e['export-size'], 64 * MiB);
      assert.deepEqual(
        [e.is_read_only, e.can_multi_conn, e.can_fua, e.can_trim, e.can_zero, e.can_fast_zero, e.can_flush, e.can_cache, e.can_df],
        [false, true, true, true, true, true, true, true, true],
      );
      assert.deepEqual([e.block_size_minimum, e.block_size_preferred, e.block_size_maximum], [512, 4096, 32 * MiB]);
    }
  });

  test('read-only export and custom block sizes', async (t) => {
    if (!requireTool(t, 'nbdinfo')) return;
    const ro = (await info(srv.uri('ro'))).exports[0];
    assert.equal(ro.is_read_only, true);
    assert.equal(ro.can_fua, false);
    assert.equal(ro.can_trim, false);
    assert.equal(ro.can_zero, false);
    assert.equal(ro['export-size'], MiB);
    const bb = (await info(srv.uri('big-blocks'))).exports[0];
    assert.deepEqual([bb.block_size_minimum, bb.block_size_preferred, bb.block_size_maximum], [4096, 65536, 8 * MiB]);
    assert.equal(bb.can_trim, false);
  });

  test('--list names every export with its description', async (t) => {
    if (!requireTool(t, 'nbdinfo')) return;
    const l = await info(srv.uri(''), ['--list']);
    assert.deepEqual(
      l.exports.map((e) => [e['export-name'], e.description ?? null, e['export-size']]),
      [
        ['disk', 'RAID5 of 4 files', 64 * MiB],
        ['ro', null, MiB],
        ['big-blocks', 'minimum 4096', 16 * MiB],
      ],
    );
    const text = await runAsync('nbdinfo', ['--list', srv.unixUri('')], { timeoutMs: 15000 });
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /export="disk":\n\s+description: RAID5 of 4 files/);
  });

  test('single facts: --size, --can, --is; an unknown export fails cleanly', async (t) => {
    if (!requireTool(t, 'nbdinfo')) return;
    const size = await runAsync('nbdinfo', ['--size', srv.uri('disk')]);
    assert.equal(size.stdout.trim(), String(64 * MiB));
    // nbdinfo --can/--is: exit 0 for true, 2 for false
    assert.equal((await runAsync('nbdinfo', ['--can', 'multi-conn', srv.uri('disk')])).status, 0);
    assert.equal((await runAsync('nbdinfo', ['--can', 'fua', srv.uri('disk')])).status, 0);
    assert.equal((await runAsync('nbdinfo', ['--can', 'trim', srv.uri('disk')])).status, 0);
    assert.equal((await runAsync('nbdinfo', ['--is', 'read-only', srv.uri('ro')])).status, 0);
    assert.equal((await runAsync('nbdinfo', ['--is', 'read-only', srv.uri('disk')])).status, 2);
    const bad = await runAsync('nbdinfo', [srv.uri('nope')]);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /nope/);
    // the server is still fine
    assert.equal((await runAsync('nbdinfo', ['--size', srv.uri('ro')])).stdout.trim(), String(MiB));
  });
});
