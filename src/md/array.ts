/**
 * The array core ("mddev"): members, assembly decisions, superblock updates, the request path
 * into a personality, and the initial/after-crash sync.
 *
 * Assembly follows mdadm + the kernel: members are grouped by array UUID, the superblock with
 * the highest events defines the array, active members older than (events − 1) are left out
 * as stale, corrupt or foreign members are refused, and an array that is missing members
 * starts only when asked to (--run). Nothing is written to a member that was not accepted.
 */
import { assert, TsmdError } from '../errors.js';
import { BITMAP_SB_BYTES, bitmapAreaBytes, bitmapBits, encodeBitmapSuper, fillCleanBits, newBitmapSuper } from '../format/bitmap.js';
import {
  deviceRole,
  encodeSuperblock,
  Feature,
  isActiveRole,
  MAX_SECTOR,
  Role,
  type Superblock1,
  sbBytes,
  setNameText,
  uuidText,
} from '../format/superblock.js';
import { type Clock, SystemClock, type Timer } from '../env/clock.js';
import type { BlockDevice, DirectFd } from '../io/block-device.js';
import type { BulkPiece, FdAt, SyncOffload } from '../io/bulk.js';
import type { MemberBulk, MemberIo, MemberLoc, Personality } from '../raid/personality.js';
import { giveSyncBuffer, SYNC_PARALLEL, takeSyncBuffer } from '../raid/sync-support.js';
import { KeyedLocks, runLimited } from '../util/async.js';
import { levelByNumber } from '../raid/levels.js';
import { ReshapeView } from '../raid/reshape-view.js';
import { SyncBarrier } from './barrier.js';
import { defaultBitmapChunk } from './create-plan.js';
import { WriteIntentBitmap } from './bitmap.js';
import { DEFAULT_SYNC_LIMITS, SyncEngine, type SyncHost, type SyncLimits, type SyncPlan } from './sync.js';
import {
  bitmapMatches,
  type LoadedBitmap,
  type LoadedSuperblock,
  loadBitmaps,
  loadSuperblock,
} from './sb-io.js';

export interface Member {
  dev: BlockDevice;
  loaded: LoadedSuperblock;
  devNumber: number;
  /** active slot, or null for a spare */
  slot: number | null;
  faulty: boolean;
  /** sectors already recovered when the member is being rebuilt; null = in sync */
  recoveryOffset: number | null;
  bitmaps: LoadedBitmap[];
  /** re-added member whose recovery visits only the chunks the bitmap says it missed */
  bitmapGuided?: boolean;
  /** member sectors that failed to read and wait for correction (md's fix_read_error) */
  badReads?: Array<[number, number]>;
  /** read errors seen (md: read_errors); past the limit the member is failed */
  readErrors?: number;
  /**
   * Being built as the replacement of the working member of the same slot (mdadm --replace;
   * superblock feature REPLACEMENT). It gets every write that starts below its recovery
   * frontier and is never read; when it is complete the member it replaces is marked faulty.
   */
  replacement?: boolean;
  /** mdadm --replace asked for this member to be replaced (md's WantReplacement, in memory) */
  wantReplacement?: boolean;
  /** mdadm --with: this spare is the one to replace the member of that slot */
  replaceFor?: number;
}

/** devflags bit 0: WriteMostly (raid1 reads avoid the member) */
export const DEV_FLAG_WRITEMOSTLY = 1;

/** md's max_corr_read_errors default: more read errors than this fail the member */
export const MAX_READ_ERRORS = 20;

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
  /** clock for utime, seconds */
  nowSeconds?: () => number;
  /** called for messages mdadm would print (stale member left out, started degraded...) */
  log?: (msg: string) => void;
  /** time for the sync engine and the bitmap daemon (default: the system clock) */
  clock?: Clock;
  /** sync speed limits (default md's 1000 / 200000 KiB/s) */
  syncLimits?: SyncLimits;
  /** helper threads for resync / recovery / check (io/bulk.ts); none by default */
  syncOffload?: SyncOffload | null;
}

export interface AssemblyReport {
  accepted: string[];
  stale: string[];
  spares: string[];
  missingSlots: number[];
  degraded: boolean;
}

function sbLevelName(level: number): string {
  if (level === -1) return 'linear';
  return `raid${level}`;
}

export class MdArray {
  readonly members: Member[];
  /** superblock of the freshest member: array-wide fields */
  readonly sb: Superblock1;
  readonly personality: Personality;
  readonly report: AssemblyReport;
  readonly readOnly: boolean;
  private dirty = false;
  private closed = false;
  private sbUpdate: Promise<void> | null = null;
  /** superblock writes, and changes to what they encode, one at a time (md: reconfig_mutex) */
  private readonly sbLock = new KeyedLocks();
  private sbNeedsWrite = false;
  private readonly now: () => number;
  private readonly log: (msg: string) => void;
  private readonly reshapeBlocked: boolean;
  /** md's recovery_cp: everything below is in sync (MAX_SECTOR: all of it) */
  private resyncCp: bigint;
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
  private writeSeq = 0;
  /** some member is a replacement being built (the write path then looks for it) */
  private replacing = false;
  private cleaning: Promise<void> | null = null;
  private readonly io: MemberIo;
  private readonly syncOffload: SyncOffload | null;

  private constructor(
    members: Member[],
    sb: Superblock1,
    report: AssemblyReport,
    opts: AssembleOptions,
    build: (io: MemberIo) => Personality,
  ) {
    this.members = members;
    this.sb = sb;
    this.report = report;
    this.readOnly = !!opts.readOnly;
    this.now = opts.nowSeconds ?? (() => Math.floor(Date.now() / 1000));
    this.log = opts.log ?? (() => {});
    this.clock = opts.clock ?? new SystemClock();
    this.syncOffload = opts.syncOffload ?? null;
    this.io = this.memberIo();
    this.personality = build(this.io);
    this.reshapeBlocked = (sb.featureMap & Feature.RESHAPE_ACTIVE) !== 0;
    this.resyncCp = sb.resyncOffset;
    this.bitmap = this.reshapeBlocked ? null : this.makeBitmap();
    // barrier buckets: the bitmap chunk when there is one (md's bucket is 64 MiB), else 1 MiB
    this.barrier = new SyncBarrier(Math.max(2048, Math.min(this.bitmap?.chunkSectors ?? 2048, 2048 * 64)));
    this.sync = new SyncEngine(this.syncHost(), opts.syncLimits ?? DEFAULT_SYNC_LIMITS);
    this.updateReplacing();
  }

  /** The runtime bitmap from the members' internal v4 bitmaps (bits OR-ed: never less resync). */
  private makeBitmap(): WriteIntentBitmap | null {
    if ((this.sb.featureMap & Feature.BITMAP_OFFSET) === 0 || this.personality.maxDegraded === 0) return null;
    const withBitmap = this.members.filter(
      (m) => !m.faulty && m.slot !== null && m.bitmaps.length === 1 && bitmapMatches(m.bitmaps[0]!.sup, m.loaded.sb) && m.bitmaps[0]!.sup.version === 4,
    );
    if (withBitmap.length === 0) return null;
    const fresh = withBitmap.reduce((a, b) => (b.loaded.sb.events > a.loaded.sb.events ? b : a)).bitmaps[0]!;
    if (fresh.nbits === 0) return null;
    const bits = fresh.bits.slice();
    for (const m of withBitmap) {
      const b = m.bitmaps[0]!;
      if (b.nbits !== fresh.nbits || m.recoveryOffset !== null) continue;
      for (let i = 0; i < bits.length; i++) bits[i]! |= b.bits[i]!;
    }
    return new WriteIntentBitmap(fresh.sup, fresh.nbits, bits, {
      writeArea: (sector, bytes) => this.writeBitmapArea(sector, bytes),
      flushData: () => this.personality.flush(),
    });
  }

