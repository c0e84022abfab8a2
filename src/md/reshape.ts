/**
 * The reshape engine (md's reshape half of md_do_sync + raid5.c reshape_request, with
 * mdadm 4.2 Grow.c's choice of a new data offset so that no backup file is needed).
 *
 * What it reshapes: raid4/5/6 to more members (--raid-devices), another chunk (--chunk) or
 * another layout of the same level (--layout), forwards with the data moved to a lower data
 * offset (new_offset < 0, feature NEW_OFFSET), as mdadm 4.2 does when there is room before
 * the data; and backwards (md's reshape_backwards: from the end of the array down) for a
 * shrink (fewer members, after --array-size) or a chunk/layout change with no room before the
 * data: the data moved up (new_offset > 0) where there is room after it, else, for a shrink,
 * in place with mdadm's backup file for the critical sections (backup-file.ts). A grow with no
 * room before the data runs forwards in place once its critical section at the start has been
 * saved (to the joining spare's backup area or the backup file) and rewritten. raid10's
 * reshapes (reshape-raid10.ts) run through the same steps, on the request path, with the row
 * arithmetic of near and offset layouts. What it cannot do (raid1/0/linear, raid10 far, ...)
 * is refused at --grow with ENOTSUP and nothing written, and an
 * array found in such a reshape is assembled read-only with the reason (never written).
 *
 * The move, region by region ("step"): the view (raid/reshape-view.ts) holds writes to the
 * region, the region is read in the old geometry and written in full stripes of the new one
 * (parity computed from scratch), every member is flushed, and only then reshape_position is
 * written to every superblock; then the frontier moves and the held writes go on (to the new
 * geometry). A region's size is chosen so that the member rows it writes in the new geometry
 * end at or before the first member row that still holds data in the old geometry beyond the
 * last checkpoint (md's reshape_safe rule, computed exactly): whatever moment a crash hits,
 * the old copy of everything from the recorded position on is intact, and a region is copied
 * again from it on resume. Unlike the kernel, which checkpoints reshapes that keep the number
 * of data disks only every ~10 s (fixture raid5-chunk-stopped-stale), every step here is
 * checkpointed before the next one overwrites anything, so no kind of reshape can be left
 * with a stale checkpoint.
 *
 * At the end (md's raid5_finish_reshape + md_finish_reshape): the members' data offset moves
 * to the new one (their data size grows by as much), the superblocks carry the new geometry
 * with no reshape feature bits, and the plain personality of the new geometry takes over (the
 * array grows to its new size). An internal bitmap is set aside during the reshape (as md
 * ignores it) and written back at the end: clear when the array is in sync, all set when a
 * resync is owed (an unclean restart during the reshape).
 */
import { TsmdError } from '../errors.js';
import type { Clock } from '../env/clock.js';
import { bitmapAreaBytes } from '../format/bitmap.js';
import { Feature, type Superblock1 } from '../format/superblock.js';
import { dataDisksPerStripe, type Raid456Geometry, stripeMap } from '../raid/geometry/raid456.js';
import { genP, genPQ } from '../raid/parity/index.js';
import type { Personality } from '../raid/personality.js';
import { Scratch } from '../raid/raid456.js';
import { ReshapeView } from '../raid/reshape-view.js';
import { runLimited } from '../util/async.js';
import { raid10CannotContinue, raid10Rows, raid10Unit, startRaid10Reshape } from './reshape-raid10.js';
import { BackupFile, backupBlocks, spareBackupArea } from './backup-file.js';
import type { Member, MemberSet } from './members.js';
import type { UpdateOptions } from './metadata.js';
import type { SyncLimits } from './sync.js';
import { applyTakeover } from './level-reshape.js';

/** What the engine asks of the array (MdArray implements it in a few lines). */
export interface ReshapeHost {
  readonly sb: Superblock1;
  readonly memberSet: MemberSet;
  readonly clock: Clock;
  readonly personality: Personality;
  readonly readOnly: boolean;
  log(msg: string, level?: 'info' | 'warn' | 'error'): void;
  /** the sync speed limits in force (md: a reshape obeys speed_limit_min/max like a resync) */
  limits(): SyncLimits;
  /** the metadata transaction (md_update_sb) */
  update(mutate: () => unknown, opts?: UpdateOptions): Promise<void>;
  /** hold every write and wait for the reads in flight, run fn, let them go (mddev_suspend) */
  quiesced<T>(fn: () => Promise<T>): Promise<T>;
  /** build the personality for a superblock's geometry (a ReshapeView while RESHAPE_ACTIVE) */
  makePersonality(sb: Superblock1): Personality;
  /** install a personality (inside a quiesced section or a metadata transaction) */
  install(p: Personality): void;
  /** the runtime bitmap is set aside (start) or rebuilt from the members' (finish) */
  suspendBitmap(): void;
  /**
   * `clean`: no resync is owed, so the bits the members' bitmaps hold (written all set while
   * the reshape ran) record nothing: the bitmap starts clear, as md's in-memory one is once
   * its daemon has cleared the chunks the reshape's writes left idle
   */
  resumeBitmap(clean: boolean): void;
  /** a resync is owed (md's recovery_cp != MaxSector): the bitmap is written all set at the end */
  readonly resyncOwed: boolean;
  /** md's recovery_cp lowered to `at` (resync space): raid10's grown region is resynced */
  resyncFrom?(at: number): void;
  /** the reshape finished (superblocks written): look for other work */
  finished(): void;
  /** the array's name for messages (/dev/md0) */
  readonly devName?: string;
  /** the backup file for critical sections (mdadm --backup-file), when the data offset stays */
  readonly backup: BackupFile | null;
  /** restore a backup whose timestamp is far from the array's (mdadm's MDADM_GROW_ALLOW_OLD) */
  readonly allowOldBackup?: boolean;
  /** the array size served now (md's array_size: --array-size may have made it smaller) */
  readonly exportedSectors: number;
}

/** A --grow request: the geometry to reach (unset fields keep the current value). */
export interface ReshapeRequest {
  raidDisks?: number;
  chunkSectors?: number;
  layout?: number;
  /** mdadm --force: grow even with too few spares (the array ends degraded) */
  force?: boolean;
  /** the device name for messages (/dev/md0) */
  devName?: string;
  /**
   * A level change first (md's level_store, which mdadm's --grow --level does before the
   * reshape, level-reshape.ts): the geometry the array takes over in place (raid5 as raid6
   * *_6 with the Q slot empty, raid0 as raid5 parity-last with the parity slot empty) and
   * the reshape starts from; both are recorded in the one transaction that starts it.
   */
  takeover?: TakeoverGeometry;
  /** A level change once the reshape is done (mdadm's forked impose_level; level-reshape.ts). */
  then?: TakeoverGeometry;
  /**
   * mdadm --backup-file: where the data offset cannot move, the critical sections are saved
   * there (the engine uses host.backup; this only says that one was given)
   */
  backupFile?: boolean;
  /** Run once the reshape is done (raid5 -> raid0: takeover.ts's raid0_takeover_raid45). */
  whenDone?: () => Promise<void>;
  /** what mdadm prints on stderr while it starts the reshape ("Need to backup ...K of critical section..") */
  notice?: (msg: string) => void;
}

/** The geometry a takeover installs (data stays where it is). */
export interface TakeoverGeometry {
  level: number;
  layout: number;
  raidDisks: number;
  /** component size (md's dev_sectors): set when the old level had none (raid0) */
  sizeSectors?: number;
}

export interface ReshapeProgress {
  /** per-member sectors done and in all, as /proc/mdstat counts a reshape */
  doneSectors: number;
  totalSectors: number;
  speedKiBs: number;
  windowSectors: number;
  windowSeconds: number;
}

const F_RESHAPE = Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET | Feature.RESHAPE_BACKWARDS;

