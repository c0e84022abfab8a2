/**
 * BlockDevice over a regular file or a block device node (positional I/O, fdatasync).
 *
 * The I/O path uses the callback API of node:fs on a plain fd (pread/pwrite/fdatasync in the
 * libuv thread pool): fs/promises' FileHandle adds promise and bookkeeping steps to every call
 * (bench/nbd.ts, 4 KiB random qd32 on one file: 18.3k -> 22.8k IOPS read, 13.8k -> 18.7k
 * write). In-flight operations are counted so that close() never closes an fd that a pending
 * pread/pwrite still uses (the fd number could be reused by another open).
 *
 * Small requests run inline (readSync/writeSync on the calling thread) while the device
 * answers them from memory: a 4 KiB page-cache hit takes 2-8 us, while the hand-off to the
 * thread pool and back costs two cross-thread wake-ups, which dominated the daemon's main
 * thread (docs/perf.md). Every inline operation is timed (see INLINE_SLOW_BASE_NS); a device
 * whose inline operations turn slow (a real disk behind a cache miss, dirty-page throttling)
 * goes back to the thread pool for a back-off period that doubles while it stays slow, so the
 * event loop waits for at most a few device accesses per back-off period.
 * TSMD_INLINE_IO=0 turns inline I/O off; TSMD_INLINE_IO=N sets the largest inline read,
 * TSMD_INLINE_WRITE_IO=N the largest inline write (default 1 MiB, see INLINE_MAX_WRITE_BYTES).
 */
import {
  fdatasync,
  close as fsClose,
  open as fsOpen,
  read as fsRead,
  write as fsWrite,
  readSync,
  writeSync,
} from 'node:fs';
import { constants, readFile, stat } from 'node:fs/promises';
import { TsmdError } from '../errors.js';
import type { BlockDevice, DirectFd } from './block-device.js';

export interface OpenOptions {
  readOnly?: boolean;
  /** O_EXCL on a block device: refuse when mounted or held by another opener (like mdadm). */
  exclusive?: boolean;
}

/** Largest read that may run inline (bytes); 0 = never (reads and writes). */
const INLINE_MAX_BYTES = inlineMaxBytes(process.env.TSMD_INLINE_IO, 64 * 1024);
/**
 * Largest write that may run inline. Larger than for reads: a write into the page cache is a
 * plain copy, and the two cross-thread wake-ups of the pool round trip cost more than that on
 * the bench VM (seq writes 1M qd8 through the daemon: raid0 1.3-1.6x, raid1 1.4x, raid5 1.1-1.5x
 * faster with 1 MiB than with 64 KiB; docs/perf.md). Large reads gained nothing inline. Dirty-
 * page throttling or a disk shows up as slow inline writes and sends the device to the pool,
 * as for reads. Never below the read limit; TSMD_INLINE_IO=0 turns both off.
 */
const INLINE_MAX_WRITE_BYTES =
  INLINE_MAX_BYTES === 0 ? 0 : Math.max(INLINE_MAX_BYTES, inlineMaxBytes(process.env.TSMD_INLINE_WRITE_IO, 1024 * 1024));
/**
 * An inline operation slower than INLINE_SLOW_BASE_NS plus 1 ns per byte did not come from
 * memory (a page-cache copy runs at several GB/s; a 4 KiB hit takes 2-8 us, an NVMe miss
 * about 100 us), one slower than INLINE_VERY_SLOW_NS waited for a disk seek or for dirty-page
 * throttling. Isolated slow operations happen anyway (the thread was preempted, or ran a
 * network softirq: 0.5-2% of 4 KiB hits on a busy 2-CPU VM, a few per 100k above 2 ms), so a
 * device leaves inline mode only when, within INLINE_WINDOW_OPS inline operations, half of
 * them were slow or INLINE_VERY_SLOW_LIMIT were very slow.
 */
const INLINE_SLOW_BASE_NS = 50_000;
const INLINE_VERY_SLOW_NS = 2_000_000;
const INLINE_WINDOW_OPS = 64;
const INLINE_SLOW_LIMIT = INLINE_WINDOW_OPS / 2;
const INLINE_VERY_SLOW_LIMIT = 4;
/** Time on the thread pool after leaving inline mode; doubles while the device stays slow. */
const INLINE_BACKOFF_MIN_MS = 1000;
const INLINE_BACKOFF_MAX_MS = 60_000;

