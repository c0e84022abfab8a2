/**
 * tsmd's own raid10 reshapes other than the near-layout grow (src/md/reshape-raid10.ts through
 * the reshape engine) on file members: --chunk, --layout between near and offset, the offset
 * layout's grow, fewer devices, and a chunk change moving the data up (backwards). Data written
 * before, during (concurrent writers with flushes) and after reads back, check 0, and the
 * superblocks as the real `mdadm --examine` reads them in the middle and at the end. The step
 * rule is judged on its own: every member write of the engine is checked against the old
 * geometry (raid10DeviceToArray) and the checkpoint on disk at that moment. Refusals write
 * nothing and say what mdadm says.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, describe, type TestContext, test } from 'node:test';
import { type ErrorCode, isTsmdError } from '../../src/errors.js';
import type { MdArray } from '../../src/md/array.js';
import { Feature } from '../../src/format/superblock.js';
import type { BlockDevice } from '../../src/io/block-device.js';
import { raid10DeviceToArray, type Raid10Geometry } from '../../src/raid/geometry/raid10.js';
import { fields, requireTool, run, tempDir } from '../helpers/tools.js';
import { prng } from '../helpers/prng.js';
import { checkMismatches as checkZero, fillBlocks as fill, verifyModel as verify } from '../helpers/reshape-model.js';
import { fileHashes as hashes, type MakeOpts, makeRaid10, openRaid10 as open } from '../helpers/raid10-files.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const dir = tempDir('r10shape');
after(() => dir.cleanup());
const make = (disks: number, spares: number, layout: number, opts: MakeOpts = {}) => makeRaid10(dir.path, disks, spares, layout, opts);

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
  /** an internal bitmap (md_bitmap_resize to the new array size at the start) */
  bitmap?: boolean;
  bitmapChunkKiB?: number;
}

// data offset 2048 on 8 MiB members, superblock at 8: 2032 sectors free before the data.
// mdadm's choose_offset(lo 16, hi 2048, min 16, max 2048 - min_offset_change) picks 1024
// for these forwards reshapes; a shrink moves up by exactly min_offset_change.
const cases: Case[] = [
  { name: 'near=2 chunk 64K->128K', disks: 4, layout: 0x102, grow: { chunkSectors: 256 }, dataOffset: 1024, layoutText: 'near=2', midFeatures: '0x44' },
  // disks/near is not a whole number: the member rows advance by fractions of a chunk
  { name: 'near=2 3 devices chunk 64K->32K, bitmap', disks: 3, layout: 0x102, grow: { chunkSectors: 64 }, dataOffset: 1024, layoutText: 'near=2', midFeatures: '0x45', bitmap: true },
  { name: 'near=2 -> offset=2', disks: 4, layout: 0x102, grow: { layout: 0x10201 }, dataOffset: 1024, layoutText: 'offset=2', midFeatures: '0x44' },
  { name: 'offset=2 -> near=2 with chunk 64K->128K', disks: 4, layout: 0x10201, grow: { layout: 0x102, chunkSectors: 256 }, dataOffset: 1024, layoutText: 'near=2', midFeatures: '0x44' },
  // an offset stripe of 5 chunks fills 2 rows: steps end on whole new stripes
  // with a bitmap of 4K chunks whose 2048 bits fill its one sector: the grown array's bits do
  // not fit, md_bitmap_resize doubles the chunk
  {
    name: 'offset=2 grow 4->5, bitmap chunk doubled',
    disks: 4,
    spares: 1,
    layout: 0x10201,
    sizeKiB: 4096,
    grow: { raidDisks: 5 },
    dataOffset: 2048 - 256,
    layoutText: 'offset=2',
    midFeatures: '0x45',
    bitmap: true,
    bitmapChunkKiB: 4,
  },
  // room after the data and less before it: the data moves up, backwards
  { name: 'near=2 chunk 64K->128K backwards (room after the data)', disks: 4, layout: 0x102, sizeKiB: 5 * 1024, grow: { chunkSectors: 256 }, dataOffset: 2048 + 2048, layoutText: 'near=2', midFeatures: '0x64' },
  { name: 'near=2 shrink 5->4, bitmap', disks: 5, layout: 0x102, sizeKiB: 6 * 1024, grow: { raidDisks: 4 }, shrink: true, dataOffset: 2048 + 128, layoutText: 'near=2', midFeatures: '0x45', bitmap: true },
];

