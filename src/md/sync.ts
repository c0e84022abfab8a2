/**
 * The sync engine (md_do_sync + md_check_recovery, in spirit): one engine per array that runs
 * resync, recovery, check and repair by calling the personality's sync hooks window by window.
 *
 *  - each window holds the barrier for its resync-space buckets, so normal writes and the sync
 *    never interleave on the same region (writes elsewhere go on);
 *  - with a write-intent bitmap, resync and the recovery of a re-added member visit only the
 *    windows whose bits are set;
 *  - progress is kept in memory (the recovery frontier that the request path reads) and
 *    checkpointed in the superblocks (resync_offset / recovery_offset) every checkpoint, each
 *    after a flush of the data it covers;
 *  - speed limits like /proc/sys/dev/raid/speed_limit_{min,max}: above max the engine sleeps;
 *    above min it also sleeps while the array serves other I/O. As md's speed_min()/speed_max():
 *    the array's own sync_speed_min/max when set, else the node-wide values, read at every
 *    throttle step, so a change reaches a sync already running;
 *  - check counts mismatches (mismatch_cnt); repair rewrites them; `idle` stops the current
 *    action (resync/recovery restart on their own), `frozen` stops and holds everything.
 */
import { assert, TsmdError } from '../errors.js';
import type { Clock } from '../env/clock.js';
import type { Personality } from '../raid/personality.js';
import type { SyncBarrier } from './barrier.js';
import type { WriteIntentBitmap } from './bitmap.js';
import type { SyncRecordCap } from './metadata.js';

export type SyncKind = 'resync' | 'recovery' | 'check' | 'repair';

/** What the array asks the engine to do next (md_check_recovery's choice). */
export type SyncPlan =
  | { kind: 'recovery'; slots: number[]; start: number; bitmapGuided: boolean; replace?: boolean }
  | { kind: 'resync'; start: number }
  | { kind: 'check' | 'repair'; start: number };

export interface SyncHost {
  readonly personality: Personality;
  readonly barrier: SyncBarrier;
  readonly bitmap: WriteIntentBitmap | null;
  readonly clock: Clock;
  log(msg: string): void;
  /** The next job, or null when the array is in sync. May assign spares (and write superblocks). */
  planSync(requested: 'check' | 'repair' | null): Promise<SyncPlan | null>;
  /**
   * A replacement's part of the recovery space [start, start+sectors) of these slots: copied
   * from the member it replaces (rebuilt from the others where that cannot be read).
   */
  copyToReplacements(slots: number[], start: number, sectors: number): Promise<void>;
  /** Are the members of this recovery still there (none failed meanwhile)? */
  recoveryValid(slots: number[]): boolean;
  /** Move the in-memory frontier: everything below `pos` is now rebuilt on these slots. */
  setRecoveryFrontier(slots: number[], pos: number): void;
  /** Move the in-memory resync point (md's recovery_cp). */
  setResyncPoint(pos: number): void;
  /**
   * Make what the sync wrote durable (every member's flush, a member being rebuilt included).
   * The engine calls it before a checkpoint and before the final state: md writes a superblock
   * that records sync progress with a flush before it, and on members with a page cache the
   * superblock could otherwise reach the disk before the data it vouches for.
   *
   * These are the only flushes of sync writes: a background flush every 64 MiB (to overlap
   * writeback with the copy) cost 30-40% of the copy's speed on 2 CPUs, where the writeback
   * competes with the copying threads, and bought 15-30% on the time to a durable end
   * (docs/perf.md); the kernel's own writeback and the checkpoints bound the dirty data.
   */
  flushData(): Promise<void>;
  /**
   * Persist progress in the superblocks (checkpoint). `upTo`: the checkpoint runs beside the
   * sync, which goes on past this completed and flushed position; nothing beyond it is recorded.
   */
  checkpoint(upTo?: SyncRecordCap): Promise<void>;
  recoveryDone(slots: number[]): Promise<void>;
  resyncDone(): Promise<void>;
  /** Count of normal (non-sync) I/O requests so far, to tell whether the array is busy. */
  ioCount(): number;
  /** Can a resync/check run (array not degraded, not read-only, no reshape)? */
  canSync(): boolean;
  /**
   * md-cluster's hooks around every job (md_do_sync's resync_start / resync_finish, and
   * raid1/10 sync_request's resync_info_update). `start` waits for the cluster-wide resync
   * lock (queued, aborted by `signal`) and says whether there is a cluster; then the job is
   * planned again (another node may have done the work meanwhile). `window` publishes the
   * ranges the next window touches before they are synced.
   */
  readonly cluster?: {
    /** is the array clustered now (md's mddev_is_clustered)? the hooks are there either way */
    readonly clustered: boolean;
    start(signal: AbortSignal): Promise<boolean>;
    finish(closing: boolean): Promise<void>;
    window(ranges: Array<[number, number]>): Promise<void>;
    /**
     * The windows are announced ahead of the sync (cluster-window.ts): wait for the
     * announcement in flight and raise its error, before the job's end is recorded.
     */
    settle?(): Promise<void>;
    /** sync windows no larger than this while clustered (0: no limit), so the announcement ahead overlaps several */
    readonly stepSectors?: number;
  };
}

