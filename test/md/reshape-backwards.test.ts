/**
 * Backwards reshapes (src/md/reshape.ts, md's RESHAPE_BACKWARDS) on in-memory members: raid5/6
 * shrinks after --array-size, with the data offset moved up (room after the data) or in place
 * with a backup file (mdadm's md_backup_data), and a chunk change with no room before the
 * data; data before, during (concurrent writers) and after reads back, the superblocks at the
 * end, check 0, the member that leaves is a spare; the refusals write nothing; a crash in a
 * critical section is restored from the backup file.
 */
import assert from 'node:assert/strict';
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

const KiB = 1024;
const MiB = 1024 * KiB;

function fill(buf: Uint8Array, off: number, gen: number): void {
  for (let i = 0; i < buf.length; i += 4) {
    const v = ((off + i) / 4 + gen * 0x9e3779b1) >>> 0;
    buf[i] = v & 0xff;
    buf[i + 1] = (v >>> 8) & 0xff;
    buf[i + 2] = (v >>> 16) & 0xff;
    buf[i + 3] = (v >>> 24) & 0xff;
  }
}

async function open(devs: MemoryBlockDevice[], backup?: MemoryBlockDevice): Promise<MdArray> {
  return MdArray.assemble(
    devs.map((d) => d.reopen()),
    { clock: new SystemClock(), backupFile: backup ? { dev: backup.reopen() } : undefined },
  );
}

async function verify(arr: MdArray, model: Map<number, number>, upTo: number): Promise<void> {
  const buf = new Uint8Array(MiB);
  const want = new Uint8Array(4 * KiB);
  for (let off = 0; off < upTo; off += MiB) {
    const n = Math.min(MiB, upTo - off);
    await arr.read(buf.subarray(0, n), off);
    for (let b = 0; b < n; b += 4 * KiB) {
      fill(want, off + b, model.get((off + b) / 4096) ?? 0);
      assert.deepEqual(buf.subarray(b, b + 4 * KiB), want, `block at ${off + b}`);
    }
  }
}

async function readBytes(d: MemoryBlockDevice, off: number, n: number): Promise<Uint8Array> {
  const b = new Uint8Array(n);
  await d.reopen().read(b, off);
  return b;
}

async function checkZero(arr: MdArray): Promise<number> {
  await arr.setSyncAction('check');
  await arr.sync.runUntilIdle();
  return arr.sync.mismatchCnt;
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
  /** expected data offset at the end */
  offset: number;
}

const cases: Case[] = [
  { name: 'raid5 4->3 devices in place (backup file)', level: 5, disks: 4, grow: { raidDisks: 3 }, chunkKiB: 64, backup: true, offset: 2048 },
  { name: 'raid5 4->3 devices, data offset moved up', level: 5, disks: 4, grow: { raidDisks: 3 }, chunkKiB: 64, sizeKiB: 6 * 1024, backup: false, offset: 2048 + 256 },
  { name: 'raid6 6->5 devices in place (backup file)', level: 6, disks: 6, grow: { raidDisks: 5 }, chunkKiB: 64, backup: true, offset: 2048 },
];

describe('backwards reshapes', () => {
  for (const c of cases) {
    test(`${c.name}: data before, during and after; superblocks; check 0; the leaving member a spare`, async () => {
      const devs = await memoryArray({ level: c.level, sizesMiB: new Array(c.disks).fill(8), chunkKiB: c.chunkKiB, sizeKiB: c.sizeKiB });
      const backup = c.backup ? new MemoryBlockDevice('backup', 2 * MiB) : undefined;
      const arr = await open(devs);
      const model = new Map<number, number>();
      const rnd = prng(7);
      const newD = (c.grow.raidDisks ?? c.disks) - (c.level === 6 ? 2 : 1);
      const newBytes = Math.floor(((c.sizeKiB ?? 0) * 2 || Number(arr.sb.size)) / (c.chunkKiB * 2)) * c.chunkKiB * KiB * newD;
      try {
        // mdadm's refusal first, then --array-size to the new size
        await assert.rejects(arr.grow({ ...c.grow, devName: '/dev/md0' }), (e) => isTsmdError(e, 'EINVAL') && new RegExp(`use --grow --array-size first to truncate array\\.\\n\\s+e\\.g\\. mdadm --grow /dev/md0 --array-size ${newBytes / KiB}`).test(e.message));
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
        assert.equal(sb0.deltaDisks, -1);
        assert.equal(sb0.featureMap & Feature.NEW_OFFSET, c.backup ? 0 : Feature.NEW_OFFSET);
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
      for (const [i, d] of devs.entries()) {
        const sb = (await loadSuperblock(d.reopen()))!.sb;
        assert.equal(sb.featureMap & (Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET | Feature.RESHAPE_BACKWARDS), 0);
        assert.equal(sb.raidDisks, c.grow.raidDisks);
        assert.equal(sb.deltaDisks, 0);
        assert.equal(Number(sb.dataOffset), c.offset, `member ${i} data offset`);
        const role = sb.devRoles[sb.devNumber]!;
        if (i === c.disks - 1) assert.equal(role, 0xffff, 'the member that left is a spare');
        else assert.equal(role, i);
      }
      const again = await open(devs);
      try {
        assert.equal(again.sizeBytes, newBytes);
        assert.equal(again.members.filter((m) => m.slot === null).length, 1);
        await verify(again, model, newBytes);
        assert.equal(await checkZero(again), 0);
      } finally {
        await again.close();
      }
    });
  }
});
