/**
 * Grows that keep the data offset (mdadm's "old way": no room before the data, or a
 * --backup-file given): the critical section at the start of the array is saved first, to the
 * backup area of the spare that joins (Grow.c reshape_prepare_fdlist) or to the backup file,
 * then rewritten in place and checkpointed; the rest runs forwards in place. In-memory members:
 * data before, during (writers) and after reads back, superblocks as the real mdadm --examine
 * reads them (during and after), check 0; a crash inside the critical section is restored from
 * the spare's backup at assembly (and the same image without it is shown damaged); no backup at
 * all is mdadm's refusal.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SystemClock } from '../../src/env/clock.js';
import { isTsmdError } from '../../src/errors.js';
import { Feature } from '../../src/format/superblock.js';
import { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { MdArray } from '../../src/md/array.js';
import { decodeBackupSuper, encodeBackupSuper } from '../../src/md/backup-file.js';
import { growCriticalSectors } from '../../src/md/reshape.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { memoryArray } from '../helpers/arrays.js';
import { requireTool } from '../helpers/tools.js';
import { checkMismatches as checkZero, damagedBlocks, restoreAndFinish, dump, examineLikeMdadm, fillModel, image, tap, verifyModel as verify, writersDuring } from '../helpers/reshape-model.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * A reshape under way: the superblocks as mdadm reads them (frozen at a checkpoint), then
 * writers until it is done; every block of [0, bytes) reads back and check finds 0.
 */
async function duringAndAfter(
  arr: MdArray,
  devs: MemoryBlockDevice[],
  model: Map<number, number>,
  bytes: number,
  withMdadm: boolean,
  seed: number,
): Promise<void> {
  if (withMdadm) {
    await arr.setSyncAction('frozen');
    await examineLikeMdadm(devs, 'during');
    await arr.setSyncAction('idle');
  }
  const busy = () => arr.reshapeActive && !arr.reshape.lastError;
  const [writes] = await Promise.all([writersDuring(arr, model, bytes, busy, { seed }), arr.reshape.wait()]);
  assert.ok(writes > 10, `writes ran during the reshape (${writes})`);
  assert.equal(arr.reshape.lastError, null);
  assert.equal(arr.reshapeActive, false);
  await verify(arr, model, bytes, 'after');
  assert.equal(await checkZero(arr), 0);
}

test('the critical section of a grow in place: mdadm compute_backup_blocks multiples, one new stripe of room after it', () => {
  // raid5 4->5, 64K chunks: mdadm says "Need to backup 768K of critical section.."
  assert.equal(growCriticalSectors(3, 4, 128, 128), 1536);
  for (const [oldD, newD, oldC, newC] of [[2, 3, 128, 128], [3, 4, 128, 256], [4, 5, 256, 128], [3, 5, 64, 64], [2, 4, 1024, 128]] as const) {
    const c = growCriticalSectors(oldD, newD, oldC, newC);
    assert.equal(c % (oldD * oldC), 0, 'a whole number of old stripes');
    assert.equal(c % (newD * newC), 0, 'a whole number of new stripes');
    // its new rows end at or below the old row holding the data just past it
    assert.ok(Math.ceil(c / (newD * newC)) * newC <= Math.floor(c / (oldD * oldC)) * oldC);
  }
});

