/**
 * RAID4/5/6 request path. Each request is cut into stripes; a stripe is processed under a
 * per-stripe lock:
 *   - write, all members working: read-modify-write or reconstruct-write, whichever reads
 *     fewer sectors (a full-stripe write reads nothing);
 *   - write, degraded: read what is there, rebuild the missing blocks, apply, recompute parity;
 *   - read: straight from the data member; from parity when the member is missing or fails.
 * Parity maths: ./parity (P = XOR, Q = Σ g^slot·D over GF(2^8)).
 */
import { assert, TsmdError } from '../errors.js';
import type { Syndrome } from './offload/bulk.js';
import {
  dataDisksPerStripe,
  type Raid456Geometry,
  raid456ArraySectors,
  type StripeMap,
  stripeMap,
} from './geometry/raid456.js';
import {
  genP,
  genPQ,
  gfMulXorBlock,
  gfPow2,
  parityArena,
  recoverOneDataFromP,
  recoverOneDataFromQ,
  recoverTwoData,
  xorInto,
} from './parity/index.js';
import { KeyedLocks, runLimited, settleAll } from '../util/async.js';
import type { MemberBulkPiece, MemberIo, Personality } from './personality.js';
import { registerLevel } from './registry.js';
import { flushMembers, mismatchedSectors, runOffload, SYNC_PARALLEL } from './sync-support.js';

const SECTOR = 512;
/** Member rows per sync batch (1 MiB), and batches in flight. */
const SYNC_BATCH_SECTORS = 2048;
const SYNC_BATCH_PARALLEL = 4;

/**
 * Temporary stripe buffers (parity, old data, reconstruct reads) of one request, taken from
 * the parity arena so that the kernels run on them in place and no large Uint8Array is
 * allocated per request (each one is a calloc and external memory that drives the GC:
 * docs/perf.md). When the arena is full (many large requests in flight), plain buffers.
 * release() runs once every member I/O on the buffers has settled.
 */
export class Scratch {
  private readonly bufs: Uint8Array[] = [];

  /** With `zero` false the caller fills the whole buffer (a read target, a parity output). */
  alloc(bytes: number, zero = true): Uint8Array {
    const arena = parityArena();
    let b: Uint8Array;
    try {
      b = arena.alloc(bytes, zero);
    } catch (e) {
      if (!(e instanceof TsmdError) || e.code !== 'ENOSPC') throw e;
      return new Uint8Array(bytes);
    }
    this.bufs.push(b);
    return b;
  }

  release(): void {
    const arena = parityArena();
    for (const b of this.bufs) arena.free(b);
    this.bufs.length = 0;
  }

  /** Give one buffer back early (it must not be in use by any I/O). */
  drop(b: Uint8Array): void {
    const i = this.bufs.indexOf(b);
    if (i < 0) return;
    this.bufs.splice(i, 1);
    parityArena().free(b);
  }
}

interface StripeSpan {
  stripe: number;
  /** byte offset of this stripe's part in the request buffer */
  bufOffset: number;
  /** per data index dd: written chunk-relative sector range, or null */
  ranges: Array<{ lo: number; hi: number; bufOffset: number } | null>;
  rlo: number;
  rhi: number;
}

/** A raid6 stripe's Q layout for the sync offload: each data block's slot in the Q sum. */
function syndromeOf(sm: StripeMap): Syndrome {
  return { qSlots: sm.dataDisks.map((_, dd) => sm.qSlots[dd]!), slots: sm.syndromeSlots };
}

export class Raid456Personality implements Personality {
  readonly level: number;
  readonly arraySectors: number;
  readonly maxDegraded: number;
  readonly geometry: Raid456Geometry;
  private readonly io: MemberIo;
  private readonly D: number;
  private readonly C: number;
  private readonly locks = new KeyedLocks();
  /** counters for tests and metrics */
  readonly stats = { rmw: 0, rcw: 0, fullStripe: 0, degradedWrites: 0, reconstructReads: 0 };

  constructor(io: MemberIo, g: Raid456Geometry, componentSectors: number) {
    if (io.slots !== g.raidDisks)
      throw new TsmdError('EINVAL', 'member count does not match raid_disks');
    this.io = io;
    this.geometry = g;
    this.level = g.level;
    this.D = dataDisksPerStripe(g);
    this.C = g.chunkSectors;
    this.arraySectors = raid456ArraySectors(g, componentSectors);
    this.maxDegraded = g.level === 6 ? 2 : 1;
  }

  canRun(available: readonly boolean[]): boolean {
    return available.filter((a) => !a).length <= this.maxDegraded;
  }

