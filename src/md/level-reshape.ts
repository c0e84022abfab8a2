/**
 * Level changes that move data: mdadm 4.2 --grow --level where Grow.c's analyse_change finds
 * a restripe is needed, around md's takeovers (level_store: raid6_takeover of a raid5,
 * raid45_takeover_raid0, raid5_takeover_raid6):
 *
 *  - raid4/5 -> raid6: md takes the raid5 over as a raid6 of one more slot in the matching
 *    *_6 layout (Q on the new last slot, empty), then the reshape to the normal raid6 layout
 *    fills that slot with a spare rebuilt along with it (raid5_start_reshape gives a spare in
 *    a slot below previous_raid_disks a recovery_offset that follows the reshape). With
 *    --layout=preserve nothing moves: the *_6 layout stays and Q is recovered onto the spare.
 *  - raid6 -> raid5: the reshape to the *_6 layout of the raid5 layout (Q on the last slot),
 *    then, when it is done, md's raid5_takeover_raid6 drops the Q slot (its member becomes a
 *    spare). mdadm does that last step from a forked process that waits for the reshape
 *    (Grow.c: "need to adjust level when reshape completes"); tsmd's engine does it in the
 *    transaction that finishes the reshape. Like mdadm's process, that intention is not on
 *    disk: an array stopped before the end stays a raid6 in the *_6 layout.
 *  - raid5 -> raid0: the reshape to parity-last, then (like mdadm's forked process, not on
 *    disk) md's raid0_takeover_raid45 through takeover.ts: the parity device is failed and
 *    removed, the bitmap removed first.
 *  - raid0 -> raid5: md takes a single-zone raid0 over as a raid5 parity-last of one more slot
 *    (the parity slot empty: degraded), then the reshape to the raid5 layout asked for
 *    (left-symmetric by default) fills the parity slot with a spare rebuilt along with it
 *    (--add DEV gives one; without a spare mdadm still goes on, and the array ends degraded).
 *
 * tsmd records the takeover and the start of the reshape in one metadata transaction (the
 * array is frozen in between with mdadm too), so a crash leaves the old level untouched or
 * the reshape recorded, never a half-taken-over array. The instant takeovers (no data moved)
 * are takeover.ts's.
 */
import { randomBytes } from 'node:crypto';
import { TsmdError } from '../errors.js';
import { Feature, MAX_SECTOR, type Superblock1 } from '../format/superblock.js';
import type { MdArray } from './array.js';
import type { Member } from './members.js';
import { needSpares, type ReshapeRequest, type TakeoverGeometry } from './reshape.js';
import { growTakeover } from './takeover.js';

/** raid5 layout -> the raid6 layout with the same data placement and Q on the last disk (md's *_6). */
const TO_6: ReadonlyMap<number, number> = new Map([
  [0, 16],
  [1, 17],
  [2, 18],
  [3, 19],
  [4, 20],
  [5, 5], // ALGORITHM_PARITY_N_6 == ALGORITHM_PARITY_N: P on n-2, Q on n-1
]);
const FROM_6: ReadonlyMap<number, number> = new Map([...TO_6].map(([a, b]) => [b, a]));

/** What the array is and what --grow asks. */
export interface LevelChangeRequest {
  level: number;
  layout: number;
  raidDisks: number;
  chunkSectors: number;
  /** md's dev_sectors (0 for raid0: computed from the members) */
  sizeSectors: number;
  /** the members' data sizes (raid0's zones) */
  memberSectors: readonly number[];
  /** spares now plus devices --add gives */
  spares: number;
  newLevel: number;
  /** --raid-devices */
  newRaidDisks?: number;
  /** --layout: a number in the new level's table, or mdadm's preserve / normalise */
  newLayout?: number | 'preserve' | 'normalise';
  newChunkSectors?: number;
  force?: boolean;
  devName: string;
}

export type LevelPlan =
  /**
   * a takeover then a reshape (the takeover's level announced when it starts); toRaid0: then
   * md's raid0_takeover_raid45 (takeover.ts) once the reshape is done
   */
  | { kind: 'reshape'; req: ReshapeRequest; announce: string | null; toRaid0?: boolean }
  /** a takeover only, and the sync engine recovers the new slot (raid5 -> raid6 --layout=preserve) */
  | { kind: 'recover'; takeover: TakeoverGeometry; announce: string };

function refuse(msg: string): never {
  throw new TsmdError('EINVAL', msg);
}

/**
 * mdadm's analyse_change and Grow_reshape's spare checks for the level changes that move
 * data. null: not one of them (same level, or an instant takeover: takeover.ts). Throws
 * mdadm's message (nothing written).
 */
