/**
 * The simulator's view of a shared disk from one node (one incarnation of it): every I/O takes
 * a random latency on the simulated clock, so the I/O of different nodes (and the concurrent
 * I/O of one node, which md issues only where their order does not matter) interleave and land
 * in any order. When the node dies, each of its writes in flight lands or not, in whole 4 KiB
 * units (what a disk writes atomically), and nothing of it ever completes: a dead process
 * hears no completion.
 *
 * The disk also checks the fencing invariants at the moment they can break:
 *  - a node that has learnt it is fenced issues no member write (md-cluster's FenceableDevice);
 *  - no write of a node lands after its lease expired (a survivor may own its regions by then).
 */
import type { Clock } from '../env/clock.js';
import type { Random } from '../env/random.js';
import type { BlockDevice } from '../io/block-device.js';
import type { MemoryBlockDevice } from '../io/memory-device.js';

/** Disk writes are atomic in units of this many bytes (a 4Kn disk). */
export const ATOMIC_BYTES = 4096;

/** What a disk handle asks of the node it belongs to. */
export interface DiskOwner {
  readonly name: string;
  /** the process runs (false once killed: its I/O never completes) */
  readonly alive: boolean;
  /** the node's md has been told it is fenced (markFenced ran) */
  fenceKnown(): boolean;
  /** the DLM expired the node's lease (a survivor may have its locks) */
  readonly expired: boolean;
  /** the latency of one I/O, in ms */
  latencyMs(): number;
  violation(what: string): void;
  trace(line: string): void;
}

interface InFlight {
  buf: Uint8Array;
  offsetBytes: number;
  cancel: () => void;
}

export class SimDisk implements BlockDevice {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly = false;
  private readonly inFlight = new Set<InFlight>();
  /** writes issued, landed (tests) */
  readonly stats = { writes: 0, landed: 0, tornOnKill: 0 };

  constructor(
    private readonly inner: MemoryBlockDevice,
    private readonly owner: DiskOwner,
    private readonly clock: Clock,
  ) {
    this.name = inner.name;
    this.sizeBytes = inner.sizeBytes;
  }

  get pendingWrites(): number {
    return this.inFlight.size;
  }

  /** after the latency, unless the node died meanwhile (then never) */
  private later<T>(fn: () => T): Promise<T> {
    const o = this.owner;
    if (!o.alive) return new Promise<T>(() => {});
    return new Promise<T>((resolve, reject) => {
      this.clock.setTimer(o.latencyMs(), () => {
        if (!o.alive) return;
        try {
          resolve(fn());
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    return this.later(() => this.inner.readSync(buf, offsetBytes));
  }

  write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    const o = this.owner;
    if (!o.alive) return new Promise<void>(() => {});
    if (o.fenceKnown()) o.violation(`${o.name} issued a write to ${this.name} at ${offsetBytes}+${buf.length} after it learnt of its fence`);
    this.stats.writes++;
    // not copied: the caller owns the buffer until the write completes (a caller that changed it
    // while in flight would be a bug, and the data oracle would see what landed)
    const copy = buf;
    return new Promise<void>((resolve, reject) => {
      const f: InFlight = { buf: copy, offsetBytes, cancel: () => {} };
      const t = this.clock.setTimer(o.latencyMs(), () => {
        this.inFlight.delete(f);
        if (!o.alive) return;
        try {
          this.land(copy, offsetBytes);
          resolve();
        } catch (e) {
          reject(e);
        }
      });
      f.cancel = () => t.cancel();
      this.inFlight.add(f);
    });
  }

  private land(buf: Uint8Array, offsetBytes: number): void {
    const o = this.owner;
    if (o.expired) o.violation(`a write of ${o.name} landed on ${this.name} at ${offsetBytes}+${buf.length} after its lease expired`);
    this.inner.writeSync(buf, offsetBytes);
    this.stats.landed++;
  }

  flush(): Promise<void> {
    // (the memory disk's volatile cache, when it has one, is made durable at that moment)
    return this.later(() => void this.inner.flush());
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /**
   * The node died: each 4 KiB unit of each write in flight reaches the disk or not (`keep`
   * decides), and none completes. Returns how many units landed and were lost.
   */
  kill(keep: () => boolean): { kept: number; lost: number } {
    let kept = 0;
    let lost = 0;
    for (const f of this.inFlight) {
      f.cancel();
      for (let at = 0; at < f.buf.length;) {
        const unitEnd = Math.min(f.buf.length, (Math.floor((f.offsetBytes + at) / ATOMIC_BYTES) + 1) * ATOMIC_BYTES - f.offsetBytes);
        if (keep()) {
          this.inner.writeSync(f.buf.subarray(at, unitEnd), f.offsetBytes + at);
          kept++;
        } else lost++;
        at = unitEnd;
      }
    }
    this.inFlight.clear();
    if (kept + lost > 0) this.owner.trace(`  ${this.name}: ${kept} in-flight 4K units landed, ${lost} lost`);
    this.stats.tornOnKill += lost;
    return { kept, lost };
  }
}

/** A node's clock: the simulation's, except that a dead node's timers never fire. */
export class NodeClock implements Clock {
  constructor(
    private readonly c: Clock,
    private readonly alive: () => boolean,
  ) {}

  nowMs(): number {
    return this.c.nowMs();
  }

  wallMs(): number {
    return this.c.wallMs();
  }

  setTimer(delayMs: number, fn: () => void): { cancel(): void } {
    return this.c.setTimer(delayMs, () => {
      if (this.alive()) fn();
    });
  }

  sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.setTimer(delayMs, resolve));
  }
}

/** A uniform choice (the simulator's one way to pick). */
export function pick<T>(r: Random, xs: readonly T[]): T {
  return xs[r.int(0, xs.length)]!;
}
