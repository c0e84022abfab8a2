/**
 * `mdadm --examine-bitmap` (-X) as mdadm 4.2 prints it (bitmap.c ExamineBitmap): one bitmap
 * (version 4) or the clustered layout (version 5: shared fields once, then one "Node Slot"
 * block per node).
 */
import { BITMAP_MAGIC, type BitmapSuper, countDirty } from '../../format/bitmap.js';
import { Feature, type Superblock1 } from '../../format/superblock.js';
import { cFixed1, humanChunkSize, humanSize } from './human.js';
import { bitmapMatches, calcBitmapSize, clusterNameField } from './super1-view.js';

/** Bound on the per-node loop (mdadm has none; md-cluster supports far fewer nodes). */
const MAX_NODE_SLOTS = 4096;

export interface BitmapSlot {
  /** the 256-byte bitmap superblock of this node slot */
  sup: BitmapSuper;
  /** the bit bytes after the 256-byte header (as many as could be read) */
  bits: Uint8Array;
}

export interface ExamineBitmapInput {
  /** printed on the "Filename" line (the device or file name as given) */
  fileName: string;
  /**
   * The member's v1.x superblock when examining a block device holding an internal bitmap;
   * null/absent for an external bitmap file (or a device without md metadata).
   */
  sb?: Superblock1 | null;
  /** slot 0 = the bitmap at sb_start + bitmap_offset; clustered: node k at slot k */
  slots: BitmapSlot[];
  /**
   * Reads node slot k when `slots` has no entry for it (null = unreadable). mdadm's node loop
   * runs while k < the `nodes` field of the slot it read last, so a corrupt slot header can
   * make it read past the slots the first header announces.
   */
  readSlot?: (node: number) => BitmapSlot | null;
  /** `--brief`: no "Bitmap :" counts */
  brief?: boolean;
}

/** How mdadm counts one slot: bits covering sync_size, cut short when the device ends. */
export function bitmapCounts(slot: BitmapSlot): { totalBits: number; dirtyBits: number } {
  const sup = slot.sup;
  const chunk = BigInt(sup.chunkSize >>> 0);
  if (sup.syncSize === 0n || chunk === 0n) return { totalBits: 0, dirtyBits: 0 };
  const want = BigInt.asUintN(64, sup.syncSize * 512n + chunk - 1n) / chunk;
  const avail = BigInt(slot.bits.length) * 8n;
  const total = Number(want < avail ? want : avail);
  return { totalBits: total, dirtyBits: countDirty(slot.bits, total) };
}

function bitmapLine(slot: BitmapSlot): string {
  const { totalBits, dirtyBits } = bitmapCounts(slot);
  const pct = (100.0 * dirtyBits) / (totalBits || 1);
  return `          Bitmap : ${totalBits} bits (chunks), ${dirtyBits} dirty (${cFixed1(pct)}%)`;
}

function stateText(state: number): string {
  if (state === 0) return 'OK';
  if (state === 2) return 'Out of date';
  return 'Unknown';
}

function uuid32(u: Uint8Array): string {
  const g: string[] = [];
  for (let i = 0; i < 4; i++) {
    let s = '';
    for (let j = 0; j < 4; j++) s += (u[4 * i + j] ?? 0).toString(16).padStart(2, '0');
    g.push(s);
  }
  return g.join(':');
}

/**
 * The stdout of `mdadm --examine-bitmap <fileName>`. Returns '' where mdadm prints only an
 * error (no bitmap slot could be read; a member whose superblock has no usable internal
 * bitmap: "<file> doesn't have bitmap").
 */
