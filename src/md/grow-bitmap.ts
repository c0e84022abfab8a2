/**
 * mdadm --grow --bitmap=internal|none on a running array (md's bitmap_create / bitmap_destroy
 * through sysfs, with mdadm's add_internal_bitmap1 choosing the place): where a bitmap goes on
 * an existing member, and the change itself, made inside the metadata transaction.
 */
import { TsmdError } from '../errors.js';
import { BITMAP_SB_BYTES, bitmapAreaBytes, bitmapBits, encodeBitmapSuper, fillCleanBits, newBitmapSuper } from '../format/bitmap.js';
import { Feature, type Superblock1 } from '../format/superblock.js';
import { defaultBitmapChunk } from './create-plan.js';
import type { Member, MemberSet } from './members.js';
import { type LoadedSuperblock, loadBitmaps } from './sb-io.js';

/**
 * Where mdadm's add_internal_bitmap1 (Grow, with a settable bitmap location) puts a bitmap on
 * an existing member, and the chunk: offset relative to the superblock, in sectors.
 */
export function bitmapPlace(l: LoadedSuperblock, syncSectors: number, chunkBytes?: number): { offset: number; chunk: number } {
  const sb = l.sb;
  let room: number;
  let offset: number;
  let bbl: number;
  if (l.minor === 0) {
    room = Number(sb.superOffset) - Number(sb.dataOffset) - Number(sb.dataSize);
    bbl = Math.max(sb.bblogSize, 8, -sb.bblogOffset);
    if (room < 6 && sb.maxDev <= 384) {
      room = 6;
      offset = 2;
      bbl = 0;
    } else offset = 0;
  } else {
    room = Number(sb.dataOffset) - Number(sb.superOffset);
    bbl = sb.bblogSize;
    if (bbl) room = sb.bblogOffset + bbl;
    else bbl = 8;
    room -= 8;
    offset = 8;
  }
  room -= bbl;
  if (chunkBytes === undefined && room > 256) room = 256;
  if (room <= 1) throw new TsmdError('ENOSPC', `no room for a bitmap on ${l.minor === 0 ? 'this 1.0' : `this 1.${l.minor}`} member`);
  // the same chunk rule as at create (mdadm's add_internal_bitmap1 serves both)
  const { chunk: dflt, minChunk } = defaultBitmapChunk(syncSectors, room);
  let chunk: number;
  if (chunkBytes === undefined) chunk = dflt;
  else if (chunkBytes < minChunk) throw new TsmdError('EINVAL', `bitmap chunk ${chunkBytes / 1024}K too small: at least ${minChunk / 1024}K is needed for this size`);
  else if ((chunkBytes & (chunkBytes - 1)) !== 0) throw new TsmdError('EINVAL', `bitmap chunk ${chunkBytes} bytes is not a power of two`);
  else chunk = chunkBytes;
  if (offset === 0) {
    const n = Math.floor((syncSectors * 512) / chunk) + 1;
    const r = Math.ceil((Math.ceil(n / 8) + BITMAP_SB_BYTES) / 4096) * 8;
    offset = -r - bbl;
  }
  return { offset, chunk };
}

export interface BitmapPlace {
  m: Member;
  offset: number;
  chunk: number;
}

/** Every working member's place for a new bitmap; they must agree on the chunk. */
export function placeBitmaps(members: MemberSet, syncSectors: number, chunkBytes?: number): BitmapPlace[] {
  const places = members.list.filter((m) => !m.faulty).map((m) => ({ m, ...bitmapPlace(m.loaded, syncSectors, chunkBytes) }));
  if (new Set(places.map((p) => p.chunk)).size > 1) throw new TsmdError('EINVAL', 'members would need different bitmap chunks; give --bitmap-chunk');
  return places;
}

/** The members' bitmap feature off (in memory; the transaction writes the superblocks). */
export function dropBitmaps(sb: Superblock1, members: MemberSet): void {
  sb.featureMap &= ~Feature.BITMAP_OFFSET;
  for (const m of members.list) {
    m.bitmaps = [];
    m.loaded = { ...m.loaded, sb: { ...m.loaded.sb, featureMap: m.loaded.sb.featureMap & ~Feature.BITMAP_OFFSET } };
  }
}

/**
 * A fresh bitmap area on every member (no bit set, events == events_cleared == the array's),
 * each flushed, then the feature bit on. Called inside the transaction, events already bumped.
 */
export async function writeNewBitmaps(sb: Superblock1, places: readonly BitmapPlace[], syncSectors: number, daemonSleepSec?: number): Promise<void> {
  const chunk = places[0]!.chunk;
  const nbits = bitmapBits(syncSectors, chunk);
  const sup = newBitmapSuper({ uuid: sb.setUuid, events: sb.events, syncSectors, chunkBytes: chunk, daemonSleepSec });
  const area = new Uint8Array(bitmapAreaBytes(nbits));
  fillCleanBits(area, nbits);
  area.set(encodeBitmapSuper(sup), 0);
  await Promise.all(
    places.map(async ({ m, offset }) => {
      await m.dev.write(area, (m.loaded.sbStartSector + offset) * 512);
      await m.dev.flush();
      m.loaded = { ...m.loaded, sb: { ...m.loaded.sb, bitmapOffset: offset, featureMap: m.loaded.sb.featureMap | Feature.BITMAP_OFFSET } };
      m.bitmaps = await loadBitmaps(m.dev, m.loaded);
    }),
  );
  sb.featureMap |= Feature.BITMAP_OFFSET;
  sb.bitmapOffset = places[0]!.offset;
}