/**
 * Reads of at least this many bytes into a buffer that starts a page (byteOffset % 4096 = 0)
 * go through a bounce buffer at page offset 2048. The kernel's copy to user memory runs at
 * 1.2-2 GB/s instead of 8-10 when the destination sits 8-31 bytes into a page on this AMD
 * EPYC (4K aliasing of `rep movsb` against the page-aligned page cache), and large
 * ArrayBuffers from malloc start exactly there (mmap chunk + 16). The extra copy in user
 * space runs at 25 GB/s (docs/perf.md). Other destinations are read directly.
 */
const BOUNCE_MIN_BYTES = 16 * 1024;
export const BOUNCE_SKEW_BYTES = 2048;
const BOUNCE_KEEP_BYTES = 32 * 1024 * 1024;
const bounceFree = new Map<number, ArrayBuffer[]>();
/** Memories known to start on a page (WebAssembly memories): their page-aligned views read fast. */
const pageAlignedMemories = new WeakSet<ArrayBufferLike>();

/**
 * Tell the device layer that this backing memory starts exactly on a page (a
 * WebAssembly.Memory), so a view at a page-aligned byteOffset really is page-aligned and is
 * read directly instead of through a bounce buffer (BOUNCE_MIN_BYTES).
 */
export function registerPageAlignedMemory(ab: ArrayBufferLike): void {
  pageAlignedMemories.add(ab);
}
let bounceKeptBytes = 0;

/**
 * A pooled buffer of n bytes that starts 2 KiB into a page, where the kernel's copies run at
 * full speed (BOUNCE_MIN_BYTES); give it back with giveBounce once no I/O uses it. The sync
 * engine moves its data through these too.
 */
export function takeBounce(n: number): Uint8Array {
  let cls = BOUNCE_MIN_BYTES;
  while (cls < n) cls *= 2;
  const ab = bounceFree.get(cls)?.pop();
  if (ab) bounceKeptBytes -= cls;
  return new Uint8Array(ab ?? new ArrayBuffer(cls + 4096), BOUNCE_SKEW_BYTES, n);
}

export function giveBounce(view: Uint8Array): void {
  const cls = view.buffer.byteLength - 4096;
  if (bounceKeptBytes + cls > BOUNCE_KEEP_BYTES) return;
  let list = bounceFree.get(cls);
  if (!list) bounceFree.set(cls, (list = []));
  list.push(view.buffer as ArrayBuffer);
  bounceKeptBytes += cls;
}

function inlineMaxBytes(env: string | undefined, dflt: number): number {
  if (env === undefined || env === '' || env === '1') return dflt;
  const n = Number(env);
  return Number.isSafeInteger(n) && n >= 0 ? n : dflt;
}

function nowNs(): number {
  return Number(process.hrtime.bigint());
}

function errnoToCode(e: NodeJS.ErrnoException, name?: string): TsmdError {
  e.path ??= name;
  switch (e.code) {
    case 'ENOENT':
      return new TsmdError('ENOENT', `${e.path ?? 'device'}: no such file or device`, { cause: e });
    case 'EACCES':
    case 'EPERM':
      return new TsmdError('EPERM', `${e.path ?? 'device'}: permission denied`, { cause: e });
    case 'EBUSY':
      return new TsmdError('EBUSY', `${e.path ?? 'device'}: device or resource busy (in use?)`, {
        cause: e,
      });
    case 'EROFS':
      return new TsmdError('EROFS', `${e.path ?? 'device'}: read-only`, { cause: e });
    default:
      return new TsmdError('EIO', `${e.path ?? 'device'}: ${e.message}`, { cause: e });
  }
}

/** Size of a block device in bytes, from sysfs (Node has no BLKGETSIZE64). */
export function majorMinor(rdev: number): { major: number; minor: number } {
  // glibc's gnu_dev_major/minor for the common 32-bit range of dev_t
  return {
    major: Math.floor(rdev / 256) & 0xfff,
    minor: (rdev & 0xff) | (Math.floor(rdev / 4096) & 0xfff00),
  };
}

async function blockDeviceBytes(rdev: number): Promise<number> {
  const { major, minor } = majorMinor(rdev);
  const text = await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
  return Number.parseInt(text.trim(), 10) * 512;
}

/** Process-wide counters of the I/O paths (for benchmarks and metrics). */
export const fileIoStats = { inlineOps: 0, poolOps: 0, inlineSlow: 0, inlineBackoffs: 0, bounced: 0 };

export class FileBlockDevice implements BlockDevice {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly isBlockDevice: boolean;
  readonly rdev: number;
  /** st_dev: the device of the filesystem holding a regular file */
  readonly stDev: number;
  private fd: number | null;
  /** operations (each a pread/pwrite loop or an fdatasync) that still use fd */
  private inflight = 0;
  private onIdle: (() => void) | null = null;
  /** inline I/O is off until this time (ns, process.hrtime); see INLINE_SLOW_BASE_NS */
  private inlineOffUntilNs = 0;
  private inlineBackoffMs = 0;
  private inlineWindowOps = 0;
  private inlineWindowSlow = 0;
  private inlineWindowVerySlow = 0;

