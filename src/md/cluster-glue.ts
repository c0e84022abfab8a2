/**
 * The md side of md-cluster (what md.c, md-bitmap.c and raid1.c do for a clustered array):
 * the ClusterHost that src/cluster/md-cluster calls back into, kept out of array.ts.
 *
 *  - the remote write-suspend window (md's suspend_lo/hi and raid1's wait on area_resyncing):
 *    writes into it wait; a new window is in force only once the writes in flight inside it
 *    have finished (md's quiesce in process_suspend_info);
 *  - copy_from_slot over the members' bitmap areas (md_bitmap_copy_from_slot);
 *  - md_reload_sb / check_sb_changes for METADATA_UPDATED;
 *  - fencing: once the node has lost its DLM membership, its member devices refuse writes
 *    (FenceableDevice) and every request fails, until the array is stopped.
 */
import { assert, TsmdError } from '../errors.js';
import { BITMAP_SB_BYTES, bitmapAreaBytes, encodeBitmapSuper } from '../format/bitmap.js';
import { Feature, Role, type Superblock1 } from '../format/superblock.js';
import type { BlockDevice, DirectFd } from '../io/block-device.js';
import type { WriteIntentBitmap } from './bitmap.js';
import type { ClusterHost, RemoteSyncKind, SyncWindow } from './cluster-ops.js';
import { inSync, type Member, type MemberSet } from './members.js';
import { loadSuperblock } from './sb-io.js';

/**
 * A member device of a clustered array: after fence() no write or flush reaches the device
 * (the DLM said this node is no longer a member; a survivor may already own its regions).
 * No sync offload fd either: the helper threads would write around the fence (and the member
 * may be opened O_DIRECT, which their buffers are not aligned for).
 */
export class FenceableDevice implements BlockDevice {
  private fencedWhy: string | null = null;
  /** member writes refused after the fence (tests assert none reached the device) */
  refusedWrites = 0;

  constructor(readonly inner: BlockDevice) {}

  get name(): string {
    return this.inner.name;
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  refreshSize(): Promise<number> {
    return this.inner.refreshSize ? this.inner.refreshSize() : Promise.resolve(this.inner.sizeBytes);
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  fence(why: string): void {
    this.fencedWhy ??= why;
  }

  read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    return this.inner.read(buf, offsetBytes);
  }

  write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    if (this.fencedWhy !== null) {
      this.refusedWrites++;
      return Promise.reject(new TsmdError('EFENCED', `${this.inner.name}: not written: ${this.fencedWhy}`));
    }
    return this.inner.write(buf, offsetBytes);
  }

  flush(): Promise<void> {
    if (this.fencedWhy !== null) return Promise.reject(new TsmdError('EFENCED', `${this.inner.name}: ${this.fencedWhy}`));
    return this.inner.flush();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  directFd(): DirectFd | null {
    return null;
  }
}

/** What the glue reads and changes in the array (MdArray implements it). */
export interface ClusterArrayHost {
  readonly arrayName: string;
  readonly memberSet: MemberSet;
  readonly bitmap: WriteIntentBitmap | null;
  /** the bitmap slot of this node (its area on every member) */
  readonly bitmapSlot: number;
  readonly sb: Superblock1;
  readonly syncSectors: number;
  log(msg: string, level?: 'info' | 'warn' | 'error'): void;
  lowerResyncPoint(lo: number): void;
  kick(): void;
  /** run fn under the superblock lock (the receiver never waits on a lock held by a token waiter) */
  lockedMeta<T>(fn: () => Promise<T>): Promise<T>;
  markFenced(why: string): void;
}

export class ClusterGlue implements ClusterHost {
  private window: SyncWindow | null = null;
  /** md's MD_RESYNCING_REMOTE, as mdstat shows it */
  remoteSync: RemoteSyncKind | null = null;
  private windowWaiters: Array<() => void> = [];
  private readonly inflight = new Map<number, [number, number]>();
  private inflightSeq = 0;
  private drainWaiters: Array<() => void> = [];
  /** writes that waited for a remote window (tests and metrics) */
  writesHeld = 0;
  private aborted: Error | null = null;

