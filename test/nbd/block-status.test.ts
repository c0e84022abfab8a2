/**
 * NBD block status (base:allocation): LIST/SET_META_CONTEXT haggling and NBD_CMD_BLOCK_STATUS
 * with a raw client (spec rules: extents within the request, REQ_ONE, u32 lengths, no context
 * no status), then the clients that use it - nbdinfo --map, qemu-img map, nbdsh's
 * block_status - against a memory target with real holes and against an md array of the
 * daemon, which reports everything as data (it cannot know better, and that is always true).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { BlockTarget } from '../../src/nbd/target.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { requireTool, sparseFile, tempDir } from '../helpers/tools.js';
import { HOLE_BLOCK, MiB, NBD, RawClient, runAsync, startServer, systemPythonEnv, TestTarget, type TestServer } from './helpers.js';

const GiB = 1024 * MiB;
const HOLE_ZERO = 3;

/** LIST/SET_META_CONTEXT data: export name, query count, queries. */
function metaData(exportName: string, queries: string[]): Buffer {
  const parts = [Buffer.alloc(4), Buffer.from(exportName), Buffer.alloc(4)];
  parts[0]!.writeUInt32BE(Buffer.byteLength(exportName));
  parts[2]!.writeUInt32BE(queries.length);
  for (const q of queries) {
    const l = Buffer.alloc(4);
    l.writeUInt32BE(Buffer.byteLength(q));
    parts.push(l, Buffer.from(q));
  }
  return Buffer.concat(parts);
}

const contexts = (replies: { type: number; data: Buffer }[]) =>
  replies.filter((r) => r.type === NBD.REP.META_CONTEXT).map((r) => [r.data.readUInt32BE(0), r.data.toString('utf8', 4)] as const);

/** handshake, structured replies, SET_META_CONTEXT base:allocation on `name`, GO */
async function statusClient(port: number, name: string, queries = ['base:allocation']): Promise<{ c: RawClient; id: number }> {
  const c = await RawClient.connect({ port });
  await c.handshake();
  assert.equal((await c.option(NBD.OPT.STRUCTURED_REPLY))[0]!.type, NBD.REP.ACK);
  c.structured = true;
  const set = await c.option(NBD.OPT.SET_META_CONTEXT, metaData(name, queries));
  assert.equal(set.at(-1)!.type, NBD.REP.ACK);
  const go = await c.option(NBD.OPT.GO, RawClient.goData(name, []));
  assert.equal(go.at(-1)!.type, NBD.REP.ACK);
  return { c, id: contexts(set)[0]?.[0] ?? -1 };
}

