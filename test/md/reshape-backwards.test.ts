/**
 * Backwards reshapes (src/md/reshape.ts, md's RESHAPE_BACKWARDS) on in-memory members: raid5/6
 * shrinks after --array-size, with the data offset moved up (room after the data) or in place
 * with a backup file (mdadm's md_backup_data), and a chunk change with no room before the
 * data; data before, during (concurrent writers) and after reads back, the superblocks at the
 * end, check 0, the member that leaves is a spare; the refusals write nothing; a crash in a
 * critical section is restored from the backup file.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { SystemClock } from '../../src/env/clock.js';
import { isTsmdError } from '../../src/errors.js';
import { Feature } from '../../src/format/superblock.js';
import { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { MdArray } from '../../src/md/array.js';
import { decodeBackupSuper } from '../../src/md/backup-file.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { memoryArray } from '../helpers/arrays.js';
import { prng } from '../helpers/prng.js';
import { requireTool } from '../helpers/tools.js';
import { checkMismatches as checkZero, damagedBlocks, restoreAndFinish, dump, examineLikeMdadm, fillBlocks as fill, image, tap, verifyModel as verify } from '../helpers/reshape-model.js';

const KiB = 1024;
const MiB = 1024 * KiB;

async function open(devs: MemoryBlockDevice[], backup?: MemoryBlockDevice): Promise<MdArray> {
  return MdArray.assemble(
    devs.map((d) => d.reopen()),
    { clock: new SystemClock(), backupFile: backup ? { dev: backup.reopen() } : undefined },
  );
}

async function readBytes(d: MemoryBlockDevice, off: number, n: number): Promise<Uint8Array> {
  const b = new Uint8Array(n);
  await d.reopen().read(b, off);
  return b;
}

interface Case {
  name: string;
  level: 5 | 6;
  disks: number;
  grow: { raidDisks?: number; chunkSectors?: number };
  chunkKiB: number;
  /** per-member used size (room after the data) */
  sizeKiB?: number;
  backup: boolean;
  /** expected data offset at the end (null: moved up, by whatever room there was) */
  offset: number | null;
  metadata?: '1.0' | '1.2';
}

const cases: Case[] = [
  { name: 'raid5 4->3 devices in place (backup file)', level: 5, disks: 4, grow: { raidDisks: 3 }, chunkKiB: 64, backup: true, offset: 2048 },
  { name: 'raid5 4->3 devices, data offset moved up', level: 5, disks: 4, grow: { raidDisks: 3 }, chunkKiB: 64, sizeKiB: 6 * 1024, backup: false, offset: 2048 + 256 },
  { name: 'raid6 6->5 devices in place (backup file)', level: 6, disks: 6, grow: { raidDisks: 5 }, chunkKiB: 64, backup: true, offset: 2048 },
  // superblock 1.0: the data at sector 0, no room before it: backwards, the data moved up
  { name: 'raid5 chunk 64K->128K, no room before the data', level: 5, disks: 4, grow: { chunkSectors: 256 }, chunkKiB: 64, sizeKiB: 6 * 1024, backup: false, offset: null, metadata: '1.0' },
];

