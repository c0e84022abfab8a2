/**
 * md v1.x superblock (`struct mdp_superblock_1`): pure, byte-exact encode/decode.
 * Layout, checksum and acceptance rules: shared/spec/md-formats.md §1.
 *
 * u64 fields are bigints so that a decode → encode round trip is exact (MaxSector included);
 * the md layer converts sector counts to numbers where they are known to be small.
 */
import { TsmdError } from '../errors.js';

export const MD_SB_MAGIC = 0xa92b4efc;
export const MAX_SECTOR = 0xffff_ffff_ffff_ffffn;
export const SB_FIXED_BYTES = 256;
/** Kernel limit: (4096 − 256) / 2 role entries fit in one 4 KiB superblock page. */
export const MAX_DEV_LIMIT = 1920;
/** The kernel reads (and mdadm writes) one 4 KiB block at the superblock location. */
export const SB_READ_BYTES = 4096;

export const Feature = {
  BITMAP_OFFSET: 0x1,
  RECOVERY_OFFSET: 0x2,
  RESHAPE_ACTIVE: 0x4,
  BAD_BLOCKS: 0x8,
  REPLACEMENT: 0x10,
  RESHAPE_BACKWARDS: 0x20,
  NEW_OFFSET: 0x40,
  RECOVERY_BITMAP: 0x80,
  CLUSTERED: 0x100,
  JOURNAL: 0x200,
  PPL: 0x400,
  MULTIPLE_PPLS: 0x800,
  RAID0_LAYOUT: 0x1000,
} as const;
export const FEATURE_ALL = 0x1fff;

/** dev_roles[] special values. */
export const Role = {
  SPARE: 0xffff,
  FAULTY: 0xfffe,
  JOURNAL: 0xfffd,
  /** roles below this are active slots */
  MAX_ACTIVE: 0xff00,
} as const;

export const DevFlag = { WRITE_MOSTLY: 1, FAIL_FAST: 2 } as const;

export interface Superblock1 {
  majorVersion: number;
  featureMap: number;
  pad0: number;
  setUuid: Uint8Array;
  /** set_name exactly as stored (32 bytes, NUL padded). */
  setName: Uint8Array;
  ctime: bigint;
  level: number;
  layout: number;
  size: bigint;
  chunkSize: number;
  raidDisks: number;
  /** s32 at 96; the PPL union (s16 offset + u16 size) shares these bytes, see pplOffset(). */
  bitmapOffset: number;
  newLevel: number;
  reshapePosition: bigint;
  deltaDisks: number;
  newLayout: number;
  newChunk: number;
  newOffset: number;
  dataOffset: bigint;
  dataSize: bigint;
  superOffset: bigint;
  /** recovery_offset, or journal_tail for a journal device. */
  recoveryOffset: bigint;
  devNumber: number;
  cntCorrectedRead: number;
  deviceUuid: Uint8Array;
  devFlags: number;
  bblogShift: number;
  bblogSize: number;
  bblogOffset: number;
  utime: bigint;
  events: bigint;
  resyncOffset: bigint;
  sbCsum: number;
  maxDev: number;
  pad3: Uint8Array;
  /** dev_roles[0 .. maxDev-1] */
  devRoles: number[];
}

/** Bytes covered by the checksum and written by the kernel's rounding rule. */
export function sbBytes(maxDev: number): number {
  return SB_FIXED_BYTES + 2 * maxDev;
}

/**
 * The superblock checksum: LE u32 sum over 256 + 2·max_dev bytes with sb_csum zeroed, a
 * trailing LE u16 when max_dev is odd, folded once (the carry of the fold is lost).
 */
export function computeSbCsum(buf: Uint8Array, maxDev: number): number {
  const n = sbBytes(maxDev);
  if (buf.length < n)
    throw new TsmdError('EBADSB', `superblock buffer too short for max_dev ${maxDev}`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let acc = 0n;
  let lo = 0; // accumulate in two numbers to avoid bigint per word
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    if (i === 216) continue; // sb_csum treated as zero
    lo += dv.getUint32(i, true);
    if (lo > 0x1f_ffff_ffff_ffff - 0x1_0000_0000) {
      acc += BigInt(lo);
      lo = 0;
    }
  }
  if (i < n) lo += dv.getUint16(i, true);
  acc += BigInt(lo);
  const folded = (acc & 0xffff_ffffn) + (acc >> 32n);
  return Number(folded & 0xffff_ffffn);
}

