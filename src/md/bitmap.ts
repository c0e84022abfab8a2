/**
 * The write-intent bitmap at runtime (md-bitmap.c, in spirit). One bit covers one bitmap chunk
 * of the resync space (spec/md-formats.md §3). Rules:
 *
 *  - before data is written to a chunk, its bit is on disk on every member: startWrite() sets
 *    the bit in memory and waits for a persist round; all bits set while a round is in flight
 *    go out together in the next one (one bitmap write + flush covers many data writes), and
 *    a chunk whose bit is already on disk costs nothing but a counter;
 *  - per-chunk counters of writes in flight; when a chunk's counter drops to 0 it becomes a
 *    candidate for clearing; the bitmap daemon (daemonSleep) clears a bit only after the chunk
 *    stayed idle for a whole period, flushes the members first, and never while the array is
 *    degraded (the bits then record what a re-added member misses);
 *  - chunks found dirty at assembly stay set until the sync engine has synced them;
 *  - events_cleared follows the array's events when bits are cleared, so a member whose
 *    events are older than events_cleared cannot be brought back from the bitmap alone.
 *
 * The bitmap does no I/O itself: the array gives it a writer that puts area sectors on every
 * working member and flushes them.
 */
import { assert } from '../errors.js';
import { BITMAP_SB_BYTES, type BitmapSuper, encodeBitmapSuper } from '../format/bitmap.js';

export interface BitmapWriter {
  /** Write `bytes` at `sector` of the bitmap area on every working member, then flush them. */
  writeArea(sector: number, bytes: Uint8Array): Promise<void>;
  /** Flush the members' data (before bits are cleared on disk). */
  flushData(): Promise<void>;
}

interface Round {
  sectors: Set<number>;
  promise: Promise<void>;
}

/** chunk states for clearing (md: NEEDED / PENDING, two daemon passes) */
const IDLE = 0;
const CLEAR_PASS1 = 1;
const CLEAR_PASS2 = 2;

export class WriteIntentBitmap {
  readonly sup: BitmapSuper;
  readonly nbits: number;
  readonly chunkSectors: number;
  /** the area as on disk: 256-byte header, then the bits, padded to whole sectors */
  private readonly area: Uint8Array;
  /** bits known to be on disk (a write may skip the wait only for these) */
  private readonly confirmed: Uint8Array;
  private readonly counts: Uint32Array;
  private readonly clearState: Uint8Array;
  /** chunks that need a sync (dirty at assembly, or written while degraded) */
  private readonly needSync: Uint8Array;
  private readonly writer: BitmapWriter;
  private next: Round | null = null;
  private tail: Promise<void> = Promise.resolve();
  /** counters for tests and metrics */
  readonly stats = { rounds: 0, bitsSet: 0, bitsCleared: 0, fastPath: 0 };

  constructor(sup: BitmapSuper, nbits: number, bits: Uint8Array, writer: BitmapWriter) {
    assert(sup.chunkSize >= 512 && sup.chunkSize % 512 === 0, 'bitmap chunk is whole sectors');
    this.sup = { ...sup };
    this.nbits = nbits;
    this.chunkSectors = sup.chunkSize / 512;
    const bytes = BITMAP_SB_BYTES + Math.ceil(nbits / 8);
    this.area = new Uint8Array(Math.ceil(bytes / 512) * 512);
    this.area.set(bits.subarray(0, Math.ceil(nbits / 8)), BITMAP_SB_BYTES);
    this.confirmed = this.area.slice(BITMAP_SB_BYTES, bytes);
    this.counts = new Uint32Array(nbits);
    this.clearState = new Uint8Array(nbits);
    this.needSync = new Uint8Array(nbits);
    for (let i = 0; i < nbits; i++) if (this.test(i)) this.needSync[i] = 1;
    this.writer = writer;
  }

  private test(i: number): boolean {
    return (this.area[BITMAP_SB_BYTES + (i >>> 3)]! & (1 << (i & 7))) !== 0;
  }

  private set(i: number, on: boolean): void {
    const at = BITMAP_SB_BYTES + (i >>> 3);
    if (on) this.area[at]! |= 1 << (i & 7);
    else this.area[at]! &= ~(1 << (i & 7));
  }

  private chunksOf(start: number, end: number): [number, number] {
    const c0 = Math.floor(start / this.chunkSectors);
    const c1 = Math.min(this.nbits - 1, Math.floor((Math.max(end, start + 1) - 1) / this.chunkSectors));
    return [c0, c1];
  }

