/**
 * In-memory BlockDevice, sparse (pages allocated on first write) so that tests can model
 * large members cheaply. Deterministic; used by unit tests and the simulator.
 *
 * With `writeCache`, it also models a disk's volatile write cache (what md's REQ_PREFLUSH and
 * the superblock/bitmap flush ordering exist for): writes land in the cache, reads see them,
 * flush() makes them durable, and crash() loses what was not flushed — all of it, or, with a
 * seeded Random, a random subset of the unflushed sector writes, as a disk that had destaged
 * part of its cache in any order when the power went.
 */
import type { Random } from '../env/random.js';
import { assert, TsmdError } from '../errors.js';
import { type BlockDevice, SECTOR_BYTES } from './block-device.js';

const PAGE = 64 * 1024;

export interface WriteCacheOptions {
  /**
   * Without it, crash() drops every unflushed write. With it, crash() keeps each unflushed
   * sector write (in the order written, older versions of a sector included) with probability
   * `keepFraction`, drawn from this source: seed it to replay the crash.
   */
  random?: Random;
  /** Share of the unflushed sector writes a crash keeps when `random` is given (default 0.5). */
  keepFraction?: number;
}

/** One write since the last flush: its data (a private copy) from member sector `sector`. */
interface CachedWrite {
  sector: number;
  data: Uint8Array;
}

/** The volatile cache of one disk, shared by every handle on it (reopen). */
class VolatileCache {
  /** the newest unflushed version of each sector (a view into a CachedWrite's data) */
  readonly sectors = new Map<number, Uint8Array>();
  /** every unflushed write, in order: what a partial crash chooses from */
  log: CachedWrite[] = [];
  readonly random: Random | null;
  readonly keepFraction: number;

  constructor(o: WriteCacheOptions) {
    this.random = o.random ?? null;
    this.keepFraction = o.keepFraction ?? 0.5;
    assert(this.keepFraction >= 0 && this.keepFraction <= 1, 'write cache keepFraction in [0, 1]');
  }
}

export interface CrashResult {
  /** unflushed sector writes that reached the media */
  keptSectors: number;
  /** unflushed sector writes lost */
  lostSectors: number;
}

export class MemoryBlockDevice implements BlockDevice {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  private readonly pages: Map<number, Uint8Array>;
  private wc: VolatileCache | null;
  private closed = false;
  /** Counters, handy for tests that assert how much I/O was done. */
  readonly stats = { reads: 0, writes: 0, readBytes: 0, writtenBytes: 0, flushes: 0 };

