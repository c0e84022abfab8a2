/**
 * Level changes that move data (src/md/level-reshape.ts) on in-memory members: raid5 -> raid6
 * (takeover to left-symmetric-6, Q rebuilt along with the reshape to left-symmetric), raid0 ->
 * raid5 (takeover to parity-last, the added disk rebuilt along with the reshape to
 * left-symmetric), raid5 -> raid6 --layout=preserve (Q recovered, nothing moved) and raid6 ->
 * raid5 (reshape to left-symmetric-6, then Q dropped). Data written before and during (writers
 * running) reads back after and assembled again; check finds 0 mismatches; the real
 * mdadm --examine prints what tsmd --examine prints; refusals write nothing.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SystemClock } from '../../src/env/clock.js';
import { isTsmdError } from '../../src/errors.js';
import { Feature, type Superblock1 } from '../../src/format/superblock.js';
import { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { MdArray } from '../../src/md/array.js';
import { type LevelChangeRequest, planLevelChange, startLevelChange } from '../../src/md/level-reshape.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { memoryArray } from '../helpers/arrays.js';
import { tsmdExamine } from '../helpers/examine.js';
import { fixtureMembers } from '../helpers/fixtures.js';
import { fields, haveTool, requireTool, run, tempDir } from '../helpers/tools.js';
import { checkMismatches as checkZero, fillModel, verifyModel as verify, writersDuring } from '../helpers/reshape-model.js';

const KiB = 1024;
const MiB = 1024 * KiB;

async function open(devs: MemoryBlockDevice[]): Promise<MdArray> {
  return MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock() });
}

/** What live.ts gives planLevelChange for this array. */
function request(arr: MdArray, newLevel: number, more: Partial<LevelChangeRequest> = {}): LevelChangeRequest {
  const sb = arr.sb;
  return {
    level: sb.level,
    layout: sb.layout,
    raidDisks: sb.raidDisks,
    chunkSectors: sb.chunkSize,
    sizeSectors: Number(sb.size),
    memberSectors: arr.members.filter((m) => m.slot !== null).map((m) => Number(m.loaded.sb.dataSize)),
    spares: arr.members.filter((m) => m.slot === null && !m.faulty).length,
    newLevel,
    devName: '/dev/md0',
    ...more,
  };
}

/** tsmd --examine and the real mdadm --examine of a member (its first MiB in a sparse file of its size). */
async function examineBoth(dev: MemoryBlockDevice, path: string): Promise<[string, string]> {
  const head = new Uint8Array(MiB);
  await dev.reopen({ readOnly: true }).read(head, 0);
  writeFileSync(path, head);
  run('truncate', ['-s', String(dev.sizeBytes), path]);
  const theirs = run('mdadm', ['--examine', path]);
  assert.equal(theirs.status, 0, theirs.stderr);
  const ours = await tsmdExamine(path);
  return [ours, theirs.stdout];
}

async function superblocks(devs: MemoryBlockDevice[]): Promise<Superblock1[]> {
  return Promise.all(devs.map(async (d) => (await loadSuperblock(d.reopen({ readOnly: true })))!.sb));
}

interface Case {
  name: string;
  level: 0 | 5 | 6;
  disks: number;
  /** spares made with the array / added before the change (raid0 takes none at create) */
  spares: number;
  addSpares: number;
  to: number;
  more?: Partial<LevelChangeRequest>;
  /** announced by the plan */
  announce: RegExp | null;
  end: { level: number; disks: number; layout: number; spares: number };
  /** the change moves data (a reshape runs) */
  reshape: boolean;
  /** the array grows (more data disks) */
  grows?: boolean;
  /** members removed from the array at the end (raid0 keeps no parity device) */
  removed?: number;
}

