/**
 * Reshapes that meet a member failure: one that fails in the middle (md_error while the reshape
 * runs: raid5_error, then reshape_request goes on degraded, md computes the missing member's
 * blocks from parity) and one that starts on a degraded array (a raid5 shrink with a member
 * missing, which md allows while the result keeps within max_degraded). In-memory members behind
 * the fault-injecting device; data written before and during (concurrent writers) reads back
 * after the reshape and after the array is assembled again; the failed member is recorded as
 * faulty; a spare added at the end is recovered and check then finds 0 mismatches.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { SystemClock } from '../../src/env/clock.js';
import { Feature, Role } from '../../src/format/superblock.js';
import { FaultyBlockDevice } from '../../src/io/fault-device.js';
import { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { MdArray } from '../../src/md/array.js';
import { planLevelChange, startLevelChange } from '../../src/md/level-reshape.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { memoryArray } from '../helpers/arrays.js';
import { checkMismatches as checkZero, fillModel, verifyModel as verify, writersDuring } from '../helpers/reshape-model.js';

const KiB = 1024;
const MiB = 1024 * KiB;

async function open(devs: MemoryBlockDevice[], run = false): Promise<{ arr: MdArray; faulty: FaultyBlockDevice[] }> {
  const faulty = devs.map((d) => new FaultyBlockDevice(d.reopen()));
  const arr = await MdArray.assemble(faulty, { clock: new SystemClock(), run });
  return { arr, faulty };
}

/** Resolves once the reshape has moved at least `fraction` of the array (forwards). */
async function reshapedPast(arr: MdArray, fraction: number): Promise<void> {
  for (let i = 0; i < 3000; i++) {
    const p = arr.reshape.progress();
    assert.ok(p, 'the reshape runs');
    if (p.doneSectors >= p.totalSectors * fraction) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail('the reshape did not get there in 30 s');
}

/** A spare added, recovered; then check: 0 mismatches, and the data still reads back. */
async function recoverAndCheck(arr: MdArray, model: Map<number, number>, bytes: number): Promise<MemoryBlockDevice> {
  const spare = new MemoryBlockDevice('spare', 8 * MiB);
  await arr.addMember(spare.reopen(), { deviceUuid: randomBytes(16) });
  arr.kick();
  await arr.sync.runUntilIdle();
  assert.equal(arr.degraded, false, 'the spare took the failed slot');
  assert.equal(await checkZero(arr), 0);
  await verify(arr, model, bytes, 'after recovery');
  return spare;
}

describe('reshapes meeting a member failure', () => {
  for (const c of [
    { name: 'raid5 4->5 devices', level: 5 as const, disks: 4, failSlot: 1 },
    { name: 'raid6 5->6 devices', level: 6 as const, disks: 5, failSlot: 3 },
  ]) {
    test(`${c.name}: a member fails in the middle; the reshape finishes degraded; nothing lost`, async () => {
      const devs = await memoryArray({ level: c.level, sizesMiB: new Array(c.disks + 1).fill(8), raidDisks: c.disks, chunkKiB: 64 });
      const { arr, faulty } = await open(devs);
      const model = new Map<number, number>();
      const before = arr.sizeBytes;
      let spare: MemoryBlockDevice;
      let failedName = '';
      try {
        await fillModel(arr, model, before);
        arr.sync.local.maxKiBs = 3000;
        arr.sync.local.minKiBs = 3000;
        arr.startBackground();
        assert.equal(await arr.grow({ raidDisks: c.disks + 1, devName: '/dev/md0' }), true);
        const failed = arr.members.find((m) => m.slot === c.failSlot)!;
        failedName = failed.dev.name;
        const busy = () => arr.reshapeActive;
        const writes = writersDuring(arr, model, before, busy, { seed: 11, flushEvery: 9 });
        await reshapedPast(arr, 0.3);
        // every read and write of that member fails from now on (md_error on the first)
        faulty.find((f) => f.name === failedName)!.vanish();
        const during = await Promise.all([writes, arr.reshape.wait()]).then(([n]) => n);
        assert.ok(during > 10, `writes ran during the reshape (${during})`);
        assert.equal(arr.reshape.lastError, null);
        assert.equal(arr.reshapeActive, false);
        assert.equal(arr.degraded, true);
        assert.equal(failed.faulty, true, 'the member is failed');
        assert.equal(arr.sb.raidDisks, c.disks + 1);
        assert.ok(arr.sizeBytes > before, 'the array grew');
        await verify(arr, model, before, 'degraded, after the reshape');
        spare = await recoverAndCheck(arr, model, before);
      } finally {
        await arr.close();
      }
      // the survivors and the recovered spare assemble again; the failed member is not among them
      const again = await open([...devs.filter((d) => d.name !== failedName), spare]);
      try {
        assert.equal(again.arr.degraded, false);
        assert.equal(again.arr.sb.featureMap & (Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET), 0);
        await verify(again.arr, model, before, 'assembled again');
      } finally {
        await again.arr.close();
      }
    });
  }

  test('raid5 -> raid6 (Q rebuilt along with the reshape): a data member fails in the middle', async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: new Array(5).fill(8), raidDisks: 4, chunkKiB: 64 });
    const { arr, faulty } = await open(devs);
    const model = new Map<number, number>();
    const size = arr.sizeBytes;
    try {
      await fillModel(arr, model, size);
      arr.sync.local.maxKiBs = 3000;
      arr.sync.local.minKiBs = 3000;
      arr.startBackground();
      const sb = arr.sb;
      const plan = planLevelChange({
        level: 5,
        layout: sb.layout,
        raidDisks: 4,
        chunkSectors: sb.chunkSize,
        sizeSectors: Number(sb.size),
        memberSectors: arr.members.filter((m) => m.slot !== null).map((m) => Number(m.loaded.sb.dataSize)),
        spares: 1,
        newLevel: 6,
        devName: '/dev/md0',
      });
      assert.ok(plan && plan.kind === 'reshape');
      await startLevelChange(arr, plan);
      assert.equal(arr.level, 6);
      const rebuilt = arr.members.find((m) => m.recoveryOffset !== null)!;
      assert.ok(rebuilt, 'Q is rebuilt along with the reshape');
      const writes = writersDuring(arr, model, size, () => arr.reshapeActive, { seed: 11, flushEvery: 9 });
      await reshapedPast(arr, 0.3);
      const victim = arr.members.find((m) => m.slot === 0)!;
      faulty.find((f) => f.name === victim.dev.name)!.vanish();
      await Promise.all([writes, arr.reshape.wait()]);
      assert.equal(arr.reshape.lastError, null);
      assert.equal(arr.reshapeActive, false);
      assert.equal(victim.faulty, true);
      // raid6 with one member failed: still one parity's worth of redundancy, and Q complete
      assert.equal(rebuilt.recoveryOffset, null, 'Q is complete at the end of the reshape');
      assert.equal(arr.sizeBytes, size);
      await verify(arr, model, size, 'after the change');
      await recoverAndCheck(arr, model, size);
    } finally {
      await arr.close();
    }
  });

  test('raid5 5->4 devices on a degraded array (a member missing from the start), data offset moved up', async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: new Array(5).fill(8), chunkKiB: 64, sizeKiB: 6 * 1024 });
    // slot 2 is missing: assembled with --run, degraded
    const present = devs.filter((_, i) => i !== 2);
    const { arr } = await open(present, true);
    const model = new Map<number, number>();
    try {
      assert.equal(arr.degraded, true);
      const newBytes = 3 * 6 * MiB;
      arr.setArraySize(newBytes / 512);
      await fillModel(arr, model, newBytes);
      arr.sync.local.maxKiBs = 3000;
      arr.sync.local.minKiBs = 3000;
      arr.startBackground();
      assert.equal(await arr.grow({ raidDisks: 4, devName: '/dev/md0' }), true);
      assert.equal(arr.reshapeActive, true);
      assert.ok(arr.sb.newOffset > 0, 'the data offset moves up');
      const opts = { seed: 11, flushEvery: 9 };
      const [during] = await Promise.all([writersDuring(arr, model, newBytes, () => arr.reshapeActive, opts), arr.reshape.wait()]);
      assert.ok(during > 10, `writes ran during the reshape (${during})`);
      assert.equal(arr.reshape.lastError, null);
      assert.equal(arr.sb.raidDisks, 4);
      assert.equal(arr.sizeBytes, newBytes);
      await verify(arr, model, newBytes, 'after the shrink');
      // raid5_finish_reshape leaves the member of the old last slot a spare; md then recovers
      // the missing slot onto it
      arr.kick();
      await arr.sync.runUntilIdle();
      assert.equal(arr.degraded, false, 'the member that left the last slot fills the missing one');
      assert.equal(await checkZero(arr), 0);
      await verify(arr, model, newBytes, 'after the recovery');
    } finally {
      await arr.close();
    }
    // every superblock agrees: 4 devices; the member of the old last slot fills the missing one
    const sbs = await Promise.all(present.map(async (d) => (await loadSuperblock(d.reopen({ readOnly: true })))!.sb));
    for (const sb of sbs) {
      assert.equal(sb.raidDisks, 4);
      assert.equal(sb.featureMap & (Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET | Feature.RESHAPE_BACKWARDS), 0);
    }
    const roles = sbs[0]!.devRoles;
    const active = present.map((_, i) => roles[sbs[i]!.devNumber]!).filter((r) => r < Role.FAULTY);
    assert.deepEqual(active.sort(), [0, 1, 2, 3], 'four active members');
    const again = await open(present, true);
    try {
      assert.equal(again.arr.degraded, false);
      await verify(again.arr, model, 3 * 6 * MiB, 'assembled again');
    } finally {
      await again.arr.close();
    }
  });
});