export interface SyncStatus {
  kind: SyncKind;
  /** sectors of the action's space done (kernel: curr_resync_completed) */
  doneSectors: number;
  totalSectors: number;
  /** sectors actually read and rewritten (skipped windows excluded) */
  workedSectors: number;
  startedMs: number;
  /** KiB/s over the last few seconds */
  speedKiBs: number;
  windowSectors: number;
  windowSeconds: number;
}

export interface SyncResult {
  kind: SyncKind;
  completed: boolean;
  /** sectors the personality synced (bitmap-skipped windows not counted) */
  workedSectors: number;
  totalSectors: number;
  mismatches: number;
  /** from the start of the job to its last window (data synced, before the final superblocks) */
  dataMs: number;
  /** the whole job, including the final checkpoint or state change (flushes and superblocks) */
  elapsedMs: number;
}

export interface SyncLimits {
  /** KiB/s the sync may always use (md default 1000) */
  minKiBs: number;
  /** KiB/s the sync never exceeds (md default 200000) */
  maxKiBs: number;
}

/** md's defaults; frozen, since engines keep the object they are given (see SyncEngine.system) */
export const DEFAULT_SYNC_LIMITS: Readonly<SyncLimits> = Object.freeze({ minKiBs: 1000, maxKiBs: 200_000 });

/** The longest interval between sync checkpoints (256 MiB of the job's space). */
const MAX_CHECKPOINT_SECTORS = 2048 * 256;

/**
 * Under md's 1/16 rule, no two checkpoints closer than this. Each checkpoint flushes every
 * member before its superblock write (the data first): at 1 GB/s a 256 MiB job checkpointed
 * every 16 MiB spent most of its time in those flushes (bench/sync: resync 0.31x cp, against
 * 0.67-0.81x with none). md bounds lost work by progress (1/16) or time (UPDATE_FREQUENCY);
 * tsmd bounds it by the larger of 1/16 of the job and one second of sync.
 */
const MIN_CHECKPOINT_INTERVAL_MS = 1000;
/**
 * The same floor on a clustered array, where a checkpoint is also a metadata-update round
 * (token, superblock, METADATA_UPDATED to every node): bench/cluster measured 0.4-0.8 s of such
 * rounds per resync at one a second. The checkpoint is only where a resync taken over after a
 * crash or a hand-over starts again: at most ten seconds of sync are done twice.
 */
const MIN_CHECKPOINT_INTERVAL_CLUSTERED_MS = 10_000;

/**
 * No checkpoint when the rest of the job is done in less than this at the current pace: the
 * completion records the state that soon anyway (a 263 MiB clustered resync paid a whole
 * metadata round for a checkpoint at 256 MiB, 50 ms of its 0.7 s).
 */
const END_SOON_MS = 1000;

/** One job in progress (runPlan's state, shared by its steps). */
interface Run {
  readonly plan: SyncPlan;
  readonly kind: SyncKind;
  readonly recovery: boolean;
  /** sectors of the job's space (recovery or resync space) */
  readonly total: number;
  /** the slots a recovery rebuilds (empty otherwise) */
  readonly rebuild: ReadonlySet<number>;
  /** the bitmap when the pass visits only its dirty chunks */
  readonly guided: WriteIntentBitmap | null;
  readonly startMs: number;
  pos: number;
  worked: number;
  sinceCheckpoint: number;
  /** when the last checkpoint (or the job's start) was */
  lastCheckpointMs: number;
  mismatches: number;
}

