/**
 * The metadata transaction: the one way array state reaches the members' superblocks (md's
 * md_update_sb, with reconfig_mutex's role played by the superblock lock).
 *
 * `update(mutate)` takes the lock, bumps the event count once, applies the change and writes
 * every working member (bitmap header first, then superblock, each flushed). For a clustered
 * array it is bracketed by metadata_update_start / finish / cancel, the token taken before the
 * change is decided (md-cluster §4.4). Member failures (md_error) do not write here at once:
 * they set `changePending` (md's MD_SB_CHANGE_DEVS) and the next settle writes them.
 *
 * One writer at a time: two superblock writes in flight could land in either order on a
 * member (the thread pool reorders them), so the older state could win; and a write encodes
 * member fields (bitmap offset, feature bits) that --grow changes under the same lock. The
 * event count is bumped under the lock, never before waiting for it: a count bumped early
 * would ride on the write in progress, and a crash during it could leave members two events
 * apart, which assembly takes for a stale member.
 */
import { assert } from '../errors.js';
import { BITMAP_SB_BYTES, bitmapAreaBytes, encodeBitmapSuper } from '../format/bitmap.js';
import { encodeSuperblock, Feature, Role, type Superblock1, sbBytes } from '../format/superblock.js';
import { KeyedLocks } from '../util/async.js';
import type { WriteIntentBitmap } from './bitmap.js';
import type { ClusterOps } from './cluster-ops.js';
import type { Member, MemberSet } from './members.js';
import { bitmapMatches, loadSuperblock } from './sb-io.js';

/** What the transaction reads from the array it writes for. */
export interface MetadataHost {
  readonly memberSet: MemberSet;
  /** the runtime bitmap (null: none, or a clustered bitmap the core does not run yet) */
  readonly bitmap: WriteIntentBitmap | null;
  /** md's !in_sync: an active array records resync_offset 0 (resync after a crash) */
  readonly isDirty: boolean;
  /** md's recovery_cp */
  readonly resyncCp: bigint;
  readonly readOnly: boolean;
  /** seconds since the epoch, for utime (the injected clock's wall time) */
  wallSeconds(): number;
  /** Before roles are encoded: a replacement whose original failed takes its slot. */
  settleReplacements(): void;
  /** A member's superblock or bitmap write failed: md_error. */
  writeFailed(m: Member, what: string, e: unknown): void;
  /** md-cluster, for a clustered array only (null otherwise) */
  readonly cluster: ClusterOps | null;
  /**
   * Set while a sync checkpoint is written beside the running sync: the position its flush
   * covered. The superblocks record no resync or recovery offset beyond it, although the
   * in-memory frontier moves on meanwhile (md records curr_resync_completed, not curr_resync).
   */
  readonly syncRecordCap: SyncRecordCap | null;
}

/** The job's completed and flushed position, in its own space (resync or recovery sectors). */
export interface SyncRecordCap {
  kind: 'resync' | 'recovery';
  sectors: number;
}

export interface UpdateOptions {
  /** a state change: events + 1 (default true; sync checkpoints write without it) */
  bump?: boolean;
  /** rewrite the whole bitmap with every bit set ('all') or clear ('none') */
  bitmapBits?: 'all' | 'none';
}

/**
 * A change that turned out to change nothing returns this from `mutate`: no event is
 * bumped, nothing is written (md: the change bits stay clear).
 */
export const UNCHANGED = Symbol('unchanged');

/** The array's feature bits with the member's own: RECOVERY_OFFSET while rebuilt, REPLACEMENT. */
function memberFeatures(array: number, recovering: boolean, replacement: boolean): number {
  const f = recovering ? array | Feature.RECOVERY_OFFSET : array & ~Feature.RECOVERY_OFFSET;
  return replacement ? f | Feature.REPLACEMENT : f & ~Feature.REPLACEMENT;
}

export class Metadata {
  /** the array-wide superblock fields (the freshest member's at assembly) */
  readonly sb: Superblock1;
  /** md's MD_SB_CHANGE_DEVS: a member changed state and the superblocks must say so */
  changePending = false;
  private readonly lock = new KeyedLocks();
  /**
   * Clustered: the token before the local lock ('token-first'), so that a receiver, which only
   * runs while another node holds the token, can always take the lock to reload the superblock
   * (spec §5 #9, #16). 'lock-first' is md's historical order, kept only so that the regression
   * test can show it deadlocking (the way comm.ts keeps the CR->EX receivers of #1).
   */
  lockOrder: 'token-first' | 'lock-first' = 'token-first';

  constructor(
    sb: Superblock1,
    private readonly host: MetadataHost,
  ) {
    this.sb = sb;
  }

  /**
   * md_update_sb as a transaction: `mutate` decides and applies the change under the lock
   * (and, clustered, under the token); then events + 1 and every working member is written.
   * A mutate that throws writes nothing (the cluster's update is cancelled) and rethrows.
   */
  async update(mutate: () => unknown, opts: UpdateOptions = {}): Promise<void> {
    assert(!this.host.readOnly, 'superblock update on a read-only array');
    const cluster = this.host.cluster;
    const transact = (): Promise<boolean> => this.transact(mutate, opts);
    if (!cluster) await this.locked(transact);
    else if (this.lockOrder === 'lock-first') await this.locked(() => this.underToken(cluster, transact));
    else await this.underToken(cluster, () => this.locked(transact));
  }