const cases: Case[] = [
  { name: 'raid5 -> raid6 (4 -> 5 devices)', level: 5, disks: 4, spares: 1, addSpares: 0, to: 6, more: { newRaidDisks: 5 }, announce: /level of \/dev\/md0 changed to raid6/, end: { level: 6, disks: 5, layout: 2, spares: 0 }, reshape: true },
  // Q rebuilt along with a reshape that also adds a data disk (one In_sync new slot)
  { name: 'raid5 -> raid6 (4 -> 6 devices)', level: 5, disks: 4, spares: 2, addSpares: 0, to: 6, more: { newRaidDisks: 6 }, announce: /level of \/dev\/md0 changed to raid6/, end: { level: 6, disks: 6, layout: 2, spares: 0 }, reshape: true, grows: true },
  { name: 'raid0 -> raid5 (--add)', level: 0, disks: 3, spares: 0, addSpares: 1, to: 5, announce: /level of \/dev\/md0 changed to raid5/, end: { level: 5, disks: 4, layout: 2, spares: 0 }, reshape: true },
  { name: 'raid5 -> raid6 --layout=preserve', level: 5, disks: 4, spares: 1, addSpares: 0, to: 6, more: { newLayout: 'preserve' }, announce: /level of \/dev\/md0 changed to raid6/, end: { level: 6, disks: 5, layout: 18, spares: 0 }, reshape: false },
  // restriped to parity-last, then md's raid0_takeover_raid45 (the parity device removed)
  { name: 'raid5 -> raid0 (4 -> 3 devices)', level: 5, disks: 4, spares: 0, addSpares: 0, to: 0, announce: null, end: { level: 0, disks: 3, layout: 0, spares: 0 }, reshape: true, removed: 1 },
  { name: 'raid6 -> raid5 (5 -> 4 devices, Q dropped)', level: 6, disks: 5, spares: 0, addSpares: 0, to: 5, announce: null, end: { level: 5, disks: 4, layout: 2, spares: 1 }, reshape: true },
];

