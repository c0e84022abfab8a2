/**
 * The personality seam (Linux: struct md_personality). A level knows how array sectors map to
 * member sectors and how to keep redundancy; the core (md/) owns members, superblocks and
 * failure policy and hands the level a MemberIo.
 */
import type { ErrorCode } from '../errors.js';
import type { BulkOp, Syndrome } from '../io/bulk.js';
import { giveBounce, takeBounce } from '../io/file-device.js';

/** A place in a member's data area: slot and member sector (relative to data_offset). */
export interface MemberLoc {
  slot: number;
  sector: number;
}

/** One piece for the sync offload: see BulkPiece (io/bulk.ts), in member terms. */
export interface MemberBulkPiece {
  srcs: MemberLoc[];
  dsts: MemberLoc[];
  sectors: number;
  /** pq and q only (see io/bulk.ts) */
  syndrome?: Syndrome;
}

/**
 * The sync offload (io/bulk.ts) over the members: runs pieces on helper threads and resolves
 * to the indices of the flagged pieces (compare: the copies differ; xor without dsts: not
 * zero). It decides and reports nothing: on any error it rejects, and the personality redoes
 * the range on its own path, which retries reads and fails members as md does.
 */
export interface MemberBulk {
  /** Can every one of these slots take part now (a plain file or block device member)? */
  usable(slots: Iterable<number>): boolean;
  run(op: BulkOp, pieces: readonly MemberBulkPiece[]): Promise<Set<number>>;
}

export interface MemberIo {
  /** Number of slots (raid_disks). */
  readonly slots: number;
  /** Is the member in this slot present and in sync for this member sector range? */
  available(slot: number, deviceSector?: number, sectors?: number): boolean;
  /**
   * Does any slot hold a write-mostly member (raid1 --write-mostly)? Reads then go to the
   * others first (writeMostly(slot) tells which), and to a write-mostly copy only when no
   * other copy can serve them.
   */
  readonly anyWriteMostly: boolean;
  /**
   * Resync-space sector from which the copies may still differ (md's recovery_cp while a
   * resync is owed; Infinity when in sync). Mirror reads reaching past it use the first
   * copy, the one the resync copies from, so two reads never see different data.
   */
  readonly resyncFrom: number;
  writeMostly(slot: number): boolean;
  /** Read from a member's data area (sector relative to data_offset). Throws on error. */
  read(slot: number, deviceSector: number, buf: Uint8Array): Promise<void>;
  write(slot: number, deviceSector: number, buf: Uint8Array): Promise<void>;
  flush(slot: number): Promise<void>;
  /** The sync offload, when the array has one (the daemon's arrays; never in the simulator). */
  readonly bulk: MemberBulk | null;
  /**
   * A member I/O failed. The core decides (fail the member, count read errors...). After this
   * returns, available(slot) tells whether the personality may still use the member.
   */
  reportError(slot: number, op: 'read' | 'write', err: unknown): void;
}

export interface Personality {
  readonly level: number;
  readonly arraySectors: number;
  /** How many members may be missing while data stays readable, in the best case. */
  readonly maxDegraded: number;
  /** Can the array serve all data with only these slots available? */
  canRun(available: readonly boolean[]): boolean;
  /** Read/write whole sectors of the array (offset and length multiples of 512). */
  read(buf: Uint8Array, arraySector: number): Promise<void>;
  write(buf: Uint8Array, arraySector: number): Promise<void>;
  flush(): Promise<void>;
  /**
   * Size of the resync address space, which the write-intent bitmap also covers: member
   * sectors (raid1/4/5/6) or array sectors (raid10), as in md.
   */
  readonly syncSectors: number;
  /** Size of the recovery address space: member sectors (raid10 recovers by device, as md). */
  readonly recoverySectors: number;
  /** The resync-space range [start, end) that a request on these array sectors touches. */
  syncRangeOf(arraySector: number, sectors: number): [number, number];
  /**
   * The resync-space ranges whose data lives in recovery-space [start, start+sectors) of
   * `slot` (identity except raid10): what a bitmap-guided recovery asks the bitmap about.
   */
  recoveryToSync(slot: number, start: number, sectors: number): Array<[number, number]>;
  /**
   * Make [start, start+sectors) consistent (the personality's part of md's sync_request):
   * with `rebuild` empty, a resync of the resync space (mirrors copied from the first good
   * copy, parity recomputed); otherwise a recovery of the recovery space that writes the
   * rebuilt content of those slots.
   */
  syncRegion(start: number, sectors: number, rebuild: ReadonlySet<number>): Promise<void>;
  /**
   * md's check / repair of [start, start+sectors) of the resync space: compare the copies or
   * the parity with the data; returns the mismatched sectors, counted per 4 KiB (8 sectors)
   * as md counts mismatch_cnt. With `repair`, rewrite the redundancy from the data.
   */
  checkRegion(start: number, sectors: number, repair: boolean): Promise<number>;
}

