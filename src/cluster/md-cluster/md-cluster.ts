/**
 * md-cluster over the DLM (Linux drivers/md/md-cluster.c; shared/spec/md-cluster-protocol.md):
 * the ClusterOps the md core calls for a clustered RAID1/RAID10 array, one per array and node.
 *
 * Locks (spec §2.3), all in the lockspace named by the array UUID:
 *  - `token`, `message`, `ack`: the message channel (comm.ts);
 *  - `no-new-dev` CR on every node (part 2's NEWDISK confirmation);
 *  - `bitmap%04d` PW held by each live node on its own slot, its LVB the node's resync window
 *    {le64 lo, le64 hi}; probed with PW+NOQUEUE to tell a live slot from a free one;
 *  - `resync` EX: one resync / recovery / check in the whole cluster at a time.
 *
 * Node failure (spec §2.5, §4.8): the DLM calls recoverPrep (reads stop being balanced),
 * recoverSlot(dead) and recoverDone. A recovery task takes the dead slot's bitmap lock (granted
 * once the DLM purged the dead node's PW), merges and clears its dirty bits into this node's
 * bitmap, lifts the write-suspend window the dead node may have left, and asks for a resync of
 * the merged regions. Every survivor does this; the first one takes the bits, the others find
 * the slot clean: exactly one resyncs.
 *
 * Everything waits on the DLM with a bound (the lockspace timeout, 30 s by default), except the
 * queued waits md makes interruptible (the `resync` lock, a dead slot's bitmap lock): those
 * retry in bounded steps until they are granted or the array stops.
 */
import type { Clock } from '../../env/clock.js';
import { assert, TsmdError } from '../../errors.js';
import type { ClusterArrayInfo, ClusterHost, ClusterOps, SyncWindow } from '../../md/cluster-ops.js';
import { type Dlm, Flag, type LockHandle, type Lockspace, Mode, type SlotInfo } from '../dlm/types.js';
import { CommChannel } from './comm.js';
import { type ClusterMsg, LVB_BYTES, makeMsg, MsgType, msgTypeName } from './message.js';

export interface MdClusterOptions {
  dlm: Dlm;
  /** the retry pauses of the recovery task (never a global timer in cluster/) */
  clock: Clock;
  info: ClusterArrayInfo;
  host: ClusterHost;
  /** every bounded DLM wait (default 30000 ms, md's WAIT_DLM_LOCK_TIMEOUT) */
  timeoutMs?: number;
  /** the broken receiver barrier of spec §5 #1, for the simulator's regression only */
  receiverBarrier?: 'PR' | 'EX';
}

/** Counters for tests, metrics and benchmarks. */
export interface MdClusterStats {
  messagesSent: number;
  messagesReceived: number;
  /** dead or departed slots whose bitmap this node took over */
  slotsRecovered: number;
  /** of those, the ones that had dirty bits */
  slotsMerged: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;
/** Steps of the interruptible waits (resync lock, a dead slot's bitmap). */
const QUEUED_STEP_MS = 30_000;

export function bitmapLockName(slot: number): string {
  assert(Number.isInteger(slot) && slot >= 0 && slot <= 9999, 'bitmap slot 0..9999');
  return `bitmap${String(slot).padStart(4, '0')}`;
}

function encodeWindow(lvb: Buffer, w: SyncWindow): void {
  lvb.fill(0);
  lvb.writeBigUInt64LE(BigInt(w.lo), 0);
  lvb.writeBigUInt64LE(BigInt(w.hi), 8);
}

function decodeWindow(lvb: Buffer | null): SyncWindow {
  if (!lvb) return { lo: 0, hi: 0 };
  return { lo: Number(lvb.readBigUInt64LE(0)), hi: Number(lvb.readBigUInt64LE(8)) };
}

export class MdCluster implements ClusterOps {
  private ls: Lockspace | null = null;
  private comm: CommChannel | null = null;
  private slot = -1;
  private nodes = 0;
  private bitmapLock: LockHandle | null = null;
  private resyncLock: LockHandle | null = null;
  private noNewDev: LockHandle | null = null;
  /** MD_CLUSTER_RESYNC_LOCKED */
  private resyncLocked = false;
  /** the remote write-suspend window and the slot it came from (-1: none) */
  private suspend: SyncWindow = { lo: 0, hi: 0 };
  private suspendFrom = -1;
  /** SUSPEND_READ_BALANCING (recover_prep .. recover_done) */
  private readBalancingSuspended = false;
  /** slots whose bitmap a recovery task must take over (recovery_map) */
  private readonly recoveryMap = new Set<number>();
  private recovering: Promise<void> | null = null;
  /** the unlock of the token while a metadata update holds it */
  private metaUnlock: (() => Promise<void>) | null = null;
  private readonly stop = new AbortController();
  private joined = false;
  private isFenced = false;
  private readonly timeoutMs: number;
  readonly stats: MdClusterStats = { messagesSent: 0, messagesReceived: 0, slotsRecovered: 0, slotsMerged: 0 };