  /**
   * Does any chunk of resync-space [start, end) need a sync (md's NEEDED: dirty at assembly,
   * merged from another slot, written while degraded)? A chunk whose bit is set only because a
   * write is in flight needs none: that write goes to every mirror. The sync engine's guide.
   */
  anyNeedSync(start: number, end: number): boolean {
    const [c0, c1] = this.chunksOf(start, end);
    for (let c = c0; c <= c1; c++) if (this.needSync[c]) return true;
    return false;
  }

  get dirtyCount(): number {
    let n = 0;
    for (let i = 0; i < this.nbits; i++) if (this.test(i)) n++;
    return n;
  }

  /**
   * A write to resync-space [start, end) begins. Returns null when every bit is already on
   * disk (the common case: no await), or a promise of the persist round that carries them.
   */
  startWrite(start: number, end: number): Promise<void> | null {
    const [c0, c1] = this.chunksOf(start, end);
    let wait = false;
    for (let c = c0; c <= c1; c++) {
      this.counts[c]!++;
      this.clearState[c] = IDLE;
      if (!(this.confirmed[c >>> 3]! & (1 << (c & 7)))) {
        if (!this.test(c)) {
          this.set(c, true);
          this.stats.bitsSet++;
        }
        this.schedule(Math.floor((BITMAP_SB_BYTES + (c >>> 3)) / 512));
        wait = true;
      }
    }
    if (!wait) {
      this.stats.fastPath++;
      return null;
    }
    return this.next!.promise;
  }

  /**
   * The write ended. A failed write (or one made while degraded) leaves its chunks needing a
   * sync; otherwise an idle chunk becomes a candidate for clearing.
   */
  endWrite(start: number, end: number, needsSync: boolean): void {
    const [c0, c1] = this.chunksOf(start, end);
    for (let c = c0; c <= c1; c++) {
      assert(this.counts[c]! > 0, 'bitmap: endWrite without startWrite');
      this.counts[c]!--;
      if (needsSync) this.needSync[c] = 1;
      if (this.counts[c] === 0 && !this.needSync[c]) this.clearState[c] = CLEAR_PASS1;
    }
  }

  /**
   * The sync engine made [start, end) consistent on every member: the bits of the chunks
   * wholly inside may go (the last chunk of the space ends at sync_size).
   */
  synced(start: number, end: number): void {
    const size = Number(this.sup.syncSize);
    const [c0, c1] = this.chunksOf(start, end);
    for (let c = c0; c <= c1; c++) {
      const cStart = c * this.chunkSectors;
      const cEnd = Math.min(cStart + this.chunkSectors, size);
      if (start > cStart || end < cEnd) continue;
      this.needSync[c] = 0;
      if (this.counts[c] === 0 && this.test(c)) this.clearState[c] = CLEAR_PASS1;
    }
  }

  private schedule(sector: number): void {
    if (!this.next) {
      const round: Round = { sectors: new Set(), promise: Promise.resolve() };
      const prev = this.tail;
      round.promise = (async () => {
        await prev.catch(() => {});
        // everything set up to here joins this round; later bits start the next one
        if (this.next === round) this.next = null;
        await this.persist(round.sectors);
      })();
      this.tail = round.promise;
      this.next = round;
    }
    this.next.sectors.add(sector);
  }

  /** Write the given area sectors (as they are now in memory), then mark their bits confirmed. */
  private async persist(sectors: Set<number>): Promise<void> {
    if (sectors.size === 0) return;
    this.stats.rounds++;
    const lo = Math.min(...sectors);
    const hi = Math.max(...sectors) + 1;
    this.writeHeader();
    const image = this.area.slice(lo * 512, hi * 512);
    await this.writer.writeArea(lo, image);
    // bits in the written image are now on disk
    const from = Math.max(0, lo * 512 - BITMAP_SB_BYTES);
    const to = Math.min(this.confirmed.length, hi * 512 - BITMAP_SB_BYTES);
    for (let i = from; i < to; i++) this.confirmed[i]! |= image[i + BITMAP_SB_BYTES - lo * 512]!;
  }

  private writeHeader(): void {
    this.area.set(encodeBitmapSuper(this.sup), 0);
  }

  /** Record the array's events in the header (written with the next area write). */
  setEvents(events: bigint): void {
    this.sup.events = events;
  }

