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
import { connectGo, hostileClient, MiB, NBD, Prng, sha256, startServer, TestTarget, type TestServer } from './helpers.js';

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
          await hostileClient(p, {
            endpoints: [{ port: srv.port }, { path: srv.socketPath }],
            shared: 'disk',
            goodBytes: GOOD_BYTES,
            scratch: 'scratch',
            readOnly: 'ro',
            maxPayloadBytes: MAX_PAYLOAD,
          });
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
