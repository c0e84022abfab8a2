/**
 * Reusable buffers for READ replies: a large reply buffer freshly allocated for every request
 * costs page faults on first touch, more than the copy itself. Buffers come back to the pool
 * once the socket is done with them. Bounded: at most `maxBytes` are kept.
 */
import { assert } from '../errors.js';

const MIN_CLASS_BYTES = 16 * 1024;

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private keptBytes = 0;

  constructor(private readonly maxBytes: number) {
    assert(maxBytes >= 0, 'BufferPool maxBytes ≥ 0');
  }

  /** A buffer of exactly n bytes (contents undefined) and the backing buffer to release. */
  get(n: number): { buf: Buffer; backing: Buffer | null } {
    if (n < MIN_CLASS_BYTES) return { buf: Buffer.allocUnsafe(n), backing: null };
    const cls = sizeClass(n);
    const list = this.free.get(cls);
    let backing = list?.pop();
    if (backing) this.keptBytes -= cls;
    else backing = Buffer.allocUnsafeSlow(cls);
    return { buf: backing.subarray(0, n), backing };
  }

  release(backing: Buffer | null): void {
    if (!backing) return;
    const cls = backing.length;
    if (this.keptBytes + cls > this.maxBytes) return;
    let list = this.free.get(cls);
    if (!list) {
      list = [];
      this.free.set(cls, list);
    }
    list.push(backing);
    this.keptBytes += cls;
  }
}

function sizeClass(n: number): number {
  let c = MIN_CLASS_BYTES;
  while (c < n) c *= 2;
  return c;
}
