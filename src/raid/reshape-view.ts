/**
 * An array in the middle of a reshape (RESHAPE_ACTIVE): array sectors on one side of
 * reshape_position are in the new geometry (at data_offset + new_offset on every member), the
 * rest in the old one (shared/spec/md-formats.md §1.7, §4.2). This view serves reads and
 * writes across both; the reshape engine (md/reshape.ts) moves the frontier.
 *
 * Like raid5.c's make_request during a reshape: a request below the frontier goes to the new
 * geometry, one above it to the old, and one that touches the region being copied waits until
 * the engine has copied it. The engine holds a region with hold(): writes already in flight
 * there are waited for; new ones wait. Reads are never held (the old copy stays intact until
 * the region is checkpointed), but the engine waits for old-geometry requests that started
 * before the frontier moved before it overwrites member rows (drainOld).
 *
 * Unlike md, a write to a region copied but not yet checkpointed (md's reshape_safe ..
 * reshape_progress, where raid5.c makes writes wait for the next superblock update) does not
 * wait: it goes to both geometries (markCopied()). The old rows there stay intact until the
 * checkpoint, so a crash before it resumes from the old copy, which has the write; after it
 * the new copy has it too. With the reshape capped under client writes, md's wait put half of
 * a QD32 random-write load's queue on the checkpoint's flush (bench/reshape.ts).
 *
 * When the reshape finishes the array installs a plain personality and retires this view
 * with a successor: requests that reach it afterwards are passed on.
 */
import { assert, TsmdError } from '../errors.js';
import { Feature, type Superblock1 } from '../format/superblock.js';
import type { MemberIo, Personality } from './personality.js';

export type MakePersonality = (
  level: number,
  layout: number,
  chunk: number,
  disks: number,
  io: MemberIo,
) => Personality;

/** new_offset of each slot's member (md's rdev->new_data_offset - data_offset); default: the array's */
export type ShiftOf = (slot: number) => number;

/**
 * A slot whose member is rebuilt along with the reshape (md: In_sync clear, recovery_offset
 * set while RESHAPE_ACTIVE): its recovery_offset (member sectors of the new geometry), or
 * null for a slot in sync (or empty).
 */
export type RebuiltTo = (slot: number) => number | null;

export class ReshapeView implements Personality {
  readonly level: number;
  readonly arraySectors: number;
  readonly maxDegraded: number;
  readonly syncSectors = 0;
  readonly recoverySectors = 0;
  readonly oldGeo: Personality;
  readonly newGeo: Personality;
  /** array sector of the reshape frontier (moved by the engine once a region is checkpointed) */
  position: number;
  readonly backwards: boolean;
  readonly oldDisks: number;
  /** the members as each geometry sees them (the new one at new_offset): the engine's bulk copy */
  readonly oldIo: MemberIo;
  readonly newIo: MemberIo;
  /** the region being moved [lo, hi): writes there wait (and reads, for a critical section) */
  private held: [number, number] | null = null;
  private heldReads = false;
  private heldWaiters: Array<() => void> = [];
  /** writes in flight: their array ranges */
  private readonly writing = new Set<[number, number]>();
  private writeDone: Array<() => void> = [];
  /** forwards: the end of the region copied to the new geometry ([position, copiedTo) is written to both) */
  private copiedTo: number;
  /** old-geometry reads and writes in flight per frontier epoch */
  private epoch = 0;
  private readonly oldInFlight = new Map<number, number>();
  private oldDone: Array<() => void> = [];
  /** set when the reshape is finished and a plain personality took over */
  private successor: Personality | null = null;
  /**
   * Member rows (new geometry) the engine is writing on the members rebuilt along with the
   * reshape: the region being moved is written whole on them too (raid5.c reshape_request
   * writes every member of the new stripe), so the new geometry treats them as in sync up to
   * here while the region is copied; their recovery_offset follows at the checkpoint.
   */
  rebuildRows = 0;