/** The largest region moved between two checkpoints (array sectors): writes there wait that long. */
const MAX_STEP_SECTORS = 2048 * 64;
/** The largest critical section (array sectors): mdadm's 16 MiB cap on its backup unit. */
const MAX_CRITICAL_SECTORS = 2048 * 16;
/** One read-old / write-new piece (array sectors, whole new stripes), and pieces in flight. */
const PIECE_TARGET_SECTORS = 2048 * 4;
const PIECE_PARALLEL = 4;

function levelIs456(level: number): level is 4 | 5 | 6 {
  return level === 4 || level === 5 || level === 6;
}

function dataDisks(level: number, layout: number, disks: number, chunk: number): number {
  // raid10: member rows advance as if disks/near chunks were striped (reshape-raid10.ts)
  if (level === 10) return raid10Rows(layout, disks).dataDisks;
  if (!levelIs456(level)) throw new TsmdError('ENOTSUP', `raid${level} is not reshaped by tsmd`);
  return dataDisksPerStripe({ level, layout, raidDisks: disks, chunkSectors: chunk });
}

/**
 * Why tsmd cannot continue the reshape recorded in this superblock (null: it can). Such an
 * array is assembled read-only, as mdadm refuses to continue what it cannot do safely.
 */
export function cannotContinue(sb: Superblock1, members: readonly Member[]): string | null {
  if ((sb.featureMap & Feature.RESHAPE_ACTIVE) === 0) return null;
  if (sb.level === 10) return raid10CannotContinue(sb, members);
  if (!levelIs456(sb.level) || sb.newLevel !== sb.level)
    return `the reshape from raid${sb.level} to raid${sb.newLevel} is not supported by tsmd's reshape engine (raid4/5/6 grow, chunk and layout changes are)`;
  if ((sb.featureMap & Feature.CLUSTERED) !== 0) return 'the array is clustered: md-cluster reshapes are not supported';
  const back = isBackwards(sb);
  const maxChunk = Math.max(sb.chunkSize, sb.newChunk);
  for (const m of members) {
    if (m.faulty || m.slot === null) continue;
    const behind = rebuildBehind(m);
    if (behind !== null) return behind;
    if ((sb.featureMap & Feature.NEW_OFFSET) === 0) continue; // in place: the backup file covers it
    const own = m.loaded.sb;
    const shift = (own.featureMap & Feature.NEW_OFFSET) !== 0 ? own.newOffset : sb.newOffset;
    if (back ? shift < maxChunk : shift >= 0 || -shift < maxChunk)
      return `new offset ${shift} of ${m.dev.name} leaves no room to move a ${maxChunk}-sector chunk ${back ? 'backwards' : 'forwards'}`;
  }
  return null;
}

/**
 * A member rebuilt along with the reshape (raid5.c: not In_sync, recovery_offset set while
 * RESHAPE_ACTIVE; reshape_request raises it with the reshape so that it follows
 * reshape_position): missing in the old geometry, in sync below its recovery_offset in the
 * new one. The engine continues that; not a replacement built during a reshape.
 */
function rebuildBehind(m: Member): string | null {
  if (m.recoveryOffset !== null && m.replacement) return `${m.dev.name} replaces a member during the reshape: not supported by tsmd`;
  return null;
}

/**
 * md's reshape_backwards: a shrink always runs backwards (update_raid_disks), and a reshape
 * that keeps the number of devices does when its superblock says so (RESHAPE_BACKWARDS, which
 * md writes only when delta_disks is 0: super_1_sync).
 */
export function isBackwards(sb: Superblock1): boolean {
  return sb.deltaDisks < 0 || (sb.featureMap & Feature.RESHAPE_BACKWARDS) !== 0;
}

/**
 * The reshape keeps the data offset, so its critical sections go through a backup file
 * (mdadm Assemble.c: reshape_active without RESHAPE_NO_BACKUP and delta_disks <= 0 needs
 * --backup-file to assemble).
 */
export function needsBackupFile(sb: Superblock1): boolean {
  return (sb.featureMap & Feature.RESHAPE_ACTIVE) !== 0 && (sb.featureMap & Feature.NEW_OFFSET) === 0 && levelIs456(sb.level) && sb.deltaDisks <= 0;
}

/**
 * A grow that keeps the data offset (mdadm's "old way", no room before the data): only its
 * first stretch, the critical section, rewrites rows still holding data not yet moved; it goes
 * through a backup (a spare joining the array, or --backup-file), then the reshape runs
 * forwards in place (the new rows advance slower than the old ones).
 */
export function isInPlaceGrow(sb: Superblock1): boolean {
  return (sb.featureMap & Feature.RESHAPE_ACTIVE) !== 0 && (sb.featureMap & Feature.NEW_OFFSET) === 0 && levelIs456(sb.level) && sb.deltaDisks > 0;
}

/**
 * The end of a grow's critical section in place (array sectors): the first multiple of both
 * stripes (mdadm's compute_backup_blocks) from which the engine's next step, one new stripe of
 * the larger chunk, writes only rows already moved (its reshape_safe rule with no offset
 * shift). mdadm's Grow_restart computes the same point ("last_block") to tell whether a
 * restart still needs the backup.
 */
export function growCriticalSectors(oldD: number, newD: number, oldC: number, newC: number): number {
  if (!(newD > oldD)) throw new TsmdError('EINVAL', `a grow in place adds data disks (${oldD} -> ${newD})`);
  const lcm = backupBlocks(oldC, newC, oldD, newD);
  const unit = Math.max(oldC, newC) * newD;
  for (let c = lcm; ; c += lcm) {
    const maxEnd = Math.floor(rowOf(c, oldD, oldC) / newC) * newC * newD;
    if (maxEnd - c >= unit) return c;
  }
}

/** growCriticalSectors of the reshape a superblock records. */
export function growCriticalOf(sb: Superblock1): number {
  const oldD = dataDisks(sb.level, sb.layout, sb.raidDisks - sb.deltaDisks, sb.chunkSize);
  const newD = dataDisks(sb.newLevel, sb.newLayout, sb.raidDisks, sb.newChunk);
  return growCriticalSectors(oldD, newD, sb.chunkSize, sb.newChunk);
}

/**
 * How many slots the members occupy: during a shrink the leaving members keep their roles
 * (md sizes conf->disks by the larger of raid_disks and previous_raid_disks).
 */
export function slotCount(sb: Superblock1): number {
  return (sb.featureMap & Feature.RESHAPE_ACTIVE) !== 0 ? Math.max(sb.raidDisks, sb.raidDisks - sb.deltaDisks) : sb.raidDisks;
}

/**
 * At assembly: members whose superblock missed the last reshape transaction (one event
 * behind, as a crash in the middle of md_update_sb leaves them) get the member fields that
 * transaction wrote to the others, so every member agrees with the freshest superblock:
 *  - the start: new_offset (tsmd and mdadm move every member's data offset by as much);
 *  - the end: the data offset already moved (data_offset + new_offset), no new_offset.
 */
export function settleReshapeOffsets(fresh: Superblock1, members: readonly Member[]): void {
  const active = (fresh.featureMap & Feature.RESHAPE_ACTIVE) !== 0 && (fresh.featureMap & Feature.NEW_OFFSET) !== 0;
  // a member rebuilt along with the reshape whose superblock missed the last checkpoint (the
  // checkpoint does not bump events): the new stripes below reshape_position were flushed to
  // every member before any superblock recorded it, so its recovery_offset is at least the
  // member row of reshape_position (md's end_reshape takes it as complete at the end, too)
  if (active && (fresh.featureMap & Feature.RESHAPE_BACKWARDS) === 0 && levelIs456(fresh.newLevel)) {
    const newD = dataDisks(fresh.newLevel, fresh.newLayout, fresh.raidDisks, fresh.newChunk);
    const row = rowEnd(Number(fresh.reshapePosition), newD, fresh.newChunk);
    for (const m of members) if (m.recoveryOffset !== null && !m.replacement && !m.faulty && m.slot !== null && m.recoveryOffset < row) m.recoveryOffset = row;
  }
  for (const m of members) {
    const own = m.loaded.sb;
    if (own.events === fresh.events) continue;
    const ownActive = (own.featureMap & Feature.RESHAPE_ACTIVE) !== 0 && (own.featureMap & Feature.NEW_OFFSET) !== 0;
    if (active && !ownActive) own.newOffset = fresh.newOffset;
    else if (!active && ownActive && own.newOffset !== 0) {
      own.dataOffset = BigInt(Number(own.dataOffset) + own.newOffset);
      own.dataSize = BigInt(Number(own.dataSize) - own.newOffset);
      own.newOffset = 0;
    }
  }
}

