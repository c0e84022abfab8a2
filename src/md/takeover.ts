/**
 * mdadm --grow --level for the level changes that move no data: md's takeovers. Two halves,
 * as on Linux:
 *
 *  - mdadm 4.2's side (Grow.c Grow_reshape, analyse_change, reshape_array, impose_level,
 *    remove_disks_for_takeover): which change is asked for, its refusals in mdadm's words, the
 *    spares it needs, the members it fails and removes first (the parity disk before raid4/5
 *    -> raid0, all but one copy before raid10/raid1 -> raid0), the bitmap it removes before a
 *    change to raid0, the devices it adds after the level changed (--add), and its messages
 *    ("level of /dev/md0 changed to raid5", "added /dev/sdc");
 *  - md's side (raid5.c raid5_takeover_raid1 / raid45_takeover_raid0 / raid4_takeover /
 *    raid5_takeover, raid1.c raid1_takeover, raid0.c raid0_takeover_raid45 / _raid10 / _raid1,
 *    raid10.c raid10_takeover_raid0, md.c level_store): the new geometry, each member's new
 *    slot (rdev->new_raid_disk), data size (rdev->sectors) and the array's dev_sectors, and the
 *    kernel's own refusals ("cannot takeover raid0 with more than one zone"...), which mdadm
 *    reports as "could not set level to raidN".
 *
 * analyseLevelChange() is pure (an array's shape in, a plan or a refusal out) and returns null
 * for a level change that needs a reshape (data moved: raid5 -> raid6, raid0 -> raid5 with the
 * default layout, ...): the caller then tries the reshape paths. growTakeover() carries a plan
 * out on a running array through MdArray.installPersonality (md's level_store). Every refusal
 * is decided before anything is written.
 */
import { TsmdError } from '../errors.js';
import { Feature, MAX_SECTOR } from '../format/superblock.js';
import type { BlockDevice } from '../io/block-device.js';
import { parseLayout } from '../raid/geometry/names.js';
import { levelByNumber } from '../raid/levels.js';
import type { LevelGeometry } from '../raid/personality.js';
import type { MdArray, TakeoverChanges } from './array.js';
import { inSync, type Member } from './members.js';
import { needSpares } from './reshape.js';

/** md's raid5 algorithms used here (raid5.h) */
const ALGORITHM_LEFT_SYMMETRIC = 2;
const ALGORITHM_PARITY_N = 5;
/** raid10 near=2, far=1 (md's (1 << 8) + 2) */
const RAID10_NEAR2 = 0x102;
/** md's RAID5_STRIPE_SIZE (the default 4 KiB) in sectors */
const STRIPE_SECTORS = 8;

/** The array as the level change sees it (a snapshot; MdArray.shape below). */
export interface ArrayShape {
  level: number;
  layout: number;
  chunkSectors: number;
  raidDisks: number;
  /** md's dev_sectors (superblock size) */
  componentSectors: number;
  arraySectors: number;
  bitmap: boolean;
  /** every member: id (index in the array's list), slot (null: spare), in sync, faulty, data_size */
  members: Array<{ id: number; slot: number | null; inSync: boolean; faulty: boolean; dataSectors: number }>;
}

/** What the user asked for (mdadm --grow --level=L [--layout] [--raid-devices] [--add ...]). */
export interface LevelChangeRequest {
  devName: string;
  /** md level number asked for */
  level: number;
  /** --layout as given */
  layoutText?: string;
  /** --raid-devices */
  raidDisks?: number;
  /** devices given with --add */
  adding: number;
  force?: boolean;
}

/** An instant level change: what mdadm removes first, what md installs, what must be added. */
export interface TakeoverPlan {
  target: LevelGeometry;
  /** member ids mdadm fails (when active) and removes before the level changes */
  drop: number[];
  /** mdadm removes the internal bitmap first (a change to raid0; md refuses it with one) */
  dropBitmap: boolean;
  /** new slot per old slot (md's rdev->new_raid_disk); absent: unchanged */
  slotMap?: Map<number, number>;
  /** data sectors per member id (md's rdev->sectors after the takeover); absent: unchanged */
  dataSectors?: Map<number, number>;
  componentSectors?: number;
  /** md's recovery_cp = MaxSector (the raid0 takeovers) */
  inSync: boolean;
  /** the chunk mdadm sets after the level change (raid1 -> raid5: 64K), when it differs */
  wantChunkSectors?: number;
  /**
   * the reshape mdadm starts once the level changed (reshape_array after impose_level): more
   * devices for a raid1 of 2 become a raid5, another layout for a raid4 become a raid5; run
   * by the reshape engine (MdArray.grow)
   */
  reshape?: { raidDisks?: number; layout?: number };
}