export class SyncEngine {
  private readonly host: SyncHost;
  /**
   * The node-wide limits (md's sysctl dev.raid.speed_limit_min/max): not copied. The daemon
   * gives every array the same object and changes it in place (`tsmd --speed-limit-max=K`),
   * so running and later arrays all follow, as every mddev reads the one sysctl.
   */
  private readonly system: Readonly<SyncLimits>;
  /** md's per-array sync_speed_min / sync_speed_max (sysfs); null: "system", the node-wide value */
  readonly local: { minKiBs: number | null; maxKiBs: number | null } = { minKiBs: null, maxKiBs: null };
  windowSectors: number;
  /**
   * Sectors of progress between checkpoints; null (the default) is md's rule: md_do_sync
   * records curr_resync_completed (which md_update_sb copies into the rebuilding rdev's
   * recovery_offset) each time it advanced by max_sectors >> 4, 1/16 of the job's space, so a
   * crash loses at most about 1/16 of the work whatever the size. Capped at 256 MiB, the fixed
   * interval tsmd had before: alone, it was never reached by members under ~320 MiB, and a
   * daemon killed during their recovery restarted it from 0 (issue 15).
   */
  checkpointSectors: number | null;
  private running: Promise<void> | null = null;
  private interruptReq: 'idle' | 'frozen' | 'stop' | null = null;
  private frozen = false;
  private stopped = false;
  private requested: 'check' | 'repair' | null = null;
  private status: SyncStatus | null = null;
  private marks: Array<{ ms: number; done: number; worked: number }> = [];
  /** md's mismatch_cnt: sectors found inconsistent by the last check/repair/resync */
  mismatchCnt = 0;
  lastResult: SyncResult | null = null;
  readonly history: SyncResult[] = [];
  private lastError: unknown = null;
  onEvent: (ev: { type: 'started' | 'finished' | 'interrupted'; kind: SyncKind; result?: SyncResult }) => void = () => {};

  constructor(host: SyncHost, limits: Readonly<SyncLimits> = DEFAULT_SYNC_LIMITS, opts: { windowSectors?: number; checkpointSectors?: number } = {}) {
    this.host = host;
    this.system = limits;
    this.windowSectors = opts.windowSectors ?? 2048 * 16;
    this.checkpointSectors = opts.checkpointSectors ?? null;
    // (speed_limit_min/max are validated where a user sets them: a bad value here is a bug)
    assert(limits.minKiBs >= 0 && limits.maxKiBs > 0, 'sync speed limits: min >= 0, max > 0');
    assert(Number.isSafeInteger(this.windowSectors) && this.windowSectors > 0 && (this.checkpointSectors === null || (Number.isSafeInteger(this.checkpointSectors) && this.checkpointSectors > 0)), 'sync window and checkpoint sizes');
  }

  /** The limits in force now: md's speed_min() / speed_max() (the array's own, else the system's). */
  get limits(): SyncLimits {
    return { minKiBs: this.local.minKiBs ?? this.system.minKiBs, maxKiBs: this.local.maxKiBs ?? this.system.maxKiBs };
  }

  get current(): SyncStatus | null {
    return this.status ? { ...this.status, ...this.speed() } : null;
  }

  get isFrozen(): boolean {
    return this.frozen;
  }

  get busy(): boolean {
    return this.running !== null;
  }

  /** md's sync_action word: resync, recover, check, repair, idle, frozen. */
  get action(): string {
    if (this.status) return this.status.kind === 'recovery' ? 'recover' : this.status.kind;
    return this.frozen ? 'frozen' : 'idle';
  }

  /** Look for work (md_check_recovery); returns at once, the work runs in the background. */
  kick(): void {
    if (this.frozen || this.stopped) return;
    if (this.running) {
      // something changed while a job runs: look again when it ends
      this.kickPending = true;
      return;
    }
    this.kickPending = false;
    this.running = this.loop().finally(() => {
      this.running = null;
      if (this.kickPending && !this.stopped && !this.frozen && this.interruptReq === null) queueMicrotask(() => this.kick());
    });
  }

  private kickPending = false;
  /** md-cluster: waiting for the cluster's resync lock (mdstat: resync=PENDING) */
  waitingForCluster = false;
  private clusterWait: AbortController | null = null;
  /** ends the throttle's current sleep (set while it sleeps) */
  private wakeThrottle: (() => void) | null = null;
  private jobsRun = 0;