/** md counts check mismatches in units of one page (STRIPE_SECTORS). */
export const MISMATCH_UNIT_SECTORS = 8;

/** Mismatched sectors between two equal-length buffers, counted per 4 KiB unit. */
export function mismatchedSectors(a: Uint8Array, b: Uint8Array): number {
  const unit = MISMATCH_UNIT_SECTORS * 512;
  const ba = Buffer.from(a.buffer, a.byteOffset, a.length);
  const bb = Buffer.from(b.buffer, b.byteOffset, b.length);
  if (ba.equals(bb)) return 0; // one memcmp for the common case
  let n = 0;
  for (let off = 0; off < a.length; off += unit) {
    const end = Math.min(a.length, off + unit);
    if (!ba.subarray(off, end).equals(bb.subarray(off, end))) n += Math.ceil((end - off) / 512);
  }
  return n;
}

export class IoError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * Promise.all that settles only when every promise has: a request whose first member I/O
 * fails must not settle while other member I/O still reads or writes its buffer (the caller
 * may reuse the buffer as soon as the request settles). Rejects with the first error.
 */
export async function settleAll(jobs: ReadonlyArray<Promise<unknown>>): Promise<void> {
  let failed = false;
  let first: unknown;
  await Promise.all(
    jobs.map((j) =>
      j.catch((e: unknown) => {
        if (!failed) {
          failed = true;
          first = e;
        }
      }),
    ),
  );
  if (failed) throw first;
}

/**
 * Async locks on integer keys (stripes), acquired in ascending order so that multi-stripe
 * requests cannot deadlock. Bounded by the number of concurrent requests.
 */
export class KeyedLocks {
  private readonly tails = new Map<number, Promise<void>>();

  async acquire(keys: number[]): Promise<() => void> {
    const sorted = [...new Set(keys)].sort((a, b) => a - b);
    const releases: Array<() => void> = [];
    for (const k of sorted) {
      const prev = this.tails.get(k) ?? Promise.resolve();
      let release!: () => void;
      const mine = new Promise<void>((r) => {
        release = r;
      });
      const tail = prev.then(() => mine);
      this.tails.set(k, tail);
      await prev;
      releases.push(() => {
        release();
        if (this.tails.get(k) === tail) this.tails.delete(k);
      });
    }
    return () => {
      for (const r of releases) r();
    };
  }

  get held(): number {
    return this.tails.size;
  }
}

/** Run the jobs with at most `limit` in flight (sync windows issue their pieces this way). */
export async function runLimited(jobs: ReadonlyArray<() => Promise<void>>, limit: number): Promise<void> {
  let next = 0;
  let failed: unknown = null;
  const worker = async () => {
    while (next < jobs.length && failed === null) {
      const j = jobs[next++]!;
      try {
        await j();
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
  if (failed !== null) throw failed;
}

/** Pieces of one sync window in flight at once. */
export const SYNC_PARALLEL = 8;

/**
 * Buffers for sync pieces (resync, recovery, check, replacement copies): the device layer's
 * pool of page-skewed buffers. A sync moves gigabytes through the same few buffers; a fresh
 * large ArrayBuffer per piece would cost a calloc, GC-accounted external memory and a slow
 * kernel copy (it starts 16 bytes into a page: src/io/file-device.ts, BOUNCE_MIN_BYTES).
 */
export const takeSyncBuffer = takeBounce;
export const giveSyncBuffer = giveBounce;

/**
 * The members' flush for a personality's flush(): every slot's member, including one being
 * rebuilt (it holds the sync's writes and the writes below its frontier, which the superblock
 * recording its recovery_offset vouches for). A member being rebuilt that cannot flush is
 * failed (reportError); the others' errors fail the flush as before.
 */
export async function flushMembers(io: MemberIo): Promise<void> {
  const jobs: Promise<void>[] = [];
  for (let i = 0; i < io.slots; i++) {
    if (io.available(i)) jobs.push(io.flush(i));
    else jobs.push(io.flush(i).catch((e: unknown) => io.reportError(i, 'write', e)));
  }
  await Promise.all(jobs);
}

/** Runs pieces on the offload: the indices of the flagged pieces, or null when it cannot or failed. */
export async function runOffload(b: MemberBulk, op: BulkOp, pieces: readonly MemberBulkPiece[], slots: Iterable<number>): Promise<Set<number> | null> {
  if (pieces.length === 0 || !b.usable(slots)) return null;
  try {
    return await b.run(op, pieces);
  } catch {
    return null;
  }
}
