/**
 * The array core ("mddev"): it owns the array's state and drives the parts that make it up,
 * each in its own module behind a narrow interface, as md splits md.c:
 *
 *  - members.ts    the members and their flags (md's rdev list);
 *  - member-io.ts  what a personality sees of the members (data offset, replacements, errors);
 *  - assemble.ts   assembly decisions, pure over loaded superblocks (mdadm's Assemble.c);
 *  - metadata.ts   the metadata transaction (md_update_sb), the one superblock writer;
 *  - manage.ts     --fail / --remove / --add / --replace (md's hot-add/remove ioctls);
 *  - recovery.ts   the choice of the next sync job (md_check_recovery);
 *  - sync.ts       the sync engine (md_do_sync), through the SyncHost built here;
 *  - grow-bitmap.ts --grow --bitmap.
 *
 * What stays here is the request path into the personality, md_error (the one way a member
 * fails), the clean/active transitions (md's safe mode), read-error correction and the glue.
 */
import { assert, AssertionError, TsmdError } from '../errors.js';
import { bitmapBits } from '../format/bitmap.js';
import { Feature, MAX_SECTOR, Role, type Superblock1, setNameText, uuidText } from '../format/superblock.js';
import type { Clock, Timer } from '../env/clock.js';
import type { BlockDevice } from '../io/block-device.js';
import type { SyncOffload } from '../raid/offload/bulk.js';
import { type LevelDescriptor, levelByNumber } from '../raid/levels.js';
import type { LevelGeometry, MemberIo, Personality } from '../raid/personality.js';
import { ReshapeView } from '../raid/reshape-view.js';
import { giveSyncBuffer, SYNC_PARALLEL, takeSyncBuffer } from '../raid/sync-support.js';
import { KeyedLocks, runLimited } from '../util/async.js';
import { type AssemblyPlan, type AssemblyReport, type Candidate, levelText, matchesSearch, planAssembly, startDecision } from './assemble.js';
import { SyncBarrier } from './barrier.js';
import { WriteIntentBitmap } from './bitmap.js';
import { ClusterGlue, type ClusterArrayHost, FenceableDevice } from './cluster-glue.js';
import { type ClusterOps, type ClusterSetup, type RemoteSyncKind, clusterNameMismatch } from './cluster-ops.js';
import { ClusterSyncWindow } from './cluster-window.js';
import { dropBitmaps, placeBitmaps, writeNewBitmaps } from './grow-bitmap.js';
import { addMember, type AddOptions, failMember, type ManageHost, removeMember, requestReplacement } from './manage.js';
import { MemberIoAdapter, type MemberIoHost } from './member-io.js';
import { dataByteOffset, MAX_READ_ERRORS, type Member, MemberSet } from './members.js';
import { Metadata, type MetadataHost, type SyncRecordCap, type UpdateOptions } from './metadata.js';
import { planRecovery, type RecoveryHost } from './recovery.js';
import { growMirrors, growSize, linearAdd, type MirrorsRequest, type ResizeHost, type SizeRequest, type SizeResult } from './resize.js';
import { cannotContinue, growCriticalOf, isInPlaceGrow, needsBackupFile, ReshapeEngine, type ReshapeHost, type ReshapeRequest, settleReshapeOffsets, slotCount, startReshape } from './reshape.js';
import { BackupFile, spareBackupArea } from './backup-file.js';
import { bitmapMatches, loadBitmaps, loadSuperblock } from './sb-io.js';
import { DEFAULT_SYNC_LIMITS, SyncEngine, type SyncHost, type SyncLimits } from './sync.js';

export type { AssemblyReport } from './assemble.js';

/** What a takeover changes besides the geometry (md's ->takeover functions; see installPersonality). */
export interface TakeoverChanges {
  /** each active member's slot in the new geometry (md's rdev->new_raid_disk) */
  newSlot?: (m: Member) => number;
  /** a member's data sectors (md's rdev->sectors, written as data_size) */
  dataSectorsOf?: (m: Member) => number;
  /** md's dev_sectors (superblock size) */
  componentSectors?: bigint;
  /** md's recovery_cp = MaxSector ("make sure it will be not marked as dirty") */
  inSync?: boolean;
}
export { bitmapPlace } from './grow-bitmap.js';
export { DEV_FLAG_WRITEMOSTLY, MAX_READ_ERRORS, type Member } from './members.js';

/** a message from the array and how loud it is (md's printk levels, mapped onto a logger's) */
export type MdLogLevel = 'info' | 'warn' | 'error';
export type MdLog = (msg: string, level?: MdLogLevel) => void;

export interface AssembleOptions {
  /** start even when members are missing (mdadm --run) */
  run?: boolean;
  /** accept members whose events are behind (mdadm --force) */
  force?: boolean;
  readOnly?: boolean;
  /** search the devices for the members of this array (others are skipped, not refused) */
  uuid?: Uint8Array;
  /** search by array name (set_name, with or without the "homehost:" part) */
  name?: string;
  /**
   * called for messages mdadm would print (stale member left out, started degraded...) and for
   * what md prints while the array runs; level as md's printk: member failures are KERN_ALERT /
   * KERN_CRIT there ('error'), read errors KERN_WARNING-worthy ('warn'), the rest 'info'
   */
  log?: MdLog;
  /**
   * Time, injected (never a global in md/): the sync engine's speed and timers, the bitmap
   * daemon, and the wall time written as utime. The daemon and the CLI pass the system clock;
   * tests and the simulator a ManualClock.
   */
  clock: Clock;
  /**
   * The node-wide sync speed limits (default md's 1000 / 200000 KiB/s), kept by reference: a
   * change to the object reaches the array's sync at its next throttle step (SyncEngine.system)
   */
  syncLimits?: Readonly<SyncLimits>;
  /** helper threads for resync / recovery / check (raid/offload/bulk.ts); none by default */
  syncOffload?: SyncOffload | null;
  /**
   * md-cluster (the node's cluster stack): required to assemble a clustered array (bitmap
   * version 5 with more than one slot) writable; without it such an array is refused.
   */
  cluster?: ClusterSetup | null;
  /**
   * mdadm --assemble --backup-file: the backup file of a reshape that keeps the data offset
   * (a shrink in place). Without it such an array is refused unless read-only, as mdadm
   * refuses it ("Need a backup file to complete reshape of this array."). `remove` is called
   * when the reshape is done (mdadm unlinks the file then).
   */
  backupFile?: BackupFileHandle | null;
  /** restore a reshape backup whatever its timestamp (mdadm's MDADM_GROW_ALLOW_OLD) */
  allowOldBackup?: boolean;
}

/** A backup file opened by the caller (the CLI creates or opens it; md/ writes through it). */
export interface BackupFileHandle {
  dev: BlockDevice;
  remove?: () => Promise<void>;
}

export class MdArray implements MemberIoHost, ManageHost, RecoveryHost, MetadataHost, ClusterArrayHost {
  /** the members as a list (the set's own list; read-only use outside md/) */
  readonly members: Member[];
  readonly memberSet: MemberSet;
  readonly meta: Metadata;
  personality: Personality;
  private levelDesc: LevelDescriptor;
  readonly report: AssemblyReport;
  readonly readOnly: boolean;
  /** md-cluster, for a clustered array (null: a local array; see cluster-ops.ts) */
  cluster: ClusterOps | null = null;
  /** the md side of md-cluster (null for a local array) */
  private glue: ClusterGlue | null = null;
  /** this node's bitmap slot (0 for a local array) */
  bitmapSlot = 0;
  /** set when this node lost its cluster membership: no member write, every request fails */
  private fencedWhy: string | null = null;
  private dirty = false;
  private closed = false;
  private sbUpdate: Promise<void> | null = null;
  readonly log: MdLog;
  /** the reshape engine (reshape.ts); idle unless RESHAPE_ACTIVE */
  readonly reshape: ReshapeEngine;
  /** why a reshape found at assembly cannot be continued (the array is then read-only) */
  readonly reshapeStuck: string | null;
  /** md's recovery_cp: everything below is in sync (MAX_SECTOR: all of it) */
  private resyncPoint: bigint;
  readonly clock: Clock;
  readonly barrier: SyncBarrier;
  /** the write-intent bitmap at runtime (internal, non-clustered bitmaps; --grow --bitmap changes it) */
  bitmap: WriteIntentBitmap | null;
  readonly sync: SyncEngine;
  private ioCounter = 0;
  private bitmapTimer: Timer | null = null;
  private background = false;
  private correcting: Promise<void> | null = null;
  /** a member read failed and its range waits for correction (checked after every request) */
  private badReadsPending = false;
  readonly readErrorLimit = MAX_READ_ERRORS;
  /** md's "ro" mode set by --readonly on a running array (devices stay open read-write) */
  private softReadOnly = false;
  private readonly edgeLocks = new KeyedLocks();
  private inflightWrites = 0;
  private inflightReads = 0;
  private readsDrained: Array<() => void> = [];
  private writeSeq = 0;
  private cleaning: Promise<void> | null = null;
  private readonly io: MemberIoAdapter;
  /** Ranges of a slot being rebuilt onto its replacement from the others (copy fallback). */
  readonly rebuildingForReplacement = new Map<number, [number, number]>();
  /** md's array_size set by --grow --array-size (runtime only, never on disk); null: the personality's */
  private arraySizeLimit: number | null = null;
  /** mdadm's MDADM_GROW_ALLOW_OLD: a backup's timestamp is not checked at restore */
  private readonly allowOldBackup: boolean;
  /** the reshape's backup file (mdadm --backup-file), while a reshape in place runs */
  private backup: BackupFile | null = null;
  private backupRemove: (() => Promise<void>) | null = null;