  private constructor(
    name: string,
    fd: number,
    sizeBytes: number,
    readOnly: boolean,
    isBlockDevice: boolean,
    rdev: number,
    stDev: number,
  ) {
    this.name = name;
    this.fd = fd;
    this.sizeBytes = sizeBytes;
    this.readOnly = readOnly;
    this.isBlockDevice = isBlockDevice;
    this.rdev = rdev;
    this.stDev = stDev;
  }

  /** major:minor to show for this member: the node's own for block devices, else the filesystem's. */
  get majorMinor(): { major: number; minor: number } {
    return majorMinor(this.isBlockDevice ? this.rdev : this.stDev);
  }

  static async open(path: string, opts: OpenOptions = {}): Promise<FileBlockDevice> {
    let st: Awaited<ReturnType<typeof stat>>;
    try {
      st = await stat(path);
    } catch (e) {
      throw errnoToCode(e as NodeJS.ErrnoException);
    }
    const isBlk = st.isBlockDevice();
    if (!isBlk && !st.isFile()) {
      throw new TsmdError('EINVAL', `${path} is neither a block device nor a regular file`);
    }
    let flags = opts.readOnly ? constants.O_RDONLY : constants.O_RDWR;
    if (isBlk && opts.exclusive) flags |= constants.O_EXCL;
    const fd = await new Promise<number>((resolve, reject) => {
      fsOpen(path, flags, (err, fd) => (err ? reject(errnoToCode(err)) : resolve(fd)));
    });
    let size: number;
    try {
      size = isBlk ? await blockDeviceBytes(st.rdev) : Number(st.size);
    } catch (e) {
      fsClose(fd, () => {});
      throw errnoToCode(e as NodeJS.ErrnoException);
    }
    size -= size % 512;
    return new FileBlockDevice(path, fd, size, !!opts.readOnly, isBlk, st.rdev, st.dev);
  }

  private handle(): number {
    if (this.fd === null) throw new TsmdError('ENODEV', `${this.name}: device is closed`);
    return this.fd;
  }

  private check(buf: Uint8Array, offsetBytes: number): void {
    if (offsetBytes < 0 || offsetBytes + buf.length > this.sizeBytes) {
      throw new TsmdError(
        'EINVAL',
        `${this.name}: I/O of ${buf.length} bytes at ${offsetBytes} is beyond the device end (${this.sizeBytes})`,
      );
    }
  }

  private done(): void {
    this.inflight--;
    if (this.inflight === 0 && this.onIdle) {
      const f = this.onIdle;
      this.onIdle = null;
      f();
    }
  }

  /**
   * pread/pwrite until the whole buffer is transferred: one promise per request, the loop runs
   * in the fs callbacks (no await per step).
   */
  private transfer(write: boolean, buf: Uint8Array, offsetBytes: number): Promise<void> {
    let fd: number;
    try {
      if (write && this.readOnly) throw new TsmdError('EROFS', `${this.name}: opened read-only`);
      this.check(buf, offsetBytes);
      fd = this.handle();
    } catch (e) {
      return Promise.reject(e);
    }
    if (buf.length === 0) return Promise.resolve();
    if (!write && buf.length >= BOUNCE_MIN_BYTES && (buf.byteOffset & 4095) === 0 && !pageAlignedMemories.has(buf.buffer)) {
      // read into a bounce buffer, then copy (see BOUNCE_MIN_BYTES)
      fileIoStats.bounced++;
      const bounce = takeBounce(buf.length);
      return this.transfer(false, bounce, offsetBytes).then(
        () => {
          buf.set(bounce);
          giveBounce(bounce);
        },
        (e: unknown) => {
          giveBounce(bounce);
          throw e;
        },
      );
    }
    if (buf.length <= (write ? INLINE_MAX_WRITE_BYTES : INLINE_MAX_BYTES)) {
      const t0 = nowNs();
      if (t0 >= this.inlineOffUntilNs) return this.inline(write, fd, buf, offsetBytes, t0);
    }
    fileIoStats.poolOps++;
    this.inflight++;
    return new Promise<void>((resolve, reject) => {
      let done = 0;
      const step = (err: NodeJS.ErrnoException | null, n: number): void => {
        if (err) {
          this.done();
          reject(errnoToCode(err, this.name));
          return;
        }
        if (n === 0) {
          this.done();
          // a file shorter than it was when opened: a vanished device is an error
          reject(
            new TsmdError(
              'EIO',
              write
                ? `${this.name}: short write at ${offsetBytes + done}`
                : `${this.name}: short read at ${offsetBytes + done} (device shrank?)`,
            ),
          );
          return;
        }
        done += n;
        if (done < buf.length) issue();
        else {
          this.done();
          resolve();
        }
      };
      const issue = (): void => {
        if (write) fsWrite(fd, buf, done, buf.length - done, offsetBytes + done, step);
        else fsRead(fd, buf, done, buf.length - done, offsetBytes + done, step);
      };
      issue();
    });
  }