/**
 * mdadm's refusal of a raid10 shrink names the size to truncate to (64K chunks: md's
 * raid10_size of the new geometry, chunk x floor(floor(component chunks / far) x devices /
 * near), the component first reduced by min_offset_change = chunk x far when there is less
 * than that room after the data, as mdadm's analyse_change plans); then --array-size.
 */
async function truncateForShrink(arr: MdArray, c: Pick<Case, 'grow' | 'sizeKiB' | 'layout'>): Promise<number> {
  const [near, far] = [c.layout & 0xff, (c.layout >> 8) & 0xff];
  const reduced = c.sizeKiB === undefined; // the component fills the member: no room after it
  const component = Number(arr.sb.size) - (reduced ? 128 * far : 0);
  const want = Math.floor((Math.floor(Math.floor(component / 128) / far) * c.grow.raidDisks!) / near) * 128;
  await assert.rejects(
    arr.grow({ ...c.grow, devName: '/dev/md0' }),
    (e) =>
      isTsmdError(e, 'EINVAL') &&
      new RegExp(`^this change will reduce the size of the array\\.\\n {7}use --grow --array-size first to truncate array\\.\\n {7}e\\.g\\. mdadm --grow /dev/md0 --array-size ${want / 2}$`).test(e.message),
  );
  arr.setArraySize(want);
  return want;
}

/** mdadm -X of a member file (it finds an internal bitmap only on a block device). */
function examineBitmap(file: string): Map<string, string> {
  const dev = execFileSync('losetup', ['-r', '-f', '--show', file], { encoding: 'utf8' }).trim();
  try {
    const r = run('mdadm', ['--examine-bitmap', dev]);
    assert.equal(r.status, 0, r.stderr);
    return fields(r.stdout);
  } finally {
    execFileSync('losetup', ['-d', dev]);
  }
}

/** The array size mdadm --examine prints during a reshape is the old one: the new from the geometry. */
function newSizeOf(e: Map<string, string>): number {
  const disks = Number(e.get('Raid Devices'));
  // (mdadm prints Used Dev Size only where it differs from Avail Dev Size)
  const used = Number(/^(\d+)/.exec(e.get('Used Dev Size') ?? e.get('Avail Dev Size') ?? '')![1]);
  const chunk = Number(/^(\d+)K/.exec(e.get('New Chunksize') ?? e.get('Chunk Size') ?? '')![1]) * 2;
  // near=2 or offset=2: whole chunks of the member size x devices / 2 copies (raid10_size)
  return Math.floor(Math.floor(used / chunk) / 2) * 2 * chunk * disks / 2;
}

/**
 * md_bitmap_resize (raid10_start_reshape): the bitmap covers the new array size, with the old
 * chunk if the bits fit where the old ones were (rounded to sectors: md does not know the room
 * of a 1.2 bitmap), else the chunk doubled until they do.
 */
function bitmapAgrees(x: Map<string, string>, before: Map<string, string>, sectors: number, when: string): void {
  assert.match(x.get('Sync Size') ?? '', new RegExp(`^${sectors / 2} `), `${when}: the bitmap covers the array`);
  const bits = (m: Map<string, string>) => Number(/^(\d+) bits/.exec(m.get('Bitmap') ?? '')![1]);
  const kib = (m: Map<string, string>) => {
    const [, n, unit] = /^(\d+) (KB|MB)/.exec(m.get('Chunksize') ?? '')!;
    return Number(n) * (unit === 'MB' ? 1024 : 1);
  };
  const room = Math.ceil((Math.ceil(bits(before) / 8) + 256) / 512) * 512;
  let chunk = kib(before);
  while (Math.ceil(Math.ceil(sectors / 2 / chunk) / 8) + 256 > room) chunk *= 2;
  assert.equal(kib(x), chunk, `${when}: bitmap chunk`);
  if (kib(before) === 4) assert.equal(chunk, 8, 'the case meant to double the chunk doubles it');
  assert.equal(bits(x), Math.ceil(sectors / 2 / chunk), `${when}: bitmap bits`);
}

