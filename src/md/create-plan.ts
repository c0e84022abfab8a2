/**
 * How mdadm 4.x lays out a new v1.x array (shared/spec/md-formats.md §2), as a pure function:
 * member sizes and options in, one superblock (+ bitmap area) per member out.
 */
import { TsmdError } from '../errors.js';
import {
  bitmapAreaBytes,
  fillCleanBits,
  bitmapBits,
  encodeBitmapSuper,
  newBitmapSuper,
} from '../format/bitmap.js';
import {
  Feature,
  MAX_SECTOR,
  nameBytes,
  Role,
  type Superblock1,
  sbLocation,
} from '../format/superblock.js';
import { defaultLayout } from '../raid/geometry/names.js';
import { decodeRaid10Layout, raid10ArraySectors, raid10Validate } from '../raid/geometry/raid10.js';
import { validLayouts } from '../raid/geometry/raid456.js';
import { levelByNumber } from '../raid/levels.js';

export const LEVELS = [-1, 0, 1, 4, 5, 6, 10] as const;
export type Level = (typeof LEVELS)[number];
export const DEFAULT_CHUNK_KIB = 512;
export const DEFAULT_BITMAP_CHUNK_BYTES = 64 * 1024 * 1024;
export const DEFAULT_CLUSTER_NODES = 4;

export interface CreateMember {
  /** null for "missing" */
  sizeSectors: number | null;
  writeMostly?: boolean;
  failFast?: boolean;
}

export interface CreateOptions {
  level: Level;
  raidDisks: number;
  /** members in command-line order: the first raidDisks are active slots, the rest spares */
  members: CreateMember[];
  metadata: '1.0' | '1.1' | '1.2';
  chunkKiB?: number;
  layout?: number;
  /** --size: per-member used size, KiB */
  sizeKiB?: number;
  /** full set_name text (already "homehost:name" if applicable) */
  setName: string;
  uuid: Uint8Array;
  deviceUuids: Uint8Array[];
  bitmap: 'none' | 'internal' | 'clustered';
  bitmapChunkBytes?: number;
  nodes?: number;
  clusterName?: string;
  assumeClean?: boolean;
  force?: boolean;
  dataOffsetSectors?: number;
  /** creation time, seconds */
  nowSeconds: number;
  /** raid0 layout feature: set RAID0_LAYOUT when zones differ (mdadm 4.2 behaviour) */
}

export interface PlannedMember {
  /** index in CreateOptions.members */
  index: number;
  sb: Superblock1;
  /** bitmap area image (header + bits, all node slots) to write at sb_start + bitmap_offset */
  bitmapImage: Uint8Array | null;
  sbStartSector: number;
}

export interface CreatePlan {
  members: PlannedMember[];
  componentSectors: number;
  dataOffsetSectors: number;
  chunkSectors: number;
  layout: number;
  /** array size in sectors as the kernel will export it */
  arraySectors: number;
  /** mdadm's raid4/5 trick: the last active member starts as a spare to be recovered */
  recoverOntoLast: boolean;
  needsResync: boolean;
}

/** mdadm choose_bm_space(): sectors reserved for a bitmap on a device of `dev` sectors. */
export function chooseBmSpace(devSectors: number): number {
  if (devSectors < 128) return 0;
  if (devSectors - 128 >= 200 * 1024 * 1024 * 2) return 256;
  if (devSectors - 8 > 8 * 1024 * 1024 * 2) return 128;
  return 8;
}

function roundUp(x: number, m: number): number {
  return Math.ceil(x / m) * m;
}

function hasRedundancy(level: number): boolean {
  return levelByNumber(level).redundancy !== 'none';
}

function usesChunk(level: number): boolean {
  return levelByNumber(level).usesChunk;
}

/** Default data_offset for 1.1/1.2 (§2.2), from the first listed member. */
export function defaultDataOffset(devSectors: number, chunkKiB: number, bmSpace: number): number {
  let headroom = 262144;
  while (headroom * 1024 > devSectors && (chunkKiB === 0 || headroom / 2 >= 4 * chunkKiB))
    headroom /= 2;
  return roundUp(24 + bmSpace + headroom, 2048);
}

/** Default bitmap chunk (§2.4) for a bitmap covering syncSectors, in bytes. */
export function defaultBitmapChunk(
  syncSectors: number,
  roomSectors: number,
): { chunk: number; minChunk: number } {
  const maxBits = (roomSectors * 512 - 256) * 8;
  let chunk = 4096;
  while ((syncSectors * 512) / chunk + 1 > maxBits) chunk *= 2;
  return { chunk: Math.max(chunk, DEFAULT_BITMAP_CHUNK_BYTES), minChunk: chunk };
}

