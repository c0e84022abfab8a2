/**
 * Superblock and bitmap I/O on one member: find the v1.x superblock (1.0, 1.1, 1.2
 * locations, as mdadm probes them), read the internal bitmap(s) and the bad-block log.
 */
import { TsmdError } from '../errors.js';
import {
  type BadBlock,
  BITMAP_MAGIC,
  BITMAP_SB_BYTES,
  type BitmapSuper,
  bitmapAreaBytes,
  bitmapBits,
  bytesEqual,
  decodeBadBlocks,
  decodeBitmapSuper,
} from '../format/bitmap.js';
import {
  decodeSuperblock,
  Feature,
  hasSbMagic,
  SB_READ_BYTES,
  type Superblock1,
  sbLocation,
  sbTimeSeconds,
  validateSuperblock,
} from '../format/superblock.js';
import type { BlockDevice } from '../io/block-device.js';

export interface LoadedSuperblock {
  sb: Superblock1;
  /** the 4 KiB as read (for checksum reports) */
  raw: Uint8Array;
  minor: 0 | 1 | 2;
  sbStartSector: number;
  devSectors: number;
  /** kernel acceptance problems; empty = acceptable */
  problems: string[];
}

async function readAt(dev: BlockDevice, sector: number, bytes: number): Promise<Uint8Array> {
  const buf = new Uint8Array(bytes);
  await dev.read(buf, sector * 512);
  return buf;
}

/**
 * Look for a v1.x superblock. Returns null when none of the three locations holds one whose
 * magic and super_offset match (mdadm: "No md superblock detected"). When several are present,
 * the one with the newest ctime wins (mdadm's rule).
 */
export async function loadSuperblock(
  dev: BlockDevice,
  only?: 0 | 1 | 2,
): Promise<LoadedSuperblock | null> {
  const devSectors = Math.floor(dev.sizeBytes / 512);
  if (devSectors < 24) return null;
  const found: LoadedSuperblock[] = [];
  const minors: Array<0 | 1 | 2> = only === undefined ? [0, 1, 2] : [only];
  for (const minor of minors) {
    const at = sbLocation(minor, devSectors);
    if (at < 0 || (at + 8) * 512 > dev.sizeBytes) continue;
    const raw = await readAt(dev, at, SB_READ_BYTES);
    if (!hasSbMagic(raw)) continue;
    let sb: Superblock1;
    try {
      sb = decodeSuperblock(raw);
    } catch {
      continue;
    }
    if (sb.superOffset !== BigInt(at)) continue; // mdadm: not a superblock at this location
    const problems = validateSuperblock(sb, raw, { sbStartSector: at, devSectors });
    found.push({ sb, raw, minor, sbStartSector: at, devSectors, problems });
  }
  if (found.length === 0) return null;
  found.sort((a, b) => sbTimeSeconds(b.sb.ctime) - sbTimeSeconds(a.sb.ctime));
  return found[0]!;
}

export interface LoadedBitmap {
  sup: BitmapSuper;
  /** the bit bytes after the header (ceil(nbits/8) bytes) */
  bits: Uint8Array;
  nbits: number;
  /** sector on the device where this slot's area starts */
  startSector: number;
}

/**
 * Read the internal bitmap: one slot for version 4, every node slot for clustered version 5.
 * Returns [] when the feature is not set.
 */
export async function loadBitmaps(dev: BlockDevice, l: LoadedSuperblock): Promise<LoadedBitmap[]> {
  if ((l.sb.featureMap & Feature.BITMAP_OFFSET) === 0) return [];
  const start = l.sbStartSector + l.sb.bitmapOffset;
  if (start < 0 || start * 512 + BITMAP_SB_BYTES > dev.sizeBytes) {
    throw new TsmdError(
      'EBADSB',
      `${dev.name}: bitmap offset ${l.sb.bitmapOffset} points outside the device`,
    );
  }
  const first = decodeBitmapSuper(await readAt(dev, start, 512));
  const slots = first.magic === BITMAP_MAGIC && first.version === 5 ? Math.max(1, first.nodes) : 1;
  const out: LoadedBitmap[] = [];
  let slotStart = start;
  for (let k = 0; k < slots; k++) {
    const head = k === 0 ? first : decodeBitmapSuper(await readAt(dev, slotStart, 512));
    const syncSize = Number(head.syncSize);
    const nbits = head.chunkSize >= 512 ? bitmapBits(syncSize, head.chunkSize) : 0;
    const area = bitmapAreaBytes(nbits);
    if (slotStart * 512 + area > dev.sizeBytes) {
      throw new TsmdError('EBADSB', `${dev.name}: bitmap slot ${k} runs past the device end`);
    }
    const all = await readAt(dev, slotStart, area);
    out.push({
      sup: head,
      bits: all.slice(BITMAP_SB_BYTES, BITMAP_SB_BYTES + Math.ceil(nbits / 8)),
      nbits,
      startSector: slotStart,
    });
    slotStart += area / 512;
  }
  return out;
}

/** Does the bitmap belong to this superblock (magic + uuid), as mdadm checks before using it? */
export function bitmapMatches(b: BitmapSuper, sb: Superblock1): boolean {
  return b.magic === BITMAP_MAGIC && bytesEqual(b.uuid, sb.setUuid);
}

export async function loadBadBlocks(dev: BlockDevice, l: LoadedSuperblock): Promise<BadBlock[]> {
  const sb = l.sb;
  if ((sb.featureMap & Feature.BAD_BLOCKS) === 0 || sb.bblogOffset === 0 || sb.bblogSize === 0)
    return [];
  const at = l.sbStartSector + sb.bblogOffset;
  const raw = await readAt(dev, at, Math.min(sb.bblogSize, 8) * 512);
  return decodeBadBlocks(raw, sb.bblogShift);
}