/** Sectors free before the data on this member (after the superblock, bitmap and bad-block log). */
export function roomBefore(m: Member): number {
  const sb = m.loaded.sb;
  const superOff = Number(sb.superOffset);
  const dataOff = Number(sb.dataOffset);
  if (superOff >= dataOff) return dataOff; // v1.0: the superblock is at the end
  let end = superOff + 8;
  if ((sb.featureMap & Feature.BITMAP_OFFSET) !== 0) {
    const b = m.bitmaps[0];
    if (!b) return 0; // a bitmap we could not read: keep away from it
    end = Math.max(end, superOff + sb.bitmapOffset + bitmapAreaBytes(b.nbits) / 512 * Math.max(1, m.bitmaps.length));
  }
  if (sb.bblogSize > 0 && sb.bblogOffset > 0) end = Math.max(end, superOff + sb.bblogOffset + sb.bblogSize);
  return Math.max(0, dataOff - end);
}

/**
 * mdadm --grow's checks for raid4/5/6 and the start of the reshape (md's raid5_check_reshape +
 * raid5_start_reshape, with the new data offset mdadm 4.2 chooses). Throws mdadm's message and
 * writes nothing when the request is refused. Returns false when nothing changes.
 */
export async function startReshape(host: ReshapeHost, req: ReshapeRequest): Promise<boolean> {
  const sb = host.sb;
  const md = req.devName ?? 'the array';
  if (sb.level === 10 && !req.takeover) return startRaid10Reshape(host, req, roomBefore);
  // the geometry the reshape starts from: the array's, or the one a level change installs first
  const t = req.takeover;
  const cur = t ? { ...sb, level: t.level, layout: t.layout, raidDisks: t.raidDisks, size: BigInt(t.sizeSectors ?? Number(sb.size)) } : sb;
  if (!levelIs456(cur.level)) throw new TsmdError('ENOTSUP', `${md}: reshaping raid${cur.level} is not supported yet by tsmd (raid4/5/6 --raid-devices, --chunk, --layout are)`);
  if ((sb.featureMap & Feature.CLUSTERED) !== 0) throw new TsmdError('ENOTSUP', `${md} is clustered: md-cluster reshapes are not supported by tsmd`);
  const disks = req.raidDisks ?? cur.raidDisks;
  const chunk = req.chunkSectors ?? cur.chunkSize;
  const layout = req.layout ?? cur.layout;
  if (disks === cur.raidDisks && chunk === cur.chunkSize && layout === cur.layout) return false;
  const minDisks = cur.level === 6 ? 4 : 2;
  if (disks < minDisks) throw new TsmdError('EINVAL', `${md}: raid${cur.level} needs at least ${minDisks} devices`);
  if (chunk < 8 || (chunk & (chunk - 1)) !== 0) throw new TsmdError('EINVAL', `invalid chunk size ${chunk / 2}K`);
  if (Number(cur.size) % chunk !== 0)
    throw new TsmdError('EINVAL', `component size ${Number(cur.size) / 2}K is not a multiple of the new chunk size ${chunk / 2}K`);
  // mdadm Grow_reshape: the new geometry must hold the array as it is served now
  if (arraySizeKiB(cur, disks, chunk, layout) * 2 < host.exportedSectors)
    throw new TsmdError('EINVAL', `this change will reduce the size of the array.\n       use --grow --array-size first to truncate array.\n       e.g. mdadm --grow ${md} --array-size ${arraySizeKiB(cur, disks, chunk, layout)}`);
  const oldD = dataDisks(cur.level, cur.layout, cur.raidDisks, cur.chunkSize);
  const newD = dataDisks(cur.level, layout, disks, chunk);
  const delta = disks - cur.raidDisks;
  // the slots of the takeover's new parity/Q (empty): md's raid5_start_reshape adds spares to
  // empty slots first, and one below the old raid_disks is rebuilt along with the reshape
  // (recovery_offset 0) while one above is In_sync (the reshape fills it)
  const holes = t ? Array.from({ length: t.raidDisks - sb.raidDisks }, (_, i) => sb.raidDisks + i) : [];
  const need = holes.length + Math.max(0, delta);
  const spares = host.memberSet.list.filter((m) => m.slot === null && !m.faulty);
  if (spares.length < need && !req.force)
    throw needSpares(need, spares.length);
  const filling = spares.slice(0, holes.length);
  const joining = spares.slice(holes.length, need);
  const moving = [...host.memberSet.list.filter((m) => m.slot !== null && !m.faulty), ...filling, ...joining];
  const maxChunk = Math.max(chunk, sb.chunkSize);
  const plan = planOffset(host, { md, delta, maxChunk, oldD, newD, oldChunk: sb.chunkSize, newChunk: chunk, moving, backupFile: !!req.backupFile });
  const shift = plan.shift;
  for (const m of joining) {
    if (Number(m.loaded.sb.dataSize) < Number(sb.size)) throw new TsmdError('ENOSPC', `${m.dev.name} is too small to join ${md}`);
  }
  // mdadm: "Need to backup 384K of critical section.." where the number of data disks changes
  // (Grow.c only enlarges its unit when it stays), then the backup is made
  const backupNeed = plan.backup && newD !== oldD ? `Need to backup ${plan.backupBlocks / 2}K of critical section..` : null;
  const say = (msg: string): void => {
    host.log(`mdadm: ${msg}`);
    req.notice?.(msg);
  };
  // a grow in place: its critical section saved to a spare joining the array (or the file)
  let critical: { sectors: number; dest: BackupFile } | null = null;
  if (plan.backup && delta > 0) {
    if (t) throw new TsmdError('ENOTSUP', `${md}: a level change with no room to move the data offset is not supported yet by tsmd`);
    const sectors = growCriticalSectors(oldD, newD, sb.chunkSize, chunk);
    // Grow.c: "Something wrong - reshape aborted" when the backup is half a member or more
    if (sectors >= Number(cur.size) / 2) throw new TsmdError('EINVAL', `${md}: Something wrong - reshape aborted`);
    if (backupNeed) say(backupNeed);
    const spare = joining[0];
    if (!host.backup && !spare) throw new TsmdError('EINVAL', `${md}: Cannot grow - need a spare or backup-file to backup critical section`);
    const area = spare ? spareBackupArea(Number(spare.loaded.sb.dataOffset), Number(cur.size), sectors) : null;
    const dest = host.backup ?? new BackupFile(spare!.dev, sb.setUuid, () => Math.floor(host.clock.wallMs() / 1000), area);
    if (dest.capacitySectors < sectors) throw new TsmdError('ENOSPC', `${md}: the backup file ${dest.name} holds ${dest.capacitySectors} sectors: the critical section needs ${sectors}`);
    await dest.initialise(sectors);
    critical = { sectors, dest };
  } else if (plan.backup) {
    if (!host.backup) throw new TsmdError('EINVAL', `${backupNeed ? `${backupNeed}\n` : ''}${md}: Cannot grow - need backup-file\n Please provide one with "--backup=..."`);
    if (backupNeed) say(backupNeed);
    await host.backup.initialise(plan.backupBlocks);
  }
  await host.quiesced(async () => {
    await host.personality.flush();
    // the critical section is saved before any superblock says the reshape started, so a
    // restart always finds it (mdadm's Grow_restart: "Failed to find backup of critical section")
    const saved = critical ? new Uint8Array(critical.sectors * 512) : null;
    if (saved && critical) {
      await host.personality.read(saved, 0);
      await critical.dest.save(0, saved);
    }
    await host.update(() => {
      if (t) {
        // md's level_store (the takeover) in the same transaction as the reshape's start
        sb.level = t.level;
        sb.layout = t.layout;
        sb.size = cur.size;
        sb.featureMap &= ~Feature.RAID0_LAYOUT;
      }
      filling.forEach((m, i) => {
        m.slot = holes[i]!;
        m.recoveryOffset = 0; // raid5_start_reshape: below previous_raid_disks, rebuilt with the reshape
      });
      joining.forEach((m, i) => {
        m.slot = cur.raidDisks + i;
        m.recoveryOffset = null; // md's raid5_start_reshape: a new member is In_sync, the reshape fills it
      });
      for (const m of moving) m.loaded.sb.newOffset = shift;
      const oldSectors = host.personality.arraySectors;
      sb.deltaDisks = delta;
      sb.raidDisks = disks;
      sb.newLevel = sb.level;
      sb.newLayout = layout;
      sb.newChunk = chunk;
      sb.newOffset = shift;
      // md's raid5_start_reshape: a backwards reshape starts at the end of the smaller geometry
      const newSectors = arraySizeKiB(sb, disks, chunk, layout) * 2;
      sb.reshapePosition = plan.backwards ? BigInt(Math.min(oldSectors, newSectors)) : 0n;
      sb.featureMap = (sb.featureMap & ~F_RESHAPE) | Feature.RESHAPE_ACTIVE;
      if (shift !== 0) sb.featureMap |= Feature.NEW_OFFSET;
      // md writes RESHAPE_BACKWARDS only when the number of devices stays (super_1_sync)
      if (plan.backwards && delta === 0) sb.featureMap |= Feature.RESHAPE_BACKWARDS;
      host.suspendBitmap();
      host.install(host.makePersonality(sb));
    });
    if (saved && critical) await growInPlaceCritical(host, saved, critical.sectors);
  });
  host.log(`md: reshape of RAID array ${md} started (${delta ? `${sb.raidDisks - delta}->${disks} devices` : ''}${chunk !== sb.chunkSize ? ` chunk ${sb.chunkSize / 2}K->${chunk / 2}K` : ''}${layout !== sb.layout ? ` layout ${sb.layout}->${layout}` : ''}${filling.length ? `, ${filling.map((m) => m.dev.name).join(' ')} rebuilt along with it` : ''}, ${plan.backup ? `in place with backup ${(critical?.dest ?? host.backup)!.name}` : `new offset ${shift}`}${plan.backwards ? ', backwards' : ''})`);
  return true;
}