  /** metadata_update_start .. finish (or cancel when nothing was written) around `fn`. */
  private async underToken(cluster: NonNullable<MetadataHost['cluster']>, fn: () => Promise<boolean>): Promise<void> {
    await cluster.metadataUpdateStart();
    let written = false;
    try {
      written = await fn();
    } finally {
      await (written ? cluster.metadataUpdateFinish() : cluster.metadataUpdateCancel());
    }
  }

  /** Under the lock (and the token): events + 1, the change, every member written; false if none. */
  private async transact(mutate: () => unknown, opts: UpdateOptions): Promise<boolean> {
    if (this.host.cluster) await this.catchUpEvents();
    const bump = opts.bump ?? true;
    if (bump) this.sb.events += 1n;
    let r: unknown;
    try {
      r = await mutate();
    } catch (e) {
      if (bump) this.sb.events -= 1n;
      throw e;
    }
    if (r === UNCHANGED) {
      if (bump) this.sb.events -= 1n;
      return false;
    }
    await this.writeLocked(opts.bitmapBits);
    return true;
  }

  /**
   * Clustered, under the token (no other node writes the superblocks now): another node may
   * have written them since this node read them (at assembly, before it could hear any
   * METADATA_UPDATED), so the event count starts from the highest on the members: it never
   * goes backwards (simulator seed 6310, where a joining node wrote events 1 over 2, and a
   * member that later missed one update was two behind and kicked as non-fresh for ever).
   */
  private async catchUpEvents(): Promise<void> {
    for (const m of this.host.memberSet.list) {
      if (m.faulty || m.slot === null) continue;
      const l = await loadSuperblock(m.dev, m.loaded.minor).catch(() => null);
      if (l && l.sb.events > this.sb.events) this.sb.events = l.sb.events;
    }
  }

  /** Write what md_error recorded (changePending) until nothing is pending; true if it wrote. */
  async settle(): Promise<boolean> {
    let wrote = false;
    while (this.changePending) {
      this.changePending = false;
      wrote = true;
      await this.update(() => {});
    }
    return wrote;
  }

  /** Run `fn` while no superblock write is under way (and none starts). */
  async locked<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.lock.acquire([0]);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** The roles table as the members stand: faulty, spare or the slot (md's dev_roles). */
  private encodeRoles(): number[] {
    const list = this.host.memberSet.list;
    let maxDev = this.sb.maxDev;
    for (const m of list) if (m.devNumber >= maxDev) maxDev = m.devNumber + 1;
    const roles = new Array<number>(maxDev).fill(Role.SPARE);
    for (const m of list) roles[m.devNumber] = m.faulty ? Role.FAULTY : m.slot === null ? Role.SPARE : m.slot;
    this.sb.maxDev = maxDev;
    return roles;
  }

  /** One pass of md_update_sb's write: every working member, bitmap header first. */
  private async writeLocked(bitmapBits?: 'all' | 'none'): Promise<void> {
    const h = this.host;
    h.settleReplacements();
    this.sb.utime = BigInt(h.wallSeconds());
    // md's super_1_sync: an active array says 0 (resync after a crash), a clean one recovery_cp
    const cap = h.syncRecordCap;
    const cp = cap?.kind === 'resync' && BigInt(cap.sectors) < h.resyncCp ? BigInt(cap.sectors) : h.resyncCp;
    this.sb.resyncOffset = h.isDirty ? 0n : cp;
    const bm = h.bitmap;
    if (bm) {
      if (bitmapBits === 'none') bm.clearAll(this.sb.events);
      else if (bitmapBits === 'all') bm.setAll(this.sb.events);
      else bm.setEvents(this.sb.events);
      await bm.writeThrough(bitmapBits !== undefined);
    }
    const roles = this.encodeRoles();
    this.sb.devRoles = roles;
    await Promise.all(
      h.memberSet.list
        .filter((m) => !m.faulty)
        .map(async (m) => {
          try {
            if (!bm) await this.writeBitmapHeader(m, bitmapBits);
            await this.writeMemberSb(m, roles);
          } catch (e) {
            h.writeFailed(m, 'superblock', e);
          }
        }),
    );
  }

  /** The member's own superblock: the array fields plus what belongs to the member. */
  private async writeMemberSb(m: Member, roles: number[]): Promise<void> {
    const own = m.loaded.sb;
    const rec = m.recoveryOffset !== null;
    const cap = this.host.syncRecordCap;
    const recorded = rec ? (cap?.kind === 'recovery' ? Math.min(m.recoveryOffset!, cap.sectors) : m.recoveryOffset!) : 0;
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
      recoveryOffset: BigInt(recorded),
      featureMap: memberFeatures(this.sb.featureMap, rec, m.replacement === true),
      devRoles: roles,
      pad3: new Uint8Array(32),
    };
    const block = encodeSuperblock(sb);
    const n = Math.ceil(sbBytes(sb.maxDev) / 512) * 512;
    await m.dev.write(block.subarray(0, n), m.loaded.sbStartSector * 512);
    await m.dev.flush();
    m.loaded = { ...m.loaded, sb, raw: block };
  }

  /**
   * Without a runtime bitmap (a clustered one), the member's bitmap header still follows the
   * event count; with `bits`, the whole area is rewritten all set or all clear.
   */
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
      if (bits === 'none') for (let i = 0; i < b.nbits; i++) area[BITMAP_SB_BYTES + (i >>> 3)]! &= ~(1 << (i & 7));
      b.bits = area.slice(BITMAP_SB_BYTES, BITMAP_SB_BYTES + Math.ceil(b.nbits / 8));
    }
    area.set(encodeBitmapSuper(b.sup), 0);
    await m.dev.write(area, b.startSector * 512);
  }
}
