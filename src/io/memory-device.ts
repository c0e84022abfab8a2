/**
 * In-memory BlockDevice, sparse (pages allocated on first write) so that tests can model
 * large members cheaply. Deterministic; used by unit tests and the simulator.
 */
import { TsmdError } from '../errors.js';
import type { BlockDevice } from './block-device.js';

const PAGE = 64 * 1024;

export class MemoryBlockDevice implements BlockDevice {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  private readonly pages: Map<number, Uint8Array>;
  private closed = false;
  /** Counters, handy for tests that assert how much I/O was done. */
  readonly stats = { reads: 0, writes: 0, readBytes: 0, writtenBytes: 0, flushes: 0 };

  constructor(
    name: string,
    sizeBytes: number,
    opts: { readOnly?: boolean; pages?: Map<number, Uint8Array> } = {},
  ) {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0 || sizeBytes % 512 !== 0) {
      throw new TsmdError('EINVAL', `memory device size ${sizeBytes} must be a multiple of 512`);
    }
    this.name = name;
    this.sizeBytes = sizeBytes;
    this.readOnly = !!opts.readOnly;
    this.pages = opts.pages ?? new Map();
  }

  /** A new open handle on the same storage (like opening the file again after close). */
  reopen(opts: { readOnly?: boolean } = {}): MemoryBlockDevice {
    return new MemoryBlockDevice(this.name, this.sizeBytes, {
      readOnly: opts.readOnly,
      pages: this.pages,
    });
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
    this.stats.reads++;
    this.stats.readBytes += buf.length;
  }

  writeSync(buf: Uint8Array, off: number): void {
    if (this.readOnly) throw new TsmdError('EROFS', `${this.name}: read-only`);
    this.check(buf, off);
    let done = 0;
    while (done < buf.length) {
      const pos = off + done;
      const pno = Math.floor(pos / PAGE);
      const inPage = pos - pno * PAGE;
      const n = Math.min(PAGE - inPage, buf.length - done);
      let page = this.pages.get(pno);
      if (!page) {
        page = new Uint8Array(PAGE);
        this.pages.set(pno, page);
      }
      page.set(buf.subarray(done, done + n), inPage);
      done += n;
    }
    this.stats.writes++;
    this.stats.writtenBytes += buf.length;
  }

  async read(buf: Uint8Array, off: number): Promise<void> {
    this.readSync(buf, off);
  }

  async write(buf: Uint8Array, off: number): Promise<void> {
    this.writeSync(buf, off);
  }

  async flush(): Promise<void> {
    this.stats.flushes++;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