export function planCreate(o: CreateOptions): CreatePlan {
  const level = o.level;
  if (!(LEVELS as readonly number[]).includes(level))
    throw new TsmdError('EINVAL', `invalid raid level ${level}`);
  const minDisks = levelByNumber(level).minDevices;
  if (!Number.isInteger(o.raidDisks) || o.raidDisks < minDisks) {
    throw new TsmdError(
      'EINVAL',
      `raid${level === -1 ? ' linear' : level} needs at least ${minDisks} raid devices`,
    );
  }
  if (o.members.length < o.raidDisks) {
    throw new TsmdError(
      'EINVAL',
      `${o.raidDisks} raid devices requested but only ${o.members.length} devices given`,
    );
  }
  const missing = o.members.slice(0, o.raidDisks).filter((m) => m.sizeSectors === null).length;
  const spares = o.members.length - o.raidDisks;
  if (o.members.slice(o.raidDisks).some((m) => m.sizeSectors === null)) {
    throw new TsmdError('EINVAL', '"missing" can only stand for a raid device, not a spare');
  }
  const tolerance =
    level === 1
      ? o.raidDisks - 1
      : level === 4 || level === 5
        ? 1
        : level === 6
          ? 2
          : level === 10
            ? 1
            : 0;
  if (missing > tolerance) {
    throw new TsmdError('EINVAL', `raid${level} with ${missing} missing devices cannot run`);
  }
  if (spares > 0 && !hasRedundancy(level)) {
    throw new TsmdError(
      'EINVAL',
      `raid${level === -1 ? ' linear' : level} cannot have spare devices`,
    );
  }

  // chunk and layout
  let chunkKiB = 0;
  if (usesChunk(level)) chunkKiB = o.chunkKiB ?? DEFAULT_CHUNK_KIB;
  else if (o.chunkKiB !== undefined && level === 1) {
    throw new TsmdError('EINVAL', 'raid1 does not use a chunk size (drop --chunk)');
  } else if (level === -1) chunkKiB = o.chunkKiB ?? 0;
  if (
    chunkKiB !== 0 &&
    (chunkKiB < 4 || (level !== 0 && level !== -1 && (chunkKiB & (chunkKiB - 1)) !== 0))
  ) {
    throw new TsmdError(
      'EINVAL',
      `invalid chunk size ${chunkKiB}K: must be a power of two of at least 4K`,
    );
  }
  if (level === 0 && chunkKiB % 4 !== 0)
    throw new TsmdError('EINVAL', `raid0 chunk ${chunkKiB}K must be a multiple of 4K`);
  // mdadm 4.2 stores raid0 layout 1 (original); RAID0_LAYOUT only for multi-zone arrays
  let layout = o.layout ?? (level === 0 ? 1 : defaultLayout(level));
  if (level === 5 || level === 6) {
    if (!validLayouts(level).includes(layout))
      throw new TsmdError('EINVAL', `layout ${layout} is not valid for raid${level}`);
  }
  if (level === 4) layout = o.layout ?? 5;
  if (level === 10) {
    const l = decodeRaid10Layout(layout);
    if (l.near * l.far > o.raidDisks) {
      throw new TsmdError(
        'EINVAL',
        `raid10 layout needs ${l.near * l.far} copies but only ${o.raidDisks} devices`,
      );
    }
  }
  if (o.bitmap !== 'none' && !hasRedundancy(level)) {
    throw new TsmdError(
      'EINVAL',
      `a write-intent bitmap needs a redundant level, not raid${level === -1 ? ' linear' : level}`,
    );
  }
  const clustered = o.bitmap === 'clustered';
  if (clustered && level !== 1 && level !== 10) {
    throw new TsmdError('EINVAL', 'clustered arrays support raid1 and raid10 only');
  }
  if (clustered && !o.clusterName)
    throw new TsmdError(
      'EINVAL',
      'a clustered bitmap needs --cluster-name (mdadm: --home-cluster)',
    );

  const present = o.members.filter((m) => m.sizeSectors !== null) as Array<{ sizeSectors: number }>;
  if (present.length === 0) throw new TsmdError('EINVAL', 'no devices given');
  const first = present[0]!.sizeSectors;
  const redundant = hasRedundancy(level);
  const bmSpace = redundant ? chooseBmSpace(first) : 0;
  const nodes = clustered ? (o.nodes ?? DEFAULT_CLUSTER_NODES) : 0;

  // data offset and per-member free space
  let dataOffset: number;
  if (o.metadata === '1.0') dataOffset = 0;
  else dataOffset = o.dataOffsetSectors ?? defaultDataOffset(first, chunkKiB, bmSpace);
  const freeSectors = (dev: number): number => {
    if (o.metadata === '1.0') return Math.floor(dev / 8) * 8 - 16 - 8 - bmSpace;
    return dev - dataOffset;
  };
  for (const m of present) {
    if (m.sizeSectors < 24 + 2 * 8 || freeSectors(m.sizeSectors) < 16) {
      throw new TsmdError(
        'ENOSPC',
        `device of ${m.sizeSectors} sectors is too small for an md member (data offset ${dataOffset})`,
      );
    }
  }
  let compKiB = Math.min(...present.map((m) => Math.floor(freeSectors(m.sizeSectors) / 2)));
  if (chunkKiB > 0 && usesChunk(level)) compKiB -= compKiB % chunkKiB;
  if (level === 1) compKiB -= compKiB % 64;
  if (o.sizeKiB !== undefined) {
    if (o.sizeKiB > compKiB) {
      throw new TsmdError(
        'ENOSPC',
        `--size ${o.sizeKiB}K is larger than the smallest device allows (${compKiB}K)`,
      );
    }
    compKiB = o.sizeKiB;
    if (chunkKiB > 0 && usesChunk(level) && compKiB % chunkKiB !== 0) {
      throw new TsmdError(
        'EINVAL',
        `--size ${compKiB}K is not a multiple of the chunk size ${chunkKiB}K`,
      );
    }
  }
  if (compKiB <= 0) throw new TsmdError('ENOSPC', 'devices are too small for this chunk size');
  const componentSectors = compKiB * 2;
  const chunkSectors = chunkKiB * 2;

  // array size
  let arraySectors: number;
  switch (level) {
    case -1:
    case 0:
      arraySectors = 0; // derived from data_size per member at assembly
      break;
    case 1:
      arraySectors = componentSectors;
      break;
    case 4:
    case 5:
      arraySectors = componentSectors * (o.raidDisks - 1);
      break;
    case 6:
      arraySectors = componentSectors * (o.raidDisks - 2);
      break;
    default: {
      const g = { raidDisks: o.raidDisks, layout, chunkSectors, componentSectors };
      raid10Validate(g);
      arraySectors = raid10ArraySectors(g);
    }
  }

  // bitmap geometry
  let bitmapChunk = 0;
  let bitmapAreaSectors = 0;
  let nbits = 0;
  const syncSectors = level === 10 ? arraySectors : componentSectors;
  if (o.bitmap !== 'none') {
    const room = chooseBmSpace(componentSectors) || 8;
    const { chunk, minChunk } = defaultBitmapChunk(syncSectors, room);
    bitmapChunk = o.bitmapChunkBytes ?? chunk;
    if (bitmapChunk < 512 || (bitmapChunk & (bitmapChunk - 1)) !== 0) {
      throw new TsmdError('EINVAL', `bitmap chunk ${bitmapChunk} bytes is not a power of two`);
    }
    if (bitmapChunk < minChunk) {
      throw new TsmdError(
        'EINVAL',
        `bitmap chunk ${bitmapChunk / 1024}K too small: at least ${minChunk / 1024}K is needed for this size`,
      );
    }
    nbits = bitmapBits(syncSectors, bitmapChunk);
    bitmapAreaSectors = bitmapAreaBytes(nbits) / 512;
  }

  const devNumbers: number[] = [];
  // mdadm raid4/5: last active device becomes a spare that the kernel recovers onto
  const recoverOntoLast =
    (level === 4 || level === 5) && !o.assumeClean && !o.force && missing === 0 && o.raidDisks > 1;
  const maxDev = Math.max(128, (roundUp(256 + 2 * o.members.length, 512) - 256) / 2);
  const roles = new Array<number>(maxDev).fill(Role.SPARE);
  for (let i = 0; i < o.members.length; i++) {
    let dn = i;
    if (recoverOntoLast && i >= o.raidDisks - 1) dn = i + 1;
    devNumbers.push(dn);
    if (o.members[i]!.sizeSectors === null) continue;
    if (i < o.raidDisks && !(recoverOntoLast && i === o.raidDisks - 1)) roles[dn] = i;
  }
  if (devNumbers[devNumbers.length - 1]! >= maxDev)
    throw new TsmdError('EINVAL', 'too many devices');

  const needsResync = redundant && !o.assumeClean && !recoverOntoLast && missing === 0;
  const resyncOffset = needsResync ? 0n : MAX_SECTOR;

  const sbs: PlannedMember[] = [];
  o.members.forEach((m, i) => {
    if (m.sizeSectors === null) return;
    const dev = m.sizeSectors;
    const minor = o.metadata === '1.0' ? 0 : o.metadata === '1.1' ? 1 : 2;
    const sbStart = sbLocation(minor, dev);
    let bitmapOffset = 0;
    let bblogOffset = 0;
    let bblogSize = 0;
    let dataSize: number;
    if (minor === 0) {
      const bmArea = o.bitmap !== 'none' ? bitmapAreaSectors * Math.max(1, nodes) : bmSpace;
      if (o.bitmap !== 'none') bitmapOffset = -(bitmapAreaSectors * Math.max(1, nodes)) - 8;
      if (!clustered) {
        bblogOffset = -8;
        bblogSize = 8;
      }
      dataSize = sbStart - bmArea - 8;
      if (dataSize < componentSectors) dataSize = componentSectors;
    } else {
      dataSize = dev - dataOffset;
      if (o.bitmap !== 'none') {
        bitmapOffset = 8;
        const need = bitmapAreaSectors * Math.max(1, nodes);
        if (sbStart + 8 + need > dataOffset) {
          throw new TsmdError(
            'ENOSPC',
            `bitmap (${need} sectors) does not fit between the superblock and the data offset ${dataOffset}`,
          );
        }
      }
      if (!clustered) {
        const want = o.bitmap !== 'none' ? bitmapOffset + bitmapAreaSectors : 8 + bmSpace;
        if (dataOffset >= sbStart + want + 8) bblogOffset = want;
        else if (dataOffset >= sbStart + 16) bblogOffset = dataOffset - 8 - sbStart;
        if (bblogOffset !== 0) bblogSize = 8;
      }
    }
    let feature = 0;
    if (o.bitmap !== 'none') feature |= Feature.BITMAP_OFFSET;
    if (clustered) feature |= Feature.CLUSTERED;
    const sb: Superblock1 = {
      majorVersion: 1,
      featureMap: feature,
      pad0: 0,
      setUuid: o.uuid.slice(),
      setName: nameBytes(o.setName, 32),
      ctime: BigInt(o.nowSeconds),
      level,
      layout: level === 1 || level === -1 ? 0 : layout,
      size: level === 0 || level === -1 ? 0n : BigInt(componentSectors),
      chunkSize: chunkSectors,
      raidDisks: o.raidDisks,
      bitmapOffset,
      newLevel: 0,
      reshapePosition: 0n,
      deltaDisks: 0,
      newLayout: 0,
      newChunk: 0,
      newOffset: 0,
      dataOffset: BigInt(dataOffset),
      dataSize: BigInt(dataSize),
      superOffset: BigInt(sbStart),
      recoveryOffset: 0n,
      devNumber: devNumbers[i]!,
      cntCorrectedRead: 0,
      deviceUuid: o.deviceUuids[i]!.slice(),
      devFlags: (m.writeMostly ? 1 : 0) | (m.failFast ? 2 : 0),
      bblogShift: 0,
      bblogSize,
      bblogOffset,
      utime: BigInt(o.nowSeconds),
      events: 0n,
      resyncOffset: level === 0 || level === -1 ? MAX_SECTOR : resyncOffset,
      sbCsum: 0,
      maxDev,
      pad3: new Uint8Array(32),
      devRoles: roles.slice(),
    };
    let bitmapImage: Uint8Array | null = null;
    if (o.bitmap !== 'none') {
      const slots = Math.max(1, nodes);
      bitmapImage = new Uint8Array(bitmapAreaSectors * 512 * slots);
      for (let k = 0; k < slots; k++) {
        const sup = newBitmapSuper({ uuid: o.uuid, syncSectors, chunkBytes: bitmapChunk, clustered, nodes, clusterName: nameBytes(o.clusterName ?? '', 64) });
        const base = k * bitmapAreaSectors * 512;
        bitmapImage.set(encodeBitmapSuper(sup), base);
        // node 0: every bit set (whole array needs its initial sync) unless clean; others clear
        const fill = k === 0 && (needsResync || recoverOntoLast || missing > 0) ? 0xff : 0x00;
        bitmapImage.fill(fill, base + 256, base + 256 + Math.ceil(nbits / 8));
        if (fill === 0 && !clustered) {
          // mdadm writes padding bits past nbits as 1s; keep the header-only form otherwise
          fillCleanBits(bitmapImage.subarray(base, base + 256 + Math.ceil(nbits / 8)), nbits);
        }
      }
    }
    sbs.push({ index: i, sb, bitmapImage, sbStartSector: sbStart });
  });

  if (level === 0) {
    const rounded = new Set(
      sbs.map((p) => Number(p.sb.dataSize) - (Number(p.sb.dataSize) % chunkSectors)),
    );
    if (rounded.size > 1) for (const p of sbs) p.sb.featureMap |= Feature.RAID0_LAYOUT;
  }
  if (level === 0 || level === -1) {
    // total of members' data_size rounded to the chunk: computed at assembly from data_size
    arraySectors = 0;
    for (const p of sbs) {
      const ds = Number(p.sb.dataSize);
      arraySectors += chunkSectors > 0 ? ds - (ds % chunkSectors) : ds;
    }
  }
  return {
    members: sbs,
    componentSectors,
    dataOffsetSectors: dataOffset,
    chunkSectors,
    layout,
    arraySectors,
    recoverOntoLast,
    needsResync,
  };
}
