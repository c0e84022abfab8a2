/**
 * tsmd's own raid10 near-layout --raid-devices grow (src/md/reshape-raid10.ts through the
 * reshape engine) on file members: data written before, during (concurrent writers with
 * flushes) and after reads back, the array grows at the end, check 0, and the superblocks as
 * the real `mdadm --examine` reads them (data offset moved down by a chunk as mdadm 4.2 moves
 * it, raid devices, array size, no reshape left). A reshape stopped in the middle resumes
 * after a new assembly. Refusals write nothing.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, type TestContext, test } from 'node:test';
import { SystemClock } from '../../src/env/clock.js';
import { isTsmdError } from '../../src/errors.js';
import { Feature } from '../../src/format/superblock.js';
import { openDevice } from '../../src/io/file-device.js';
import { MdArray } from '../../src/md/array.js';
import { createArray } from '../../src/md/create.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { fields, haveTool, requireTool, run, sparseFile, tempDir } from '../helpers/tools.js';
import { prng } from '../helpers/prng.js';
import { checkMismatches as checkZero, fillBlocks as fill, verifyModel as verify } from '../helpers/reshape-model.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const dir = tempDir('r10grow');
after(() => dir.cleanup());
let serial = 0;

interface MakeOpts {
  bitmap?: boolean;
  sizeMiB?: number;
  chunkKiB?: number;
  /** the component size used (room after the data) */
  sizeKiB?: number;
}

async function make(disks: number, spares: number, layout: number, opts: MakeOpts = {}): Promise<string[]> {
  const tag = `r${serial++}`;
  const files = Array.from({ length: disks + spares }, (_, k) => sparseFile(join(dir.path, `${tag}-${k}.img`), (opts.sizeMiB ?? 8) * MiB));
  const devs = await Promise.all(files.map((f) => openDevice(f)));
  try {
    await createArray(
      devs,
      {
        level: 10,
        raidDisks: disks,
        metadata: '1.2',
        chunkKiB: opts.chunkKiB ?? 64,
        sizeKiB: opts.sizeKiB,
        layout,
        setName: 'h:r10',
        uuid: randomBytes(16),
        deviceUuids: devs.map(() => randomBytes(16)),
        bitmap: opts.bitmap ? 'internal' : 'none',
        nowSeconds: 1_700_000_000,
        members: devs.map((d) => ({ sizeSectors: Math.floor(d.sizeBytes / 512) })),
      },
      { confirmOverwrite: async () => false, initialSync: true, clock: new SystemClock() },
    );
  } finally {
    await Promise.all(devs.map((d) => d.close()));
  }
  return files;
}

async function open(files: string[]): Promise<MdArray> {
  const devs = await Promise.all(files.map((f) => openDevice(f)));
  return MdArray.assemble(devs, { clock: new SystemClock() });
}

async function loadSuperblockOf(f: string) {
  const dev = await openDevice(f, { readOnly: true });
  try {
    return (await loadSuperblock(dev))!.sb;
  } finally {
    await dev.close();
  }
}

const hashes = (files: string[]) => files.map((f) => createHash('sha256').update(readFileSync(f)).digest('hex'));