  /** Run until nothing is left to do (tests, the CLI's offline sync). */
  async runUntilIdle(): Promise<SyncResult[]> {
    const before = this.history.length;
    this.lastError = null;
    for (;;) {
      if (this.running) await this.running.catch(() => {});
      const jobs = this.jobsRun;
      this.kick();
      if (!this.running) break;
      await this.running;
      if (this.lastError) throw this.lastError;
      // stop when a pass found nothing to do, or was interrupted
      if (this.jobsRun === jobs || !this.lastResult?.completed) break;
    }
    return this.history.slice(before);
  }

  /** mdadm --action / sync_action: check, repair, idle, frozen. */
  async setAction(action: 'check' | 'repair' | 'idle' | 'frozen' | 'resync' | 'recover'): Promise<void> {
    switch (action) {
      case 'check':
      case 'repair':
        if (this.running) throw new TsmdError('EBUSY', `a ${this.status?.kind ?? 'sync'} is running; set the action to idle first`);
        if (!this.host.canSync()) throw new TsmdError('EBUSY', `cannot ${action}: the array is degraded, read-only or reshaping`);
        this.frozen = false;
        this.requested = action;
        this.kick();
        return;
      case 'idle':
        this.frozen = false;
        this.requested = null;
        await this.interrupt('idle');
        this.kick();
        return;
      case 'frozen':
        this.frozen = true;
        this.requested = null;
        await this.interrupt('frozen');
        return;
      case 'resync':
      case 'recover':
        this.frozen = false;
        this.kick();
        return;
    }
  }

  private async interrupt(why: 'idle' | 'frozen' | 'stop'): Promise<void> {
    if (!this.running) return;
    this.interruptReq = why;
    // a job sleeping in the throttle stops now, not when its sleep ends (md_wakeup_thread)
    this.wakeThrottle?.();
    // and a wait for the cluster's resync lock ends (md: interruptible by stop / MD_CLOSING)
    this.clusterWait?.abort();
    await this.running.catch(() => {});
    this.interruptReq = null;
  }

  /** Stop for good (array stop): the current job checkpoints and ends. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.interrupt('stop');
  }

  private speed(): { speedKiBs: number; windowSectors: number; windowSeconds: number } {
    const now = this.host.clock.nowMs();
    const m = this.marks[0];
    if (!m || !this.status) return { speedKiBs: 0, windowSectors: 0, windowSeconds: 1 };
    const dt = Math.max(1, (now - m.ms) / 1000);
    const db = this.status.doneSectors - m.done;
    return { speedKiBs: Math.floor(db / 2 / dt), windowSectors: db, windowSeconds: Math.max(1, Math.floor(dt)) };
  }

  private mark(done: number): void {
    // progress only moves forward within a job (md's curr_resync; marks restart per job)
    assert(this.marks.length === 0 || done >= this.marks[this.marks.length - 1]!.done, 'sync progress is monotonic');
    const now = this.host.clock.nowMs();
    this.marks.push({ ms: now, done, worked: this.status?.workedSectors ?? 0 });
    // keep ~10 s of marks, like the kernel's sync mark window
    while (this.marks.length > 2 && now - this.marks[1]!.ms > 10_000) this.marks.shift();
  }

  private async loop(): Promise<void> {
    while (!this.stopped && !this.frozen && this.interruptReq === null) {
      let plan: SyncPlan | null;
      try {
        plan = await this.host.planSync(this.requested);
      } catch (e) {
        this.lastError = e;
        this.host.log(`md: cannot start sync: ${(e as Error).message}`);
        return;
      }
      if (!plan) return;
      const cluster = this.host.cluster;
      let locked = false;
      if (cluster) {
        try {
          locked = await this.clusterLock(cluster);
          if (locked) plan = await this.host.planSync(this.requested);
        } catch (e) {
          if (locked) await cluster.finish(this.stopped).catch(() => {});
          if ((e as TsmdError).code !== 'ECANCELED') {
            this.lastError = e;
            this.host.log(`md: cannot start sync: ${(e as Error).message}`);
          }
          return;
        }
        if (!plan) {
          if (locked) await cluster.finish(this.stopped).catch(() => {});
          return;
        }
      }
      if (plan.kind === 'check' || plan.kind === 'repair') this.requested = null;
      try {
        const r = await this.runPlan(plan).finally(async () => {
          if (locked) await cluster!.finish(this.stopped).catch((e: unknown) => this.host.log(`md-cluster: resync_finish: ${(e as Error).message}`));
        });
        this.jobsRun++;
        this.lastResult = r;
        this.history.push(r);
        if (this.history.length > 32) this.history.shift();
        if (!r.completed) return;
      } catch (e) {
        this.lastError = e;
        this.host.log(`md: ${plan.kind} aborted: ${(e as Error).message}`);
        return;
      }
    }
  }

  /** resync_start: the cluster-wide lock, waited for while mdstat says PENDING. */
  private async clusterLock(cluster: NonNullable<SyncHost['cluster']>): Promise<boolean> {
    const ac = new AbortController();
    this.clusterWait = ac;
    this.waitingForCluster = true;
    try {
      return await cluster.start(ac.signal);
    } finally {
      this.waitingForCluster = false;
      this.clusterWait = null;
    }
  }

