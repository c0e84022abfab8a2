/**
 * BlockDevice over a regular file or a block device node (positional I/O, fdatasync).
 */
import { constants, type FileHandle, open, readFile, stat } from 'node:fs/promises';
import { TsmdError } from '../errors.js';
import type { BlockDevice } from './block-device.js';

export interface OpenOptions {
  readOnly?: boolean;
  /** O_EXCL on a block device: refuse when mounted or held by another opener (like mdadm). */
  exclusive?: boolean;
}

function errnoToCode(e: NodeJS.ErrnoException): TsmdError {
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

export class FileBlockDevice implements BlockDevice {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly isBlockDevice: boolean;
  readonly rdev: number;
  /** st_dev: the device of the filesystem holding a regular file */
  readonly stDev: number;
  private fh: FileHandle | null;

  private constructor(
    name: string,
    fh: FileHandle,
    sizeBytes: number,
    readOnly: boolean,
    isBlockDevice: boolean,
    rdev: number,
    stDev: number,
  ) {
    this.name = name;
    this.fh = fh;
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
    let fh: FileHandle;
    try {
      fh = await open(path, flags);
    } catch (e) {
      throw errnoToCode(e as NodeJS.ErrnoException);
    }
    let size = isBlk ? await blockDeviceBytes(st.rdev) : Number(st.size);
    size -= size % 512;
    return new FileBlockDevice(path, fh, size, !!opts.readOnly, isBlk, st.rdev, st.dev);
  }

  private handle(): FileHandle {
    if (!this.fh) throw new TsmdError('ENODEV', `${this.name}: device is closed`);
    return this.fh;
  }

  private check(buf: Uint8Array, offsetBytes: number): void {
    if (offsetBytes < 0 || offsetBytes + buf.length > this.sizeBytes) {
      throw new TsmdError(
        'EINVAL',
        `${this.name}: I/O of ${buf.length} bytes at ${offsetBytes} is beyond the device end (${this.sizeBytes})`,
      );
    }
  }

  async read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.check(buf, offsetBytes);
    const fh = this.handle();
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        ({ bytesRead: n } = await fh.read(buf, done, buf.length - done, offsetBytes + done));
      } catch (e) {
        throw errnoToCode(e as NodeJS.ErrnoException);
      }
      if (n === 0) {
        // a file shorter than it was when opened: the hole reads as zeros, but a vanished
        // device is an error
        throw new TsmdError(
          'EIO',
          `${this.name}: short read at ${offsetBytes + done} (device shrank?)`,
        );
      }
      done += n;
    }
  }

  async write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    if (this.readOnly) throw new TsmdError('EROFS', `${this.name}: opened read-only`);
    this.check(buf, offsetBytes);
    const fh = this.handle();
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        ({ bytesWritten: n } = await fh.write(buf, done, buf.length - done, offsetBytes + done));
      } catch (e) {
        throw errnoToCode(e as NodeJS.ErrnoException);
      }
      if (n === 0) throw new TsmdError('EIO', `${this.name}: short write at ${offsetBytes + done}`);
      done += n;
    }
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    try {
      await this.handle().datasync();
    } catch (e) {
      throw errnoToCode(e as NodeJS.ErrnoException);
    }
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    if (fh) await fh.close();
  }
}

export function openDevice(path: string, opts: OpenOptions = {}): Promise<FileBlockDevice> {
  return FileBlockDevice.open(path, opts);
}