describe('backwards reshapes', () => {
  for (const c of cases) {
    test(`${c.name}: data before, during and after; superblocks as mdadm reads them; check 0; a shrink leaves a spare`, async (t) => {
      const withMdadm = requireTool(t, 'mdadm', 'the superblocks are compared with mdadm --examine');
      const devs = await memoryArray({ level: c.level, sizesMiB: new Array(c.disks).fill(8), chunkKiB: c.chunkKiB, sizeKiB: c.sizeKiB, metadata: c.metadata });
      const shrink = c.grow.raidDisks !== undefined && c.grow.raidDisks < c.disks;
      const backup = c.backup ? new MemoryBlockDevice('backup', 2 * MiB) : undefined;
      const arr = await open(devs);
      const model = new Map<number, number>();
      const rnd = prng(7);
      const newD = (c.grow.raidDisks ?? c.disks) - (c.level === 6 ? 2 : 1);
      const newBytes = Math.floor(((c.sizeKiB ?? 0) * 2 || Number(arr.sb.size)) / (c.chunkKiB * 2)) * c.chunkKiB * KiB * newD;
      try {
        // mdadm's refusal first, then --array-size to the new size
        if (shrink) await assert.rejects(arr.grow({ ...c.grow, devName: '/dev/md0' }), (e) => isTsmdError(e, 'EINVAL') && new RegExp(`use --grow --array-size first to truncate array\\.\\n\\s+e\\.g\\. mdadm --grow /dev/md0 --array-size ${newBytes / KiB}`).test(e.message));
        arr.setArraySize(newBytes / 512);
        assert.equal(arr.sizeBytes, newBytes);
        const before = arr.sizeBytes;
        const buf = new Uint8Array(MiB);
        for (let off = 0; off < before; off += MiB) {
          fill(buf, off, 1);
          await arr.write(buf.subarray(0, Math.min(MiB, before - off)), off);
          for (let b = 0; b < MiB && off + b < before; b += 4096) model.set((off + b) / 4096, 1);
        }
        arr.sync.local.maxKiBs = 4000;
        arr.startBackground();
        assert.equal(await arr.grow({ ...c.grow, devName: '/dev/md0', backup: backup ? { dev: backup } : undefined }), true);
        assert.equal(arr.reshapeActive, true);
        const sb0 = arr.sb;
        assert.equal(sb0.deltaDisks, (c.grow.raidDisks ?? c.disks) - c.disks);
        assert.equal(sb0.featureMap & Feature.NEW_OFFSET, c.backup ? 0 : Feature.NEW_OFFSET);
        // md writes RESHAPE_BACKWARDS only when the number of devices stays
        assert.equal(sb0.featureMap & Feature.RESHAPE_BACKWARDS, shrink ? 0 : Feature.RESHAPE_BACKWARDS);
        assert.ok(sb0.newOffset >= 0);
        if (withMdadm) {
          // the superblocks of the reshape as mdadm reads them (at a checkpoint)
          await arr.setSyncAction('frozen');
          await examineLikeMdadm(devs, 'during');
          await arr.setSyncAction('idle');
        }
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
            if (g % 5 === 0) {
              const r = new Uint8Array(16 * KiB);
              await arr.read(r, blk * 4096);
              assert.deepEqual(r, b, 'a write reads back during the reshape');
            }
            await new Promise((r) => setImmediate(r));
          }
        };
        await Promise.all([writer(0), writer(1), writer(2), arr.reshape.wait()]);
        assert.equal(arr.reshape.lastError, null);
        assert.ok(gen > 10, `writes ran during the reshape (${gen - 2})`);
        assert.equal(arr.reshapeActive, false);
        assert.equal(arr.sizeBytes, newBytes);
        await verify(arr, model, before);
        assert.equal(await checkZero(arr), 0);
        if (backup) {
          // the last critical section went through the backup file: the start of the array
          const bsb = decodeBackupSuper(await readBytes(backup, 0, 512));
          assert.ok(typeof bsb !== 'string', `backup superblock: ${String(bsb)}`);
          assert.equal(bsb.magic, 'md_backup_data-1');
          assert.equal(bsb.sections[0]!.arrayStart, 0);
          assert.ok(bsb.sections[0]!.sectors > 0);
        }
        arr.setArraySize('max');
        assert.equal(arr.sizeBytes, newBytes, 'max: the new geometry\'s size');
      } finally {
        await arr.close();
      }
      if (withMdadm) await examineLikeMdadm(devs, 'after');
      for (const [i, d] of devs.entries()) {
        const sb = (await loadSuperblock(d.reopen()))!.sb;
        assert.equal(sb.featureMap & (Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET | Feature.RESHAPE_BACKWARDS), 0);
        assert.equal(sb.raidDisks, c.grow.raidDisks ?? c.disks);
        assert.equal(sb.chunkSize, c.grow.chunkSectors ?? c.chunkKiB * 2);
        assert.equal(sb.deltaDisks, 0);
        if (c.offset !== null) assert.equal(Number(sb.dataOffset), c.offset, `member ${i} data offset`);
        else assert.ok(Number(sb.dataOffset) > 0 && Number(sb.dataOffset) % 256 === 0, `member ${i} data offset moved up (${sb.dataOffset})`);
        const role = sb.devRoles[sb.devNumber]!;
        if (shrink && i === c.disks - 1) assert.equal(role, 0xffff, 'the member that left is a spare');
        else assert.equal(role, i);
      }
      const again = await open(devs);
      try {
        assert.equal(again.sizeBytes, newBytes);
        assert.equal(again.members.filter((m) => m.slot === null).length, shrink ? 1 : 0);
        await verify(again, model, newBytes);
        assert.equal(await checkZero(again), 0);
      } finally {
        await again.close();
      }
    });
  }
});

