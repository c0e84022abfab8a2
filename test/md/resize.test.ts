/**
 * --grow changes that move no data (src/md/resize.ts), on file members, judged by the real
 * `mdadm --examine` of the members afterwards: raid1 --raid-devices up (a spare recovers the
 * new mirror) and down (md's raid1_reshape packing, its refusal while the slots are held),
 * linear --grow --add, and --size=N|max on raid1/5/10 (with and without a bitmap): data
 * written before reads back, the new region is readable and resynced (check 0).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { SystemClock } from '../../src/env/clock.js';
import { isTsmdError } from '../../src/errors.js';
import { openDevice } from '../../src/io/file-device.js';
import { MdArray } from '../../src/md/array.js';
import { fileArray } from '../helpers/arrays.js';
import type { Level } from '../../src/md/create-plan.js';
import { fields, requireTool, run, sparseFile, tempDir, withLoop } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const dir = tempDir('resize');
after(() => dir.cleanup());
let serial = 0;

interface Made {
  files: string[];
}

interface MakeOptions {
  level: Level;
  disks: number;
  spares?: number;
  sizeMiB: number;
  sizeKiB?: number;
  chunkKiB?: number;
  layout?: number;
  bitmap?: boolean;
  bitmapChunkKiB?: number;
  metadata?: '1.0' | '1.2';
  /** false: left for the first assembly to resync (as after mdadm --create) */
  initialSync?: boolean;
}

async function make(o: MakeOptions): Promise<Made> {
  const n = o.disks + (o.spares ?? 0);
  const tag = `a${serial++}`;
  const files = Array.from({ length: n }, (_, k) => sparseFile(join(dir.path, `${tag}-${k}.img`), o.sizeMiB * MiB));
  await fileArray(files, {
    level: o.level,
    raidDisks: o.disks,
    metadata: o.metadata,
    chunkKiB: o.level === 1 || o.level === -1 ? undefined : (o.chunkKiB ?? 64),
    layout: o.layout,
    sizeKiB: o.sizeKiB,
    setName: 'h:resize',
    bitmap: o.bitmap ? 'internal' : 'none',
    bitmapChunkKiB: o.bitmapChunkKiB,
    noInitialSync: o.initialSync === false,
  });
  return { files };
}

async function open(files: string[]): Promise<MdArray> {
  const devs = await Promise.all(files.map((f) => openDevice(f)));
  const arr = await MdArray.assemble(devs, { clock: new SystemClock() });
  arr.sync.local.maxKiBs = 200_000;
  arr.sync.local.minKiBs = 200_000;
  arr.startBackground();
  return arr;
}

/** Deterministic content of array byte range [off, off+len) for a seed. */
function pattern(off: number, len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i += 4) b.writeUInt32LE(((off + i) / 4 + seed * 0x9e3779b1) >>> 0, i);
  return b;
}

async function writePattern(arr: MdArray, from: number, to: number, seed: number): Promise<void> {
  for (let off = from; off < to; off += MiB) await arr.write(pattern(off, Math.min(MiB, to - off), seed), off);
}

async function checkPattern(arr: MdArray, from: number, to: number, seed: number): Promise<void> {
  const buf = Buffer.alloc(MiB);
  for (let off = from; off < to; off += MiB) {
    const n = Math.min(MiB, to - off);
    await arr.read(buf.subarray(0, n), off);
    assert.ok(buf.subarray(0, n).equals(pattern(off, n, seed)), `data at ${off}`);
  }
}

async function settle(arr: MdArray): Promise<void> {
  await arr.sync.runUntilIdle();
  while (arr.sync.busy) await new Promise((r) => setTimeout(r, 20));
}

async function checkZero(arr: MdArray): Promise<number> {
  await settle(arr);
  await arr.setSyncAction('check');
  await arr.sync.runUntilIdle();
  return arr.sync.mismatchCnt;
}