/**
 * The critical section of a grow in place, still quiesced after the transaction that started
 * the reshape (its data already saved): written in the new geometry over its own old rows,
 * flushed, then checkpointed (md_update_sb); the frontier moves past it. A crash before the
 * checkpoint leaves the backup for restoreBackup() at the next assembly.
 */
async function growInPlaceCritical(host: ReshapeHost, data: Uint8Array, sectors: number): Promise<void> {
  const view = host.personality;
  if (!(view instanceof ReshapeView)) throw new TsmdError('EINVAL', 'no reshape view after the start of a reshape');
  await view.newGeo.write(data, 0);
  await view.flush();
  await host.update(() => {
    host.sb.reshapePosition = BigInt(sectors);
  }, { bump: false });
  view.advance(sectors);
}

/**
 * Where the new geometry goes (mdadm 4.2's set_new_data_offset, or a backup file when the
 * offset cannot move):
 *  - a grow moves the data down (room before the data; the new rows advance slower than the
 *    old, so a few chunks are enough and room is left for a later reshape);
 *  - a shrink moves it up by mdadm's min_offset_change (backup_blocks / old data disks) when
 *    that much room is free after the data and no --backup-file was given (mdadm then tries
 *    the offset first), else it keeps the offset and runs with the backup file; it runs
 *    backwards (the new rows advance faster than the old);
 *  - a chunk or layout change moves the data down by all the room before it (every step can
 *    be no longer than the distance moved), or, with no room before, up by all the room after
 *    it, backwards.
 */
function planOffset(
  host: ReshapeHost,
  o: { md: string; delta: number; maxChunk: number; oldD: number; newD: number; oldChunk: number; newChunk: number; moving: Member[]; backupFile: boolean },
): { shift: number; backwards: boolean; backup: boolean; backupBlocks: number } {
  const blocks = backupBlocks(o.oldChunk, o.newChunk, o.oldD, o.newD);
  const before = Math.min(...o.moving.map(roomBefore));
  const after = Math.min(...o.moving.map((m) => roomAfter(m, Number(host.sb.size))));
  const chunksBefore = Math.floor(before / o.maxChunk);
  if (o.delta > 0) {
    // mdadm tries a new offset unless a backup file was given; with no room, the old way
    if (!o.backupFile && chunksBefore >= 1) return { shift: -Math.min(chunksBefore, 4) * o.maxChunk, backwards: false, backup: false, backupBlocks: blocks };
    return { shift: 0, backwards: false, backup: true, backupBlocks: blocks };
  }
  if (o.delta < 0) {
    const min = Math.max(Math.ceil(blocks / o.oldD / o.maxChunk) * o.maxChunk, o.maxChunk);
    if (!o.backupFile && after >= min) return { shift: min, backwards: true, backup: false, backupBlocks: blocks };
    return { shift: 0, backwards: true, backup: true, backupBlocks: blocks };
  }
  // mdadm tries a new offset unless a backup file was given; with no room either side (or a
  // file given) the change runs forwards in place, every step a critical section in the file
  if (!o.backupFile && chunksBefore >= 1) return { shift: -chunksBefore * o.maxChunk, backwards: false, backup: false, backupBlocks: blocks };
  const chunksAfter = Math.floor(after / o.maxChunk);
  if (!o.backupFile && chunksAfter >= 1) return { shift: chunksAfter * o.maxChunk, backwards: true, backup: false, backupBlocks: blocks };
  return { shift: 0, backwards: false, backup: true, backupBlocks: blocks };
}

/**
 * Sectors free after the data on this member (md's rdev->sectors - dev_sectors: what the
 * data may move up by; md's new_offset_store refuses more with E2BIG). data_size ends before
 * a 1.0 superblock and its bitmap.
 */
function roomAfter(m: Member, componentSectors: number): number {
  return Math.max(0, Number(m.loaded.sb.dataSize) - componentSectors);
}

/**
 * mdadm's refusal when a change has fewer spares than it needs (Grow.c): "to avoid degraded
 * array" where --force may override it, "to create working array" where it may not. One text
 * for every --grow path (reshape, raid10, raid1 mirrors, level changes, takeovers).
 */
export function needSpares(need: number, have: number, working = false): TsmdError {
  const s = need === 1 ? '' : 's';
  return new TsmdError(
    'EINVAL',
    working
      ? `Need ${need} spare${s} to create working array, and only have ${have}.`
      : `Need ${need} spare${s} to avoid degraded array, and only have ${have}.\n       Use --force to over-ride this check.`,
  );
}

/** The array size in KiB the geometry would have (mdadm's --array-size hint). */
function arraySizeKiB(sb: Pick<Superblock1, 'level' | 'size'>, disks: number, chunk: number, layout: number): number {
  const d = dataDisks(sb.level, layout, disks, chunk);
  return Math.floor(Number(sb.size) / chunk) * chunk * d / 2;
}