const err = (msg: string): TsmdError => new TsmdError('EINVAL', msg);
const levelName = (level: number): string => levelByNumber(level).name;

/** md's own refusal, as mdadm's impose_level reports it ("could not set level to raidN"). */
function kernelRefuses(devName: string, level: number, why: string): TsmdError {
  return new TsmdError('EINVAL', `${devName}: could not set level to ${levelName(level)} (md: ${why})`);
}

/** raid0's create_strip_zones: each member's sectors rounded down to the chunk. */
function roundedSizes(shape: ArrayShape): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of shape.members) if (m.slot !== null && !m.faulty) out.set(m.id, Math.floor(m.dataSectors / shape.chunkSectors) * shape.chunkSectors);
  return out;
}

/** The one zone of a raid0 md can take over (raid10/raid45_takeover_raid0), or the kernel's refusal. */
function singleZone(shape: ArrayShape, req: LevelChangeRequest): { sizes: Map<number, number>; devSectors: number } {
  const sizes = roundedSizes(shape);
  if (new Set(sizes.values()).size > 1) throw kernelRefuses(req.devName, req.level, 'cannot takeover raid0 with more than one zone');
  return { sizes, devSectors: Math.min(...sizes.values()) };
}

function parseTargetLayout(req: LevelChangeRequest, raidDisks: number): number | undefined {
  if (req.layoutText === undefined) return undefined;
  // Grow_reshape: --layout is read for the new level (r5layout, r6layout, raid10's nN/fN/oN)
  if (req.level !== 5 && req.level !== 6 && req.level !== 10) throw err('layout not meaningful with this level');
  try {
    return parseLayout(req.level, req.layoutText, req.level === 10 ? undefined : raidDisks);
  } catch {
    throw err(`layout ${req.layoutText} not understood for this level`);
  }
}

/**
 * mdadm's analyse_change + reshape_array checks for a level change, with md's takeover rules:
 * a plan for an instant takeover, null for a change that moves data (a reshape), or a
 * TsmdError with mdadm's message. Nothing here writes.
 */