describe('grows in place (the data offset stays)', () => {
  for (const c of [
    { name: 'raid5 4->5, superblock 1.0 with no room around the data: backup on the joining spare', level: 5 as const, disks: 4, metadata: '1.0' as const, file: false },
    { name: 'raid6 5->6, superblock 1.0: backup on the joining spare', level: 6 as const, disks: 5, metadata: '1.0' as const, file: false },
    { name: 'raid5 4->5, superblock 1.2 with --backup-file: the file, as mdadm does when given one', level: 5 as const, disks: 4, metadata: '1.2' as const, file: true },
  ]) {
    test(`${c.name}; data before, during, after; --examine; check 0`, async (t) => {
      const withMdadm = requireTool(t, 'mdadm', 'the superblocks are compared with mdadm --examine');
      const devs = await memoryArray({ level: c.level, sizesMiB: new Array(c.disks + 1).fill(8), raidDisks: c.disks, chunkKiB: 64, metadata: c.metadata });
      const backup = c.file ? new MemoryBlockDevice('backup', 4 * MiB) : null;
      const log: string[] = [];
      const arr = await MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock(), log: (m) => log.push(m) });
      const model = new Map<number, number>();
      const before = arr.sizeBytes;
      try {
        await fillModel(arr, model);
        arr.sync.local.maxKiBs = 4000;
        arr.startBackground();
        assert.equal(await arr.grow({ raidDisks: c.disks + 1, devName: '/dev/md0', backup: backup ? { dev: backup.reopen() } : undefined }), true);
        assert.ok(log.some((l) => /Need to backup \d+K of critical section\.\./.test(l)), log.join('\n'));
        const sb0 = arr.sb;
        assert.equal(sb0.featureMap & (Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET | Feature.RESHAPE_BACKWARDS), Feature.RESHAPE_ACTIVE, 'in place, forwards');
        assert.ok(Number(sb0.reshapePosition) > 0, 'the critical section is done and checkpointed when the grow returns');
        await duringAndAfter(arr, devs, model, before, withMdadm, 5);
        assert.ok(arr.sizeBytes > before, 'the array grew');
      } finally {
        await arr.close();
      }
      if (withMdadm) await examineLikeMdadm(devs, 'after');
      for (const d of devs) {
        const sb = (await loadSuperblock(d.reopen()))!.sb;
        assert.equal(sb.featureMap & (Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET), 0);
        assert.equal(sb.raidDisks, c.disks + 1);
        assert.equal(Number(sb.dataOffset), c.metadata === '1.0' ? 0 : 2048, 'the data offset stayed');
      }
      if (backup) {
        const bsb = decodeBackupSuper(await (async () => {
          const b = new Uint8Array(512);
          await backup.reopen().read(b, 0);
          return b;
        })());
        assert.ok(typeof bsb !== 'string', `the backup file holds the critical section: ${String(bsb)}`);
        assert.equal(bsb.sections[0]!.arrayStart, 0);
      }
      const again = await MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock() });
      try {
        await verify(again, model, before, 'assembled again');
      } finally {
        await again.close();
      }
    });
  }

  test("a crash inside the critical section: restored from the spare's backup at assembly; without it, mdadm's refusal", async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: [8, 8, 8, 8, 8], raidDisks: 4, chunkKiB: 64, metadata: '1.0' });
    let arr = await MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock() });
    const model = new Map<number, number>();
    const before = arr.sizeBytes;
    await fillModel(arr, model);
    await arr.close();
    // the crash image: at the member flush after the critical section is written in its new
    // geometry, before its checkpoint (the superblocks say: reshape active, position 0)
    let crash: MemoryBlockDevice[] | null = null;
    const members = devs.map((d) =>
      tap(
        d.reopen(),
        () => {},
        () => {
          const sb = arr.sb;
          if ((sb.featureMap & Feature.RESHAPE_ACTIVE) !== 0 && sb.reshapePosition === 0n) crash = devs.map(image);
        },
      ),
    );
    arr = await MdArray.assemble(members, { clock: new SystemClock() });
    try {
      assert.equal(await arr.grow({ raidDisks: 5, devName: '/dev/md0' }), true);
      await arr.reshape.wait();
    } finally {
      await arr.close();
    }
    assert.ok(crash, 'a crash image was taken inside the critical section');
    const img = crash as MemoryBlockDevice[];
    const sb = (await loadSuperblock(img[0]!.reopen()))!.sb;
    assert.equal(sb.reshapePosition, 0n);
    // control: the spare's backup area zeroed (no backup superblock anywhere): mdadm refuses to
    // assemble, and the old geometry read from the image is damaged
    const blank = img.map(image);
    const spare = blank[4]!.reopen();
    const tail = (Number(sb.dataOffset) + Number(sb.size)) * 512;
    await spare.write(new Uint8Array(64 * KiB), tail - 64 * KiB);
    await assert.rejects(
      MdArray.assemble(blank.map((d) => d.reopen()), { clock: new SystemClock() }),
      (e) => isTsmdError(e, 'EINVAL') && /^Failed to restore critical section for reshape, sorry\.\n\s+Possibly you needed to specify the --backup-file$/.test(e.message),
    );
    const ro = await MdArray.assemble(blank.map((d) => d.reopen()), { clock: new SystemClock(), readOnly: true });
    let bad: number;
    try {
      bad = await damagedBlocks(ro, 2 * MiB);
    } finally {
      await ro.close();
    }
    assert.ok(bad > 0, 'without the backup the critical section is damaged');
    // the image as the crash left it: the backup on the spare restores the section
    await restoreAndFinish(img, model, before, { moved: (pos) => pos > 0 });
  });

  test('raid5 chunk 64K->128K in place (superblock 1.0, no room either side): refused without a backup file; with one, every step through it', async (t) => {
    const withMdadm = requireTool(t, 'mdadm', 'the superblocks are compared with mdadm --examine');
    const devs = await memoryArray({ level: 5, sizesMiB: [8, 8, 8, 8], chunkKiB: 64, metadata: '1.0', sizeKiB: 8064 });
    const arr = await MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock() });
    const model = new Map<number, number>();
    const size = arr.sizeBytes;
    try {
      await fillModel(arr, model);
      await arr.flush();
      const bytes = devs.map((d) => Buffer.from(dump(d)));
      await assert.rejects(
        arr.grow({ chunkSectors: 256, devName: '/dev/md0' }),
        (e) => isTsmdError(e, 'EINVAL') && /^\/dev\/md0: Cannot grow - need backup-file\n Please provide one with "--backup=\.\.\."$/.test(e.message),
      );
      assert.equal(arr.reshapeActive, false);
      assert.ok(devs.every((d, i) => Buffer.from(dump(d)).equals(bytes[i]!)), 'nothing written');
      // mdadm's file for it: compute_backup_blocks enlarged towards 16 MiB under 1/32 of a member
      const backup = new MemoryBlockDevice('backup', 4096 + 768 * 512 + 512);
      arr.sync.local.maxKiBs = 4000;
      arr.startBackground();
      assert.equal(await arr.grow({ chunkSectors: 256, devName: '/dev/md0', backup: { dev: backup.reopen() } }), true);
      assert.equal(arr.sb.featureMap & (Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET | Feature.RESHAPE_BACKWARDS), Feature.RESHAPE_ACTIVE, 'in place, forwards');
      await duringAndAfter(arr, devs, model, size, withMdadm, 9);
      assert.equal(arr.sizeBytes, size);
    } finally {
      await arr.close();
    }
    if (withMdadm) await examineLikeMdadm(devs, 'after');
    for (const d of devs) {
      const sb = (await loadSuperblock(d.reopen()))!.sb;
      assert.deepEqual([sb.chunkSize, Number(sb.dataOffset), sb.featureMap & Feature.RESHAPE_ACTIVE], [256, 0, 0]);
    }
  });

  test('a crash inside a later critical section of a chunk change in place: restored from the backup file', async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: [8, 8, 8, 8], chunkKiB: 64, metadata: '1.0', sizeKiB: 8064 });
    let arr = await MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock() });
    const model = new Map<number, number>();
    const size = arr.sizeBytes;
    await fillModel(arr, model);
    await arr.close();
    const backup = new MemoryBlockDevice('backup', 4096 + 1536 * 512 + 512);
    let armed = false;
    let crash: { members: MemoryBlockDevice[]; backup: MemoryBlockDevice; at: number } | null = null;
    const members = devs.map((d) =>
      tap(
        d.reopen(),
        () => {},
        () => {
          if (armed && !crash) crash = { members: devs.map(image), backup: image(backup), at: Number(arr.sb.reshapePosition) };
        },
      ),
    );
    const backupDev = tap(backup.reopen(), (data, off) => {
      if (off !== 0 || data.length !== 512) return;
      const bsb = decodeBackupSuper(data);
      if (typeof bsb !== 'string' && bsb.sections[0]!.arrayStart > 0) armed = true;
    });
    arr = await MdArray.assemble(members, { clock: new SystemClock() });
    try {
      assert.equal(await arr.grow({ chunkSectors: 256, devName: '/dev/md0', backup: { dev: backupDev } }), true);
      await arr.reshape.wait();
      assert.equal(arr.reshape.lastError, null);
      await verify(arr, model, size, 'finished without a crash');
    } finally {
      await arr.close();
    }
    assert.ok(crash, 'a crash image was taken inside a critical section past the first');
    const c = crash as { members: MemoryBlockDevice[]; backup: MemoryBlockDevice; at: number };
    assert.ok(c.at > 0);
    await assert.rejects(
      MdArray.assemble(c.members.map((d) => d.reopen()), { clock: new SystemClock() }),
      (e) => isTsmdError(e, 'EINVAL') && /^Need a backup file to complete reshape of this array\./.test(e.message),
    );
    // the same backup three hours older than the superblocks (a stale file): Grow_restart's
    // timestamp check refuses it, unless MDADM_GROW_ALLOW_OLD (allowOldBackup)
    const stale = image(c.backup);
    {
      const head = new Uint8Array(512);
      await stale.reopen().read(head, 0);
      const bsb = decodeBackupSuper(head);
      assert.ok(typeof bsb !== 'string');
      const old = encodeBackupSuper({ ...bsb, mtimeSeconds: bsb.mtimeSeconds - 3 * 3600 });
      await stale.reopen().write(old, 0);
      await stale.reopen().write(old, 4096 + bsb.sections[0]!.sectors * 512);
    }
    await assert.rejects(
      MdArray.assemble(c.members.map((d) => image(d).reopen()), { clock: new SystemClock(), backupFile: { dev: image(stale).reopen() } }),
      (e) => isTsmdError(e, 'EINVAL') && /^too-old timestamp on backup-metadata on backup\nIf you think it is should be safe, try 'export MDADM_GROW_ALLOW_OLD=1'/.test(e.message),
    );
    const allowed = await MdArray.assemble(
      c.members.map((d) => image(d).reopen()),
      { clock: new SystemClock(), backupFile: { dev: image(stale).reopen() }, allowOldBackup: true },
    );
    try {
      await verify(allowed, model, size, 'restored from the old backup, allowed');
    } finally {
      await allowed.close();
    }
    await restoreAndFinish(c.members, model, size, { backupFile: c.backup, moved: (pos) => pos > c.at });
  });
});