  /** Put bitmap area bytes on every working member, then flush; a failing member goes faulty. */
  private async writeBitmapArea(sector: number, bytes: Uint8Array): Promise<void> {
    if (this.readOnly) return;
    await Promise.all(
      this.members
        .filter((m) => !m.faulty && m.slot !== null && m.bitmaps.length > 0)
        .map(async (m) => {
          try {
            await m.dev.write(bytes, (m.bitmaps[0]!.startSector + sector) * 512);
            await m.dev.flush();
          } catch (e) {
            m.faulty = true;
            this.sbNeedsWrite = true;
            this.log(`md: bitmap write failed on ${m.dev.name}: ${(e as Error).message}; marking it faulty`);
          }
        }),
    );
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
    return this.personality.arraySectors * 512;
  }

  get events(): bigint {
    return this.sb.events;
  }

  get reshapeActive(): boolean {
    return this.reshapeBlocked;
  }

  /** Does the level keep redundancy (sync, bitmap, spares, replacement)? */
  get redundant(): boolean {
    return this.personality.maxDegraded > 0;
  }

  /** slots with a working, in-sync member */
  get workingSlots(): number[] {
    return this.members
      .filter((m) => m.slot !== null && !m.faulty && m.recoveryOffset === null)
      .map((m) => m.slot!);
  }

  /** (on the write path with a bitmap: counts without allocating) */
  get degraded(): boolean {
    let working = 0;
    for (const m of this.members) if (m.slot !== null && !m.faulty && m.recoveryOffset === null) working++;
    return working < this.sb.raidDisks;
  }

  /** The member serving a slot (never a replacement while the member it replaces works). */
  private slotMember(slot: number): Member | null {
    for (const m of this.members) if (m.slot === slot && !m.faulty && !m.replacement) return m;
    return this.replacing ? this.promoteReplacement(slot) : null;
  }

  /**
   * The member being replaced in this slot is gone: its replacement takes the slot and is
   * rebuilt from the others from where its copy got to (md's raid*_remove_disk promotion).
   * Called with no working original in the slot.
   */
  private promoteReplacement(slot: number): Member | null {
    const r = this.replacementOf(slot);
    if (!r) return null;
    r.replacement = false;
    this.updateReplacing();
    this.sbNeedsWrite = true;
    this.log(`md: ${r.dev.name} takes slot ${slot} over from the failed member it was replacing; recovery goes on from ${r.recoveryOffset}`);
    return r;
  }

  /** `replacing` is derived: some working member is a replacement being built. */
  private updateReplacing(): void {
    this.replacing = this.members.some((x) => x.replacement === true && !x.faulty);
  }

  /** The replacement being built for a slot, if any. */
  private replacementOf(slot: number): Member | null {
    for (const m of this.members) if (m.slot === slot && !m.faulty && m.replacement) return m;
    return null;
  }

  private memberIo(): MemberIo {
    const slots = this.sb.raidDisks;
    const self = this as MdArray;
    const io: MemberIo = {
      slots,
      get anyWriteMostly() {
        for (const m of self.members) if ((m.loaded.sb.devFlags & DEV_FLAG_WRITEMOSTLY) !== 0 && !m.faulty && m.slot !== null) return true;
        return false;
      },
      writeMostly: (slot) => ((this.slotMember(slot)?.loaded.sb.devFlags ?? 0) & DEV_FLAG_WRITEMOSTLY) !== 0,
      get resyncFrom() {
        return self.resyncCp === MAX_SECTOR ? Infinity : Number(self.resyncCp);
      },
      available: (slot, deviceSector, sectors) => {
        const m = this.slotMember(slot);
        if (!m) return false;
        if (this.rebuildingForReplacement.size > 0) {
          // a range rebuilt onto the replacement (the old member could not read it)
          const r = this.rebuildingForReplacement.get(slot);
          if (r && (deviceSector === undefined || (deviceSector < r[1] && r[0] < deviceSector + (sectors ?? 1)))) return false;
        }
        if (m.badReads && m.badReads.length > 0) {
          if (deviceSector === undefined) return false;
          const end = deviceSector + (sectors ?? 1);
          if (m.badReads.some(([a, b]) => deviceSector < b && a < end)) return false;
        }
        if (m.recoveryOffset === null) return true;
        if (deviceSector === undefined) return false;
        return deviceSector + (sectors ?? 1) <= m.recoveryOffset;
      },
      read: async (slot, deviceSector, buf) => {
        const m = this.slotMember(slot);
        if (!m) throw new TsmdError('ENODEV', `slot ${slot} has no working member`);
        try {
          await m.dev.read(buf, (Number(m.loaded.sb.dataOffset) + deviceSector) * 512);
        } catch (e) {
          // remembered for correction: the range is rewritten from redundancy after the read
          if (this.personality.maxDegraded > 0 && !this.readOnly) {
            (m.badReads ??= []).push([deviceSector, deviceSector + buf.length / 512]);
            this.badReadsPending = true;
          }
          throw e;
        }
      },
      write: async (slot, deviceSector, buf) => {
        const m = this.slotMember(slot);
        if (!m) throw new TsmdError('ENODEV', `slot ${slot} has no working member`);
        if (this.readOnly) throw new TsmdError('EROFS', 'array is read-only');
        const r = this.replacing ? this.replacementOf(slot) : null;
        if (r) {
          const only = this.rebuildingForReplacement.get(slot);
          if (only && deviceSector >= only[0] && deviceSector < only[1]) return this.writeReplacement(r, deviceSector, buf);
          // a replacement gets the writes that start below its frontier (the sync window holds
          // the barrier, so the copy never runs under a write; above it, the copy brings the data)
          if (r.recoveryOffset !== null && deviceSector < r.recoveryOffset) {
            await Promise.all([m.dev.write(buf, (Number(m.loaded.sb.dataOffset) + deviceSector) * 512), this.writeReplacement(r, deviceSector, buf)]);
            return;
          }
        }
        await m.dev.write(buf, (Number(m.loaded.sb.dataOffset) + deviceSector) * 512);
      },
      flush: async (slot) => {
        const m = this.slotMember(slot);
        const r = this.replacing ? this.replacementOf(slot) : null;
        if (r) await r.dev.flush().catch((e: unknown) => this.replacementFailed(r, e));
        if (m) await m.dev.flush();
      },
      bulk: this.syncOffload ? this.memberBulk(this.syncOffload) : null,
      reportError: (slot, op, err) => {
        const m = this.slotMember(slot);
        if (!m) return;
        const why0 = err instanceof Error ? err.message : String(err);
        if (op === 'read' && this.personality.maxDegraded > 0 && !this.readOnly && m.recoveryOffset === null) {
          m.readErrors = (m.readErrors ?? 0) + 1;
          if (m.readErrors <= this.readErrorLimit) {
            this.log(`md: read error on ${m.dev.name} (slot ${slot}): ${why0}; answering from redundancy and rewriting it`);
            return;
          }
          this.log(`md: ${m.dev.name} has had too many read errors (${m.readErrors} > ${this.readErrorLimit})`);
        }
        m.faulty = true;
        m.badReads = [];
        this.sbNeedsWrite = true;
        const why = err instanceof Error ? err.message : String(err);
        this.log(`md: ${op} error on ${m.dev.name} (slot ${slot}): ${why}; marking it faulty`);
      },
    };
    return io;
  }

  /**
   * The sync offload over the members: slots whose member is a plain file or block device,
   * not failing and not being replaced. Each call holds the members' fds open until it ends.
   */
  private memberBulk(offload: SyncOffload): MemberBulk {
    const usable = (slot: number): boolean => {
      const m = this.slotMember(slot);
      return !!m && !m.faulty && !(m.badReads && m.badReads.length > 0) && typeof m.dev.directFd === 'function';
    };
    return {
      usable: (slots) => {
        if (this.readOnly || this.replacing || this.rebuildingForReplacement.size > 0) return false;
        for (const s of slots) if (!usable(s)) return false;
        return true;
      },
      run: async (op, pieces) => {
        const held = new Map<number, { fd: DirectFd; base: number }>();
        const place = (l: MemberLoc, write: boolean): FdAt => {
          let h = held.get(l.slot);
          if (!h) {
            const m = this.slotMember(l.slot);
            const fd = m?.dev.directFd?.() ?? null;
            if (!m || !fd) throw new TsmdError('ENODEV', `slot ${l.slot}: no member for the sync offload`);
            h = { fd, base: Number(m.loaded.sb.dataOffset) };
            held.set(l.slot, h);
          }
          if (write && h.fd.readOnly) throw new TsmdError('EROFS', `slot ${l.slot}: opened read-only`);
          return [h.fd.fd, (h.base + l.sector) * 512];
        };
        try {
          const fdPieces: BulkPiece[] = pieces.map((p, tag) => ({
            tag,
            srcs: p.srcs.map((l) => place(l, false)),
            dsts: p.dsts.map((l) => place(l, true)),
            bytes: p.sectors * 512,
            syndrome: p.syndrome,
          }));
          return await offload.run(op, fdPieces);
        } finally {
          for (const h of held.values()) h.fd.release();
        }
      },
    };
  }