  private constructor(plan: AssemblyPlan, opts: AssembleOptions) {
    const sb: Superblock1 = { ...plan.fresh, devRoles: plan.fresh.devRoles.slice() };
    this.memberSet = new MemberSet(plan.members, () => slotCount(this.meta.sb));
    this.members = this.memberSet.list;
    this.meta = new Metadata(sb, this);
    this.report = plan.report;
    this.log = opts.log ?? (() => {});
    // a reshape tsmd cannot continue: read-only, nothing written (as mdadm leaves it alone)
    this.reshapeStuck = cannotContinue(sb, plan.members);
    if (this.reshapeStuck && !opts.readOnly) this.log(`md: ${setNameText(sb)}: started read-only: ${this.reshapeStuck}`, 'warn');
    this.readOnly = !!opts.readOnly || this.reshapeStuck !== null;
    this.allowOldBackup = !!opts.allowOldBackup;
    assert(typeof opts.clock?.wallMs === 'function', 'an array is assembled with a clock');
    this.clock = opts.clock;
    this.io = new MemberIoAdapter(this, opts.syncOffload ?? null);
    if (opts.backupFile) this.useBackupFile(opts.backupFile);
    settleReshapeOffsets(sb, this.members);
    this.personality = buildPersonality(sb, this.members, this.io);
    this.levelDesc = levelByNumber(this.personality.level);
    this.reshape = new ReshapeEngine(this.reshapeHost());
    this.resyncPoint = sb.resyncOffset;
    this.bitmap = this.reshapeBlocked ? null : this.makeBitmap();
    // barrier buckets: the bitmap chunk when there is one (md's bucket is 64 MiB), else 1 MiB
    this.barrier = new SyncBarrier(Math.max(2048, Math.min(this.bitmap?.chunkSectors ?? 2048, 2048 * 64)));
    this.sync = new SyncEngine(this.syncHost(), opts.syncLimits ?? DEFAULT_SYNC_LIMITS);
  }

  // ---- assembly ----

  /**
   * Assemble from explicit devices. The array takes ownership of the devices: they are closed
   * by close(), or right away when assembly is refused.
   */
  static async assemble(devs: BlockDevice[], opts: AssembleOptions): Promise<MdArray> {
    try {
      return await MdArray.assembleInner(devs, opts);
    } catch (e) {
      await Promise.all(devs.map((d) => d.close().catch(() => {})));
      await opts.backupFile?.dev.close().catch(() => {});
      throw e;
    }
  }

  /** Read every device's superblock; with --uuid/--name, skip the devices of other arrays. */
  private static async loadCandidates(devs: BlockDevice[], opts: AssembleOptions): Promise<Candidate[]> {
    const log = opts.log ?? (() => {});
    if (devs.length === 0) throw new TsmdError('EINVAL', 'no devices given to assemble');
    const searching = opts.uuid !== undefined || opts.name !== undefined;
    const found: Candidate[] = [];
    for (const dev of devs) {
      const l = await loadSuperblock(dev);
      if (!l) {
        if (!searching) throw new TsmdError('EBADSB', `no md superblock on ${dev.name} - assembly aborted`);
        log(`no md superblock on ${dev.name}; skipping it`);
      } else if (searching && !matchesSearch(l.sb, opts)) {
        log(`${dev.name} has wrong uuid or name (array ${uuidText(l.sb.setUuid)}); skipping it`);
      } else if (l.problems.length > 0) {
        throw new TsmdError('EBADSB', `${dev.name}: superblock refused: ${l.problems.join('; ')}`);
      } else found.push({ dev, l });
    }
    if (found.length === 0) throw new TsmdError('ENODEV', `no devices found for the array with ${opts.uuid ? `uuid ${uuidText(opts.uuid)}` : `name ${opts.name}`}`);
    return found;
  }

  /**
   * The candidates' superblocks; for a clustered array, read again (a few times, briefly apart)
   * while a member the freshest superblock lists as active is more than one event behind. The
   * running nodes may be writing the superblocks while this node reads them one by one (md and
   * mdadm read them under no cluster lock): a member read before two updates and another after
   * them looks stale, and kicked, this node would run degraded beside nodes that write it
   * (simulator seed 15). A member that is really behind stays behind and is kicked as before.
   */
  private static async loadSettled(devs: BlockDevice[], opts: AssembleOptions): Promise<Candidate[]> {
    let found = await MdArray.loadCandidates(devs, opts);
    for (let round = 0; round < 5; round++) {
      const fresh = found.reduce((a, b) => (b.l.sb.events > a.l.sb.events ? b : a)).l.sb;
      if ((fresh.featureMap & Feature.CLUSTERED) === 0) break;
      const lagging = found.some(({ l }) => {
        const role = l.sb.devNumber < fresh.maxDev ? fresh.devRoles[l.sb.devNumber]! : Role.SPARE;
        return role < Role.MAX_ACTIVE && l.sb.events + 1n < fresh.events;
      });
      if (!lagging) break;
      await opts.clock.sleep(50);
      found = await MdArray.loadCandidates(devs, opts);
    }
    return found;
  }

  private static async assembleInner(devs: BlockDevice[], opts: AssembleOptions): Promise<MdArray> {
    const log = opts.log ?? (() => {});
    const plan = planAssembly(await MdArray.loadSettled(devs, opts), { force: opts.force, log });
    for (const m of plan.members) m.bitmaps = await loadBitmaps(m.dev, m.loaded).catch(() => []);
    // devices that are not members (stale, faulty, skipped) are closed now: never written
    const used = new Set(plan.members.map((m) => m.dev));
    await Promise.all(devs.filter((d) => !used.has(d)).map((d) => d.close().catch(() => {})));
    const clustered = clusterOf(plan.members);
    if (clustered && !opts.readOnly) await prepareClusterMembers(plan.members, clustered, opts.cluster ?? null, log);
    // mdadm Assemble.c: a reshape that keeps the data offset continues only with its backup file
    if (needsBackupFile(plan.fresh) && !opts.readOnly && !opts.backupFile)
      throw new TsmdError('EINVAL', 'Need a backup file to complete reshape of this array.\nPlease provided one with "--backup-file=..."');
    const arr = new MdArray(plan, opts);
    startDecision(plan, (a) => arr.personality.canRun(a), !!opts.run, log);
    // mdadm's Grow_restart: a critical section the crash left half written is restored now,
    // before any request reads it
    if (!arr.isReadOnly && arr.reshapeBlocked) {
      try {
        if (isInPlaceGrow(arr.sb)) await arr.restoreGrowCritical(!!opts.backupFile);
        else await arr.reshape.restoreBackup();
      } catch (e) {
        await arr.close().catch(() => {});
        throw e;
      }
    }
    if (clustered && !opts.readOnly) await arr.joinCluster(opts.cluster!, clustered.nodes);
    return arr;
  }

  /**
   * md_setup_cluster + join + load_bitmaps (spec §4.1): a slot and its bitmap, the other slots
   * gathered, then the array is active from the start (md_allow_write: a clustered array is
   * never marked clean, another node may be writing). Nothing is written before the join.
   */
  private async joinCluster(setup: ClusterSetup, nodes: number): Promise<void> {
    this.glue = new ClusterGlue(this);
    const sb = this.sb;
    const near = sb.layout & 0xff;
    const stripe = sb.level === 10 ? (Math.floor(sb.raidDisks / near) + (sb.raidDisks % near ? 1 : 0)) * sb.chunkSize : 0;
    const windowSectors = sb.level === 10 ? Math.max(16 * 2048, stripe) : 32 * 2048;
    const cluster = setup.create({ lockspace: lockspaceName(sb.setUuid), nodes, windowSectors }, this.glue);
    this.cluster = cluster;
    this.clusterWindow = new ClusterSyncWindow(cluster, windowSectors, this.clock);
    try {
      await cluster.join(nodes);
      this.refuseMissingActive(cluster.peers());
      this.bitmapSlot = cluster.slotNumber();
      this.bitmap = this.makeBitmap();
      await cluster.loadBitmaps(nodes);
      this.dirty = true;
      await this.meta.update(() => {});
    } catch (e) {
      await cluster.leave().catch(() => {});
      this.cluster = null;
      throw e;
    }
  }

  /**
   * A member the superblocks record as active but this node could not open, while other nodes
   * run the array: started without it, this node's first superblock write would record it as
   * gone and every node would drop it (md-cluster's check_sb_changes), a disk failed for a
   * path that is missing on one host. Refused before anything is written; the first node of
   * the cluster assembles degraded as a local array does (--run), since nobody else has it.
   */
  private refuseMissingActive(peers: number): void {
    if (peers === 0) return;
    const present = new Set(this.members.filter((m) => !m.faulty).map((m) => m.devNumber));
    const missing: string[] = [];
    this.sb.devRoles.forEach((role, dev) => {
      if (role < Role.MAX_ACTIVE && !present.has(dev)) missing.push(`device ${dev} (role ${role})`);
    });
    if (missing.length === 0) return;
    throw new TsmdError(
      'ENODEV',
      `${this.arrayName}: ${missing.join(', ')} is active on the ${peers} other node${peers > 1 ? 's' : ''} of the cluster but was not found here: ` +
        'not started, nothing written (starting without it would fail it on every node); make the shared disk visible on this host and assemble again',
    );
  }