  private checkRange(buf: Uint8Array, arraySector: number): void {
    // MdArray.checkIo (md's bio_check_eod) has already refused requests past the array end and
    // turned unaligned ones into whole sectors: one that reaches here is a bug in md/, not a
    // user error. Constant messages: nothing is built on the hot path.
    assert(buf.length % SECTOR === 0, 'raid456 request: whole sectors');
    assert(Number.isSafeInteger(arraySector) && arraySector >= 0 && arraySector + buf.length / SECTOR <= this.arraySectors, 'raid456 request inside the array');
  }

  /** Split [arraySector, +sectors) into per-stripe spans. */
  private spans(arraySector: number, sectors: number): StripeSpan[] {
    const { D, C } = this;
    const out: StripeSpan[] = [];
    let pos = arraySector;
    const end = arraySector + sectors;
    while (pos < end) {
      const stripe = Math.floor(pos / (C * D));
      const stripeStart = stripe * C * D;
      const stripeEnd = Math.min(end, stripeStart + C * D);
      const ranges: StripeSpan['ranges'] = new Array(D).fill(null);
      let rlo = C;
      let rhi = 0;
      for (let dd = 0; dd < D; dd++) {
        const cs = stripeStart + dd * C;
        const lo = Math.max(pos, cs);
        const hi = Math.min(stripeEnd, cs + C);
        if (lo >= hi) continue;
        ranges[dd] = { lo: lo - cs, hi: hi - cs, bufOffset: (lo - arraySector) * SECTOR };
        rlo = Math.min(rlo, lo - cs);
        rhi = Math.max(rhi, hi - cs);
      }
      // a stripe span covers at least one sector of one chunk (md's stripe_head has a bio)
      assert(rlo < rhi && rhi <= C, 'raid456 stripe span inside its chunk rows');
      out.push({ stripe, bufOffset: (pos - arraySector) * SECTOR, ranges, rlo, rhi });
      pos = stripeEnd;
    }
    return out;
  }

  async read(buf: Uint8Array, arraySector: number): Promise<void> {
    this.checkRange(buf, arraySector);
    const jobs: Promise<void>[] = [];
    for (const sp of this.spans(arraySector, buf.length / SECTOR)) {
      const sm = stripeMap(this.geometry, sp.stripe);
      sp.ranges.forEach((r, dd) => {
        if (!r) return;
        jobs.push(this.readChunkPart(buf, sp.stripe, sm, dd, r));
      });
    }
    await settleAll(jobs);
  }

  private async readChunkPart(
    buf: Uint8Array,
    stripe: number,
    sm: StripeMap,
    dd: number,
    r: { lo: number; hi: number; bufOffset: number },
  ): Promise<void> {
    assert(r.lo < r.hi && r.hi <= this.C, 'raid456 read inside one chunk');
    const disk = sm.dataDisks[dd]!;
    assert(disk !== undefined, 'raid456 read: data index inside the stripe');
    const view = buf.subarray(r.bufOffset, r.bufOffset + (r.hi - r.lo) * SECTOR);
    const devSector = stripe * this.C + r.lo;
    if (this.io.available(disk, devSector, r.hi - r.lo)) {
      try {
        await this.io.read(disk, devSector, view);
        return;
      } catch (e) {
        this.io.reportError(disk, 'read', e);
      }
    }
    this.stats.reconstructReads++;
    const release = await this.locks.acquire([stripe]);
    const scratch = new Scratch();
    try {
      const blocks = await this.readStripeRows(stripe, sm, r.lo, r.hi, 3, scratch);
      view.set(blocks.data[dd]!);
    } finally {
      scratch.release();
      release();
    }
  }

  /**
   * Read rows [lo, hi) of every member of the stripe and rebuild whatever is missing, so that
   * data[dd], p and q (raid6) are all complete. Retries when a member fails during the read.
   */
  private async readStripeRows(
    stripe: number,
    sm: StripeMap,
    lo: number,
    hi: number,
    attempts: number,
    scratch: Scratch,
    skip?: ReadonlySet<number>,
  ): Promise<{ data: Uint8Array[]; p: Uint8Array; q: Uint8Array | null }> {
    assert(lo >= 0 && lo < hi && hi <= this.C, 'raid456 stripe rows inside the chunk');
    assert(stripe >= 0 && stripe * this.C < this.syncSectors, 'raid456 stripe inside the members');
    const len = (hi - lo) * SECTOR;
    const devSector = stripe * this.C + lo;
    const is6 = this.level === 6;
    for (let attempt = 0; ; attempt++) {
      // every block is read whole or rebuilt whole by recover(): no zeroing
      const data: Uint8Array[] = sm.dataDisks.map(() => scratch.alloc(len, false));
      const p = scratch.alloc(len, false);
      const q = is6 ? scratch.alloc(len, false) : null;
      const missingData: number[] = [];
      let pOk = true;
      let qOk = is6;
      let failed = false;
      const reads: Promise<void>[] = [];
      const readOne = (disk: number, target: Uint8Array, onMissing: () => void) => {
        if (skip?.has(disk) || !this.io.available(disk, devSector, hi - lo)) {
          onMissing();
          return;
        }
        reads.push(
          this.io.read(disk, devSector, target).catch((e) => {
            this.io.reportError(disk, 'read', e);
            failed = true;
          }),
        );
      };
      sm.dataDisks.forEach((disk, dd) => {
        readOne(disk, data[dd]!, () => {
          missingData.push(dd);
        });
      });
      readOne(sm.pDisk, p, () => {
        pOk = false;
      });
      if (q)
        readOne(sm.qDisk, q, () => {
          qOk = false;
        });
      await Promise.all(reads);
      if (failed) {
        if (attempt + 1 >= attempts)
          throw new TsmdError('EIO', `stripe ${stripe}: too many member errors`);
        continue;
      }
      this.recover(sm, data, p, q, missingData, pOk, qOk, stripe);
      return { data, p, q };
    }
  }