function examine(t: TestContext, file: string): Map<string, string> | null {
  if (!requireTool(t, 'mdadm', 'the judge of the superblocks')) return null;
  const r = run('mdadm', ['--examine', file]);
  assert.equal(r.status, 0, r.stderr);
  return fields(r.stdout);
}

function hashes(files: string[]): string[] {
  return files.map((f) => createHash('sha256').update(readFileSync(f)).digest('hex'));
}

describe('raid1 --grow --raid-devices', () => {
  test('2 -> 3 with a spare: the new mirror recovers; mdadm --examine agrees; 3 -> 2 refused while held, packed after a removal', async (t) => {
    const { files } = await make({ level: 1, disks: 2, spares: 1, sizeMiB: 12 });
    let arr = await open(files);
    const size = arr.sizeBytes;
    try {
      await writePattern(arr, 0, size, 1);
      const said = await arr.growMirrors({ raidDisks: 3, devName: '/dev/md0' });
      assert.equal(said, 'raid_disks for /dev/md0 set to 3');
      await settle(arr);
      assert.deepEqual(arr.workingSlots.sort(), [0, 1, 2]);
      assert.equal(arr.sizeBytes, size);
      await checkPattern(arr, 0, size, 1);
      assert.equal(await checkZero(arr), 0);
      // fewer: every slot holds a device -> md's -EBUSY, mdadm "failed to set raid disks"
      await assert.rejects(arr.growMirrors({ raidDisks: 2, devName: '/dev/md0' }), (e) => isTsmdError(e, 'EBUSY') && /failed to set raid disks/.test(e.message));
    } finally {
      await arr.close();
    }
    const e = examine(t, files[2]!);
    if (e) {
      assert.equal(e.get('Raid Devices'), '3');
      assert.equal(e.get('Device Role'), 'Active device 2');
      assert.equal(e.get('Array State'), "AAA ('A' == active, '.' == missing, 'R' == replacing)");
      assert.equal(e.get('State'), 'clean');
    }
    // the member in slot 0 goes: the others are packed into slots 0 and 1
    arr = await open(files);
    try {
      await arr.failMember(files[0]!);
      await arr.removeMember(files[0]!);
      assert.equal(await arr.growMirrors({ raidDisks: 2, devName: '/dev/md0' }), 'raid_disks for /dev/md0 set to 2');
      assert.equal(arr.degraded, false);
      await checkPattern(arr, 0, size, 1);
      assert.equal(await checkZero(arr), 0);
    } finally {
      await arr.close();
    }
    const e1 = examine(t, files[1]!);
    const e2 = examine(t, files[2]!);
    if (e1 && e2) {
      assert.equal(e1.get('Raid Devices'), '2');
      assert.equal(e1.get('Device Role'), 'Active device 0');
      assert.equal(e2.get('Device Role'), 'Active device 1');
      assert.match(e2.get('Array State') ?? '', /^AA /);
    }
    arr = await open(files.slice(1));
    try {
      await checkPattern(arr, 0, size, 1);
    } finally {
      await arr.close();
    }
  });

  test('more mirrors without a spare: mdadm\'s refusal, nothing written; --force grows degraded', async () => {
    const { files } = await make({ level: 1, disks: 2, sizeMiB: 8 });
    const arr = await open(files);
    try {
      await settle(arr);
      await arr.close();
      const before = hashes(files);
      const again = await open(files);
      try {
        await assert.rejects(again.growMirrors({ raidDisks: 3, devName: '/dev/md0' }), (e) => isTsmdError(e, 'EINVAL') && /Need 1 spare to avoid degraded array, and only have 0\.\n {7}Use --force to over-ride this check\./.test(e.message));
      } finally {
        await again.close();
      }
      assert.deepEqual(hashes(files), before);
      const forced = await open(files);
      try {
        assert.ok(await forced.growMirrors({ raidDisks: 3, force: true, devName: '/dev/md0' }));
        assert.equal(forced.degraded, true);
        assert.equal(forced.raidDisks, 3);
      } finally {
        await forced.close();
      }
    } finally {
      await arr.close();
    }
  });
});