describe('backwards reshapes: crashes and refusals', () => {
  test('a crash in the middle of a critical section: the backup file restores it at assembly', async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: [8, 8, 8, 8], chunkKiB: 64 });
    const backup = new MemoryBlockDevice('backup', 2 * MiB);
    let arr = await open(devs);
    const newBytes = Math.floor(Number(arr.sb.size) / 128) * 64 * KiB * 2;
    const model = new Map<number, number>();
    arr.setArraySize(newBytes / 512);
    const buf = new Uint8Array(MiB);
    for (let off = 0; off < newBytes; off += MiB) {
      fill(buf, off, 1);
      await arr.write(buf, off);
      for (let b = 0; b < MiB; b += 4096) model.set((off + b) / 4096, 1);
    }
    await arr.close();
    // the crash image: taken when the first critical section (after its backup superblock)
    // is written in place and not yet checkpointed: at the first member flush after it
    let armed = false;
    let crash: { members: MemoryBlockDevice[]; backup: MemoryBlockDevice; section: number } | null = null;
    const live = devs.map((d) => d.reopen());
    const members = live.map((d) =>
      tap(
        d,
        () => {},
        () => {
          if (armed && !crash) crash = { members: devs.map(image), backup: image(backup), section: Number(arr.sb.reshapePosition) };
        },
      ),
    );
    const b = backup.reopen();
    const backupDev = tap(b, (data, off) => {
      if (off === 0 && data.length === 512 && data[0] !== 0) armed = true;
    });
    arr = await MdArray.assemble(members, { clock: new SystemClock() });
    try {
      arr.setArraySize(newBytes / 512);
      arr.startBackground();
      assert.equal(await arr.grow({ raidDisks: 3, devName: '/dev/md0', backup: { dev: backupDev } }), true);
      await arr.reshape.wait();
      assert.equal(arr.reshape.lastError, null);
      await verify(arr, model, newBytes);
    } finally {
      await arr.close();
    }
    assert.ok(crash, 'the crash image was taken inside a critical section');
    const c = crash as { members: MemoryBlockDevice[]; backup: MemoryBlockDevice; section: number };
    // control: without what the backup holds (a zeroed file), the old copy is damaged
    const blank = new MemoryBlockDevice('blank', 2 * MiB);
    const damaged = await MdArray.assemble(c.members.map(image), { clock: new SystemClock(), backupFile: { dev: blank } });
    let bad: number;
    try {
      bad = await damagedBlocks(damaged, newBytes);
    } finally {
      await damaged.close();
    }
    assert.ok(bad > 0, 'the crash image has a half-written critical section');
    // with the backup file: restored, resumed, finished
    await restoreAndFinish(c.members, model, newBytes, { backupFile: c.backup, moved: (pos) => pos < c.section });
  });

  test('refusals write nothing: a shrink before --array-size, in place without a backup file', async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: [8, 8, 8, 8], chunkKiB: 64 });
    const snap = () => devs.map((d) => createHash('sha256').update(dump(d)).digest('hex'));
    const before = snap();
    const arr = await open(devs);
    try {
      await assert.rejects(arr.grow({ raidDisks: 3, devName: '/dev/md0' }), (e) => isTsmdError(e, 'EINVAL') && /this change will reduce the size of the array\.\n\s+use --grow --array-size first to truncate array\.\n\s+e\.g\. mdadm --grow \/dev\/md0 --array-size 14336$/.test(e.message));
      assert.throws(() => arr.setArraySize(arr.sizeBytes / 512 + 128), /--array-size setting is too large/);
      arr.setArraySize(14336 * 2);
      assert.equal(arr.sizeBytes, 14336 * KiB);
      await assert.rejects(arr.grow({ raidDisks: 2, devName: '/dev/md0' }), (e) => isTsmdError(e, 'EINVAL') && /this change will reduce the size/.test(e.message));
      await assert.rejects(arr.grow({ raidDisks: 3, devName: '/dev/md0' }), (e) => isTsmdError(e, 'EINVAL') && /^Need to backup 384K of critical section\.\.\n\/dev\/md0: Cannot grow - need backup-file\n Please provide one with "--backup=\.\.\."$/.test(e.message));
      assert.equal(arr.reshapeActive, false);
      arr.setArraySize('max');
      assert.equal(arr.sizeBytes, 7168 * 3 * KiB);
    } finally {
      await arr.close();
    }
    assert.deepEqual(snap(), before, 'nothing written');
  });
});