  private slotList(sm: StripeMap, data: Uint8Array[]): Array<Uint8Array | null> {
    if (this.level !== 6) return data;
    const slots: Array<Uint8Array | null> = new Array(sm.syndromeSlots).fill(null);
    data.forEach((b, dd) => {
      slots[sm.qSlots[dd]!] = b;
    });
    return slots;
  }

  private recover(
    sm: StripeMap,
    data: Uint8Array[],
    p: Uint8Array,
    q: Uint8Array | null,
    missingData: number[],
    pOk: boolean,
    qOk: boolean,
    stripe: number,
  ): void {
    const lost = missingData.length + (pOk ? 0 : 1) + (q && !qOk ? 1 : 0);
    if (lost > this.maxDegraded) {
      throw new TsmdError(
        'EIO',
        `stripe ${stripe}: ${lost} members missing, more than raid${this.level} can rebuild`,
      );
    }
    const slots = this.slotList(sm, data);
    const slotOf = (dd: number) => (this.level === 6 ? sm.qSlots[dd]! : dd);
    if (missingData.length === 1) {
      const dd = missingData[0]!;
      // (lost <= maxDegraded: without P, raid6's Q is there)
      assert(pOk || (q !== null && qOk), 'raid456 rebuild of one block: P or Q present');
      if (pOk) recoverOneDataFromP(slots, slotOf(dd), p);
      else recoverOneDataFromQ(slots, slotOf(dd), q!);
    } else if (missingData.length === 2) {
      // two data blocks lost is raid6 only (raid5's maxDegraded is 1), with P and Q both read
      assert(q !== null && pOk && qOk, 'raid456 rebuild of two blocks: raid6 with P and Q');
      recoverTwoData(slots, slotOf(missingData[0]!), slotOf(missingData[1]!), p, q!);
    }
    if (!pOk || (q && !qOk)) {
      if (q) genPQ(slots, p, q);
      else genP(slots, p);
    }
  }

  async write(buf: Uint8Array, arraySector: number): Promise<void> {
    this.checkRange(buf, arraySector);
    await settleAll(this.spans(arraySector, buf.length / SECTOR).map((sp) => this.writeStripe(buf, sp)));
  }

  private async writeStripe(buf: Uint8Array, sp: StripeSpan): Promise<void> {
    const release = await this.locks.acquire([sp.stripe]);
    try {
      const sm = stripeMap(this.geometry, sp.stripe);
      for (let attempt = 0; attempt <= this.maxDegraded + 1; attempt++) {
        const scratch = new Scratch();
        try {
          const r = await this.tryWriteStripe(buf, sp, sm, scratch);
          if (r === 'done') return;
        } finally {
          scratch.release();
        }
      }
      throw new TsmdError('EIO', `stripe ${sp.stripe}: write could not be completed`);
    } finally {
      release();
    }
  }

  private memberDisks(sm: StripeMap): number[] {
    const d = [...sm.dataDisks, sm.pDisk];
    if (this.level === 6) d.push(sm.qDisk);
    return d;
  }

