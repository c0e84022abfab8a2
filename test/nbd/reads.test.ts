/**
 * The server's socket read path, with user-buffer reads (the default: WRITE payloads read by
 * the kernel straight into their buffers) and with plain 'data' chunks: requests cut at every
 * byte boundary across TCP segments, large payloads cut anywhere, deep pipelines of mixed
 * requests in random-sized pieces, oversize payloads refused with the connection usable, and
 * clients vanishing mid-payload with the data unchanged and the server serving on.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { tempDir } from '../helpers/tools.js';
import { connectGo, MiB, NBD, Prng, RawClient, startServer, TestTarget, type TestServer } from './helpers.js';

const SIZE = 16 * MiB;
const MAX_PAYLOAD = 2 * MiB;

/** Lets the in-process server read what was sent so far as a separate segment. */
const turn = () => new Promise<void>((r) => setTimeout(r, 1));

function writeReq(cookie: bigint, offset: number, payload: Buffer, flags = 0): Buffer {
  return Buffer.concat([RawClient.request(NBD.CMD.WRITE, flags, cookie, offset, payload.length), payload]);
}

for (const directReads of [true, false]) {
  describe(`nbd socket reads (directReads ${directReads})`, () => {
    const dir = tempDir('nbd-reads');
    let srv: TestServer;
    const disk = new TestTarget(SIZE);
    const tcp = () => ({ port: srv.port });

    before(async () => {
      srv = await startServer([{ name: 'disk', target: disk }], dir.path, { maxPayloadBytes: MAX_PAYLOAD, directReads });
    });
    after(async () => {
      await srv.close();
      dir.cleanup();
    });

    /** The target's bytes [off, off+len), read behind the server's back. */
    const stored = (off: number, len: number) => {
      const b = Buffer.alloc(len);
      disk.dev.readSync(b, off);
      return b;
    };

    test('WRITE, WRITE, READ cut at every byte boundary into two segments', async () => {
      const { c } = await connectGo(tcp(), 'disk', { structured: true, infos: [] });
      const p = new Prng(1);
      const first = p.bytes(300);
      const second = p.bytes(77);
      const total = 28 + 300 + 28 + 77 + 28;
      for (let cut = 1; cut < total; cut++) {
        // fresh contents every round so that a stale write cannot pass for this one
        first[0] = cut & 0xff;
        second[76] = cut & 0xff;
        const bytes = Buffer.concat([writeReq(1n, 4096, first), writeReq(2n, 8192 + 3, second), RawClient.request(NBD.CMD.READ, 0, 3n, 4096, 300)]);
        assert.equal(bytes.length, total);
        c.expectRead(3n, 300);
        c.write(bytes.subarray(0, cut));
        await turn();
        c.write(bytes.subarray(cut));
        const replies = new Map<bigint, Awaited<ReturnType<RawClient['readReply']>>>();
        for (let i = 0; i < 3; i++) {
          const r = await c.readReply();
          replies.set(r.cookie, r);
        }
        assert.equal(replies.get(1n)?.error, 0, `cut ${cut}: first write`);
        assert.equal(replies.get(2n)?.error, 0, `cut ${cut}: second write`);
        assert.ok(stored(4096, 300).equals(first), `cut ${cut}: first payload stored`);
        assert.ok(stored(8192 + 3, 77).equals(second), `cut ${cut}: second payload stored`);
        // the READ may run before or after the first WRITE (both in flight): only its size is sure
        assert.equal(replies.get(3n)?.data.length, 300, `cut ${cut}: read`);
      }
      const r = await c.cmd(NBD.CMD.READ, 0, 4096, 300);
      assert.ok(r.data.equals(first));
      c.destroy();
    });

    test('large WRITE payloads cut into up to four segments anywhere, pipelined behind each other', async () => {
      const { c } = await connectGo(tcp(), 'disk', { structured: true, infos: [] });
      const p = new Prng(2);
      const before = { ...srv.server.stats };
      const len = MiB + 4096 + 13;
      let round = 0;
      // cuts near the header, the slab size, the payload's ends, and random ones
      const points = [1, 27, 28, 29, 28 + 1, 28 + 4096, 28 + 16 * 1024 - 1, 28 + 256 * 1024, 28 + 256 * 1024 + 1, 28 + len - 1, 28 + len];
      for (let i = 0; i < 12; i++) points.push(1 + p.int(28 + len - 1));
      for (const a of points) {
        for (const extra of [0, 1, 2]) {
          round++;
          const off = (round % 7) * 1536 * 1024 + (round % 3);
          const payload = p.bytes(len);
          const next = p.bytes(1000 + round);
          const bytes = Buffer.concat([writeReq(BigInt(round * 2), off, payload), writeReq(BigInt(round * 2 + 1), off + len, next)]);
          const cuts = [a];
          for (let k = 0; k < extra; k++) cuts.push(1 + p.int(bytes.length - 1));
          cuts.sort((x, y) => x - y);
          let at = 0;
          for (const cut of cuts) {
            c.write(bytes.subarray(at, cut));
            at = cut;
            await turn();
          }
          c.write(bytes.subarray(at));
          const got = [await c.readReply(), await c.readReply()];
          assert.deepEqual(got.map((r) => r.error), [0, 0], `round ${round}`);
          assert.ok(stored(off, len).equals(payload), `round ${round} (cuts ${cuts.join(',')}): large payload stored`);
          assert.ok(stored(off + len, next.length).equals(next), `round ${round}: the write behind it stored`);
        }
      }
      const s = srv.server.stats;
      const total = (x: typeof s) => x.payloadBytesDirect + x.payloadBytesInPlace + x.payloadBytesCopied;
      assert.ok(total(s) - total(before) >= round * (len + 1000), 'every payload byte accounted for');
      const direct = s.payloadBytesDirect - before.payloadBytesDirect;
      if (directReads) assert.ok(direct > (round * len) / 2, `most large-payload bytes were read straight into their buffers (${direct})`);
      else assert.equal(s.payloadBytesDirect, 0);
      c.destroy();
    });

    test('a deep pipeline of mixed requests sent in random-sized pieces, over TCP and the Unix socket', async () => {
      for (const where of [tcp(), { path: srv.socketPath }]) {
        const { c } = await connectGo(where, 'disk', { structured: false, infos: [] });
        const p = new Prng(3);
        const base = 8 * MiB;
        const model = stored(base, 8 * MiB);
        for (let batch = 0; batch < 4; batch++) {
          // one request per 192 KiB slot: reads see what earlier batches wrote whatever order
          // the server runs this batch's requests in
          const reqs: Buffer[] = [];
          const expect = new Map<bigint, { read?: Buffer; error: number }>();
          const snapshot = Buffer.from(model);
          let cookie = BigInt(batch * 1000);
          for (let slot = 0; slot < 40; slot++) {
            const slotOff = slot * 192 * 1024;
            const kind = p.int(6);
            cookie++;
            if (kind <= 2) {
              const n = 1 + p.int(kind === 0 ? 190 * 1024 : 4096);
              const at = slotOff + p.int(192 * 1024 - n);
              const data = p.bytes(n);
              reqs.push(writeReq(cookie, base + at, data));
              data.copy(model, at);
              expect.set(cookie, { error: 0 });
            } else if (kind === 3) {
              const n = 1 + p.int(64 * 1024);
              const at = slotOff + p.int(192 * 1024 - n);
              reqs.push(RawClient.request(NBD.CMD.READ, 0, cookie, base + at, n));
              c.expectRead(cookie, n);
              expect.set(cookie, { read: snapshot.subarray(at, at + n), error: 0 });
            } else if (kind === 4) {
              reqs.push(RawClient.request(NBD.CMD.FLUSH, 0, cookie, 0, 0));
              expect.set(cookie, { error: 0 });
            } else {
              // refused WRITE: beyond the end (payload read and discarded)
              const data = p.bytes(1 + p.int(8192));
              reqs.push(writeReq(cookie, SIZE - 10, data));
              expect.set(cookie, { error: NBD.ERR.ENOSPC });
            }
          }
          const all = Buffer.concat(reqs);
          let at = 0;
          while (at < all.length) {
            const n = Math.min(all.length - at, 1 + p.int(p.int(2) ? 64 : 300 * 1024));
            c.write(all.subarray(at, at + n));
            at += n;
            if (p.int(4) === 0) await turn();
          }
          while (expect.size > 0) {
            const r = await c.readReply();
            const e = expect.get(r.cookie);
            assert.ok(e, `reply for an unknown cookie ${r.cookie}`);
            assert.equal(r.error, e.error, `cookie ${r.cookie}`);
            expect.delete(r.cookie);
            if (e.read) assert.ok(r.data.equals(e.read), `read ${r.cookie}`);
          }
          assert.equal(expect.size, 0);
          assert.ok(stored(base, 8 * MiB).equals(model), `batch ${batch}: stored data matches`);
        }
        c.destroy();
      }
    });

    test('oversize WRITE payloads in pieces are refused; requests behind them in the same segments are served', async () => {
      const { c } = await connectGo(tcp(), 'disk', { structured: true, infos: [] });
      const p = new Prng(4);
      const keep = stored(0, 4 * MiB);
      for (const size of [MAX_PAYLOAD + 1, 3 * MiB + 7]) {
        const big = p.bytes(size);
        const small = p.bytes(5000);
        const bytes = Buffer.concat([writeReq(10n, 0, big), writeReq(11n, 6 * MiB, small), RawClient.request(NBD.CMD.FLUSH, 0, 12n, 0, 0)]);
        for (let at = 0; at < bytes.length;) {
          const n = 1 + p.int(512 * 1024);
          c.write(bytes.subarray(at, at + n));
          at += n;
          await turn();
        }
        const replies = new Map<bigint, number>();
        for (let i = 0; i < 3; i++) {
          const r = await c.readReply();
          replies.set(r.cookie, r.error);
        }
        assert.equal(replies.get(10n), NBD.ERR.EINVAL, 'oversize write refused');
        assert.equal(replies.get(11n), 0);
        assert.equal(replies.get(12n), 0);
        assert.ok(stored(6 * MiB, 5000).equals(small));
        assert.ok(stored(0, 4 * MiB).equals(keep), 'nothing of the oversize payload was written');
      }
      assert.ok(!c.isClosed);
      c.destroy();
    });

    test('clients vanishing in the middle of WRITE payloads: data unchanged, server serves on', async () => {
      const p = new Prng(5);
      const off = 12 * MiB;
      const keep = stored(off, 2 * MiB);
      for (const sentBytes of [28, 29, 28 + 1000, 28 + 300 * 1024, 28 + MiB, 28 + 2 * MiB - 1]) {
        const { c } = await connectGo(tcp(), 'disk', { infos: [] });
        const payload = p.bytes(2 * MiB);
        const bytes = writeReq(1n, off, payload);
        c.write(bytes.subarray(0, Math.min(sentBytes, 64 * 1024)));
        await turn();
        if (sentBytes > 64 * 1024) c.write(bytes.subarray(64 * 1024, sentBytes));
        await turn();
        c.destroy();
        await c.closed;
      }
      // the server noticed every one of them and has nothing in flight
      for (let i = 0; i < 200 && (srv.server.connections > 0 || srv.server.stats.inflight > 0); i++) await turn();
      assert.equal(srv.server.connections, 0);
      assert.equal(srv.server.stats.inflight, 0);
      assert.ok(stored(off, 2 * MiB).equals(keep), 'no partial payload reached the target');
      const { c } = await connectGo(tcp(), 'disk', { infos: [] });
      const data = p.bytes(MiB);
      assert.equal((await c.cmd(NBD.CMD.WRITE, 0, off, data.length, data)).error, 0);
      assert.ok((await c.cmd(NBD.CMD.READ, 0, off, data.length)).data.equals(data));
      c.destroy();
    });
  });
}