describe('raid10 near --grow --raid-devices', () => {
  const cases = [
    { name: 'near=2 4->5', disks: 4, spares: 1, layout: 0x102 },
    { name: 'near=2 4->6', disks: 4, spares: 2, layout: 0x102 },
    // disks/near is not a whole number: the member rows advance by fractions of a chunk
    { name: 'near=3 3->4', disks: 3, spares: 1, layout: 0x103 },
  ];
  for (const c of cases) {
    test(`${c.name}: data before, during (concurrent writers) and after; check 0; mdadm --examine agrees`, async () => {
      const files = await make(c.disks, c.spares, c.layout);
      const arr = await open(files);
      const model = new Map<number, number>();
      const before = arr.sizeBytes;
      const rnd = prng(7 + c.disks);
      try {
        const buf = new Uint8Array(MiB);
        for (let off = 0; off < before; off += MiB) {
          fill(buf, off, 1);
          await arr.write(buf, off);
          for (let b = 0; b < MiB; b += 4096) model.set((off + b) / 4096, 1);
        }
        arr.sync.local.maxKiBs = 4000; // slow enough that the writers overlap it
        arr.startBackground();
        assert.equal(await arr.grow({ raidDisks: c.disks + c.spares, devName: '/dev/md0' }), true);
        assert.equal(arr.reshapeActive, true);
        // md keeps the old size until the end (raid10_finish_reshape)
        assert.equal(arr.sizeBytes, before);
        let gen = 2;
        const writer = async (k: number) => {
          const b = new Uint8Array(16 * KiB);
          const groups = Math.floor(before / (16 * KiB));
          while (arr.reshapeActive) {
            const blk = (Math.floor((rnd() * groups) / 3) * 3 + k) * 4;
            if (blk * 4096 + b.length > before) continue;
            const g = gen++;
            for (let i = 0; i < 4; i++) fill(b.subarray(i * 4096, (i + 1) * 4096), (blk + i) * 4096, g);
            await arr.write(b, blk * 4096);
            for (let i = 0; i < 4; i++) model.set(blk + i, g);
            if (g % 7 === 0) await arr.flush();
            await new Promise((r) => setTimeout(r, 1));
          }
        };
        const seen = arr.sync.history.length;
        await Promise.all([writer(0), writer(1), writer(2), arr.reshape.wait()]);
        assert.ok(gen > 10, `writes ran during the reshape (${gen - 2})`);
        assert.equal(arr.reshape.lastError, null);
        assert.equal(arr.reshapeActive, false);
        await verify(arr, model, before);
        // md: the reshape moves the old size, then the grown region is resynced (and only it)
        await arr.sync.runUntilIdle();
        const resync = arr.sync.history.slice(seen).filter((h) => h.kind === 'resync');
        assert.equal(resync.length, 1, JSON.stringify(arr.sync.history));
        assert.equal(resync[0]!.workedSectors, (arr.sizeBytes - before) / 512);
        assert.equal(arr.sizeBytes, Math.floor(((before / (64 * KiB)) * (c.disks + c.spares)) / c.disks) * 64 * KiB, 'the array grew by the new members / copies');
        // after: the new space too
        for (let off = before; off < arr.sizeBytes; off += MiB) {
          const n = Math.min(MiB, arr.sizeBytes - off);
          fill(buf.subarray(0, n), off, 99);
          await arr.write(buf.subarray(0, n), off);
          for (let b = 0; b < n; b += 4096) model.set((off + b) / 4096, 99);
        }
        await verify(arr, model, arr.sizeBytes);
        assert.equal(await checkZero(arr), 0);
      } finally {
        await arr.close();
      }
      const copies = c.layout & 0xff;
      if (haveTool('mdadm')) {
        for (const f of files) {
          const r = run('mdadm', ['--examine', f]);
          assert.equal(r.status, 0, r.stderr);
          const e = fields(r.stdout);
          assert.equal(e.get('Raid Devices'), String(c.disks + c.spares));
          assert.equal(e.get('Feature Map'), '0x0');
          assert.equal(e.get('Data Offset'), '1920 sectors', 'moved down by one chunk, as mdadm 4.2 moves it');
          assert.equal(e.get('Chunk Size'), '64K');
          assert.equal(e.get('Layout'), `near=${c.layout & 0xff}`);
          // mdadm's examine: size x raid_disks / copies, not rounded to chunks as md's raid10_size is
          const component = Number((await loadSuperblockOf(f)).size);
          assert.match(e.get('Array Size') ?? '', new RegExp(`^${Math.floor((component * 512 * (c.disks + c.spares)) / copies / 1024)} KiB`));
          assert.equal(e.get('Reshape pos\'n'), undefined);
          assert.equal(e.get('State'), 'clean');
        }
      }
      const again = await open(files);
      try {
        await verify(again, model, again.sizeBytes);
        assert.equal(await checkZero(again), 0);
      } finally {
        await again.close();
      }
    });
  }

  test('stopped in the middle: the superblocks say where (mdadm --examine), a new assembly resumes it', async () => {
    const files = await make(4, 1, 0x102, { sizeMiB: 16 });
    let arr = await open(files);
    const model = new Map<number, number>();
    const size = arr.sizeBytes;
    const buf = new Uint8Array(MiB);
    for (let off = 0; off < size; off += MiB) {
      fill(buf, off, 1);
      await arr.write(buf, off);
      for (let b = 0; b < MiB; b += 4096) model.set((off + b) / 4096, 1);
    }
    arr.sync.local.maxKiBs = 2000;
    arr.startBackground();
    await arr.grow({ raidDisks: 5, devName: '/dev/md0' });
    while (Number(arr.sb.reshapePosition) < 4096) await new Promise((r) => setTimeout(r, 10));
    await arr.close();
    if (haveTool('mdadm')) {
      const e = fields(run('mdadm', ['--examine', files[0]!]).stdout);
      assert.equal(e.get('Feature Map'), '0x44');
      assert.equal(e.get('Delta Devices'), '1 (4->5)');
      assert.equal(e.get('New Offset'), '1920 sectors');
      assert.match(e.get('Reshape pos\'n') ?? '', /^\d+/);
    }
    arr = await open(files);
    try {
      assert.equal(arr.reshapeActive, true);
      assert.equal(arr.isReadOnly, false);
      await verify(arr, model, size);
      arr.startBackground();
      await arr.reshape.wait();
      assert.equal(arr.reshape.lastError, null);
      await verify(arr, model, size);
      assert.equal(await checkZero(arr), 0);
    } finally {
      await arr.close();
    }
  });

  test('refusals write nothing: far layout, no spare, a bitmap', async () => {
    const far = await make(4, 1, 0x201);
    const noSpare = await make(4, 0, 0x102);
    const withBitmap = await make(4, 1, 0x102, { bitmap: true });
    const all = [...far, ...noSpare, ...withBitmap];
    const sums = hashes(all);
    for (const [files, re, code] of [
      [far, /^Cannot reshape RAID10 in far-mode$/, 'EINVAL'],
      [noSpare, /^Need 1 spare to avoid degraded array, and only have 0\.\n {7}Use --force to over-ride this check\.$/, 'EINVAL'],
      [withBitmap, /internal bitmap/, 'ENOTSUP'],
    ] as const) {
      const arr = await open(files);
      try {
        await assert.rejects(arr.grow({ raidDisks: 5, devName: '/dev/md0' }), (e) => isTsmdError(e, code) && re.test(e.message));
        assert.equal(arr.reshapeActive, false);
      } finally {
        await arr.close();
      }
    }
    assert.deepEqual(hashes(all), sums);
    // the superblocks still say what they said (no reshape feature)
    const arr = await open(far);
    try {
      assert.equal(arr.sb.featureMap & Feature.RESHAPE_ACTIVE, 0);
    } finally {
      await arr.close();
    }
  });
});