/**
 * The first member row (sector relative to data_offset) holding data of array sector s or
 * later. A stripe of dataDisks chunks fills `height` chunk rows (1, or raid10 offset's far
 * copies); s is taken at its chunk (raid10 near copies of a chunk may straddle two rows, and
 * their first row is that of the chunk's first copy).
 */
function rowOf(s: number, dataDisks: number, chunk: number, height = 1): number {
  // (a fraction of data disks for raid10 near: a quotient that is a whole number stays one)
  return Math.floor(Math.floor(s / chunk) / dataDisks + 1e-9) * chunk * height;
}

/** The member row just past every copy of array sectors below s (the rows of its chunks' stripes). */
function rowEnd(s: number, dataDisks: number, chunk: number, height = 1): number {
  return Math.ceil(Math.ceil(s / chunk) / dataDisks - 1e-9) * chunk * height;
}

/**
 * One running reshape: moves the frontier from reshape_position to the end, a checkpointed
 * step at a time. run() resolves when the reshape is finished, paused (frozen) or stopped.
 */
export class ReshapeEngine {
  private running: Promise<void> | null = null;
  private stopping = false;
  private frozenNow = false;
  private startedMs = 0;
  private startedAt = 0;
  private readonly samples: Array<[number, number]> = [];
  /** every finished reshape resolves the waiters (mdadm --wait) */
  private waiters: Array<() => void> = [];
  done = false;
  lastError: Error | null = null;
  /** the last reshape this engine finished: array sectors it moved and how long that took */
  lastRun: { movedSectors: number; elapsedMs: number } | null = null;
  /**
   * A level change once the reshape is done (raid6 -> raid5: drop Q; level-reshape.ts), as
   * mdadm's forked process imposes it after waiting for the reshape. Not on disk (neither is
   * mdadm's process): a restart forgets it.
   */
  afterFinish: TakeoverGeometry | null = null;
  /** Run after the reshape is done (mdadm's forked process, level-reshape.ts); not on disk either. */
  whenDone: (() => Promise<void>) | null = null;

  constructor(private readonly host: ReshapeHost) {}

  get view(): ReshapeView {
    const p = this.host.personality;
    if (!(p instanceof ReshapeView)) throw new TsmdError('EINVAL', 'no reshape in progress');
    return p;
  }

  get frozen(): boolean {
    return this.frozenNow;
  }

  get active(): boolean {
    return this.running !== null;
  }

  private geo() {
    const sb = this.host.sb;
    const oldDisks = sb.raidDisks - sb.deltaDisks;
    const oldD = dataDisks(sb.level, sb.layout, oldDisks, sb.chunkSize);
    const newD = dataDisks(sb.newLevel, sb.newLayout, sb.raidDisks, sb.newChunk);
    // the member whose data moves the least bounds every step: the closest to the old rows
    const back = isBackwards(sb);
    const inPlace = (sb.featureMap & Feature.NEW_OFFSET) === 0;
    let shift = back ? Infinity : -Infinity;
    for (const m of this.host.memberSet.list) {
      if (m.faulty || m.slot === null || inPlace) continue;
      const own = (m.loaded.sb.featureMap & Feature.NEW_OFFSET) !== 0 ? m.loaded.sb.newOffset : sb.newOffset;
      shift = back ? Math.min(shift, own) : Math.max(shift, own);
    }
    if (!Number.isFinite(shift)) shift = inPlace ? 0 : sb.newOffset;
    // raid10 moves whole chunks (a near stripe is a fraction of a row) or whole stripes of an
    // offset layout, and whole old chunks (reshape-raid10.ts raid10Unit); md counts its
    // progress in array sectors (raid10's resync space)
    const r10 = sb.level === 10;
    const oldH = r10 ? raid10Rows(sb.layout, oldDisks).height : 1;
    const newH = r10 ? raid10Rows(sb.newLayout, sb.raidDisks).height : 1;
    const unit = r10 ? raid10Unit(sb) : Math.max(sb.chunkSize, sb.newChunk) * newD;
    return { oldD, newD, oldC: sb.chunkSize, newC: sb.newChunk, oldH, newH, shift, unit, perMember: r10 ? 1 : newD, bulk: !r10, inPlace };
  }

  /** progress as /proc/mdstat shows it (per-member sectors of the new geometry) */
  progress(): ReshapeProgress | null {
    if ((this.host.sb.featureMap & Feature.RESHAPE_ACTIVE) === 0) return null;
    const v = this.host.personality;
    if (!(v instanceof ReshapeView)) return null;
    const g = this.geo();
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    const speed = first && last && last[0] > first[0] ? ((last[1] - first[1]) / 2 / ((last[0] - first[0]) / 1000)) : 0;
    const done = v.backwards ? v.arraySectors - v.position : v.position;
    return {
      doneSectors: Math.floor(done / g.perMember),
      totalSectors: g.perMember === 1 ? Math.min(v.oldGeo.arraySectors, v.newGeo.arraySectors) : Number(this.host.sb.size),
      speedKiBs: speed / g.perMember,
      windowSectors: first && last ? Math.floor((last[1] - first[1]) / g.perMember) : 0,
      windowSeconds: first && last ? Math.max(1, Math.round((last[0] - first[0]) / 1000)) : 1,
    };
  }

  /** Start (or resume) moving in the background; no-op when running, frozen or done. */
  kick(): void {
    if (this.running || this.frozenNow || this.stopping || this.host.readOnly) return;
    if ((this.host.sb.featureMap & Feature.RESHAPE_ACTIVE) === 0) return;
    this.running = this.loop()
      .catch((e: unknown) => {
        this.lastError = e as Error;
        this.host.log(`md: reshape stopped: ${(e as Error).message}`, 'error');
      })
      .finally(() => {
        this.running = null;
        if (!this.frozenNow) for (const w of this.waiters.splice(0)) w();
      });
  }

  /** md's sync_action frozen: the current step finishes (and is checkpointed), then it pauses. */
  async freeze(): Promise<void> {
    this.frozenNow = true;
    await this.running;
  }

  /** sync_action idle: go on */
  thaw(): void {
    this.frozenNow = false;
    this.kick();
  }

  /** The array stops: the current step finishes and is checkpointed. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.running;
  }

  /** Resolves when no reshape runs or is owed (mdadm --wait). */
  async wait(): Promise<void> {
    while ((this.host.sb.featureMap & Feature.RESHAPE_ACTIVE) !== 0 && !this.stopping && !this.lastError) {
      if (!this.running && this.frozenNow) return;
      await new Promise<void>((r) => {
        this.waiters.push(r);
        if (!this.running) this.kick();
      });
      if (!this.running && (this.frozenNow || this.lastError)) return;
    }
  }

  private async loop(): Promise<void> {
    const host = this.host;
    const view = this.view;
    const g = this.geo();
    const back = view.backwards;
    const oldSize = view.oldGeo.arraySectors;
    // raid10 moves what the array holds (md's resync_max_sectors: the old size) and resyncs
    // the grown region at the end (raid10_finish_reshape); raid4/5/6 write it in the new stripes
    const total = this.host.sb.level === 10 ? Math.min(oldSize, view.newGeo.arraySectors) : view.newGeo.arraySectors;
    this.startedMs = host.clock.nowMs();
    this.startedAt = view.position;
    this.samples.length = 0;
    this.samples.push([this.startedMs, view.position]);
    if (back) await this.loopBackwards(view, g, oldSize);
    else await this.loopForwards(view, g, total, oldSize);
    if (back ? view.position > 0 : view.position < total) return;
    await this.finish(view);
    const after = this.whenDone;
    this.whenDone = null;
    if (after) await after().catch((e: unknown) => host.log(`md: the level change after the reshape failed: ${(e as Error).message}`, 'error'));
  }