describe('linear --grow --add', () => {
  test('the member is appended, the array grows by its data size; mdadm --examine agrees', async (t) => {
    const { files } = await make({ level: -1, disks: 2, sizeMiB: 8 });
    const extra = sparseFile(join(dir.path, `lin-extra-${serial++}.img`), 12 * MiB);
    let arr = await open(files);
    const size = arr.sizeBytes;
    try {
      await writePattern(arr, 0, size, 3);
      const dev = await openDevice(extra);
      await arr.linearAdd(dev, randomBytes(16), '/dev/md0');
      assert.equal(arr.raidDisks, 3);
      assert.equal(arr.sizeBytes, size + (12 * MiB - 2048 * 512));
      await checkPattern(arr, 0, size, 3);
      await writePattern(arr, size, arr.sizeBytes, 4);
      await checkPattern(arr, size, arr.sizeBytes, 4);
    } finally {
      await arr.close();
    }
    const e = examine(t, extra);
    if (e) {
      assert.equal(e.get('Raid Level'), 'linear');
      assert.equal(e.get('Raid Devices'), '3');
      assert.equal(e.get('Device Role'), 'Active device 2');
      assert.equal(e.get('Avail Dev Size'), `${12 * 2048 - 2048} sectors (${(12 * 1024 - 1024) / 1024}.00 MiB ${((12 * 1024 - 1024) * 1.024 / 1000).toFixed(2)} MB)`);
      const e0 = examine(t, files[0]!)!;
      assert.equal(e0.get('Raid Devices'), '3');
      assert.equal(e0.get('Events'), e.get('Events'));
      assert.match(e0.get('Array State') ?? '', /^AAA /);
    }
    arr = await open([...files, extra]);
    try {
      assert.equal(arr.sizeBytes, size + 11 * MiB);
      await checkPattern(arr, 0, size, 3);
      await checkPattern(arr, size, arr.sizeBytes, 4);
    } finally {
      await arr.close();
    }
    const r5 = await make({ level: 5, disks: 3, sizeMiB: 8 });
    const arr5 = await open(r5.files);
    try {
      await assert.rejects(arr5.linearAdd(await openDevice(sparseFile(join(dir.path, `x${serial++}.img`), 8 * MiB)), randomBytes(16), '/dev/md0'), /can only add devices to linear arrays/);
    } finally {
      await arr5.close();
    }
  });
});

