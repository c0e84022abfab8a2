/**
 * The reshape engine (src/md/reshape.ts) on in-memory members: raid5/6 grow, chunk and layout
 * changes while writers run, the superblocks at the end, check 0, and the refusals.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SystemClock } from '../../src/env/clock.js';
import { isTsmdError } from '../../src/errors.js';
import { countDirty } from '../../src/format/bitmap.js';
import { Feature } from '../../src/format/superblock.js';
import type { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { MdArray } from '../../src/md/array.js';
import { ReshapeView } from '../../src/raid/reshape-view.js';
import { loadBitmaps, loadSuperblock } from '../../src/md/sb-io.js';
import { memoryArray } from '../helpers/arrays.js';
import { prng } from '../helpers/prng.js';
import { checkMismatches as checkZero, fillBlocks as fill, fillModel, image, resumeToEnd, verifyModel as verify } from '../helpers/reshape-model.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Bits set in a member's bitmap on disk. */
async function dirtyOnDisk(d: MemoryBlockDevice): Promise<number> {
  const dev = d.reopen({ readOnly: true });
  const l = (await loadSuperblock(dev))!;
  const [b] = await loadBitmaps(dev, l);
  assert.ok(b, `${d.name} has a bitmap`);
  return countDirty(b.bits, b.nbits);
}

async function open(devs: MemoryBlockDevice[]): Promise<MdArray> {
  return MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock() });
}

interface Case {
  name: string;
  level: 5 | 6;
  disks: number;
  spares: number;
  grow: { raidDisks?: number; chunkSectors?: number; layout?: number };
  chunkKiB: number;
}

const cases: Case[] = [
  { name: 'raid5 4->5 devices', level: 5, disks: 4, spares: 1, grow: { raidDisks: 5 }, chunkKiB: 64 },
  { name: 'raid6 5->6 devices', level: 6, disks: 5, spares: 1, grow: { raidDisks: 6 }, chunkKiB: 64 },
  { name: 'raid5 chunk 64K->128K', level: 5, disks: 4, spares: 0, grow: { chunkSectors: 256 }, chunkKiB: 64 },
  { name: 'raid5 chunk 128K->32K', level: 5, disks: 4, spares: 0, grow: { chunkSectors: 64 }, chunkKiB: 128 },
  { name: 'raid5 layout left-symmetric->right-asymmetric', level: 5, disks: 4, spares: 0, grow: { layout: 1 }, chunkKiB: 64 },
];

