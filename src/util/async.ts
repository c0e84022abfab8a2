/**
 * Small async primitives shared by the layers (no I/O, no clock): keyed locks, a bounded job
 * runner and a Promise.all that waits for every job. They lived in raid/personality.ts; they
 * belong to no level, and md/ uses them as much as raid/ does.
 */
import { assert } from '../errors.js';

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
 * Async locks on integer keys (stripes, sectors), acquired in ascending order so that
 * multi-key holders cannot deadlock. Bounded by the number of concurrent requests.
 */
export class KeyedLocks {
  private readonly tails = new Map<number, Promise<void>>();

  async acquire(keys: number[]): Promise<() => void> {
    assert(keys.length > 0, 'KeyedLocks.acquire needs at least one key');
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
  assert(Number.isSafeInteger(limit) && limit > 0, `runLimited: limit ${limit} is a positive integer`);
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
