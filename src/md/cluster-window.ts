/**
 * md-cluster's resync window on the resyncing node (md's cluster_sync_low/high and raid1/10
 * sync_request's resync_info_update), announced ahead of the sync. md sends it synchronously
 * when a request passes cluster_sync_high, and the sync stops for the round (token, LVB,
 * RESYNCING to every node: 75-390 ms on a loaded machine, 40-45 % of a resync, docs/perf.md).
 * Here the next window [completed, completed + window) is announced in the background once the
 * completed position is far enough past the acknowledged low (aheadAfter), while the sync goes
 * on inside the acknowledged window; it waits only when it reaches the acknowledged high before
 * the announcement is done. How far is a trade: a window announced earlier starts lower (its
 * low is the synced position), so rounds come more often, and each costs CPU on every node and
 * etcd, while one announced later has less copy to hide behind.
 *
 * Safe for every receiver, the kernel's included (spec §3.5, §8 invariant 7): the sync engine
 * is serial, so when the window at `lo` is about to start everything below `lo` is synced
 * (receivers mark [previous low, new low) synced); the new window keeps the old high or more,
 * so every sync region issued while it is in flight (inside the old window, at or above `lo`)
 * lies inside both the old and the new window, whichever a receiver holds; no sync I/O goes
 * beyond an acknowledged high. One announcement at a time (the LVB is written by each).
 */
import type { Clock } from '../env/clock.js';
import type { ClusterOps, SyncWindow } from './cluster-ops.js';

/** An exponentially weighted mean (the first sample taken as it is). */
function ewma(mean: number, sample: number): number {
  return mean <= 0 ? sample : mean * 0.7 + sample * 0.3;
}

export class ClusterSyncWindow {
  /** the window every node acknowledged (md's cluster_sync_low/high) */
  private acked: SyncWindow = { lo: 0, hi: 0 };
  /** the last rounds' time and the sync's pace (EWMA), for aheadAfter; per job */
  private pace = { roundMs: 0, sectorsPerMs: 0, lastMs: -1, lastLo: 0 };
  /** the window announced ahead of the sync, if one is in flight */
  private ahead: Promise<void> | null = null;
  /** its error, kept for the sync to raise */
  private aheadError: unknown = null;

  constructor(
    private readonly ops: Pick<ClusterOps, 'resyncInfoUpdate'>,
    /** md's CLUSTER_RESYNC_WINDOW (raid1) or raid10's stripe-sized rule */
    readonly windowSectors: number,
    private readonly clock: Clock,
  ) {}

  /** A new sync job (or its end): nothing announced, nothing measured. */
  reset(): void {
    this.acked = { lo: 0, hi: 0 };
    this.aheadError = null;
    this.pace = { roundMs: 0, sectorsPerMs: 0, lastMs: -1, lastLo: 0 };
  }

  /**
   * The sync engine is about to touch `ranges` (resync space; `syncSectors` its end): the
   * acknowledged window covers them first, and the next one may be sent ahead.
   */
  async publish(ranges: Array<[number, number]>, syncSectors: number): Promise<void> {
    const lo = Math.min(...ranges.map((r) => r[0]));
    const hi = Math.max(...ranges.map((r) => r[1]));
    const pace = this.pace;
    // the sync's own pace, from the end of the last call (waits excluded) to this one; not over a
    // bitmap-guided skip
    const now = this.clock.nowMs();
    if (pace.lastMs >= 0 && lo > pace.lastLo && lo - pace.lastLo <= this.windowSectors && now > pace.lastMs) {
      pace.sectorsPerMs = ewma(pace.sectorsPerMs, (lo - pace.lastLo) / (now - pace.lastMs));
    }
    const inside = (w: SyncWindow): boolean => w.hi > 0 && lo >= w.lo && hi <= w.hi;
    if (!inside(this.acked)) await this.settle();
    else this.raise();
    const end = Math.max(hi, syncSectors);
    if (!inside(this.acked)) await this.announce({ lo, hi: Math.min(Math.max(hi, lo + this.windowSectors), end) });
    pace.lastMs = this.clock.nowMs();
    pace.lastLo = lo;
    const w = this.acked;
    if (this.ahead || w.hi >= end || lo - w.lo < this.aheadAfter()) return;
    const p: Promise<void> = this.announce({ lo, hi: Math.max(w.hi, Math.min(lo + this.windowSectors, end)) })
      .catch((e: unknown) => {
        this.aheadError = e;
      })
      .finally(() => {
        if (this.ahead === p) this.ahead = null;
      });
    this.ahead = p;
  }

  /** Wait for the announcement in flight (its DLM waits are bounded), then raise its error. */
  async settle(): Promise<void> {
    while (this.ahead) await this.ahead;
    this.raise();
  }

  /** Wait for the announcement in flight; its failure no longer matters (the job is over). */
  async drain(): Promise<void> {
    while (this.ahead) await this.ahead;
    this.aheadError = null;
  }

  /**
   * The sync engine's window size while clustered: a quarter of md's window, a power of two
   * (bitmap-guided windows stay inside a chunk), so that an announcement ahead overlaps one or
   * two of them.
   */
  get stepSectors(): number {
    const w = this.windowSectors;
    return w > 0 ? Math.max(128, 2 ** Math.floor(Math.log2(w / 4))) : 0;
  }

  /** One round (LVB and RESYNCING to every node); the window counts once it is done. */
  private async announce(next: SyncWindow): Promise<void> {
    const t0 = this.clock.nowMs();
    await this.ops.resyncInfoUpdate(next);
    this.pace.roundMs = ewma(this.pace.roundMs, this.clock.nowMs() - t0);
    this.acked = next;
  }

  /** A failed announcement stops the sync as a failed synchronous one does. */
  private raise(): void {
    const e = this.aheadError;
    if (e === null) return;
    this.aheadError = null;
    throw e;
  }

  /**
   * How far past the acknowledged low the completed position goes before the next window is
   * announced, from the last rounds' time and the sync's pace. A round shorter than half a
   * window's copy: as late as still hides it (rounds every 24-28 MiB for raid1, none waited
   * for). Longer: at half a window, where t/round_time is best among the overlapping choices;
   * longer than a whole window's copy (a loaded machine where the nodes share the CPU with the
   * copy): at the high, md's way, since overlapping then only adds rounds (docs/perf.md).
   */
  private aheadAfter(): number {
    const w = this.windowSectors;
    const { roundMs, sectorsPerMs } = this.pace;
    if (roundMs <= 0 || sectorsPerMs <= 0) return w / 2;
    // the sectors the sync covers during one round, with a margin
    const lead = roundMs * sectorsPerMs * 1.25;
    if (lead >= w) return Infinity;
    if (lead >= w / 2) return w / 2;
    const step = Math.max(128, 2 ** Math.floor(Math.log2(w / 4)));
    return Math.max(w / 2, w - Math.ceil(lead / step) * step);
  }
}