  constructor(sb: Superblock1, io: MemberIo, make: MakePersonality, shiftOf?: ShiftOf, rebuiltTo?: RebuiltTo) {
    const oldDisks = sb.raidDisks - sb.deltaDisks;
    const arrayShift = (sb.featureMap & Feature.NEW_OFFSET) !== 0 ? sb.newOffset : 0;
    const shift: ShiftOf = shiftOf ?? (() => arrayShift);
    // a member rebuilt along with the reshape (raid5.c: !In_sync with recovery_offset): the
    // old geometry has it missing (its parity or Q there was never computed; md reads the
    // old stripes degraded); the new one has it in sync below its recovery_offset, or below
    // the rows the engine is writing now
    const rebuilt = rebuiltTo ?? (() => null);
    const availableIn = (moved: boolean, s: number, d: number | undefined, n: number | undefined): boolean => {
      const rec = rebuilt(s);
      if (rec === null) return io.available(s, d === undefined ? undefined : d + (moved ? shift(s) : 0), n);
      if (!moved || d === undefined) return false;
      return d + (n ?? 1) <= Math.max(rec, this.rebuildRows);
    };
    const narrow = (slots: number, moved: boolean): MemberIo => ({
      slots,
      available: (s, d, n) => s < slots && availableIn(moved, s, d, n),
      read: (s, d, b) => io.read(s, d + (moved ? shift(s) : 0), b),
      write: (s, d, b) => io.write(s, d + (moved ? shift(s) : 0), b),
      flush: (s) => io.flush(s),
      reportError: (s, op, e) => io.reportError(s, op, e),
      bulk: null, // a reshape moves data between layouts; its sync is not offloaded
      get anyWriteMostly() {
        return io.anyWriteMostly;
      },
      writeMostly: (s) => io.writeMostly(s),
      get resyncFrom() {
        return io.resyncFrom;
      },
    });
    this.oldDisks = oldDisks;
    this.oldIo = narrow(oldDisks, false);
    this.newIo = narrow(sb.raidDisks, true);
    this.oldGeo = make(sb.level, sb.layout, sb.chunkSize, oldDisks, this.oldIo);
    this.newGeo = make(sb.newLevel, sb.newLayout, sb.newChunk, sb.raidDisks, this.newIo);
    this.level = sb.level;
    this.position = Number(sb.reshapePosition);
    this.copiedTo = this.position;
    this.backwards = (sb.featureMap & Feature.RESHAPE_BACKWARDS) !== 0 || sb.deltaDisks < 0;
    // until the reshape completes the array keeps the smaller of the two sizes
    this.arraySectors = Math.min(this.oldGeo.arraySectors, this.newGeo.arraySectors);
    this.maxDegraded = Math.min(this.oldGeo.maxDegraded, this.newGeo.maxDegraded);
  }

  canRun(available: readonly boolean[]): boolean {
    return this.oldGeo.canRun(available.slice(0, this.oldDisks)) && this.newGeo.canRun(available.slice(0, this.newIo.slots));
  }

  /** Is this array sector already in the new geometry? */
  inNew(s: number): boolean {
    return this.backwards ? s >= this.position : s < this.position;
  }

  private bounds(arraySector: number, sectors: number): void {
    if (arraySector < 0 || arraySector + sectors > this.arraySectors) {
      throw new TsmdError('ENOSPC', `I/O at sector ${arraySector} beyond the array end (${this.arraySectors})`);
    }
  }

  /** The two parts of [s, s+n): [below the frontier, from it], with the geometry of each. */
  private parts(buf: Uint8Array, arraySector: number): Array<[Personality, Uint8Array, number, boolean]> {
    const sectors = buf.length / 512;
    const split = Math.min(Math.max(this.position - arraySector, 0), sectors);
    const [lo, hi] = this.backwards ? [this.oldGeo, this.newGeo] : [this.newGeo, this.oldGeo];
    const out: Array<[Personality, Uint8Array, number, boolean]> = [];
    if (split > 0) out.push([lo, buf.subarray(0, split * 512), arraySector, lo === this.oldGeo]);
    if (split < sectors) out.push([hi, buf.subarray(split * 512), arraySector + split, hi === this.oldGeo]);
    return out;
  }

  async read(buf: Uint8Array, arraySector: number): Promise<void> {
    const hi = arraySector + buf.length / 512;
    while (!this.successor && this.heldReads && this.overlapsHeld(arraySector, hi)) await new Promise<void>((r) => this.heldWaiters.push(r));
    if (this.successor) return this.successor.read(buf, arraySector);
    this.bounds(arraySector, buf.length / 512);
    await Promise.all(this.parts(buf, arraySector).map(([geo, part, at, old]) => (old ? this.onOld(geo.read(part, at)) : geo.read(part, at))));
  }

  /** An old-geometry request, counted in the current frontier epoch until it settles (drainOld). */
  private onOld(io: Promise<void>): Promise<void> {
    const e = this.epoch;
    this.oldInFlight.set(e, (this.oldInFlight.get(e) ?? 0) + 1);
    return io.finally(() => {
      const left = this.oldInFlight.get(e)! - 1;
      if (left === 0) this.oldInFlight.delete(e);
      else this.oldInFlight.set(e, left);
      for (const w of this.oldDone.splice(0)) w();
    });
  }

  private overlapsHeld(lo: number, hi: number): boolean {
    return this.held !== null && lo < this.held[1] && this.held[0] < hi;
  }