  /**
   * Forwards: one step is copied while the previous one is being checkpointed (its flush and
   * superblock write); the steps are sized against the last checkpoint on disk, so a crash
   * while both are in flight resumes from there with the old copy of everything above intact.
   */
  private async loopForwards(view: ReshapeView, g: ReturnType<ReshapeEngine['geo']>, total: number, oldSize: number): Promise<void> {
    let durable = view.position;
    let p = view.position;
    // the checkpoint in flight (one at most)
    const ck: { pending: Promise<void> | null } = { pending: null };
    const settle = async (): Promise<void> => {
      const at = ck.pending;
      ck.pending = null;
      if (at) await at;
    };
    try {
      while (p < total && !this.stopping && !this.frozenNow) {
        if (g.inPlace && this.host.backup && !this.roomAhead(p, g)) {
          // in place with no lag to lean on (the number of data disks stays): the step is a
          // critical section through the backup file, after the previous step's checkpoint
          await settle();
          const hi = this.stepCritical(p, total, g);
          await view.hold(p, hi, true);
          await view.drainOld(true);
          const rows = rowEnd(hi, g.newD, g.newC, g.newH);
          view.rebuildRows = rows;
          await this.copyCritical(view, p, hi, oldSize);
          await this.checkpoint(view, hi, rows);
          durable = p = hi;
          this.sample(p);
          await this.throttle(p);
          continue;
        }
        const len = this.stepLength(p, durable, total, g, ck.pending !== null);
        if (len === 0) {
          // no room until the step in flight is checkpointed
          await settle();
          durable = p;
          continue;
        }
        // writes there wait while it is copied; then they go to both geometries until the
        // checkpoint moves the frontier past it (ReshapeView.markCopied)
        await view.hold(p, p + len);
        // old-geometry requests that started before the frontier last moved may still be on
        // rows this step overwrites: they finish first
        await view.drainOld();
        // members rebuilt along with the reshape get the whole new stripes of the region
        const rows = rowEnd(p + len, g.newD, g.newC, g.newH);
        view.rebuildRows = rows;
        await this.copy(view, p, len, oldSize, g.bulk ? g.newD * g.newC : g.unit, g.bulk);
        view.markCopied(p + len);
        await settle();
        durable = p;
        ck.pending = this.checkpoint(view, p + len, rows);
        p += len;
        this.sample(p);
        await this.throttle(p);
      }
      await settle();
    } catch (e) {
      // a failed step: a member rebuilt along with the reshape is good up to its recorded
      // recovery offset only
      view.rebuildRows = 0;
      throw e;
    } finally {
      // a failed step: its checkpoint in flight settles before the writes go on
      await settle().catch(() => {});
      view.release();
    }
  }

  /**
   * Backwards (a shrink, or a reshape whose data offset moves up): a step at a time from the
   * end, each checkpointed before the next; a step with no room is a critical section that
   * goes through the backup file.
   */
  private async loopBackwards(view: ReshapeView, g: ReturnType<ReshapeEngine['geo']>, oldSize: number): Promise<void> {
    while (view.position > 0 && !this.stopping && !this.frozenNow) {
      const p = view.position;
      const [lo, hi, critical] = this.stepBack(p, g);
      // a critical section rewrites its own old rows: its reads wait too
      await view.hold(lo, hi, critical);
      try {
        // reads that started before the frontier last moved may still be reading rows this
        // step overwrites: they finish first (all of them for a critical section)
        await view.drainOld(critical);
        if (critical) await this.copyCritical(view, lo, hi, oldSize);
        else await this.copy(view, lo, hi - lo, oldSize, g.bulk ? g.newD * g.newC : g.unit, g.bulk);
        // md: the data the checkpoint vouches for is on stable storage before it
        await view.flush();
        await this.host.update(() => {
          this.host.sb.reshapePosition = BigInt(lo);
        }, { bump: false });
        view.advance(lo);
      } finally {
        view.release();
      }
      this.sample(lo);
      await this.throttle(lo);
    }
  }

  /**
   * md: the data the checkpoint vouches for is on stable storage before it; then the frontier
   * moves and the writes held below it go on (to the new geometry).
   */
  private async checkpoint(view: ReshapeView, end: number, rows: number): Promise<void> {
    await view.flush();
    await this.host.update(() => {
      this.host.sb.reshapePosition = BigInt(end);
      // raid5.c reshape_request: recovery_offset follows the reshape
      for (const m of this.rebuilding()) m.recoveryOffset = Math.max(m.recoveryOffset!, rows);
    }, { bump: false });
    view.advance(end);
    view.narrow(end);
  }

  /**
   * A backwards step from p (the frontier; [p, end) is in the new geometry and checkpointed):
   * [lo, p), lo on a new stripe, as long as the new rows it writes begin at or above the last
   * old row that still holds data below p (md's reshape_safe rule, backwards). When not one
   * stripe fits (a shrink near the start of the array, or a reshape in place), the step is a
   * critical section: it goes through the backup file (as long as the file holds), and its
   * new rows may overlap its own old rows, never those of the data below it.
   */
  private stepBack(p: number, g: ReturnType<ReshapeEngine['geo']>): [number, number, boolean] {
    // whole new stripes (raid10: its unit); the new rows of [lo, p) begin at rowOf(lo)
    const S = g.bulk ? g.newD * g.newC : g.unit;
    const limitRow = rowEnd(p, g.oldD, g.oldC, g.oldH);
    const minLo = Math.max(0, Math.ceil((limitRow - g.shift) / (g.newC * g.newH)) * g.newD * g.newC);
    const bySpeed = this.host.limits().maxKiBs * 2 * g.perMember / 4;
    const cap = Math.max(g.unit, Math.min(MAX_STEP_SECTORS, bySpeed));
    const lo = Math.ceil(Math.max(minLo, p - cap, 0) / S) * S;
    if (lo < p) return [lo, p, false];
    const backup = this.host.backup;
    if (!backup) throw new TsmdError('EIO', `reshape cannot progress safely at sector ${p} without a backup file (new offset ${g.shift})`);
    // mdadm's largest backup unit (16 MiB): a larger file does not make a larger buffer
    const room = Math.floor(Math.min(backup.capacitySectors, MAX_CRITICAL_SECTORS) / S) * S;
    if (room < S) throw new TsmdError('EIO', `the backup file ${backup.name} holds ${backup.capacitySectors} sectors: less than one stripe (${S})`);
    const clo = Math.max(0, Math.ceil((p - room) / S) * S);
    if (clo > 0 && rowOf(clo, g.newD, g.newC, g.newH) + g.shift < rowEnd(clo, g.oldD, g.oldC, g.oldH))
      throw new TsmdError('EIO', `reshape step [${clo}, ${p}) would overwrite data not yet moved, even with the backup file`);
    return [clo, p, true];
  }

  /**
   * A critical section [lo, hi): read all of it in the old geometry, save it to the backup
   * file (durable, with its backup superblock), then write it in the new geometry over its
   * own old rows (mdadm's save_stripes before the kernel moves the section). A crash while it
   * is written leaves the backup for restoreBackup().
   */
  private async copyCritical(view: ReshapeView, lo: number, hi: number, oldSize: number): Promise<void> {
    const buf = new Uint8Array((hi - lo) * 512);
    const fromOld = Math.max(0, Math.min(hi - lo, oldSize - lo));
    if (fromOld > 0) await view.oldGeo.read(buf.subarray(0, fromOld * 512), lo);
    await this.host.backup!.save(lo, buf);
    // whole new stripes: full-stripe writes, nothing read from the rows being overwritten
    await view.newGeo.write(buf, lo);
  }