  constructor(private readonly o: MdClusterOptions) {
    this.timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    assert(o.info.windowSectors > 0 && o.info.nodes >= 1, 'md-cluster: window and nodes');
  }

  private get host(): ClusterHost {
    return this.o.host;
  }

  private log(msg: string, level: 'info' | 'warn' | 'error' = 'info'): void {
    this.host.log(`md-cluster: ${msg}`, level);
  }

  // ---- join and leave ----

  async join(nodes: number): Promise<void> {
    assert(!this.joined && this.ls === null, 'md-cluster: join once');
    this.nodes = nodes;
    let ls: Lockspace;
    try {
      ls = await this.o.dlm.join({
        name: this.o.info.lockspace,
        lvbLength: LVB_BYTES,
        timeoutMs: this.timeoutMs,
        ops: {
          recoverPrep: () => this.recoverPrep(),
          recoverSlot: (s) => this.recoverSlot(s - 1),
          recoverDone: (slots, ours) => this.recoverDone(slots, ours),
        },
      });
    } catch (e) {
      throw new TsmdError((e as TsmdError).code ?? 'EIO', `md-cluster: cannot join the cluster lockspace ${this.o.info.lockspace}: ${(e as Error).message}`);
    }
    this.ls = ls;
    try {
      await this.joinLocks(ls, nodes);
    } catch (e) {
      await this.releaseAll();
      throw e;
    }
    this.joined = true;
    this.log(`joined cluster ${this.o.info.lockspace} slot ${this.slot + 1}`);
  }

  /** join() steps 2–9 (spec §4.1): slot check, channel, no-new-dev, own bitmap lock, resync. */
  private async joinLocks(ls: Lockspace, nodes: number): Promise<void> {
    this.slot = ls.slot - 1;
    if (ls.slot > nodes)
      throw new TsmdError('ENOSPC', `md-cluster: slot allotted (${ls.slot}) is greater than available slots (${nodes}): more nodes than the bitmap has slots`);
    ls.on('fenced', (err) => this.onFenced(err));
    this.comm = new CommChannel(ls, {
      slot: () => this.slot,
      receive: (m) => this.receive(m),
      log: (m, l) => this.host.log(m, l),
      receiverBarrier: this.o.receiverBarrier,
    });
    await this.comm.start();
    this.noNewDev = await ls.lock('no-new-dev', Mode.CR);
    try {
      this.bitmapLock = await ls.lock(bitmapLockName(this.slot), Mode.PW, { flags: Flag.VALBLK });
    } catch (e) {
      throw new TsmdError('EINVAL', `md-cluster: failed to get bitmap lock ${bitmapLockName(this.slot)}: ${(e as Error).message}`);
    }
    this.resyncLock = await ls.lock('resync', Mode.NL, { flags: Flag.EXPEDITE });
  }

  async loadBitmaps(nodes: number): Promise<void> {
    const ls = this.need();
    for (let i = 0; i < nodes; i++) {
      if (i === this.slot) continue;
      await this.gatherSlot(ls, i);
    }
    this.comm!.enableReceive();
  }