describe('--grow --size', () => {
  const cases: Array<{ name: string; level: Level; disks: number; layout?: number; bitmap?: boolean; grownFiles?: boolean }> = [
    { name: 'raid1', level: 1, disks: 2 },
    { name: 'raid1 with a bitmap', level: 1, disks: 2, bitmap: true },
    { name: 'raid5, member files grown', level: 5, disks: 3, grownFiles: true },
    { name: 'raid6 with a bitmap', level: 6, disks: 4, bitmap: true },
    { name: 'raid10 near 2', level: 10, disks: 4, layout: 0x102 },
  ];
  for (const c of cases) {
    test(`${c.name}: max grows into the free space, data reads back, new region resynced, check 0; mdadm --examine agrees`, async (t) => {
      const sizeKiB = c.grownFiles ? undefined : 6 * 1024;
      const { files } = await make({ level: c.level, disks: c.disks, sizeMiB: 12, sizeKiB, layout: c.layout, bitmap: c.bitmap });
      let arr = await open(files);
      await settle(arr);
      const size = arr.sizeBytes;
      const oldComponent = Number(arr.sb.size);
      await writePattern(arr, 0, size, 5);
      if (c.grownFiles) {
        await arr.close();
        for (const f of files) truncateSync(f, 20 * MiB);
        arr = await open(files);
      }
      try {
        const seen = arr.sync.history.length;
        const res = await arr.growSize({ sectors: 'max', devName: '/dev/md0' });
        const comp = Number(arr.sb.size);
        assert.ok(comp > oldComponent, `component ${oldComponent} -> ${comp}`);
        assert.equal(res.message, `component size of /dev/md0 has been set to ${comp / 2}K`);
        assert.ok(arr.sizeBytes > size);
        // md: recovery_cp = the old end; the resync covers the new region only (with a
        // bitmap: the chunks md_bitmap_resize marked, which are the same here)
        await settle(arr);
        const resync = arr.sync.history.slice(seen).filter((h) => h.kind === 'resync');
        assert.equal(resync.length, 1, JSON.stringify(arr.sync.history));
        const oldSync = c.level === 10 ? size / 512 : oldComponent;
        const grown = resync[0]!.totalSectors - oldSync;
        if (c.bitmap) assert.ok(resync[0]!.workedSectors >= grown && resync[0]!.workedSectors < grown + 2 * 2048 * 64, JSON.stringify(resync[0]));
        else assert.equal(resync[0]!.workedSectors, grown, JSON.stringify(resync[0]));
        await checkPattern(arr, 0, size, 5);
        // the new region is readable and writable
        await writePattern(arr, size, arr.sizeBytes, 6);
        await checkPattern(arr, size, arr.sizeBytes, 6);
        assert.equal(await checkZero(arr), 0);
        // same size again: no change
        assert.equal((await arr.growSize({ sectors: comp, devName: '/dev/md0' })).changed, false);
      } finally {
        await arr.close();
      }
      const e = examine(t, files[0]!);
      if (e) {
        const again = await open(files);
        try {
          // mdadm prints Used Dev Size only when it differs from the member's data size
          const used = Number(again.sb.size);
          const avail = Number(again.members[0]!.loaded.sb.dataSize);
          assert.equal(e.get('Avail Dev Size')?.split(' ')[0], String(avail));
          assert.equal(e.get('Used Dev Size'), used === avail ? undefined : `${used} sectors (${(used / 2048).toFixed(2)} MiB ${((used * 512) / 1e6).toFixed(2)} MB)`);
          const kib = again.sizeBytes / 1024;
          assert.match(e.get('Array Size') ?? '', new RegExp(`^${kib} `));
          await checkPattern(again, 0, size, 5);
          await checkPattern(again, size, again.sizeBytes, 6);
        } finally {
          await again.close();
        }
        assert.equal(e.get('State'), 'clean');
      }
    });
  }

  test('shrink (md allows it), refusals: too large, far raid10, linear; nothing written', async () => {
    const { files } = await make({ level: 1, disks: 2, sizeMiB: 12 });
    let arr = await open(files);
    await settle(arr);
    await writePattern(arr, 0, 4 * MiB, 7);
    await arr.close();
    const before = hashes(files);
    arr = await open(files);
    try {
      await assert.rejects(arr.growSize({ sectors: 64 * 2048, devName: '/dev/md0' }), (e) => isTsmdError(e, 'ENOSPC') && e.message === 'Cannot set device size for /dev/md0: No space left on device');
    } finally {
      await arr.close();
    }
    assert.deepEqual(hashes(files), before);
    arr = await open(files);
    try {
      const res = await arr.growSize({ sectors: 4 * 2048, devName: '/dev/md0' });
      assert.equal(res.message, 'component size of /dev/md0 has been set to 4096K');
      assert.equal(arr.sizeBytes, 4 * MiB);
      await checkPattern(arr, 0, 4 * MiB, 7);
      assert.equal(await checkZero(arr), 0);
    } finally {
      await arr.close();
    }
    const far = await make({ level: 10, disks: 4, layout: 0x201, sizeMiB: 12, sizeKiB: 4096 });
    arr = await open(far.files);
    try {
      await settle(arr);
      await assert.rejects(arr.growSize({ sectors: 'max', devName: '/dev/md0' }), /Cannot set device size for \/dev\/md0: Invalid argument/);
    } finally {
      await arr.close();
    }
  });
});