/** What a raid10 reshape of the table below starts from, asks for and ends with. */
interface Case {
  name: string;
  disks: number;
  spares?: number;
  layout: number;
  chunkKiB?: number;
  /** per-member size used by the array (room after the data) */
  sizeKiB?: number;
  grow: { raidDisks?: number; chunkSectors?: number; layout?: number };
  /** the array is first truncated to the new size (mdadm --grow --array-size) */
  shrink?: boolean;
  /** mdadm --examine at the end */
  dataOffset: number;
  layoutText: string;
  /** the superblocks in the middle: the feature map mdadm prints */
  midFeatures: string;
}

// data offset 2048 on 8 MiB members, superblock at 8: 2032 sectors free before the data.
// mdadm's choose_offset(lo 16, hi 2048, min 16, max 2048 - min_offset_change) picks 1024
// for these forwards reshapes; a shrink moves up by exactly min_offset_change.
const cases: Case[] = [
  { name: 'near=2 chunk 64K->128K', disks: 4, layout: 0x102, grow: { chunkSectors: 256 }, dataOffset: 1024, layoutText: 'near=2', midFeatures: '0x44' },
  // disks/near is not a whole number: the member rows advance by fractions of a chunk
  { name: 'near=2 3 devices chunk 64K->32K', disks: 3, layout: 0x102, grow: { chunkSectors: 64 }, dataOffset: 1024, layoutText: 'near=2', midFeatures: '0x44' },
  { name: 'near=2 -> offset=2', disks: 4, layout: 0x102, grow: { layout: 0x10201 }, dataOffset: 1024, layoutText: 'offset=2', midFeatures: '0x44' },
  { name: 'offset=2 -> near=2 with chunk 64K->128K', disks: 4, layout: 0x10201, grow: { layout: 0x102, chunkSectors: 256 }, dataOffset: 1024, layoutText: 'near=2', midFeatures: '0x44' },
  // an offset stripe of 5 chunks fills 2 rows: steps end on whole new stripes
  { name: 'offset=2 grow 4->5', disks: 4, spares: 1, layout: 0x10201, grow: { raidDisks: 5 }, dataOffset: 2048 - 256, layoutText: 'offset=2', midFeatures: '0x44' },
  // room after the data and less before it: the data moves up, backwards
  { name: 'near=2 chunk 64K->128K backwards (room after the data)', disks: 4, layout: 0x102, sizeKiB: 5 * 1024, grow: { chunkSectors: 256 }, dataOffset: 2048 + 2048, layoutText: 'near=2', midFeatures: '0x64' },
  { name: 'near=2 shrink 5->4', disks: 5, layout: 0x102, sizeKiB: 6 * 1024, grow: { raidDisks: 4 }, shrink: true, dataOffset: 2048 + 128, layoutText: 'near=2', midFeatures: '0x44' },
];