  /** gather_all_resync_info for one slot: live (its window suspends our writes) or free (merge). */
  private async gatherSlot(ls: Lockspace, i: number): Promise<void> {
    let lk: LockHandle;
    try {
      lk = await ls.lock(bitmapLockName(i), Mode.PW, { flags: Flag.NOQUEUE | Flag.VALBLK });
    } catch (e) {
      if ((e as TsmdError).code !== 'EAGAIN') throw e;
      // A live node owns it: read its window from the LVB. md reads it with CR, but a new CR
      // queues behind the PW requests of survivors waiting to take over a node that is leaving
      // with BITMAP_NEEDS_SYNC, whose round waits for our ack, which we give only once the
      // bitmaps are loaded: a deadlock until the DLM timeout (simulator seed 77). A new NL
      // request with EXPEDITE is granted at once and reads the LVB all the same.
      const probe = await ls.lock(bitmapLockName(i), Mode.NL, { flags: Flag.VALBLK | Flag.EXPEDITE });
      const w = decodeWindow(probe.lvb);
      await probe.unlock({ flags: Flag.FORCEUNLOCK }).catch(() => {});
      if (w.hi > 0) {
        this.suspendFrom = i;
        this.suspend = w;
        await this.host.setRemoteWindow(w);
      }
      return;
    }
    try {
      // nobody owns the slot: its dirty bits (a node that crashed while alone, or left dirty) are ours to resync
      const range = await this.host.copyFromSlot(i, false);
      if (range && range.hi > 0) {
        this.log(`slot ${i} has dirty bits in sectors ${range.lo}-${range.hi}: merged for resync`);
        this.host.needResync(range.lo);
      }
    } finally {
      await lk.unlock({ flags: Flag.FORCEUNLOCK }).catch(() => {});
    }
  }

  async leave(): Promise<void> {
    if (!this.ls) return;
    const ls = this.ls;
    if (this.joined && !this.isFenced && this.handOver) {
      // leave with work undone: a survivor takes our bitmap over once we release it (§4.9)
      await this.comm!.send(makeMsg(MsgType.BITMAP_NEEDS_SYNC)).catch((e: unknown) => this.log(`BITMAP_NEEDS_SYNC not delivered: ${(e as Error).message}`, 'warn'));
    }
    this.joined = false;
    this.stop.abort();
    await this.comm?.close();
    await this.recovering?.catch(() => {});
    await this.releaseAll();
    this.log(`left cluster ${ls.name}`);
  }

  /** Set by the core before leave(): a resync or recovery is unfinished, or bits are dirty. */
  handOver = false;

  private async releaseAll(): Promise<void> {
    const ls = this.ls;
    this.ls = null;
    if (ls && !ls.fenced) await ls.leave().catch(() => {});
  }

  peers(): number {
    return this.need().members().length - 1;
  }

  slotNumber(): number {
    assert(this.slot >= 0, 'md-cluster: slot known after join');
    return this.slot;
  }

  get fencedNow(): boolean {
    return this.isFenced;
  }

  private need(): Lockspace {
    if (this.isFenced) throw new TsmdError('EFENCED', `md-cluster: ${this.host.arrayName}: this node lost its cluster membership`);
    if (!this.ls) throw new TsmdError('ENODEV', 'md-cluster: not joined');
    return this.ls;
  }

  private onFenced(err: TsmdError): void {
    if (this.isFenced) return;
    this.isFenced = true;
    this.stop.abort();
    this.host.fenced(err.message);
  }

  // ---- resync ----

  async resyncInfoUpdate(w: SyncWindow): Promise<void> {
    this.need();
    const lk = this.bitmapLock!;
    // no (0,0) twice: the resync ping-pong (spec §5 #11)
    if (w.hi === 0 && decodeWindow(lk.lvb).hi === 0) return;
    encodeWindow(lk.lvb!, w);
    // PW→PW writes the LVB: a node joining now learns our window from it
    await lk.convert(Mode.PW, { flags: Flag.VALBLK });
    await this.sendMessage(makeMsg(MsgType.RESYNCING, { low: BigInt(w.lo), high: BigInt(w.hi) }));
  }

  async resyncStart(signal?: AbortSignal): Promise<void> {
    this.need();
    const lk = this.resyncLock!;
    const signals = [this.stop.signal, ...(signal ? [signal] : [])];
    const any = AbortSignal.any(signals);
    for (;;) {
      if (any.aborted) throw new TsmdError('ECANCELED', 'md-cluster: resync lock wait interrupted');
      try {
        await lk.convert(Mode.EX, { signal: any, timeoutMs: QUEUED_STEP_MS });
        break;
      } catch (e) {
        const code = (e as TsmdError).code;
        if (code === 'ETIMEDOUT' && !any.aborted) continue; // another node still resyncs: wait on
        throw e;
      }
    }
    this.resyncLocked = true;
    await this.sendMessage(makeMsg(MsgType.RESYNCING_START)).catch(async (e: unknown) => {
      await this.resyncFinish(true).catch(() => {});
      throw e;
    });
  }