  /**
   * At assembly (mdadm's Grow_restart, "restoring critical section"): a backup whose region
   * is not yet recorded as reshaped is written in the new geometry, and reshape_position moves
   * past it. A backup of a region already reshaped (or an empty file) changes nothing.
   */
  async restoreBackup(backup: BackupFile | null = this.host.backup): Promise<boolean> {
    const host = this.host;
    const view = this.host.personality;
    if (!backup || !(view instanceof ReshapeView) || host.readOnly) return false;
    const bsb = await backup.load();
    if (!bsb || bsb.sections.length === 0) return false;
    const p = view.position;
    const back = view.backwards;
    const wanted = bsb.sections.filter((s) => (back ? s.arrayStart < p : s.arrayStart + s.sectors > p));
    if (wanted.length === 0) return false;
    // Grow_restart: the backup and the superblocks are written at much the same time; one
    // more than 2 hours older or 10 minutes newer than the array's update time is not this
    // reshape's (a stale file would put old data over the array)
    const utime = Number(host.sb.utime);
    if (utime > bsb.mtimeSeconds + 2 * 3600 || utime < bsb.mtimeSeconds - 600) {
      if (!host.allowOldBackup)
        throw new TsmdError('EINVAL', `too-old timestamp on backup-metadata on ${backup.name}\nIf you think it is should be safe, try 'export MDADM_GROW_ALLOW_OLD=1'\nFailed to restore critical section for reshape, sorry.`);
      host.log(`mdadm: accepting backup with timestamp ${bsb.mtimeSeconds} for array with timestamp ${utime}`, 'warn');
    }
    for (const s of wanted) await view.newGeo.write(await backup.readSection(s), s.arrayStart);
    await view.flush();
    const next = back ? Math.min(p, ...wanted.map((s) => s.arrayStart)) : Math.max(p, ...wanted.map((s) => s.arrayStart + s.sectors));
    await host.update(() => {
      host.sb.reshapePosition = BigInt(next);
    }, { bump: false });
    view.advance(next);
    host.log(`mdadm: restoring critical section (${wanted.map((s) => `${s.arrayStart}+${s.sectors}`).join(', ')} from ${backup.name})`);
    return true;
  }

  private sample(pos: number): void {
    const now = this.host.clock.nowMs();
    this.samples.push([now, pos]);
    while (this.samples.length > 2 && now - this.samples[0]![0] > 5000) this.samples.shift();
  }

  /** md's speed_max: a reshape never runs faster than the sync limit. */
  private async throttle(pos: number): Promise<void> {
    const maxKiBs = this.host.limits().maxKiBs;
    const g = this.geo();
    const doneKiB = Math.abs(pos - this.startedAt) / g.perMember / 2;
    const elapsedMs = this.host.clock.nowMs() - this.startedMs;
    const needMs = (doneKiB / maxKiBs) * 1000;
    if (needMs > elapsedMs) await this.host.clock.sleep(Math.min(1000, needMs - elapsedMs));
  }

  /**
   * The largest region from p (whole units of max(chunk) x new data disks, md's reshape unit)
   * whose new-geometry rows end at or before the first old-geometry row holding data from the
   * last checkpoint on disk (durable <= p). 0 when there is no such region while a step is
   * being checkpointed (waiting for it makes room).
   */
  private stepLength(p: number, durable: number, total: number, g: ReturnType<ReshapeEngine['geo']>, inFlight: boolean): number {
    const maxEnd = this.safeEnd(durable, g);
    let len = Math.floor((maxEnd - p) / g.unit) * g.unit;
    // under a speed limit, steps of about a quarter of a second at that speed (the throttle
    // sleeps between steps, and writes to a region wait no longer than its step); with a step
    // being checkpointed, at most half the room, so that the next one can go on meanwhile
    const bySpeed = this.host.limits().maxKiBs * 2 * g.perMember / 4;
    let cap = Math.max(g.unit, Math.min(MAX_STEP_SECTORS, bySpeed));
    if (!inFlight) cap = Math.min(cap, Math.max(g.unit, Math.floor(len / 2)));
    len = Math.min(len, cap - (cap % g.unit), total - p);
    if (len <= 0) {
      if (inFlight) return 0;
      throw new TsmdError('EIO', `reshape cannot progress safely at sector ${p} (new offset ${g.shift})`);
    }
    // the new rows written never reach the old rows still to be read
    if (rowEnd(p + len, g.newD, g.newC, g.newH) + g.shift > rowOf(durable, g.oldD, g.oldC, g.oldH) && p + len < total)
      throw new TsmdError('EIO', `reshape step at ${p} would overwrite unmoved data`);
    return len;
  }

  /**
   * md's reshape_safe rule: the end of the whole new stripes whose rows lie below the first old
   * row still holding data at or past `durable` (the checkpoint on disk); shift < 0 puts the
   * new rows below the old ones. A stripe fills newH chunk rows.
   */
  private safeEnd(durable: number, g: ReturnType<ReshapeEngine['geo']>): number {
    const limitRow = rowOf(durable, g.oldD, g.oldC, g.oldH) - g.shift;
    return Math.floor(limitRow / (g.newC * g.newH)) * g.newC * g.newD;
  }

  /** Whether one new stripe from p fits below the old rows still to be read (p checkpointed). */
  private roomAhead(p: number, g: ReturnType<ReshapeEngine['geo']>): boolean {
    return this.safeEnd(p, g) - p >= g.unit;
  }

  /**
   * A forwards critical section from p (mdadm's old way for a change that keeps the number of
   * data disks): whole units of both stripes, as many as the backup file holds (at most
   * mdadm's 16 MiB); its new rows may overlap its own old rows, never those of the data after it.
   */
  private stepCritical(p: number, total: number, g: ReturnType<ReshapeEngine['geo']>): number {
    const backup = this.host.backup!;
    const S = backupBlocks(g.oldC, g.newC, g.oldD, g.newD);
    const room = Math.floor(Math.min(backup.capacitySectors, MAX_CRITICAL_SECTORS) / S) * S;
    if (room < S) throw new TsmdError('EIO', `the backup file ${backup.name} holds ${backup.capacitySectors} sectors: less than one section (${S})`);
    const hi = Math.min(p + room, total);
    if (hi < total && rowEnd(hi, g.newD, g.newC, g.newH) + g.shift > rowOf(hi, g.oldD, g.oldC, g.oldH))
      throw new TsmdError('EIO', `reshape step [${p}, ${hi}) would overwrite data not yet moved, even with the backup file`);
    return hi;
  }

  /**
   * Read [p, p+len) in the old geometry (zeros past its end) and write it in the new, piece by
   * piece (whole new stripes). With every member there, a piece is moved in bulk (bulkPiece);
   * otherwise, or if that meets an error, through the personalities' request paths, which
   * rebuild from parity and fail members as md does.
   */
  private async copy(view: ReshapeView, p: number, len: number, oldSize: number, stripe: number, bulk: boolean): Promise<void> {
    const piece = Math.max(stripe, Math.floor(PIECE_TARGET_SECTORS / stripe) * stripe);
    const jobs: Array<() => Promise<void>> = [];
    for (let at = p; at < p + len; at += piece) {
      const n = Math.min(piece, p + len - at);
      jobs.push(async () => {
        if (bulk && this.bulkUsable(view) && n % stripe === 0) {
          try {
            await this.bulkPiece(view, at, n, oldSize);
            return;
          } catch {
            // redone below on the request path, which decides about the members
          }
        }
        const buf = new Uint8Array(n * 512);
        const fromOld = Math.max(0, Math.min(n, oldSize - at));
        if (fromOld > 0) await view.oldGeo.read(buf.subarray(0, fromOld * 512), at);
        await view.newGeo.write(buf, at);
      });
    }
    await runLimited(jobs, PIECE_PARALLEL);
  }

  /** The members rebuilt along with the reshape (md: !In_sync with a recovery_offset). */
  private rebuilding(): Member[] {
    return this.host.memberSet.list.filter((m) => m.slot !== null && !m.faulty && !m.replacement && m.recoveryOffset !== null);
  }

  private bulkUsable(view: ReshapeView): boolean {
    const rebuilt = new Set(this.rebuilding().map((m) => m.slot));
    for (let s = 0; s < view.newIo.slots; s++) if (!view.newIo.available(s) && !rebuilt.has(s)) return false;
    return true;
  }