function latin1(bytes: Uint8Array): string {
  let end = bytes.indexOf(0);
  if (end < 0) end = bytes.length;
  let s = '';
  for (let i = 0; i < end; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}

/** set_name as text (up to the first NUL). */
export function setNameText(sb: Pick<Superblock1, 'setName'>): string {
  return latin1(sb.setName);
}

export function nameBytes(text: string, len: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < text.length && i < len; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff)
      throw new TsmdError('EINVAL', `name ${JSON.stringify(text)} has characters outside latin-1`);
    out[i] = c;
  }
  return out;
}

/** Does the buffer start with the v1 magic? (cheap probe before a full decode) */
export function hasSbMagic(buf: Uint8Array): boolean {
  if (buf.length < 8) return false;
  const dv = new DataView(buf.buffer, buf.byteOffset, 8);
  return dv.getUint32(0, true) === MD_SB_MAGIC;
}

/**
 * Decode a superblock from the 4 KiB read at its location. Throws EBADSB when the bytes are not
 * an md v1 superblock at all (magic, major version, max_dev); everything else (checksum,
 * offsets, padding) is left to validateSuperblock so that --examine can still print it.
 */
export function decodeSuperblock(buf: Uint8Array): Superblock1 {
  if (buf.length < SB_FIXED_BYTES)
    throw new TsmdError('EBADSB', 'superblock buffer shorter than 256 bytes');
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = dv.getUint32(0, true);
  if (magic !== MD_SB_MAGIC) {
    throw new TsmdError(
      'EBADSB',
      `no md superblock (magic 0x${magic.toString(16).padStart(8, '0')})`,
    );
  }
  const majorVersion = dv.getUint32(4, true);
  if (majorVersion !== 1)
    throw new TsmdError('EBADSB', `unsupported md superblock major version ${majorVersion}`);
  const maxDev = dv.getUint32(220, true);
  if (maxDev > MAX_DEV_LIMIT)
    throw new TsmdError('EBADSB', `superblock max_dev ${maxDev} exceeds ${MAX_DEV_LIMIT}`);
  if (buf.length < sbBytes(maxDev))
    throw new TsmdError('EBADSB', 'superblock buffer shorter than its role table');
  const devRoles: number[] = new Array(maxDev);
  for (let i = 0; i < maxDev; i++) devRoles[i] = dv.getUint16(256 + 2 * i, true);
  return {
    majorVersion,
    featureMap: dv.getUint32(8, true),
    pad0: dv.getUint32(12, true),
    setUuid: buf.slice(16, 32),
    setName: buf.slice(32, 64),
    ctime: dv.getBigUint64(64, true),
    level: dv.getInt32(72, true),
    layout: dv.getUint32(76, true),
    size: dv.getBigUint64(80, true),
    chunkSize: dv.getUint32(88, true),
    raidDisks: dv.getUint32(92, true),
    bitmapOffset: dv.getInt32(96, true),
    newLevel: dv.getInt32(100, true),
    reshapePosition: dv.getBigUint64(104, true),
    deltaDisks: dv.getInt32(112, true),
    newLayout: dv.getUint32(116, true),
    newChunk: dv.getUint32(120, true),
    newOffset: dv.getInt32(124, true),
    dataOffset: dv.getBigUint64(128, true),
    dataSize: dv.getBigUint64(136, true),
    superOffset: dv.getBigUint64(144, true),
    recoveryOffset: dv.getBigUint64(152, true),
    devNumber: dv.getUint32(160, true),
    cntCorrectedRead: dv.getUint32(164, true),
    deviceUuid: buf.slice(168, 184),
    devFlags: dv.getUint8(184),
    bblogShift: dv.getUint8(185),
    bblogSize: dv.getUint16(186, true),
    bblogOffset: dv.getInt32(188, true),
    utime: dv.getBigUint64(192, true),
    events: dv.getBigUint64(200, true),
    resyncOffset: dv.getBigUint64(208, true),
    sbCsum: dv.getUint32(216, true),
    maxDev,
    pad3: buf.slice(224, 256),
    devRoles,
  };
}

/**
 * Encode to a 4096-byte block as the kernel writes it: the superblock and its role table, the
 * checksum recomputed, the rest of the block zero. `sb.sbCsum` is updated in place.
 */