describe('raid10 --chunk, --layout, offset layouts, fewer devices', () => {
  for (const c of cases) {
    test(`${c.name}: data before, during (concurrent writers) and after; check 0; mdadm --examine agrees`, async (t: TestContext) => {
      const withMdadm = requireTool(t, 'mdadm', 'the superblocks are compared with mdadm --examine');
      const { chunkKiB, sizeKiB, bitmap, bitmapChunkKiB } = c;
      const files = await make(c.disks, c.spares ?? 0, c.layout, { chunkKiB, sizeKiB, bitmap, bitmapChunkKiB });
      const arr = await open(files);
      const model = new Map<number, number>();
      const before = arr.sizeBytes;
      const bitmapBefore = c.bitmap && withMdadm ? examineBitmap(files[0]!) : null;
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
          size = (await truncateForShrink(arr, c)) * 512;
          for (const k of [...model.keys()]) if (k * 4096 >= size) model.delete(k);
        }
        arr.sync.local.maxKiBs = 8000; // slow enough that the writers overlap it
        arr.startBackground();
        assert.equal(await arr.grow({ ...c.grow, devName: '/dev/md0' }), true);
        assert.equal(arr.reshapeActive, true);
        const mid: { e: Map<string, string> | null; x: Map<string, string> | null } = { e: null, x: null };
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
            if (g === 40 && withMdadm && arr.reshapeActive) {
              mid.e = fields(run('mdadm', ['--examine', files[0]!]).stdout);
              if (c.bitmap) mid.x = examineBitmap(files[0]!);
            }
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
          if (c.bitmap) bitmapAgrees(mid.x!, bitmapBefore!, newSizeOf(e), 'in the middle');
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
          assert.equal(e.get('Feature Map'), c.bitmap ? '0x1' : '0x0');
          assert.equal(e.get('Data Offset'), `${c.dataOffset} sectors`);
          assert.equal(e.get('Chunk Size'), `${(c.grow.chunkSectors ?? 128) / 2}K`);
          assert.equal(e.get('Layout'), c.layoutText);
          assert.equal(e.get('Reshape pos\'n'), undefined);
          assert.equal(e.get('New Offset'), undefined);
          // a shrink leaves the last member a spare (raid10_finish_reshape)
          assert.equal(e.get('Device Role'), k < newDisks ? `Active device ${k}` : 'spare');
          assert.equal(e.get('State'), 'clean');
          if (c.bitmap) {
            assert.equal(e.get('Internal Bitmap'), '8 sectors from superblock');
            const x = examineBitmap(f);
            bitmapAgrees(x, bitmapBefore!, size / 512, 'at the end');
            // (md writes the bitmap of the active members only: a spare's stays as it was)
            if (k < newDisks) assert.equal(x.get('Events'), e.get('Events'));
            // a stop after the reshape (and its resync of nothing) leaves no bit set
            if (k < newDisks) assert.match(x.get('Bitmap') ?? '', / 0 dirty \(0\.0%\)$/, `the bitmap at the end: ${x.get('Bitmap')}`);
            // md_bitmap_update_sb records the space it kept the bitmap in (its one sector) as
            // sectors_reserved (bitmap superblock bytes 64..67; mdadm -X does not print it)
            if (c.bitmapChunkKiB !== undefined && k < newDisks) assert.equal(readFileSync(f).readUInt32LE((8 + 8) * 512 + 64), 1);
          }
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

/**
 * The step rule judged on its own (md's reshape_safe): a device wrapper sees every member
 * write; a write of the reshape into the old data area must not land where the old geometry
 * (raid10DeviceToArray, the inverse of md's __raid10_find_phys) still holds array data at or
 * beyond the checkpoint the superblocks carry at that moment (below it, backwards), or a crash
 * there would lose it. No writers: every data write is the engine's.
 */
class WriteJudge {
  /** per device: reshape_position of its last superblock written with RESHAPE_ACTIVE */
  readonly recorded = new Map<number, number>();
  finished = false;
  checked = 0;
  readonly violations: string[] = [];
  old: { g: Raid10Geometry; offsets: number[]; slots: Array<number | null>; sectors: number; backwards: boolean } | null = null;

  wrap(d: BlockDevice, k: number): BlockDevice {
    return Object.assign(Object.create(d) as BlockDevice, {
      write: async (buf: Uint8Array, off: number): Promise<void> => {
        this.check(k, buf.length / 512, off / 512);
        await d.write(buf, off);
        if (off === 4096) {
          // a 1.2 superblock: feature_map at byte 8, reshape_position at byte 104
          const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
          if ((dv.getUint32(8, true) & Feature.RESHAPE_ACTIVE) !== 0) this.recorded.set(k, Number(dv.getBigUint64(104, true)));
          else if (this.recorded.size > 0) this.finished = true;
        }
      },
    });
  }

  private check(k: number, n: number, sector: number): void {
    const o = this.old;
    if (!o || this.finished || this.recorded.size === 0) return;
    const slot = o.slots[k];
    if (slot === null || slot === undefined) return;
    const values = [...this.recorded.values()];
    // the checkpoint a crash now would resume from: the least advanced superblock
    const durable = o.backwards ? Math.max(...values) : Math.min(...values);
    const rel = sector - o.offsets[k]!;
    // chunks are whole 4 KiB blocks: one look per block written
    for (let s = Math.floor(Math.max(0, rel) / 8) * 8; s < rel + n; s += 8) {
      this.checked++;
      const a = raid10DeviceToArray(o.g, slot, s);
      if (a === null || a >= o.sectors) continue;
      if (o.backwards ? a < durable : a >= durable) this.violations.push(`member ${k} sector ${s}: old copy of array sector ${a}, checkpoint ${durable}`);
    }
  }
}

describe('raid10 reshapes: no write reaches data not yet moved past the checkpoint', () => {
  const judged: Array<Omit<Case, 'dataOffset' | 'layoutText' | 'midFeatures'>> = [
    { name: 'near=2 3 devices chunk 64K->32K', disks: 3, layout: 0x102, grow: { chunkSectors: 64 } },
    { name: 'near=2 -> offset=2', disks: 4, layout: 0x102, grow: { layout: 0x10201 } },
    { name: 'offset=2 3 devices chunk 128K->64K', disks: 3, layout: 0x10201, chunkKiB: 128, grow: { chunkSectors: 128 } },
    { name: 'offset=2 grow 4->5', disks: 4, spares: 1, layout: 0x10201, grow: { raidDisks: 5 } },
    { name: 'near=3 grow 3->4', disks: 3, spares: 1, layout: 0x103, grow: { raidDisks: 4 } },
    { name: 'near=2 -> offset=2 backwards', disks: 4, layout: 0x102, sizeKiB: 5 * 1024, grow: { layout: 0x10201 } },
    { name: 'near=2 shrink 5->4', disks: 5, layout: 0x102, sizeKiB: 6 * 1024, grow: { raidDisks: 4 }, shrink: true },
    // no room after the data: the component size first gives up a chunk (mdadm's raid10_reshape)
    { name: 'offset=2 shrink 5->4, component size reduced', disks: 5, layout: 0x10201, grow: { raidDisks: 4 }, shrink: true },
  ];
  for (const c of judged) {
    test(c.name, async () => {
      const files = await make(c.disks, c.spares ?? 0, c.layout, { chunkKiB: c.chunkKiB, sizeKiB: c.sizeKiB });
      const judge = new WriteJudge();
      const arr = await open(files, (d, k) => judge.wrap(d, k));
      const model = new Map<number, number>();
      try {
        let size = arr.sizeBytes;
        const buf = new Uint8Array(MiB);
        for (let off = 0; off < size; off += MiB) {
          const n = Math.min(MiB, size - off);
          fill(buf.subarray(0, n), off, 1);
          await arr.write(buf.subarray(0, n), off);
          for (let b = 0; b < n; b += 4096) model.set((off + b) / 4096, 1);
        }
        if (c.shrink) size = (await truncateForShrink(arr, c)) * 512;
        const sb = arr.sb;
        const members = arr.memberSet.list;
        judge.old = {
          g: { raidDisks: sb.raidDisks, layout: sb.layout, chunkSectors: sb.chunkSize, componentSectors: Number(sb.size) },
          offsets: files.map((f) => Number(members.find((m) => m.dev.name === f)!.loaded.sb.dataOffset)),
          slots: files.map((f) => members.find((m) => m.dev.name === f)!.slot),
          sectors: size / 512,
          backwards: false,
        };
        assert.equal(await arr.grow({ ...c.grow, devName: '/dev/md0' }), true);
        judge.old.backwards = arr.reshape.view.backwards;
        arr.startBackground();
        await arr.reshape.wait();
        assert.equal(arr.reshape.lastError, null);
        assert.equal(arr.reshapeActive, false);
        assert.deepEqual(judge.violations.slice(0, 5), []);
        assert.ok(judge.checked > 1000, `the judge saw the reshape's writes (${judge.checked})`);
        await verify(arr, model, size);
      } finally {
        await arr.close();
      }
    });
  }
});

describe('raid10 reshape refusals write nothing', () => {
  test('far layouts, copies, chunk not dividing the size, n2o2, too few devices: mdadm\'s messages', async () => {
    const far = await make(4, 0, 0x201);
    const near = await make(4, 0, 0x102);
    const odd = await make(4, 0, 0x102, { sizeKiB: 5 * 1024 + 64 });
    const n2o2 = await make(4, 0, 0x10202);
    const all = [...far, ...near, ...odd, ...n2o2];
    const sums = hashes(all);
    const cases: Array<[string[], { raidDisks?: number; chunkSectors?: number; layout?: number }, RegExp, ErrorCode]> = [
      [far, { chunkSectors: 256 }, /^Cannot reshape RAID10 in far-mode$/, 'EINVAL'],
      [near, { layout: 0x201 }, /^Cannot reshape RAID10 to far-mode$/, 'EINVAL'],
      [near, { layout: 0x103 }, /^Cannot change number of copies when reshaping RAID10$/, 'EINVAL'],
      [near, { layout: 0x10301 }, /^Cannot change number of copies when reshaping RAID10$/, 'EINVAL'],
      [near, { raidDisks: 1 }, /^Cannot set array shape for \/dev\/md0$/, 'EINVAL'],
      [
        odd,
        { chunkSectors: 256 },
        new RegExp(
          '^New chunk size \\(128K\\) does not evenly divide device size \\(5184k\\)\\n' +
            'After shrinking any filesystem, "mdadm --grow /dev/md0 --size 5120"\\nwill shrink the array so the given chunk size would work\\.$',
        ),
        'EINVAL',
      ],
      [n2o2, { chunkSectors: 256 }, /offset layout with 2 near copies/, 'ENOTSUP'],
    ];
    for (const [files, req, re, code] of cases) {
      const arr = await open(files);
      try {
        await assert.rejects(arr.grow({ ...req, devName: '/dev/md0' }), (e) => isTsmdError(e, code) && re.test(e.message));
        assert.equal(arr.reshapeActive, false);
      } finally {
        await arr.close();
      }
    }
    assert.deepEqual(hashes(all), sums);
  });
});