  /**
   * One piece [at, at+n) of whole new stripes moved with one read per old member (the rows
   * that hold it) and one write per new member (its rows, parity computed here): md moves a
   * region stripe by stripe through its stripe cache; large member I/O is what makes the copy
   * run at the speed of the members. Every buffer comes from the parity arena (Scratch): the
   * reads land there directly (page-aligned memory, no bounce), the data is copied once, from
   * the old member rows straight into the new ones, and parity is computed in place.
   */
  private async bulkPiece(view: ReshapeView, at: number, n: number, oldSize: number): Promise<void> {
    const sb = this.host.sb;
    const oldG = { level: sb.level as 4 | 5 | 6, layout: sb.layout, raidDisks: sb.raidDisks - sb.deltaDisks, chunkSectors: sb.chunkSize };
    const newG = { level: sb.newLevel as 4 | 5 | 6, layout: sb.newLayout, raidDisks: sb.raidDisks, chunkSectors: sb.newChunk };
    const oldD = dataDisksPerStripe(oldG);
    const newD = dataDisksPerStripe(newG);
    const [oC, nC, B] = [oldG.chunkSectors, newG.chunkSectors, 512];
    const scratch = new Scratch();
    try {
      const fromOld = Math.max(0, Math.min(n, oldSize - at));
      const s0 = Math.floor(at / (oldD * oC));
      let bufs: Array<Uint8Array | null> = [];
      if (fromOld > 0) {
        const s1 = Math.ceil((at + fromOld) / (oldD * oC));
        const rows = (s1 - s0) * oC;
        // a member rebuilt along with the reshape is missing in the old geometry: it is not
        // read; if it held data of these stripes there, the request path rebuilds it
        const missing = Array.from({ length: oldG.raidDisks }, (_, slot) => !view.oldIo.available(slot, s0 * oC, rows));
        for (let s = s0; s < s1; s++) {
          if (stripeMap(oldG, s).dataDisks.some((d) => missing[d])) throw new TsmdError('EIO', 'old stripe degraded: moved on the request path');
        }
        bufs = missing.map((gone) => (gone ? null : scratch.alloc(rows * B, false)));
        await Promise.all(bufs.map((b, slot) => (b ? view.oldIo.read(slot, s0 * oC, b) : null)));
      }
      const t0 = at / (newD * nC);
      const t1 = (at + n) / (newD * nC);
      const out = Array.from({ length: newG.raidDisks }, () => scratch.alloc((t1 - t0) * nC * B, false));
      for (let s = t0; s < t1; s++) {
        const sm = stripeMap(newG, s);
        const base = (s - t0) * nC * B;
        const data = sm.dataDisks.map((disk) => out[disk]!.subarray(base, base + nC * B));
        data.forEach((dst, dd) => this.gather(dst, (s * newD + dd) * nC, oldSize, bufs, s0, oldG, oldD));
        const pBuf = out[sm.pDisk]!.subarray(base, base + nC * B);
        if (newG.level === 6) {
          const slots: Array<Uint8Array | null> = new Array<Uint8Array | null>(sm.syndromeSlots).fill(null);
          data.forEach((b, dd) => {
            slots[sm.qSlots[dd]!] = b;
          });
          genPQ(slots, pBuf, out[sm.qDisk]!.subarray(base, base + nC * B));
        } else genP(data, pBuf);
      }
      await Promise.all(out.map((b, slot) => view.newIo.write(slot, t0 * nC, b)));
    } finally {
      scratch.release();
    }
  }

  /**
   * Fill dst with the array data from sector a on (zeros past the old size), copied from the
   * old members' rows read into bufs (rows of old stripes s0 on).
   */
  private gather(dst: Uint8Array, a: number, oldSize: number, bufs: ReadonlyArray<Uint8Array | null>, s0: number, oldG: Raid456Geometry, oldD: number): void {
    const oC = oldG.chunkSectors;
    const end = a + dst.length / 512;
    let smStripe = -1;
    let sm: ReturnType<typeof stripeMap> | null = null;
    for (let x = a; x < end;) {
      if (x >= oldSize) {
        dst.fill(0, (x - a) * 512);
        return;
      }
      const stripe = Math.floor(x / (oldD * oC));
      if (stripe !== smStripe) [smStripe, sm] = [stripe, stripeMap(oldG, stripe)];
      const inStripe = x - stripe * oldD * oC;
      const dd = Math.floor(inStripe / oC);
      const off = inStripe - dd * oC;
      const len = Math.min(oC - off, end - x, oldSize - x);
      const so = ((stripe - s0) * oC + off) * 512;
      dst.set(bufs[sm!.dataDisks[dd]!]!.subarray(so, so + len * 512), (x - a) * 512);
      x += len;
    }
  }

  /**
   * A takeover with nothing to move (raid6 already in a *_6 layout -> raid5): md's
   * level_store through raid5_takeover_raid6, in one quiesced metadata transaction.
   */
  async takeoverNow(t: TakeoverGeometry): Promise<void> {
    const host = this.host;
    await host.quiesced(async () => {
      await host.personality.flush();
      await host.update(() => {
        applyTakeover(host.sb, host.memberSet.list, t);
        host.install(host.makePersonality(host.sb));
      });
    });
  }

  /** md's raid5_finish_reshape + md_finish_reshape: the new geometry becomes the array's. */
  private async finish(view: ReshapeView): Promise<void> {
    const host = this.host;
    const sb = host.sb;
    const allSet = host.resyncOwed;
    await host.quiesced(async () => {
      await view.hold(0, Number.MAX_SAFE_INTEGER);
      await view.drainOld();
      await host.update(() => {
        // raid5.c end_reshape: a member rebuilt along with the reshape is complete
        for (const m of this.rebuilding()) m.recoveryOffset = null;
        for (const m of host.memberSet.list) {
          const own = m.loaded.sb;
          const shift = (own.featureMap & Feature.NEW_OFFSET) !== 0 || m.slot !== null ? own.newOffset : 0;
          own.dataOffset = BigInt(Number(own.dataOffset) + shift);
          own.dataSize = BigInt(Number(own.dataSize) - shift);
          own.newOffset = 0;
        }
        // md's raid5_finish_reshape: after a shrink the members past the new raid_disks are
        // no longer in sync: they stay in the array as spares
        for (const m of host.memberSet.list) if (m.slot !== null && m.slot >= sb.raidDisks) m.slot = null;
        sb.level = sb.newLevel;
        sb.layout = sb.newLayout;
        sb.chunkSize = sb.newChunk;
        sb.deltaDisks = 0;
        sb.newOffset = 0;
        sb.reshapePosition = 0n;
        sb.featureMap &= ~F_RESHAPE;
        const then = this.afterFinish;
        this.afterFinish = null;
        if (then) {
          for (const m of applyTakeover(sb, host.memberSet.list, then)) host.log(`md: ${m.dev.name} is a spare after the change to raid${then.level}`);
          host.log(`md: level of ${host.devName ?? 'the array'} changed to raid${then.level}`);
        }
        const next = host.makePersonality(sb);
        host.install(next);
        view.retire(next);
        host.resumeBitmap(!allSet);
        // raid10_finish_reshape: recovery_cp = the old size when the array grew
        if (sb.level === 10 && next.syncSectors > view.oldGeo.syncSectors) host.resyncFrom?.(view.oldGeo.arraySectors);
      }, { bitmapBits: allSet ? 'all' : 'none' });
    });
    this.done = true;
    this.lastRun = { movedSectors: view.newGeo.arraySectors - this.startedAt, elapsedMs: host.clock.nowMs() - this.startedMs };
    host.log(`md: reshape done: ${sb.raidDisks} devices, chunk ${sb.chunkSize / 2}K, layout ${sb.layout}, ${host.personality.arraySectors / 2}K`);
    host.finished();
  }
}
