/**
 * Reusable buffers for READ replies and WRITE payloads: a large buffer freshly allocated for
 * every request costs page faults on first touch, more than the copy itself. Buffers come back
 * to the pool once the socket (or the target) is done with them. Bounded: at most `maxBytes`
 * are kept.
 *
 * Pooled buffers start half a page into their allocation. A large malloc'd ArrayBuffer starts
 * 16 bytes past a page boundary, and the kernel's copy from the page cache into memory a few
 * bytes past a page start runs 4-8x slower on some x86 CPUs (4K aliasing of `rep movsb`
 * loads and stores; measured on the bench VM's AMD EPYC: 1.2-2 GB/s at page+16 vs 8-10 GB/s
 * at page+2048). The member file devices work around page-aligned buffers with a bounce copy;
 * at page+2048 neither the slow copy nor the bounce happens.
 */
import { assert } from '../errors.js';

const MIN_CLASS_BYTES = 16 * 1024;
/** where a pooled buffer starts inside its allocation (see above) */
const PAGE_OFFSET = 2048;
const PAGE = 4096;

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
    else backing = Buffer.allocUnsafeSlow(cls + PAGE).subarray(PAGE_OFFSET, PAGE_OFFSET + cls);
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