export function analyseLevelChange(shape: ArrayShape, req: LevelChangeRequest): TakeoverPlan | null {
  const cur = shape.level;
  const n = shape.raidDisks;
  const to = req.level;
  const delta = req.raidDisks === undefined ? undefined : req.raidDisks - n;
  const newLayout = parseTargetLayout(req, req.raidDisks ?? n);
  const active = shape.members.filter((m) => m.slot !== null && !m.faulty);
  // Grow_reshape, before anything else: more devices need that many spares (or --force)
  const spares = shape.members.filter((m) => m.slot === null && !m.faulty).length + req.adding;
  if (req.raidDisks !== undefined && req.raidDisks > n && spares < req.raidDisks - n && !req.force) {
    const need = req.raidDisks - n;
    throw needSpares(need, spares);
  }
  const noAddTo0 = () => {
    // md's raid0 has no hot_add_disk: mdadm would change the level, then fail the add
    if (req.adding > 0) throw err(`${req.devName}: devices cannot be added to a raid0 (md's raid0 takes no spares)`);
  };
  switch (cur) {
    case -1:
      throw err(delta !== undefined ? 'Only --add is supported for LINEAR, setting --raid-disks is not needed' : 'Only --add is supported for LINEAR, other --grow options are not meaningful');
    case 1: {
      if (to > 1 && (shape.componentSectors & 7) !== 0) throw err('Cannot convert RAID1 of this size - reduce size to multiple of 4K first.');
      if (to === 0) {
        if (delta !== undefined && delta !== 0) throw err('Cannot change number of disks with RAID1->RAID0 conversion');
        noAddTo0();
        // remove_disks_for_takeover: one working copy is kept, the rest failed and removed
        const keep = active.find((m) => m.inSync);
        if (!keep) throw err(`${req.devName}: no working mirror to keep: the array cannot be taken over as raid0`);
        // raid0_takeover_raid1: one device, 64K chunk; create_strip_zones rounds its size
        const chunk = 128;
        return {
          target: { level: 0, layout: 0, chunkSectors: chunk, raidDisks: 1 },
          drop: shape.members.filter((m) => m !== keep).map((m) => m.id),
          dropBitmap: shape.bitmap,
          slotMap: new Map([[keep.slot!, 0]]),
          dataSectors: new Map([[keep.id, Math.floor(keep.dataSectors / chunk) * chunk]]),
          inSync: true,
        };
      }
      if (to === 5) {
        if (n !== 2) throw err('Can only convert a 2-device array to RAID5');
        if (delta !== undefined && 1 + delta < 1) throw err('Number of disks too small for RAID5');
        // raid5_takeover_raid1: 64K, halved until it divides the array
        let chunk = 128;
        while (chunk && shape.arraySectors & (chunk - 1)) chunk >>= 1;
        if (chunk < STRIPE_SECTORS) throw kernelRefuses(req.devName, 5, 'the array size allows no chunk size');
        if (active.length === 0) throw kernelRefuses(req.devName, 5, 'no working mirror');
        // one data disk: the layout asked for makes no difference (analyse_change), left-symmetric;
        // more devices: the raid5 of 2 is then reshaped to them (with the layout asked for)
        const target = { level: 5, layout: ALGORITHM_LEFT_SYMMETRIC, chunkSectors: chunk, raidDisks: 2 };
        const reshape = delta ? { raidDisks: n + delta, layout: newLayout } : undefined;
        return { target, drop: [], dropBitmap: false, inSync: false, wantChunkSectors: 128, reshape };
      }
      throw err('Impossibly level change request for RAID1');
    }
    case 10: {
      if (to !== 0) throw err('RAID10 can only be changed to RAID0');
      if ((shape.layout & ~0xff) !== 0x100) throw err('Cannot Grow RAID10 with far/offset layout');
      const near = shape.layout & 0xff;
      if (n % near !== 0) throw err('RAID10 layout too complex for Grow operation');
      if (delta !== undefined && delta !== n / near - n) throw err('New number of raid-devices impossible for RAID10');
      noAddTo0();
      // raid0_takeover_raid10: near=2 only
      if (shape.layout !== RAID10_NEAR2) throw kernelRefuses(req.devName, 0, `Raid0 cannot takeover layout: 0x${shape.layout.toString(16)}`);
      // remove_disks_for_takeover: the first working device of each mirror pair is kept
      const kept: typeof active = [];
      for (let slot = 0; slot < n; slot += 2) {
        const k = active.find((m) => m.inSync && (m.slot === slot || m.slot === slot + 1));
        if (!k) throw err(`${req.devName}: no working device in slots ${slot} and ${slot + 1}: the array cannot be taken over as raid0`);
        kept.push(k);
      }
      const sizes = new Map(kept.map((m) => [m.id, Math.floor(m.dataSectors / shape.chunkSectors) * shape.chunkSectors]));
      // kernel 6.1's raid0 refuses a multi-zone array without a layout (default_layout)
      if (new Set(sizes.values()).size > 1) throw kernelRefuses(req.devName, 0, 'cannot assemble multi-zone RAID0 with default_layout setting');
      return {
        target: { level: 0, layout: 0, chunkSectors: shape.chunkSectors, raidDisks: n / 2 },
        drop: shape.members.filter((m) => !kept.includes(m)).map((m) => m.id),
        dropBitmap: shape.bitmap,
        slotMap: new Map(kept.map((m) => [m.slot!, m.slot! >> 1])),
        dataSectors: sizes,
        inSync: true,
      };
    }
    case 0: {
      if (to === 10) {
        let layout = newLayout;
        let d = delta;
        if (layout === undefined && d === undefined) {
          layout = RAID10_NEAR2;
          d = n;
        }
        if (layout === undefined) {
          const copies = 1 + Math.floor(d! / n);
          if (n * (copies - 1) !== d) throw err('Impossible number of devices for RAID0->RAID10');
          layout = 0x100 + copies;
        }
        if (d === undefined) {
          const copies = layout & 0xff;
          if (layout !== 0x100 + copies) throw err('New layout impossible for RAID0->RAID10');
          d = (copies - 1) * n;
        }
        if (d > req.adding) throw needSpares(d, req.adding, true);
        // raid10_takeover_raid0 makes near=2 of twice the devices; more copies is a reshape
        if (layout !== RAID10_NEAR2 || d !== n) return null;
        const { sizes, devSectors } = singleZone(shape, req);
        return {
          target: { level: 10, layout: RAID10_NEAR2, chunkSectors: shape.chunkSectors, raidDisks: 2 * n },
          drop: [],
          dropBitmap: false,
          slotMap: new Map(active.map((m) => [m.slot!, m.slot! * 2])),
          dataSectors: new Map([...sizes.keys()].map((id) => [id, devSectors])),
          componentSectors: devSectors,
          inSync: true,
        };
      }
      if (to === 4 || to === 5) {
        // raid45_takeover_raid0 gives parity-last with the parity slot missing; another
        // layout, or more data disks, is a reshape after it
        const layout = to === 4 ? 0 : (newLayout ?? ALGORITHM_LEFT_SYMMETRIC);
        if (to === 5 && layout !== ALGORITHM_PARITY_N) return null;
        if (delta !== undefined && delta !== 1) return null;
        const { sizes, devSectors } = singleZone(shape, req);
        return {
          target: { level: to, layout: to === 4 ? 0 : ALGORITHM_PARITY_N, chunkSectors: shape.chunkSectors, raidDisks: n + 1 },
          drop: [],
          dropBitmap: false,
          dataSectors: sizes,
          componentSectors: devSectors,
          inSync: true,
        };
      }
      if (to === 6) return null;
      throw err('Impossible level change requested');
    }
    case 4:
    case 5: {
      const parityLast = cur === 4 || shape.layout === ALGORITHM_PARITY_N;
      if (to === 0) {
        if (delta !== undefined && delta !== -1) return null;
        // a raid5 of another layout is first restriped to parity-last (a reshape)
        if (!parityLast) return null;
        noAddTo0();
        // impose_level: spares removed, then every active device past the data disks failed;
        // raid0_takeover_raid45 wants exactly the parity slot missing
        const paritySlot = n - 1;
        const missing = Array.from({ length: n }, (_, s) => s).filter((s) => !active.some((m) => m.slot === s && m.inSync));
        if (missing.some((s) => s !== paritySlot)) throw kernelRefuses(req.devName, 0, `raid${cur} must have missing parity disk! (slot ${missing.find((s) => s !== paritySlot)} is missing)`);
        const dataMembers = active.filter((m) => m.slot! < paritySlot);
        return {
          target: { level: 0, layout: 0, chunkSectors: shape.chunkSectors, raidDisks: n - 1 },
          drop: shape.members.filter((m) => !dataMembers.includes(m)).map((m) => m.id),
          dropBitmap: shape.bitmap,
          dataSectors: new Map(dataMembers.map((m) => [m.id, shape.componentSectors])),
          inSync: true,
        };
      }
      if (to === 4) {
        if (cur === 4) return null;
        if (delta !== undefined && delta !== 0) return null;
        if (!parityLast) return null;
        return { target: { level: 4, layout: 0, chunkSectors: shape.chunkSectors, raidDisks: n }, drop: [], dropBitmap: false, inSync: false };
      }
      if (to === 5) {
        if (cur === 5) return null;
        // raid5_takeover of a raid4: parity-last; another layout or more devices is a reshape
        // of that raid5 (mdadm: impose_level, then the reshape)
        const layoutChange = newLayout !== undefined && newLayout !== ALGORITHM_PARITY_N;
        const reshape = layoutChange || delta ? { raidDisks: delta ? n + delta : undefined, layout: layoutChange ? newLayout : undefined } : undefined;
        const target = { level: 5, layout: ALGORITHM_PARITY_N, chunkSectors: shape.chunkSectors, raidDisks: n };
        return { target, drop: [], dropBitmap: false, inSync: false, reshape };
      }
      if (to === 6) return null;
      if (to === 1) {
        if (n !== 2) throw err('Can only convert a 2-device array to RAID1');
        if (delta !== undefined && delta !== 0) throw err('Cannot set raid_disk when converting RAID5->RAID1');
        // raid1_takeover: raid5 with two devices (any layout or chunk); not raid4
        if (cur === 4) throw kernelRefuses(req.devName, 1, 'raid1 takes over raid5 only');
        return { target: { level: 1, layout: 0, chunkSectors: 0, raidDisks: 2 }, drop: [], dropBitmap: false, inSync: false };
      }
      throw err('Impossible level change requested');
    }
    case 6:
      if (to === 4 || to === 5) return null;
      throw err('Impossible level change requested');
    default:
      throw err('No reshape is possibly for this RAID level');
  }
}