  /** One attempt; 'retry' when a member failed during the reads (state has changed). */
  private async tryWriteStripe(
    buf: Uint8Array,
    sp: StripeSpan,
    sm: StripeMap,
    scratch: Scratch,
  ): Promise<'done' | 'retry'> {
    const { rlo, rhi } = sp;
    assert(rlo < rhi && rhi <= this.C, 'raid456 write rows inside the chunk');
    const len = rhi - rlo;
    const rowSector = sp.stripe * this.C;
    const is6 = this.level === 6;
    const nParity = is6 ? 2 : 1;
    const allUp = this.memberDisks(sm).every((d) => this.io.available(d, rowSector + rlo, len));
    const newData = (dd: number) => {
      const r = sp.ranges[dd]!;
      return buf.subarray(r.bufOffset, r.bufOffset + (r.hi - r.lo) * SECTOR);
    };

    let data: Uint8Array[];
    let p: Uint8Array;
    let q: Uint8Array | null;
    if (allUp) {
      let written = 0;
      for (const r of sp.ranges) if (r) written += r.hi - r.lo;
      const rcwReads = this.D * len - written;
      const rmwReads = written + nParity * len;
      if (rcwReads === 0 || rcwReads <= rmwReads) {
        if (rcwReads === 0) this.stats.fullStripe++;
        else this.stats.rcw++;
        // reconstruct-write: read the parts of R that are not overwritten
        // a chunk overwritten across all of R is used straight from the request (no copy)
        data = sm.dataDisks.map((_, dd) => {
          const r = sp.ranges[dd];
          return r && r.lo === rlo && r.hi === rhi ? newData(dd) : scratch.alloc(len * SECTOR);
        });
        let failed = false;
        await Promise.all(
          sm.dataDisks.map(async (disk, dd) => {
            const r = sp.ranges[dd];
            const target = data[dd]!;
            if (r && r.lo === rlo && r.hi === rhi) return; // fully overwritten: nothing to read
            const reads: Array<[number, number]> = [];
            if (!r) reads.push([rlo, rhi]);
            else {
              if (r.lo > rlo) reads.push([rlo, r.lo]);
              if (r.hi < rhi) reads.push([r.hi, rhi]);
            }
            for (const [a, b] of reads) {
              try {
                await this.io.read(
                  disk,
                  rowSector + a,
                  target.subarray((a - rlo) * SECTOR, (b - rlo) * SECTOR),
                );
              } catch (e) {
                this.io.reportError(disk, 'read', e);
                failed = true;
              }
            }
            if (r) target.set(newData(dd), (r.lo - rlo) * SECTOR);
          }),
        );
        if (failed) return 'retry';
        p = scratch.alloc(len * SECTOR);
        q = is6 ? scratch.alloc(len * SECTOR) : null;
        if (q) genPQ(this.slotList(sm, data), p, q);
        else genP(data, p);
      } else {
        this.stats.rmw++;
        // read-modify-write: old data of the written parts, old parity over R
        p = scratch.alloc(len * SECTOR);
        q = is6 ? scratch.alloc(len * SECTOR) : null;
        const old: Array<Uint8Array | null> = sp.ranges.map((r) =>
          r ? scratch.alloc((r.hi - r.lo) * SECTOR) : null,
        );
        let failed = false;
        const rd = async (disk: number, sector: number, target: Uint8Array) => {
          try {
            await this.io.read(disk, sector, target);
          } catch (e) {
            this.io.reportError(disk, 'read', e);
            failed = true;
          }
        };
        const jobs: Promise<void>[] = [rd(sm.pDisk, rowSector + rlo, p)];
        if (q) jobs.push(rd(sm.qDisk, rowSector + rlo, q));
        sp.ranges.forEach((r, dd) => {
          if (r) jobs.push(rd(sm.dataDisks[dd]!, rowSector + r.lo, old[dd]!));
        });
        await Promise.all(jobs);
        if (failed) return 'retry';
        sp.ranges.forEach((r, dd) => {
          if (!r) return;
          const delta = old[dd]!;
          xorInto(delta, newData(dd));
          const off = (r.lo - rlo) * SECTOR;
          xorInto(p.subarray(off, off + delta.length), delta);
          if (q) gfMulXorBlock(q.subarray(off, off + delta.length), delta, gfPow2(sm.qSlots[dd]!));
        });
        data = [];
      }
    } else {
      this.stats.degradedWrites++;
      const blocks = await this.readStripeRows(sp.stripe, sm, rlo, rhi, 3, scratch);
      data = blocks.data;
      sp.ranges.forEach((r, dd) => {
        if (r) data[dd]!.set(newData(dd), (r.lo - rlo) * SECTOR);
      });
      p = blocks.p;
      q = blocks.q;
      if (q) genPQ(this.slotList(sm, data), p, q);
      else genP(data, p);
    }

    // write new data, then parity; a failed member write degrades the stripe
    const writes: Promise<void>[] = [];
    let lostWrites = 0;
    const wr = (disk: number, sector: number, src: Uint8Array) => {
      // a member being rebuilt gets the write when it starts below its recovery frontier
      if (!this.io.available(disk, sector, 1)) return;
      writes.push(
        this.io.write(disk, sector, src).catch((e) => {
          this.io.reportError(disk, 'write', e);
          lostWrites++;
        }),
      );
    };
    sp.ranges.forEach((r, dd) => {
      if (r) wr(sm.dataDisks[dd]!, rowSector + r.lo, newData(dd));
    });
    wr(sm.pDisk, rowSector + rlo, p);
    if (q) wr(sm.qDisk, rowSector + rlo, q);
    await Promise.all(writes);
    if (lostWrites > 0) {
      const down = this.memberDisks(sm).filter((d) => !this.io.available(d)).length;
      if (down > this.maxDegraded) {
        throw new TsmdError('EIO', `stripe ${sp.stripe}: write lost on too many members`);
      }
    }
    return 'done';
  }