/** mdadm --examine-bitmap of a member file (mdadm finds an internal bitmap only on a block device). */
async function examineBitmap(t: TestContext, file: string): Promise<Map<string, string> | null> {
  if (!requireTool(t, 'mdadm', 'the judge of the bitmap') || !requireTool(t, 'losetup', 'mdadm -X needs a block device')) return null;
  const r = await withLoop(file, (dev) => run('mdadm', ['--examine-bitmap', dev]));
  assert.equal(r.status, 0, r.stderr);
  return fields(r.stdout);
}

describe('--grow --size as md does it', () => {
  for (const metadata of ['1.2', '1.0'] as const) {
    test(`v${metadata}: a bitmap that no longer fits its sectors: the chunk doubles (md_bitmap_resize), dirty chunks carried, new ones marked; mdadm -X agrees; check 0`, async (t) => {
      // raid1 of 3 at 6 MiB with a 4K bitmap chunk: 1536 bits, 192 bytes + the 256-byte header
      // in one sector, all md lets the bitmap have (sectors_reserved 0: the current size; v1.0:
      // the bitmap before the superblock, which does not move, the members' data size as created)
      const { files } = await make({ level: 1, disks: 3, sizeMiB: 12, sizeKiB: 6 * 1024, bitmap: true, bitmapChunkKiB: 4, initialSync: false, metadata });
      const x0 = await examineBitmap(t, files[0]!);
      if (x0) {
        assert.equal(x0.get('Chunksize'), '4 KB');
        assert.match(x0.get('Bitmap') ?? '', /^1536 bits \(chunks\)/);
      }
      const arr = await open(files);
      let newSync: number;
      try {
      // the first resync (as after mdadm --create) leaves no chunk needing one: what the
      // resize carries is only what the test makes dirty below
        await settle(arr);
        assert.equal(arr.bitmap?.needSyncCount, 0);
        await writePattern(arr, 0, 6 * MiB, 11);
        // one mirror fails: writes now leave their chunks needing a sync (md's NEEDED), which
        // md_bitmap_resize carries into the chunk that covers them
        await arr.failMember(files[2]!);
        const dirtyOld = [5, 700];
        for (const c of dirtyOld) await arr.write(pattern(c * 4096, 4096, 12), c * 4096);
        // the failed mirror leaves (raid1_reshape packs the two left): no longer degraded, so
        // that check can run at the end; the two chunks still need their sync
        await arr.removeMember(files[2]!);
        assert.equal(await arr.growMirrors({ raidDisks: 2, devName: '/dev/md0' }), 'raid_disks for /dev/md0 set to 2');
        assert.equal(arr.bitmap?.needSyncCount, 2);
        const res = await arr.growSize({ sectors: 'max', devName: '/dev/md0' });
        newSync = Number(arr.sb.size);
        assert.equal(res.message, `component size of /dev/md0 has been set to ${newSync / 2}K`);
        // 4K chunks would need more than the one sector; 8K chunks fit
        assert.ok(Math.ceil(newSync / 8 / 8) + 256 > 512 && Math.ceil(newSync / 16 / 8) + 256 <= 512, `sync size ${newSync}`);
        const nbits = Math.ceil(newSync / 16);
        // old chunks 5 and 700 (4K) lie in new chunks 2 and 350 (8K); every chunk past the old
        // end (6 MiB = 12288 sectors = new chunk 768) is new space
        const expectDirty = 2 + (nbits - 768);
        const x = await examineBitmap(t, files[0]!);
        if (x) {
          assert.equal(x.get('Chunksize'), '8 KB');
          assert.match(x.get('Sync Size') ?? '', new RegExp(`^${newSync / 2} `));
          assert.match(x.get('Bitmap') ?? '', new RegExp(`^${nbits} bits \\(chunks\\), ${expectDirty} dirty`));
          assert.equal(x.get('Events'), String(arr.sb.events));
        }
        const e = examine(t, files[1]!);
        if (e) {
          assert.match(e.get('Internal Bitmap') ?? '', metadata === '1.2' ? /^8 sectors from superblock$/ : /^-\d+ sectors from superblock$/);
          assert.match(e.get('Array Size') ?? '', new RegExp(`^${newSync / 2} `));
          // md_bitmap_update_sb records the space it kept the bitmap in (one sector) as
          // sectors_reserved (bitmap superblock bytes 64..67), which mdadm -X does not print
          const at = (Number(e.get('Super Offset')!.split(' ')[0]) + Number(e.get('Internal Bitmap')!.split(' ')[0])) * 512;
          assert.equal(readFileSync(files[1]!).readUInt32LE(at + 64), 1);
        }
        await settle(arr);
        await checkPattern(arr, 0, 5 * 4096, 11);
        await checkPattern(arr, 5 * 4096, 6 * 4096, 12);
        await writePattern(arr, 6 * MiB, arr.sizeBytes, 13);
        await checkPattern(arr, 6 * MiB, arr.sizeBytes, 13);
        assert.equal(await checkZero(arr), 0);
      } finally {
        await arr.close();
      }
      // assembled again from the two working mirrors: the new geometry and the data
      const again = await open(files.slice(0, 2));
      try {
        assert.equal(again.sizeBytes, newSync * 512);
        await checkPattern(again, 6 * MiB, again.sizeBytes, 13);
        await checkPattern(again, 700 * 4096, 701 * 4096, 12);
      } finally {
        await again.close();
      }
    });
  }

  test('v1.0 members that grew: --size=max moves the superblock to the new end (super_1_rdev_size_change); mdadm --examine finds it there; data and check 0', async (t) => {
    const { files } = await make({ level: 1, disks: 2, sizeMiB: 8, metadata: '1.0' });
    const arr = await open(files);
    const size = arr.sizeBytes;
    let grownSize: number;
    try {
      await settle(arr);
      await writePattern(arr, 0, size, 21);
      // the member files grow under the running array (an lvextend); mdadm --examine now looks
      // at the new end and finds nothing, as it would on Linux
      for (const f of files) truncateSync(f, 16 * MiB);
      if (requireTool(t, 'mdadm', 'the judge of the superblocks')) {
        const r = run('mdadm', ['--examine', files[0]!]);
        assert.notEqual(r.status, 0);
        assert.match(r.stderr, /No md superblock detected/);
      }
      const seen = arr.sync.history.length;
      const res = await arr.growSize({ sectors: 'max', devName: '/dev/md0' });
      const devSectors = (16 * MiB) / 512;
      const sbStart = Math.floor((devSectors - 16) / 8) * 8;
      // md: up to the superblock, less the bitmap room super_1_choose_bm_space keeps and 4K
      const comp = sbStart - 8 - 8;
      assert.equal(Number(arr.sb.size), comp);
      assert.equal(res.message, `component size of /dev/md0 has been set to ${comp / 2}K`);
      grownSize = arr.sizeBytes;
      assert.equal(grownSize, comp * 512);
      await settle(arr);
      const resync = arr.sync.history.slice(seen).filter((h) => h.kind === 'resync');
      assert.equal(resync.length, 1);
      assert.equal(resync[0]!.workedSectors, comp - size / 512, 'the new region only');
      await checkPattern(arr, 0, size, 21);
      await writePattern(arr, size, grownSize, 22);
      assert.equal(await checkZero(arr), 0);
      const e = examine(t, files[1]!);
      if (e) {
        assert.equal(e.get('Super Offset'), `${sbStart} sectors`);
        assert.equal(e.get('Avail Dev Size')?.split(' ')[0], String(comp));
        assert.match(e.get('Array Size') ?? '', new RegExp(`^${comp / 2} `));
        assert.equal(e.get('Used Dev Size'), undefined);
      }
    } finally {
      await arr.close();
    }
    const e = examine(t, files[0]!);
    if (e) assert.equal(e.get('State'), 'clean');
    const again = await open(files);
    try {
      assert.equal(again.sizeBytes, grownSize);
      await checkPattern(again, 0, size, 21);
      await checkPattern(again, size, grownSize, 22);
    } finally {
      await again.close();
    }
  });

  test('v1.2 members that grew under the running array: --size=max reads their size again and grows into it; data, resync of the new region, check 0', async (t) => {
    const { files } = await make({ level: 5, disks: 3, sizeMiB: 8 });
    const arr = await open(files);
    const size = arr.sizeBytes;
    let comp: number;
    try {
      await settle(arr);
      await writePattern(arr, 0, size, 41);
      for (const f of files) truncateSync(f, 12 * MiB);
      const dataOffset = Number(arr.members[0]!.loaded.sb.dataOffset);
      await arr.growSize({ sectors: 'max', devName: '/dev/md0' });
      // the device from the data offset on, in whole chunks (raid5_resize)
      comp = Math.floor(((12 * MiB) / 512 - dataOffset) / 128) * 128;
      assert.equal(Number(arr.sb.size), comp);
      assert.equal(arr.sizeBytes, comp * 2 * 512);
      await settle(arr);
      await checkPattern(arr, 0, size, 41);
      await writePattern(arr, size, arr.sizeBytes, 42);
      assert.equal(await checkZero(arr), 0);
    } finally {
      await arr.close();
    }
    const e = examine(t, files[2]!);
    if (e) {
      assert.equal(e.get('Avail Dev Size')?.split(' ')[0], String((12 * MiB) / 512 - Number(e.get('Data Offset')?.split(' ')[0])));
      // two data disks of comp sectors: comp KiB
      assert.match(e.get('Array Size') ?? '', new RegExp(`^${comp} KiB`));
      assert.equal(e.get('State'), 'clean');
    }
  });

  test('v1.0 with an internal bitmap: md cannot move it, the size grows only within the data size; v1.2 --size=N: data size N (md), --assume-clean resyncs nothing', async (t) => {
    const b = await make({ level: 1, disks: 2, sizeMiB: 8, metadata: '1.0', bitmap: true });
    let arr = await open(b.files);
    try {
      await settle(arr);
      const sbStart = arr.members[0]!.loaded.sbStartSector;
      const dataSize = Number(arr.members[0]!.loaded.sb.dataSize);
      assert.ok(Number(arr.sb.size) < dataSize);
      for (const f of b.files) truncateSync(f, 16 * MiB);
      // super_1_rdev_size_change declines (the bitmap before the superblock cannot move): the
      // members keep their data size, which update_size then fits the array to
      let res = await arr.growSize({ sectors: 'max', devName: '/dev/md0' });
      assert.equal(res.message, `component size of /dev/md0 has been set to ${dataSize / 2}K`);
      assert.equal(arr.members[0]!.loaded.sbStartSector, sbStart);
      await settle(arr);
      res = await arr.growSize({ sectors: 'max', devName: '/dev/md0' });
      assert.equal(res.message, `component size of /dev/md0 unchanged at ${dataSize / 2}K`);
      assert.equal(await checkZero(arr), 0);
    } finally {
      await arr.close();
    }
    const n = await make({ level: 1, disks: 2, sizeMiB: 12, sizeKiB: 4096 });
    arr = await open(n.files);
    try {
      await settle(arr);
      await writePattern(arr, 0, 4 * MiB, 31);
      const seen = arr.sync.history.length;
      const res = await arr.growSize({ sectors: 8 * 2048, devName: '/dev/md0', assumeClean: true });
      assert.equal(res.message, 'component size of /dev/md0 has been set to 8192K');
      await settle(arr);
      assert.deepEqual(arr.sync.history.slice(seen).filter((h) => h.kind === 'resync'), []);
      await checkPattern(arr, 0, 4 * MiB, 31);
    } finally {
      await arr.close();
    }
    const e = examine(t, n.files[0]!);
    if (e) {
      // super_1_rdev_size_change records N itself as the member's data size
      assert.equal(e.get('Avail Dev Size'), '16384 sectors (8.00 MiB 8.39 MB)');
      assert.equal(e.get('Used Dev Size'), undefined);
      assert.match(e.get('Array Size') ?? '', /^8192 /);
    }
  });
});