/** The array's shape for analyseLevelChange. */
export function arrayShape(arr: MdArray): ArrayShape {
  const sb = arr.sb;
  return {
    level: sb.level,
    layout: sb.layout,
    chunkSectors: sb.chunkSize,
    raidDisks: sb.raidDisks,
    componentSectors: Number(sb.size),
    arraySectors: arr.personality.arraySectors,
    bitmap: (sb.featureMap & Feature.BITMAP_OFFSET) !== 0,
    members: arr.members.map((m, id) => ({ id, slot: m.slot, inSync: inSync(m), faulty: m.faulty, dataSectors: Number(m.loaded.sb.dataSize) })),
  };
}

/** What growTakeover needs from the command line around it. */
export interface TakeoverIo {
  /** open a device given with --add (exclusive; mdadm's Manage_subdevs) */
  open: (path: string) => Promise<BlockDevice>;
  /** the --add devices, as opened paths and as the user wrote them */
  add: Array<{ path: string; shown: string }>;
  deviceUuid: () => Uint8Array;
  /** mdadm's pr_err lines ("level of /dev/md0 changed to raid5", "added /dev/sdc") */
  say: (msg: string) => void;
}

/**
 * mdadm --grow --level on a running array, when it is an instant takeover: false when it is
 * not (the caller tries the reshape paths), true when done; throws mdadm's refusals (nothing
 * written) and "failed to set chunk size" where mdadm 4.2 ends with it after the level changed.
 */