  async resyncFinish(closing = false): Promise<void> {
    if (!this.resyncLocked) return;
    this.resyncLocked = false;
    try {
      if (!closing && !this.isFenced) await this.resyncInfoUpdate({ lo: 0, hi: 0 });
    } finally {
      if (!this.isFenced) await this.resyncLock!.convert(Mode.NL).catch(() => {});
    }
  }

  get holdsResyncLock(): boolean {
    return this.resyncLocked;
  }

  areaResyncing(direction: 'read' | 'write', lo: number, hi: number): boolean {
    if (direction === 'read' && (this.readBalancingSuspended || this.recoveryMap.size > 0)) return true;
    return this.suspend.hi > 0 && lo < this.suspend.hi && hi > this.suspend.lo;
  }

  // ---- metadata ----

  async metadataUpdateStart(): Promise<void> {
    this.need();
    assert(this.metaUnlock === null, 'md-cluster: one metadata update at a time (the core serialises them)');
    this.metaUnlock = await this.comm!.lockComm();
  }

  async metadataUpdateFinish(): Promise<void> {
    const unlock = this.metaUnlock;
    assert(unlock !== null, 'metadata_update_finish after start');
    this.metaUnlock = null;
    try {
      const good = this.host.goodDevNumber();
      if (good === null) this.log('no good device to name in METADATA_UPDATED: not sent', 'warn');
      else await this.sendCounted(makeMsg(MsgType.METADATA_UPDATED, { raidSlot: good }), true);
    } finally {
      await unlock().catch(() => {});
    }
  }

  async metadataUpdateCancel(): Promise<void> {
    const unlock = this.metaUnlock;
    this.metaUnlock = null;
    if (unlock) await unlock().catch(() => {});
  }

  private async sendMessage(m: ClusterMsg): Promise<void> {
    await this.sendCounted(m, false);
  }

  private async sendCounted(m: ClusterMsg, locked: boolean): Promise<void> {
    this.need();
    if (locked) await this.comm!.sendLocked(m);
    else await this.comm!.send(m);
    this.stats.messagesSent++;
  }

  // ---- receiving (process_recvd_msg) ----

  private async receive(m: ClusterMsg): Promise<void> {
    this.stats.messagesReceived++;
    switch (m.type) {
      case MsgType.METADATA_UPDATED:
        if (this.noNewDev && this.noNewDev.mode !== Mode.CR) await this.noNewDev.convert(Mode.CR);
        await this.host.reloadSuperblock(m.raidSlot);
        return;
      case MsgType.RESYNCING:
        await this.processSuspendInfo(m.slot, Number(m.low), Number(m.high));
        return;
      case MsgType.BITMAP_NEEDS_SYNC:
        this.log(`node in slot ${m.slot} left with work to do: taking its bitmap over`);
        this.recoverSlot(m.slot);
        return;
      case MsgType.RESYNCING_START:
        return;
      default:
        // part 2's messages (NEWDISK, REMOVE, RE_ADD, CHANGE_CAPACITY, BITMAP_RESIZE) and unknown types
        throw new TsmdError('ENOTSUP', `md-cluster: ${msgTypeName(m.type)} is not supported by this node`);
    }
  }

  /** process_suspend_info (spec §3.5 RESYNCING). */
  private async processSuspendInfo(from: number, lo: number, hi: number): Promise<void> {
    if (hi === 0) {
      this.host.setRemoteSync(null);
      this.suspend = { lo: 0, hi: 0 };
      this.suspendFrom = -1;
      await this.host.setRemoteWindow(null);
      this.host.kick();
      return;
    }
    this.host.setRemoteSync('resync');
    // md (bitmap_sync_with_cluster, spec §5 #12) takes what the remote's window moved past as
    // synced here and drops those NEEDED bits. Not tsmd: the remote's resync is guided by its
    // own bitmap and skips the chunks only this node has dirty (gathered from a free slot,
    // say), so nobody would resync them (simulator seed 3314, after a power loss). Our bits
    // stay; our own bitmap-guided resync later syncs them again, a few chunks at most.
    this.suspend = { lo, hi };
    this.suspendFrom = from;
    await this.host.setRemoteWindow({ lo, hi });
  }