describe('NBD block status (base:allocation)', () => {
  const dir = tempDir('nbd-bs');
  let srv: TestServer;
  const holes = new TestTarget(16 * MiB, { holes: true });
  /** 8 GiB that says it is one hole: more than a request can ask for at once */
  const huge: BlockTarget = {
    sizeBytes: 8 * GiB,
    readOnly: true,
    read: () => Promise.reject(new Error('not read in this test')),
    write: () => Promise.reject(new Error('read-only')),
    flush: () => Promise.resolve(),
    blockStatus: (_off, _len) => Promise.resolve([{ lengthBytes: 8 * GiB, hole: true, zero: true }]),
  };
  const plainHuge: BlockTarget = { ...huge, blockStatus: undefined };

  before(async () => {
    srv = await startServer(
      [
        { name: 'holes', target: holes },
        { name: 'plain', target: new TestTarget(4 * MiB) },
        { name: 'huge', target: huge },
        { name: 'plainhuge', target: plainHuge },
      ],
      dir.path,
    );
    // data at [1 MiB, 2 MiB) and [5 MiB, 5 MiB + 4 KiB); the rest never written
    await holes.write(new Uint8Array(MiB).fill(0xab), MiB);
    await holes.write(new Uint8Array(4096).fill(0xcd), 5 * MiB);
  });
  after(async () => {
    await srv.close();
    dir.cleanup();
  });

  test('LIST and SET_META_CONTEXT: base:allocation only, the rules of each', async () => {
    const c = await RawClient.connect({ port: srv.port });
    await c.handshake();
    // LIST: no query = everything; "base:" = the namespace; others ignored; id 0 (reserved)
    assert.deepEqual(contexts(await c.option(NBD.OPT.LIST_META_CONTEXT, metaData('holes', []))), [[0, 'base:allocation']]);
    assert.deepEqual(contexts(await c.option(NBD.OPT.LIST_META_CONTEXT, metaData('holes', ['base:']))), [[0, 'base:allocation']]);
    const other = await c.option(NBD.OPT.LIST_META_CONTEXT, metaData('holes', ['qemu:dirty-bitmap:x', 'nonsense']));
    assert.deepEqual(other.map((r) => r.type), [NBD.REP.ACK], 'unknown contexts: none, no error');
    assert.equal((await c.option(NBD.OPT.LIST_META_CONTEXT, metaData('nope', [])))[0]!.type, NBD.REP.ERR_UNKNOWN);
    const lying = metaData('holes', ['base:allocation']);
    lying.writeUInt32BE(2, 4 + 5);
    assert.equal((await c.option(NBD.OPT.LIST_META_CONTEXT, lying))[0]!.type, NBD.REP.ERR_INVALID, 'count beyond the data');
    // SET needs structured replies
    assert.equal((await c.option(NBD.OPT.SET_META_CONTEXT, metaData('holes', ['base:allocation'])))[0]!.type, NBD.REP.ERR_INVALID);
    assert.equal((await c.option(NBD.OPT.STRUCTURED_REPLY))[0]!.type, NBD.REP.ACK);
    const set = await c.option(NBD.OPT.SET_META_CONTEXT, metaData('holes', ['qemu:x', 'base:allocation', 'base:allocation']));
    assert.deepEqual(contexts(set), [[1, 'base:allocation']], 'once, with a non-zero id');
    assert.equal(set.at(-1)!.type, NBD.REP.ACK);
    // "base:" in SET selects nothing (qemu-nbd's reading of the wildcard)
    assert.deepEqual(contexts(await c.option(NBD.OPT.SET_META_CONTEXT, metaData('holes', ['base:']))), []);
    c.destroy();
  });

  test('BLOCK_STATUS: holes and data, within the request, REQ_ONE, errors', async () => {
    const { c, id } = await statusClient(srv.port, 'holes');
    assert.equal(id, 1);
    const st = async (off: number, len: number, flags = 0) => {
      const r = await c.cmd(NBD.CMD.BLOCK_STATUS, flags, off, len);
      assert.equal(r.error, 0, r.message);
      assert.equal(r.status?.length, 1, 'one chunk per context');
      assert.equal(r.status[0]!.id, id);
      return r.status[0]!.extents;
    };
    assert.deepEqual(await st(0, 16 * MiB), [
      [MiB, HOLE_ZERO],
      [MiB, 0],
      [3 * MiB, HOLE_ZERO],
      [HOLE_BLOCK, 0],
      [11 * MiB - HOLE_BLOCK, HOLE_ZERO],
    ]);
    // clipped to the request, even mid-block
    assert.deepEqual(await st(MiB + 512, 2048), [[2048, 0]]);
    assert.deepEqual(await st(MiB - 4096, 8192), [[4096, HOLE_ZERO], [4096, 0]]);
    assert.deepEqual(await st(MiB - 4096, 8192, NBD.FLAG.REQ_ONE), [[4096, HOLE_ZERO]], 'REQ_ONE: one extent');
    assert.deepEqual(await st(0, 16 * MiB, NBD.FLAG.REQ_ONE), [[MiB, HOLE_ZERO]]);
    // trim makes a hole again, a write with data fills one
    assert.equal((await c.cmd(NBD.CMD.TRIM, 0, MiB, MiB)).error, 0);
    assert.deepEqual(await st(0, 2 * MiB), [[2 * MiB, HOLE_ZERO]]);
    assert.equal((await c.cmd(NBD.CMD.WRITE_ZEROES, NBD.FLAG.NO_HOLE, 0, HOLE_BLOCK)).error, 0);
    assert.deepEqual(await st(0, 2 * HOLE_BLOCK), [[HOLE_BLOCK, 0], [HOLE_BLOCK, HOLE_ZERO]], 'NO_HOLE zeroes are data');
    // errors
    assert.equal((await c.cmd(NBD.CMD.BLOCK_STATUS, 0, 0, 0)).error, NBD.ERR.EINVAL, 'length 0');
    assert.equal((await c.cmd(NBD.CMD.BLOCK_STATUS, 0, 16 * MiB - 512, 1024)).error, NBD.ERR.EINVAL, 'beyond the end');
    assert.equal((await c.cmd(NBD.CMD.BLOCK_STATUS, NBD.FLAG.FUA, 0, 512)).error, NBD.ERR.EINVAL, 'bad flag');
    assert.ok((await c.cmd(NBD.CMD.READ, 0, MiB + MiB / 2, 512)).data.every((b) => b === 0), 'trimmed reads zero');
    c.destroy();
  });

  test('no context, another export\'s context, STARTTLS-less plain: BLOCK_STATUS refused', async () => {
    // structured but no SET
    const a = await RawClient.connect({ port: srv.port });
    await a.handshake();
    assert.equal((await a.option(NBD.OPT.STRUCTURED_REPLY))[0]!.type, NBD.REP.ACK);
    a.structured = true;
    assert.equal((await a.option(NBD.OPT.GO, RawClient.goData('holes', []))).at(-1)!.type, NBD.REP.ACK);
    assert.equal((await a.cmd(NBD.CMD.BLOCK_STATUS, 0, 0, 4096)).error, NBD.ERR.EINVAL);
    a.destroy();
    // SET for 'holes', GO 'plain': the context does not follow
    const b = await RawClient.connect({ port: srv.port });
    await b.handshake();
    assert.equal((await b.option(NBD.OPT.STRUCTURED_REPLY))[0]!.type, NBD.REP.ACK);
    b.structured = true;
    assert.equal((await b.option(NBD.OPT.SET_META_CONTEXT, metaData('holes', ['base:allocation']))).at(-1)!.type, NBD.REP.ACK);
    assert.equal((await b.option(NBD.OPT.GO, RawClient.goData('plain', []))).at(-1)!.type, NBD.REP.ACK);
    assert.equal((await b.cmd(NBD.CMD.BLOCK_STATUS, 0, 0, 4096)).error, NBD.ERR.EINVAL);
    b.destroy();
    // a context selected, then SET with only unknown queries: none selected any more
    const d = await RawClient.connect({ port: srv.port });
    await d.handshake();
    assert.equal((await d.option(NBD.OPT.STRUCTURED_REPLY))[0]!.type, NBD.REP.ACK);
    d.structured = true;
    await d.option(NBD.OPT.SET_META_CONTEXT, metaData('plain', ['base:allocation']));
    assert.deepEqual(contexts(await d.option(NBD.OPT.SET_META_CONTEXT, metaData('plain', ['qemu:x']))), []);
    assert.equal((await d.option(NBD.OPT.GO, RawClient.goData('plain', []))).at(-1)!.type, NBD.REP.ACK);
    assert.equal((await d.cmd(NBD.CMD.BLOCK_STATUS, 0, 0, 4096)).error, NBD.ERR.EINVAL);
    d.destroy();
  });

  test('u32 lengths: a target\'s extent longer than the request is cut to it; without the hook, data', async () => {
    for (const [name, flags] of [['huge', HOLE_ZERO], ['plainhuge', 0]] as const) {
      const { c } = await statusClient(srv.port, name);
      const max = 0xffffffff - 511; // the largest 512-aligned u32
      const r = await c.cmd(NBD.CMD.BLOCK_STATUS, 0, 2 * GiB, max);
      assert.equal(r.error, 0, r.message);
      assert.deepEqual(r.status![0]!.extents, [[max, flags]], name);
      const one = await c.cmd(NBD.CMD.BLOCK_STATUS, NBD.FLAG.REQ_ONE, 8 * GiB - 4096, 4096);
      assert.deepEqual(one.status![0]!.extents, [[4096, flags]]);
      c.destroy();
    }
  });

  test('nbdinfo --map, qemu-img map and nbdsh block_status see the holes', async (t) => {
    if (!requireTool(t, 'nbdinfo') || !requireTool(t, 'qemu-img') || !requireTool(t, 'nbdsh', 'Debian package python3-libnbd')) return;
    // the previous test trimmed [1, 2) MiB and wrote [0, 64K) with NO_HOLE: data at 0-64K and 5 MiB
    const m = await runAsync('nbdinfo', ['--map', '--json', srv.uri('holes')]);
    assert.equal(m.status, 0, m.stderr);
    const map = (JSON.parse(m.stdout) as { offset: number; length: number; type: number }[]).map((e) => [e.offset, e.length, e.type]);
    assert.deepEqual(map, [
      [0, HOLE_BLOCK, 0],
      [HOLE_BLOCK, 5 * MiB - HOLE_BLOCK, HOLE_ZERO],
      [5 * MiB, HOLE_BLOCK, 0],
      [5 * MiB + HOLE_BLOCK, 11 * MiB - HOLE_BLOCK, HOLE_ZERO],
    ]);
    const q = await runAsync('qemu-img', ['map', '--output=json', '-f', 'raw', srv.uri('holes')]);
    assert.equal(q.status, 0, q.stderr);
    const qm = (JSON.parse(q.stdout) as { start: number; length: number; data: boolean; zero: boolean }[]).map((e) => [e.start, e.length, e.data, e.zero]);
    assert.deepEqual(qm, [
      [0, HOLE_BLOCK, true, false],
      [HOLE_BLOCK, 5 * MiB - HOLE_BLOCK, false, true],
      [5 * MiB, HOLE_BLOCK, true, false],
      [5 * MiB + HOLE_BLOCK, 11 * MiB - HOLE_BLOCK, false, true],
    ]);
    const script = [
      'h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)',
      `h.connect_uri(${JSON.stringify(srv.uri('holes'))})`,
      'assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)',
      'seen = []',
      '# block_status(count, offset, callback[, flags])',
      'h.block_status(4 * 1024 * 1024, 2 * 1024 * 1024, lambda ctx, off, ents, err: seen.append([ctx, off, list(ents)]) or 0)',
      'one = []',
      'h.block_status(4 * 1024 * 1024, 2 * 1024 * 1024, lambda ctx, off, ents, err: one.append(list(ents)) or 0, nbd.CMD_FLAG_REQ_ONE)',
      'import json; print(json.dumps({"seen": seen, "one": one}))',
    ].join('\n');
    const s = await runAsync('nbdsh', ['-c', script], { env: systemPythonEnv, timeoutMs: 30000 });
    assert.equal(s.status, 0, s.stderr);
    const out = JSON.parse(s.stdout.trim().split('\n').at(-1)!) as { seen: [string, number, number[]][]; one: number[][] };
    assert.deepEqual(out.seen, [['base:allocation', 2 * MiB, [3 * MiB, HOLE_ZERO, HOLE_BLOCK, 0, MiB - HOLE_BLOCK, HOLE_ZERO]]]);
    assert.deepEqual(out.one, [[3 * MiB, HOLE_ZERO]]);
  });

  describe('against the daemon: an md array is all data', () => {
    let d: TestDaemon;
    before(async () => {
      d = await startDaemon(join(dir.path, 'run'));
    });
    after(async () => {
      await d.stop('SIGKILL');
    });

    test('nbdinfo --map, qemu-img map, nbdsh block_status', async (t) => {
      if (!requireTool(t, 'nbdinfo') || !requireTool(t, 'qemu-img') || !requireTool(t, 'nbdsh', 'Debian package python3-libnbd')) return;
      const files = [0, 1].map((i) => sparseFile(join(dir.path, `d${i}.img`), 16 * MiB));
      const r = d.tsmd(['--create', '/dev/md0', '-l1', '-n2', '--assume-clean', '--run', ...files]);
      assert.equal(r.status, 0, r.stderr);
      const uri = `nbd://127.0.0.1:${d.info.nbd!.port}/md0`;
      const size = Number((await runAsync('nbdinfo', ['--size', uri])).stdout.trim());
      assert.ok(size > 0);
      const m = await runAsync('nbdinfo', ['--map', '--json', uri]);
      assert.equal(m.status, 0, m.stderr);
      assert.deepEqual((JSON.parse(m.stdout) as { offset: number; length: number; type: number }[]).map((e) => [e.offset, e.length, e.type]), [[0, size, 0]]);
      const q = await runAsync('qemu-img', ['map', '--output=json', '-f', 'raw', uri]);
      assert.equal(q.status, 0, q.stderr);
      const qm = (JSON.parse(q.stdout) as { start: number; length: number; data: boolean; zero: boolean }[]).map((e) => [e.start, e.length, e.data, e.zero]);
      assert.deepEqual(qm, [[0, size, true, false]]);
      const script = [
        'h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)',
        `h.connect_uri(${JSON.stringify(uri)})`,
        'seen = []',
        'h.block_status(65536, 4096, lambda ctx, off, ents, err: seen.append(list(ents)) or 0, nbd.CMD_FLAG_REQ_ONE)',
        'print(seen)',
      ].join('\n');
      const s = await runAsync('nbdsh', ['-c', script], { env: systemPythonEnv, timeoutMs: 30000 });
      assert.equal(s.status, 0, s.stderr);
      // block_status(count, offset, ...): 64 KiB from 4 KiB, one data extent (REQ_ONE)
      assert.equal(s.stdout.trim(), '[[65536, 0]]');
    });
  });
});