export async function growTakeover(arr: MdArray, req: LevelChangeRequest, io: TakeoverIo): Promise<boolean> {
  const md = req.devName;
  const shape = arrayShape(arr);
  const plan = analyseLevelChange(shape, req);
  if (!plan) return false;
  // md-cluster runs raid1 and raid10 only, with every node's agreement on the geometry
  if (arr.clustered) throw new TsmdError('ENOTSUP', `${md} is clustered: its level cannot change`);
  // the members the plan names by id (their index now: removals below shift the list)
  const byId = arr.members.slice();
  if (arr.isReadOnly) throw new TsmdError('EROFS', `${md} is read-only`);
  if (arr.reshapeActive) throw new TsmdError('EBUSY', `${md} is already being reshaped`);
  // mdadm's freeze(): a resync or recovery under way refuses the change
  if (arr.sync.current || arr.resyncCp !== MAX_SECTOR || arr.rebuildingSlots.length > 0)
    throw new TsmdError('EBUSY', `${md} is performing resync/recovery and cannot be reshaped`);
  // md's level_store quiesces the array; mdadm freezes sync_action for the whole change
  const wasFrozen = arr.sync.isFrozen;
  await arr.sync.setAction('frozen');
  try {
    if (plan.dropBitmap && (arr.sb.featureMap & Feature.BITMAP_OFFSET) !== 0) await arr.setBitmap('none', { devName: md });
    // mdadm first removes the spares, then fails and removes the devices md will not keep
    const drops = plan.drop.map((id) => byId[id]!);
    for (const m of [...drops.filter((x) => x.slot === null), ...drops.filter((x) => x.slot !== null)]) {
      // mdadm's SET_DISK_FAULTY on a device md is about to drop (not an error of the device)
      if (!m.faulty && m.slot !== null) await arr.failMember(m.dev.name);
      await arr.removeMember(m.dev.name);
    }
    const changes: TakeoverChanges = { inSync: plan.inSync };
    if (plan.slotMap) {
      const map = plan.slotMap;
      changes.newSlot = (m: Member) => map.get(m.slot!) ?? m.slot!;
    }
    if (plan.dataSectors) {
      const byMember = new Map([...plan.dataSectors].map(([id, s]) => [byId[id]!, s]));
      changes.dataSectorsOf = (m: Member) => byMember.get(m) ?? Number(m.loaded.sb.dataSize);
    }
    if (plan.componentSectors !== undefined) changes.componentSectors = BigInt(plan.componentSectors);
    await arr.installPersonality(plan.target, changes);
    io.say(`level of ${md} changed to ${levelName(plan.target.level)}`);
    // Manage_subdevs: the --add devices join now, as spares of the new level
    for (const a of io.add) {
      await addOne(arr, io, a.path);
      io.say(`added ${a.shown}`);
    }
    await activateSpares(arr);
    // reshape_array: the reshape the level change leads to (the engine checks it again)
    if (plan.reshape) await arr.grow({ ...plan.reshape, force: req.force, devName: md });
  } finally {
    if (!wasFrozen && !arr.isReadOnly) await arr.sync.setAction('idle');
  }
  if (plan.wantChunkSectors !== undefined && plan.wantChunkSectors !== arr.sb.chunkSize) {
    // mdadm then sets chunk_size to 64K, which md refuses when it does not divide the array
    throw new TsmdError('EINVAL', 'failed to set chunk size');
  }
  return true;
}

