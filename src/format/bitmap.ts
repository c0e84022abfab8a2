/**
 * md write-intent bitmap (`bitmap_super_t`, versions 4 and clustered 5) and its bit array:
 * pure encode/decode. shared/spec/md-formats.md §3.
 */
import { TsmdError } from '../errors.js';

export const BITMAP_MAGIC = 0x6d746962;
export const BITMAP_SB_BYTES = 256;
export const BITMAP_MAJOR_LO = 3;
export const BITMAP_MAJOR_HI = 4;
export const BITMAP_MAJOR_CLUSTERED = 5;
export const BITMAP_MAX_WRITE_BEHIND = 16383;

export const BitmapState = { STALE: 0x2, WRITE_ERROR: 0x4, FIRST_USE: 0x8, CLEAN: 0x10 } as const;

export interface BitmapSuper {
  magic: number;
  version: number;
  uuid: Uint8Array;
  events: bigint;
  eventsCleared: bigint;
  /** sectors covered by the bitmap */
  syncSize: bigint;
  state: number;
  /** bytes per bit */
  chunkSize: number;
  daemonSleep: number;
  writeBehind: number;
  sectorsReserved: number;
  nodes: number;
  /** cluster_name, 64 bytes NUL padded, as stored */
  clusterName: Uint8Array;
  pad: Uint8Array;
}

/**
 * A new bitmap superblock as mdadm writes one (daemon_sleep 5 s, no write-behind, nothing
 * reserved): version 4, or 5 when clustered (`nodes` slots); events_cleared = events.
 */
export function newBitmapSuper(o: {
  uuid: Uint8Array;
  events?: bigint;
  syncSectors: number;
  chunkBytes: number;
  clustered?: boolean;
  nodes?: number;
  clusterName?: Uint8Array;
  /** the bitmap daemon's period (mdadm --delay; DEFAULT_BITMAP_DELAY 5 s) */
  daemonSleepSec?: number;
}): BitmapSuper {
  const nodes = o.nodes ?? 0;
  const events = o.events ?? 0n;
  return {
    magic: BITMAP_MAGIC,
    version: o.clustered ? BITMAP_MAJOR_CLUSTERED : BITMAP_MAJOR_HI,
    uuid: o.uuid.slice(),
    events,
    eventsCleared: events,
    syncSize: BigInt(o.syncSectors),
    state: 0,
    chunkSize: o.chunkBytes,
    daemonSleep: o.daemonSleepSec ?? 5,
    writeBehind: 0,
    sectorsReserved: 0,
    nodes,
    clusterName: o.clusterName ?? new Uint8Array(64),
    pad: new Uint8Array(120),
  };
}

export function decodeBitmapSuper(buf: Uint8Array): BitmapSuper {
  if (buf.length < BITMAP_SB_BYTES)
    throw new TsmdError('EBADSB', 'bitmap superblock buffer shorter than 256 bytes');
  const dv = new DataView(buf.buffer, buf.byteOffset, BITMAP_SB_BYTES);
  return {
    magic: dv.getUint32(0, true),
    version: dv.getUint32(4, true),
    uuid: buf.slice(8, 24),
    events: dv.getBigUint64(24, true),
    eventsCleared: dv.getBigUint64(32, true),
    syncSize: dv.getBigUint64(40, true),
    state: dv.getUint32(48, true),
    chunkSize: dv.getUint32(52, true),
    daemonSleep: dv.getUint32(56, true),
    writeBehind: dv.getUint32(60, true),
    sectorsReserved: dv.getUint32(64, true),
    nodes: dv.getUint32(68, true),
    clusterName: buf.slice(72, 136),
    pad: buf.slice(136, 256),
  };
}

export function encodeBitmapSuper(b: BitmapSuper): Uint8Array {
  if (b.uuid.length !== 16 || b.clusterName.length !== 64) {
    throw new TsmdError('EINVAL', 'bitmap superblock uuid/cluster name has the wrong length');
  }
  const buf = new Uint8Array(BITMAP_SB_BYTES);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, b.magic >>> 0, true);
  dv.setUint32(4, b.version >>> 0, true);
  buf.set(b.uuid, 8);
  dv.setBigUint64(24, b.events, true);
  dv.setBigUint64(32, b.eventsCleared, true);
  dv.setBigUint64(40, b.syncSize, true);
  dv.setUint32(48, b.state >>> 0, true);
  dv.setUint32(52, b.chunkSize >>> 0, true);
  dv.setUint32(56, b.daemonSleep >>> 0, true);
  dv.setUint32(60, b.writeBehind >>> 0, true);
  dv.setUint32(64, b.sectorsReserved >>> 0, true);
  dv.setUint32(68, b.nodes >>> 0, true);
  buf.set(b.clusterName, 72);
  buf.set(b.pad.subarray(0, 120), 136);
  return buf;
}