  /** A write to a replacement; if it fails, the replacement fails (the array is not affected). */
  private async writeReplacement(r: Member, deviceSector: number, buf: Uint8Array): Promise<void> {
    try {
      await r.dev.write(buf, (Number(r.loaded.sb.dataOffset) + deviceSector) * 512);
    } catch (e) {
      this.replacementFailed(r, e);
    }
  }

  private replacementFailed(r: Member, e: unknown): void {
    if (r.faulty) return;
    r.faulty = true;
    this.updateReplacing();
    this.sbNeedsWrite = true;
    this.log(`md: replacement ${r.dev.name} failed: ${e instanceof Error ? e.message : String(e)}; marking it faulty`);
  }

  /**
   * Assemble from explicit devices. The array takes ownership of the devices: they are closed
   * by close(), or right away when assembly is refused.
   */
  static async assemble(devs: BlockDevice[], opts: AssembleOptions = {}): Promise<MdArray> {
    try {
      return await MdArray.assembleInner(devs, opts);
    } catch (e) {
      await Promise.all(devs.map((d) => d.close().catch(() => {})));
      throw e;
    }
  }

  private static async assembleInner(devs: BlockDevice[], opts: AssembleOptions): Promise<MdArray> {
    const log = opts.log ?? (() => {});
    if (devs.length === 0) throw new TsmdError('EINVAL', 'no devices given to assemble');
    const loaded: Array<{ dev: BlockDevice; l: LoadedSuperblock }> = [];
    // with --uuid or --name the devices are a pool to search; otherwise every one must belong
    const searching = opts.uuid !== undefined || opts.name !== undefined;
    const matches = (sb: LoadedSuperblock['sb']): boolean => {
      if (opts.uuid && uuidText(sb.setUuid) !== uuidText(opts.uuid)) return false;
      if (opts.name !== undefined) {
        const n = setNameText(sb);
        if (n !== opts.name && !n.endsWith(`:${opts.name}`)) return false;
      }
      return true;
    };
    for (const dev of devs) {
      const l = await loadSuperblock(dev);
      if (!l) {
        if (searching) {
          log(`no md superblock on ${dev.name}; skipping it`);
          continue;
        }
        throw new TsmdError('EBADSB', `no md superblock on ${dev.name} - assembly aborted`);
      }
      if (searching && !matches(l.sb)) {
        log(`${dev.name} has wrong uuid or name (array ${uuidText(l.sb.setUuid)}); skipping it`);
        continue;
      }
      if (l.problems.length > 0) {
        throw new TsmdError('EBADSB', `${dev.name}: superblock refused: ${l.problems.join('; ')}`);
      }
      loaded.push({ dev, l });
    }
    if (loaded.length === 0) {
      const what = opts.uuid ? `uuid ${uuidText(opts.uuid)}` : `name ${opts.name}`;
      throw new TsmdError('ENODEV', `no devices found for the array with ${what}`);
    }
    const first = loaded[0]!.l.sb;
    for (const { dev, l } of loaded) {
      if (uuidText(l.sb.setUuid) !== uuidText(first.setUuid)) {
        throw new TsmdError(
          'EINVAL',
          `superblock on ${dev.name} (array ${uuidText(l.sb.setUuid)}) doesn't match others (array ${uuidText(first.setUuid)}) - assembly aborted`,
        );
      }
    }
    // the freshest superblock defines the array
    const fresh = loaded.reduce((a, b) => (b.l.sb.events > a.l.sb.events ? b : a)).l.sb;
    for (const { dev, l } of loaded) {
      const s = l.sb;
      if (s.level !== fresh.level || s.layout !== fresh.layout || s.chunkSize !== fresh.chunkSize) {
        if (s.events === fresh.events || isActiveRole(deviceRole(s))) {
          throw new TsmdError(
            'EINVAL',
            `${dev.name}: geometry (${sbLevelName(s.level)}, layout ${s.layout}, chunk ${s.chunkSize}) disagrees with the array (${sbLevelName(fresh.level)}, layout ${fresh.layout}, chunk ${fresh.chunkSize}) - assembly aborted`,
          );
        }
      }
    }
    const report: AssemblyReport = {
      accepted: [],
      stale: [],
      spares: [],
      missingSlots: [],
      degraded: false,
    };
    const members: Member[] = [];
    const bySlot = new Map<number, Member>();
    const sortedByEvents = [...loaded].sort((a, b) =>
      a.l.sb.events > b.l.sb.events ? -1 : a.l.sb.events < b.l.sb.events ? 1 : 0,
    );
    for (const { dev, l } of sortedByEvents) {
      const dn = l.sb.devNumber;
      const role = dn < fresh.maxDev ? fresh.devRoles[dn]! : Role.SPARE;
      const ownRole = deviceRole(l.sb);
      const behind = l.sb.events + 1n < fresh.events;
      if (role === Role.FAULTY) {
        log(`${dev.name} is marked faulty in the array; not using it`);
        report.stale.push(dev.name);
        continue;
      }
      if (isActiveRole(role) && role < fresh.raidDisks) {
        if (behind && !opts.force) {
          log(`kicking non-fresh ${dev.name} from array (events ${l.sb.events} < ${fresh.events})`);
          report.stale.push(dev.name);
          continue;
        }
        if ((l.sb.featureMap & Feature.REPLACEMENT) !== 0) {
          // a replacement being built for the slot: paired with its original below
          members.push({
            dev,
            loaded: l,
            devNumber: dn,
            slot: role,
            faulty: false,
            recoveryOffset: Number(l.sb.recoveryOffset),
            bitmaps: [],
            replacement: true,
          });
          report.accepted.push(dev.name);
          continue;
        }
        if (bySlot.has(role)) {
          log(
            `${dev.name} claims slot ${role} which ${bySlot.get(role)!.dev.name} already holds; not using it`,
          );
          report.stale.push(dev.name);
          continue;
        }
        const recovering =
          (l.sb.featureMap & Feature.RECOVERY_OFFSET) !== 0 ? Number(l.sb.recoveryOffset) : null;
        const m: Member = {
          dev,
          loaded: l,
          devNumber: dn,
          slot: role,
          faulty: false,
          recoveryOffset: recovering,
          bitmaps: [],
        };
        bySlot.set(role, m);
        members.push(m);
        report.accepted.push(dev.name);
      } else {
        if (isActiveRole(ownRole) && behind) {
          // it thinks it is active but the array has moved on without it: stale
          log(`kicking non-fresh ${dev.name} from array (events ${l.sb.events} < ${fresh.events})`);
          report.stale.push(dev.name);
          continue;
        }
        members.push({
          dev,
          loaded: l,
          devNumber: dn,
          slot: null,
          faulty: false,
          recoveryOffset: null,
          bitmaps: [],
        });
        report.spares.push(dev.name);
      }
    }
    for (const m of [...members]) {
      if (!m.replacement) continue;
      const slot = m.slot!;
      if (!bySlot.has(slot)) {
        // its original is missing: the replacement fills the slot and is rebuilt from the others
        m.replacement = false;
        bySlot.set(slot, m);
        log(`${m.dev.name} replaces the missing member of slot ${slot}; its recovery goes on`);
      } else if (members.some((x) => x !== m && x.replacement && x.slot === slot)) {
        log(`${m.dev.name} is a second replacement for slot ${slot}; not using it`);
        members.splice(members.indexOf(m), 1);
        report.accepted = report.accepted.filter((n) => n !== m.dev.name);
        report.stale.push(m.dev.name);
      } else if (fresh.resyncOffset !== MAX_SECTOR) {
        // after an unclean stop a write may have reached the original and not the
        // replacement: the copy starts again
        m.recoveryOffset = 0;
      }
    }
    for (let s = 0; s < fresh.raidDisks; s++) if (!bySlot.has(s)) report.missingSlots.push(s);
    for (const m of members) m.bitmaps = await loadBitmaps(m.dev, m.loaded).catch(() => []);

    // devices that are not members (stale, faulty, skipped) are closed now: never written
    const used = new Set(members.map((m) => m.dev));
    await Promise.all(devs.filter((d) => !used.has(d)).map((d) => d.close().catch(() => {})));
    const build = (io: MemberIo) => buildPersonality(fresh, members, io);
    const arr = new MdArray(
      members,
      { ...fresh, devRoles: fresh.devRoles.slice() },
      report,
      opts,
      build,
    );
    const available = Array.from({ length: fresh.raidDisks }, (_, s) => {
      const m = bySlot.get(s);
      return !!m && m.recoveryOffset === null;
    });
    if (!arr.personality.canRun(available)) {
      throw new TsmdError(
        'EIO',
        `${sbLevelName(fresh.level)} array ${uuidText(fresh.setUuid)}: only ${available.filter(Boolean).length} of ${fresh.raidDisks} members usable - not enough to start the array`,
      );
    }
    report.degraded = available.some((a) => !a);
    // mdadm counts a member being rebuilt as present (okcnt + rebuilding_cnt): its recovery
    // just continues; only a slot with no member at all needs --run
    if (report.missingSlots.length > 0 && !opts.run) {
      throw new TsmdError(
        'EBUSY',
        `array ${uuidText(fresh.setUuid)} assembled from ${available.filter(Boolean).length} drive(s) (out of ${fresh.raidDisks}), but not started: it would run degraded - use --run to start it anyway`,
      );
    }
    if (report.degraded)
      log(
        `array ${uuidText(fresh.setUuid)} has been started degraded (${available.filter(Boolean).length}/${fresh.raidDisks})`,
      );
    return arr;
  }