/**
 * md's remove_and_add_spares after mdadm unfreezes: the spares go into the empty slots in md's
 * rdev list order, the newest first (bind_rdev_to_array adds at the head): the fixture
 * raid0-to-raid10-takeover's vdd (added last) has slot 1, vdc slot 3. Recovery then runs.
 */
async function activateSpares(arr: MdArray): Promise<void> {
  if (!arr.redundant) return;
  const empty = Array.from({ length: arr.raidDisks }, (_, s) => s).filter((s) => !arr.slotMember(s));
  const spares = arr.members.filter((m) => m.slot === null && !m.faulty).reverse();
  if (empty.length === 0 || spares.length === 0) return;
  await arr.update(() => {
    for (const slot of empty) {
      const spare = spares.shift();
      if (!spare) break;
      spare.slot = slot;
      spare.recoveryOffset = 0;
      spare.bitmapGuided = false;
      arr.report.missingSlots = arr.report.missingSlots.filter((s) => s !== slot);
      arr.log(`md: recovery of slot ${slot} onto ${spare.dev.name} started`);
    }
  });
}

/**
 * mdadm --grow --raid-devices=N [--add DEV...] of a raid0 (mdadm.8: "convert the RAID0 to a
 * RAID4, add the necessary disks and make the reshape happen, and then convert the RAID4
 * back to RAID0"): md's raid45_takeover_raid0 (parity slot empty), the devices added, the
 * raid4 reshaped to N data disks with the first spare in the old parity slot (rebuilt along
 * with the reshape, as raid5_start_reshape places it) and the new parity slot left empty, and
 * raid0_takeover_raid45 when the reshape ends (mdadm's forked impose_level; the engine does it
 * in the transaction that finishes the reshape). false: not a raid0 growing.
 */
export async function growRaid0(arr: MdArray, req: { devName: string; raidDisks: number }, io: TakeoverIo): Promise<boolean> {
  const md = req.devName;
  const shape = arrayShape(arr);
  const n = shape.raidDisks;
  if (shape.level !== 0 || req.raidDisks <= n) return false;
  const d = req.raidDisks - n;
  // reshape_array: raid4 of n + d data disks from n: d spares to create a working array
  const spares = shape.members.filter((m) => m.slot === null && !m.faulty).length + io.add.length;
  if (d > spares) throw needSpares(d, spares, true);
  const { devSectors } = singleZone(shape, { devName: md, level: 4, adding: io.add.length });
  if (arr.clustered) throw new TsmdError('ENOTSUP', `${md} is clustered: its level cannot change`);
  for (const a of io.add) await addOne(arr, io, a.path);
  // the takeover to raid4 and the reshape's start are one metadata transaction (reshape.ts);
  // one spare fills the old parity slot, d - 1 join, the new parity slot stays empty (force)
  await arr.grow({
    takeover: { level: 4, layout: 0, raidDisks: n + 1, sizeSectors: devSectors },
    raidDisks: n + d + 1,
    force: true,
    then: { level: 0, layout: 0, raidDisks: n + d },
    devName: md,
  });
  io.say(`level of ${md} changed to raid4`);
  for (const a of io.add) io.say(`added ${a.shown}`);
  return true;
}

/** mdadm's Manage_subdevs for one --add device: opened, added as a spare, closed again if refused. */
async function addOne(arr: MdArray, io: TakeoverIo, path: string): Promise<void> {
  const dev = await io.open(path);
  try {
    await arr.addMember(dev, { deviceUuid: io.deviceUuid() });
  } catch (e) {
    await dev.close().catch(() => {});
    throw e;
  }
}
