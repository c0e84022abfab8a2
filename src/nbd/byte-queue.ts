/**
 * The bytes received on a connection and not yet parsed: the socket's chunks as they came, so
 * that a payload lying inside one chunk is handed on as a view (no copy). Only small headers
 * that straddle two chunks are copied.
 */
import { assert } from '../errors.js';

export class ByteQueue {
  private chunks: Buffer[] = [];
  /** bytes already consumed from chunks[0] */
  private head = 0;
  /** bytes available */
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The next n bytes (n ≤ length): a view when they sit in one chunk, else a copy. */
  take(n: number): Buffer {
    assert(n >= 0 && n <= this.length, `ByteQueue.take(${n}) with ${this.length} bytes queued`);
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    if (first.length - this.head >= n) {
      const view = first.subarray(this.head, this.head + n);
      this.advance(n);
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const c = this.chunks[0];
      const k = Math.min(c.length - this.head, n - done);
      c.copy(out, done, this.head, this.head + k);
      done += k;
      this.advance(k);
    }
    return out;
  }

  /** A view of at most n bytes from the first chunk (at least 1 byte when length > 0). */
  takeSome(n: number): Buffer {
    assert(n > 0 && this.length > 0, 'ByteQueue.takeSome on an empty queue');
    const c = this.chunks[0];
    const k = Math.min(c.length - this.head, n);
    const view = c.subarray(this.head, this.head + k);
    this.advance(k);
    return view;
  }

  /** Drops up to n bytes; returns how many were dropped. */
  skip(n: number): number {
    let done = 0;
    while (done < n && this.length > 0) {
      const c = this.chunks[0];
      const k = Math.min(c.length - this.head, n - done);
      this.advance(k);
      done += k;
    }
    return done;
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.length = 0;
  }

  private advance(k: number): void {
    this.head += k;
    this.length -= k;
    if (this.head === this.chunks[0].length) {
      this.chunks.shift();
      this.head = 0;
    }
  }
}