export function planLevelChange(r: LevelChangeRequest): LevelPlan | null {
  const md = r.devName;
  const from = r.level === 4 ? 5 : r.level; // Grow.c: raid4 is a raid5 in the parity-last layout
  const curLayout = r.level === 4 ? 5 : r.layout;
  if (r.newLevel === r.level) return null;
  if ((from === 5 || from === 4) && r.newLevel === 6) return toRaid6(r, curLayout);
  if (r.level === 6 && r.newLevel === 5) return raid6ToRaid5(r);
  if (r.level === 0 && r.newLevel === 5) return raid0ToRaid5(r, md);
  if (r.level === 5 && r.newLevel === 0) return raid5ToRaid0(r);
  return null;
}

/**
 * raid5 (not parity-last) -> raid0: analyse_change restripes to parity-last, then mdadm's
 * forked process imposes level 0 (the parity device failed and removed, md's
 * raid0_takeover_raid45). A parity-last raid5 (or a raid4) is takeover.ts's instant change.
 */
function raid5ToRaid0(r: LevelChangeRequest): LevelPlan | null {
  if (r.layout === 5) return null;
  const delta = r.newRaidDisks !== undefined ? r.newRaidDisks - r.raidDisks : -1;
  if (delta !== -1)
    throw new TsmdError('ENOTSUP', `${r.devName}: raid5 -> raid0 with another number of data disks is not supported yet by tsmd (leave --raid-devices out: ${r.raidDisks - 1})`);
  // two devices: one data disk, analyse_change finds nothing to restripe and mdadm's
  // impose_level refuses a raid5 not in parity-last (takeover.ts leaves it to this path)
  if (r.raidDisks < 3) refuse('Impossible level change requested');
  const chunk = r.newChunkSectors ?? r.chunkSectors;
  return { kind: 'reshape', announce: null, toRaid0: true, req: { layout: 5, chunkSectors: chunk, devName: r.devName } };
}

function toRaid6(r: LevelChangeRequest, curLayout: number): LevelPlan {
  const before = TO_6.get(curLayout);
  if (before === undefined) refuse('Cannot convert an array with this layout');
  if (r.newLayout === 'normalise') refuse('normalise is only meaningful when reshaping a RAID6 array.');
  const after = r.newLayout === 'preserve' ? before : (r.newLayout ?? curLayout);
  const delta = r.newRaidDisks !== undefined ? r.newRaidDisks - r.raidDisks : 1;
  const beforeData = r.raidDisks - 1;
  const afterData = beforeData + delta - 1;
  if (afterData < 2) refuse('Number of disks too small for RAID6');
  const chunk = r.newChunkSectors ?? r.chunkSectors;
  const needed = Math.max(beforeData, afterData) + 2 - r.raidDisks;
  if (needed > r.spares && !r.force)
    throw needSpares(needed, r.spares);
  const takeover: TakeoverGeometry = { level: 6, layout: before, raidDisks: r.raidDisks + 1 };
  const announce = `level of ${r.devName} changed to raid6`;
  if (afterData === beforeData && after === before && chunk === r.chunkSectors) return { kind: 'recover', takeover, announce };
  if (afterData < beforeData) refuse('this change will reduce the size of the array.');
  return { kind: 'reshape', announce, req: { takeover, raidDisks: r.raidDisks + delta, layout: after, chunkSectors: chunk, force: r.force, devName: r.devName } };
}

function raid6ToRaid5(r: LevelChangeRequest): LevelPlan {
  if (r.newLayout === 'preserve') refuse('preserve in only meaningful when reshaping to RAID6');
  if (r.newLayout === 'normalise') refuse('normalise is only meaningful when reshaping a RAID6 array.');
  // after: the *_6 twin of the raid5 layout asked for (default: the raid6 layout's own name)
  let after: number;
  if (r.newLayout !== undefined) {
    const l = TO_6.get(r.newLayout);
    if (l === undefined) refuse('Cannot find RAID6 layout to convert to');
    after = l;
  } else if (TO_6.has(r.layout)) after = TO_6.get(r.layout)!;
  else if (FROM_6.has(r.layout)) after = r.layout;
  else refuse('Please specify new layout');
  const delta = r.newRaidDisks !== undefined ? r.newRaidDisks - r.raidDisks : -1;
  if (delta !== -1)
    throw new TsmdError('ENOTSUP', `${r.devName}: raid6 -> raid5 with another number of data disks is not supported yet by tsmd (leave --raid-devices out: ${r.raidDisks - 1})`);
  const chunk = r.newChunkSectors ?? r.chunkSectors;
  const then: TakeoverGeometry = { level: 5, layout: FROM_6.get(after)!, raidDisks: r.raidDisks - 1 };
  if (after === r.layout && chunk === r.chunkSectors) {
    // already in the *_6 layout: md takes it over now (no reshape)
    return { kind: 'reshape', announce: `level of ${r.devName} changed to raid5`, req: { then, devName: r.devName } };
  }
  return { kind: 'reshape', announce: null, req: { layout: after, chunkSectors: chunk, then, devName: r.devName } };
}