  /** the resync window this node announces to the others (md's cluster_sync_low/high) */
  private clusterWindow: ClusterSyncWindow | null = null;

  /** The runtime bitmap from the members' internal v4 bitmaps (bits OR-ed: never less resync). */
  private makeBitmap(clean = false): WriteIntentBitmap | null {
    if ((this.sb.featureMap & Feature.BITMAP_OFFSET) === 0 || !this.redundant) return null;
    // a clustered bitmap runs once this node has its slot (joinCluster); local arrays use slot 0
    const slot = this.bitmapSlot;
    const version = this.cluster ? 5 : 4;
    const withBitmap = this.members.filter(
      (m) =>
        !m.faulty && m.slot !== null && (this.cluster !== null || m.bitmaps.length === 1) && m.bitmaps[slot] !== undefined &&
        bitmapMatches(m.bitmaps[slot]!.sup, m.loaded.sb) && m.bitmaps[slot]!.sup.version === version,
    );
    if (withBitmap.length === 0) return null;
    const fresh = withBitmap.reduce((a, b) => (b.loaded.sb.events > a.loaded.sb.events ? b : a)).bitmaps[slot]!;
    if (fresh.nbits === 0) return null;
    const bits = clean ? new Uint8Array(fresh.bits.length) : fresh.bits.slice();
    if (!clean) {
      for (const m of withBitmap) {
        const b = m.bitmaps[slot]!;
        if (b.nbits !== fresh.nbits || m.recoveryOffset !== null) continue;
        for (let i = 0; i < bits.length; i++) bits[i]! |= b.bits[i]!;
      }
    }
    return new WriteIntentBitmap(fresh.sup, fresh.nbits, bits, {
      writeArea: (sector, bytes) => this.writeBitmapArea(sector, bytes),
      flushData: () => this.personality.flush(),
    });
  }

  /** Put bitmap area bytes on every working member, then flush; a failing member goes through md_error. */
  private async writeBitmapArea(sector: number, bytes: Uint8Array): Promise<void> {
    if (this.readOnly) return;
    await Promise.all(
      this.members
        .filter((m) => !m.faulty && m.slot !== null && m.bitmaps[this.bitmapSlot] !== undefined)
        .map(async (m) => {
          try {
            await m.dev.write(bytes, (m.bitmaps[this.bitmapSlot]!.startSector + sector) * 512);
            await m.dev.flush();
          } catch (e) {
            this.mdError(m, `bitmap write failed on ${m.dev.name}: ${(e as Error).message}`);
          }
        }),
    );
  }

  // ---- what the array is ----

  /** the array-wide superblock fields (the metadata transaction's) */
  get sb(): Superblock1 {
    return this.meta.sb;
  }

  get uuid(): string {
    return uuidText(this.sb.setUuid);
  }

  get name(): string {
    return setNameText(this.sb);
  }

  get level(): number {
    return this.sb.level;
  }

  get raidDisks(): number {
    return this.sb.raidDisks;
  }

  get sizeBytes(): number {
    return this.exportedSectors * 512;
  }

  /** the array size served (md's array_sectors): the personality's, or less after --array-size */
  get exportedSectors(): number {
    const p = this.personality.arraySectors;
    return this.arraySizeLimit === null ? p : Math.min(p, this.arraySizeLimit);
  }

  /**
   * mdadm --grow --array-size (md's array_size sysfs attribute): the size the array is served
   * with, at most what the personality holds ('max': md's "default", the personality's size).
   * Runtime only: nothing is written, and an assembly starts with the full size again.
   */
  setArraySize(sectors: number | 'max'): void {
    if (this.closed) throw new TsmdError('ENODEV', 'array is stopped');
    // array_size_store: "cluster raid doesn't support change array_sectors" (EINVAL, 'default'
    // too), which mdadm reports as it reports any error but E2BIG
    if ((this.sb.featureMap & Feature.CLUSTERED) !== 0) throw new TsmdError('EINVAL', 'current kernel does not support setting --array-size');
    if (sectors === 'max') {
      this.arraySizeLimit = null;
      return;
    }
    // md's array_size_store: E2BIG, which mdadm reports so
    if (sectors > this.personality.arraySectors) throw new TsmdError('EINVAL', '--array-size setting is too large.');
    this.arraySizeLimit = sectors;
    this.log(`md: ${this.name}: array size set to ${sectors / 2}K`);
  }

  private useBackupFile(h: BackupFileHandle): void {
    this.backup = new BackupFile(h.dev, this.sb.setUuid, () => Math.floor(this.clock.wallMs() / 1000));
    this.backupRemove = h.remove ?? null;
  }

  /**
   * mdadm's Grow_restart for a grow in place: the critical section's backup is looked for in
   * the backup file given, else in the backup area of the members joining the array (Grow.c:
   * the spares it saved to), and restored if the crash left it unrecorded. Still short of the
   * critical section's end with no backup: refused, as mdadm refuses to assemble.
   */
  private async restoreGrowCritical(fileGiven: boolean): Promise<void> {
    const sb = this.sb;
    const end = growCriticalOf(sb);
    let from = this.backup;
    const oldDisks = sb.raidDisks - sb.deltaDisks;
    for (const m of from ? [] : this.members) {
      if (m.faulty || m.slot === null || m.slot < oldDisks) continue;
      const at = spareBackupArea(Number(m.loaded.sb.dataOffset), Number(sb.size), end);
      const b = new BackupFile(m.dev, sb.setUuid, () => Math.floor(this.clock.wallMs() / 1000), at);
      // like Grow_restart, a device without a good backup superblock is skipped
      const found = await b.load().catch(() => null);
      if (found && found.sections.length > 0) {
        from = b;
        break;
      }
    }
    await this.reshape.restoreBackup(from);
    if (Number(this.sb.reshapePosition) < end)
      throw new TsmdError('EINVAL', `Failed to restore critical section for reshape, sorry.${fileGiven ? '' : '\n      Possibly you needed to specify the --backup-file'}`);
  }

  /** the backup file the reshape uses, if any (its path) */
  get backupFileName(): string | null {
    return this.backup?.name ?? null;
  }

  /**
   * mdadm --grow --continue: a reshape paused (frozen) or waiting for its backup file goes on;
   * a backup file given now is taken (and a critical section it holds restored first).
   */
  async continueReshape(backup: BackupFileHandle | null, md: string): Promise<void> {
    if (this.closed) throw new TsmdError('ENODEV', 'array is stopped');
    if (!this.reshapeBlocked) {
      await backup?.dev.close();
      throw new TsmdError('EINVAL', `${md}: no reshape in progress`);
    }
    if (this.isReadOnly) {
      await backup?.dev.close();
      throw new TsmdError('EROFS', `${md} is read-only${this.reshapeStuck ? `: ${this.reshapeStuck}` : ''}`);
    }
    if (backup) {
      if (this.backup) await backup.dev.close();
      else this.useBackupFile(backup);
    }
    if (needsBackupFile(this.sb) && !this.backup) throw new TsmdError('EINVAL', `${md}: Need a backup file to complete reshape of this array.\nPlease provided one with "--backup-file=..."`);
    await this.reshape.freeze();
    await this.reshape.restoreBackup();
    this.reshape.thaw();
  }

  /** The reshape no longer needs its backup file: closed, and removed (mdadm unlinks it). */
  private async dropBackupFile(remove: boolean): Promise<void> {
    const b = this.backup;
    const rm = this.backupRemove;
    this.backup = null;
    this.backupRemove = null;
    if (!b) return;
    await b.close().catch(() => {});
    if (remove && rm) await rm().catch((e: unknown) => this.log(`md: removing the backup file ${b.name}: ${(e as Error).message}`, 'warn'));
  }

  get events(): bigint {
    return this.sb.events;
  }

  get reshapeActive(): boolean {
    return this.reshapeBlocked;
  }

  /** RESHAPE_ACTIVE: the engine moves the data; resync, check and level changes wait */
  private get reshapeBlocked(): boolean {
    return (this.sb.featureMap & Feature.RESHAPE_ACTIVE) !== 0;
  }

  /** Does the level keep redundancy (sync, bitmap, spares, replacement)? From the registry. */
  get redundant(): boolean {
    return this.levelDesc.redundancy !== 'none';
  }

  /** md's recovery_cp */
  get resyncCp(): bigint {
    return this.resyncPoint;
  }

  /** While a sync checkpoint runs beside the sync: the most its superblocks may record (MetadataHost). */
  syncRecordCap: SyncRecordCap | null = null;

  /** slots with a working, in-sync member */
  get workingSlots(): number[] {
    return this.memberSet.workingSlots;
  }

  /** (on the write path with a bitmap: counts without allocating) */
  get degraded(): boolean {
    return this.memberSet.degraded;
  }

  /** Slots that hold a member being rebuilt. */
  get rebuildingSlots(): number[] {
    return this.memberSet.rebuildingSlots;
  }

  get isReadOnly(): boolean {
    return this.readOnly || this.softReadOnly;
  }

  /** md's !in_sync; a clustered array is always active (md-cluster: safe mode is off) */
  get isDirty(): boolean {
    return this.dirty || this.cluster !== null;
  }

  // ---- md-cluster (ClusterArrayHost; the rest lives in cluster-glue.ts) ----

  get arrayName(): string {
    return this.name;
  }

  get syncSectors(): number {
    return this.personality.syncSectors;
  }