  constructor(
    name: string,
    sizeBytes: number,
    opts: { readOnly?: boolean; pages?: Map<number, Uint8Array>; writeCache?: boolean | WriteCacheOptions } = {},
  ) {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0 || sizeBytes % 512 !== 0) {
      throw new TsmdError('EINVAL', `memory device size ${sizeBytes} must be a multiple of 512`);
    }
    this.name = name;
    this.sizeBytes = sizeBytes;
    this.readOnly = !!opts.readOnly;
    this.pages = opts.pages ?? new Map();
    const wc = opts.writeCache;
    this.wc = wc ? new VolatileCache(wc === true ? {} : wc) : null;
  }

  /** A new open handle on the same storage (like opening the file again after close). */
  reopen(opts: { readOnly?: boolean } = {}): MemoryBlockDevice {
    const d = new MemoryBlockDevice(this.name, this.sizeBytes, {
      readOnly: opts.readOnly,
      pages: this.pages,
    });
    // the write cache belongs to the disk, not to the handle
    d.wc = this.wc;
    return d;
  }

  /** Does this device model a volatile write cache? */
  get hasWriteCache(): boolean {
    return this.wc !== null;
  }

  /** Sectors written and not yet flushed (0 without a write cache). */
  get unflushedSectors(): number {
    return this.wc?.sectors.size ?? 0;
  }

  private check(buf: Uint8Array, off: number): void {
    if (this.closed) throw new TsmdError('ENODEV', `${this.name}: device is closed`);
    if (off < 0 || off + buf.length > this.sizeBytes) {
      throw new TsmdError(
        'EINVAL',
        `${this.name}: I/O of ${buf.length} bytes at ${off} beyond the end`,
      );
    }
  }

  readSync(buf: Uint8Array, off: number): void {
    this.check(buf, off);
    this.readMedia(buf, off);
    if (this.wc !== null && this.wc.sectors.size > 0) this.readCache(this.wc, buf, off);
    this.stats.reads++;
    this.stats.readBytes += buf.length;
  }

  private readMedia(buf: Uint8Array, off: number): void {
    let done = 0;
    while (done < buf.length) {
      const pos = off + done;
      const pno = Math.floor(pos / PAGE);
      const inPage = pos - pno * PAGE;
      const n = Math.min(PAGE - inPage, buf.length - done);
      const page = this.pages.get(pno);
      if (page) buf.set(page.subarray(inPage, inPage + n), done);
      else buf.fill(0, done, done + n);
      done += n;
    }
  }

  /** Read-your-writes: lay the cached sectors over what the media returned. */
  private readCache(cache: VolatileCache, buf: Uint8Array, off: number): void {
    const end = off + buf.length;
    for (let s = Math.floor(off / SECTOR_BYTES); s * SECTOR_BYTES < end; s++) {
      const data = cache.sectors.get(s);
      if (!data) continue;
      const from = Math.max(off, s * SECTOR_BYTES);
      const to = Math.min(end, (s + 1) * SECTOR_BYTES);
      buf.set(data.subarray(from - s * SECTOR_BYTES, to - s * SECTOR_BYTES), from - off);
    }
  }

  private writeMedia(buf: Uint8Array, off: number): void {
    let done = 0;
    while (done < buf.length) {
      const pos = off + done;
      const pno = Math.floor(pos / PAGE);
      const inPage = pos - pno * PAGE;
      const n = Math.min(PAGE - inPage, buf.length - done);
      let page = this.pages.get(pno);
      if (!page) {
        // zeros onto a page never written stay sparse (a resync of a fresh array copies zeros)
        if (isZero(buf, done, done + n)) {
          done += n;
          continue;
        }
        page = new Uint8Array(PAGE);
        this.pages.set(pno, page);
      }
      page.set(buf.subarray(done, done + n), inPage);
      done += n;
    }
  }

  writeSync(buf: Uint8Array, off: number): void {
    if (this.readOnly) throw new TsmdError('EROFS', `${this.name}: read-only`);
    this.check(buf, off);
    if (this.wc === null) this.writeMedia(buf, off);
    else this.writeCache(this.wc, buf, off);
    this.stats.writes++;
    this.stats.writtenBytes += buf.length;
  }

  /**
   * Into the cache, in whole sectors (the unit a disk writes atomically): a write that does
   * not cover its first or last sector whole merges with what a read would return there.
   */
  private writeCache(cache: VolatileCache, buf: Uint8Array, off: number): void {
    if (buf.length === 0) return;
    const s0 = Math.floor(off / SECTOR_BYTES);
    const s1 = Math.ceil((off + buf.length) / SECTOR_BYTES);
    const data = new Uint8Array((s1 - s0) * SECTOR_BYTES);
    if (off % SECTOR_BYTES !== 0 || buf.length % SECTOR_BYTES !== 0) {
      this.readMedia(data, s0 * SECTOR_BYTES);
      this.readCache(cache, data, s0 * SECTOR_BYTES);
    }
    data.set(buf, off - s0 * SECTOR_BYTES);
    cache.log.push({ sector: s0, data });
    for (let s = s0; s < s1; s++) cache.sectors.set(s, data.subarray((s - s0) * SECTOR_BYTES, (s - s0 + 1) * SECTOR_BYTES));
  }

  async read(buf: Uint8Array, off: number): Promise<void> {
    this.readSync(buf, off);
  }

  async write(buf: Uint8Array, off: number): Promise<void> {
    this.writeSync(buf, off);
  }

  /** The cache flush (md's REQ_PREFLUSH): every write before it is durable. */
  async flush(): Promise<void> {
    this.stats.flushes++;
    const cache = this.wc;
    if (cache === null) return;
    for (const [s, data] of cache.sectors) this.writeMedia(data, s * SECTOR_BYTES);
    cache.sectors.clear();
    cache.log = [];
  }

  /**
   * Power loss of the disk: what was written since the last flush is lost (or, with a
   * WriteCacheOptions.random, a random subset of its sector writes reaches the media). Every
   * handle on the disk sees the result; without a write cache nothing changes.
   */
  crash(): CrashResult {
    const cache = this.wc;
    const r: CrashResult = { keptSectors: 0, lostSectors: 0 };
    if (cache === null) return r;
    for (const w of cache.log) {
      const n = w.data.length / SECTOR_BYTES;
      for (let i = 0; i < n; i++) {
        if (cache.random !== null && cache.random.float() < cache.keepFraction) {
          this.writeMedia(w.data.subarray(i * SECTOR_BYTES, (i + 1) * SECTOR_BYTES), (w.sector + i) * SECTOR_BYTES);
          r.keptSectors++;
        } else r.lostSectors++;
      }
    }
    cache.sectors.clear();
    cache.log = [];
    return r;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

const ZERO_PAGE = Buffer.alloc(PAGE);

function isZero(buf: Uint8Array, from: number, to: number): boolean {
  return Buffer.from(buf.buffer, buf.byteOffset + from, to - from).equals(ZERO_PAGE.subarray(0, to - from));
}
