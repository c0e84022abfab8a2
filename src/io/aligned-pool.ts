/**
 * Aligned bounce buffers for O_DIRECT member I/O (file-device.ts, `direct`).
 *
 * With O_DIRECT the kernel moves data between the device and the caller's memory with no page
 * cache in between, so it insists that the memory address, the file offset and the length are
 * multiples of the device's alignment (the logical block size for offset and length, the
 * queue's dma_alignment + 1 for the address: 512 on every device here). Linux md never meets
 * this problem, its bios carry page-aligned pages; in JS we cannot see an ArrayBuffer's address
 * at all, and large ArrayBuffers from malloc start 16 bytes into a page.
 *
 * A WebAssembly.Memory's buffer is the exception: V8 allocates every wasm memory with mmap
 * through its page allocator (it reserves the whole range, guard regions included, and commits
 * pages of it), so its first byte starts a page. test/io/file-device-direct.test.ts checks this
 * against the kernel: an O_DIRECT read of a loop device (which answers EINVAL for a misaligned
 * address, at its dma_alignment of 512) into fresh memories at byteOffset 0 succeeds, and at
 * byteOffset 256 fails. So a view at byteOffset k * 4096 of such a memory is page aligned.
 *
 * The pool is ONE fixed WebAssembly.Memory of POOL_BYTES (never grown: growing would detach
 * every view handed out), made on first use, carved into runs of whole pages, first fit,
 * coalesced on give. One memory rather than one per buffer: V8 reserves about 10 GiB of address
 * space per wasm memory and caps the total, so a memory per buffer would run out. Everything is
 * bounded: a buffer is at most MAX_TAKE_BYTES (callers split larger transfers), the pool at most
 * POOL_BYTES; a take that does not fit waits, in FIFO order, for buffers to come back (every
 * holder gives its buffer back when its I/O ends, so the wait is bounded by I/O time).
 */
import { assert } from '../errors.js';

const PAGE_BYTES = 4096;
const WASM_PAGE_BYTES = 65536;
/** Total pool size; the memory's pages are committed only when first touched. */
export const POOL_BYTES = 32 * 1024 * 1024;
/** Largest single buffer: a transfer longer than this is copied through it in pieces. */
export const MAX_TAKE_BYTES = 4 * 1024 * 1024;

/** The one piece of the WebAssembly JS API used here (@types/node 20 does not declare it). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
const WasmApi = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum: number }) => WasmMemory } })
  .WebAssembly;

/** A fresh page-aligned ArrayBuffer of `bytes` (rounded up to 64 KiB): a WebAssembly memory. */
export function pageAlignedArrayBuffer(bytes: number): ArrayBuffer {
  const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE_BYTES));
  return new WasmApi.Memory({ initial: pages, maximum: pages }).buffer;
}

interface Waiter {
  pages: number;
  resolve: (v: Uint8Array) => void;
}

export class AlignedPool {
  private mem: ArrayBuffer | null = null;
  /** free runs [firstPage, pages], sorted by page, never adjacent */
  private readonly free: Array<[number, number]> = [];
  /** first page of each handed-out run -> its page count */
  private readonly used = new Map<number, number>();
  private readonly waiters: Waiter[] = [];
  private readonly totalPages: number;
  /** called once with the pool's memory when it is made (file-device registers it as page-aligned) */
  private readonly onCreate: (ab: ArrayBuffer) => void;

  constructor(poolBytes: number, onCreate: (ab: ArrayBuffer) => void = () => {}) {
    assert(poolBytes % WASM_PAGE_BYTES === 0 && poolBytes >= MAX_TAKE_BYTES, 'aligned pool size');
    this.totalPages = poolBytes / PAGE_BYTES;
    this.onCreate = onCreate;
  }

  /** Bytes handed out now (for tests and metrics). */
  get usedBytes(): number {
    let n = 0;
    for (const p of this.used.values()) n += p;
    return n * PAGE_BYTES;
  }

  /** Takes waiting for buffers now. */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * A page-aligned buffer of n bytes (1 <= n <= MAX_TAKE_BYTES), now when it fits and no one
   * waits before us, else once enough has come back. Give it back with give().
   */
  take(n: number): Promise<Uint8Array> {
    assert(Number.isInteger(n) && n > 0 && n <= MAX_TAKE_BYTES, `aligned buffer of ${n} bytes`);
    const pages = Math.ceil(n / PAGE_BYTES);
    if (this.waiters.length === 0) {
      const v = this.tryTake(pages, n);
      if (v) return Promise.resolve(v);
    }
    return new Promise((resolve) => this.waiters.push({ pages, resolve: (v) => resolve(v.subarray(0, n)) }));
  }

  give(view: Uint8Array): void {
    assert(view.buffer === this.mem && view.byteOffset % PAGE_BYTES === 0, 'give: not a buffer of this pool');
    const first = view.byteOffset / PAGE_BYTES;
    const pages = this.used.get(first);
    assert(pages !== undefined, 'give: buffer given back twice');
    this.used.delete(first);
    this.insertFree(first, pages);
    // wake waiters in order while the first one fits (FIFO: a large take is not starved)
    while (this.waiters.length > 0) {
      const w = this.waiters[0]!;
      const v = this.tryTake(w.pages, w.pages * PAGE_BYTES);
      if (!v) break;
      this.waiters.shift();
      w.resolve(v);
    }
  }

  private tryTake(pages: number, n: number): Uint8Array | null {
    if (this.mem === null) {
      this.mem = pageAlignedArrayBuffer(this.totalPages * PAGE_BYTES);
      this.free.push([0, this.totalPages]);
      this.onCreate(this.mem);
    }
    for (let i = 0; i < this.free.length; i++) {
      const run = this.free[i]!;
      if (run[1] < pages) continue;
      const first = run[0];
      if (run[1] === pages) this.free.splice(i, 1);
      else {
        run[0] += pages;
        run[1] -= pages;
      }
      this.used.set(first, pages);
      return new Uint8Array(this.mem, first * PAGE_BYTES, n);
    }
    return null;
  }

  private insertFree(first: number, pages: number): void {
    let i = 0;
    while (i < this.free.length && this.free[i]![0] < first) i++;
    this.free.splice(i, 0, [first, pages]);
    // coalesce with the next run, then with the previous one
    const cur = this.free[i]!;
    const next = this.free[i + 1];
    if (next && cur[0] + cur[1] === next[0]) {
      cur[1] += next[1];
      this.free.splice(i + 1, 1);
    }
    const prev = this.free[i - 1];
    if (prev && prev[0] + prev[1] === cur[0]) {
      prev[1] += cur[1];
      this.free.splice(i, 1);
    }
  }
}