  // ---- request path ----

  private checkIo(buf: Uint8Array, offsetBytes: number, write: boolean): void {
    if (this.closed) throw new TsmdError('ENODEV', 'array is stopped');
    if (write && (this.readOnly || this.softReadOnly)) throw new TsmdError('EROFS', 'array is read-only');
    if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0) {
      throw new TsmdError('EINVAL', `invalid offset ${offsetBytes}`);
    }
    if (offsetBytes + buf.length > this.sizeBytes) {
      throw new TsmdError(
        'ENOSPC',
        `I/O at ${offsetBytes}+${buf.length} goes beyond the end of the array (${this.sizeBytes} bytes)`,
      );
    }
  }

  /** Read any byte range (sector-aligned requests go straight through). */
  async read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.checkIo(buf, offsetBytes, false);
    if (buf.length === 0) return;
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
    this.ioCounter++;
    if (this.badReadsPending) await this.correctReadErrors();
    await this.settleSuperblocks();
  }

  /**
   * md's fix_read_error: every member range that failed to read is rebuilt from the others
   * (a recovery of just that range, under the sync barrier), written back, and read again.
   * A range that cannot be rewritten or read back fails the member.
   */
  async correctReadErrors(): Promise<void> {
    if (this.correcting) return this.correcting;
    this.badReadsPending = false;
    this.correcting = (async () => {
      const p = this.personality;
      for (const m of this.members) {
        while (m.badReads && m.badReads.length > 0 && !m.faulty && m.slot !== null) {
          const [a, b] = m.badReads[0]!;
          const slot = m.slot;
          const release = await this.barrier.lockRanges(p.recoveryToSync(slot, a, b - a));
          let ok = false;
          try {
            // rebuild the range onto this member from the others (it is skipped as a source)
            await p.syncRegion(a, b - a, new Set([slot]));
            if (!m.faulty) {
              const check = new Uint8Array((b - a) * 512);
              await m.dev.read(check, (Number(m.loaded.sb.dataOffset) + a) * 512);
              ok = true;
            }
          } catch (e) {
            this.log(`md: read error not correctable on ${m.dev.name} (sectors ${a}-${b}): ${(e as Error).message}`);
          } finally {
            m.badReads = m.badReads.filter(([x, y]) => !(x === a && y === b));
            release();
          }
          if (ok) {
            m.loaded.sb.cntCorrectedRead += b - a;
            this.log(`md: read error corrected (${b - a} sectors at ${a} on ${m.dev.name})`);
          } else if (!m.faulty) {
            const avail = Array.from({ length: this.sb.raidDisks }, (_, s) => s !== slot && this.workingSlots.includes(s));
            if (!this.personality.canRun(avail)) {
              // md never fails the last copy for a read error: that read alone gets EIO
              this.log(`md: ${m.dev.name}: unrecoverable read error at sectors ${a}-${b}, and no other copy: keeping the member`);
              continue;
            }
            m.faulty = true;
            m.badReads = [];
            this.sbNeedsWrite = true;
            this.log(`md: ${m.dev.name}: unrecoverable read error; marking it faulty`);
          }
        }
      }
    })();
    try {
      await this.correcting;
    } finally {
      this.correcting = null;
    }
    if (this.sbNeedsWrite) this.memberFailed();
  }

  /**
   * Write any byte range. Partial sectors at the edges are read, patched and written back
   * under a per-sector lock, so concurrent unaligned writers never lose each other's bytes.
   */
  async write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.checkIo(buf, offsetBytes, true);
    if (this.reshapeBlocked) {
      throw new TsmdError(
        'EBUSY',
        'a reshape is in progress: writes wait for the reshape engine (tsmd --grow --continue)',
      );
    }
    if (buf.length === 0) return;
    this.inflightWrites++;
    this.writeSeq++;
    this.ioCounter++;
    const first = Math.floor(offsetBytes / 512);
    const [s0, s1] = this.personality.syncRangeOf(first, Math.ceil((offsetBytes + buf.length) / 512) - first);
    let entered = false;
    let started = false;
    let ok = false;
    try {
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
      this.inflightWrites--;
    }
    if (this.badReadsPending) await this.correctReadErrors();
    await this.settleSuperblocks();
  }

  private async writeData(buf: Uint8Array, offsetBytes: number): Promise<void> {
    if (offsetBytes % 512 === 0 && buf.length % 512 === 0) {
      await this.personality.write(buf, offsetBytes / 512);
    } else {
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
  }

  async flush(): Promise<void> {
    if (this.closed) throw new TsmdError('ENODEV', 'array is stopped');
    await this.personality.flush();
    await this.settleSuperblocks();
  }

  /** If a member failed, record it on the others before the I/O is acknowledged. */
  private async settleSuperblocks(): Promise<void> {
    let failed = false;
    while (this.sbNeedsWrite) {
      this.sbNeedsWrite = false;
      failed = true;
      await this.writeSuperblocks({ bump: true });
    }
    if (failed) this.memberFailed();
  }

  /** A member failed: a hot spare (if any) takes over in the background. */
  private memberFailed(): void {
    if (this.background) this.sync.kick();
  }

  /** First write after open: record "active" (resync needed after a crash) on every member. */
  private async markDirty(): Promise<void> {
    if (this.sbUpdate) return this.sbUpdate;
    this.sbUpdate = (async () => {
      this.dirty = true;
      // with a runtime bitmap a crash resyncs the chunks whose bits are set; without one
      // (a clustered bitmap here), all bits are set so that everything is resynced
      await this.writeSuperblocks({ bump: true, bitmapBits: this.bitmap ? undefined : 'all' });
    })();
    try {
      await this.sbUpdate;
    } finally {
      this.sbUpdate = null;
    }
  }

  /**
   * Run `fn` while no superblock write is under way. Two writes in flight at once could land
   * in either order on a member (the thread pool reorders them), so the older state could win;
   * and a write encodes member fields (bitmap offset, feature bits) that --grow changes.
   */
  private async underSbLock<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.sbLock.acquire([0]);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /**
   * Write the array state to every working member (bitmap header first, then superblock).
   * `bump`: a state change, so the event count goes up by one, under the same lock as the write
   * (md_update_sb): a count bumped before waiting for the lock would ride on the write in
   * progress, and a crash during it could leave members two events apart, which assembly
   * takes for a stale member.
   */
  writeSuperblocks(opts: { bitmapBits?: 'all' | 'none'; bump?: boolean } = {}): Promise<void> {
    return this.underSbLock(() => this.writeSuperblocksLocked(opts));
  }

  private async writeSuperblocksLocked(opts: { bitmapBits?: 'all' | 'none'; bump?: boolean }): Promise<void> {
    assert(!this.readOnly, 'superblock write on a read-only array');
    if (opts.bump) this.sb.events += 1n;
    // a replacement whose original failed holds the slot from now on
    if (this.replacing) {
      for (let s = 0; s < this.sb.raidDisks; s++) if (!this.members.some((m) => m.slot === s && !m.faulty && !m.replacement)) this.promoteReplacement(s);
    }
    this.sb.utime = BigInt(this.now());
    // md's super_1_sync: an active array says 0 (resync after a crash), a clean one recovery_cp
    this.sb.resyncOffset = this.dirty ? 0n : this.resyncCp;
    if (this.bitmap) {
      if (opts.bitmapBits === 'none') this.bitmap.clearAll(this.sb.events);
      else if (opts.bitmapBits === 'all') this.bitmap.setAll(this.sb.events);
      else this.bitmap.setEvents(this.sb.events);
      await this.bitmap.writeThrough(opts.bitmapBits !== undefined);
    }
    const roles = new Array<number>(this.sb.maxDev).fill(Role.SPARE);
    let maxDev = this.sb.maxDev;
    for (const m of this.members) if (m.devNumber >= maxDev) maxDev = m.devNumber + 1;
    if (maxDev > roles.length)
      roles.push(...new Array<number>(maxDev - roles.length).fill(Role.SPARE));
    for (const m of this.members) {
      roles[m.devNumber] = m.faulty ? Role.FAULTY : m.slot === null ? Role.SPARE : m.slot;
    }
    this.sb.devRoles = roles;
    this.sb.maxDev = maxDev;
    const jobs = this.members
      .filter((m) => !m.faulty)
      .map(async (m) => {
        const own = m.loaded.sb;
        const sb: Superblock1 = {
          ...this.sb,
          devNumber: m.devNumber,
          deviceUuid: own.deviceUuid,
          devFlags: own.devFlags,
          dataOffset: own.dataOffset,
          dataSize: own.dataSize,
          superOffset: own.superOffset,
          bitmapOffset: own.bitmapOffset,
          bblogShift: own.bblogShift,
          bblogSize: own.bblogSize,
          bblogOffset: own.bblogOffset,
          newOffset: own.newOffset,
          cntCorrectedRead: own.cntCorrectedRead,
          recoveryOffset: m.recoveryOffset === null ? 0n : BigInt(m.recoveryOffset),
          featureMap:
            (m.recoveryOffset === null
              ? this.sb.featureMap & ~Feature.RECOVERY_OFFSET
              : this.sb.featureMap | Feature.RECOVERY_OFFSET) & ~Feature.REPLACEMENT | (m.replacement ? Feature.REPLACEMENT : 0),
          devRoles: roles,
          pad3: new Uint8Array(32),
        };
        try {
          if (!this.bitmap) await this.writeBitmapHeader(m, opts.bitmapBits);
          const block = encodeSuperblock(sb);
          const n = Math.ceil(sbBytes(sb.maxDev) / 512) * 512;
          await m.dev.write(block.subarray(0, n), m.loaded.sbStartSector * 512);
          await m.dev.flush();
          m.loaded = { ...m.loaded, sb, raw: block };
        } catch (e) {
          m.faulty = true;
          this.sbNeedsWrite = true;
          this.log(
            `md: superblock write failed on ${m.dev.name}: ${(e as Error).message}; marking it faulty`,
          );
        }
      });
    await Promise.all(jobs);
  }

  private async writeBitmapHeader(m: Member, bits?: 'all' | 'none'): Promise<void> {
    const b = m.bitmaps[0];
    if (!b || !bitmapMatches(b.sup, m.loaded.sb)) return;
    b.sup.events = this.sb.events;
    if (bits === 'none') b.sup.eventsCleared = this.sb.events;
    const area = new Uint8Array(bits ? bitmapAreaBytes(b.nbits) : 512);
    if (!bits) {
      const head = new Uint8Array(512);
      await m.dev.read(head, b.startSector * 512);
      area.set(head);
    } else {
      area.fill(0xff, BITMAP_SB_BYTES);
      if (bits === 'none')
        for (let i = 0; i < b.nbits; i++) area[BITMAP_SB_BYTES + (i >>> 3)]! &= ~(1 << (i & 7));
      b.bits = area.slice(BITMAP_SB_BYTES, BITMAP_SB_BYTES + Math.ceil(b.nbits / 8));
    }
    area.set(encodeBitmapSuper(b.sup), 0);
    await m.dev.write(area, b.startSector * 512);
  }

  // ---- management (mdadm --manage, --readonly, --readwrite) ----

  get isReadOnly(): boolean {
    return this.readOnly || this.softReadOnly;
  }

  get isDirty(): boolean {
    return this.dirty;
  }

  /** started after an unclean shutdown and not resynced since (md: resync pending) */
  get resyncPending(): boolean {
    return this.resyncCp !== MAX_SECTOR && this.personality.maxDegraded > 0 && !this.sync.busy;
  }

  get isClean(): boolean {
    return !this.dirty && this.sb.resyncOffset === MAX_SECTOR;
  }

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
    if (this.readOnly || this.closed || !this.dirty || this.inflightWrites > 0 || this.sbUpdate || this.cleaning) return;
    this.cleaning = (async () => {
      await this.writeCleanState();
    })();
    try {
      await this.cleaning;
    } finally {
      this.cleaning = null;
    }
  }

  /**
   * md's safe mode: the caller (the daemon, which owns the clock) reports how long the array
   * has had no write; past the delay it is marked clean so a crash while idle needs no resync.
   * Returns the write sequence number to compare on the next tick.
   */
  get writeSequence(): number {
    return this.writeSeq;
  }

  private memberByPath(path: string): Member {
    const m = this.members.find((x) => x.dev.name === path);
    if (!m) throw new TsmdError('ENODEV', `${path} is not a member of this array`);
    return m;
  }

  /** mdadm --fail: mark a member faulty; the array goes on degraded if it can. */
  async failMember(path: string): Promise<void> {
    const m = this.memberByPath(path);
    if (m.faulty) return;
    if (m.slot !== null && m.recoveryOffset === null) {
      const avail = Array.from({ length: this.sb.raidDisks }, (_, s) => this.workingSlots.includes(s) && s !== m.slot);
      if (!this.personality.canRun(avail)) {
        throw new TsmdError('EBUSY', `set ${path} faulty refused: the array cannot run without it`);
      }
    }
    m.faulty = true;
    this.log(`md: ${path} set faulty (slot ${m.slot ?? 'spare'})`);
    await this.writeSuperblocks({ bump: true });
    this.memberFailed();
  }

  /**
   * mdadm --replace [--with]: mark an active member for replacement; a spare (the --with one
   * when given) is rebuilt as its copy while it keeps serving, then it is marked faulty. With
   * no spare yet the mark waits for one (--add). Returns the slot.
   */
  async requestReplacement(path: string, withPath?: string): Promise<number> {
    if (this.personality.maxDegraded === 0) throw new TsmdError('EINVAL', `${sbLevelName(this.level)} has no redundancy: ${path} cannot be replaced`);
    if (this.readOnly || this.softReadOnly) throw new TsmdError('EROFS', 'array is read-only');
    const m = this.memberByPath(path);
    if (m.faulty || m.slot === null || m.replacement || m.recoveryOffset !== null)
      throw new TsmdError('EINVAL', `${path} is not active and so cannot be replaced.`);
    if (withPath !== undefined) {
      const w = this.memberByPath(withPath);
      if (w.faulty) throw new TsmdError('EINVAL', `${withPath} is faulty and cannot be a replacement`);
      if (w.slot !== null) throw new TsmdError('EINVAL', `${withPath} is active and cannot be a replacement`);
      w.replaceFor = m.slot;
    }
    m.wantReplacement = true;
    this.log(`md: ${path} (slot ${m.slot}) marked for replacement${withPath ? ` by ${withPath}` : ''}`);
    if (this.background) this.sync.kick();
    return m.slot;
  }

  /** mdadm --remove: only a faulty or spare member can go; its slot becomes empty. */
  async removeMember(path: string): Promise<void> {
    const m = this.memberByPath(path);
    if (!m.faulty && m.slot !== null) {
      throw new TsmdError('EBUSY', `hot remove failed for ${path}: Device or resource busy (fail it first)`);
    }
    this.members.splice(this.members.indexOf(m), 1);
    if (m.slot !== null && !this.report.missingSlots.includes(m.slot) && !this.slotMember(m.slot)) {
      this.report.missingSlots.push(m.slot);
    }
    await m.dev.close().catch(() => {});
    this.log(`md: unbind ${path}`);
    await this.writeSuperblocks({ bump: true });
  }

  /**
   * mdadm --add / --add-spare: a new member joins as a spare (superblock written on it).
   * A device that was a member of this array and is still current goes back into its slot
   * (--re-add semantics); one that missed writes needs the recovery of the sync engine.
   */
  async addMember(
    dev: BlockDevice,
    opts: { reAdd?: boolean; nowSeconds?: number; deviceUuid: Uint8Array; writeMostly?: boolean },
  ): Promise<'spare' | 're-added'> {
    if (this.members.some((m) => m.dev.name === dev.name)) throw new TsmdError('EBUSY', `${dev.name} is already a member`);
    if (opts.writeMostly && this.level !== 1) throw new TsmdError('EINVAL', `--write-mostly is only meaningful for raid1 (${dev.name})`);
    const withFlags = (flags: number): number =>
      opts.writeMostly === undefined ? flags : opts.writeMostly ? flags | DEV_FLAG_WRITEMOSTLY : flags & ~DEV_FLAG_WRITEMOSTLY;
    const existing = await loadSuperblock(dev);
    if (existing && existing.problems.length === 0 && uuidText(existing.sb.setUuid) === uuidText(this.sb.setUuid)) {
      const role = deviceRole(existing.sb);
      const freeSlot = isActiveRole(role) && role < this.sb.raidDisks && !this.slotMember(role);
      const numberFree = !this.members.some((m) => m.devNumber === existing.sb.devNumber);
      const current = existing.sb.events + 1n >= this.sb.events;
      // md: a member newer than events_cleared missed only what the bitmap still records
      const fromBitmap =
        !current &&
        this.bitmap !== null &&
        existing.sb.events >= this.bitmap.sup.eventsCleared &&
        (existing.sb.featureMap & Feature.RECOVERY_OFFSET) === 0;
      if (freeSlot && numberFree && (current || fromBitmap)) {
        const bitmaps = await loadBitmaps(dev, existing).catch(() => []);
        existing.sb.devFlags = withFlags(existing.sb.devFlags);
        const m: Member = { dev, loaded: existing, devNumber: existing.sb.devNumber, slot: role, faulty: false, recoveryOffset: null, bitmaps };
        if (fromBitmap) {
          m.recoveryOffset = 0;
          m.bitmapGuided = true;
        }
        this.members.push(m);
        this.report.missingSlots = this.report.missingSlots.filter((s) => s !== role);
        await this.writeSuperblocks({ bump: true });
        if (this.bitmap) await this.bitmap.writeThrough(true);
        this.log(`md: re-added ${dev.name} to slot ${role}${fromBitmap ? ' (recovery of the chunks the bitmap records)' : ''}`);
        if (fromBitmap && this.background) this.sync.kick();
        return 're-added';
      }
      if (opts.reAdd) {
        throw new TsmdError(
          'EBUSY',
          freeSlot
            ? `--re-add for ${dev.name} is not possible: it missed writes the bitmap does not record (events ${existing.sb.events}, bitmap cleared at ${this.bitmap?.sup.eventsCleared ?? 'no bitmap'}); use --add for a full recovery`
            : `--re-add for ${dev.name} to array ${this.uuid} is not possible: its slot is in use`,
        );
      }
    } else if (opts.reAdd) {
      throw new TsmdError('EINVAL', `--re-add for ${dev.name} to array ${this.uuid} is not possible: it was not a member`);
    }
    if (dev.readOnly) throw new TsmdError('EROFS', `${dev.name} is read-only`);
    // a new spare: lowest free device number from raid_disks up (the kernel's choice)
    let dn = this.sb.raidDisks;
    while (this.members.some((m) => m.devNumber === dn)) dn++;
    const template = this.members.find((m) => !m.faulty)?.loaded;
    if (!template) throw new TsmdError('ENODEV', 'no working member to copy the layout from');
    const devSectors = Math.floor(dev.sizeBytes / 512);
    const own = template.sb;
    const dataOffset = Number(own.dataOffset);
    const minor = template.minor;
    const sbStart = minor === 0 ? Math.floor((devSectors - 16) / 8) * 8 : template.sbStartSector;
    const needed = this.personality.maxDegraded === 0 ? 0 : Number(this.sb.size);
    const dataSize = minor === 0 ? sbStart - (template.sbStartSector - Number(own.dataSize)) : devSectors - dataOffset;
    if (dataSize < needed || dataSize <= 0) {
      throw new TsmdError('ENOSPC', `${dev.name} is too small: ${dataSize} data sectors, the array needs ${needed}`);
    }
    const sb: Superblock1 = {
      ...own,
      devNumber: dn,
      deviceUuid: opts.deviceUuid,
      devFlags: withFlags(0),
      dataSize: BigInt(dataSize),
      superOffset: BigInt(sbStart),
      recoveryOffset: 0n,
      cntCorrectedRead: 0,
      devRoles: this.sb.devRoles.slice(),
    };
    const loaded: LoadedSuperblock = { sb, raw: encodeSuperblock({ ...sb }), minor, sbStartSector: sbStart, devSectors, problems: [] };
    const member: Member = { dev, loaded, devNumber: dn, slot: null, faulty: false, recoveryOffset: null, bitmaps: [] };
    // an internal bitmap area on the new member, copied from a working member
    const src = this.members.find((m) => !m.faulty && m.bitmaps.length > 0);
    if (src && own.featureMap & Feature.BITMAP_OFFSET) {
      const b = src.bitmaps[0]!;
      const area = new Uint8Array(bitmapAreaBytes(b.nbits) * Math.max(1, src.bitmaps.length));
      await src.dev.read(area, b.startSector * 512);
      const at = sbStart + own.bitmapOffset;
      await dev.write(area, at * 512);
      member.bitmaps = await loadBitmaps(dev, loaded).catch(() => []);
    }
    this.members.push(member);
    await this.writeSuperblocks({ bump: true });
    this.log(`md: bind ${dev.name} as a spare (device number ${dn})`);
    if (this.background) this.sync.kick();
    return 'spare';
  }

  // ---- sync ----

  /** Slots that hold a member being rebuilt. */
  get rebuildingSlots(): number[] {
    return this.members
      .filter((m) => m.slot !== null && !m.faulty && m.recoveryOffset !== null)
      .map((m) => m.slot!);
  }

  /**
   * Start the background work of a running array (the daemon calls this): the sync engine
   * looks for work now and after every change, and the bitmap daemon runs every daemonSleep.
   */
  startBackground(): void {
    if (this.background || this.readOnly || this.closed) return;
    this.background = true;
    this.sync.kick();
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
   * mdadm --grow --bitmap=internal|none on a running array. Adding: every member gets a bitmap
   * area where mdadm's add_internal_bitmap1 puts it (1.1/1.2: 4 KiB after the superblock,
   * before a bad-block log; 1.0: just before the superblock, or 3 KiB after it), chunk from
   * --bitmap-chunk or mdadm's default (>= 64 MiB, at most 128 KiB of bits). Writes are held
   * and the members flushed first, so the new bitmap starts with no bits set and events ==
   * events_cleared: a crash from then on resyncs only what the bitmap records. Removing: the
   * same quiescing, then the feature bit goes. Refused while a sync runs or is owed (as md).
   */
  async setBitmap(kind: 'internal' | 'none', opts: { chunkBytes?: number; devName?: string } = {}): Promise<void> {
    const md = opts.devName ?? this.name;
    if (this.closed) throw new TsmdError('ENODEV', 'array is stopped');
    if (this.readOnly || this.softReadOnly) throw new TsmdError('EROFS', `${md} is read-only`);
    const has = (this.sb.featureMap & Feature.BITMAP_OFFSET) !== 0;
    if (kind === 'none' && !has) throw new TsmdError('EINVAL', `no bitmap found on ${md}`);
    if (kind === 'internal' && has) throw new TsmdError('EEXIST', `bitmap already present on ${md}`);
    if (kind === 'internal' && this.personality.maxDegraded === 0)
      throw new TsmdError('EINVAL', `Bitmaps not meaningful with level ${sbLevelName(this.level)}`);
    if (kind === 'none' && (this.sb.featureMap & Feature.CLUSTERED) !== 0)
      throw new TsmdError('ENOTSUP', `${md} has a clustered bitmap: removing it is md-cluster's business`);
    if (this.reshapeBlocked || this.sync.busy || this.resyncCp !== MAX_SECTOR || this.rebuildingSlots.length > 0)
      throw new TsmdError('EBUSY', 'Cannot add bitmap while array is resyncing or reshaping etc.');
    const size = this.personality.syncSectors;
    const places = kind === 'internal' ? this.members.filter((m) => !m.faulty).map((m) => ({ m, ...bitmapPlace(m.loaded, size, opts.chunkBytes) })) : [];
    if (kind === 'internal' && new Set(places.map((p) => p.chunk)).size > 1)
      throw new TsmdError('EINVAL', 'members would need different bitmap chunks; give --bitmap-chunk');
    // hold every write (in flight ones finish), then make what they wrote durable everywhere
    const release = await this.barrier.lockRanges([[0, size]]);
    try {
      await this.personality.flush();
      // a superblock write already under way (a clean or active transition, which do not wait
      // for the barrier) lands first; none starts until the new state is on every member
      await this.underSbLock(() => this.setBitmapLocked(kind, md, places, size));
    } finally {
      release();
    }
  }

  private async setBitmapLocked(kind: 'internal' | 'none', md: string, places: { m: Member; offset: number; chunk: number }[], size: number): Promise<void> {
    this.sb.events += 1n;
    if (kind === 'none') {
      this.bitmap = null;
      this.bitmapTimer?.cancel();
      this.bitmapTimer = null;
      this.sb.featureMap &= ~Feature.BITMAP_OFFSET;
      for (const m of this.members) {
        m.bitmaps = [];
        m.loaded = { ...m.loaded, sb: { ...m.loaded.sb, featureMap: m.loaded.sb.featureMap & ~Feature.BITMAP_OFFSET } };
      }
      await this.writeSuperblocksLocked({});
      this.log(`md: ${md}: internal bitmap removed`);
      return;
    }
    const chunk = places[0]!.chunk;
    const nbits = bitmapBits(size, chunk);
    const sup = newBitmapSuper({ uuid: this.sb.setUuid, events: this.sb.events, syncSectors: size, chunkBytes: chunk });
    const area = new Uint8Array(bitmapAreaBytes(nbits));
    fillCleanBits(area, nbits);
    area.set(encodeBitmapSuper(sup), 0);
    await Promise.all(
      places.map(async ({ m, offset }) => {
        await m.dev.write(area, (m.loaded.sbStartSector + offset) * 512);
        await m.dev.flush();
        m.loaded = { ...m.loaded, sb: { ...m.loaded.sb, bitmapOffset: offset, featureMap: m.loaded.sb.featureMap | Feature.BITMAP_OFFSET } };
        m.bitmaps = await loadBitmaps(m.dev, m.loaded);
      }),
    );
    this.sb.featureMap |= Feature.BITMAP_OFFSET;
    this.sb.bitmapOffset = places[0]!.offset;
    this.bitmap = this.makeBitmap();
    await this.writeSuperblocksLocked({});
    this.startBitmapDaemon();
    this.log(`md: ${md}: internal bitmap added (${nbits} bits of ${chunk / 1024} KiB)`);
  }

  /** One pass of the bitmap daemon: bits of chunks idle for a whole period are cleared. */
  async bitmapDaemonPass(): Promise<number> {
    if (!this.bitmap || this.readOnly || this.closed) return 0;
    return this.bitmap.daemonPass({ degraded: this.degraded || this.rebuildingSlots.length > 0, events: this.sb.events });
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
      planSync: (requested) => this.planSync(requested),
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
        if (this.resyncCp !== MAX_SECTOR) this.resyncCp = BigInt(Math.max(Number(this.resyncCp), pos));
      },
      checkpoint: async () => {
        if (this.closed || this.readOnly) return;
        await this.writeSuperblocks();
      },
      recoveryDone: async (slots) => {
        for (const s of slots) {
          const r = this.replacementOf(s);
          if (r) {
            // the replacement is complete: the member it replaces is marked faulty (md)
            const old = this.slotMember(s);
            if (old) {
              old.faulty = true;
              old.wantReplacement = false;
              this.log(`md: ${r.dev.name} has replaced ${old.dev.name} in slot ${s}; ${old.dev.name} is now faulty`);
            }
            r.replacement = false;
            r.replaceFor = undefined;
            this.updateReplacing();
          }
          const m = r ?? this.slotMember(s);
          if (m) {
            m.recoveryOffset = null;
            m.bitmapGuided = false;
          }
        }
        // every member now holds every write: the bits owed to the missing member can go
        if (!this.degraded && this.bitmap && this.resyncCp === MAX_SECTOR) this.bitmap.synced(0, this.personality.syncSectors);
        await this.writeSuperblocks({ bump: true });
        this.log(`md: recovery done (${slots.length} member(s))`);
      },
      resyncDone: async () => {
        this.resyncCp = MAX_SECTOR;
        await this.writeSuperblocks({ bump: true });
      },
      ioCount: () => this.ioCounter,
      canSync: () => !this.readOnly && !this.softReadOnly && !this.closed && !this.reshapeBlocked && !this.degraded && this.personality.maxDegraded > 0,
    };
  }

  /** The member a recovery of this slot writes: its replacement, or a member being rebuilt. */
  private rebuildTarget(slot: number): Member | null {
    const r = this.replacing ? this.replacementOf(slot) : null;
    if (r) return r;
    const m = this.slotMember(slot);
    return m && m.recoveryOffset !== null ? m : null;
  }

  /** Ranges of a slot being rebuilt onto its replacement from the others (copy fallback). */
  private readonly rebuildingForReplacement = new Map<number, [number, number]>();

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
        jobs.push(async () => {
          const r = this.replacementOf(slot);
          const old = r ? this.slotMember(slot) : null;
          if (!r || !old || old.replacement) {
            // promoted (the member it replaced failed): an ordinary recovery of the slot
            if (this.rebuildTarget(slot)) await this.personality.syncRegion(at, n, new Set([slot]));
            return;
          }
          const buf = takeSyncBuffer(n * 512);
          try {
            try {
              await old.dev.read(buf, (Number(old.loaded.sb.dataOffset) + at) * 512);
            } catch (e) {
              this.io.reportError(slot, 'read', e);
              await this.rebuildReplacementRange(slot, at, n);
              return;
            }
            await this.writeReplacement(r, at, buf);
          } finally {
            giveSyncBuffer(buf);
          }
        });
      }
    }
    await runLimited(jobs, SYNC_PARALLEL);
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

  /** md_check_recovery's choice: recovery first (activating spares), then resync, then check. */
  private async planSync(requested: 'check' | 'repair' | null): Promise<SyncPlan | null> {
    if (this.readOnly || this.softReadOnly || this.closed || this.reshapeBlocked) return null;
    const p = this.personality;
    if (p.maxDegraded === 0) return null;
    // activate spares into empty slots
    let activated = false;
    for (let slot = 0; slot < this.sb.raidDisks; slot++) {
      if (this.slotMember(slot)) continue;
      const spare = this.members.find((m) => m.slot === null && !m.faulty);
      if (!spare) break;
      spare.slot = slot;
      spare.recoveryOffset = 0;
      spare.bitmapGuided = false;
      this.report.missingSlots = this.report.missingSlots.filter((s) => s !== slot);
      this.log(`md: recovery of slot ${slot} onto ${spare.dev.name} started`);
      activated = true;
    }
    const rebuild = this.members.filter((m) => m.slot !== null && !m.faulty && m.recoveryOffset !== null && !m.replacement);
    if (rebuild.length > 0) {
      const avail = Array.from({ length: this.sb.raidDisks }, (_, s) => this.workingSlots.includes(s));
      if (!p.canRun(avail)) return null;
      if (activated) {
        await this.writeSuperblocks({ bump: true });
      }
      return {
        kind: 'recovery',
        slots: rebuild.map((m) => m.slot!),
        start: Math.min(...rebuild.map((m) => m.recoveryOffset!)),
        bitmapGuided: this.bitmap !== null && rebuild.every((m) => m.bitmapGuided === true),
      };
    }
    // mdadm --replace: a spare (the --with one first) becomes the replacement of each member
    // that wants one; replacements already under way go on
    let replaced = false;
    for (let slot = 0; slot < this.sb.raidDisks; slot++) {
      const old = this.slotMember(slot);
      if (!old?.wantReplacement || old.recoveryOffset !== null || this.replacementOf(slot)) continue;
      const spare =
        this.members.find((m) => m.slot === null && !m.faulty && m.replaceFor === slot) ??
        this.members.find((m) => m.slot === null && !m.faulty && m.replaceFor === undefined);
      if (!spare) continue;
      spare.slot = slot;
      spare.replacement = true;
      spare.recoveryOffset = 0;
      spare.bitmapGuided = false;
      this.updateReplacing();
      replaced = true;
      this.log(`md: replacement of ${old.dev.name} (slot ${slot}) by ${spare.dev.name} started`);
    }
    const repl = this.members.filter((m) => m.replacement && !m.faulty);
    if (repl.length > 0) {
      if (replaced) {
        await this.writeSuperblocks({ bump: true });
      }
      return { kind: 'recovery', slots: repl.map((m) => m.slot!), start: Math.min(...repl.map((m) => m.recoveryOffset!)), bitmapGuided: false, replace: true };
    }
    if (this.resyncCp !== MAX_SECTOR && !this.degraded) return { kind: 'resync', start: Number(this.resyncCp) };
    if (requested && !this.degraded) return { kind: requested, start: 0 };
    return null;
  }

  /**
   * Bring the array to a fully redundant state now (recover members being rebuilt, put spares
   * into empty slots, resync after an unclean shutdown) and wait for it.
   */
  async syncNow(
    opts: { checkpointSectors?: number; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<{ recovered: number; resynced: number }> {
    assert(!this.readOnly, 'sync on a read-only array');
    if (this.reshapeBlocked)
      throw new TsmdError('EBUSY', 'a reshape is in progress; it must finish first');
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
    if (this.personality.maxDegraded === 0) throw new TsmdError('EINVAL', `${sbLevelName(this.level)} has no redundancy to ${action}`);
    await this.sync.setAction(action);
  }

  /**
   * Flush, then record a clean state on every member: in sync unless a resync was pending at
   * assembly and has not run since; bitmap bits cleared only when every member got every write.
   */
  private async writeCleanState(): Promise<void> {
    await this.personality.flush();
    await this.settleSuperblocks();
    const inSync = this.resyncCp === MAX_SECTOR;
    this.dirty = false;
    await this.writeSuperblocks({ bump: true, bitmapBits: inSync && !this.degraded && this.rebuildingSlots.length === 0 ? 'none' : undefined });
  }

  /** Stop: flush, and record a clean shutdown on every member (mdadm --stop). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.background = false;
    this.bitmapTimer?.cancel();
    this.bitmapTimer = null;
    await this.sync.stop().catch(() => {});
    if (this.cleaning) await this.cleaning.catch(() => {});
    try {
      if (!this.readOnly && (this.dirty || this.sbNeedsWrite)) await this.writeCleanState();
    } finally {
      this.closed = true;
      await Promise.all(this.members.map((m) => m.dev.close().catch(() => {})));
    }
  }
}

/**
 * Where mdadm's add_internal_bitmap1 (Grow, with a settable bitmap location) puts a bitmap on
 * an existing member, and the chunk: offset relative to the superblock, in sectors.
 */
export function bitmapPlace(l: LoadedSuperblock, syncSectors: number, chunkBytes?: number): { offset: number; chunk: number } {
  const sb = l.sb;
  let room: number;
  let offset: number;
  let bbl: number;
  if (l.minor === 0) {
    room = Number(sb.superOffset) - Number(sb.dataOffset) - Number(sb.dataSize);
    bbl = Math.max(sb.bblogSize, 8, -sb.bblogOffset);
    if (room < 6 && sb.maxDev <= 384) {
      room = 6;
      offset = 2;
      bbl = 0;
    } else offset = 0;
  } else {
    room = Number(sb.dataOffset) - Number(sb.superOffset);
    bbl = sb.bblogSize;
    if (bbl) room = sb.bblogOffset + bbl;
    else bbl = 8;
    room -= 8;
    offset = 8;
  }
  room -= bbl;
  if (chunkBytes === undefined && room > 256) room = 256;
  if (room <= 1) throw new TsmdError('ENOSPC', `no room for a bitmap on ${l.minor === 0 ? 'this 1.0' : `this 1.${l.minor}`} member`);
  // the same chunk rule as at create (mdadm's add_internal_bitmap1 serves both)
  const { chunk: dflt, minChunk } = defaultBitmapChunk(syncSectors, room);
  let chunk: number;
  if (chunkBytes === undefined) chunk = dflt;
  else if (chunkBytes < minChunk) throw new TsmdError('EINVAL', `bitmap chunk ${chunkBytes / 1024}K too small: at least ${minChunk / 1024}K is needed for this size`);
  else if ((chunkBytes & (chunkBytes - 1)) !== 0) throw new TsmdError('EINVAL', `bitmap chunk ${chunkBytes} bytes is not a power of two`);
  else chunk = chunkBytes;
  if (offset === 0) {
    const n = Math.floor((syncSectors * 512) / chunk) + 1;
    const r = Math.ceil((Math.ceil(n / 8) + BITMAP_SB_BYTES) / 4096) * 8;
    offset = -r - bbl;
  }
  return { offset, chunk };
}

/** Build the personality for the array's geometry (old/new split when a reshape is active). */
function buildPersonality(sb: Superblock1, members: Member[], io: MemberIo): Personality {
  const memberSectors: number[] = [];
  for (let s = 0; s < sb.raidDisks; s++) {
    const m = members.find((x) => x.slot === s);
    memberSectors.push(m ? Number(m.loaded.sb.dataSize) : 0);
  }
  const make = (level: number, layout: number, chunkSectors: number, raidDisks: number, mio: MemberIo): Personality => {
    // raid0 arrays made before the RAID0_LAYOUT feature are laid out as layout 1 (original)
    const lay = level === 0 && (sb.featureMap & Feature.RAID0_LAYOUT) === 0 ? 1 : layout;
    const componentSectors = Number(sb.size);
    return levelByNumber(level).create({ io: mio, layout: lay, chunkSectors, raidDisks, componentSectors, memberSectors: memberSectors.slice(0, raidDisks) });
  };
  if ((sb.featureMap & Feature.RESHAPE_ACTIVE) !== 0) return new ReshapeView(sb, io, make);
  return make(sb.level, sb.layout, sb.chunkSize, sb.raidDisks, io);
}
