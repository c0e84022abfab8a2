/**
 * raid10 arrays on sparse member files for the in-process raid10 reshape tests
 * (test/md/reshape-raid10*.test.ts): created as tsmd --create makes them, assembled, and the
 * members' superblocks and hashes read back.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SystemClock } from '../../src/env/clock.js';
import type { BlockDevice } from '../../src/io/block-device.js';
import { openDevice } from '../../src/io/file-device.js';
import { MdArray } from '../../src/md/array.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { fileArray } from './arrays.js';
import { sparseFile } from './tools.js';

const MiB = 1024 * 1024;
let serial = 0;

export interface MakeOpts {
  bitmap?: boolean;
  /** member file size (default 8 MiB) */
  sizeMiB?: number;
  chunkKiB?: number;
  /** the component size used (room after the data) */
  sizeKiB?: number;
  bitmapChunkKiB?: number;
}

/** A raid10 of `disks` members and `spares` spares in dir; returns the member files. */
export async function makeRaid10(dir: string, disks: number, spares: number, layout: number, opts: MakeOpts = {}): Promise<string[]> {
  const tag = `r${serial++}`;
  const files = Array.from({ length: disks + spares }, (_, k) => sparseFile(join(dir, `${tag}-${k}.img`), (opts.sizeMiB ?? 8) * MiB));
  await fileArray(files, {
    level: 10,
    raidDisks: disks,
    chunkKiB: opts.chunkKiB ?? 64,
    sizeKiB: opts.sizeKiB,
    layout,
    setName: 'h:r10',
    bitmap: opts.bitmap ? 'internal' : 'none',
    bitmapChunkKiB: opts.bitmapChunkKiB,
  });
  return files;
}

/** Assemble the member files (wrap: each opened device may be wrapped, e.g. to watch its writes). */
export async function openRaid10(files: string[], wrap?: (d: BlockDevice, k: number) => BlockDevice): Promise<MdArray> {
  const devs = await Promise.all(files.map((f) => openDevice(f)));
  return MdArray.assemble(wrap ? devs.map(wrap) : devs, { clock: new SystemClock() });
}

export async function superblockOf(f: string) {
  const dev = await openDevice(f, { readOnly: true });
  try {
    return (await loadSuperblock(dev))!.sb;
  } finally {
    await dev.close();
  }
}

export const fileHashes = (files: string[]): string[] => files.map((f) => createHash('sha256').update(readFileSync(f)).digest('hex'));
