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
 *
 * Direct I/O (OpenOptions.direct, reopenDirect): the members of a clustered array are shared by
 * nodes on several hosts, and each host has its own page cache; a host that serves a member
 * read from its cache returns data another host has overwritten since (Linux md-cluster relies
 * on the block layer for this: a shared disk's bios never sit in a page cache). A direct device
 * opens its fd with O_DIRECT, so every read and write goes to the device. See DIRECT_MAX_ALIGN
 * for what is refused, directTransfer for the alignment rules and aligned-pool.ts for the
 * aligned memory.
 */
import {
  fdatasync,
  close as fsClose,
  fstat as fsFstat,
  open as fsOpen,
  read as fsRead,
  write as fsWrite,
  readSync,
  writeSync,
} from 'node:fs';
import { constants, readFile, stat, statfs } from 'node:fs/promises';
import { assert, TsmdError } from '../errors.js';
import { AlignedPool, MAX_TAKE_BYTES, POOL_BYTES } from './aligned-pool.js';
import { type BlockDevice, type DirectFd, SECTOR_BYTES } from './block-device.js';

/** O_DIRECT wanted: true = required (refused with ENOTSUP), 'try' = buffered when refused. */
export type DirectMode = boolean | 'try';

export interface OpenOptions {
  readOnly?: boolean;
  /** O_EXCL on a block device: refuse when mounted or held by another opener (like mdadm). */
  exclusive?: boolean;
  /**
   * O_DIRECT (no host page cache), for members shared by several hosts (a clustered array).
   * true: refused with ENOTSUP where the device or file system cannot do it; 'try': falls back
   * to buffered I/O there (FileBlockDevice.direct is then false, directRefusal says why).
   */
  direct?: DirectMode;
}

/**
 * Largest logical block size a direct device may have. md counts member I/O in 512-byte
 * sectors, and tsmd's md issues it so (a superblock rounded up to 512 bytes, a 512-byte
 * bitmap header, data at sector offsets), unlike the kernel, which raises an array's logical
 * block size to its members' largest (md's queue limits) and rounds superblock and bitmap
 * writes up to it. With O_DIRECT a device of 4096-byte logical blocks answers EINVAL to such
 * I/O (or, on some file systems, silently serves it from the page cache), so it is refused at
 * open instead of failing the first small write.
 */
const DIRECT_MAX_ALIGN = SECTOR_BYTES;

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
export const fileIoStats = {
  inlineOps: 0,
  poolOps: 0,
  inlineSlow: 0,
  inlineBackoffs: 0,
  bounced: 0,
  /** direct transfers issued on the caller's own (aligned) buffer */
  directOps: 0,
  /** direct transfers copied through the aligned pool (the caller's buffer was not known-aligned) */
  directBounced: 0,
};

/** The aligned bounce buffers of every direct device (aligned-pool.ts); its memory is page-aligned. */
export const directPool = new AlignedPool(POOL_BYTES, registerPageAlignedMemory);

/** One open fd and the operations (pread/pwrite loops, fdatasync, directFd holds) that use it. */
interface OpenFd {
  readonly fd: number;
  inflight: number;
  onIdle: (() => void) | null;
}

function openFdRaw(path: string, flags: number): Promise<number> {
  return new Promise((resolve, reject) => fsOpen(path, flags, (err, fd) => (err ? reject(err) : resolve(fd))));
}

function closeFdRaw(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsClose(fd, (err) => (err ? reject(err) : resolve())));
}

/**
 * The logical block size of block device `dev` (a dev_t) from sysfs, its whole disk's for a
 * partition (a partition has no queue/ of its own); null when sysfs has no such device (the
 * anonymous st_dev of btrfs, overlayfs, NFS...). Node has no BLKSSZGET ioctl.
 */
