/**
 * Hostile clients against the server, driven by a seeded PRNG (NBD_FUZZ_SEED to replay):
 * garbage and truncated handshakes, bad magics, unknown options/commands/flags, lengths beyond
 * the limits, beyond-end offsets, truncated payloads with abrupt disconnects, floods of requests
 * whose replies are never read. Meanwhile a well-behaved client keeps writing and verifying its
 * own region of the shared export. The server must stay up, keep serving the good client, and
 * leave every byte outside the good client's writes unchanged.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { tempDir } from '../helpers/tools.js';
import { connectGo, MiB, NBD, Prng, RawClient, sha256, startServer, TestTarget, type TestServer } from './helpers.js';

const SIZE = 16 * MiB;
/** the good client's region of 'disk'; fuzzers never write 'disk' validly */
const GOOD_BYTES = 4 * MiB;
const MAX_PAYLOAD = MiB;
const ROUNDS = Number(process.env.NBD_FUZZ_ROUNDS ?? 1000);
const FUZZERS = 4;

describe('nbd fuzz', () => {
  const seed = Number(process.env.NBD_FUZZ_SEED ?? 0x5eed);
  const dir = tempDir('nbd-fuzz');
  const disk = new TestTarget(SIZE);
  const scratch = new TestTarget(4 * MiB);
  let srv: TestServer;
  let outsideSum = '';

  before(async () => {
    const fill = new Prng(seed ^ 0xabcdef).bytes(SIZE - GOOD_BYTES);
    disk.dev.writeSync(fill, GOOD_BYTES);
    outsideSum = sha256(fill);
    srv = await startServer(
      [
        { name: 'disk', target: disk },
        { name: 'scratch', target: scratch },
        { name: 'ro', target: new TestTarget(MiB, { readOnly: true }) },
      ],
      dir.path,
      { maxPayloadBytes: MAX_PAYLOAD, handshakeTimeoutMs: 800, maxInflightPerConnection: 16 },
    );
  });
  after(async () => {
    await srv.close();
    dir.cleanup();
  });

  /** Read whatever comes back for a moment, then drop the connection. */
  async function drain(c: RawClient, ms: number): Promise<void> {
    await c.waitClosed(ms);
    c.destroy();
  }

  function where(p: Prng): { port: number } | { path: string } {
    return p.int(2) ? { port: srv.port } : { path: srv.socketPath };
  }

  async function handshakeAttack(p: Prng): Promise<void> {
    const c = await RawClient.connect(where(p));
    const kind = p.int(8);
    try {
      if (kind === 0) {
        // garbage instead of client flags and options
        await c.read(18);
        c.write(p.bytes(p.int(300)));
        await drain(c, 30);
        return;
      }
      if (kind === 1) {
        // unknown client flags
        await c.handshake(p.u32() | 4);
        assert.ok(await c.waitClosed(2000), 'unknown client flags: disconnected');
        return;
      }
      await c.handshake(p.int(4) === 0 ? 1 : 3);
      if (kind === 2) {
        // an option header with a random option and a random (maybe huge) length, partly sent
        const h = Buffer.alloc(16);
        NBD.IHAVEOPT.copy(h);
        h.writeUInt32BE(p.u32(), 8);
        h.writeUInt32BE(p.int(2) ? p.u32() : p.int(70000), 12);
        c.write(Buffer.concat([h, p.bytes(p.int(2000))]));
        await drain(c, 20);
      } else if (kind === 3) {
        // GO/INFO with lying lengths and random info requests
        const name = p.pick(['disk', 'scratch', 'ro', 'nope', '', 'x'.repeat(5000)]);
        const data = RawClient.goData(name, Array.from({ length: p.int(6) }, () => p.int(70000) & 0xffff));
        if (p.int(2)) data.writeUInt32BE(p.u32(), 0);
        if (p.int(3) === 0) data.writeUInt16BE(p.int(65536), 4 + Math.min(Buffer.byteLength(name), data.length - 6));
        const opt = p.pick([NBD.OPT.INFO, NBD.OPT.GO]);
        const replies = await c.option(opt, data);
        const last = replies.at(-1)!;
        assert.ok(last.type === NBD.REP.ACK || last.type & 0x80000000, 'final reply');
        c.destroy();
      } else if (kind === 4) {
        // a correct option sequence cut at a random byte
        const seq = Buffer.concat([
          optBytes(NBD.OPT.STRUCTURED_REPLY, Buffer.alloc(0)),
          optBytes(NBD.OPT.LIST, Buffer.alloc(0)),
          optBytes(NBD.OPT.GO, RawClient.goData('disk', [3])),
        ]);
        c.write(seq.subarray(0, p.int(seq.length)));
        c.destroy();
      } else if (kind === 5) {
        // unknown/unsupported options, then a good GO on the same connection
        for (let i = 0; i < 1 + p.int(4); i++) {
          const opt = p.pick([0, 4, 9, 10, 11, 12, 77, p.u32()]);
          if (opt === NBD.OPT.EXPORT_NAME || opt === NBD.OPT.ABORT || opt === NBD.OPT.GO || opt === NBD.OPT.STARTTLS) continue;
          const r = await c.option(opt, p.bytes(p.int(100)));
          assert.ok(r.at(-1)!.type & 0x80000000 || r.at(-1)!.type === NBD.REP.ACK);
        }
        const go = await c.option(NBD.OPT.GO, RawClient.goData('scratch', []));
        assert.equal(go.at(-1)!.type, NBD.REP.ACK);
        c.destroy();
      } else if (kind === 6) {
        // bad option magic
        const h = optBytes(NBD.OPT.LIST, Buffer.alloc(0));
        h[p.int(8)] ^= 1 + p.int(255);
        c.write(h);
        assert.ok(await c.waitClosed(2000), 'bad option magic: disconnected');
      } else {
        // stall: the handshake timeout ends it (not waited for)
        await drain(c, 10);
      }
    } finally {
      c.destroy();
    }
  }

  function optBytes(opt: number, data: Buffer): Buffer {
    const h = Buffer.alloc(16);
    NBD.IHAVEOPT.copy(h);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(data.length, 12);
    return Buffer.concat([h, data]);
  }

  /** A request that must not change 'disk': beyond the end, bad flags, oversize, or read-only. */
  async function transmissionAttack(p: Prng): Promise<void> {
    const name = p.pick(['disk', 'disk', 'scratch', 'ro']);
    const { c, size } = await connectGo(where(p), name, { structured: p.int(2) === 1, infos: p.int(2) ? [3] : [] });
    const onDisk = name === 'disk';
    try {
      for (let i = 0; i < 1 + p.int(6); i++) {
        const kind = p.int(10);
        const cookie = BigInt(p.u32());
        if (kind === 0) {
          // garbage where a request header belongs (never the request magic)
          const g = p.bytes(28 + p.int(100));
          g[0] = 0x26;
          c.write(g);
          assert.ok(await c.waitClosed(2000), 'bad request magic: disconnected');
          return;
        }
        if (kind === 1) {
          // unknown commands with random flags, offsets, lengths (no payload)
          const type = p.pick([8, 9, 42, 255, 0xffff, NBD.CMD.BLOCK_STATUS]);
          c.send(type, p.int(65536), cookie, BigInt(p.u32()) * BigInt(p.u32()), p.u32());
          const r = await c.readReply();
          assert.equal(r.error, NBD.ERR.EINVAL);
        } else if (kind === 2) {
          // reads: beyond the end, huge lengths, odd flags
          const off = p.pick([size, size - 512, p.u32() * 4096, 2 ** 60]);
          const len = p.pick([512, 4096, MAX_PAYLOAD + 512, 0xffffffff]);
          c.send(NBD.CMD.READ, p.pick([0, NBD.FLAG.FUA, 0x40]), cookie, BigInt(off), len);
          const r = await c.readReply();
          assert.ok(r.error === NBD.ERR.EINVAL || (r.error === 0 && off + len <= size), `read ${off}+${len}: ${r.error}`);
        } else if (kind === 3) {
          // writes beyond the end, with their payload: refused, payload skipped, connection kept
          const len = 512 * (2 + p.int(64));
          c.send(NBD.CMD.WRITE, 0, cookie, size - p.int(2) * 512, len, p.bytes(len));
          const r = await c.readReply();
          assert.equal(r.error, name === 'ro' ? NBD.ERR.EPERM : NBD.ERR.ENOSPC);
        } else if (kind === 4) {
          // writes with unknown flags, or larger than the maximum payload
          const len = p.int(2) ? MAX_PAYLOAD + 512 * (1 + p.int(1000)) : 4096;
          const flags = len > MAX_PAYLOAD ? 0 : 0x80 << p.int(8);
          c.send(NBD.CMD.WRITE, flags, cookie, onDisk ? p.int(SIZE / 512) * 512 : 0, len, Buffer.alloc(len, 0xee));
          const r = await c.readReply();
          // unknown flags are refused first, then read-only, then the size
          assert.equal(r.error, name === 'ro' && flags === 0 ? NBD.ERR.EPERM : NBD.ERR.EINVAL);
        } else if (kind === 5) {
          // a valid write header with a truncated payload, then an abrupt disconnect
          const len = 4096 * (1 + p.int(64));
          const off = onDisk ? GOOD_BYTES + p.int((SIZE - GOOD_BYTES - len) / 512) * 512 : 0;
          c.send(NBD.CMD.WRITE, 0, cookie, off, len, Buffer.alloc(p.int(len), 0xdd));
          return;
        } else if (kind === 6) {
          // trims and zeroes beyond the end
          const t = p.pick([NBD.CMD.TRIM, NBD.CMD.WRITE_ZEROES]);
          c.send(t, 0, cookie, size, 512);
          const r = await c.readReply();
          assert.ok(r.error === NBD.ERR.EINVAL || r.error === NBD.ERR.ENOSPC || r.error === NBD.ERR.EPERM, `${t}: ${r.error}`);
        } else if (kind === 7) {
          // a flood of reads whose replies are never read, then gone
          for (let k = 0; k < 50 + p.int(200); k++) c.send(NBD.CMD.READ, 0, BigInt(k), 0, 65536);
          return;
        } else if (kind === 8) {
          // DISC with requests in flight, then more bytes the server must ignore
          c.send(NBD.CMD.READ, 0, cookie, 0, 4096);
          c.send(NBD.CMD.DISC, 0, cookie + 1n, 0, 0);
          c.write(p.bytes(p.int(64)));
          await c.readReply().catch(() => undefined);
          assert.ok(await c.waitClosed(2000), 'closed after DISC');
          return;
        } else if (!onDisk && name !== 'ro') {
          // anything goes on the scratch export
          const len = 512 * p.int(64);
          const off = p.int(2) ? p.int(Math.max(1, (size - len) / 512)) * 512 : p.int(size);
          const t = p.pick([NBD.CMD.WRITE, NBD.CMD.TRIM, NBD.CMD.WRITE_ZEROES, NBD.CMD.CACHE, NBD.CMD.FLUSH]);
          c.send(t, p.pick([0, NBD.FLAG.FUA]), cookie, off, len, t === NBD.CMD.WRITE ? p.bytes(len) : undefined);
          await c.readReply();
        }
      }
    } finally {
      c.destroy();
    }
  }

  test(`${ROUNDS} rounds of hostile clients (seed ${seed}) while a good client reads and writes`, { timeout: 60_000 }, async () => {
    const model = new Uint8Array(GOOD_BYTES);
    let stop = false;
    let goodOps = 0;
    let worstMs = 0;
    const good = (async () => {
      const p = new Prng(seed + 1);
      const { c } = await connectGo({ port: srv.port }, 'disk', { structured: true });
      while (!stop) {
        const len = 512 * (1 + p.int(128));
        const off = p.int((GOOD_BYTES - len) / 512 + 1) * 512;
        const t0 = Date.now();
        if (p.int(2)) {
          const data = p.bytes(len);
          const r = await c.cmd(NBD.CMD.WRITE, p.int(8) === 0 ? NBD.FLAG.FUA : 0, off, len, data);
          assert.equal(r.error, 0);
          model.set(data, off);
        } else {
          const r = await c.cmd(NBD.CMD.READ, 0, off, len);
          assert.equal(r.error, 0);
          assert.ok(r.data.equals(model.subarray(off, off + len)), `good client read at ${off}+${len} differs`);
        }
        worstMs = Math.max(worstMs, Date.now() - t0);
        goodOps++;
      }
      c.destroy();
    })();

    const master = new Prng(seed);
    let round = 0;
    const fuzzer = async (id: number) => {
      while (round < ROUNDS) {
        const r = round++;
        const p = new Prng(master.u32() ^ (r * 0x9e3779b1) ^ id);
        try {
          if (p.int(2)) await handshakeAttack(p);
          else await transmissionAttack(p);
        } catch (e) {
          throw new Error(`fuzz round ${r} (seed ${seed}): ${(e as Error).message}`, { cause: e });
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: FUZZERS }, (_, i) => fuzzer(i)));
    } finally {
      stop = true;
      await good;
    }

    assert.ok(goodOps > 100, `the good client was served (${goodOps} operations)`);
    assert.ok(worstMs < 3000, `the good client never waited long (worst ${worstMs} ms)`);
    // every connection but ours goes away (stalled handshakes by the handshake timeout)
    const deadline = Date.now() + 5000;
    while (srv.server.connections > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(srv.server.connections, 0, 'no connection left behind');
    assert.equal(srv.server.stats.inflight, 0, 'no request left in flight');
    // the bytes outside the good client's region are untouched, and its own are what it wrote
    const rest = new Uint8Array(SIZE - GOOD_BYTES);
    disk.dev.readSync(rest, GOOD_BYTES);
    assert.equal(sha256(rest), outsideSum, 'no hostile write reached the shared export');
    const mine = new Uint8Array(GOOD_BYTES);
    disk.dev.readSync(mine, 0);
    assert.ok(Buffer.from(mine).equals(model));
    // and a fresh client is served normally
    const { c } = await connectGo({ path: srv.socketPath }, 'disk');
    assert.ok((await c.cmd(NBD.CMD.READ, 0, 0, 4096)).data.equals(model.subarray(0, 4096)));
    c.destroy();
    const st = srv.server.stats;
    if (process.env.NBD_TEST_LOG) console.log(JSON.stringify(st));
    assert.ok(st.protocolErrors > 10 && st.handshakeFailures > 10, JSON.stringify(st));
  });
});
