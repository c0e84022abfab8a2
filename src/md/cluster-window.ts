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
import { assert } from '../errors.js';
import type { ClusterOps, SyncWindow } from './cluster-ops.js';

/**
 * The window's size (spec §7, "every 32 MiB of resync is a synchronous all-node DLM round":
 * window tuning). md's window is fixed in bytes (32 MiB for raid1), so the share of a resync
 * spent in rounds depends on how fast the disks are next to the DLM: 40-45 % here with etcd on
 * the same two cores (docs/perf.md), and how long another node's write into the window waits
 * depends on the disks too (a 32 MiB window is 0.3 s of a 100 MB/s disk's copy). tsmd sizes it
 * in time instead, from the measured round time R and the sync's pace: about
 * WINDOW_ROUNDS rounds of copy (rounds then cost at most about 1/(WINDOW_ROUNDS+1) of the
 * sync), never more than WINDOW_MAX_MS of copy (the longest another node's write waits in it,
 * as long as md's window makes it wait on a 128 MB/s disk), never less than md's window.
 * Receivers take any range (the kernel's only stores low and high), so nothing on the wire
 * or on disk changes.
 */
export const WINDOW_ROUNDS = 8;
export const WINDOW_MAX_MS = 250;
/** and at most this many of md's windows (1 GiB for raid1), whatever the pace */
export const WINDOW_MAX_FACTOR = 32;

/** An exponentially weighted mean (the first sample taken as it is). */
function ewma(mean: number, sample: number): number {
  return mean <= 0 ? sample : mean * 0.7 + sample * 0.3;
}

/**
 * ClusterSyncWindow's sizing rule, pure: WINDOW_ROUNDS rounds of copy at `sectorsPerMs`, at
 * most WINDOW_MAX_MS of copy, WINDOW_MAX_FACTOR md windows and twice `prevSectors`, in whole
 * sync windows (`stepSectors`); never less than md's window, which is also the first (no
 * previous window, or nothing measured yet).
 */
export function windowSize(o: { mdSectors: number; stepSectors: number; prevSectors: number; roundMs: number; sectorsPerMs: number }): number {
  const md = o.mdSectors;
  assert(md > 0 && o.stepSectors > 0 && o.stepSectors <= md, 'cluster window: md window and sync window sizes');
  if (o.roundMs <= 0 || o.sectorsPerMs <= 0 || o.prevSectors <= 0) return md;
  const byTime = o.sectorsPerMs * Math.min(o.roundMs * WINDOW_ROUNDS, WINDOW_MAX_MS);
  const whole = (n: number): number => Math.floor(n / o.stepSectors) * o.stepSectors;
  const w = Math.max(md, Math.min(whole(byTime), md * WINDOW_MAX_FACTOR, whole(2 * o.prevSectors)));
  assert(w >= md && w <= md * WINDOW_MAX_FACTOR, "cluster window: between md's window and its cap");
  return w;
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
    /** md's CLUSTER_RESYNC_WINDOW (raid1) or raid10's stripe-sized rule: the smallest window */
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
    if (pace.lastMs >= 0 && lo > pace.lastLo && lo - pace.lastLo <= this.acked.hi - this.acked.lo && now > pace.lastMs) {
      pace.sectorsPerMs = ewma(pace.sectorsPerMs, (lo - pace.lastLo) / (now - pace.lastMs));
    }
    const inside = (w: SyncWindow): boolean => w.hi > 0 && lo >= w.lo && hi <= w.hi;
    if (!inside(this.acked)) await this.settle();
    else this.raise();
    const end = Math.max(hi, syncSectors);
    const size = this.size(this.acked.hi - this.acked.lo);
    if (!inside(this.acked)) await this.announce({ lo, hi: Math.min(Math.max(hi, lo + size), end) });
    pace.lastMs = this.clock.nowMs();
    pace.lastLo = lo;
    const w = this.acked;
    if (this.ahead || w.hi >= end || lo - w.lo < this.aheadAfter(w.hi - w.lo)) return;
    const p: Promise<void> = this.announce({ lo, hi: Math.max(w.hi, Math.min(lo + size, end)) })
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

  /**
   * The next window's size (sectors, whole sync windows) after one of `prev` sectors (0: the
   * job's first): WINDOW_ROUNDS rounds of copy at the measured pace, capped at WINDOW_MAX_MS of
   * copy and WINDOW_MAX_FACTOR md windows, at most twice the previous one (a pace measured on
   * the job's first windows, before its throttle settles, does not open a huge window at once);
   * never less than md's window, which is also the first.
   */
  size(prev: number): number {
    return windowSize({ mdSectors: this.windowSectors, stepSectors: this.stepSectors, prevSectors: prev, ...this.pace });
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
  private aheadAfter(w: number): number {
    const { roundMs, sectorsPerMs } = this.pace;
    if (roundMs <= 0 || sectorsPerMs <= 0) return w / 2;
    // the sectors the sync covers during one round, with a margin
    const lead = roundMs * sectorsPerMs * 1.25;
    if (lead >= w) return Infinity;
    if (lead >= w / 2) return w / 2;
    const step = this.stepSectors;
    return Math.max(w / 2, w - Math.ceil(lead / step) * step);
  }
}