  /** MemberIoHost.readFirstCopy: md-cluster's area_resyncing(READ) */
  get readFirstCopy(): boolean {
    return this.cluster !== null && this.cluster.areaResyncing('read', 0, Number.MAX_SAFE_INTEGER);
  }

  /** assembled as a clustered array (md's mddev_is_clustered) */
  get clustered(): boolean {
    return this.cluster !== null;
  }

  /** another node syncs this array (mdstat: resync=REMOTE) */
  get remoteSync(): RemoteSyncKind | null {
    return this.glue?.remoteSync ?? null;
  }

  /** this node waits for the cluster's resync lock (mdstat: resync=PENDING) */
  get syncPendingCluster(): boolean {
    return this.sync.waitingForCluster;
  }

  /** the lost membership, when this node was fenced */
  get fenced(): string | null {
    return this.fencedWhy;
  }

  lowerResyncPoint(lo: number): void {
    const at = BigInt(Math.max(0, Math.floor(lo)));
    if (this.resyncPoint === MAX_SECTOR || at < this.resyncPoint) this.resyncPoint = at;
    // a sync job already under way may be past `at` (or have planned without these bits): its
    // progress and its end must not raise the point over them; the next resync starts there
    if (this.sync.busy && (this.resyncLoweredTo === null || at < this.resyncLoweredTo)) this.resyncLoweredTo = at;
    this.kick();
  }

  /**
   * A resync point lowered while a sync job ran (md-cluster merged a dead or departed node's
   * dirty bits behind the job's position): kept until a resync after it (simulator seed 235,
   * where the running resync's end set the point to MaxSector and the merged bits were never
   * synced: the mirrors kept the dead node's torn write).
   */
  private resyncLoweredTo: bigint | null = null;

  lockedMeta<T>(fn: () => Promise<T>): Promise<T> {
    return this.meta.locked(fn);
  }

  /** The DLM fenced this node: members refuse writes from now on, requests fail (md-cluster). */
  markFenced(why: string): void {
    if (this.fencedWhy !== null) return;
    this.fencedWhy = why;
    for (const m of this.members) if (m.dev instanceof FenceableDevice) m.dev.fence(why);
    this.glue?.abort(new TsmdError('EFENCED', `${this.name}: this node lost its cluster membership (${why}): stop the array and assemble it again`));
    this.log(`md-cluster: ${this.name}: this node lost its cluster membership (${why}): no more writes to the shared disks; every request fails until the array is stopped`, 'error');
    void this.sync.stop().catch(() => {});
  }

  /** started after an unclean shutdown and not resynced since (md: resync pending) */
  get resyncPending(): boolean {
    return this.resyncPoint !== MAX_SECTOR && this.redundant && !this.sync.busy;
  }

  get isClean(): boolean {
    return !this.dirty && this.sb.resyncOffset === MAX_SECTOR;
  }

  /**
   * md's safe mode: the caller (the daemon, which owns the clock) reports how long the array
   * has had no write; past the delay it is marked clean so a crash while idle needs no resync.
   * Returns the write sequence number to compare on the next tick.
   */
  get writeSequence(): number {
    return this.writeSeq;
  }

  // ---- members and md_error ----

  /** The member serving a slot (never a replacement while the member it replaces works). */
  slotMember(slot: number): Member | null {
    const m = this.memberSet.original(slot);
    if (m) return m;
    return this.memberSet.replacing ? this.promoteReplacement(slot) : null;
  }

  /**
   * The member being replaced in this slot is gone: its replacement takes the slot and is
   * rebuilt from the others from where its copy got to (md's raid*_remove_disk promotion).
   * Called with no working original in the slot.
   */
  private promoteReplacement(slot: number): Member | null {
    const r = this.memberSet.replacementOf(slot);
    if (!r) return null;
    r.replacement = false;
    this.memberSet.updateReplacing();
    this.meta.changePending = true;
    this.log(`md: ${r.dev.name} takes slot ${slot} over from the failed member it was replacing; recovery goes on from ${r.recoveryOffset}`);
    return r;
  }

  /**
   * md_error: the one way a member fails. A replacement's failure leaves the array as it is.
   * For an in-sync member the personality's error handler decides (raid1/raid10 never fail
   * the last copy: the I/O that met the error gets EIO instead); a failed member is marked
   * faulty and the change waits for the next superblock write (md's MD_SB_CHANGE_DEVS), which
   * every request settles before it is acknowledged. Returns whether the member failed.
   */
  mdError(m: Member, why: string): boolean {
    if (m.faulty) return true;
    if (this.fencedWhy !== null) return false;
    const eh = this.personality.errorHandler;
    if (!m.replacement && m.slot !== null && m.recoveryOffset === null && eh && !eh.call(this.personality, m.slot, this.memberSet.availability(m.slot))) {
      this.log(`md: ${why}; ${m.dev.name} is the last working copy: not failing it, the I/O gets an error instead`, 'error');
      return false;
    }
    m.faulty = true;
    m.badReads = [];
    this.memberSet.updateReplacing();
    this.meta.changePending = true;
    // md_error: raid1/raid10 "Disk failure on %s, disabling device" is pr_crit, raid5's KERN_ALERT
    this.log(`md: ${why}; marking it faulty`, 'error');
    return true;
  }

  /** The core's decision on a member I/O error (MemberIo.reportError): read errors are counted first. */
  reportError(slot: number, op: 'read' | 'write', err: unknown): void {
    // a broken invariant below is a bug, not a failing member: it goes on up and crashes
    if (err instanceof AssertionError) throw err;
    // a fenced node's writes are refused on purpose: the members are fine
    if (this.fencedWhy !== null) return;
    const m = this.slotMember(slot);
    if (!m) return;
    const why = err instanceof Error ? err.message : String(err);
    if (op === 'read' && this.redundant && !this.readOnly && m.recoveryOffset === null) {
      m.readErrors = (m.readErrors ?? 0) + 1;
      if (m.readErrors <= this.readErrorLimit) {
        this.log(`md: read error on ${m.dev.name} (slot ${slot}): ${why}; answering from redundancy and rewriting it`, 'warn');
        return;
      }
      this.log(`md: ${m.dev.name} has had too many read errors (${m.readErrors} > ${this.readErrorLimit})`, 'error');
    }
    this.mdError(m, `${op} error on ${m.dev.name} (slot ${slot}): ${why}`);
  }

  /** A failed member read: the range waits for correction (redundant, writable arrays only). */
  noteBadRead(m: Member, start: number, end: number): void {
    if (!this.redundant || this.readOnly) return;
    (m.badReads ??= []).push([start, end]);
    this.badReadsPending = true;
  }

  // ---- the request path ----