  async write(buf: Uint8Array, arraySector: number): Promise<void> {
    const sectors = buf.length / 512;
    const range: [number, number] = [arraySector, arraySector + sectors];
    while (!this.successor && this.overlapsHeld(range[0], range[1])) await new Promise<void>((r) => this.heldWaiters.push(r));
    if (this.successor) return this.successor.write(buf, arraySector);
    this.bounds(arraySector, sectors);
    this.writing.add(range);
    try {
      const jobs: Promise<void>[] = [];
      for (const [geo, part, at, old] of this.parts(buf, arraySector)) {
        if (!old) {
          jobs.push(geo.write(part, at));
          continue;
        }
        jobs.push(this.onOld(geo.write(part, at)));
        // copied, not yet checkpointed: the new copy gets it too (the old one is what a crash
        // before the checkpoint resumes from)
        const both = this.backwards ? 0 : Math.min(part.length / 512, this.copiedTo - at);
        if (both > 0) jobs.push(this.newGeo.write(part.subarray(0, both * 512), at));
      }
      await Promise.all(jobs);
    } finally {
      this.writing.delete(range);
      for (const w of this.writeDone.splice(0)) w();
    }
  }

  /**
   * The engine takes [lo, hi) to move it: new writes there wait, writes already in flight
   * there are waited for. One region at a time: a new hold replaces the last one (the engine
   * extends it while the previous step is being checkpointed, and narrows it after).
   */
  async hold(lo: number, hi: number, reads = false): Promise<void> {
    this.held = [lo, hi];
    this.heldReads = reads;
    // requests waiting for a region no longer held (hold moved on) re-check
    for (const w of this.heldWaiters.splice(0)) w();
    const busy = (): boolean => {
      for (const [a, b] of this.writing) if (a < hi && lo < b) return true;
      return false;
    };
    while (busy()) await new Promise<void>((r) => this.writeDone.push(r));
  }

  /** Forwards: the end of the region copied to the new geometry and not yet checkpointed (position when none). */
  get copiedEnd(): number {
    return this.copiedTo;
  }

  /**
   * Forwards: [position, hi) is copied to the new geometry (whole new stripes, the old rows
   * intact until its checkpoint): the hold lifts, and writes there go to both geometries.
   */
  markCopied(hi: number): void {
    assert(!this.backwards && !this.successor, 'reshape view: a copied region is forwards, before the end');
    assert(hi >= this.copiedTo, 'reshape view: a copied region grows from the frontier');
    this.copiedTo = hi;
    this.held = null;
    for (const w of this.heldWaiters.splice(0)) w();
  }

  /** The region is moved and checkpointed (or given up): the writes waiting for it go on. */
  release(): void {
    // a step given up is copied again from its old rows when the reshape goes on
    this.copiedTo = this.position;
    this.held = null;
    this.heldReads = false;
    for (const w of this.heldWaiters.splice(0)) w();
  }

  /** The held region now starts at lo (what lies below it is checkpointed): writes there go on. */
  narrow(lo: number): void {
    if (this.held === null) return;
    if (lo >= this.held[1]) this.held = null;
    else this.held = [Math.max(lo, this.held[0]), this.held[1]];
    for (const w of this.heldWaiters.splice(0)) w();
  }

  /** Move the frontier (after the superblocks record it). */
  advance(position: number): void {
    this.position = position;
    this.copiedTo = Math.max(this.copiedTo, position);
    this.epoch++;
  }

  /**
   * Wait for old-geometry reads and writes that started before the frontier last moved (all:
   * every one): the rows they touch may be about to be overwritten by new ones.
   */
  async drainOld(all = false): Promise<void> {
    const older = (): boolean => {
      for (const e of this.oldInFlight.keys()) if (all || e < this.epoch) return true;
      return false;
    };
    while (older()) await new Promise<void>((r) => this.oldDone.push(r));
  }

  /** The reshape is done: requests that still reach this view go to `next`. */
  retire(next: Personality): void {
    this.successor = next;
    this.release();
  }

  flush(): Promise<void> {
    if (this.successor) return this.successor.flush();
    // the larger geometry spans every slot (the other one is a prefix of them): a shrink's
    // old geometry has the leaving members too
    return this.oldDisks > this.newIo.slots ? this.oldGeo.flush() : this.newGeo.flush();
  }

  syncRangeOf(): [number, number] {
    return [0, 0];
  }

  recoveryToSync(): Array<[number, number]> {
    return [];
  }

  async syncRegion(): Promise<void> {
    throw new TsmdError('EBUSY', 'no resync while a reshape is in progress');
  }

  async checkRegion(): Promise<number> {
    throw new TsmdError('EBUSY', 'no check while a reshape is in progress');
  }
}
