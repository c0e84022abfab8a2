/**
 * md_bitmap_resize's rules, shared by --grow --size (resize.ts) and the raid10 reshapes
 * (reshape-raid10.ts): the space the bitmap may take, and the chunk that makes its bits fit.
 */
import { BITMAP_SB_BYTES, bitmapBits } from '../format/bitmap.js';

/**
 * The space md lets the bitmap take when it resizes it (bitmap_info.space, sectors):
 * super_1_validate's guess (v1.0 with the bitmap before the superblock: up to the superblock;
 * after it: to 4K past it; v1.1/1.2: 0, "assume no change is possible"), then bitmap_read_sb
 * lowers it to the bitmap superblock's sectors_reserved (or takes that when the guess is 0);
 * still 0 (mdadm writes 0 there), md_bitmap_resize takes the bitmap's current size. So an array
 * mdadm made keeps the bitmap in the sectors it has, and md records them in sectors_reserved.
 */
export function mdBitmapSpace(minor: number, bitmapOffset: number, reserved: number, currentBits: number): number {
  let space = minor > 0 ? 0 : bitmapOffset > 0 ? 8 - bitmapOffset : -bitmapOffset;
  if (space === 0 || space > reserved) space = reserved;
  if (space === 0) space = Math.ceil((Math.ceil(currentBits / 8) + BITMAP_SB_BYTES) / 512);
  return space;
}

/** md_bitmap_resize's largest chunk: chunkshift + BITMAP_BLOCK_SHIFT stops at 31. */
const MAX_BITMAP_CHUNK_BYTES = 2 ** 31;

/**
 * md_bitmap_resize's choice of chunk (chunksize 0: a resize of the array): the chunk stays when
 * the bits for the new size fit the space, else it doubles until they do (or reaches 2 GiB).
 */
export function resizedBitmapChunk(syncSectors: number, chunkBytes: number, spaceSectors: number): number {
  let chunk = chunkBytes;
  while (bitmapBits(syncSectors, chunk) / 8 + BITMAP_SB_BYTES > spaceSectors * 512 && chunk < MAX_BITMAP_CHUNK_BYTES) chunk *= 2;
  return chunk;
}