  private checkIo(buf: Uint8Array, offsetBytes: number, write: boolean): void {
    if (this.closed) throw new TsmdError('ENODEV', 'array is stopped');
    if (this.fencedWhy !== null) throw new TsmdError('EFENCED', `${this.name}: this node lost its cluster membership (${this.fencedWhy}): stop the array and assemble it again`);
    if (write && (this.readOnly || this.softReadOnly)) throw new TsmdError('EROFS', 'array is read-only');
    if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0) throw new TsmdError('EINVAL', `invalid offset ${offsetBytes}`);
    if (offsetBytes + buf.length > this.sizeBytes)
      throw new TsmdError('ENOSPC', `I/O at ${offsetBytes}+${buf.length} goes beyond the end of the array (${this.sizeBytes} bytes)`);
  }

  /** Read any byte range (sector-aligned requests go straight through). */
  async read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.checkIo(buf, offsetBytes, false);
    if (buf.length === 0) return;
    this.inflightReads++;
    try {
      if (offsetBytes % 512 === 0 && buf.length % 512 === 0) {
        await this.personality.read(buf, offsetBytes / 512);
      } else {
        const first = Math.floor(offsetBytes / 512);
        const last = Math.ceil((offsetBytes + buf.length) / 512);
        const tmp = new Uint8Array((last - first) * 512);
        await this.personality.read(tmp, first);
        const skip = offsetBytes - first * 512;
        buf.set(tmp.subarray(skip, skip + buf.length));
      }
    } finally {
      if (--this.inflightReads === 0 && this.readsDrained.length > 0) for (const w of this.readsDrained.splice(0)) w();
    }
    this.ioCounter++;
    if (this.badReadsPending) await this.correctReadErrors();
    await this.settleSuperblocks();
  }

  /**
   * md's fix_read_error: every member range that failed to read is rebuilt from the others
   * (a recovery of just that range, under the sync barrier), written back, and read again.
   * A range that cannot be rewritten or read back fails the member, unless the array could
   * not run without it (md never fails the last copy for a read error: that read gets EIO).
   */
  async correctReadErrors(): Promise<void> {
    if (this.correcting) return this.correcting;
    this.badReadsPending = false;
    this.correcting = (async () => {
      for (const m of this.members) {
        while (m.badReads && m.badReads.length > 0 && !m.faulty && m.slot !== null) await this.correctOne(m, m.slot, m.badReads[0]!);
      }
    })();
    try {
      await this.correcting;
    } finally {
      this.correcting = null;
    }
    // a member failed: a hot spare (if any) takes over in the background
    if (this.meta.changePending) this.kick();
  }

  /** One bad range [a, b) of a member: rebuilt from the others and read back, or md_error. */
  private async correctOne(m: Member, slot: number, [a, b]: [number, number]): Promise<void> {
    const p = this.personality;
    const release = await this.barrier.lockRanges(p.recoveryToSync(slot, a, b - a));
    let ok = false;
    try {
      // rebuild the range onto this member from the others (it is skipped as a source)
      await p.syncRegion(a, b - a, new Set([slot]));
      if (!m.faulty) {
        await m.dev.read(new Uint8Array((b - a) * 512), dataByteOffset(m, a));
        ok = true;
      }
    } catch (e) {
      this.log(`md: read error not correctable on ${m.dev.name} (sectors ${a}-${b}): ${(e as Error).message}`, 'error');
    } finally {
      m.badReads = (m.badReads ?? []).filter(([x, y]) => !(x === a && y === b));
      release();
    }
    if (ok) {
      m.loaded.sb.cntCorrectedRead += b - a;
      // a disk that returned an error, repaired: worth an operator's look (warn), not a failure
      this.log(`md: read error corrected (${b - a} sectors at ${a} on ${m.dev.name})`, 'warn');
    } else if (!m.faulty) {
      if (!p.canRun(this.memberSet.availability(slot))) this.log(`md: ${m.dev.name}: unrecoverable read error at sectors ${a}-${b}, and no other copy: keeping the member`, 'error');
      else this.mdError(m, `${m.dev.name}: unrecoverable read error`);
    }
  }

  /**
   * Write any byte range. Partial sectors at the edges are read, patched and written back
   * under a per-sector lock, so concurrent unaligned writers never lose each other's bytes.
   */
  async write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.checkIo(buf, offsetBytes, true);
    if (buf.length === 0) return;
    this.inflightWrites++;
    this.writeSeq++;
    this.ioCounter++;
    const first = Math.floor(offsetBytes / 512);
    const [s0, s1] = this.personality.syncRangeOf(first, Math.ceil((offsetBytes + buf.length) / 512) - first);
    let entered = false;
    let started = false;
    let ok = false;
    let gate = 0;
    try {
      // another node's resync window: the write waits until it has moved on (md-cluster)
      if (this.glue) gate = await this.glue.enterWrite(s0, s1);
      // a clean transition in progress finishes first; then the array is marked active
      // (on disk, before any data lands) if it is not already
      if (this.cleaning) await this.cleaning;
      if (!this.dirty) await this.markDirty();
      // the sync engine's window and this write never overlap
      if (!this.barrier.tryEnterWrite(s0, s1)) await this.barrier.enterWrite(s0, s1);
      entered = true;
      if (this.bitmap) {
        // the chunk's bit is on disk before the data write is issued
        const persisted = this.bitmap.startWrite(s0, s1);
        started = true;
        if (persisted) await persisted;
      }
      await this.writeData(buf, offsetBytes);
      ok = true;
    } finally {
      // a write made while degraded (or failed) stays in the bitmap for the missing member
      if (started) this.bitmap!.endWrite(s0, s1, !ok || this.degraded);
      if (entered) this.barrier.leaveWrite(s0, s1);
      if (this.glue && gate !== 0) this.glue.leaveWrite(gate);
      this.inflightWrites--;
    }
    if (this.badReadsPending) await this.correctReadErrors();
    await this.settleSuperblocks();
  }

  private async writeData(buf: Uint8Array, offsetBytes: number): Promise<void> {
    if (offsetBytes % 512 === 0 && buf.length % 512 === 0) {
      await this.personality.write(buf, offsetBytes / 512);
      return;
    }
    const first = Math.floor(offsetBytes / 512);
    const last = Math.ceil((offsetBytes + buf.length) / 512);
    const release = await this.edgeLocks.acquire([first, last - 1]);
    try {
      const tmp = new Uint8Array((last - first) * 512);
      const skip = offsetBytes - first * 512;
      // only the edge sectors need their old contents
      await this.personality.read(tmp.subarray(0, 512), first);
      if (last - first > 1) await this.personality.read(tmp.subarray(tmp.length - 512), last - 1);
      tmp.set(buf, skip);
      await this.personality.write(tmp, first);
    } finally {
      release();
    }
  }

  async flush(): Promise<void> {
    if (this.closed) throw new TsmdError('ENODEV', 'array is stopped');
    await this.personality.flush();
    await this.settleSuperblocks();
  }

  // ---- metadata ----

  /** The metadata transaction (md_update_sb): see metadata.ts. */
  update(mutate: () => unknown, opts?: UpdateOptions): Promise<void> {
    return this.meta.update(mutate, opts);
  }

  /**
   * Write the array state to every working member with no state change of its own (a sync
   * checkpoint, or `bump` for what was already changed in memory).
   */
  writeSuperblocks(opts: UpdateOptions = {}): Promise<void> {
    return this.meta.update(() => {}, { bump: false, ...opts });
  }

  /**
   * If a member failed, record it on the others before the I/O is acknowledged; then a hot
   * spare (if any) takes over in the background.
   */
  private async settleSuperblocks(): Promise<void> {
    if (!this.meta.changePending) return;
    if (await this.meta.settle()) this.kick();
  }

  /** Write what md_error recorded, now (ManageHost). */
  async settle(): Promise<void> {
    await this.meta.settle();
  }

  /** Let the sync engine look for work, when the array runs in the background. */
  kick(): void {
    if (this.background) this.sync.kick();
  }

  /** seconds since the epoch, for utime (MetadataHost) */
  wallSeconds(): number {
    return Math.floor(this.clock.wallMs() / 1000);
  }

  /** Before roles are encoded: a replacement whose original failed holds the slot from now on. */
  settleReplacements(): void {
    if (!this.memberSet.replacing) return;
    for (let s = 0; s < this.sb.raidDisks; s++) if (!this.memberSet.original(s)) this.promoteReplacement(s);
  }

  /** A member's superblock or bitmap write failed (MetadataHost): md_error. */
  writeFailed(m: Member, what: string, e: unknown): void {
    this.mdError(m, `${what} write failed on ${m.dev.name}: ${(e as Error).message}`);
  }

  /** First write after open: record "active" (resync needed after a crash) on every member. */
  private async markDirty(): Promise<void> {
    if (this.sbUpdate) return this.sbUpdate;
    // with a runtime bitmap a crash resyncs the chunks whose bits are set; without one
    // (a clustered bitmap here), all bits are set so that everything is resynced
    this.sbUpdate = this.meta.update(() => {
      this.dirty = true;
    }, { bitmapBits: this.bitmap ? undefined : 'all' });
    try {
      await this.sbUpdate;
    } finally {
      this.sbUpdate = null;
    }
  }

  /**
   * Flush, then record a clean state on every member: in sync unless a resync was pending at
   * assembly and has not run since; bitmap bits cleared only when every member got every write.
   */
  private async writeCleanState(): Promise<void> {
    await this.personality.flush();
    await this.settleSuperblocks();
    await this.meta.update(() => {
      this.dirty = false;
    }, { bitmapBits: this.everyMemberHasEveryWrite ? 'none' : undefined });
  }

  /** In sync, nothing owed to a missing or rebuilding member: bitmap bits may all go. */
  private get everyMemberHasEveryWrite(): boolean {
    return this.resyncPoint === MAX_SECTOR && !this.degraded && this.rebuildingSlots.length === 0;
  }

  /**
   * md_bitmap_flush at stop on an array already clean: the bitmap daemon's passes run until
   * every bit of a synced, idle chunk is cleared on disk. Without it, the bits a resync (or the
   * writes of a run with no later safe-mode pass) left set would stay on disk, and the next
   * assembly, the kernel's included, would resync those chunks for nothing.
   */
  private async flushBitmapAtStop(): Promise<void> {
    const bm = this.bitmap;
    if (!bm || this.readOnly || this.fencedWhy !== null || this.clustered) return;
    if (!this.everyMemberHasEveryWrite || bm.clearableCount === 0) return;
    await this.personality.flush();
    bm.clearAll(this.sb.events);
    await bm.writeThrough(true);
  }

  // ---- management (mdadm --manage, --readonly, --readwrite) ----

  /** --readonly / --readwrite on a running array. Going read-only records a clean state. */
  async setReadOnly(ro: boolean): Promise<void> {
    if (!ro && this.readOnly) throw new TsmdError('EROFS', 'the members were opened read-only; stop and assemble without --readonly');
    if (ro === this.softReadOnly) return;
    if (ro) {
      await this.personality.flush();
      await this.markClean();
    }
    this.softReadOnly = ro;
  }

  /** Record a clean state now (the kernel's safe_mode transition) if nothing is pending. */
  async markClean(): Promise<void> {
    // only when no write is in flight; writes that arrive meanwhile wait for `cleaning`
    if (this.readOnly || this.closed || !this.dirty || this.inflightWrites > 0 || this.sbUpdate || this.cleaning || this.cluster) return;
    this.cleaning = this.writeCleanState();
    try {
      await this.cleaning;
    } finally {
      this.cleaning = null;
    }
  }

  /** mdadm --fail: mark a member faulty; the array goes on degraded if it can. */
  failMember(path: string): Promise<void> {
    return failMember(this, path);
  }

  /** mdadm --replace [--with]: see manage.ts. Returns the slot. */
  async requestReplacement(path: string, withPath?: string): Promise<number> {
    return requestReplacement(this, path, withPath);
  }

  /** mdadm --remove: only a faulty or spare member can go; its slot becomes empty. */
  removeMember(path: string): Promise<void> {
    return removeMember(this, path);
  }

  /** mdadm --add / --add-spare / --re-add: see manage.ts. */
  addMember(dev: BlockDevice, opts: AddOptions): Promise<'spare' | 're-added'> {
    return addMember(this, dev, opts);
  }

  /**
   * Install a new personality on the quiesced array (md's level_store: suspend, swap the
   * personality, resume) with the geometry recorded in the same metadata transaction. For
   * geometries whose data sits where the old one had it (md's takeovers: a raid1 of two as a
   * raid5, ...); moving data is the reshape engine's. Refused while a sync runs.
   * `changes` carries what md's ->takeover functions change besides the geometry (takeover.ts):
   * the members' new slots (rdev->new_raid_disk), their data sectors (rdev->sectors, written as
   * data_size), dev_sectors (sb size), and recovery_cp = MaxSector (raid0's takeovers).
   */
  async installPersonality(g: LevelGeometry, changes: TakeoverChanges = {}): Promise<void> {
    if (this.closed) throw new TsmdError('ENODEV', 'array is stopped');
    if (this.isReadOnly) throw new TsmdError('EROFS', 'array is read-only');
    // the sync engine may be looking for work (it finds none, or starts a job)
    while (this.sync.busy && !this.sync.current) await this.clock.sleep(5);
    if (this.sync.busy || this.reshapeBlocked) throw new TsmdError('EBUSY', 'a sync or reshape is running: the level cannot change now');
    const desc = levelByNumber(g.level);
    const [level, layout, chunk] = [g.level, g.layout, g.chunkSectors];
    const size = changes.componentSectors ?? this.sb.size;
    const geometry = { level, layout, chunkSize: chunk, raidDisks: g.raidDisks, newLevel: level, newLayout: layout, newChunk: chunk, deltaDisks: 0, size };
    // the members in the new geometry (md: rdev->new_raid_disk, rdev->sectors)
    const slotOf = (m: Member): number | null => (m.slot === null || m.faulty || !changes.newSlot ? m.slot : changes.newSlot(m));
    const sizeOf = changes.dataSectorsOf;
    const withSize = (m: Member): Member['loaded'] => (sizeOf === undefined || m.slot === null ? m.loaded : { ...m.loaded, sb: { ...m.loaded.sb, dataSize: BigInt(sizeOf(m)) } });
    const release = await this.quiesce();
    try {
      await this.personality.flush();
      await this.meta.update(() => {
        // the new personality is built on the new state (its member I/O reads raid_disks from
        // the array); anything it refuses puts the old state back and nothing is written
        const oldSb = { ...this.sb };
        const oldMembers = this.members.map((m) => [m.slot, m.loaded] as const);
        const restore = () => {
          Object.assign(this.sb, oldSb);
          this.members.forEach((m, i) => ([m.slot, m.loaded] = oldMembers[i]!));
        };
        let next: Personality;
        try {
          for (const m of this.members) {
            const slot = slotOf(m);
            m.loaded = withSize(m);
            m.slot = slot;
          }
          Object.assign(this.sb, geometry);
          // md rejects RAID0_LAYOUT on any other level (super_1_load)
          if (level !== 0) this.sb.featureMap &= ~Feature.RAID0_LAYOUT;
          next = buildPersonality(this.sb, this.members, this.io);
          // the bitmap covers the resync space; resizing it is the reshape engine's
          if (this.bitmap && next.syncSectors !== this.personality.syncSectors) throw new TsmdError('EINVAL', `${desc.name} would change the bitmap's range: remove the bitmap first`);
        } catch (e) {
          restore();
          throw e;
        }
        this.personality = next;
        this.levelDesc = desc;
        if (changes.inSync) this.resyncPoint = MAX_SECTOR;
        this.report.missingSlots = Array.from({ length: g.raidDisks }, (_, s) => s).filter((s) => !this.slotMember(s));
        if (desc.redundancy === 'none') this.bitmap = null;
      });
      assert(this.personality.level === g.level && this.sb.level === g.level, 'the installed personality has the level asked for');
      this.log(`md: ${this.name}: level is now ${desc.name}`);
    } finally {
      release();
    }
  }

  /** Hold every write at the barrier and wait for the reads in flight (md's mddev_suspend). */
  private async quiesce(): Promise<() => void> {
    const release = await this.barrier.lockRanges([[0, Math.max(1, this.personality.syncSectors, this.personality.arraySectors)]]);
    while (this.inflightReads > 0) await new Promise<void>((r) => this.readsDrained.push(r));
    return release;
  }

  // ---- background work and the sync engine ----

  /**
   * Start the background work of a running array (the daemon calls this): the sync engine
   * looks for work now and after every change, and the bitmap daemon runs every daemonSleep.
   */
  startBackground(): void {
    if (this.background || this.readOnly || this.closed) return;
    this.background = true;
    this.sync.kick();
    this.reshape.kick();
    this.startBitmapDaemon();
  }

  /** The bitmap daemon: one pass every daemon_sleep seconds while the array runs in the background. */
  private startBitmapDaemon(): void {
    this.bitmapTimer?.cancel();
    this.bitmapTimer = null;
    const bm = this.bitmap;
    if (!bm || !this.background) return;
    const periodMs = Math.max(1, bm.sup.daemonSleep || 5) * 1000;
    const tick = () => {
      if (!this.background || this.bitmap !== bm) return;
      this.bitmapDaemonPass()
        .catch((e: unknown) => this.log(`md: bitmap daemon: ${(e as Error).message}`))
        .finally(() => {
          if (this.background && this.bitmap === bm) this.bitmapTimer = this.clock.setTimer(periodMs, tick);
        });
    };
    this.bitmapTimer = this.clock.setTimer(periodMs, tick);
  }

  /**
   * mdadm --grow --bitmap=internal|none on a running array (grow-bitmap.ts places it). Writes
   * are held and the members flushed first, so the new bitmap starts with no bits set and
   * events == events_cleared: a crash from then on resyncs only what the bitmap records.
   * Removing: the same quiescing, then the feature bit goes. Refused while a sync runs or is
   * owed (as md).
   */
  async setBitmap(kind: 'internal' | 'none', opts: { chunkBytes?: number; devName?: string; daemonSleepSec?: number } = {}): Promise<void> {
    const md = opts.devName ?? this.name;
    if (this.closed) throw new TsmdError('ENODEV', 'array is stopped');
    if (this.readOnly || this.softReadOnly) throw new TsmdError('EROFS', `${md} is read-only`);
    const has = (this.sb.featureMap & Feature.BITMAP_OFFSET) !== 0;
    if (kind === 'none' && !has) throw new TsmdError('EINVAL', `no bitmap found on ${md}`);
    if (kind === 'internal' && has) throw new TsmdError('EEXIST', `bitmap already present on ${md}`);
    if (kind === 'internal' && !this.redundant) throw new TsmdError('EINVAL', `Bitmaps not meaningful with level ${levelText(this.level)}`);
    if (kind === 'none' && (this.sb.featureMap & Feature.CLUSTERED) !== 0) throw new TsmdError('ENOTSUP', `${md} has a clustered bitmap: removing it is md-cluster's business`);
    if (this.reshapeBlocked || this.sync.busy || this.resyncPoint !== MAX_SECTOR || this.rebuildingSlots.length > 0)
      throw new TsmdError('EBUSY', 'Cannot add bitmap while array is resyncing or reshaping etc.');
    const size = this.personality.syncSectors;
    const places = kind === 'internal' ? placeBitmaps(this.memberSet, size, opts.chunkBytes) : [];
    // hold every write (in flight ones finish), then make what they wrote durable everywhere;
    // a superblock write already under way (a clean or active transition, which do not wait
    // for the barrier) lands first; none starts until the new state is on every member
    const release = await this.barrier.lockRanges([[0, size]]);
    try {
      await this.personality.flush();
      await this.meta.update(async () => {
        if (kind === 'none') {
          this.bitmap = null;
          this.bitmapTimer?.cancel();
          this.bitmapTimer = null;
          dropBitmaps(this.sb, this.memberSet);
        } else {
          await writeNewBitmaps(this.sb, places, size, opts.daemonSleepSec);
          this.bitmap = this.makeBitmap();
        }
      });
    } finally {
      release();
    }
    if (kind === 'internal') {
      this.startBitmapDaemon();
      const chunk = places[0]!.chunk;
      this.log(`md: ${md}: internal bitmap added (${bitmapBits(size, chunk)} bits of ${chunk / 1024} KiB)`);
    } else this.log(`md: ${md}: internal bitmap removed`);
  }

  /** One pass of the bitmap daemon: bits of chunks idle for a whole period are cleared. */
  async bitmapDaemonPass(): Promise<number> {
    if (!this.bitmap || this.readOnly || this.closed) return 0;
    return this.bitmap.daemonPass({ degraded: this.degraded || this.rebuildingSlots.length > 0, events: this.sb.events });
  }

  /** may any sync run now (RecoveryHost) */
  canPlan(): boolean {
    return !this.readOnly && !this.softReadOnly && !this.closed && !this.reshapeBlocked && this.redundant && this.fencedWhy === null;
  }

  private syncHost(): SyncHost {
    // a getter object: the engine is built in the constructor, before the fields it reads exist
    const self = this as MdArray;
    return {
      get personality() {
        return self.personality;
      },
      get barrier() {
        return self.barrier;
      },
      get bitmap() {
        return self.bitmap;
      },
      get clock() {
        return self.clock;
      },
      log: (msg) => this.log(msg),
      planSync: (requested) => planRecovery(this, requested),
      copyToReplacements: (slots, start, sectors) => this.copyToReplacements(slots, start, sectors),
      flushData: () => (this.closed || this.readOnly ? Promise.resolve() : this.personality.flush()),
      recoveryValid: (slots) => slots.every((s) => this.rebuildTarget(s) !== null),
      setRecoveryFrontier: (slots, pos) => {
        for (const s of slots) {
          const m = this.rebuildTarget(s);
          if (m && m.recoveryOffset !== null) m.recoveryOffset = Math.max(m.recoveryOffset, pos);
        }
      },
      setResyncPoint: (pos) => {
        if (this.resyncPoint !== MAX_SECTOR) this.resyncPoint = BigInt(Math.max(Number(this.resyncPoint), pos));
        if (this.resyncLoweredTo !== null && this.resyncLoweredTo < this.resyncPoint) this.resyncPoint = this.resyncLoweredTo;
      },
      checkpoint: async (upTo) => {
        if (this.closed || this.readOnly) return;
        // a checkpoint beside the running sync records no more than what its flush covered,
        // whatever the in-memory frontier reached meanwhile (md: curr_resync_completed)
        this.syncRecordCap = upTo ?? null;
        try {
          await this.writeSuperblocks();
        } finally {
          this.syncRecordCap = null;
        }
      },
      recoveryDone: (slots) => this.recoveryDone(slots),
      resyncDone: () =>
        this.meta.update(() => {
          this.resyncPoint = this.resyncLoweredTo ?? MAX_SECTOR;
          this.resyncLoweredTo = null;
        }),
      ioCount: () => this.ioCounter,
      canSync: () => this.canPlan() && !this.degraded,
      cluster: {
        get clustered(): boolean {
          return self.clustered;
        },
        start: async (signal) => {
          const c = this.cluster;
          if (!c) return false;
          this.clusterWindow?.reset();
          await c.resyncStart(signal);
          return true;
        },
        finish: async (closing) => {
          const c = this.cluster;
          if (!c) return;
          // RESYNCING(0,0) after the window in flight, never before it (receivers would keep
          // a stale window suspended)
          await this.clusterWindow?.drain();
          await c.resyncFinish(closing || this.closed || this.fencedWhy !== null);
          this.clusterWindow?.reset();
        },
        window: async (ranges) => {
          if (this.cluster && ranges.length > 0) await this.clusterWindow?.publish(ranges, this.personality.syncSectors);
        },
        settle: async () => {
          await this.clusterWindow?.settle();
        },
        get stepSectors(): number {
          return self.clusterWindow?.stepSectors ?? 0;
        },
      },
    };
  }

  /**
   * mdadm --grow --raid-devices / --chunk / --layout on raid4/5/6 (reshape.ts): checks, the
   * superblocks of the reshape, and the engine started in the background. false: no change.
   */
  async grow(req: ReshapeRequest & { backup?: BackupFileHandle }): Promise<boolean> {
    const md = req.devName ?? this.name;
    if (this.closed) throw new TsmdError('ENODEV', 'array is stopped');
    if (this.isReadOnly) throw new TsmdError('EROFS', `${md} is read-only`);
    if (this.reshapeBlocked) throw new TsmdError('EBUSY', `${md} is already being reshaped`);
    // the sync engine may be looking for work (it finds none, or starts a job)
    while (this.sync.busy && !this.sync.current) await this.clock.sleep(5);
    if (this.sync.current || this.resyncPoint !== MAX_SECTOR || this.rebuildingSlots.length > 0)
      throw new TsmdError('EBUSY', `${md} is performing resync/recovery and cannot be reshaped`);
    if (req.backup) this.useBackupFile(req.backup);
    let started = false;
    try {
      started = await startReshape(this.reshapeHost(), { ...req, backupFile: !!req.backup });
    } finally {
      // the file serves only a reshape in place; otherwise (or refused) it is let go
      if (!started || (this.sb.featureMap & Feature.NEW_OFFSET) !== 0) await this.dropBackupFile(true);
    }
    // a level change after the reshape (raid6 -> raid5, level-reshape.ts): at its end, or now
    if (started && req.then) this.reshape.afterFinish = req.then;
    else if (req.then) await this.reshape.takeoverNow(req.then);
    if (started && req.whenDone) this.reshape.whenDone = req.whenDone;
    if (started) this.reshape.kick();
    return started || req.then !== undefined;
  }

  /** The checks every --grow makes first (mdadm's freeze: no resync/recovery, no reshape). */
  private async growChecks(md: string): Promise<void> {
    if (this.closed) throw new TsmdError('ENODEV', 'array is stopped');
    if (this.isReadOnly) throw new TsmdError('EROFS', `${md} is read-only`);
    if (this.reshapeBlocked) throw new TsmdError('EBUSY', `${md} is already being reshaped`);
    if ((this.sb.featureMap & Feature.CLUSTERED) !== 0) throw new TsmdError('ENOTSUP', `${md} is clustered: md-cluster --grow is not supported by tsmd`);
    while (this.sync.busy && !this.sync.current) await this.clock.sleep(5);
    if (this.sync.current || this.resyncPoint !== MAX_SECTOR || this.rebuildingSlots.length > 0)
      throw new TsmdError('EBUSY', `${md} is performing resync/recovery and cannot be reshaped`);
  }

  /** raid1 --grow --raid-devices (resize.ts): mdadm's stdout line, or null for no change. */
  async growMirrors(req: MirrorsRequest): Promise<string | null> {
    await this.growChecks(req.devName);
    return growMirrors(this.resizeHost(), req);
  }

  /** mdadm --grow --size=N|max (resize.ts). */
  async growSize(req: SizeRequest): Promise<SizeResult> {
    await this.growChecks(req.devName);
    return growSize(this.resizeHost(), req);
  }

  /** mdadm --grow --add on a linear array (resize.ts); the array takes ownership of dev. */
  async linearAdd(dev: BlockDevice, deviceUuid: Uint8Array, devName: string): Promise<void> {
    await this.growChecks(devName);
    return linearAdd(this.resizeHost(), dev, deviceUuid, devName);
  }

  private resizeHost(): ResizeHost {
    const self = this as MdArray;
    return {
      base: this.reshapeHost(),
      get bitmap() {
        return self.bitmap;
      },
      get imposedArraySectors() {
        return self.arraySizeLimit;
      },
      resizeBitmap: (sup, nbits, bits) => {
        this.bitmapTimer?.cancel();
        this.bitmapTimer = null;
        this.bitmap = new WriteIntentBitmap(sup, nbits, bits, {
          writeArea: (sector, bytes) => this.writeBitmapArea(sector, bytes),
          flushData: () => this.personality.flush(),
        });
        this.startBitmapDaemon();
        return this.bitmap;
      },
      resyncFrom: (at) => this.lowerResyncPoint(at),
      kick: () => this.kick(),
    };
  }

  private reshapeHost(): ReshapeHost {
    const self = this as MdArray;
    return {
      get sb() {
        return self.sb;
      },
      get memberSet() {
        return self.memberSet;
      },
      get clock() {
        return self.clock;
      },
      get personality() {
        return self.personality;
      },
      get readOnly() {
        return self.isReadOnly || self.closed;
      },
      get resyncOwed() {
        return self.resyncPoint !== MAX_SECTOR;
      },
      get backup() {
        return self.backup;
      },
      get allowOldBackup() {
        return self.allowOldBackup;
      },
      get exportedSectors() {
        return self.exportedSectors;
      },
      log: (msg, level) => this.log(msg, level),
      get devName() {
        return self.name;
      },
      limits: () => this.sync.limits,
      update: (mutate, opts) => this.meta.update(mutate, opts),
      quiesced: async (fn) => {
        const release = await this.quiesce();
        try {
          return await fn();
        } finally {
          release();
        }
      },
      makePersonality: (sb) => buildPersonality(sb, this.members, this.io),
      install: (p) => {
        this.personality = p;
        this.levelDesc = levelByNumber(p.level);
      },
      suspendBitmap: () => {
        this.bitmapTimer?.cancel();
        this.bitmapTimer = null;
        this.bitmap = null;
      },
      resumeBitmap: (clean) => {
        this.bitmap = this.makeBitmap(clean);
      },
      resyncFrom: (at) => this.lowerResyncPoint(at),
      finished: () => {
        void this.dropBackupFile(true);
        this.startBitmapDaemon();
        this.kick();
      },
    };
  }

  /** A recovery finished: members in sync, replaced members retired, one metadata update. */
  private async recoveryDone(slots: number[]): Promise<void> {
    await this.meta.update(() => {
      for (const s of slots) {
        const r = this.memberSet.replacementOf(s);
        if (r) {
          // the replacement is complete: the member it replaces is retired as faulty (md's
          // spare_active for a replacement; not an error, so not md_error)
          const old = this.slotMember(s);
          if (old) {
            old.faulty = true;
            old.wantReplacement = false;
            this.log(`md: ${r.dev.name} has replaced ${old.dev.name} in slot ${s}; ${old.dev.name} is now faulty`);
          }
          r.replacement = false;
          r.replaceFor = undefined;
          this.memberSet.updateReplacing();
        }
        const m = r ?? this.slotMember(s);
        if (m) {
          m.recoveryOffset = null;
          m.bitmapGuided = false;
        }
      }
      // every member now holds every write: the bits owed to the missing member can go
      if (!this.degraded && this.bitmap && this.resyncPoint === MAX_SECTOR) this.bitmap.synced(0, this.personality.syncSectors);
    });
    this.log(`md: recovery done (${slots.length} member(s))`);
  }

  /** The member a recovery of this slot writes: its replacement, or a member being rebuilt. */
  private rebuildTarget(slot: number): Member | null {
    const r = this.memberSet.replacing ? this.memberSet.replacementOf(slot) : null;
    if (r) return r;
    const m = this.slotMember(slot);
    return m && m.recoveryOffset !== null ? m : null;
  }

  /**
   * A replacement's copy of [start, start+sectors) of the recovery space, 1 MiB at a time:
   * read from the member being replaced and written to the replacement. A range the old
   * member cannot read is rebuilt from the other members instead (its read error counted as
   * usual), so the replacement never loses redundancy the array still has. A replacement
   * whose original has failed is rebuilt from the others (it holds the slot now).
   */
  private async copyToReplacements(slots: number[], start: number, sectors: number): Promise<void> {
    const piece = 2048;
    const jobs: Array<() => Promise<void>> = [];
    for (const slot of slots) {
      for (let at = start; at < start + sectors; at += piece) {
        const n = Math.min(piece, start + sectors - at);
        jobs.push(() => this.copyPiece(slot, at, n));
      }
    }
    await runLimited(jobs, SYNC_PARALLEL);
  }

  private async copyPiece(slot: number, at: number, n: number): Promise<void> {
    const r = this.memberSet.replacementOf(slot);
    const old = r ? this.slotMember(slot) : null;
    if (!r || !old || old.replacement) {
      // promoted (the member it replaced failed): an ordinary recovery of the slot
      if (this.rebuildTarget(slot)) await this.personality.syncRegion(at, n, new Set([slot]));
      return;
    }
    const buf = takeSyncBuffer(n * 512);
    try {
      try {
        await old.dev.read(buf, dataByteOffset(old, at));
      } catch (e) {
        this.reportError(slot, 'read', e);
        await this.rebuildReplacementRange(slot, at, n);
        return;
      }
      await this.io.writeReplacement(r, at, buf);
    } finally {
      giveSyncBuffer(buf);
    }
  }

  /** Rebuild [at, at+n) of a slot onto its replacement from the other members. */
  private async rebuildReplacementRange(slot: number, at: number, n: number): Promise<void> {
    this.rebuildingForReplacement.set(slot, [at, at + n]);
    try {
      await this.personality.syncRegion(at, n, new Set([slot]));
    } finally {
      this.rebuildingForReplacement.delete(slot);
    }
  }

  /**
   * Bring the array to a fully redundant state now (recover members being rebuilt, put spares
   * into empty slots, resync after an unclean shutdown) and wait for it.
   */
  async syncNow(
    opts: { checkpointSectors?: number; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<{ recovered: number; resynced: number }> {
    assert(!this.readOnly, 'sync on a read-only array');
    if (this.reshapeBlocked) throw new TsmdError('EBUSY', 'a reshape is in progress; it must finish first');
    if (opts.checkpointSectors) this.sync.checkpointSectors = opts.checkpointSectors;
    let recovered = 0;
    let resynced = 0;
    for (const r of await this.sync.runUntilIdle()) {
      if (r.kind === 'recovery') recovered += r.workedSectors;
      if (r.kind === 'resync') resynced += r.workedSectors;
      opts.onProgress?.(r.totalSectors, r.totalSectors);
    }
    return { recovered, resynced };
  }

  /** md's sync_action: check / repair / idle / frozen (mdadm --action). */
  async setSyncAction(action: 'check' | 'repair' | 'idle' | 'frozen' | 'resync' | 'recover'): Promise<void> {
    if (this.closed) throw new TsmdError('ENODEV', 'array is stopped');
    if (!this.redundant) throw new TsmdError('EINVAL', `${levelText(this.level)} has no redundancy to ${action}`);
    if (this.reshapeBlocked) {
      // md's sync_action during a reshape: frozen pauses it (at a checkpoint), idle lets it go on
      if (action === 'frozen') return this.reshape.freeze();
      if (action === 'idle') return this.reshape.thaw();
      throw new TsmdError('EBUSY', `${this.name}: a reshape is in progress: ${action} must wait for it`);
    }
    await this.sync.setAction(action);
  }

  /** Stop: flush, and record a clean shutdown on every member (mdadm --stop). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.background = false;
    this.glue?.abort(new TsmdError('ENODEV', `${this.name} is stopping`));
    this.bitmapTimer?.cancel();
    this.bitmapTimer = null;
    await this.reshape.stop().catch(() => {});
    await this.dropBackupFile(false);
    await this.sync.stop().catch(() => {});
    if (this.cleaning) await this.cleaning.catch(() => {});
    try {
      if (!this.readOnly && this.fencedWhy === null && (this.dirty || this.meta.changePending)) await this.writeCleanState();
      else await this.flushBitmapAtStop();
    } finally {
      this.closed = true;
      await this.leaveCluster();
      await Promise.all(this.members.map((m) => m.dev.close().catch(() => {})));
    }
  }

  /**
   * md-cluster's leave at stop: unfinished work (a resync owed, a member being rebuilt, bits
   * that still need a sync) is handed to a survivor with BITMAP_NEEDS_SYNC (spec §4.2, §4.9).
   */
  private async leaveCluster(): Promise<void> {
    const c = this.cluster;
    if (!c) return;
    const owed = this.resyncPoint !== MAX_SECTOR || this.rebuildingSlots.length > 0 || (this.bitmap?.needSyncCount ?? 0) > 0;
    if ('handOver' in c) (c as { handOver: boolean }).handOver = owed;
    await c.leave().catch((e: unknown) => this.log(`md-cluster: leave: ${(e as Error).message}`, 'warn'));
  }
}

/** The array UUID as the DLM lockspace name: 8-4-4-4-12 lowercase hex (md-cluster §2.1). */
export function lockspaceName(uuid: Uint8Array): string {
  const h = Buffer.from(uuid).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** A clustered array's bitmap facts (mddev_is_clustered: version 5 with more than one slot), or null. */
export function clusterOf(members: readonly Member[]): { nodes: number; clusterName: string } | null {
  for (const m of members) {
    const b = m.bitmaps[0];
    if (!b || b.sup.version !== 5 || !bitmapMatches(b.sup, m.loaded.sb)) continue;
    if (b.sup.nodes <= 1) return null;
    const nul = b.sup.clusterName.indexOf(0);
    const name = Buffer.from(b.sup.clusterName.subarray(0, nul < 0 ? 64 : nul)).toString('latin1');
    return { nodes: b.sup.nodes, clusterName: name };
  }
  return null;
}

/**
 * Before a clustered array is built: the node must have a cluster, with the bitmap's cluster
 * name (md-cluster's lockspace lives in that cluster); the members are switched to uncached
 * I/O (other hosts write them) and wrapped so that a fence stops every write. Nothing written.
 */
async function prepareClusterMembers(members: Member[], c: { nodes: number; clusterName: string }, setup: ClusterSetup | null, log: MdLog): Promise<void> {
  if (!setup || setup.clusterName === null)
    throw new TsmdError('ENOTSUP', `the array is clustered (cluster ${JSON.stringify(c.clusterName)}, ${c.nodes} node slots) and this node has no cluster configured: start the daemon with --cluster-name and --etcd`);
  if (setup.clusterName !== c.clusterName)
    throw new TsmdError('EINVAL', clusterNameMismatch(c.clusterName, setup.clusterName));
  for (const m of members) {
    if (setup.prepareMember) m.dev = await setup.prepareMember(m.dev, log);
    m.dev = new FenceableDevice(m.dev);
  }
}

/** Build the personality for the array's geometry (old/new split when a reshape is active). */
function buildPersonality(sb: Superblock1, members: readonly Member[], io: MemberIo): Personality {
  const memberSectors: number[] = [];
  for (let s = 0; s < slotCount(sb); s++) {
    const m = members.find((x) => x.slot === s);
    memberSectors.push(m ? Number(m.loaded.sb.dataSize) : 0);
  }
  const make = (level: number, layout: number, chunkSectors: number, raidDisks: number, mio: MemberIo): Personality => {
    // raid0 arrays made before the RAID0_LAYOUT feature are laid out as layout 1 (original)
    const lay = level === 0 && (sb.featureMap & Feature.RAID0_LAYOUT) === 0 ? 1 : layout;
    const componentSectors = Number(sb.size);
    return levelByNumber(level).create({ io: mio, layout: lay, chunkSectors, raidDisks, componentSectors, memberSectors: memberSectors.slice(0, raidDisks) });
  };
  if ((sb.featureMap & Feature.RESHAPE_ACTIVE) !== 0) {
    // each member's own new_offset (md's rdev->new_data_offset); the array's for a member whose
    // superblock does not carry one
    const shiftOf = (slot: number): number => {
      const m = members.find((x) => x.slot === slot && !x.faulty);
      const own = m?.loaded.sb;
      return own && ((own.featureMap & Feature.NEW_OFFSET) !== 0 || own.events !== sb.events) ? own.newOffset : sb.newOffset;
    };
    // members rebuilt along with the reshape (raid5.c: recovery_offset follows reshape_position)
    const rebuiltTo = (slot: number): number | null => {
      const m = members.find((x) => x.slot === slot && !x.faulty && !x.replacement);
      return m ? m.recoveryOffset : null;
    };
    return new ReshapeView(sb, io, make, shiftOf, rebuiltTo);
  }
  return make(sb.level, sb.layout, sb.chunkSize, sb.raidDisks, io);
}