export function encodeSuperblock(sb: Superblock1): Uint8Array {
  if (sb.maxDev > MAX_DEV_LIMIT || sb.devRoles.length !== sb.maxDev) {
    throw new TsmdError(
      'EINVAL',
      `superblock role table (${sb.devRoles.length}) does not match max_dev ${sb.maxDev}`,
    );
  }
  if (sb.setUuid.length !== 16 || sb.deviceUuid.length !== 16 || sb.setName.length !== 32) {
    throw new TsmdError('EINVAL', 'superblock uuid/name fields have the wrong length');
  }
  const buf = new Uint8Array(SB_READ_BYTES);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, MD_SB_MAGIC, true);
  dv.setUint32(4, sb.majorVersion, true);
  dv.setUint32(8, sb.featureMap >>> 0, true);
  dv.setUint32(12, sb.pad0 >>> 0, true);
  buf.set(sb.setUuid, 16);
  buf.set(sb.setName, 32);
  dv.setBigUint64(64, sb.ctime, true);
  dv.setInt32(72, sb.level, true);
  dv.setUint32(76, sb.layout >>> 0, true);
  dv.setBigUint64(80, sb.size, true);
  dv.setUint32(88, sb.chunkSize >>> 0, true);
  dv.setUint32(92, sb.raidDisks >>> 0, true);
  dv.setInt32(96, sb.bitmapOffset | 0, true);
  dv.setInt32(100, sb.newLevel | 0, true);
  dv.setBigUint64(104, sb.reshapePosition, true);
  dv.setInt32(112, sb.deltaDisks | 0, true);
  dv.setUint32(116, sb.newLayout >>> 0, true);
  dv.setUint32(120, sb.newChunk >>> 0, true);
  dv.setInt32(124, sb.newOffset | 0, true);
  dv.setBigUint64(128, sb.dataOffset, true);
  dv.setBigUint64(136, sb.dataSize, true);
  dv.setBigUint64(144, sb.superOffset, true);
  dv.setBigUint64(152, sb.recoveryOffset, true);
  dv.setUint32(160, sb.devNumber >>> 0, true);
  dv.setUint32(164, sb.cntCorrectedRead >>> 0, true);
  buf.set(sb.deviceUuid, 168);
  dv.setUint8(184, sb.devFlags);
  dv.setUint8(185, sb.bblogShift);
  dv.setUint16(186, sb.bblogSize, true);
  dv.setInt32(188, sb.bblogOffset | 0, true);
  dv.setBigUint64(192, sb.utime, true);
  dv.setBigUint64(200, sb.events, true);
  dv.setBigUint64(208, sb.resyncOffset, true);
  dv.setUint32(220, sb.maxDev, true);
  buf.set(sb.pad3.subarray(0, 32), 224);
  for (let i = 0; i < sb.maxDev; i++) dv.setUint16(256 + 2 * i, sb.devRoles[i]!, true);
  sb.sbCsum = computeSbCsum(buf, sb.maxDev);
  dv.setUint32(216, sb.sbCsum, true);
  return buf;
}

/** The PPL view of the bitmap_offset union. */
export function pplOffset(sb: Superblock1): { offset: number; size: number } {
  const b = new DataView(new ArrayBuffer(4));
  b.setInt32(0, sb.bitmapOffset, true);
  return { offset: b.getInt16(0, true), size: b.getUint16(2, true) };
}

/** Minor version (0, 1, 2) from where the superblock sits, as mdadm -E decides it. */
export function minorVersionOf(sb: Pick<Superblock1, 'superOffset'>): 0 | 1 | 2 {
  if (sb.superOffset <= 4n) return 1;
  if (sb.superOffset <= 8n) return 2;
  return 0;
}

/** Where a v1.minor superblock lives on a device of devSectors sectors. */
export function sbLocation(minor: 0 | 1 | 2, devSectors: number): number {
  if (minor === 1) return 0;
  if (minor === 2) return 8;
  // (dev − 16) & ~7, written without 32-bit bit operators so that large devices work
  return Math.floor((devSectors - 16) / 8) * 8;
}

/** 40-bit seconds + 24-bit microseconds time fields. */
export function sbTimeSeconds(t: bigint): number {
  return Number(t & 0xff_ffff_ffffn);
}
export function sbTimeFromMs(ms: number): bigint {
  const sec = BigInt(Math.floor(ms / 1000));
  return sec & 0xff_ffff_ffffn;
}

export function uuidText(u: Uint8Array, sep = ':'): string {
  let s = '';
  for (let i = 0; i < 16; i++) {
    if (i > 0 && i % 4 === 0) s += sep;
    s += u[i]!.toString(16).padStart(2, '0');
  }
  return s;
}

