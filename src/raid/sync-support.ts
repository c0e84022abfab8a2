/**
 * What every personality uses around md's sync_request and check: mismatch counting, the sync
 * buffers, the members' flush and the sync offload's entry. (These sat in personality.ts next
 * to the seam itself; they are helpers of the levels, not part of the contract.)
 */
import type { BulkOp } from './offload/bulk.js';
import { giveBounce, takeBounce } from '../io/file-device.js';
import type { MemberBulk, MemberBulkPiece, MemberIo } from './personality.js';

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
 * recording its recovery_offset vouches for). A member that cannot flush goes through md_error
 * (reportError), as a failed write would (md's md_end_flush does not fail the request for it);
 * the flush fails only when the array can no longer serve its data without the members that
 * failed (`canRun`, the personality's). A member can fail its flush before its failed write has
 * reached md_error: the flush then must not report an error the array has absorbed.
 */
export async function flushMembers(io: MemberIo, canRun: (available: readonly boolean[]) => boolean): Promise<void> {
  const errors: unknown[] = [];
  const jobs: Promise<void>[] = [];
  for (let i = 0; i < io.slots; i++) {
    jobs.push(
      io.flush(i).catch((e: unknown) => {
        io.reportError(i, 'write', e);
        errors.push(e);
      }),
    );
  }
  await Promise.all(jobs);
  if (errors.length > 0 && !canRun(Array.from({ length: io.slots }, (_, i) => io.available(i)))) throw errors[0];
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
