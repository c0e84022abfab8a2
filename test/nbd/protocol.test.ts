/**
 * The NBD server at the byte level, with a raw client: handshake options, transmission
 * commands, error mapping, out-of-order replies, back-pressure, DISC, timeouts and shutdown.
 * No external tool needed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TsmdError } from '../../src/errors.js';
import { NbdServer } from '../../src/nbd/server.js';
import { MapExportRegistry } from '../../src/nbd/target.js';
import { tempDir } from '../helpers/tools.js';
import { connectGo, MiB, NBD, RawClient, startServer, TestTarget, type TestServer } from './helpers.js';

const SIZE = 8 * MiB;

describe('nbd protocol', () => {
  const dir = tempDir('nbd-proto');
  let srv: TestServer;
  const disk = new TestTarget(SIZE);
  const ro = new TestTarget(MiB, { readOnly: true });
  const plain = new TestTarget(MiB, { noTrim: true, noZero: true, blockSize: { min: 4096, preferred: 4096, max: MiB } });
  const tcp = () => ({ port: srv.port });

  before(async () => {
    srv = await startServer(
      [
        { name: 'disk', description: 'the test disk', target: disk },
        { name: 'ro', target: ro },
        { name: 'plain', description: 'no trim, no zero, 4k blocks', target: plain },
      ],
      dir.path,
      { maxPayloadBytes: 2 * MiB, handshakeTimeoutMs: 500 },
    );
  });
  after(async () => {
    await srv.close();
    dir.cleanup();
  });

  test('greeting, LIST with descriptions, ABORT', async () => {
    const c = await RawClient.connect(tcp());
    assert.equal(await c.handshake(), 3, 'FIXED_NEWSTYLE | NO_ZEROES');
    const list = await c.option(NBD.OPT.LIST);
    assert.equal(list.at(-1)!.type, NBD.REP.ACK);
    const servers = list.filter((r) => r.type === NBD.REP.SERVER).map((r) => {
      const n = r.data.readUInt32BE(0);
      return [r.data.toString('utf8', 4, 4 + n), r.data.toString('utf8', 4 + n)];
    });
    assert.deepEqual(servers, [
      ['disk', 'the test disk'],
      ['ro', ''],
      ['plain', 'no trim, no zero, 4k blocks'],
    ]);
    assert.equal((await c.option(NBD.OPT.LIST, Buffer.from('x')))[0].type, NBD.REP.ERR_INVALID);
    const ab = await c.option(NBD.OPT.ABORT);
    assert.equal(ab[0].type, NBD.REP.ACK);
    assert.ok(await c.waitClosed(), 'server closes after ABORT');
  });

  test('INFO and GO: export info, name, description, block size; unknown export; default export', async () => {
    const c = await RawClient.connect(tcp());
    await c.handshake();
    const bad = await c.option(NBD.OPT.GO, RawClient.goData('nope', [3]));
    assert.equal(bad[0].type, NBD.REP.ERR_UNKNOWN);
    assert.match(bad[0].data.toString(), /nope/);
    // three exports, none named '': no default
    assert.equal((await c.option(NBD.OPT.INFO, RawClient.goData('', [])))[0].type, NBD.REP.ERR_UNKNOWN);
    const info = await c.option(NBD.OPT.INFO, RawClient.goData('disk', [1, 2, 3]));
    assert.equal(info.at(-1)!.type, NBD.REP.ACK);
    const byType = new Map(info.filter((r) => r.type === NBD.REP.INFO).map((r) => [r.data.readUInt16BE(0), r.data]));
    assert.equal(Number(byType.get(0)!.readBigUInt64BE(2)), SIZE);
    const flags = byType.get(0)!.readUInt16BE(10);
    for (const f of ['HAS_FLAGS', 'SEND_FLUSH', 'SEND_FUA', 'SEND_TRIM', 'SEND_WRITE_ZEROES', 'SEND_FAST_ZERO', 'SEND_CACHE', 'CAN_MULTI_CONN'] as const) {
      assert.ok(flags & NBD.TX[f], f);
    }
    assert.equal(flags & NBD.TX.READ_ONLY, 0);
    assert.equal(flags & NBD.TX.SEND_DF, 0, 'DF only with structured replies');
    assert.equal(byType.get(1)!.toString('utf8', 2), 'disk');
    assert.equal(byType.get(2)!.toString('utf8', 2), 'the test disk');
    const bs = byType.get(3)!;
    assert.deepEqual([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)], [512, 4096, 2 * MiB]);
    // INFO keeps haggling: a GO on the same connection works
    assert.equal((await c.option(NBD.OPT.STRUCTURED_REPLY))[0].type, NBD.REP.ACK);
    c.structured = true;
    const go = await c.option(NBD.OPT.GO, RawClient.goData('ro', []));
    assert.equal(go.at(-1)!.type, NBD.REP.ACK);
    const roFlags = go.find((r) => r.type === NBD.REP.INFO && r.data.readUInt16BE(0) === 0)!.data.readUInt16BE(10);
    assert.ok(roFlags & NBD.TX.READ_ONLY);
    assert.ok(roFlags & NBD.TX.SEND_DF);
    assert.equal(roFlags & (NBD.TX.SEND_TRIM | NBD.TX.SEND_WRITE_ZEROES | NBD.TX.SEND_FUA), 0);
    assert.equal((await c.cmd(NBD.CMD.READ, 0, 0, 4096)).data.length, 4096);
    c.destroy();

    // a single export is the default one
    const dir1 = tempDir('nbd-one');
    const one = await startServer([{ name: 'only', target: new TestTarget(MiB) }], dir1.path, {});
    try {
      const d = await RawClient.connect({ port: one.port });
      await d.handshake();
      const r = await d.option(NBD.OPT.GO, RawClient.goData('', []));
      assert.equal(r.at(-1)!.type, NBD.REP.ACK);
      d.destroy();
    } finally {
      await one.close();
      dir1.cleanup();
    }
  });

  test('unknown and unsupported options get ERR_UNSUP and haggling goes on', async () => {
    const c = await RawClient.connect(tcp());
    await c.handshake();
    for (const opt of [4, NBD.OPT.EXTENDED_HEADERS, 12, 999, 0xffffffff]) {
      assert.equal((await c.option(opt, Buffer.alloc(7)))[0].type, NBD.REP.ERR_UNSUP, `option ${opt}`);
    }
    // supported, but 7 bytes are not a meta context request (block-status.test.ts has the rest)
    for (const opt of [NBD.OPT.LIST_META_CONTEXT, NBD.OPT.SET_META_CONTEXT]) {
      assert.equal((await c.option(opt, Buffer.alloc(7)))[0].type, NBD.REP.ERR_INVALID, `option ${opt}`);
    }
    assert.equal((await c.option(NBD.OPT.STARTTLS))[0].type, NBD.REP.ERR_UNSUP, 'no TLS configured');
    assert.equal((await c.option(NBD.OPT.STRUCTURED_REPLY, Buffer.alloc(1)))[0].type, NBD.REP.ERR_INVALID);
    // malformed GO payloads
    assert.equal((await c.option(NBD.OPT.GO, Buffer.alloc(3)))[0].type, NBD.REP.ERR_INVALID);
    const lying = RawClient.goData('disk', [3]);
    lying.writeUInt32BE(1000, 0);
    assert.equal((await c.option(NBD.OPT.GO, lying))[0].type, NBD.REP.ERR_INVALID);
    const extra = Buffer.concat([RawClient.goData('disk', [3]), Buffer.alloc(1)]);
    assert.equal((await c.option(NBD.OPT.INFO, extra))[0].type, NBD.REP.ERR_INVALID);
    // an option longer than the server parses: read, discarded, refused
    assert.equal((await c.option(1234, Buffer.alloc(200_000)))[0].type, NBD.REP.ERR_TOO_BIG);
    assert.equal((await c.option(NBD.OPT.GO, RawClient.goData('disk', [])))!.at(-1)!.type, NBD.REP.ACK);
    assert.equal((await c.cmd(NBD.CMD.FLUSH, 0, 0, 0)).error, 0);
    c.destroy();
  });

  test('EXPORT_NAME with and without NO_ZEROES; unknown name is a hard disconnect', async () => {
    for (const [flags, len] of [[3, 10], [1, 134]] as const) {
      const c = await RawClient.connect(tcp());
      await c.handshake(flags);
      c.sendOption(NBD.OPT.EXPORT_NAME, Buffer.from('disk'));
      const r = await c.read(len);
      assert.equal(Number(r.readBigUInt64BE(0)), SIZE);
      assert.ok(r.readUInt16BE(8) & NBD.TX.HAS_FLAGS);
      if (len === 134) assert.ok(r.subarray(10).every((x) => x === 0));
      const w = await c.cmd(NBD.CMD.READ, 0, 0, 512);
      assert.equal(w.error, 0);
      assert.equal(w.data.length, 512);
      c.destroy();
    }
    const c = await RawClient.connect(tcp());
    await c.handshake();
    c.sendOption(NBD.OPT.EXPORT_NAME, Buffer.from('nope'));
    assert.ok(await c.waitClosed());
  });

  test('handshake violations disconnect: unknown client flags, bad option magic, options without fixed newstyle', async () => {
    const a = await RawClient.connect(tcp());
    await a.handshake(0x80);
    assert.ok(await a.waitClosed());
    const b = await RawClient.connect(tcp());
    await b.handshake();
    b.write(Buffer.from('IHAVEOPZ\0\0\0\x03\0\0\0\0'));
    assert.ok(await b.waitClosed());
    const d = await RawClient.connect(tcp());
    await d.handshake(0);
    d.sendOption(NBD.OPT.LIST);
    assert.ok(await d.waitClosed());
    // and a non-fixed client may still use EXPORT_NAME
    const e = await RawClient.connect(tcp());
    await e.handshake(0);
    e.sendOption(NBD.OPT.EXPORT_NAME, Buffer.from('disk'));
    assert.equal((await e.read(134)).length, 134);
    e.destroy();
  });

  test('a client that floods options without reading the replies is throttled, then answered in full', async () => {
    const s = new NbdServer({ exports: new MapExportRegistry([{ name: 'a', target: ro }, { name: 'b', target: ro }, { name: 'c', target: ro }]) });
    const port = (await s.listen({ host: '127.0.0.1', port: 0 })).port!;
    const c = await RawClient.connect({ port });
    await c.handshake();
    const n = 40_000;
    const one = Buffer.from('IHAVEOPT\0\0\0\x03\0\0\0\0', 'latin1');
    c.write(Buffer.concat(Array.from({ length: n }, () => one)));
    await new Promise((r) => setTimeout(r, 300));
    let acks = 0;
    let servers = 0;
    while (acks < n) {
      const r = await c.readOptReply();
      if (r.type === NBD.REP.ACK) acks++;
      else if (r.type === NBD.REP.SERVER) servers++;
      else assert.fail(`unexpected reply ${r.type}`);
    }
    assert.equal(servers, 3 * n);
    c.destroy();
    await s.close();
  });

  test('a client that stalls in the handshake is dropped after handshakeTimeoutMs', async () => {
    const c = await RawClient.connect(tcp());
    await c.read(18);
    assert.ok(await c.waitClosed(3000));
    assert.ok(srv.server.stats.handshakeFailures >= 1);
  });

  for (const structured of [false, true]) {
    test(`READ/WRITE round trip and error replies (structured replies ${structured ? 'on' : 'off'})`, async () => {
      const { c, flags } = await connectGo(tcp(), 'disk', { structured, infos: [] });
      assert.equal(!!(flags & NBD.TX.SEND_DF), structured);
      const data = randomBytes(65536 + 1000);
      assert.equal((await c.cmd(NBD.CMD.WRITE, 0, 12345, data.length, data)).error, 0);
      const r = await c.cmd(NBD.CMD.READ, 0, 12345, data.length);
      assert.equal(r.error, 0);
      assert.ok(r.data.equals(data));
      if (structured) assert.deepEqual(r.chunks, [1], 'one OFFSET_DATA chunk with DONE');
      const err = async (type: number, fl: number, off: number, len: number, payload?: Buffer) => {
        const x = await c.cmd(type, fl, off, len, payload);
        assert.equal(x.data.length, 0);
        if (structured) assert.ok(x.message && x.message.length > 0, 'error chunk carries a message');
        return x.error;
      };
      assert.equal(await err(NBD.CMD.READ, 0, SIZE - 512, 1024), NBD.ERR.EINVAL, 'read beyond the end');
      assert.equal(await err(NBD.CMD.READ, 0, 2 ** 62, 512), NBD.ERR.EINVAL, 'read at a huge offset');
      assert.equal(await err(NBD.CMD.WRITE, 0, SIZE - 512, 1024, Buffer.alloc(1024, 7)), NBD.ERR.ENOSPC, 'write beyond the end');
      assert.equal(await err(NBD.CMD.TRIM, 0, SIZE, 512), NBD.ERR.EINVAL, 'trim beyond the end');
      assert.equal(await err(NBD.CMD.WRITE_ZEROES, 0, SIZE, 512), NBD.ERR.ENOSPC, 'zero beyond the end');
      assert.equal(await err(42, 0, 0, 512), NBD.ERR.EINVAL, 'unknown command');
      assert.equal(await err(NBD.CMD.BLOCK_STATUS, 0, 0, 512), NBD.ERR.EINVAL, 'block status not negotiated');
      assert.equal(await err(NBD.CMD.READ, NBD.FLAG.FUA, 0, 512), NBD.ERR.EINVAL, 'FUA on READ');
      assert.equal(await err(NBD.CMD.WRITE, 0x100, 0, 512, Buffer.alloc(512)), NBD.ERR.EINVAL, 'unknown flag on WRITE');
      if (!structured) assert.equal(await err(NBD.CMD.READ, NBD.FLAG.DF, 0, 512), NBD.ERR.EINVAL, 'DF without structured');
      else assert.equal((await c.cmd(NBD.CMD.READ, NBD.FLAG.DF, 0, 512)).error, 0);
      // payload larger than the maximum: read, discarded, refused; the connection goes on
      const big = Buffer.alloc(3 * MiB, 0x5a);
      assert.equal(await err(NBD.CMD.WRITE, 0, 0, big.length, big), NBD.ERR.EINVAL, 'oversize write');
      assert.equal(await err(NBD.CMD.READ, 0, 0, 3 * MiB), NBD.ERR.EINVAL, 'oversize read');
      const again = await c.cmd(NBD.CMD.READ, 0, 12345, 100);
      assert.ok(again.data.equals(data.subarray(0, 100)), 'nothing was written by the refused requests');
      // zero-length requests are harmless
      assert.equal((await c.cmd(NBD.CMD.READ, 0, 0, 0)).error, 0);
      assert.equal((await c.cmd(NBD.CMD.WRITE, 0, 0, 0)).error, 0);
      c.destroy();
    });
  }

  test('read-only export: writes, trims and zeroes get EPERM', async () => {
    const { c } = await connectGo(tcp(), 'ro');
    assert.equal((await c.cmd(NBD.CMD.WRITE, 0, 0, 512, Buffer.alloc(512))).error, NBD.ERR.EPERM);
    assert.equal((await c.cmd(NBD.CMD.TRIM, 0, 0, 512)).error, NBD.ERR.EPERM);
    assert.equal((await c.cmd(NBD.CMD.WRITE_ZEROES, 0, 0, 512)).error, NBD.ERR.EPERM);
    assert.equal((await c.cmd(NBD.CMD.READ, 0, 0, 512)).error, 0);
    assert.equal((await c.cmd(NBD.CMD.FLUSH, 0, 0, 0)).error, 0);
    c.destroy();
  });

  test('FUA, FLUSH, TRIM, WRITE_ZEROES (+NO_HOLE, FAST_ZERO), CACHE', async () => {
    const { c } = await connectGo(tcp(), 'disk');
    const f0 = disk.calls.flush;
    assert.equal((await c.cmd(NBD.CMD.WRITE, NBD.FLAG.FUA, 0, 4096, Buffer.alloc(4096, 1))).error, 0);
    assert.equal(disk.calls.flush, f0 + 1, 'FUA write flushed');
    assert.equal((await c.cmd(NBD.CMD.FLUSH, 0, 0, 0)).error, 0);
    assert.equal(disk.calls.flush, f0 + 2);
    await c.cmd(NBD.CMD.WRITE, 0, MiB, 8192, Buffer.alloc(8192, 9));
    assert.equal((await c.cmd(NBD.CMD.TRIM, NBD.FLAG.FUA, MiB, 4096)).error, 0);
    assert.equal((await c.cmd(NBD.CMD.WRITE_ZEROES, NBD.FLAG.NO_HOLE | NBD.FLAG.FAST_ZERO, MiB + 4096, 4096)).error, 0);
    assert.ok((await c.cmd(NBD.CMD.READ, 0, MiB, 8192)).data.every((x) => x === 0));
    assert.equal(disk.calls.trim, 1);
    assert.equal(disk.calls.writeZeroes, 1);
    assert.equal((await c.cmd(NBD.CMD.CACHE, 0, 0, MiB)).error, 0);
    assert.equal(disk.calls.cache, 1);
    c.destroy();

    // a target without writeZeroes: FAST_ZERO is refused at once, plain zeroing is emulated
    const p = await connectGo(tcp(), 'plain');
    assert.equal(p.flags & NBD.TX.SEND_TRIM, 0, 'no trim advertised without target.trim');
    assert.ok(p.flags & NBD.TX.SEND_WRITE_ZEROES);
    await p.c.cmd(NBD.CMD.WRITE, 0, 0, 16384, Buffer.alloc(16384, 3));
    assert.equal((await p.c.cmd(NBD.CMD.WRITE_ZEROES, NBD.FLAG.FAST_ZERO, 0, 8192)).error, NBD.ERR.ENOTSUP);
    assert.ok((await p.c.cmd(NBD.CMD.READ, 0, 0, 8192)).data.every((x) => x === 3), 'FAST_ZERO failure wrote nothing');
    assert.equal((await p.c.cmd(NBD.CMD.WRITE_ZEROES, 0, 0, 8192)).error, 0);
    const back = (await p.c.cmd(NBD.CMD.READ, 0, 0, 16384)).data;
    assert.ok(back.subarray(0, 8192).every((x) => x === 0) && back.subarray(8192).every((x) => x === 3));
    p.c.destroy();
  });

  test('block sizes requested in GO are enforced; without the request any alignment is passed on', async () => {
    assert.equal((await connectGo(tcp(), 'plain')).min, 4096);
    const neg = await connectGo(tcp(), 'plain', { infos: [3] });
    assert.equal((await neg.c.cmd(NBD.CMD.READ, 0, 512, 4096)).error, NBD.ERR.EINVAL);
    assert.equal((await neg.c.cmd(NBD.CMD.WRITE, 0, 4096, 100, Buffer.alloc(100))).error, NBD.ERR.EINVAL);
    assert.equal((await neg.c.cmd(NBD.CMD.READ, 0, 4096, 4096)).error, 0);
    neg.c.destroy();
    const free = await connectGo(tcp(), 'plain', { infos: [] });
    assert.equal((await free.c.cmd(NBD.CMD.WRITE, 0, 4097, 3, Buffer.from([1, 2, 3]))).error, 0);
    assert.deepEqual([...(await free.c.cmd(NBD.CMD.READ, 0, 4096, 5)).data], [0, 1, 2, 3, 0]);
    free.c.destroy();
  });

  test('target errors map to NBD errors', async () => {
    const cases: [Error, number][] = [
      [new TsmdError('EIO', 'x'), NBD.ERR.EIO],
      [new TsmdError('ENOSPC', 'x'), NBD.ERR.ENOSPC],
      [new TsmdError('EROFS', 'x'), NBD.ERR.EPERM],
      [new TsmdError('EPERM', 'x'), NBD.ERR.EPERM],
      [new TsmdError('EINVAL', 'x'), NBD.ERR.EINVAL],
      [new TsmdError('ENOTSUP', 'x'), NBD.ERR.ENOTSUP],
      [new TsmdError('ENODEV', 'x'), NBD.ERR.ESHUTDOWN],
      [new TsmdError('EBUSY', 'x'), NBD.ERR.EIO],
      [new TypeError('a bug'), NBD.ERR.EIO],
    ];
    for (const structured of [false, true]) {
      const { c } = await connectGo(tcp(), 'disk', { structured });
      for (const [e, errno] of cases) {
        disk.fault = { fromBytes: 2 * MiB, toBytes: 2 * MiB + 4096, error: e };
        assert.equal((await c.cmd(NBD.CMD.READ, 0, 2 * MiB, 512)).error, errno, `read ${e.message} ${String((e as TsmdError).code)}`);
        assert.equal((await c.cmd(NBD.CMD.WRITE, 0, 2 * MiB, 512, Buffer.alloc(512))).error, errno);
        disk.fault = null;
      }
      assert.equal((await c.cmd(NBD.CMD.READ, 0, 2 * MiB, 512)).error, 0);
      c.destroy();
    }
    assert.ok(srv.logs.some((l) => l.level === 'error' && /request failed/.test(l.msg)), 'unexpected errors are logged as errors');
  });

  test('requests are served concurrently and replied out of order, within maxInflight', async () => {
    const t = new TestTarget(MiB);
    const s = new NbdServer({ exports: new MapExportRegistry([{ name: 'x', target: t }]), maxInflightPerConnection: 4 });
    const port = (await s.listen({ host: '127.0.0.1', port: 0 })).port!;
    try {
      const { c } = await connectGo({ port }, 'x');
      t.delayFor = (off) => (off === 0 ? 150 : 5);
      c.send(NBD.CMD.READ, 0, 1n, 0, 512);
      c.send(NBD.CMD.READ, 0, 2n, 4096, 512);
      assert.equal((await c.readReply()).cookie, 2n, 'the fast request is answered first');
      assert.equal((await c.readReply()).cookie, 1n);
      t.delayFor = () => 20;
      t.maxActive = 0;
      const n = 40;
      for (let i = 0; i < n; i++) c.send(NBD.CMD.WRITE, 0, BigInt(100 + i), i * 512, 512, Buffer.alloc(512, i));
      const seen = new Set<bigint>();
      for (let i = 0; i < n; i++) seen.add((await c.readReply()).cookie);
      assert.equal(seen.size, n);
      assert.ok(t.maxActive <= 4 && t.maxActive >= 2, `max concurrency in the target ${t.maxActive}`);
      c.destroy();
    } finally {
      await s.close();
    }
  });

  test('DISC: outstanding requests complete, then the server closes', async () => {
    const t = new TestTarget(MiB);
    const s = new NbdServer({ exports: new MapExportRegistry([{ name: 'x', target: t }]) });
    const port = (await s.listen({ host: '127.0.0.1', port: 0 })).port!;
    const { c } = await connectGo({ port }, 'x');
    t.delayMs = 100;
    c.send(NBD.CMD.WRITE, 0, 7n, 0, 512, Buffer.alloc(512, 0xee));
    c.send(NBD.CMD.DISC, 0, 8n, 0, 0);
    const r = await c.readReply();
    assert.equal(r.cookie, 7n);
    assert.equal(r.error, 0);
    assert.ok(await c.waitClosed());
    const b = new Uint8Array(512);
    t.dev.readSync(b, 0);
    assert.ok(b.every((x) => x === 0xee));
    await s.close();
    assert.equal(s.connections, 0);
  });

  test('close(): in-flight requests complete, later ones get ESHUTDOWN, clients are closed', async () => {
    const t = new TestTarget(MiB);
    const s = new NbdServer({ exports: new MapExportRegistry([{ name: 'x', target: t }]) });
    const port = (await s.listen({ host: '127.0.0.1', port: 0 })).port!;
    const { c } = await connectGo({ port }, 'x');
    const idle = await connectGo({ port }, 'x');
    const hs = await RawClient.connect({ port });
    await hs.handshake();
    t.delayMs = 200;
    c.send(NBD.CMD.WRITE, 0, 1n, 0, 512, Buffer.alloc(512, 1));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(s.stats.inflight, 1);
    const closing = s.close();
    c.send(NBD.CMD.READ, 0, 2n, 0, 512);
    const replies = [await c.readReply(), await c.readReply()];
    assert.deepEqual(
      replies.map((x) => [x.cookie, x.error]).sort(),
      [[1n, 0], [2n, NBD.ERR.ESHUTDOWN]],
    );
    await closing;
    assert.ok(await c.waitClosed());
    assert.ok(await idle.c.waitClosed());
    assert.ok(await hs.waitClosed());
    assert.equal(s.connections, 0);
    await assert.rejects(RawClient.connect({ port }));
  });

  test('listen: an address in use is EBUSY; a stale Unix socket is replaced', async () => {
    const s = new NbdServer({ exports: new MapExportRegistry([{ name: 'x', target: ro }]) });
    try {
      await assert.rejects(s.listen({ host: '127.0.0.1', port: srv.port }), (e: TsmdError) => e.code === 'EBUSY');
      await assert.rejects(s.listen({ path: srv.socketPath }), (e: TsmdError) => e.code === 'EBUSY');
      const stale = join(dir.path, 'stale.sock');
      const py = spawnSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(stale)})`]);
      assert.equal(py.status, 0, String(py.stderr));
      assert.ok(existsSync(stale));
      assert.deepEqual(await s.listen({ path: stale }), { path: stale });
      const c = await RawClient.connect({ path: stale });
      assert.equal(await c.handshake(), 3);
      c.destroy();
    } finally {
      await s.close();
    }
  });

  test('stats count connections, requests, bytes and errors', () => {
    const st = srv.server.stats;
    assert.ok(st.connectionsTotal >= 10);
    assert.ok(st.handshakesCompleted >= 5);
    assert.ok(st.requests.read > 10 && st.requests.write > 5);
    assert.ok(st.bytesRead > 65536 && st.bytesWritten > 65536);
    assert.ok((st.errors.EINVAL ?? 0) > 5 && (st.errors.ENOSPC ?? 0) >= 2 && (st.errors.EPERM ?? 0) >= 3);
    assert.ok(st.protocolErrors >= 3);
    assert.equal(typeof st.connectionsCurrent, 'number');
  });
});
