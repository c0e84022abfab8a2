/**
 * The v1.x superblock as mdadm 4.2 holds it in memory after load_super1(): the feature map with
 * BITMAP_OFFSET dropped when the bitmap superblock's magic or uuid does not match, the bitmap
 * superblock it read next to it, and what getinfo_super1() derives (unused space, disk state).
 * Shared by the --examine and --detail formatters.
 */
import {
  BITMAP_MAGIC,
  BITMAP_SB_BYTES,
  type BitmapSuper,
  bytesEqual,
} from '../../format/bitmap.js';
import {
  computeSbCsum,
  Feature,
  pplOffset,
  Role,
  type Superblock1,
  sbBytes,
} from '../../format/superblock.js';

const U64 = (x: bigint): bigint => BigInt.asUintN(64, x);
/** mdadm's MAX_DEVS for 1.x: (4096 − 256) / 2 */
const MAX_DEVS = 1920;

export interface LoadedSuper1 {
  sb: Superblock1;
  /** feature_map after mdadm's bitmap check */
  featureMap: number;
  /** the bitmap superblock mdadm keeps next to the superblock (null = never read: all zero) */
  bms: BitmapSuper | null;
  /** calc_sb_1_csum() of the in-memory copy (with the possibly modified feature map) */
  csumExpected: number;
}

export function bitmapMatches(sb: Superblock1, bitmap: BitmapSuper | null | undefined): boolean {
  return !!bitmap && bitmap.magic === BITMAP_MAGIC && bytesEqual(bitmap.uuid, sb.setUuid);
}

/**
 * load_super1(): when BITMAP_OFFSET is set, the bitmap superblock at sb_start + bitmap_offset
 * must carry the bitmap magic and the array uuid, else the bit is cleared in memory (and the
 * checksum mdadm then computes is over the modified copy). `bitmap` null/undefined with the
 * feature set means it could not be read: dropped as well.
 */
export function loadSuper1(
  sb: Superblock1,
  raw: Uint8Array,
  bitmap: BitmapSuper | null | undefined,
): LoadedSuper1 {
  if (raw.length < sbBytes(sb.maxDev)) {
    throw new RangeError(
      `superblock buffer of ${raw.length} bytes is shorter than 256 + 2*max_dev (${sbBytes(sb.maxDev)})`,
    );
  }
  let featureMap = sb.featureMap >>> 0;
  let bms: BitmapSuper | null = null;
  if (featureMap & Feature.BITMAP_OFFSET) {
    bms = bitmap ?? null;
    if (!bitmapMatches(sb, bitmap)) featureMap = (featureMap & ~Feature.BITMAP_OFFSET) >>> 0;
  }
  let buf = raw;
  if (featureMap !== sb.featureMap >>> 0) {
    buf = raw.slice();
    new DataView(buf.buffer, buf.byteOffset, buf.byteLength).setUint32(8, featureMap, true);
  }
  return { sb, featureMap, bms, csumExpected: computeSbCsum(buf, sb.maxDev) };
}

/** The bitmap nodes count as mdadm sees it (0 unless BITMAP_OFFSET survived the check). */
export function bitmapNodes(v: LoadedSuper1): number {
  if (!(v.featureMap & Feature.BITMAP_OFFSET) || !v.bms) return 0;
  return v.bms.nodes >>> 0;
}

/** The cluster name as `%-64s` prints it (bytes up to the first NUL, padded to 64). */
export function clusterNameField(b: BitmapSuper): string {
  const bytes = new Uint8Array(b.clusterName.length + b.pad.length);
  bytes.set(b.clusterName, 0);
  bytes.set(b.pad, b.clusterName.length);
  return cString(bytes).padEnd(64, ' ');
}

/** Bytes up to the first NUL as a latin-1 string. */
export function cString(bytes: Uint8Array, max = bytes.length): string {
  let s = '';
  for (let i = 0; i < bytes.length && i < max; i++) {
    const c = bytes[i]!;
    if (c === 0) break;
    s += String.fromCharCode(c);
  }
  return s;
}

/** `%.32s` of set_name. */
export function setNameField(sb: Superblock1): string {
  return cString(sb.setName, 32);
}

/**
 * set_name as C string functions read it (print_quoted, strchr): up to the first NUL, which
 * for a full 32-byte name lies in the ctime/level/layout fields that follow it in the struct.
 */
export function setNameCString(sb: Superblock1): string {
  const tail = new Uint8Array(48);
  tail.set(sb.setName.subarray(0, 32), 0);
  const dv = new DataView(tail.buffer);
  dv.setBigUint64(32, sb.ctime, true);
  dv.setInt32(40, sb.level | 0, true);
  dv.setUint32(44, sb.layout >>> 0, true);
  return cString(tail);
}