  // ---- node failure (DLM recovery callbacks) ----

  private recoverPrep(): void {
    this.readBalancingSuspended = true;
  }

  private recoverDone(_slots: readonly SlotInfo[], _ours: number): void {
    this.readBalancingSuspended = false;
  }

  /** recover_slot / BITMAP_NEEDS_SYNC: take that slot's bitmap over in the background. */
  private recoverSlot(slot: number): void {
    if (slot === this.slot || slot < 0 || this.stop.signal.aborted) return;
    this.log(`node in slot ${slot} is down or gone; my slot ${this.slot}: initiating recovery`);
    this.recoveryMap.add(slot);
    this.recovering ??= this.recoverBitmaps().finally(() => {
      this.recovering = null;
      if (this.recoveryMap.size > 0 && !this.stop.signal.aborted) this.recoverSlot([...this.recoveryMap][0]!);
    });
  }

  /** recover_bitmaps: highest slot first, until the map is empty or the array stops. */
  private async recoverBitmaps(): Promise<void> {
    while (this.recoveryMap.size > 0 && !this.stop.signal.aborted) {
      const slot = Math.max(...this.recoveryMap);
      try {
        await this.recoverOne(slot);
        this.recoveryMap.delete(slot);
      } catch (e) {
        if (this.stop.signal.aborted) return;
        this.log(`recovery of slot ${slot} failed: ${(e as Error).message}; retrying in 1 s`, 'warn');
        await this.o.clock.sleep(1000);
      }
    }
  }

  private async recoverOne(slot: number): Promise<void> {
    const ls = this.need();
    let lk: LockHandle | null = null;
    while (!lk) {
      if (this.stop.signal.aborted) return;
      try {
        lk = await ls.lock(bitmapLockName(slot), Mode.PW, { flags: Flag.VALBLK, signal: this.stop.signal, timeoutMs: QUEUED_STEP_MS });
      } catch (e) {
        if ((e as TsmdError).code !== 'ETIMEDOUT') throw e;
      }
    }
    try {
      const range = await this.host.copyFromSlot(slot, true);
      this.stats.slotsRecovered++;
      // the window the dead node was resyncing goes only after its bits are ours (spec §5 #34)
      if (this.suspendFrom === slot) {
        this.suspend = { lo: 0, hi: 0 };
        this.suspendFrom = -1;
        this.host.setRemoteSync(null);
        await this.host.setRemoteWindow(null);
      }
      if (range && range.hi > 0) {
        this.stats.slotsMerged++;
        this.log(`slot ${slot}: dirty sectors ${range.lo}-${range.hi} taken over; resyncing them`);
        this.host.needResync(range.lo);
      }
    } finally {
      await lk.unlock({ flags: Flag.FORCEUNLOCK }).catch(() => {});
    }
  }

  // ---- part 2 (declared by the seam; the part 2 issue implements them) ----

  private part2(what: string): Promise<never> {
    return Promise.reject(new TsmdError('ENOTSUP', `md-cluster: ${what} on a clustered array is not supported yet`));
  }

  addNewDiskStart(_uuid: Uint8Array): Promise<void> {
    return this.part2('adding a disk');
  }

  addNewDiskFinish(): Promise<void> {
    return this.part2('adding a disk');
  }

  addNewDiskCancel(): Promise<void> {
    return Promise.resolve();
  }

  newDiskAck(_ack: boolean): Promise<void> {
    return this.part2('--cluster-confirm');
  }

  removeDisk(_devNumber: number): Promise<void> {
    return this.part2('removing a disk');
  }

  gatherBitmaps(): Promise<void> {
    return this.part2('re-adding a disk');
  }

  lockAllBitmaps(): Promise<boolean> {
    return this.part2('changing the bitmap');
  }

  unlockAllBitmaps(): Promise<void> {
    return Promise.resolve();
  }

  updateSize(_old: number): Promise<void> {
    return this.part2('--grow --size');
  }

  resizeBitmaps(_n: number, _o: number): Promise<void> {
    return this.part2('resizing the bitmaps');
  }
}