describe('level changes that move data', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('level-reshape');
  });
  after(() => dir.cleanup());

  for (const c of cases) {
    test(`${c.name}: data before, during and after; superblocks as mdadm reads them; check 0`, async () => {
      const devs = await memoryArray({ level: c.level, sizesMiB: new Array(c.disks + c.spares).fill(4), raidDisks: c.disks, chunkKiB: 64 });
      const arr = await open(devs);
      const model = new Map<number, number>();
      const size = arr.sizeBytes;
      let kept: string[] = [];
      try {
        for (let i = 0; i < c.addSpares; i++) {
          const d = new MemoryBlockDevice(`mem${devs.length}`, 4 * MiB);
          devs.push(d);
          await arr.addMember(d.reopen(), { deviceUuid: randomBytes(16) });
        }
        await fillModel(arr, model);
        // slow enough that the writers overlap the change, not slower while they write
        arr.sync.local.maxKiBs = 1500;
        arr.sync.local.minKiBs = 1500;
        arr.startBackground();
        const plan = planLevelChange(request(arr, c.to, c.more));
        assert.ok(plan, 'a level change that moves data');
        if (c.announce) assert.match(plan.announce ?? '', c.announce);
        else assert.equal(plan.announce, null);
        assert.equal(plan.kind === 'reshape', c.reshape);
        await startLevelChange(arr, plan);
        let busy: () => boolean;
        if (plan.kind === 'reshape') {
          assert.equal(arr.reshapeActive, true);
          if ((c.level === 5 && c.to === 6) || c.level === 0) {
            // the added slot is rebuilt along with the reshape (md: recovery_offset)
            assert.equal(arr.members.filter((m) => m.recoveryOffset !== null).length, 1);
            assert.equal(arr.level, c.to);
          }
          busy = () => arr.reshapeActive;
        } else {
          assert.equal(arr.level, 6);
          busy = () => arr.sync.busy || arr.rebuildingSlots.length > 0 || arr.degraded;
        }
        const during = await writersDuring(arr, model, size, busy);
        assert.ok(during > 10, `writes ran during the change (${during})`);
        if (plan.kind === 'reshape') await arr.reshape.wait();
        await arr.sync.runUntilIdle();
        arr.sync.local.maxKiBs = 1_000_000; // the check at full speed
        assert.equal(arr.reshape.lastError, null);
        assert.equal(arr.reshapeActive, false);
        assert.equal(arr.level, c.end.level);
        assert.equal(arr.degraded, false);
        if (c.grows) assert.ok(arr.sizeBytes > size, 'the array grew');
        else assert.equal(arr.sizeBytes, size, 'the size of the array is kept');
        await verify(arr, model, size, 'after');
        if (c.end.level !== 0) assert.equal(await checkZero(arr), 0);
        kept = arr.members.map((m) => m.dev.name);
      } finally {
        await arr.close();
      }
      assert.equal(kept.length, devs.length - (c.removed ?? 0), 'members at the end');
      const members = devs.filter((d) => kept.includes(d.name));
      const sbs = await superblocks(members);
      for (const sb of sbs) {
        assert.equal(sb.featureMap & (Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET | Feature.RECOVERY_OFFSET), 0);
        assert.deepEqual([sb.level, sb.raidDisks, sb.layout, sb.chunkSize], [c.end.level, c.end.disks, c.end.layout, 128]);
      }
      assert.equal(sbs.filter((sb) => sb.devRoles[sb.devNumber]! >= 0xfffe).length, c.end.spares, 'spares at the end');
      if (haveTool('mdadm')) {
        for (const [i, d] of devs.entries()) {
          const [ours, theirs] = await examineBoth(d, join(dir.path, `${c.level}-${c.to}-${i}.img`));
          assert.equal(ours, theirs, `--examine of member ${i}`);
        }
      }
      const again = await open(members);
      try {
        await verify(again, model, size, 'assembled again');
        if (c.end.level !== 0) assert.equal(await checkZero(again), 0);
      } finally {
        await again.close();
      }
    });
  }

  // the kernel's images of the same changes, stopped mid-way (shared/fixtures/kernel-md-reshape):
  // tsmd's superblocks during its own reshape carry the same geometry, feature bits and roles
  // (the new data offset and the position are tsmd's own choices: present, not compared)
  const midway: Array<{ fixture: string; level: 0 | 5; disks: number; spares: number; addSpares: number; to: number; more?: Partial<LevelChangeRequest> }> = [
    { fixture: 'raid5-to-raid6-interrupted', level: 5, disks: 4, spares: 1, addSpares: 0, to: 6, more: { newRaidDisks: 5 } },
    { fixture: 'raid0-to-raid5-interrupted', level: 0, disks: 3, spares: 0, addSpares: 1, to: 5 },
  ];
  for (const c of midway) {
    test(`${c.fixture}: tsmd's own superblocks in the middle of the change agree with the kernel's`, async (t) => {
      if (!requireTool(t, 'mdadm', 'the judge of both images')) return;
      const devs = await memoryArray({ level: c.level, sizesMiB: new Array(c.disks + c.spares).fill(32), raidDisks: c.disks, chunkKiB: 64, assumeClean: true });
      const arr = await open(devs);
      try {
        for (let i = 0; i < c.addSpares; i++) {
          const d = new MemoryBlockDevice(`mem${devs.length}`, 32 * MiB);
          devs.push(d);
          await arr.addMember(d.reopen(), { deviceUuid: randomBytes(16) });
        }
        arr.sync.local.maxKiBs = 2000;
        arr.startBackground();
        const plan = planLevelChange(request(arr, c.to, c.more));
        assert.ok(plan);
        await startLevelChange(arr, plan);
        await arr.clock.sleep(300);
        await arr.reshape.freeze();
        assert.equal(arr.reshapeActive, true);
      } finally {
        await arr.close();
      }
      const kernel = fixtureMembers(c.fixture, 'kernel-md-reshape');
      assert.equal(kernel.length, devs.length);
      const same = ['Feature Map', 'Raid Level', 'Raid Devices', 'Avail Dev Size', 'Array Size', 'Data Offset', 'Super Offset', 'Layout', 'New Layout', 'Chunk Size', 'Device Role', 'Array State'];
      for (const [i, d] of devs.entries()) {
        const [, ours] = await examineBoth(d, join(dir.path, `mid-${c.fixture}-${i}.img`));
        const theirs = run('mdadm', ['--examine', kernel[i]!]).stdout;
        const [o, k] = [fields(ours), fields(theirs)];
        for (const key of same) assert.equal(o.get(key), k.get(key), `member ${i}: ${key}\n${ours}`);
        for (const key of ['New Offset', "Reshape pos'n", 'Recovery Offset']) assert.equal(o.has(key), k.has(key), `member ${i}: ${key} present in both or neither`);
      }
    });
  }

  test("refusals: mdadm's messages, nothing written", async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: [8, 8, 8, 8], chunkKiB: 64 });
    const arr = await open(devs);
    const snap = async () => Promise.all(devs.map(async (d) => Buffer.from((await loadSuperblock(d.reopen()))!.raw).toString('hex')));
    const sbs = await snap();
    try {
      const needSpare = /^Need 1 spare to avoid degraded array, and only have 0\.\n {7}Use --force to over-ride this check\.$/;
      assert.throws(() => planLevelChange(request(arr, 6)), (e) => isTsmdError(e, 'EINVAL') && needSpare.test(e.message));
      assert.throws(() => planLevelChange(request(arr, 6, { newLayout: 'normalise', spares: 1 })), /normalise is only meaningful when reshaping a RAID6 array/);
      assert.throws(() => planLevelChange(request(arr, 6, { layout: 8, spares: 1 })), /Cannot convert an array with this layout/);
      // an instant takeover is not a level reshape's (takeover.ts)
      assert.equal(planLevelChange(request(arr, 5)), null);
      assert.equal(planLevelChange({ ...request(arr, 5), level: 0, raidDisks: 3, newLayout: 5 }), null);
      const zones = { ...request(arr, 5), level: 0, raidDisks: 3, memberSectors: [16384, 16384, 20480] };
      assert.throws(() => planLevelChange(zones), /cannot takeover raid0 with more than one zone/);
    } finally {
      await arr.close();
    }
    assert.deepEqual(await snap(), sbs);
  });
});