/** match_home1(): set_name starts with "<homehost>:" */
export function isLocalToHost(sb: Superblock1, homehost: string | undefined): boolean {
  if (!homehost) return false;
  const l = homehost.length;
  if (l <= 0 || l >= 32) return false;
  if (sb.setName[l] !== 0x3a) return false;
  for (let i = 0; i < l; i++) {
    const c = sb.setName[i]!;
    if (c !== homehost.charCodeAt(i)) return false;
    if (c === 0) return true; // strncmp stops at NUL
  }
  return true;
}

/** bitmap_bits(): chunks covering sync_size sectors. */
export function bitmapBitsOf(b: BitmapSuper): bigint {
  const chunk = BigInt(b.chunkSize >>> 0);
  if (chunk === 0n) return 0n; // mdadm would divide by zero
  return U64(b.syncSize * 512n + chunk - 1n) / chunk;
}

/** calc_bitmap_size(bms, boundary): header + bits, rounded up to the boundary. */
export function calcBitmapSize(b: BitmapSuper | null, boundary: number): bigint {
  const bits = b ? bitmapBitsOf(b) : 0n;
  const bytes = ((bits + 7n) >> 3n) + BigInt(BITMAP_SB_BYTES);
  const bd = BigInt(boundary);
  return ((bytes + bd - 1n) / bd) * bd;
}

export interface SpaceInfo {
  spaceBefore: bigint;
  spaceAfter: bigint;
}

/** getinfo_super1()'s role rule: beyond max_dev (or MAX_DEVS) counts as faulty. */
export function infoRole(sb: Superblock1): number {
  if (sb.devNumber >>> 0 >= sb.maxDev >>> 0 || sb.devNumber >>> 0 >= MAX_DEVS) return Role.FAULTY;
  return sb.devRoles[sb.devNumber]!;
}

/** getinfo_super1()'s space_before / space_after (sectors, unsigned 64-bit arithmetic). */
export function unusedSpace(v: LoadedSuper1, devSectors: bigint | number): SpaceInfo {
  const sb = v.sb;
  const dsize = BigInt(devSectors);
  const superOffset = sb.superOffset;
  const dataOffset = sb.dataOffset;
  const hasBitmap = (v.featureMap & Feature.BITMAP_OFFSET) !== 0;
  const anyPpl = (v.featureMap & (Feature.PPL | Feature.MULTIPLE_PPLS)) !== 0;
  const bitmapOffset = hasBitmap ? BigInt(sb.bitmapOffset | 0) : 0n;
  const ppl = !hasBitmap && anyPpl ? pplOffset(sb) : { offset: 0, size: 0 };
  const pplOff = BigInt(ppl.offset);
  const pplSize = BigInt(ppl.size);
  const dataSize = (sb.level | 0) <= 0 ? sb.dataSize : sb.size;
  let spaceBefore: bigint;
  let spaceAfter: bigint;
  const hasBblog = sb.bblogOffset !== 0 && sb.bblogSize !== 0;
  if (dataOffset < superOffset) {
    spaceBefore = dataOffset;
    let end = superOffset;
    if (hasBblog) {
      const bb = U64(superOffset + BigInt(sb.bblogOffset | 0));
      if (bb < end) end = bb;
    }
    const bmStart = U64(superOffset + bitmapOffset + pplOff);
    if (bmStart < end) end = bmStart;
    spaceAfter = U64(dataOffset + dataSize) < end ? U64(end - dataSize - dataOffset) : 0n;
  } else {
    let earliest = U64(superOffset + 72n); // (32+4)*2, "match kernel"
    if (bitmapOffset > 0n) {
      // mdadm adds the size to the *relative* offset (sic)
      const bmend = U64(bitmapOffset + calcBitmapSize(v.bms, 4096) / 512n);
      if (bmend > earliest) earliest = bmend;
    } else if (pplOff > 0n) {
      const pplend = U64(pplOff + pplSize);
      if (pplend > earliest) earliest = pplend;
    }
    if (hasBblog) {
      const bbend = U64(superOffset + BigInt(sb.bblogOffset | 0) + BigInt(sb.bblogSize));
      if (bbend > earliest) earliest = bbend;
    }
    spaceBefore = earliest < dataOffset ? dataOffset - earliest : 0n;
    spaceAfter = U64(dsize - dataSize - dataOffset);
  }
  if (spaceBefore === 0n && spaceAfter === 0n) spaceAfter = 1n;
  if (infoRole(sb) === Role.JOURNAL) spaceAfter = U64(dsize - dataOffset) % 8n;
  return { spaceBefore, spaceAfter };
}

/**
 * getinfo_super1()'s disk.state has MD_DISK_SYNC: an active role without the REPLACEMENT
 * feature. (Examine --brief counts the other devices as spares.)
 */
export function isInSync(sb: Superblock1): boolean {
  const role = infoRole(sb);
  if (role === Role.SPARE || role === Role.FAULTY || role === Role.JOURNAL) return false;
  return (sb.featureMap & Feature.REPLACEMENT) === 0;
}