  get syncSectors(): number {
    return this.arraySectors / this.D;
  }

  get recoverySectors(): number {
    return this.arraySectors / this.D;
  }

  /** Member rows touched: exact inside one chunk, whole stripe rows otherwise. */
  syncRangeOf(arraySector: number, sectors: number): [number, number] {
    assert(arraySector >= 0 && sectors >= 0 && arraySector + sectors <= this.arraySectors, 'raid456 sync range of a request inside the array');
    const width = this.C * this.D;
    const s0 = Math.floor(arraySector / width);
    const s1 = Math.floor((arraySector + Math.max(1, sectors) - 1) / width);
    const off = arraySector % this.C;
    if (s0 === s1 && off + sectors <= this.C) {
      return [s0 * this.C + off, s0 * this.C + off + sectors];
    }
    return [s0 * this.C, (s1 + 1) * this.C];
  }

  recoveryToSync(_slot: number, start: number, sectors: number): Array<[number, number]> {
    return [[start, start + sectors]];
  }

  /**
   * check / repair of member rows [start, start+sectors): parity recomputed from the data and
   * compared with what is on P (and Q); repair writes the computed parity. A degraded stripe
   * cannot be checked (there is nothing to compare with): the engine does not run check then.
   */
  async checkRegion(start: number, sectors: number, repair: boolean): Promise<number> {
    // the sync engine's windows (md_do_sync) are non-empty and inside the resync space
    assert(Number.isSafeInteger(start) && start >= 0 && sectors > 0 && start + sectors <= this.syncSectors, 'raid456 check window inside the members');
    const end = Math.min(this.syncSectors, start + sectors);
    // counted as md counts them and repaired here: what the offload flagged, or everything
    let mismatched = 0;
    for (const [a, n] of await this.offloadParityCheck(start, end)) mismatched += await this.checkRows(a, n, repair);
    return mismatched;
  }

  /**
   * The member rows of [start, end) left for the personality's own path after a parity check
   * on the sync offload. raid4/5: the members' blocks of a row XOR to zero exactly when its
   * parity matches the data, whatever the layout. raid6: P and Q recomputed from the data in
   * the stripe's Q order (pq), so a piece is one stripe's row. Left: the stripes that did not
   * match and the partial stripes at the edges, as [start, sectors]; all of it when the
   * offload cannot take it (degraded, no offload, failed).
   */
  private async offloadParityCheck(start: number, end: number): Promise<Array<[number, number]>> {
    assert(start <= end, 'raid456 parity check window start <= end');
    const all: Array<[number, number]> = [[start, end - start]];
    const bk = this.io.bulk;
    const C = this.C;
    const a = Math.ceil(start / C) * C;
    const b = Math.floor(end / C) * C;
    if (!bk || b <= a) return all;
    const slots = Array.from({ length: this.io.slots }, (_, d) => d);
    if (!slots.every((d) => this.io.available(d, a, b - a))) return all;
    const stripes = Array.from({ length: (b - a) / C }, (_, i) => a / C + i);
    const release = await this.locks.acquire(stripes);
    let flagged: Set<number> | null;
    try {
      const pieces: MemberBulkPiece[] = stripes.map((st) => {
        if (this.level !== 6) return { srcs: slots.map((d) => ({ slot: d, sector: st * C })), dsts: [], sectors: C };
        const sm = stripeMap(this.geometry, st);
        const order = [...sm.dataDisks, sm.pDisk, sm.qDisk];
        return { srcs: order.map((d) => ({ slot: d, sector: st * C })), dsts: [], sectors: C, syndrome: syndromeOf(sm) };
      });
      flagged = await runOffload(bk, this.level === 6 ? 'pq' : 'xor', pieces, slots);
    } finally {
      release();
    }
    if (!flagged) return all;
    const left: Array<[number, number]> = [];
    if (start < a) left.push([start, a - start]);
    for (const i of [...flagged].sort((x, y) => x - y)) left.push([stripes[i]! * C, C]);
    if (b < end) left.push([b, end - b]);
    return left;
  }

