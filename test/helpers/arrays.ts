/** Arrays on in-memory members (or member files) for engine tests, created exactly as tsmd --create would. */
import { randomBytes } from 'node:crypto';
import { SystemClock } from '../../src/env/clock.js';
import type { BlockDevice } from '../../src/io/block-device.js';
import { openDevice } from '../../src/io/file-device.js';
import { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { createArray } from '../../src/md/create.js';
import type { Level } from '../../src/md/create-plan.js';

export interface MemArrayOptions {
  level: Level;
  /** member sizes in MiB (one per device); the first `raidDisks` are active */
  sizesMiB: number[];
  raidDisks?: number;
  chunkKiB?: number;
  layout?: number;
  bitmap?: 'none' | 'internal';
  /** bitmap chunk in KiB (mdadm --bitmap-chunk) */
  bitmapChunkKiB?: number;
  assumeClean?: boolean;
  /** leave the initial resync owed (as mdadm --create does before the kernel's resync) */
  noInitialSync?: boolean;
  /** indexes of the members created write-mostly (raid1 -W) */
  writeMostly?: number[];
  /** --size: per-member used size in KiB (leaves room after the data) */
  sizeKiB?: number;
  metadata?: '1.0' | '1.1' | '1.2';
  /** the array's name (default test:mem) */
  setName?: string;
}

export async function memoryArray(o: MemArrayOptions): Promise<MemoryBlockDevice[]> {
  const devs = o.sizesMiB.map((m, i) => new MemoryBlockDevice(`mem${i}`, m * 1024 * 1024));
  await createOn(devs, o);
  return devs;
}

/** The same on member files (opened for the creation, closed after it). */
export async function fileArray(files: string[], o: Omit<MemArrayOptions, 'sizesMiB'>): Promise<void> {
  const devs = await Promise.all(files.map((f) => openDevice(f)));
  try {
    await createOn(devs, o);
  } finally {
    await Promise.all(devs.map((d) => d.close()));
  }
}

async function createOn(devs: BlockDevice[], o: Omit<MemArrayOptions, 'sizesMiB'>): Promise<void> {
  await createArray(
    devs,
    {
      level: o.level,
      raidDisks: o.raidDisks ?? devs.length,
      metadata: o.metadata ?? '1.2',
      chunkKiB: o.level === 1 ? undefined : o.chunkKiB,
      layout: o.layout,
      sizeKiB: o.sizeKiB,
      setName: o.setName ?? 'test:mem',
      uuid: randomBytes(16),
      deviceUuids: devs.map(() => randomBytes(16)),
      bitmap: o.bitmap ?? 'none',
      bitmapChunkBytes: o.bitmapChunkKiB ? o.bitmapChunkKiB * 1024 : undefined,
      assumeClean: o.assumeClean,
      nowSeconds: 1_700_000_000,
      members: devs.map((d, i) => ({ sizeSectors: Math.floor(d.sizeBytes / 512), writeMostly: o.writeMostly?.includes(i) })),
    },
    { confirmOverwrite: async () => false, initialSync: !o.noInitialSync, clock: new SystemClock() },
  );
}