  constructor(private readonly a: ClusterArrayHost) {}

  get arrayName(): string {
    return this.a.arrayName;
  }

  log(msg: string, level?: 'info' | 'warn' | 'error'): void {
    this.a.log(msg, level);
  }

  // ---- the write gate ----

  private overlaps(s0: number, s1: number): boolean {
    const w = this.window;
    return w !== null && s0 < w.hi && s1 > w.lo;
  }

  /**
   * Enter a write of resync-space [s0, s1): waits while it falls in another node's window,
   * then counts it in flight. Returns the token for leaveWrite.
   */
  async enterWrite(s0: number, s1: number): Promise<number> {
    if (this.aborted) throw this.aborted;
    if (this.overlaps(s0, s1)) {
      this.writesHeld++;
      while (this.overlaps(s0, s1) && !this.aborted) await new Promise<void>((r) => this.windowWaiters.push(r));
      if (this.aborted) throw this.aborted;
    }
    // no await between the check and the registration: a window set from now on sees this write
    const id = ++this.inflightSeq;
    this.inflight.set(id, [s0, s1]);
    return id;
  }

  /**
   * The array stops or this node is fenced: writes held at the gate fail with `err` now rather
   * than wait for a window that this node will never see move (md fails the bios it suspended
   * when the array is stopped), and every later write fails the same way.
   */
  abort(err: Error): void {
    this.aborted ??= err;
    for (const r of this.windowWaiters.splice(0)) r();
  }

  leaveWrite(id: number): void {
    this.inflight.delete(id);
    if (this.drainWaiters.length > 0) for (const w of this.drainWaiters.splice(0)) w();
  }

  async setRemoteWindow(w: SyncWindow | null): Promise<void> {
    this.window = w && w.hi > w.lo ? { lo: w.lo, hi: w.hi } : null;
    for (const r of this.windowWaiters.splice(0)) r();
    const win = this.window;
    if (!win) return;
    // md's quiesce: the writes already inside the new window finish before the sender goes on
    const busy = (): boolean => [...this.inflight.values()].some(([s0, s1]) => s0 < win.hi && s1 > win.lo);
    while (busy()) await new Promise<void>((r) => this.drainWaiters.push(r));
  }

  get remoteWindow(): SyncWindow | null {
    return this.window;
  }

  setRemoteSync(kind: RemoteSyncKind | null): void {
    this.remoteSync = kind;
  }

  needResync(lo: number): void {
    this.a.lowerResyncPoint(lo);
  }

  kick(): void {
    this.a.kick();
  }

  fenced(why: string): void {
    this.a.markFenced(why);
    // writes parked on a window wake up and fail at the fence
    this.window = null;
    for (const r of this.windowWaiters.splice(0)) r();
  }

  goodDevNumber(): number | null {
    const m = this.a.memberSet.list.find((x) => inSync(x));
    return m ? m.devNumber : null;
  }

  // ---- bitmaps of other slots ----

  /**
   * md_bitmap_copy_from_slot: the slot's bits (OR of every working member's copy) become
   * ours; with `clear`, the slot's bits are then cleared on every member. Returns the
   * resync-space range the bits cover.
   */
  async copyFromSlot(slot: number, clear: boolean): Promise<SyncWindow | null> {
    const bm = this.a.bitmap;
    assert(slot !== this.a.bitmapSlot, 'copy_from_slot of another slot');
    if (!bm) return null;
    const members = this.a.memberSet.list.filter((m) => !m.faulty && m.slot !== null && m.bitmaps[slot] !== undefined);
    if (members.length === 0) return null;
    const nbits = members[0]!.bitmaps[slot]!.nbits;
    const bytes = Math.ceil(nbits / 8);
    const bits = new Uint8Array(bytes);
    for (const m of members) {
      const area = await this.readSlotArea(m, slot);
      for (let i = 0; i < bytes; i++) bits[i]! |= area[BITMAP_SB_BYTES + i]!;
    }
    const merged = await bm.mergeDirty(bits, nbits);
    if (clear && merged) await Promise.all(members.map((m) => this.clearSlot(m, slot)));
    if (!merged) return null;
    const cs = bm.chunkSectors;
    return { lo: merged[0] * cs, hi: Math.min((merged[1] + 1) * cs, this.a.syncSectors) };
  }