  /**
   * Recovery of one slot over rows [start, end) on the sync offload. raid4/5: the XOR of the
   * others, whatever the layout. raid6, stripe by stripe: where the slot holds data or P, the
   * XOR of the others but Q; where it holds Q, Q recomputed from the data (op q).
   */
  private async offloadRecovery(start: number, end: number, slot: number): Promise<boolean> {
    assert(slot >= 0 && slot < this.io.slots && start <= end, 'raid456 offload recovery: slot and window');
    const bk = this.io.bulk;
    if (!bk || end <= start) return false;
    const others = Array.from({ length: this.io.slots }, (_, d) => d).filter((d) => d !== slot);
    if (!others.every((d) => this.io.available(d, start, end - start))) return false;
    const C = this.C;
    const first = Math.floor(start / C);
    const stripes = Array.from({ length: Math.ceil(end / C) - first }, (_, i) => first + i);
    const release = await this.locks.acquire(stripes);
    try {
      const dsts = (at: number) => [{ slot, sector: at }];
      if (this.level !== 6) {
        const piece: MemberBulkPiece = { srcs: others.map((d) => ({ slot: d, sector: start })), dsts: dsts(start), sectors: end - start };
        return (await runOffload(bk, 'xor', [piece], [...others, slot])) !== null;
      }
      const xor: MemberBulkPiece[] = [];
      const q: MemberBulkPiece[] = [];
      for (const st of stripes) {
        const lo = Math.max(start, st * C);
        const sectors = Math.min(end, (st + 1) * C) - lo;
        const sm = stripeMap(this.geometry, st);
        if (slot === sm.qDisk) {
          q.push({ srcs: sm.dataDisks.map((d) => ({ slot: d, sector: lo })), dsts: dsts(lo), sectors, syndrome: syndromeOf(sm) });
        } else {
          xor.push({ srcs: others.filter((d) => d !== sm.qDisk).map((d) => ({ slot: d, sector: lo })), dsts: dsts(lo), sectors });
        }
      }
      // both or neither: the engine's own path redoes the whole range after a failure
      if (xor.length > 0 && (await runOffload(bk, 'xor', xor, [...others, slot])) === null) return false;
      return q.length === 0 || (await runOffload(bk, 'q', q, [...others, slot])) !== null;
    } finally {
      release();
    }
  }

  private async checkRows(start: number, sectors: number, repair: boolean): Promise<number> {
    let mismatched = 0;
    const jobs = this.syncJobs(
      start,
      sectors,
      async (stripe, lo, hi, scratch) => {
        const sm = stripeMap(this.geometry, stripe);
        const blocks = await this.readStripeRows(stripe, sm, lo, hi, 3, scratch);
        const bad = await this.checkStripe(stripe, sm, lo, blocks, repair, scratch);
        mismatched += bad; // (not `+= await`: that would add to a stale total)
      },
      async (stripe0, count, scratch) => {
        const bufs = await this.readBatch(stripe0, count, new Set(), scratch);
        if (!bufs) return false;
        for (let i = 0; i < count; i++) {
          const sm = stripeMap(this.geometry, stripe0 + i);
          const bad = await this.checkStripe(stripe0 + i, sm, 0, this.batchBlocks(sm, bufs, i), repair, scratch);
          mismatched += bad;
        }
        return true;
      },
    );
    await runLimited(jobs.list, jobs.parallel);
    return mismatched;
  }

  /** Parity of one stripe row range recomputed and compared (repair: written); mismatched sectors. */
  private async checkStripe(
    stripe: number,
    sm: StripeMap,
    lo: number,
    blocks: { data: Uint8Array[]; p: Uint8Array; q: Uint8Array | null },
    repair: boolean,
    scratch: Scratch,
  ): Promise<number> {
    const len = blocks.p.length;
    assert(blocks.data.length === this.D && len % SECTOR === 0 && lo * SECTOR + len <= this.C * SECTOR, 'raid456 check: a whole stripe of rows inside the chunk');
    const p2 = scratch.alloc(len, false);
    const q2 = blocks.q ? scratch.alloc(len, false) : null;
    if (q2) genPQ(this.slotList(sm, blocks.data), p2, q2);
    else genP(blocks.data, p2);
    const pBad = mismatchedSectors(blocks.p, p2);
    const qBad = q2 ? mismatchedSectors(blocks.q!, q2) : 0;
    if (repair && (pBad > 0 || qBad > 0)) {
      const writes: Array<[number, Uint8Array]> = [];
      if (pBad > 0) writes.push([sm.pDisk, p2]);
      if (q2 && qBad > 0) writes.push([sm.qDisk, q2]);
      await this.writeRows(stripe * this.C + lo, writes);
    }
    scratch.drop(p2);
    if (q2) scratch.drop(q2);
    return Math.max(pBad, qBad);
  }