export function formatExamineBitmap(x: ExamineBitmapInput): string {
  if (x.sb) {
    const has = (x.sb.featureMap & Feature.BITMAP_OFFSET) !== 0;
    if (!has || !bitmapMatches(x.sb, x.slots[0]?.sup)) return '';
  }
  const first = x.slots[0];
  if (!first) return '';
  const sb = first.sup;
  const out: string[] = [];
  out.push(`        Filename : ${x.fileName}`);
  out.push(`           Magic : ${(sb.magic >>> 0).toString(16).padStart(8, '0')}`);
  out.push(`         Version : ${sb.version | 0}`);
  const version = sb.version >>> 0;
  if (version < 3 || version > 5) return `${out.join('\n')}\n`;
  out.push(`            UUID : ${uuid32(sb.uuid)}`);
  const nodes = sb.nodes >>> 0;
  if (nodes === 0) {
    out.push(`          Events : ${sb.events}`);
    out.push(`  Events Cleared : ${sb.eventsCleared}`);
    out.push(`           State : ${stateText(sb.state | 0)}`);
  }
  out.push(`       Chunksize : ${humanChunkSize(sb.chunkSize >>> 0)}`);
  out.push(`          Daemon : ${sb.daemonSleep | 0}s flush period`);
  out.push(
    `      Write Mode : ${sb.writeBehind ? `Allow write behind, max ${sb.writeBehind | 0}` : 'Normal'}`,
  );
  out.push(
    `       Sync Size : ${sb.syncSize / 2n}${humanSize(BigInt.asIntN(64, sb.syncSize * 512n))}`,
  );
  if (nodes === 0) {
    if (!x.brief) out.push(bitmapLine(first));
  } else {
    out.push(`   Cluster nodes : ${sb.nodes | 0}`);
    out.push(`    Cluster name : ${clusterNameField(sb)}`);
    // for (i = 0; i < (int)sb->nodes; i++), with sb re-pointed at each slot read
    let bound = sb.nodes | 0;
    for (let i = 0; i < bound && i < MAX_NODE_SLOTS; i++) {
      const slot = x.slots[i] ?? x.readSlot?.(i) ?? null;
      if (!slot) {
        out.push(`   Unable to read bitmap on node: ${i}`);
        continue;
      }
      bound = slot.sup.nodes | 0;
      out.push(`       Node Slot : ${i}`);
      out.push(`          Events : ${slot.sup.events}`);
      out.push(`  Events Cleared : ${slot.sup.eventsCleared}`);
      out.push(`           State : ${stateText(slot.sup.state | 0)}`);
      if (x.brief) continue;
      out.push(bitmapLine(slot));
    }
  }
  return `${out.join('\n')}\n`;
}

/** mdadm's warnings on stderr for the same input (magic / version problems), for callers. */
export function examineBitmapWarnings(x: ExamineBitmapInput): string[] {
  const first = x.slots[0];
  if (!first) return ['failed to read superblock of bitmap file'];
  const w: string[] = [];
  const sb = first.sup;
  if (sb.magic >>> 0 !== BITMAP_MAGIC) {
    w.push('This is an md array.  To view a bitmap you need to examine');
    w.push('a member device, not the array.');
    w.push('Reporting bitmap that would be used if this array were used');
    w.push('as a member of some other array');
    w.push(`invalid bitmap magic 0x${(sb.magic >>> 0).toString(16)}, the bitmap file appears`);
    w.push('to be corrupted or missing.');
  }
  const version = sb.version >>> 0;
  if (version < 3 || version > 5) {
    w.push(`unknown bitmap version ${sb.version | 0}, either the bitmap file`);
    w.push('is corrupted or you need to upgrade your tools');
  }
  return w;
}

/**
 * Bytes of bits mdadm reads after a slot's 256-byte header: ceil(bitmap_bits / 8) for *that*
 * header's sync_size and chunksize (it reads on through the device until it has them, so a
 * caller should supply as many of these as the device holds).
 */
export function bitmapBitsBytes(sup: BitmapSuper): bigint {
  const chunk = BigInt(sup.chunkSize >>> 0);
  if (sup.syncSize === 0n || chunk === 0n) return 0n;
  const bits = BigInt.asUintN(64, sup.syncSize * 512n + chunk - 1n) / chunk;
  return (bits + 7n) / 8n;
}

/**
 * Where mdadm reads each bitmap slot of a member (locate_bitmap1): sb_start + bitmap_offset,
 * plus, for node k of a clustered bitmap, k × calc_bitmap_size(first header, 4096) / 512
 * sectors. `bytes` = the 256-byte header plus the bits it covers.
 */
export function bitmapSlotLocations(
  sb: Superblock1,
  first: BitmapSuper,
): Array<{ offsetBytes: bigint; bytes: number }> {
  const nodes = Math.max(1, Math.min(first.nodes >>> 0, MAX_NODE_SLOTS));
  const out: Array<{ offsetBytes: bigint; bytes: number }> = [];
  for (let k = 0; k < nodes; k++) out.push(bitmapSlotLocation(sb, first, k));
  return out;
}

/** Location of node slot k (any k; see bitmapSlotLocations). */
export function bitmapSlotLocation(
  sb: Superblock1,
  first: BitmapSuper,
  node: number,
): { offsetBytes: bigint; bytes: number } {
  const base = sb.superOffset + BigInt(sb.bitmapOffset | 0);
  const perNodeSectors = calcBitmapSize(first, 4096) >> 9n;
  return {
    offsetBytes: (base + perNodeSectors * BigInt(node)) * 512n,
    bytes: Number(calcBitmapSize(first, 1)),
  };
}
