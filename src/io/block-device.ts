/**
 * BlockDevice: the only way the core touches storage. Offsets and lengths are in bytes and
 * must be multiples of 512 (the md sector) unless a device says otherwise; every read and
 * write is complete or throws (short transfers are retried or turned into EIO).
 */
export interface BlockDevice {
  /** Human-readable identity: the path for files and block devices. */
  readonly name: string;
  /** Size in bytes (a multiple of 512 for block devices; files are truncated down to 512). */
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /**
   * True when no host page cache sits between this device and the disk (O_DIRECT,
   * FileBlockDevice's `direct`): what the members of a clustered array need when several hosts
   * share them. Absent for devices where the question does not arise (memory devices).
   */
  readonly direct?: boolean;
  read(buf: Uint8Array, offsetBytes: number): Promise<void>;
  write(buf: Uint8Array, offsetBytes: number): Promise<void>;
  /** Durability barrier: everything written before returns survives a crash (fdatasync). */
  flush(): Promise<void>;
  close(): Promise<void>;
  /**
   * The file descriptor for the sync helper threads (raid/offload/bulk.ts), held open until release()
   * (close() waits for it); absent or null when the device has none to give (memory devices,
   * fault injection, a closed device).
   */
  directFd?(): DirectFd | null;
  /**
   * Read the device's size again (md reads bdev_nr_sectors afresh when a member's size is
   * changed: super_1_rdev_size_change), for a member file or device that grew while open;
   * sizeBytes follows. Absent where the size cannot change (memory devices).
   */
  refreshSize?(): Promise<number>;
}

export interface DirectFd {
  readonly fd: number;
  readonly readOnly: boolean;
  release(): void;
}

export const SECTOR_BYTES = 512;