  /**
   * Resync (recompute P/Q from the data) or recovery (rebuild the blocks of the slots in
   * `rebuild` from the others) of member rows [start, start+sectors).
   */
  async syncRegion(start: number, sectors: number, rebuild: ReadonlySet<number>): Promise<void> {
    // the sync engine's windows (md_do_sync) are non-empty and inside the resync space
    assert(Number.isSafeInteger(start) && start >= 0 && sectors > 0 && start + sectors <= this.syncSectors, 'raid456 sync window inside the members');
    for (const d of rebuild) assert(Number.isInteger(d) && d >= 0 && d < this.io.slots, 'raid456 rebuild slot in range');
    const end = Math.min(this.syncSectors, start + sectors);
    if (rebuild.size === 1 && (await this.offloadRecovery(start, end, [...rebuild][0]!))) return;
    // a resync as md's raid5 does it: parity checked, written where it differs
    const left = rebuild.size === 0 ? await this.offloadParityCheck(start, end) : [[start, end - start] as [number, number]];
    for (const [a, n] of left) await this.syncRange(a, n, rebuild);
  }

  private async syncRange(start: number, sectors: number, rebuild: ReadonlySet<number>): Promise<void> {
    const jobs = this.syncJobs(
      start,
      sectors,
      async (stripe, lo, hi, scratch) => {
        const sm = stripeMap(this.geometry, stripe);
        const blocks = await this.readStripeRows(stripe, sm, lo, hi, 3, scratch, rebuild);
        await this.syncStripe(stripe * this.C + lo, sm, blocks, rebuild, true);
      },
      async (stripe0, count, scratch) => {
        const bufs = await this.readBatch(stripe0, count, rebuild, scratch);
        if (!bufs) return false;
        for (let i = 0; i < count; i++) {
          const sm = stripeMap(this.geometry, stripe0 + i);
          const blocks = this.batchBlocks(sm, bufs, i);
          const missing: number[] = [];
          sm.dataDisks.forEach((d, dd) => {
            if (rebuild.has(d)) missing.push(dd);
          });
          if (rebuild.size > 0) {
            const qOk = blocks.q !== null && !rebuild.has(sm.qDisk);
            this.recover(sm, blocks.data, blocks.p, blocks.q, missing, !rebuild.has(sm.pDisk), qOk, stripe0 + i);
          }
          // resync: parity written per stripe; recovery: the rebuilt slots in one write below
          await this.syncStripe((stripe0 + i) * this.C, sm, blocks, rebuild, false);
        }
        if (rebuild.size > 0) await this.writeRows(stripe0 * this.C, [...rebuild].map((d) => [d, bufs[d]!] as [number, Uint8Array]));
        return true;
      },
    );
    await runLimited(jobs.list, jobs.parallel);
  }

  /** Resync: parity follows the data and is written; recovery: the rebuilt blocks written (unless batched). */
  private async syncStripe(
    row: number,
    sm: StripeMap,
    blocks: { data: Uint8Array[]; p: Uint8Array; q: Uint8Array | null },
    rebuild: ReadonlySet<number>,
    writeRebuilt: boolean,
  ): Promise<void> {
    const writes: Array<[number, Uint8Array]> = [];
    if (rebuild.size === 0) {
      if (blocks.q) genPQ(this.slotList(sm, blocks.data), blocks.p, blocks.q);
      else genP(blocks.data, blocks.p);
      writes.push([sm.pDisk, blocks.p]);
      if (blocks.q) writes.push([sm.qDisk, blocks.q]);
    } else if (writeRebuilt) {
      sm.dataDisks.forEach((d, dd) => {
        if (rebuild.has(d)) writes.push([d, blocks.data[dd]!]);
      });
      if (rebuild.has(sm.pDisk)) writes.push([sm.pDisk, blocks.p]);
      if (blocks.q && rebuild.has(sm.qDisk)) writes.push([sm.qDisk, blocks.q]);
    }
    if (writes.length > 0) await this.writeRows(row, writes);
  }

