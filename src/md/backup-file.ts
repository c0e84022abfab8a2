/**
 * mdadm's reshape backup file (Grow.c: struct mdp_backup_super, save_stripes / Grow_restart):
 * where a reshape keeps the data offset, the region being moved ("critical section") has
 * new-geometry rows on top of its own old-geometry rows, so a crash in the middle of its
 * rewrite would lose data. Its array contents are saved here first; a restart finds the
 * backup superblock, and when the saved region is not yet recorded as reshaped it writes
 * the saved data in the new geometry and moves reshape_position past it (mdadm's
 * "restoring critical section").
 *
 * Layout, as mdadm writes a backup *file* (reshape_open_backup_file: destoffset 4096): the
 * backup superblock (512 bytes) at offset 0, the saved data from byte 4096 (devstart = 8
 * sectors), and a second copy of the superblock right after the saved data. mdadm creates the
 * file with O_EXCL, (blocks + 8) sectors of zeros. tsmd writes "md_backup_data-1" (one
 * section) and reads -1 and -2 (two sections) alike.
 */
import { TsmdError } from '../errors.js';
import type { BlockDevice } from '../io/block-device.js';

export const BACKUP_SB_BYTES = 512;
/** where the saved data starts in a backup file (mdadm's destoffset for a file) */
export const BACKUP_DATA_OFFSET_BYTES = 4096;

/** One saved region: array sectors [arrayStart, arrayStart + sectors), data at devStart (sectors). */
export interface BackupSection {
  devStartSectors: number;
  arrayStart: number;
  sectors: number;
}

export interface BackupSuper {
  magic: 'md_backup_data-1' | 'md_backup_data-2';
  setUuid: Uint8Array;
  mtimeSeconds: number;
  sections: BackupSection[];
}

/**
 * mdadm's bsb_csum: it adds buf[0] (not buf[i]) on every round, so the value depends on the
 * length and the first byte only; reproduced as it is (a signed char, 32-bit wrap-around).
 */
export function bsbCsum(first: number, len: number): number {
  const b0 = first >= 128 ? first - 256 : first;
  let csum = 0;
  for (let i = 0; i < len; i++) csum = ((csum << 3) + b0) | 0;
  return csum >>> 0;
}

const CSUM_AT = 64;
const CSUM2_AT = 96;

export function encodeBackupSuper(b: BackupSuper): Uint8Array {
  const buf = new Uint8Array(BACKUP_SB_BYTES);
  const v = new DataView(buf.buffer);
  buf.set(new TextEncoder().encode(b.magic), 0);
  buf.set(b.setUuid.subarray(0, 16), 16);
  v.setBigUint64(32, BigInt(b.mtimeSeconds), true);
  const [s1, s2] = b.sections;
  v.setBigUint64(40, BigInt(s1?.devStartSectors ?? 8), true);
  v.setBigUint64(48, BigInt(s1?.arrayStart ?? 0), true);
  v.setBigUint64(56, BigInt(s1?.sectors ?? 0), true);
  v.setUint32(CSUM_AT, bsbCsum(buf[0]!, CSUM_AT), true);
  if (b.magic === 'md_backup_data-2') {
    // devstart2 is an offset into the data of the second section (mdadm)
    v.setBigUint64(72, BigInt(s2 ? s2.devStartSectors - (s1?.devStartSectors ?? 8) : 0), true);
    v.setBigUint64(80, BigInt(s2?.arrayStart ?? 0), true);
    v.setBigUint64(88, BigInt(s2?.sectors ?? 0), true);
    v.setUint32(CSUM2_AT, bsbCsum(buf[0]!, CSUM2_AT), true);
  }
  return buf;
}

/** The backup superblock in buf, or null with why not (mdadm's checks in Grow_restart). */
export function decodeBackupSuper(buf: Uint8Array): BackupSuper | string {
  const magic = Buffer.from(buf.subarray(0, 16)).toString('latin1');
  if (magic !== 'md_backup_data-1' && magic !== 'md_backup_data-2') return 'No backup metadata';
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (v.getUint32(CSUM_AT, true) !== bsbCsum(buf[0]!, CSUM_AT)) return 'Bad backup-metadata checksum';
  if (magic === 'md_backup_data-2' && v.getUint32(CSUM2_AT, true) !== bsbCsum(buf[0]!, CSUM2_AT)) return 'Bad backup-metadata checksum2';
  const dev = Number(v.getBigUint64(40, true));
  const sections: BackupSection[] = [];
  const len1 = Number(v.getBigUint64(56, true));
  if (len1 > 0) sections.push({ devStartSectors: dev, arrayStart: Number(v.getBigUint64(48, true)), sectors: len1 });
  if (magic === 'md_backup_data-2') {
    const len2 = Number(v.getBigUint64(88, true));
    if (len2 > 0) sections.push({ devStartSectors: dev + Number(v.getBigUint64(72, true)), arrayStart: Number(v.getBigUint64(80, true)), sectors: len2 });
  }
  return { magic, setUuid: buf.slice(16, 32), mtimeSeconds: Number(v.getBigUint64(32, true)), sections };
}

/** mdadm's compute_backup_blocks: the LCM of the old and new stripes' data sectors. */
export function backupBlocks(oldChunk: number, newChunk: number, oldData: number, newData: number): number {
  const a0 = oldChunk * oldData;
  const b0 = newChunk * newData;
  let a = a0;
  let b = b0;
  while (b !== 0) [a, b] = [b, a % b];
  return (a0 * b0) / a;
}