function raid0ToRaid5(r: LevelChangeRequest, md: string): LevelPlan | null {
  if (r.newLayout === 'preserve') refuse('preserve in only meaningful when reshaping to RAID6');
  if (r.newLayout === 'normalise') refuse('normalise is only meaningful when reshaping a RAID6 array.');
  const after = r.newLayout ?? 2; // mdadm's r5layout "default": left-symmetric
  const delta = r.newRaidDisks !== undefined ? r.newRaidDisks - r.raidDisks : 1;
  const chunk = r.newChunkSectors ?? r.chunkSectors;
  const beforeData = r.raidDisks;
  const afterData = beforeData + delta - 1;
  if (afterData < beforeData) refuse('this change will reduce the size of the array.');
  // Grow_reshape: from raid0 only the "working array" check applies (no --force needed)
  const needed = Math.max(beforeData, afterData) - r.raidDisks;
  if (needed > r.spares) throw needSpares(needed, r.spares, true);
  if (afterData === beforeData && after === 5 && chunk === r.chunkSectors) return null; // parity-last: an instant takeover
  // md's raid45_takeover_raid0: one strip zone only (every member the same usable size)
  const c = r.chunkSectors;
  const usable = r.memberSectors.map((s) => Math.floor(s / c) * c);
  const size = Math.min(...usable);
  if (usable.some((u) => u !== size)) throw new TsmdError('EINVAL', `${md}: could not set level to raid5 (md/raid:${md.replace(/^\/dev\//, '')}: cannot takeover raid0 with more than one zone)`);
  const takeover: TakeoverGeometry = { level: 5, layout: 5, raidDisks: r.raidDisks + 1, sizeSectors: size };
  return {
    kind: 'reshape',
    announce: `level of ${md} changed to raid5`,
    req: { takeover, raidDisks: r.raidDisks + delta, layout: after, chunkSectors: chunk, force: true, devName: md },
  };
}

/**
 * Grow_reshape's freeze(): a resync or recovery under way refuses the level change, before
 * anything is added or written (mdadm says "taken over" for a level change).
 */
export function refuseIfBusy(arr: MdArray, md: string): void {
  if (arr.isReadOnly) throw new TsmdError('EROFS', `${md} is read-only`);
  if (arr.reshapeActive) throw new TsmdError('EBUSY', `${md} is already being reshaped`);
  if (arr.sync.current || arr.resyncCp !== MAX_SECTOR || arr.rebuildingSlots.length > 0)
    throw new TsmdError('EBUSY', `${md} is performing resync/recovery and cannot be taken over`);
}

/**
 * Carry a plan out on a running array: the takeover and the reshape (one transaction,
 * MdArray.grow), or the takeover alone with the sync engine left to recover the new slot.
 */
export async function startLevelChange(arr: MdArray, plan: LevelPlan): Promise<void> {
  const md = plan.kind === 'reshape' ? (plan.req.devName ?? arr.name) : arr.name;
  refuseIfBusy(arr, md);
  if (plan.kind === 'reshape') {
    // mdadm's forked process once the reshape is done: impose_level(0)
    const toRaid0 = async (): Promise<void> => {
      const say = (msg: string) => arr.log(`md: ${msg}`);
      await growTakeover(arr, { devName: md, level: 0, adding: 0 }, { open: () => Promise.reject(new TsmdError('EINVAL', 'nothing to add')), add: [], deviceUuid: () => randomBytes(16), say });
    };
    await arr.grow(plan.toRaid0 ? { ...plan.req, whenDone: toRaid0 } : plan.req);
    return;
  }
  // the sync engine may be looking for work (a spare just added): it finds none
  while (arr.sync.busy && !arr.sync.current) await arr.clock.sleep(5);
  refuseIfBusy(arr, md);
  await arr.reshape.takeoverNow(plan.takeover);
  arr.kick();
}

/**
 * The takeover that follows a reshape (md's raid5_takeover_raid6 through level_store): the new
 * level's geometry; members in slots past its raid_disks become spares (level_store: their
 * new raid_disk is -1). Inside the metadata transaction that finishes the reshape.
 */
export function applyTakeover(sb: Superblock1, members: readonly Member[], t: TakeoverGeometry): Member[] {
  const dropped: Member[] = [];
  for (const m of members) {
    if (m.slot !== null && m.slot >= t.raidDisks) {
      m.slot = null;
      m.recoveryOffset = null;
      dropped.push(m);
    }
  }
  sb.level = t.level;
  sb.newLevel = t.level;
  sb.layout = t.layout;
  sb.newLayout = t.layout;
  sb.raidDisks = t.raidDisks;
  if (t.sizeSectors !== undefined) sb.size = BigInt(t.sizeSectors);
  // md's raid0_takeover_raid45 (mdadm's raid0 growth through raid4, takeover.ts): every
  // member's rdev->sectors becomes dev_sectors, so the raid0 is the raid4's one zone
  if (t.level === 0) {
    for (const m of members) if (m.slot !== null && !m.faulty) m.loaded = { ...m.loaded, sb: { ...m.loaded.sb, dataSize: sb.size } };
    sb.featureMap &= ~Feature.RAID0_LAYOUT;
  }
  return dropped;
}