  /**
   * The jobs of a sync window: runs of whole stripes go in batches (one read per member for
   * the batch, SYNC_BATCH_SECTORS of rows: far fewer thread-pool round trips than a read per
   * member per stripe); partial stripes, and batches that cannot be read whole (a member
   * missing or failing), go stripe by stripe, with the retries and reconstruction of
   * readStripeRows. Each job holds its stripes' locks.
   */
  private syncJobs(
    start: number,
    sectors: number,
    one: (stripe: number, lo: number, hi: number, scratch: Scratch) => Promise<void>,
    batch: (stripe0: number, count: number, scratch: Scratch) => Promise<boolean>,
  ): { list: Array<() => Promise<void>>; parallel: number } {
    const end = Math.min(this.syncSectors, start + sectors);
    assert(start >= 0 && start <= end, 'raid456 sync jobs: window start <= end');
    const perBatch = Math.max(1, Math.floor(SYNC_BATCH_SECTORS / this.C));
    const list: Array<() => Promise<void>> = [];
    let batched = false;
    const single = (stripe: number, lo: number, hi: number) => async () => {
      const release = await this.locks.acquire([stripe]);
      const scratch = new Scratch();
      try {
        await one(stripe, lo, hi, scratch);
      } finally {
        scratch.release();
        release();
      }
    };
    for (let pos = start; pos < end;) {
      const stripe = Math.floor(pos / this.C);
      const lo = pos - stripe * this.C;
      const whole = lo === 0 ? Math.min(perBatch, Math.floor((end - pos) / this.C)) : 0;
      if (perBatch > 1 && whole > 1) {
        batched = true;
        list.push(async () => {
          const stripes = Array.from({ length: whole }, (_, i) => stripe + i);
          const release = await this.locks.acquire(stripes);
          const scratch = new Scratch();
          try {
            if (await batch(stripe, whole, scratch)) return;
            scratch.release();
            for (const st of stripes) await one(st, 0, this.C, scratch);
          } finally {
            scratch.release();
            release();
          }
        });
        pos += whole * this.C;
        continue;
      }
      const hi = Math.min(this.C, end - stripe * this.C);
      list.push(single(stripe, lo, hi));
      pos = stripe * this.C + hi;
    }
    // batches are large: fewer in flight, so that they stay in the parity arena
    return { list, parallel: batched ? SYNC_BATCH_PARALLEL : SYNC_PARALLEL };
  }

  /**
   * Whole stripe rows [stripe0, stripe0+count) of every slot, one read per slot (slots in
   * `skip` get an unread buffer to rebuild into); null when a slot is unavailable or a read
   * fails (the error reported): the caller goes stripe by stripe.
   */
  private async readBatch(stripe0: number, count: number, skip: ReadonlySet<number>, scratch: Scratch): Promise<Array<Uint8Array | null> | null> {
    const row = stripe0 * this.C;
    const n = count * this.C;
    assert(count > 0 && row >= 0 && row + n <= this.syncSectors, 'raid456 sync batch inside the members');
    const bufs: Array<Uint8Array | null> = [];
    for (let d = 0; d < this.io.slots; d++) {
      if (!skip.has(d) && !this.io.available(d, row, n)) return null;
      bufs.push(scratch.alloc(n * SECTOR, false));
    }
    let failed = false;
    await Promise.all(
      bufs.map(async (b, d) => {
        if (skip.has(d)) return;
        try {
          await this.io.read(d, row, b!);
        } catch (e) {
          this.io.reportError(d, 'read', e);
          failed = true;
        }
      }),
    );
    return failed ? null : bufs;
  }

  /** Views of stripe `i` of a batch: data blocks, P and Q (raid6). */
  private batchBlocks(sm: StripeMap, bufs: ReadonlyArray<Uint8Array | null>, i: number): { data: Uint8Array[]; p: Uint8Array; q: Uint8Array | null } {
    const len = this.C * SECTOR;
    const at = (d: number) => bufs[d]!.subarray(i * len, (i + 1) * len);
    return {
      data: sm.dataDisks.map((d) => at(d)),
      p: at(sm.pDisk),
      q: this.level === 6 ? at(sm.qDisk) : null,
    };
  }

  /** Sync/repair writes of one stripe row range; a failing member is reported (and fails). */
  private async writeRows(row: number, writes: ReadonlyArray<[number, Uint8Array]>): Promise<void> {
    for (const [d, b] of writes) {
      assert(d >= 0 && d < this.io.slots, 'raid456 sync write: slot in range');
      assert(b.length % SECTOR === 0 && row >= 0 && row + b.length / SECTOR <= this.syncSectors, 'raid456 sync write: whole sectors inside the member');
    }
    await Promise.all(
      writes.map(async ([d, b]) => {
        try {
          await this.io.write(d, row, b);
        } catch (e) {
          this.io.reportError(d, 'write', e);
        }
      }),
    );
  }

  flush(): Promise<void> {
    return flushMembers(this.io, (a) => this.canRun(a));
  }
}

// RAID_MODULE_REGISTER for raid4/5/6: one personality, three levels (md's raid456 module)
for (const level of [4, 5, 6] as const) {
  registerLevel({
    level,
    name: `raid${level}`,
    aliases: [],
    minDevices: level === 6 ? 4 : 2,
    redundancy: 'parity',
    usesChunk: true,
    maxDegraded: () => (level === 6 ? 2 : 1),
    create: (a) => new Raid456Personality(a.io, { level, raidDisks: a.raidDisks, layout: a.layout, chunkSectors: a.chunkSectors }, a.componentSectors),
  });
}