  private async runPlan(plan: SyncPlan): Promise<SyncResult> {
    const run = this.startRun(plan);
    const { kind, total, recovery } = run;
    const every = this.checkpointSectors ?? Math.min(MAX_CHECKPOINT_SECTORS, Math.max(1, Math.floor(total / 16)));
    // an interval set by hand is taken as it is; md's rule gets the time floor
    const floorMs = this.checkpointSectors !== null ? 0 : this.host.cluster?.clustered ? MIN_CHECKPOINT_INTERVAL_CLUSTERED_MS : MIN_CHECKPOINT_INTERVAL_MS;
    // clustered, a checkpoint is a metadata round with every node (token, superblocks,
    // METADATA_UPDATED): it runs beside the sync, as md's thread writes the superblock while
    // md_do_sync goes on; one at a time
    const beside = this.host.cluster?.clustered === true;
    const cp: { running: Promise<void> | null; error: unknown } = { running: null, error: null };
    let completed: boolean;
    let dataMs: number;
    try {
      try {
        while (run.pos < total && !this.interrupted(plan)) {
          if (cp.error !== null) throw cp.error;
          await this.syncWindow(run);
          // (not in the last quarter interval, nor under md's rule when the rest takes less than
          // END_SOON_MS at the current pace: the completion writes the superblocks soon anyway)
          const waited = this.host.clock.nowMs() - run.lastCheckpointMs >= floorMs;
          const due = run.sinceCheckpoint >= MAX_CHECKPOINT_SECTORS || (run.sinceCheckpoint >= every && waited);
          const left = total - run.pos;
          const endsSoon = due && this.checkpointSectors === null && left / 2 < (this.instantSpeed().speedKiBs * END_SOON_MS) / 1000;
          if (due && left >= every / 4 && !endsSoon && (kind === 'resync' || recovery) && cp.running === null) {
            run.sinceCheckpoint = 0;
            run.lastCheckpointMs = this.host.clock.nowMs();
            if (beside) cp.running = this.checkpointBeside(run, cp);
            else {
              await this.host.flushData();
              await this.host.checkpoint();
            }
          }
          await this.throttle();
        }
      } finally {
        // no superblock write of this job outlives it (the job's end, or the array's stop)
        if (cp.running) await cp.running;
      }
      if (cp.error !== null) throw cp.error;
      await this.host.cluster?.settle?.();
      completed = run.pos >= total;
      assert(run.pos <= total || run.pos === plan.start, 'sync stopped inside its space');
      dataMs = this.host.clock.nowMs() - run.startMs;
      await this.endRun(run, completed);
    } finally {
      this.status = null;
    }
    const elapsedMs = this.host.clock.nowMs() - run.startMs;
    const result: SyncResult = { kind, completed, workedSectors: run.worked, totalSectors: total, mismatches: run.mismatches, dataMs, elapsedMs };
    const secs = Math.max(0.001, elapsedMs / 1000);
    const what = kind === 'check' || kind === 'repair' ? `, mismatches ${run.mismatches}` : '';
    this.host.log(`md: ${kind} ${completed ? 'done' : 'interrupted'}: ${run.worked / 2} KiB worked in ${secs.toFixed(1)} s${what}`);
    this.onEvent({ type: completed ? 'finished' : 'interrupted', kind, result });
    return result;
  }

