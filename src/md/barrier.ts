/**
 * The barrier between normal writes and the sync engine (md raid1/raid10's barrier buckets,
 * generalised): the resync address space is cut into buckets; a write holds the buckets it
 * touches while it runs, a sync window holds its buckets exclusively. A sync that wants a
 * bucket stops new writes to it at once and waits for the ones in flight, so it cannot starve;
 * writes elsewhere go on. The sync engine and read-error correction are the only exclusive
 * users, and they queue behind each other.
 */
import { assert } from '../errors.js';

export class SyncBarrier {
  readonly bucketSectors: number;
  /** in-flight writes per bucket */
  private readonly writers = new Map<number, number>();
  /** buckets held (or being drained) by an exclusive user */
  private readonly held = new Set<number>();
  private writeWaiters: Array<() => void> = [];
  private drainWaiters: Array<() => void> = [];
  private exclusiveTail: Promise<void> = Promise.resolve();

  constructor(bucketSectors: number) {
    assert(Number.isInteger(bucketSectors) && bucketSectors > 0, 'barrier bucket size');
    this.bucketSectors = bucketSectors;
  }

  private bucketsOf(start: number, end: number): [number, number] {
    return [Math.floor(start / this.bucketSectors), Math.floor((Math.max(end, start + 1) - 1) / this.bucketSectors)];
  }

  /** Enter without waiting when no exclusive user holds the range; false otherwise. */
  tryEnterWrite(start: number, end: number): boolean {
    const [b0, b1] = this.bucketsOf(start, end);
    if (this.held.size > 0) {
      for (let b = b0; b <= b1; b++) if (this.held.has(b)) return false;
    }
    for (let b = b0; b <= b1; b++) this.writers.set(b, (this.writers.get(b) ?? 0) + 1);
    return true;
  }

  async enterWrite(start: number, end: number): Promise<void> {
    while (!this.tryEnterWrite(start, end)) {
      await new Promise<void>((r) => this.writeWaiters.push(r));
    }
  }

  leaveWrite(start: number, end: number): void {
    const [b0, b1] = this.bucketsOf(start, end);
    let drained = false;
    for (let b = b0; b <= b1; b++) {
      const n = this.writers.get(b);
      assert(n !== undefined && n > 0, 'barrier: leaving a bucket that was not entered');
      if (n === 1) {
        this.writers.delete(b);
        if (this.held.has(b)) drained = true;
      } else this.writers.set(b, n - 1);
    }
    if (drained) {
      const w = this.drainWaiters;
      this.drainWaiters = [];
      for (const f of w) f();
    }
  }

  /**
   * Hold the buckets of the given ranges exclusively: new writes there wait, writes in flight
   * finish first. Returns the release function.
   */
  async lockRanges(ranges: ReadonlyArray<readonly [number, number]>): Promise<() => void> {
    const prev = this.exclusiveTail;
    let done!: () => void;
    this.exclusiveTail = new Promise<void>((r) => {
      done = r;
    });
    await prev;
    const buckets = new Set<number>();
    for (const [s, e] of ranges) {
      const [b0, b1] = this.bucketsOf(s, e);
      for (let b = b0; b <= b1; b++) buckets.add(b);
    }
    for (const b of buckets) this.held.add(b);
    const busy = () => [...buckets].some((b) => this.writers.has(b));
    while (busy()) await new Promise<void>((r) => this.drainWaiters.push(r));
    return () => {
      for (const b of buckets) this.held.delete(b);
      const w = this.writeWaiters;
      this.writeWaiters = [];
      for (const f of w) f();
      done();
    };
  }
}
