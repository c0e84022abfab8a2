/**
 * The block model of the in-process reshape tests: every 4 KiB block of the array holds its
 * array offset and a generation (so a stale or misplaced block is told apart), and a test keeps
 * block -> generation for what it wrote; the whole array is then read back against it.
 */
import assert from 'node:assert/strict';
import type { MdArray } from '../../src/md/array.js';

const BLOCK = 4096;
const READ = 1024 * 1024;

/** The content of the blocks at array byte `off` written as generation `gen` (0: the base fill). */
export function fillBlocks(buf: Uint8Array, off: number, gen: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  for (let i = 0; i < buf.length; i += 4) dv.setUint32(i, ((off + i) / 4 + gen * 0x9e3779b1) >>> 0, true);
}

/** Reads [0, upTo) of the array and checks every block against the model (block -> generation). */
export async function verifyModel(arr: MdArray, model: ReadonlyMap<number, number>, upTo: number, why = ''): Promise<void> {
  const buf = new Uint8Array(READ);
  const want = new Uint8Array(BLOCK);
  for (let off = 0; off < upTo; off += READ) {
    const n = Math.min(READ, upTo - off);
    await arr.read(buf.subarray(0, n), off);
    for (let b = 0; b < n; b += BLOCK) {
      fillBlocks(want, off + b, model.get((off + b) / BLOCK) ?? 0);
      assert.ok(Buffer.from(buf.buffer, buf.byteOffset + b, BLOCK).equals(want), `${why ? `${why}: ` : ''}block at ${off + b}`);
    }
  }
}

/** md's check after any resync the array owes (a raid10 grow resyncs its new region): mismatch_cnt. */
export async function checkMismatches(arr: MdArray): Promise<number> {
  await arr.sync.runUntilIdle();
  await arr.setSyncAction('check');
  await arr.sync.runUntilIdle();
  return arr.sync.mismatchCnt;
}