async function sysfsLogicalBlockBytes(dev: number): Promise<number | null> {
  const { major, minor } = majorMinor(dev);
  for (const dir of [`/sys/dev/block/${major}:${minor}`, `/sys/dev/block/${major}:${minor}/..`]) {
    try {
      const n = Number.parseInt((await readFile(`${dir}/queue/logical_block_size`, 'utf8')).trim(), 10);
      if (Number.isSafeInteger(n) && n >= 512) return n;
    } catch {
      // not there: try the parent (partition), then give up
    }
  }
  return null;
}

/**
 * One aligned read of the first block through a direct fd: some file systems (FUSE without
 * direct_io, for one) take O_DIRECT at open and refuse the I/O. null when it worked, else why.
 */
async function probeDirectRead(fd: number, align: number, sizeBytes: number): Promise<string | null> {
  if (sizeBytes < align) return null;
  const b = await directPool.take(align);
  try {
    await new Promise<void>((resolve, reject) => fsRead(fd, b, 0, align, 0, (err) => (err ? reject(err) : resolve())));
    return null;
  } catch (e) {
    return `an aligned O_DIRECT read fails (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
  } finally {
    directPool.give(b);
  }
}

/** statfs f_type magics of the file systems a refusal may name (linux/magic.h). */
const FS_MAGIC: ReadonlyMap<number, string> = new Map([
  [0x01021994, 'tmpfs'],
  [0x858458f6, 'ramfs'],
  [0x9123683e, 'btrfs'],
  [0x794c7630, 'overlayfs'],
  [0x6969, 'NFS'],
  [0x65735546, 'FUSE'],
  [0x2fc12fc1, 'ZFS'],
]);

async function fsTypeName(path: string): Promise<string> {
  try {
    const t = (await statfs(path)).type;
    return FS_MAGIC.get(t) ?? `a file system of type 0x${t.toString(16)}`;
  } catch {
    return 'an unknown file system';
  }
}

function directRefusedError(path: string, why: string): TsmdError {
  return new TsmdError(
    'ENOTSUP',
    `${path}: cannot open with O_DIRECT: ${why}. A clustered array needs O_DIRECT on members shared by ` +
      'several hosts (each host would otherwise serve reads from its own page cache, stale after ' +
      'another host writes); use a block device that every host sees, on a file system or device that allows O_DIRECT',
  );
}

export class FileBlockDevice implements BlockDevice {
  readonly name: string;
  /** the size as last read (at open, or by refreshSize) */
  private size: number;
  readonly readOnly: boolean;
  readonly isBlockDevice: boolean;
  readonly rdev: number;
  /** st_dev: the device of the filesystem holding a regular file */
  readonly stDev: number;
  /**
   * The logical block size in bytes, the unit of O_DIRECT offsets and lengths: a block
   * device's own (sysfs queue/logical_block_size; Linux's BLKSSZGET), for a file that of the
   * device under its file system (ext4 and xfs align direct I/O to it); null when sysfs does
   * not know the device (btrfs, overlayfs, NFS: their st_dev is anonymous).
   */
  readonly logicalBlockBytes: number | null;
  /** st_ino: reopenDirect checks that the path still names the file opened */
  private readonly ino: number;
  private readonly exclusive: boolean;
  /** the fd that new operations use; null once closed */
  private cur: OpenFd | null;
  private closed = false;
  /** after reopenDirect of an O_EXCL block device: the old fd, kept open (unused) to hold the claim */
  private claimFd: number | null = null;
  private isDirect: boolean;
  private refusal: string | null;
  /** reopenDirect calls, one after the other; close() waits for them */
  private reopening: Promise<unknown> = Promise.resolve();
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
    opts: OpenOptions,
    st: { isBlk: boolean; rdev: number; dev: number; ino: number; lbs: number | null },
    direct: boolean,
    refusal: string | null,
  ) {
    this.name = name;
    this.cur = { fd, inflight: 0, onIdle: null };
    this.size = sizeBytes;
    this.readOnly = !!opts.readOnly;
    this.exclusive = !!opts.exclusive;
    this.isBlockDevice = st.isBlk;
    this.rdev = st.rdev;
    this.stDev = st.dev;
    this.ino = st.ino;
    this.logicalBlockBytes = st.lbs;
    this.isDirect = direct;
    this.refusal = refusal;
  }

  get sizeBytes(): number {
    return this.size;
  }

  /**
   * The size read again: fstat of the open fd for a file (a member file grown with truncate
   * while the array runs), the device's size for a block device (BLKGETSIZE64 after an lvextend).
   * Rounded down to 512 as at open.
   */
  async refreshSize(): Promise<number> {
    const ref = this.handle();
    let bytes: number;
    try {
      bytes = this.isBlockDevice
        ? await blockDeviceBytes(this.rdev)
        : await new Promise<number>((resolve, reject) => fsFstat(ref.fd, (err, st) => (err ? reject(err) : resolve(Number(st.size)))));
    } catch (e) {
      throw errnoToCode(e as NodeJS.ErrnoException, this.name);
    }
    this.size = bytes - (bytes % 512);
    return this.size;
  }

  /** major:minor to show for this member: the node's own for block devices, else the filesystem's. */
  get majorMinor(): { major: number; minor: number } {
    return majorMinor(this.isBlockDevice ? this.rdev : this.stDev);
  }

  /** True when the fd is O_DIRECT: every read and write goes to the device, none to the page cache. */
  get direct(): boolean {
    return this.isDirect;
  }

  /**
   * Why O_DIRECT was refused when it was asked with 'try' and the device fell back to buffered
   * I/O (the message `direct: true` would have thrown): for the caller's warning. Else null.
   */
  get directRefusal(): string | null {
    return this.refusal;
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
    const lbs = await sysfsLogicalBlockBytes(isBlk ? st.rdev : st.dev);
    let fd: number | null = null;
    let refusal: string | null = null;
    if (opts.direct) {
      const r = await FileBlockDevice.openDirectFd(path, flags, isBlk, lbs, st);
      if ('why' in r) {
        const err = directRefusedError(path, r.why);
        if (opts.direct === true) throw err;
        refusal = err.message;
      } else fd = r.fd;
    }
    const direct = fd !== null;
    if (fd === null) {
      try {
        fd = await openFdRaw(path, flags);
      } catch (e) {
        throw errnoToCode(e as NodeJS.ErrnoException, path);
      }
    }
    let size: number;
    try {
      size = isBlk ? await blockDeviceBytes(st.rdev) : Number(st.size);
    } catch (e) {
      fsClose(fd, () => {});
      throw errnoToCode(e as NodeJS.ErrnoException);
    }
    size -= size % 512;
    return new FileBlockDevice(
      path,
      fd,
      size,
      opts,
      { isBlk, rdev: st.rdev, dev: st.dev, ino: st.ino, lbs },
      direct,
      refusal,
    );
  }

  /**
   * An O_DIRECT fd on path, or why there can be none: an unknown or too large logical block
   * size (DIRECT_MAX_ALIGN), EINVAL from open (ramfs, tmpfs before Linux 6.6, FUSE), or a
   * first aligned read that fails. Other open errors (ENOENT, EBUSY...) are thrown as usual.
   */
  private static async openDirectFd(
    path: string,
    flags: number,
    isBlk: boolean,
    lbs: number | null,
    st: { rdev: number; dev: number; size: number | bigint },
  ): Promise<{ fd: number } | { why: string }> {
    if (lbs !== null && lbs > DIRECT_MAX_ALIGN) {
      return { why: `its logical block size is ${lbs} bytes, and tsmd writes members in ${DIRECT_MAX_ALIGN}-byte sectors` };
    }
    let fd: number;
    try {
      fd = await openFdRaw(path, flags | constants.O_DIRECT);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'EINVAL') return { why: 'the file system or device refuses O_DIRECT (open: EINVAL)' };
      throw errnoToCode(err, path);
    }
    let why: string | null;
    if (lbs === null) {
      // no block device to align to: a memory file system (tmpfs takes O_DIRECT since Linux 6.6,
      // but only this host sees it), a network one, btrfs (which serves misaligned O_DIRECT from
      // the page cache without a word), overlayfs...; refused rather than guessed
      const mm = majorMinor(isBlk ? st.rdev : st.dev);
      why = isBlk
        ? `its logical block size is unknown (no /sys/dev/block/${mm.major}:${mm.minor}/queue/logical_block_size)`
        : `it is on ${await fsTypeName(path)}, whose st_dev ${mm.major}:${mm.minor} is no block device in sysfs, so the ` +
          'alignment O_DIRECT needs is unknown';
    } else {
      const size = isBlk ? await blockDeviceBytes(st.rdev).catch(() => 0) : Number(st.size);
      why = await probeDirectRead(fd, lbs, size);
    }
    if (why !== null) {
      await closeFdRaw(fd).catch(() => {});
      return { why };
    }
    return { fd };
  }

  /**
   * Switch this device to O_DIRECT in place (the same object, so md's Member keeps it):
   * assembly opens the members before their superblocks say that the array is clustered.
   * A new O_DIRECT fd on the same path (checked to be the same file or device) takes every
   * operation that starts from now on; the operations already running on the buffered fd
   * finish there, its dirty pages are then written to the device (fdatasync: another host
   * must see them), and it is closed — or, for a block device opened with O_EXCL, kept open
   * without use until close(), since a second O_EXCL open of the device would be refused
   * (EBUSY) and an open without it must not let anyone claim the device in between.
   *
   * Resolves true once direct (at once when it already was); with mode true a device that
   * cannot do O_DIRECT rejects with ENOTSUP and stays as it was, with 'try' it resolves false
   * (directRefusal says why). Calls are serialised.
   */
  reopenDirect(mode: true | 'try' = true): Promise<boolean> {
    const p = this.reopening.then(() => this.switchToDirect(mode));
    this.reopening = p.catch(() => {});
    return p;
  }

  private async switchToDirect(mode: true | 'try'): Promise<boolean> {
    if (this.closed) throw new TsmdError('ENODEV', `${this.name}: device is closed`);
    if (this.isDirect) return true;
    const flags = this.readOnly ? constants.O_RDONLY : constants.O_RDWR;
    const r = await FileBlockDevice.openDirectFd(this.name, flags, this.isBlockDevice, this.logicalBlockBytes, {
      rdev: this.rdev,
      dev: this.stDev,
      size: this.sizeBytes,
    });
    if ('why' in r) {
      const err = directRefusedError(this.name, r.why);
      if (mode === true) throw err;
      this.refusal = err.message;
      return false;
    }
    const st = await new Promise<{ dev: number; ino: number; rdev: number } | null>((resolve) =>
      fsFstat(r.fd, (err, s) => resolve(err ? null : s)),
    );
    const same = st !== null && (this.isBlockDevice ? st.rdev === this.rdev : st.dev === this.stDev && st.ino === this.ino);
    if (!same || this.closed) {
      await closeFdRaw(r.fd).catch(() => {});
      if (this.closed) throw new TsmdError('ENODEV', `${this.name}: device is closed`);
      throw new TsmdError('EINVAL', `${this.name} now names another file or device than the one opened: not switched to O_DIRECT`);
    }
    const old = this.cur!;
    this.cur = { fd: r.fd, inflight: 0, onIdle: null };
    this.isDirect = true;
    this.refusal = null;
    await this.idle(old);
    try {
      if (!this.readOnly) {
        await new Promise<void>((resolve, reject) =>
          fdatasync(old.fd, (err) => (err ? reject(errnoToCode(err, this.name)) : resolve())),
        );
      }
    } finally {
      if (this.isBlockDevice && this.exclusive) this.claimFd = old.fd;
      else await closeFdRaw(old.fd).catch(() => {});
    }
    return true;
  }

  private handle(): OpenFd {
    if (this.closed || this.cur === null) throw new TsmdError('ENODEV', `${this.name}: device is closed`);
    return this.cur;
  }

  private check(buf: Uint8Array, offsetBytes: number): void {
    if (offsetBytes < 0 || offsetBytes + buf.length > this.sizeBytes) {
      throw new TsmdError(
        'EINVAL',
        `${this.name}: I/O of ${buf.length} bytes at ${offsetBytes} is beyond the device end (${this.sizeBytes})`,
      );
    }
  }

  private done(ref: OpenFd): void {
    ref.inflight--;
    if (ref.inflight === 0 && ref.onIdle) {
      const f = ref.onIdle;
      ref.onIdle = null;
      f();
    }
  }

  /** Resolves once no operation uses ref's fd. */
  private idle(ref: OpenFd): Promise<void> {
    if (ref.inflight === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const prev = ref.onIdle;
      ref.onIdle = () => {
        prev?.();
        resolve();
      };
    });
  }

  private transfer(write: boolean, buf: Uint8Array, offsetBytes: number): Promise<void> {
    let ref: OpenFd;
    try {
      if (write && this.readOnly) throw new TsmdError('EROFS', `${this.name}: opened read-only`);
      this.check(buf, offsetBytes);
      ref = this.handle();
      if (this.isDirect) {
        // see directTransfer: a rejection like the others, which still ends the process (bug)
        const align = this.logicalBlockBytes!;
        assert(
          offsetBytes % align === 0 && buf.length % align === 0,
          `${this.name}: direct I/O of ${buf.length} bytes at byte ${offsetBytes} is not in whole ${align}-byte blocks`,
        );
      }
    } catch (e) {
      return Promise.reject(e);
    }
    if (buf.length === 0) return Promise.resolve();
    if (this.isDirect) return this.directTransfer(write, ref, buf, offsetBytes);
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
      if (t0 >= this.inlineOffUntilNs) return this.inline(write, ref.fd, buf, offsetBytes, t0);
    }
    fileIoStats.poolOps++;
    return this.pooled(write, ref, buf, offsetBytes);
  }

  /** The transfer on the thread pool, counted in ref.inflight while it runs. */
  private pooled(write: boolean, ref: OpenFd, buf: Uint8Array, offsetBytes: number): Promise<void> {
    ref.inflight++;
    return new Promise<void>((resolve, reject) => {
      this.loop(write, ref.fd, buf, offsetBytes, (err) => {
        this.done(ref);
        if (err) reject(err);
        else resolve();
      });
    });
  }

  /**
   * pread/pwrite until the whole buffer is transferred, the loop running in the fs callbacks
   * (no promise per step).
   */
  private loop(write: boolean, fd: number, buf: Uint8Array, offsetBytes: number, cb: (err: TsmdError | null) => void): void {
    let done = 0;
    const step = (err: NodeJS.ErrnoException | null, n: number): void => {
      if (err) {
        cb(errnoToCode(err, this.name));
        return;
      }
      if (n === 0) {
        // a file shorter than it was when opened: a vanished device is an error
        cb(
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
      else cb(null);
    };
    const issue = (): void => {
      if (write) fsWrite(fd, buf, done, buf.length - done, offsetBytes + done, step);
      else fsRead(fd, buf, done, buf.length - done, offsetBytes + done, step);
    };
    issue();
  }

  /**
   * A transfer on an O_DIRECT fd. The offset and length must be whole logical blocks (at most
   * 512 bytes, DIRECT_MAX_ALIGN): md member I/O always is, in whole 512-byte sectors
   * (BlockDevice's contract), so anything else is a bug above and an assertion failure (checked
   * in transfer), not an I/O error. The memory must be aligned too: a buffer known to be (a page-aligned memory,
   * registerPageAlignedMemory, at an aligned byteOffset: the parity arena's, the aligned pool's)
   * is used as it is; any other is copied through the aligned pool in pieces of at most
   * MAX_TAKE_BYTES (a memcpy at 10+ GB/s next to a device access).
   *
   * Never inline: a direct access never comes from the page cache, the calling thread sleeps
   * until the device answers (measured here with readSync, 4 KiB at random offsets: 45 us from
   * an ext4 file on virtio, 24 us from a loop device over a cached file, against 3 us for a
   * buffered page-cache hit). That is under the inline slow threshold (INLINE_SLOW_BASE_NS), so
   * the back-off would not notice, and the event loop would wait for each access in turn.
   */
  private directTransfer(write: boolean, ref: OpenFd, buf: Uint8Array, offsetBytes: number): Promise<void> {
    const align = this.logicalBlockBytes!;
    if (pageAlignedMemories.has(buf.buffer) && buf.byteOffset % align === 0) {
      fileIoStats.directOps++;
      return this.pooled(write, ref, buf, offsetBytes);
    }
    fileIoStats.directBounced++;
    ref.inflight++;
    return this.bounced(write, ref.fd, buf, offsetBytes).finally(() => this.done(ref));
  }

  private async bounced(write: boolean, fd: number, buf: Uint8Array, offsetBytes: number): Promise<void> {
    const piece = Math.min(buf.length, MAX_TAKE_BYTES);
    const bounce = await directPool.take(piece);
    try {
      for (let at = 0; at < buf.length; at += piece) {
        const n = Math.min(piece, buf.length - at);
        const b = bounce.subarray(0, n);
        if (write) b.set(buf.subarray(at, at + n));
        await new Promise<void>((resolve, reject) => this.loop(write, fd, b, offsetBytes + at, (err) => (err ? reject(err) : resolve())));
        if (!write) buf.set(b, at);
      }
    } finally {
      directPool.give(bounce);
    }
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

  /**
   * fdatasync, on a direct device too: O_DIRECT bypasses the page cache, not the device's
   * volatile write cache, which only a flush (REQ_PREFLUSH, what fdatasync sends) empties.
   */
  flush(): Promise<void> {
    if (this.readOnly) return Promise.resolve();
    let ref: OpenFd;
    try {
      ref = this.handle();
    } catch (e) {
      return Promise.reject(e);
    }
    ref.inflight++;
    return new Promise<void>((resolve, reject) => {
      fdatasync(ref.fd, (err) => {
        this.done(ref);
        if (err) reject(errnoToCode(err, this.name));
        else resolve();
      });
    });
  }

  /**
   * The fd for the sync helper threads. A direct device gives its O_DIRECT fd: the helpers'
   * buffers sit in WebAssembly memory at 2 KiB into a page and their offsets and lengths are
   * whole sectors (raid/offload/bulk-worker.ts), which is all a device of 512-byte blocks asks.
   */
  directFd(): DirectFd | null {
    if (this.closed || this.cur === null) return null;
    const ref = this.cur;
    ref.inflight++;
    let released = false;
    return {
      fd: ref.fd,
      readOnly: this.readOnly,
      release: () => {
        if (released) return;
        released = true;
        this.done(ref);
      },
    };
  }

  /** Close once the operations already started have finished (new ones get ENODEV). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.reopening;
    const ref = this.cur;
    this.cur = null;
    const claim = this.claimFd;
    this.claimFd = null;
    if (ref) {
      await this.idle(ref);
      try {
        await closeFdRaw(ref.fd);
      } catch (e) {
        throw errnoToCode(e as NodeJS.ErrnoException, this.name);
      } finally {
        if (claim !== null) await closeFdRaw(claim).catch(() => {});
      }
    }
  }
}

/**
 * Open a file or block device as a member. With `direct` the fd is O_DIRECT (see OpenOptions);
 * an opened device switches with FileBlockDevice.reopenDirect().
 */
export function openDevice(path: string, opts: OpenOptions = {}): Promise<FileBlockDevice> {
  return FileBlockDevice.open(path, opts);
}