  /**
   * One bitmap-daemon pass (every daemonSleep seconds). Bits of chunks that were idle for a
   * whole period are cleared on disk, after a flush of the members' data. Returns the number
   * of bits cleared.
   */
  async daemonPass(opts: { degraded: boolean; events: bigint }): Promise<number> {
    if (opts.degraded) return 0;
    const candidates: number[] = [];
    for (let c = 0; c < this.nbits; c++) {
      const st = this.clearState[c]!;
      if (st === CLEAR_PASS2 && this.counts[c] === 0 && !this.needSync[c]) candidates.push(c);
      else if (st === CLEAR_PASS1) this.clearState[c] = CLEAR_PASS2;
    }
    if (candidates.length === 0) return 0;
    await this.writer.flushData();
    // decided with no await in between: a write that started meanwhile keeps its bit
    const sectors = new Set<number>();
    let cleared = 0;
    for (const c of candidates) {
      if (this.clearState[c] !== CLEAR_PASS2 || this.counts[c] !== 0 || this.needSync[c]) continue;
      this.clearState[c] = IDLE;
      if (!this.test(c)) continue;
      this.set(c, false);
      this.confirmed[c >>> 3]! &= ~(1 << (c & 7));
      sectors.add(Math.floor((BITMAP_SB_BYTES + (c >>> 3)) / 512));
      cleared++;
    }
    if (cleared === 0) return 0;
    this.stats.bitsCleared += cleared;
    this.sup.eventsCleared = opts.events;
    this.sup.events = opts.events;
    for (const s of sectors) this.schedule(s);
    this.schedule(0);
    await this.next?.promise;
    return cleared;
  }

  /**
   * md-cluster's copy_from_slot: another slot's dirty bits become ours (they need a sync here,
   * and stay set until it is done); persisted before this returns. Returns the chunk range
   * [first, last] of the bits merged, or null when none was set.
   */
  async mergeDirty(bits: Uint8Array, nbits: number): Promise<[number, number] | null> {
    const n = Math.min(nbits, this.nbits);
    let first = -1;
    let last = -1;
    for (let c = 0; c < n; c++) {
      if (!(bits[c >>> 3]! & (1 << (c & 7)))) continue;
      if (first < 0) first = c;
      last = c;
      this.needSync[c] = 1;
      this.clearState[c] = IDLE;
      if (!this.test(c)) {
        this.set(c, true);
        this.stats.bitsSet++;
        this.schedule(Math.floor((BITMAP_SB_BYTES + (c >>> 3)) / 512));
      }
    }
    if (this.next) await this.next.promise;
    return first < 0 ? null : [first, last];
  }

  /** Chunks that still need a sync (dirty at assembly, merged, written degraded). */
  get needSyncCount(): number {
    let k = 0;
    for (let c = 0; c < this.nbits; c++) k += this.needSync[c]!;
    return k;
  }

  /**
   * Clean shutdown / safe mode with no write in flight and every member in sync: all bits go
   * (the caller then writes the whole area with writeThrough).
   */
  clearAll(events: bigint): void {
    for (let c = 0; c < this.nbits; c++) {
      assert(this.counts[c] === 0, 'bitmap: clearAll with writes in flight');
      if (this.needSync[c]) continue;
      this.set(c, false);
      this.clearState[c] = IDLE;
    }
    this.confirmed.set(this.area.subarray(BITMAP_SB_BYTES, BITMAP_SB_BYTES + this.confirmed.length));
    this.sup.events = events;
    this.sup.eventsCleared = events;
  }

  /** Bits set that clearAll would clear (no write in flight on the chunk, no sync owed). */
  get clearableCount(): number {
    let k = 0;
    for (let c = 0; c < this.nbits; c++) if (this.test(c) && this.counts[c] === 0 && !this.needSync[c]) k++;
    return k;
  }

  /** A copy of the bits as they are in memory. */
  snapshotBits(): Uint8Array {
    return this.area.slice(BITMAP_SB_BYTES, BITMAP_SB_BYTES + Math.ceil(this.nbits / 8));
  }

  /**
   * Does chunk c need a sync (md's NEEDED on its counter)? md_bitmap_resize carries exactly
   * these over: a bit that is set only because a write was in flight (or its clearing is
   * pending) is not, since the resize runs on the quiesced array with every write done.
   */
  needsSync(c: number): boolean {
    return this.needSync[c] === 1;
  }

  /** Every bit set: a full resync/recovery is owed (the caller then writes the whole area). */
  setAll(events: bigint): void {
    for (let c = 0; c < this.nbits; c++) {
      this.set(c, true);
      this.needSync[c] = 1;
    }
    this.sup.events = events;
  }

  /**
   * Write the header sector (or the whole area) as it is when the write starts, in order with
   * the persist rounds, so an older image can never land after a newer one.
   */
  writeThrough(whole: boolean): Promise<void> {
    const job = this.tail.catch(() => {}).then(async () => {
      this.writeHeader();
      await this.writer.writeArea(0, whole ? this.area.slice() : this.area.slice(0, 512));
    });
    this.tail = job;
    return job;
  }
}
