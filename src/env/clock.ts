/**
 * Time, injected. The core (md/, raid/, cluster/) never calls setTimeout or Date.now itself:
 * it gets a Clock, so tests and the simulator can drive time by hand and replay a run exactly.
 * (The kernel's counterparts: jiffies for nowMs, ktime_get_real_seconds for wallMs.)
 */
export interface Timer {
  /** Stop the timer; harmless after it fired or was cancelled. */
  cancel(): void;
}

export interface Clock {
  /** Milliseconds on a monotonic scale (not wall time): for intervals, timeouts, speeds. */
  nowMs(): number;
  /**
   * Wall-clock milliseconds since the Unix epoch: for what leaves the process and is compared
   * with other machines' clocks (superblock utime, gRPC deadlines). It may jump (NTP, the
   * simulator); never measure an interval with it.
   */
  wallMs(): number;
  /** Call `fn` once after `delayMs` (>= 0). */
  setTimer(delayMs: number, fn: () => void): Timer;
  /** Resolve after `delayMs`. */
  sleep(delayMs: number): Promise<void>;
}

/** The real clock: performance.now() and setTimeout (timers do not keep the process alive). */
export class SystemClock implements Clock {
  nowMs(): number {
    return performance.now();
  }

  wallMs(): number {
    return Date.now();
  }

  setTimer(delayMs: number, fn: () => void): Timer {
    const t = setTimeout(fn, Math.max(0, delayMs));
    t.unref();
    return { cancel: () => clearTimeout(t) };
  }

  sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, Math.max(0, delayMs)));
  }
}

interface Pending {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

export interface ManualClockOptions {
  /**
   * Wall time (ms since the epoch) at monotonic time `startMs` (default 1_700_000_000_000, a
   * fixed instant, so a replayed run writes the same timestamps).
   */
  wallStartMs?: number;
}

/**
 * A clock that moves only when told to. Timers due at the same instant fire in the order they
 * were set, so a run is a pure function of the calls made on it. Wall time is the wall start
 * plus the manual time elapsed since construction, moved further by setWallMs (an NTP step).
 */
export class ManualClock implements Clock {
  private now: number;
  private seq = 0;
  private pending: Pending[] = [];
  /** wall time minus monotonic time */
  private wallOffset: number;

  constructor(startMs = 0, opts: ManualClockOptions = {}) {
    this.now = startMs;
    this.wallOffset = (opts.wallStartMs ?? 1_700_000_000_000) - startMs;
  }

  nowMs(): number {
    return this.now;
  }

  wallMs(): number {
    return this.now + this.wallOffset;
  }

  /** Step the wall clock to `ms` (like settimeofday); monotonic time and timers do not move. */
  setWallMs(ms: number): void {
    this.wallOffset = ms - this.now;
  }

  setTimer(delayMs: number, fn: () => void): Timer {
    const p: Pending = { at: this.now + Math.max(0, delayMs), seq: this.seq++, fn, cancelled: false };
    this.pending.push(p);
    return {
      cancel: () => {
        p.cancelled = true;
      },
    };
  }

  sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.setTimer(delayMs, resolve));
  }

  /**
   * When the next live timer is due (null: none). A discrete-event simulator jumps there once
   * every promise callback has run: nothing can happen before it.
   */
  nextDueMs(): number | null {
    let at: number | null = null;
    for (const p of this.pending) if (!p.cancelled && (at === null || p.at < at)) at = p.at;
    return at;
  }

  /** Number of timers not yet fired or cancelled. */
  get pendingTimers(): number {
    return this.pending.filter((p) => !p.cancelled).length;
  }

  /** Move time forward by `deltaMs`, firing every timer that comes due, in order. */
  advance(deltaMs: number): void {
    const target = this.now + Math.max(0, deltaMs);
    for (;;) {
      let next: Pending | undefined;
      for (const p of this.pending) {
        if (p.cancelled || p.at > target) continue;
        if (!next || p.at < next.at || (p.at === next.at && p.seq < next.seq)) next = p;
      }
      if (!next) break;
      this.pending = this.pending.filter((p) => p !== next);
      this.now = next.at;
      next.fn();
    }
    this.pending = this.pending.filter((p) => !p.cancelled);
    this.now = target;
  }

  /**
   * Advance in small steps, letting promise callbacks run between them, so code that awaits
   * sleeps makes progress as it would in real time.
   */
  async advanceAsync(deltaMs: number, stepMs = 1): Promise<void> {
    const target = this.now + Math.max(0, deltaMs);
    while (this.now < target) {
      this.advance(Math.min(stepMs, target - this.now));
      for (let i = 0; i < 4; i++) await new Promise<void>((r) => setImmediate(r));
    }
  }
}