/** Number of bits (chunks) for a bitmap covering syncSizeSectors with chunkSizeBytes per bit. */
export function bitmapBits(syncSizeSectors: number, chunkSizeBytes: number): number {
  const chunkSectors = chunkSizeBytes / 512;
  return Math.ceil(syncSizeSectors / chunkSectors);
}

/** Bytes of one bitmap area (header + bits), rounded up to 4 KiB as kernel and mdadm do. */
export function bitmapAreaBytes(nbits: number): number {
  return Math.ceil((BITMAP_SB_BYTES + Math.ceil(nbits / 8)) / 4096) * 4096;
}

/**
 * The bits of a bitmap area with no chunk dirty, as mdadm writes them: bits 0..nbits-1 clear,
 * the padding bits after them (to the end of the area) set. `area` starts at the bitmap
 * superblock.
 */
export function fillCleanBits(area: Uint8Array, nbits: number): void {
  area.fill(0xff, BITMAP_SB_BYTES);
  for (let b = 0; b < nbits; b++) area[BITMAP_SB_BYTES + (b >>> 3)]! &= ~(1 << (b & 7));
}

/** Kernel acceptance rules for a bitmap superblock (§3.4). Empty list = acceptable. */
export function validateBitmapSuper(b: BitmapSuper, setUuid: Uint8Array): string[] {
  const p: string[] = [];
  if (b.magic !== BITMAP_MAGIC) p.push(`invalid bitmap magic 0x${b.magic.toString(16)}`);
  if (b.version < BITMAP_MAJOR_LO || b.version > BITMAP_MAJOR_CLUSTERED)
    p.push(`unsupported bitmap version ${b.version}`);
  if (b.chunkSize < 512 || (b.chunkSize & (b.chunkSize - 1)) !== 0)
    p.push(`bitmap chunk size ${b.chunkSize} is not a power of two >= 512`);
  if (b.daemonSleep < 1) p.push('bitmap daemon_sleep is 0');
  if (b.writeBehind > BITMAP_MAX_WRITE_BEHIND)
    p.push(`bitmap write_behind ${b.writeBehind} too large`);
  if (!bytesEqual(b.uuid, setUuid)) p.push('bitmap uuid differs from the array uuid');
  return p;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Bit i of the LE bit array (version 4/5: set_bit_le). */
export function testBit(bits: Uint8Array, i: number): boolean {
  return ((bits[i >>> 3]! >>> (i & 7)) & 1) === 1;
}
export function setBit(bits: Uint8Array, i: number): void {
  bits[i >>> 3]! |= 1 << (i & 7);
}
export function clearBit(bits: Uint8Array, i: number): void {
  bits[i >>> 3]! &= ~(1 << (i & 7));
}

/** Dirty bits among the first nbits (padding bits past nbits are ignored, as mdadm does). */
export function countDirty(bits: Uint8Array, nbits: number): number {
  let n = 0;
  const whole = nbits >>> 3;
  for (let i = 0; i < whole; i++) {
    let v = bits[i]!;
    while (v) {
      v &= v - 1;
      n++;
    }
  }
  for (let i = whole * 8; i < nbits; i++) if (testBit(bits, i)) n++;
  return n;
}

// ---- bad-block log (§1.8) ----

export interface BadBlock {
  /** start, in sectors */
  sector: number;
  /** length, in sectors */
  lengthSectors: number;
}

export function decodeBadBlocks(buf: Uint8Array, shift: number): BadBlock[] {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: BadBlock[] = [];
  for (let i = 0; i + 8 <= buf.length; i += 8) {
    const v = dv.getBigUint64(i, true);
    if (v === 0xffff_ffff_ffff_ffffn) break;
    const len = Number(v & 0x3ffn);
    if (len === 0) continue;
    out.push({ sector: Number(v >> 10n) << shift, lengthSectors: len << shift });
  }
  return out;
}

export function encodeBadBlocks(list: BadBlock[], shift: number, bytes: number): Uint8Array {
  const buf = new Uint8Array(bytes).fill(0xff);
  const dv = new DataView(buf.buffer);
  if (list.length * 8 > bytes) throw new TsmdError('ENOSPC', 'bad-block log is full');
  list.forEach((b, i) => {
    const len = b.lengthSectors >> shift;
    if (len < 1 || len > 1023)
      throw new TsmdError('EINVAL', `bad-block range length ${b.lengthSectors} out of range`);
    dv.setBigUint64(i * 8, (BigInt(b.sector >> shift) << 10n) | BigInt(len), true);
  });
  return buf;
}