  /**
   * A checkpoint at the completed position, written while the sync goes on: everything below
   * it was synced before the flush started (the engine is serial), so the flush covers it
   * (md's superblock write carries a preflush), and the superblocks record no more than it.
   * Its error stops the job at the next window, as a checkpoint in line would have.
   */
  private checkpointBeside(run: Run, cp: { running: Promise<void> | null; error: unknown }): Promise<void> {
    const upTo: SyncRecordCap = { kind: run.recovery ? 'recovery' : 'resync', sectors: run.pos };
    return (async () => {
      await this.host.flushData();
      await this.host.checkpoint(upTo);
    })()
      .catch((e: unknown) => {
        cp.error = e;
      })
      .finally(() => {
        cp.running = null;
      });
  }

  /** A job's state, and its status for mdstat and --detail from its first window on. */
  private startRun(plan: SyncPlan): Run {
    const p = this.host.personality;
    const recovery = plan.kind === 'recovery';
    const total = recovery ? p.recoverySectors : p.syncSectors;
    assert(Number.isSafeInteger(total) && total >= 0 && Number.isSafeInteger(plan.start) && plan.start >= 0, 'sync plan: space and start');
    assert(!recovery || plan.slots.length > 0, 'a recovery rebuilds at least one slot');
    const bitmap = this.host.bitmap;
    const guided = bitmap !== null && (plan.kind === 'resync' || (plan.kind === 'recovery' && plan.bitmapGuided));
    const startMs = this.host.clock.nowMs();
    const kind: SyncKind = plan.kind;
    const none = { workedSectors: 0, speedKiBs: 0, windowSectors: 0, windowSeconds: 1 };
    this.status = { kind, doneSectors: plan.start, totalSectors: total, startedMs: startMs, ...none };
    this.marks = [];
    this.mark(plan.start);
    if (kind === 'check' || kind === 'repair') this.mismatchCnt = 0;
    const name = kind === 'recovery' ? 'recovery' : kind === 'resync' ? 'resync' : `data-check (${kind})`;
    this.host.log(`md: ${name} of ${total / 2} blocks started at ${plan.start / 2}${guided ? ' (bitmap-guided)' : ''}`);
    this.onEvent({ type: 'started', kind });
    const rebuild = new Set(plan.kind === 'recovery' ? plan.slots : []);
    const progress = { pos: plan.start, worked: 0, sinceCheckpoint: 0, lastCheckpointMs: startMs, mismatches: 0 };
    return { plan, kind, recovery, total, rebuild, guided: guided ? bitmap : null, startMs, ...progress };
  }

  /** Stop between windows: asked to, a member of the recovery failed, or the array degraded. */
  private interrupted(plan: SyncPlan): boolean {
    if (this.interruptReq !== null || this.stopped) return true;
    if (plan.kind === 'recovery' && !this.host.recoveryValid(plan.slots)) {
      this.host.log('md: recovery interrupted: a member failed');
      return true;
    }
    if (plan.kind !== 'recovery' && !this.host.canSync()) {
      this.host.log(`md: ${plan.kind} interrupted: the array is degraded`);
      return true;
    }
    return false;
  }

  /** The window's size: at most ~100 ms of work at the speed limit, within a bitmap chunk when guided. */
  private windowAt(run: Run): number {
    // a power of two, so a bitmap-guided window never straddles a bitmap chunk; a
    // bitmap-guided pass works chunk by chunk, so it syncs exactly the dirty chunks
    const byLimit = Math.max(128, 2 ** Math.floor(Math.log2(Math.max(1, (this.limits.maxKiBs * 2) / 10))));
    const step = this.host.cluster?.clustered ? (this.host.cluster.stepSectors ?? 0) : 0;
    const base = Math.min(this.windowSectors, byLimit, step > 0 ? step : Infinity);
    const win = run.guided ? Math.max(128, Math.min(run.guided.chunkSectors, base)) : base;
    const n = Math.min(win - (run.guided ? run.pos % win : 0), run.total - run.pos);
    // a window is never empty (the loop would not advance) and never past the end
    assert(n > 0 && run.pos + n <= run.total, 'sync window start < end <= total');
    return n;
  }