  /**
   * Book-keeping after an inline operation: too many slow ones within a window (see
   * INLINE_SLOW_BASE_NS) mean the device is not answering from memory, and it goes to the
   * thread pool for a back-off period.
   */
  private inlineTimed(t0: number, bytes: number): void {
    const dt = nowNs() - t0;
    this.inlineWindowOps++;
    if (dt > INLINE_SLOW_BASE_NS + bytes) {
      fileIoStats.inlineSlow++;
      this.inlineWindowSlow++;
      if (dt > INLINE_VERY_SLOW_NS) this.inlineWindowVerySlow++;
      if (this.inlineWindowSlow >= INLINE_SLOW_LIMIT || this.inlineWindowVerySlow >= INLINE_VERY_SLOW_LIMIT) {
        this.inlineBackoffMs = Math.min(INLINE_BACKOFF_MAX_MS, Math.max(INLINE_BACKOFF_MIN_MS, this.inlineBackoffMs * 2));
        this.inlineOffUntilNs = t0 + dt + this.inlineBackoffMs * 1e6;
        fileIoStats.inlineBackoffs++;
        this.inlineWindowOps = this.inlineWindowSlow = this.inlineWindowVerySlow = 0;
        return;
      }
    }
    if (this.inlineWindowOps >= INLINE_WINDOW_OPS) {
      this.inlineBackoffMs = 0; // a whole window mostly answered from memory: fast again
      this.inlineWindowOps = this.inlineWindowSlow = this.inlineWindowVerySlow = 0;
    }
  }

  /** The same transfer as a synchronous loop on this thread, timed (see inlineTimed). */
  private inline(write: boolean, fd: number, buf: Uint8Array, offsetBytes: number, t0: number): Promise<void> {
    let done = 0;
    fileIoStats.inlineOps++;
    try {
      while (done < buf.length) {
        const n = write
          ? writeSync(fd, buf, done, buf.length - done, offsetBytes + done)
          : readSync(fd, buf, done, buf.length - done, offsetBytes + done);
        if (n === 0) {
          throw new TsmdError(
            'EIO',
            write
              ? `${this.name}: short write at ${offsetBytes + done}`
              : `${this.name}: short read at ${offsetBytes + done} (device shrank?)`,
          );
        }
        done += n;
      }
    } catch (e) {
      return Promise.reject(e instanceof TsmdError ? e : errnoToCode(e as NodeJS.ErrnoException, this.name));
    } finally {
      this.inlineTimed(t0, buf.length);
    }
    return Promise.resolve();
  }

  read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    return this.transfer(false, buf, offsetBytes);
  }

  write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    return this.transfer(true, buf, offsetBytes);
  }

  flush(): Promise<void> {
    if (this.readOnly) return Promise.resolve();
    let fd: number;
    try {
      fd = this.handle();
    } catch (e) {
      return Promise.reject(e);
    }
    this.inflight++;
    return new Promise<void>((resolve, reject) => {
      fdatasync(fd, (err) => {
        this.done();
        if (err) reject(errnoToCode(err, this.name));
        else resolve();
      });
    });
  }

  directFd(): DirectFd | null {
    if (this.fd === null) return null;
    this.inflight++;
    let released = false;
    return {
      fd: this.fd,
      readOnly: this.readOnly,
      release: () => {
        if (released) return;
        released = true;
        this.done();
      },
    };
  }

  /** Close once the operations already started have finished (new ones get ENODEV). */
  async close(): Promise<void> {
    const fd = this.fd;
    this.fd = null;
    if (fd === null) return;
    if (this.inflight > 0) {
      await new Promise<void>((resolve) => {
        const prev = this.onIdle;
        this.onIdle = () => {
          prev?.();
          resolve();
        };
      });
    }
    await new Promise<void>((resolve, reject) => {
      fsClose(fd, (err) => (err ? reject(errnoToCode(err, this.name)) : resolve()));
    });
  }
}

export function openDevice(path: string, opts: OpenOptions = {}): Promise<FileBlockDevice> {
  return FileBlockDevice.open(path, opts);
}