  private async readSlotArea(m: Member, slot: number): Promise<Uint8Array> {
    const b = m.bitmaps[slot]!;
    const area = new Uint8Array(bitmapAreaBytes(b.nbits));
    await m.dev.read(area, b.startSector * 512);
    return area;
  }

  /** The slot's bits cleared on this member (its header keeps its owner's events). */
  private async clearSlot(m: Member, slot: number): Promise<void> {
    const b = m.bitmaps[slot]!;
    const area = await this.readSlotArea(m, slot);
    area.fill(0, BITMAP_SB_BYTES);
    area.set(encodeBitmapSuper({ ...b.sup, eventsCleared: b.sup.events }).subarray(0, BITMAP_SB_BYTES), 0);
    await m.dev.write(area, b.startSector * 512);
    await m.dev.flush();
  }

  // ---- METADATA_UPDATED ----

  /**
   * md_reload_sb + check_sb_changes: the superblock another node wrote, read from member
   * `devNumber`, applied here: members it failed are failed here (without writing: "the
   * recovery is performed by the one who initiated the error"), a spare it activated is
   * activated, a recovery it finished is finished, and the events follow.
   */
  async reloadSuperblock(devNumber: number): Promise<void> {
    await this.a.lockedMeta(async () => {
      const src = this.a.memberSet.list.find((m) => m.devNumber === devNumber && !m.faulty);
      if (!src) {
        this.log(`md-cluster: METADATA_UPDATED names device ${devNumber}, which this node does not have working`, 'warn');
        return;
      }
      const l = await loadSuperblock(src.dev, src.loaded.minor);
      if (!l) throw new TsmdError('EBADSB', `${src.dev.name}: superblock unreadable after METADATA_UPDATED`);
      await this.applyChanges(l.sb);
    });
    // md: RECOVERY_NEEDED + wake (a spare another node activated may need this node's help later)
    this.a.kick();
  }

  private async applyChanges(fresh: Superblock1): Promise<void> {
    const sb = this.a.sb;
    for (const m of this.a.memberSet.list) {
      if (m.faulty) continue;
      const role = fresh.devRoles[m.devNumber];
      if (role === undefined) continue;
      if (role === Role.FAULTY) {
        m.faulty = true;
        this.a.memberSet.updateReplacing();
        this.log(`md: ${m.dev.name} failed on another node; marking it faulty`, 'error');
        continue;
      }
      if (m.slot === null && role < Role.MAX_ACTIVE) {
        const own = await loadSuperblock(m.dev, m.loaded.minor);
        m.slot = role;
        m.recoveryOffset = own && (own.sb.featureMap & Feature.RECOVERY_OFFSET) !== 0 ? Number(own.sb.recoveryOffset) : 0;
        if (own) m.loaded = { ...m.loaded, sb: own.sb };
        this.log(`md: ${m.dev.name}: activated as slot ${role} by another node`);
      }
    }
    // recoveries another node finished (md re-reads every member for its recovery_offset)
    for (const m of this.a.memberSet.list) {
      if (m.faulty || m.recoveryOffset === null) continue;
      const own = await loadSuperblock(m.dev, m.loaded.minor);
      if (!own) continue;
      if ((own.sb.featureMap & Feature.RECOVERY_OFFSET) === 0 && own.sb.devRoles[m.devNumber] === m.slot) {
        m.recoveryOffset = null;
        this.log(`md: ${m.dev.name}: recovery finished by another node`);
      } else if ((own.sb.featureMap & Feature.RECOVERY_OFFSET) !== 0) m.recoveryOffset = Math.max(m.recoveryOffset, Number(own.sb.recoveryOffset));
    }
    if (fresh.raidDisks !== sb.raidDisks || fresh.size !== sb.size || fresh.level !== sb.level)
      this.log('md-cluster: another node changed the array geometry: not supported by this node yet (md-cluster part 2)', 'error');
    if (fresh.events > sb.events) sb.events = fresh.events;
  }
}