/**
 * Where on a device the backup lives when it is not a file of its own: mdadm's backup on a
 * spare joining a grow (Grow.c reshape_prepare_fdlist: the data at data_offset +
 * component_size - blocks - 8, its superblock 4 KiB before, the second copy right after the
 * data, at data_offset + component_size - 8 where Grow_restart looks for it). The device is the
 * array's member: closing the backup leaves it open.
 */
export interface BackupArea {
  startBytes: number;
  bytes: number;
}

/** The area of a spare's component where mdadm keeps a grow's critical section (Grow.c). */
export function spareBackupArea(dataOffsetSectors: number, componentSectors: number, blocks: number): BackupArea {
  const end = (dataOffsetSectors + componentSectors) * 512;
  const bytes = (blocks + 16) * 512;
  return { startBytes: end - bytes, bytes };
}

/** A backup file (or a spare's backup area) the reshape engine saves critical sections to. */
export class BackupFile {
  constructor(
    readonly dev: BlockDevice,
    private readonly setUuid: Uint8Array,
    private readonly nowSeconds: () => number,
    private readonly area: BackupArea | null = null,
  ) {}

  get name(): string {
    return this.area ? `${this.dev.name} (sector ${this.area.startBytes / 512})` : this.dev.name;
  }

  private get baseBytes(): number {
    return this.area?.startBytes ?? 0;
  }

  /**
   * Sectors of data a section may have: the file as mdadm makes it holds `blocks` sectors
   * after the first 4 KiB, and mdadm writes the second superblock copy just past the data (it
   * grows the file by 512 bytes); a device cannot grow, so that copy is kept inside.
   */
  get capacitySectors(): number {
    return Math.max(0, Math.floor(((this.area?.bytes ?? this.dev.sizeBytes) - BACKUP_DATA_OFFSET_BYTES - BACKUP_SB_BYTES) / 512));
  }

  /** Make a new backup file's contents (zeros, as mdadm's reshape_open_backup_file). */
  async initialise(blocks: number): Promise<void> {
    if (this.area) {
      // a spare's area: only a stale backup superblock is cleared (the rest is the spare's)
      await this.dev.write(new Uint8Array(BACKUP_SB_BYTES), this.baseBytes);
      await this.dev.flush();
      return;
    }
    const bytes = Math.min(this.dev.sizeBytes, (blocks + 8) * 512 + BACKUP_SB_BYTES);
    const zero = new Uint8Array(Math.min(1 << 20, bytes));
    for (let at = 0; at < bytes; at += zero.length) await this.dev.write(zero.subarray(0, Math.min(zero.length, bytes - at)), at);
    await this.dev.flush();
  }

  /**
   * Save [arrayStart, arrayStart + data.length/512) (mdadm's save_stripes + the superblock
   * written after the data): the data is durable before the superblock that vouches for it,
   * and the superblock before the caller overwrites anything in place.
   */
  async save(arrayStart: number, data: Uint8Array): Promise<void> {
    if (data.length > this.capacitySectors * 512) throw new TsmdError('ENOSPC', `${this.name}: ${data.length / 512} sectors do not fit the backup (${this.capacitySectors})`);
    const base = this.baseBytes;
    await this.dev.write(data, base + BACKUP_DATA_OFFSET_BYTES);
    await this.dev.flush();
    // devstart is where the data is on the device (mdadm: destoffset / 512)
    const sb = encodeBackupSuper({
      magic: 'md_backup_data-1',
      setUuid: this.setUuid,
      mtimeSeconds: this.nowSeconds(),
      sections: [{ devStartSectors: (base + BACKUP_DATA_OFFSET_BYTES) / 512, arrayStart, sectors: data.length / 512 }],
    });
    await this.dev.write(sb, base);
    await this.dev.write(sb, base + BACKUP_DATA_OFFSET_BYTES + data.length);
    await this.dev.flush();
  }

  /** The backup superblock, or null when the file holds none (all zero: nothing saved yet). */
  async load(): Promise<BackupSuper | null> {
    const buf = new Uint8Array(BACKUP_SB_BYTES);
    // a spare's area: the copy after the data, at data_offset + component_size - 8, which is
    // where Grow_restart reads it (the data's length is in it, not known before)
    const at = this.area ? this.area.startBytes + this.area.bytes - BACKUP_DATA_OFFSET_BYTES : 0;
    if (this.dev.sizeBytes < at + BACKUP_SB_BYTES) return null;
    await this.dev.read(buf, at);
    const b = decodeBackupSuper(buf);
    if (typeof b === 'string') return null;
    if (Buffer.compare(Buffer.from(b.setUuid), Buffer.from(this.setUuid)) !== 0)
      throw new TsmdError('EINVAL', `Wrong uuid on backup-metadata on ${this.name}`);
    return b;
  }

  async readSection(s: BackupSection): Promise<Uint8Array> {
    const buf = new Uint8Array(s.sectors * 512);
    await this.dev.read(buf, s.devStartSectors * 512);
    return buf;
  }

  close(): Promise<void> {
    if (this.area) return Promise.resolve(); // the member stays the array's
    return this.dev.close();
  }
}