  /** One window of the job, under the barrier for its resync-space ranges (md_do_sync's loop body). */
  private async syncWindow(run: Run): Promise<void> {
    const { plan, kind, pos } = run;
    const p = this.host.personality;
    const n = this.windowAt(run);
    const ranges: Array<[number, number]> = plan.kind === 'recovery' ? plan.slots.flatMap((s) => p.recoveryToSync(s, pos, n)) : [[pos, pos + n]];
    const skip = run.guided !== null && !ranges.some(([a, b]) => run.guided!.anyNeedSync(a, b));
    if (!skip) {
      if (this.host.cluster) await this.host.cluster.window(ranges);
      const release = await this.host.barrier.lockRanges(ranges);
      try {
        if (kind === 'check' || kind === 'repair') {
          const bad = await p.checkRegion(pos, n, kind === 'repair');
          run.mismatches += bad;
          this.mismatchCnt += bad;
        } else if (plan.kind === 'recovery' && plan.replace) {
          await this.host.copyToReplacements(plan.slots, pos, n);
        } else {
          await p.syncRegion(pos, n, run.rebuild);
        }
        // the frontier moves while the window is still held: no write can slip between
        if (plan.kind === 'recovery') this.host.setRecoveryFrontier(plan.slots, pos + n);
      } finally {
        release();
      }
      run.worked += n;
      run.sinceCheckpoint += n;
    } else if (plan.kind === 'recovery') {
      this.host.setRecoveryFrontier(plan.slots, pos + n);
    }
    run.pos = pos + n;
    if (kind === 'resync') {
      this.host.setResyncPoint(run.pos);
      // this window's chunks only (from the start of the chunk it began in, which the window
      // before it left partly synced): bits merged behind the job since it passed them (md-cluster
      // taking a dead node's bitmap over) stay for the next resync (simulator seed 235)
      const bm = this.host.bitmap;
      if (bm) bm.synced(Math.max(plan.start, Math.floor(pos / bm.chunkSectors) * bm.chunkSectors), run.pos);
    }
    this.status!.doneSectors = run.pos;
    this.status!.workedSectors = run.worked;
    this.mark(run.pos);
  }

  /** Data durable first, then the state that vouches for it: done, or a checkpoint to resume from. */
  private async endRun(run: Run, completed: boolean): Promise<void> {
    const { kind, recovery, plan } = run;
    // what the superblocks are about to vouch for is on the disks first
    if (kind === 'resync' || recovery) await this.host.flushData();
    // progress ends before the members change state (mdstat / --monitor order: the
    // rebuild finishes, then the spare is active)
    this.status = null;
    if (completed) {
      if (plan.kind === 'recovery') await this.host.recoveryDone(plan.slots);
      else if (kind === 'resync') await this.host.resyncDone();
    } else if (kind === 'resync' || recovery) {
      await this.host.checkpoint();
    }
  }

  /** md's throttle: never above max; above min only while the array is idle. */
  private lastIo = -1;

  private async throttle(): Promise<void> {
    for (let i = 0; i < 1000; i++) {
      if (this.interruptReq !== null || this.stopped) return;
      const { speedKiBs } = this.instantSpeed();
      const io = this.host.ioCount();
      const busy = this.lastIo >= 0 && io !== this.lastIo;
      this.lastIo = io;
      // read afresh at each step (md_do_sync calls speed_min()/speed_max() on every pass); with
      // min > max, which md accepts, max wins: above it the sync always sleeps
      const limits = this.limits;
      if (speedKiBs > limits.maxKiBs || (speedKiBs > limits.minKiBs && busy)) {
        await this.nap(busy ? 10 : 20);
        continue;
      }
      return;
    }
  }

  /** The throttle's sleep on the injected clock, cut short by an interrupt. */
  private async nap(ms: number): Promise<void> {
    assert(this.wakeThrottle === null, 'one throttle sleep at a time');
    const woken = new Promise<void>((resolve) => {
      this.wakeThrottle = resolve;
    });
    try {
      await Promise.race([this.host.clock.sleep(ms), woken]);
    } finally {
      this.wakeThrottle = null;
    }
  }

  /** Speed over the last ~second (finer than the 10 s mdstat window). */
  private instantSpeed(): { speedKiBs: number } {
    const now = this.host.clock.nowMs();
    if (!this.status || this.marks.length === 0) return { speedKiBs: 0 };
    let ref = this.marks[0]!;
    for (const m of this.marks) if (now - m.ms <= 1000) {
      ref = m;
      break;
    }
    const dt = Math.max(0.05, (now - ref.ms) / 1000);
    // sectors worked, not skipped: a bitmap-guided pass is not slowed by what it skips
    return { speedKiBs: (this.status.workedSectors - ref.worked) / 2 / dt };
  }
}
