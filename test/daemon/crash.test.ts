/**
 * Crash consistency: the daemon is killed (SIGKILL) at random moments during random writes with
 * FUA and FLUSH; after a restart and re-assembly every write that was acknowledged with FUA, or
 * acknowledged before an acknowledged FLUSH, reads back; the resync after the restart covers
 * exactly the chunks whose write-intent bits were on disk (read from the member files before
 * assembly, with the format decoder), and check then finds 0 mismatches.
 * TSMD_CRASH_ITERATIONS sets the count per level (default 17: 51 kills in all).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { controlCall } from '../../src/daemon/control.js';
import { Feature, MAX_SECTOR } from '../../src/format/superblock.js';
import { openDevice } from '../../src/io/file-device.js';
import { loadBitmaps, loadSuperblock } from '../../src/md/sb-io.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { sparseFile, tempDir } from '../helpers/tools.js';
import { prng } from '../helpers/prng.js';

const MiB = 1024 * 1024;
const BLOCK = 4096;

/** Sectors a bitmap-guided resync must visit: the dirty bits (OR over the in-sync members). */
/**
 * The resync-space sectors the bitmaps on disk record (OR of the in-sync members' bitmaps),
 * and whether every superblock says the array was clean (resync_offset = MAX): then md owes
 * no resync whatever bits are still set (the bitmap daemon clears them lazily).
 */
async function dirtySectorsOnDisk(files: string[]): Promise<{ sectors: number; clean: boolean }> {
  let clean = true;
  let bits: Uint8Array | null = null;
  let nbits = 0;
  let chunk = 0;
  let size = 0;
  for (const f of files) {
    const dev = await openDevice(f, { readOnly: true });
    try {
      const l = await loadSuperblock(dev);
      if (l && l.sb.resyncOffset !== MAX_SECTOR) clean = false;
      if (!l || (l.sb.featureMap & Feature.RECOVERY_OFFSET) !== 0) continue;
      const [b] = await loadBitmaps(dev, l);
      if (!b) continue;
      nbits = b.nbits;
      chunk = b.sup.chunkSize / 512;
      size = Number(b.sup.syncSize);
      if (!bits) bits = b.bits.slice();
      else for (let i = 0; i < bits.length; i++) bits[i]! |= b.bits[i]!;
    } finally {
      await dev.close();
    }
  }
  assert.ok(bits, 'a bitmap on the members');
  let sectors = 0;
  for (let c = 0; c < nbits; c++) if (bits[c >>> 3]! & (1 << (c & 7))) sectors += Math.min(chunk, size - c * chunk);
  return { sectors, clean };
}

async function arrayState(d: TestDaemon) {
  const rep = await controlCall(join(d.runDir, 'control.sock'), { op: 'arrays' }, 5000);
  return rep.arrays!.find((a) => a.mdName === 'md0')!;
}

async function settle(d: TestDaemon): Promise<void> {
  const t0 = Date.now();
  while ((await arrayState(d)).syncBusy) {
    assert.ok(Date.now() - t0 < 60_000, 'sync finishes');
    await new Promise((r) => setTimeout(r, 30));
  }
}