describe('reshape engine', () => {
  for (const c of cases) {
    test(`${c.name}: data before, during and after reads back; superblocks; check 0`, async () => {
      const devs = await memoryArray({ level: c.level, sizesMiB: new Array(c.disks + c.spares).fill(8), raidDisks: c.disks, chunkKiB: c.chunkKiB });
      const arr = await open(devs);
      const model = new Map<number, number>();
      const before = arr.sizeBytes;
      const rnd = prng(42);
      try {
        // before: the whole array
        const buf = new Uint8Array(MiB);
        for (let off = 0; off < before; off += MiB) {
          fill(buf, off, 1);
          await arr.write(buf, off);
          for (let b = 0; b < MiB; b += 4096) model.set((off + b) / 4096, 1);
        }
        arr.sync.local.maxKiBs = 5000; // slow enough that the writers overlap it
        arr.startBackground();
        assert.equal(await arr.grow({ ...c.grow, devName: '/dev/md0' }), true);
        assert.equal(arr.reshapeActive, true);
        // during: writers at random places until the reshape is done
        let gen = 2;
        // each writer its own 16 KiB groups (g % 3): the model knows which write is the last
        const writer = async (k: number) => {
          const b = new Uint8Array(4 * KiB * 4);
          const groups = Math.floor(before / (16 * KiB));
          while (arr.reshapeActive) {
            const blk = (Math.floor((rnd() * groups) / 3) * 3 + k) * 4;
            if (blk * 4096 + b.length > before) continue;
            const g = gen++;
            for (let i = 0; i < 4; i++) fill(b.subarray(i * 4096, (i + 1) * 4096), (blk + i) * 4096, g);
            await arr.write(b, blk * 4096);
            for (let i = 0; i < 4; i++) model.set(blk + i, g);
            if (g % 7 === 0) await arr.flush();
            // memory members answer in microtasks: let the timers (the engine's throttle) run
            await new Promise((r) => setImmediate(r));
          }
        };
        await Promise.all([writer(0), writer(1), writer(2), arr.reshape.wait()]);
        assert.ok(gen > 10, `writes ran during the reshape (${gen - 2})`);
        assert.equal(arr.reshapeActive, false);
        assert.equal(arr.reshape.lastError, null);
        await verify(arr, model, before);
        if (c.grow.raidDisks) assert.ok(arr.sizeBytes > before, 'the array grew');
        else assert.equal(arr.sizeBytes, before);
        // after: the new space too
        fill(buf, arr.sizeBytes - MiB, 99);
        await arr.write(buf, arr.sizeBytes - MiB);
        for (let b = 0; b < MiB; b += 4096) model.set((arr.sizeBytes - MiB + b) / 4096, 99);
        assert.equal(await checkZero(arr), 0);
      } finally {
        await arr.close();
      }
      const sb = (await loadSuperblock(devs[0]!.reopen()))!.sb;
      assert.equal(sb.featureMap & (Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET), 0);
      assert.equal(sb.raidDisks, c.grow.raidDisks ?? c.disks);
      assert.equal(sb.chunkSize, c.grow.chunkSectors ?? c.chunkKiB * 2);
      assert.ok(Number(sb.dataOffset) < 2048, `data offset moved (${sb.dataOffset})`);
      // assembled again: same data
      const again = await open(devs);
      try {
        await verify(again, model, before);
        assert.equal(await checkZero(again), 0);
      } finally {
        await again.close();
      }
    });
  }

  test('raid5 4->5 with an internal bitmap: the bitmap works again after the reshape, and a stop leaves no bit set', async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: [8, 8, 8, 8, 8], raidDisks: 4, chunkKiB: 64, bitmap: 'internal', bitmapChunkKiB: 256 });
    const arr = await open(devs);
    try {
      await arr.write(new Uint8Array(MiB).fill(7), 0);
      arr.sync.local.maxKiBs = 1_000_000;
      arr.startBackground();
      assert.equal(await arr.grow({ raidDisks: 5, devName: '/dev/md0' }), true);
      await arr.reshape.wait();
      assert.equal(arr.reshape.lastError, null);
      assert.ok(arr.bitmap, 'a runtime bitmap after the reshape');
      assert.equal(arr.bitmap.clearableCount + arr.bitmap.needSyncCount, 0, 'no resync owed: the bitmap starts clear');
      // a write after the reshape sets its chunk's bit on disk before it is acknowledged
      await arr.write(new Uint8Array(4096).fill(9), 20 * MiB);
      assert.equal(await dirtyOnDisk(devs[0]!), 1);
    } finally {
      await arr.close();
    }
    for (const d of devs) assert.equal(await dirtyOnDisk(d), 0, `${d.name}: no bit left set after the stop`);
  });

  test('a write to a region copied but not yet checkpointed does not wait for the checkpoint, and a crash before it keeps it', async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: [8, 8, 8, 8, 8], raidDisks: 4, chunkKiB: 64 });
    let arr = await open(devs);
    const model = new Map<number, number>();
    const before = arr.sizeBytes;
    await fillModel(arr, model);
    await arr.close();
    // the first checkpoint's member flush, once a step is copied, waits for the test
    let gate: Promise<void> | null = null;
    let openGate = (): void => {};
    let atCheckpoint = (_: [number, number]): void => {};
    const reached = new Promise<[number, number]>((r) => (atCheckpoint = r));
    const stepCopied = (): [number, number] | null => {
      const v = arr.personality;
      return v instanceof ReshapeView && v.copiedEnd > v.position ? [v.position, v.copiedEnd] : null;
    };
    const members = devs.map((d) => {
      const dev = d.reopen();
      return {
        name: dev.name,
        sizeBytes: dev.sizeBytes,
        readOnly: false,
        read: (b: Uint8Array, o: number) => dev.read(b, o),
        write: (b: Uint8Array, o: number) => dev.write(b, o),
        flush: async () => {
          const step = stepCopied();
          if (step && !gate) {
            gate = new Promise<void>((r) => (openGate = r));
            atCheckpoint(step);
          }
          if (gate) await gate;
          return dev.flush();
        },
        close: () => dev.close(),
      };
    });
    arr = await MdArray.assemble(members, { clock: new SystemClock() });
    let crash: MemoryBlockDevice[];
    try {
      // the array is marked active now (a first write records it, and that flush is not gated)
      const first = new Uint8Array(4096);
      fill(first, 0, 1);
      await arr.write(first, 0);
      assert.equal(await arr.grow({ raidDisks: 5, devName: '/dev/md0' }), true);
      arr.startBackground();
      const [lo, hi] = await reached;
      // md would hold this write until the superblocks record the step; here the checkpoint
      // cannot finish until the write has
      const at = Math.floor(((lo + hi) / 2) * 512 / 4096) * 4096;
      const b = new Uint8Array(16 * KiB);
      for (let i = 0; i < 4; i++) fill(b.subarray(i * 4096, (i + 1) * 4096), at + i * 4096, 77);
      const done = await Promise.race([arr.write(b, at).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 3000))]);
      assert.ok(done, `a write in [${lo}, ${hi}) completes while that step's checkpoint waits`);
      for (let i = 0; i < 4; i++) model.set(at / 4096 + i, 77);
      assert.equal(arr.sb.reshapePosition, BigInt(lo), 'the superblocks do not record the step yet');
      crash = devs.map(image);
      openGate();
      await arr.reshape.wait();
      assert.equal(arr.reshape.lastError, null);
      // no crash: the new geometry has the write
      await verify(arr, model, before, 'after the reshape');
    } finally {
      openGate();
      await arr.close();
    }
    // a crash before the checkpoint: the step is copied again from the old geometry, which has it
    const again = await open(crash);
    try {
      assert.equal(again.sb.reshapePosition, 0n);
      await verify(again, model, before, 'crash image, before the reshape resumes');
      await resumeToEnd(again, model, before);
    } finally {
      await again.close();
    }
  });

  test('refusals write nothing', async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: [8, 8, 8, 8], chunkKiB: 64 });
    const arr = await open(devs);
    const snap = async () => Promise.all(devs.map(async (d) => Buffer.from((await loadSuperblock(d.reopen()))!.raw).toString('hex')));
    const sbs = await snap();
    try {
      await assert.rejects(arr.grow({ raidDisks: 5, devName: '/dev/md0' }), (e) => isTsmdError(e, 'EINVAL') && /Need 1 spare to avoid degraded array, and only have 0/.test(e.message));
      await assert.rejects(arr.grow({ raidDisks: 3, devName: '/dev/md0' }), (e) => isTsmdError(e, 'EINVAL') && /this change will reduce the size of the array/.test(e.message));
      assert.equal(await arr.grow({ raidDisks: 4 }), false);
    } finally {
      await arr.close();
    }
    assert.deepEqual(await snap(), sbs);
  });
});