describe('raid10 --chunk, --layout, offset layouts, fewer devices', () => {
  for (const c of cases) {
    test(`${c.name}: data before, during (concurrent writers) and after; check 0; mdadm --examine agrees`, async (t: TestContext) => {
      const withMdadm = requireTool(t, 'mdadm', 'the superblocks are compared with mdadm --examine');
      const files = await make(c.disks, c.spares ?? 0, c.layout, { chunkKiB: c.chunkKiB, sizeKiB: c.sizeKiB });
      const arr = await open(files);
      const model = new Map<number, number>();
      const before = arr.sizeBytes;
      const rnd = prng(11 + c.disks);
      const newDisks = c.grow.raidDisks ?? c.disks;
      let size = before;
      try {
        const buf = new Uint8Array(MiB);
        for (let off = 0; off < before; off += MiB) {
          const n = Math.min(MiB, before - off);
          fill(buf.subarray(0, n), off, 1);
          await arr.write(buf.subarray(0, n), off);
          for (let b = 0; b < n; b += 4096) model.set((off + b) / 4096, 1);
        }
        if (c.shrink) {
          // near=2, 64K chunks: the component size (whole chunks) x new devices / 2 copies
          const newSectors = (Number(arr.sb.size) * newDisks) / 2;
          await assert.rejects(arr.grow({ ...c.grow, devName: '/dev/md0' }), (e) => isTsmdError(e, 'EINVAL') && /^this change will reduce the size of the array\.\n {7}use --grow --array-size first to truncate array\.\n {7}e\.g\. mdadm --grow \/dev\/md0 --array-size \d+$/.test(e.message));
          arr.setArraySize(newSectors);
          size = newSectors * 512;
          for (const k of [...model.keys()]) if (k * 4096 >= size) model.delete(k);
        }
        arr.sync.local.maxKiBs = 4000; // slow enough that the writers overlap it
        arr.startBackground();
        assert.equal(await arr.grow({ ...c.grow, devName: '/dev/md0' }), true);
        assert.equal(arr.reshapeActive, true);
        const mid: { e: Map<string, string> | null } = { e: null };
        let gen = 2;
        const writer = async (k: number) => {
          const b = new Uint8Array(16 * KiB);
          const groups = Math.floor(size / (16 * KiB));
          while (arr.reshapeActive) {
            const blk = (Math.floor((rnd() * groups) / 3) * 3 + k) * 4;
            if (blk * 4096 + b.length > size) continue;
            const g = gen++;
            for (let i = 0; i < 4; i++) fill(b.subarray(i * 4096, (i + 1) * 4096), (blk + i) * 4096, g);
            await arr.write(b, blk * 4096);
            for (let i = 0; i < 4; i++) model.set(blk + i, g);
            if (g % 7 === 0) await arr.flush();
            if (g === 40 && withMdadm && arr.reshapeActive) mid.e = fields(run('mdadm', ['--examine', files[0]!]).stdout);
            await new Promise((r) => setTimeout(r, 1));
          }
        };
        await Promise.all([writer(0), writer(1), writer(2), arr.reshape.wait()]);
        assert.ok(gen > 40, `writes ran during the reshape (${gen - 2})`);
        assert.equal(arr.reshape.lastError, null);
        assert.equal(arr.reshapeActive, false);
        await verify(arr, model, size);
        if (withMdadm) {
          const e = mid.e;
          assert.ok(e, 'mdadm --examine ran in the middle');
          assert.equal(e.get('Feature Map'), c.midFeatures, 'mdadm reads the reshape in the middle');
          if (c.grow.chunkSectors) assert.equal(e.get('New Chunksize'), `${c.grow.chunkSectors / 2}K`);
          if (newDisks !== c.disks) assert.equal(e.get('Delta Devices'), `${newDisks - c.disks} (${c.disks}->${newDisks})`);
        }
        await arr.sync.runUntilIdle();
        assert.equal(arr.sizeBytes >= size, true);
        // after: some of the old space, all of the new (its content is the resync's)
        for (let off = 0; off < arr.sizeBytes; off += off < size ? 2 * MiB : 64 * KiB) {
          const n = Math.min(64 * KiB, arr.sizeBytes - off);
          fill(buf.subarray(0, n), off, 99);
          await arr.write(buf.subarray(0, n), off);
          for (let b = 0; b < n; b += 4096) model.set((off + b) / 4096, 99);
        }
        size = arr.sizeBytes;
        await verify(arr, model, size);
        assert.equal(await checkZero(arr), 0);
      } finally {
        await arr.close();
      }
      if (withMdadm) {
        for (const [k, f] of files.entries()) {
          const r = run('mdadm', ['--examine', f]);
          assert.equal(r.status, 0, r.stderr);
          const e = fields(r.stdout);
          assert.equal(e.get('Raid Devices'), String(newDisks));
          assert.equal(e.get('Feature Map'), '0x0');
          assert.equal(e.get('Data Offset'), `${c.dataOffset} sectors`);
          assert.equal(e.get('Chunk Size'), `${(c.grow.chunkSectors ?? 128) / 2}K`);
          assert.equal(e.get('Layout'), c.layoutText);
          assert.equal(e.get('Reshape pos\'n'), undefined);
          assert.equal(e.get('New Offset'), undefined);
          // a shrink leaves the last member a spare (raid10_finish_reshape)
          assert.equal(e.get('Device Role'), k < newDisks ? `Active device ${k}` : 'spare');
          assert.equal(e.get('State'), 'clean');
        }
      }
      const again = await open(files);
      try {
        await verify(again, model, size);
        assert.equal(await checkZero(again), 0);
      } finally {
        await again.close();
      }
    });
  }
});