describe('crash consistency (kill -9 during writes)', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('crash');
  });
  after(() => dir.cleanup());

  for (const level of ['raid1', 'raid5', 'raid6']) {
    test(level, async () => {
      const iterations = Number(process.env.TSMD_CRASH_ITERATIONS ?? 17);
      const n = level === 'raid1' ? 2 : level === 'raid5' ? 4 : 5;
      const files = Array.from({ length: n }, (_, k) => sparseFile(join(dir.path, `${level}-${k}.img`), 24 * MiB));
      const runDir = join(dir.path, `run-${level}`);
      const fast = ['--speed-limit-min=500000'];
      let d = await startDaemon(runDir, fast);
      const chunk = level === 'raid1' ? [] : ['-c64'];
      let r = d.tsmd(['--create', '/dev/md0', `--level=${level}`, `-n${n}`, ...chunk, '--run', '--bitmap=internal', '--bitmap-chunk=256K', ...files]);
      assert.equal(r.status, 0, r.stderr);
      // what each 4 KiB block must hold once durable (null = never written durably yet)
      const durable = new Map<number, Buffer>();
      const rnd = prng(level.length * 1000 + n);
      for (let it = 0; it < iterations; it++) {
        const c = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
        const blocks = Math.floor(c.sizeBytes / BLOCK);
        // acknowledged but not yet flushed writes: block -> data
        let unflushed = new Map<number, Buffer>();
        // the write in flight when the daemon dies may or may not have landed
        let inflight: { b: number; count: number } | null = null;
        let stop = false;
        const writer = (async () => {
          while (!stop) {
            const b = Math.floor(rnd() * blocks);
            const count = 1 + Math.floor(rnd() * 8);
            const data = randomBytes(Math.min(count, blocks - b) * BLOCK);
            const fua = rnd() < 0.3;
            inflight = { b, count: data.length / BLOCK };
            try {
              await c.write(b * BLOCK, data, fua);
            } catch {
              return; // the daemon died
            }
            inflight = null;
            for (let k = 0; k * BLOCK < data.length; k++) {
              const piece = data.subarray(k * BLOCK, (k + 1) * BLOCK);
              if (fua) {
                durable.set(b + k, piece);
                unflushed.delete(b + k);
              } else unflushed.set(b + k, piece);
            }
            if (rnd() < 0.1) {
              const snapshot = unflushed;
              unflushed = new Map();
              try {
                await c.flush();
              } catch {
                // the flush never completed: those writes are acknowledged but not durable
                for (const [k, v] of snapshot) if (!unflushed.has(k)) unflushed.set(k, v);
                return;
              }
              for (const [k, v] of snapshot) if (!unflushed.has(k)) durable.set(k, v);
            }
          }
        })();
        await new Promise((res) => setTimeout(res, 50 + rnd() * 250));
        await d.stop('SIGKILL');
        stop = true;
        await writer;
        c.destroy();
        // blocks written after their last durable version but not flushed are undefined now:
        // either version may be there, so they can no longer be checked
        for (const k of unflushed.keys()) durable.delete(k);
        const lost = inflight as { b: number; count: number } | null;
        if (lost) for (let k = 0; k < lost.count; k++) durable.delete(lost.b + k);
        const owed = await dirtySectorsOnDisk(files);
        d = await startDaemon(runDir, fast);
        r = d.tsmd(['--assemble', '/dev/md0', ...files]);
        assert.equal(r.status, 0, `iteration ${it}: ${r.stderr}`);
        await settle(d);
        const st = await arrayState(d);
        const resyncs = st.syncHistory.filter((h) => h.kind === 'resync');
        if (resyncs.length > 0) {
          assert.equal(resyncs.length, 1);
          assert.ok(resyncs[0]!.completed);
          assert.equal(resyncs[0]!.workedSectors, owed.sectors, `iteration ${it}: the resync covers exactly the dirty chunks`);
        } else {
          // no resync: the array was recorded clean (bits left set are cleared lazily, as md's)
          assert.ok(owed.clean, `iteration ${it}: no resync ran although the superblocks say active (${owed.sectors} sectors dirty)`);
        }
        const v = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
        const entries = [...durable];
        for (let i = 0; i < entries.length; i += 64) {
          const batch = entries.slice(i, i + 64);
          const got = await Promise.all(batch.map(([k]) => v.read(k * BLOCK, BLOCK)));
          batch.forEach(([k, want], j) => {
            assert.ok(got[j]!.equals(want), `iteration ${it}: block ${k} lost an acknowledged durable write`);
          });
        }
        await v.close();
        r = d.tsmd(['--action=check', '/dev/md0']);
        assert.equal(r.status, 0, r.stderr);
        await settle(d);
        const after = await arrayState(d);
        assert.ok(after.syncHistory.some((h) => h.kind === 'check' && h.completed), 'check ran');
        assert.equal(after.mismatchCnt, 0, `iteration ${it}: check after the resync`);
      }
      assert.ok(durable.size > 0, 'the test wrote something durable');
      await d.stop();
    });
  }
});