/** Parse "0123abcd:..." (or with '-', '.', ' ' separators, or none) into 16 bytes. */
export function parseUuid(text: string): Uint8Array {
  const hex = text.replace(/[:\-. ]/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) {
    throw new TsmdError(
      'EINVAL',
      `invalid UUID ${JSON.stringify(text)}: want 32 hex digits, e.g. 01234567:89abcdef:fedcba98:76543210`,
    );
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function isActiveRole(role: number): boolean {
  return role < Role.MAX_ACTIVE;
}

/** This device's role (the role table entry at its dev_number; beyond max_dev = spare). */
export function deviceRole(sb: Superblock1): number {
  return sb.devNumber < sb.maxDev ? sb.devRoles[sb.devNumber]! : Role.SPARE;
}

export interface ValidationContext {
  /** The sector the superblock was read from. */
  sbStartSector: number;
  /** Size of the member device in sectors. */
  devSectors: number;
}

/**
 * The kernel's acceptance rules (super_1_load, §1.9). Returns the list of reasons the
 * superblock would be refused; empty = acceptable.
 */
export function validateSuperblock(
  sb: Superblock1,
  raw: Uint8Array,
  ctx: ValidationContext,
): string[] {
  const problems: string[] = [];
  const sbStart = BigInt(ctx.sbStartSector);
  if (sb.superOffset !== sbStart) {
    problems.push(
      `super_offset ${sb.superOffset} does not match the superblock location (sector ${sbStart})`,
    );
  }
  if ((sb.featureMap & ~FEATURE_ALL) !== 0) {
    problems.push(
      `unknown feature bits 0x${(sb.featureMap & ~FEATURE_ALL).toString(16)} (made by a newer md?)`,
    );
  }
  const want = computeSbCsum(raw, sb.maxDev);
  if (want !== sb.sbCsum) {
    problems.push(
      `invalid superblock checksum 0x${sb.sbCsum.toString(16).padStart(8, '0')}, expected 0x${want.toString(16).padStart(8, '0')}`,
    );
  }
  if (sb.dataSize < 10n) problems.push(`data_size ${sb.dataSize} is below 10 sectors`);
  if (sb.pad0 !== 0) problems.push('pad0 is not zero (might be a new feature)');
  if (sb.pad3.some((b) => b !== 0)) problems.push('pad3 is not zero (might be a new feature)');
  const sbSectors = BigInt(Math.ceil(sbBytes(sb.maxDev) / 512));
  const dev = BigInt(ctx.devSectors);
  if (sb.superOffset <= 8n) {
    if (sb.dataOffset < sbStart + sbSectors)
      problems.push(`data_offset ${sb.dataOffset} overlaps the superblock`);
    if (
      (sb.featureMap & Feature.RESHAPE_ACTIVE) !== 0 &&
      (sb.featureMap & Feature.NEW_OFFSET) !== 0 &&
      sb.dataOffset + BigInt(sb.newOffset) < sbStart + sbSectors
    ) {
      problems.push('data_offset + new_offset overlaps the superblock');
    }
    if (dev - sb.dataOffset < sb.dataSize) {
      problems.push(
        `device too small: data_offset ${sb.dataOffset} + data_size ${sb.dataSize} > ${dev} sectors`,
      );
    }
  } else if (sbStart < sb.dataSize) {
    problems.push(
      `device too small: data_size ${sb.dataSize} runs into the superblock at ${sbStart}`,
    );
  }
  if ((sb.featureMap & Feature.BAD_BLOCKS) !== 0 && (sb.bblogOffset === 0 || sb.bblogSize > 8)) {
    problems.push('bad-block log flagged but its location is invalid');
  }
  if ((sb.featureMap & Feature.RAID0_LAYOUT) !== 0 && sb.level !== 0) {
    problems.push('RAID0_LAYOUT feature on a level that is not raid0');
  }
  const ppl = sb.featureMap & (Feature.PPL | Feature.MULTIPLE_PPLS);
  if (ppl !== 0) {
    if (ppl === (Feature.PPL | Feature.MULTIPLE_PPLS))
      problems.push('both PPL and MULTIPLE_PPLS set');
    if ((sb.featureMap & (Feature.BITMAP_OFFSET | Feature.JOURNAL)) !== 0) {
      problems.push('PPL together with a bitmap or journal');
    }
  }
  return problems;
}
