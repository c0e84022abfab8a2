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
  /** the bitmap daemon's period in seconds (mdadm --delay) */
  bitmapDelaySec?: number;
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

/** mdadm's level name in create's messages ("raid5", "raid linear"). */
function raidText(level: number): string {
  return `raid${level === -1 ? ' linear' : level}`;
}

/** Level, device counts, "missing" and spares, as mdadm's Create checks them; returns the missing count. */
function checkDevices(o: CreateOptions): number {
  const level = o.level;
  if (!(LEVELS as readonly number[]).includes(level)) throw new TsmdError('EINVAL', `invalid raid level ${level}`);
  const minDisks = levelByNumber(level).minDevices;
  if (!Number.isInteger(o.raidDisks) || o.raidDisks < minDisks) throw new TsmdError('EINVAL', `${raidText(level)} needs at least ${minDisks} raid devices`);
  if (o.members.length < o.raidDisks) throw new TsmdError('EINVAL', `${o.raidDisks} raid devices requested but only ${o.members.length} devices given`);
  const missing = o.members.slice(0, o.raidDisks).filter((m) => m.sizeSectors === null).length;
  const spares = o.members.length - o.raidDisks;
  if (o.members.slice(o.raidDisks).some((m) => m.sizeSectors === null)) throw new TsmdError('EINVAL', '"missing" can only stand for a raid device, not a spare');
  // (raid10: one whatever the layout, a simplification of mdadm's per-position enough())
  const tolerance = level === 1 ? o.raidDisks - 1 : level === 4 || level === 5 ? 1 : level === 6 ? 2 : level === 10 ? 1 : 0;
  if (missing > tolerance) throw new TsmdError('EINVAL', `raid${level} with ${missing} missing devices cannot run`);
  if (spares > 0 && !hasRedundancy(level)) throw new TsmdError('EINVAL', `${raidText(level)} cannot have spare devices`);
  return missing;
}

/** Chunk (KiB) and layout with mdadm 4.x's defaults and checks. */
function chunkAndLayout(o: CreateOptions): { chunkKiB: number; layout: number } {
  const level = o.level;
  let chunkKiB = 0;
  if (usesChunk(level)) chunkKiB = o.chunkKiB ?? DEFAULT_CHUNK_KIB;
  else if (o.chunkKiB !== undefined && level === 1) throw new TsmdError('EINVAL', 'raid1 does not use a chunk size (drop --chunk)');
  else if (level === -1) chunkKiB = o.chunkKiB ?? 0;
  if (chunkKiB !== 0 && (chunkKiB < 4 || (level !== 0 && level !== -1 && (chunkKiB & (chunkKiB - 1)) !== 0)))
    throw new TsmdError('EINVAL', `invalid chunk size ${chunkKiB}K: must be a power of two of at least 4K`);
  if (level === 0 && chunkKiB % 4 !== 0) throw new TsmdError('EINVAL', `raid0 chunk ${chunkKiB}K must be a multiple of 4K`);
  // mdadm 4.2 stores raid0 layout 1 (original); RAID0_LAYOUT only for multi-zone arrays
  let layout = o.layout ?? (level === 0 ? 1 : defaultLayout(level));
  if ((level === 5 || level === 6) && !validLayouts(level).includes(layout)) throw new TsmdError('EINVAL', `layout ${layout} is not valid for raid${level}`);
  if (level === 4) layout = o.layout ?? 5;
  if (level === 10) {
    const l = decodeRaid10Layout(layout);
    if (l.near * l.far > o.raidDisks) throw new TsmdError('EINVAL', `raid10 layout needs ${l.near * l.far} copies but only ${o.raidDisks} devices`);
  }
  return { chunkKiB, layout };
}

/**
 * The bitmap options: a redundant level; clustered only within md-cluster's limits (spec
 * md-cluster-protocol.md §4.12), each refused in mdadm 4.2's words: raid1 and near-layout
 * raid10 (mdadm.c; the kernel's raid10_run refuses the others too), superblock 1.2 (super1.c),
 * no write-mostly member (Create.c: no write-behind in a cluster), at least 2 nodes, and a
 * cluster name (mdadm.c, when neither the command nor corosync gives one).
 */
function checkBitmap(o: CreateOptions): boolean {
  if (o.bitmap !== 'none' && !hasRedundancy(o.level)) throw new TsmdError('EINVAL', `a write-intent bitmap needs a redundant level, not ${raidText(o.level)}`);
  const clustered = o.bitmap === 'clustered';
  if (!clustered) return false;
  if (o.level !== 1 && o.level !== 10) throw new TsmdError('EINVAL', '--bitmap=clustered is currently supported with raid1/10 only');
  if (o.level === 10 && o.layout !== undefined && (((o.layout >> 8) & 0xff) > 1 || o.layout & 0x10000)) throw new TsmdError('EINVAL', 'only near layout is supported with clustered raid10');
  if (o.metadata !== '1.2') throw new TsmdError('EINVAL', 'Warning: cluster md only works with superblock 1.2');
  const wm = o.members.findIndex((m) => m.writeMostly);
  if (wm >= 0) throw new TsmdError('EINVAL', `Can not set member ${wm} --write-mostly with a clustered bitmap`);
  if (o.nodes !== undefined && (!Number.isInteger(o.nodes) || o.nodes < 2)) throw new TsmdError('EINVAL', 'At least 2 nodes are needed for cluster-md');
  if (!o.clusterName) throw new TsmdError('EINVAL', "The md can't get cluster name");
  return true;
}

interface Space {
  /** bitmap space mdadm reserves (choose_bm_space of the first member) */
  bmSpace: number;
  dataOffset: number;
  componentSectors: number;
}

/** Data offset and the per-member size (the smallest member's free space, or --size). */
function memberSpace(o: CreateOptions, chunkKiB: number): Space {
  const present = o.members.filter((m) => m.sizeSectors !== null) as Array<{ sizeSectors: number }>;
  if (present.length === 0) throw new TsmdError('EINVAL', 'no devices given');
  const first = present[0]!.sizeSectors;
  const bmSpace = hasRedundancy(o.level) ? chooseBmSpace(first) : 0;
  const dataOffset = o.metadata === '1.0' ? 0 : (o.dataOffsetSectors ?? defaultDataOffset(first, chunkKiB, bmSpace));
  const freeSectors = (dev: number): number => (o.metadata === '1.0' ? Math.floor(dev / 8) * 8 - 16 - 8 - bmSpace : dev - dataOffset);
  for (const m of present) {
    if (m.sizeSectors < 24 + 2 * 8 || freeSectors(m.sizeSectors) < 16)
      throw new TsmdError('ENOSPC', `device of ${m.sizeSectors} sectors is too small for an md member (data offset ${dataOffset})`);
  }
  const chunked = chunkKiB > 0 && usesChunk(o.level);
  let compKiB = Math.min(...present.map((m) => Math.floor(freeSectors(m.sizeSectors) / 2)));
  if (chunked) compKiB -= compKiB % chunkKiB;
  if (o.level === 1) compKiB -= compKiB % 64;
  if (o.sizeKiB !== undefined) {
    if (o.sizeKiB > compKiB) throw new TsmdError('ENOSPC', `--size ${o.sizeKiB}K is larger than the smallest device allows (${compKiB}K)`);
    compKiB = o.sizeKiB;
    if (chunked && compKiB % chunkKiB !== 0) throw new TsmdError('EINVAL', `--size ${compKiB}K is not a multiple of the chunk size ${chunkKiB}K`);
  }
  if (compKiB <= 0) throw new TsmdError('ENOSPC', 'devices are too small for this chunk size');
  return { bmSpace, dataOffset, componentSectors: compKiB * 2 };
}

/** The array size in sectors (linear/raid0: 0 here, summed from the members' data_size later). */
function arraySize(o: CreateOptions, layout: number, chunkSectors: number, componentSectors: number): number {
  switch (o.level) {
    case -1:
    case 0:
      return 0;
    case 1:
      return componentSectors;
    case 4:
    case 5:
      return componentSectors * (o.raidDisks - 1);
    case 6:
      return componentSectors * (o.raidDisks - 2);
    default: {
      const g = { raidDisks: o.raidDisks, layout, chunkSectors, componentSectors };
      raid10Validate(g);
      return raid10ArraySectors(g);
    }
  }
}

interface BitmapGeometry {
  chunkBytes: number;
  areaSectors: number;
  nbits: number;
}

/** The bitmap's chunk (mdadm's default, or --bitmap-chunk checked) and area for the sync space. */
function bitmapGeometry(o: CreateOptions, syncSectors: number, componentSectors: number): BitmapGeometry {
  if (o.bitmap === 'none') return { chunkBytes: 0, areaSectors: 0, nbits: 0 };
  const room = chooseBmSpace(componentSectors) || 8;
  const { chunk, minChunk } = defaultBitmapChunk(syncSectors, room);
  const chunkBytes = o.bitmapChunkBytes ?? chunk;
  if (chunkBytes < 512 || (chunkBytes & (chunkBytes - 1)) !== 0) throw new TsmdError('EINVAL', `bitmap chunk ${chunkBytes} bytes is not a power of two`);
  if (chunkBytes < minChunk) throw new TsmdError('EINVAL', `bitmap chunk ${chunkBytes / 1024}K too small: at least ${minChunk / 1024}K is needed for this size`);
  const nbits = bitmapBits(syncSectors, chunkBytes);
  return { chunkBytes, areaSectors: bitmapAreaBytes(nbits) / 512, nbits };
}

/** Device numbers and the roles table (mdadm's raid4/5 trick: the last active member starts as a spare). */
function rolesOf(o: CreateOptions, recoverOntoLast: boolean): { devNumbers: number[]; roles: number[]; maxDev: number } {
  const devNumbers: number[] = [];
  const maxDev = Math.max(128, (roundUp(256 + 2 * o.members.length, 512) - 256) / 2);
  const roles = new Array<number>(maxDev).fill(Role.SPARE);
  for (let i = 0; i < o.members.length; i++) {
    const dn = recoverOntoLast && i >= o.raidDisks - 1 ? i + 1 : i;
    devNumbers.push(dn);
    if (o.members[i]!.sizeSectors === null) continue;
    if (i < o.raidDisks && !(recoverOntoLast && i === o.raidDisks - 1)) roles[dn] = i;
  }
  if (devNumbers[devNumbers.length - 1]! >= maxDev) throw new TsmdError('EINVAL', 'too many devices');
  return { devNumbers, roles, maxDev };
}

/** Everything planCreate decided for the array, which each member's superblock repeats. */
interface ArrayPlan {
  o: CreateOptions;
  layout: number;
  chunkSectors: number;
  space: Space;
  bitmap: BitmapGeometry;
  clustered: boolean;
  nodes: number;
  syncSectors: number;
  missing: number;
  recoverOntoLast: boolean;
  needsResync: boolean;
  devNumbers: number[];
  roles: number[];
  maxDev: number;
}

/** Where a member's superblock, bitmap and bad-block log go, and its data size (mdadm's super1 layout). */
function memberPlacement(a: ArrayPlan, dev: number): { sbStart: number; bitmapOffset: number; bblogOffset: number; bblogSize: number; dataSize: number } {
  const { o, space, bitmap, clustered, nodes } = a;
  const minor = o.metadata === '1.0' ? 0 : o.metadata === '1.1' ? 1 : 2;
  const sbStart = sbLocation(minor, dev);
  const bmArea = bitmap.areaSectors * Math.max(1, nodes);
  let bitmapOffset = 0;
  let bblogOffset = 0;
  let bblogSize = 0;
  if (minor === 0) {
    if (o.bitmap !== 'none') bitmapOffset = -bmArea - 8;
    if (!clustered) {
      bblogOffset = -8;
      bblogSize = 8;
    }
    const dataSize = Math.max(space.componentSectors, sbStart - (o.bitmap !== 'none' ? bmArea : space.bmSpace) - 8);
    return { sbStart, bitmapOffset, bblogOffset, bblogSize, dataSize };
  }
  if (o.bitmap !== 'none') {
    bitmapOffset = 8;
    if (sbStart + 8 + bmArea > space.dataOffset) {
      // super1.c write_bitmap1: every node's bitmap between the superblock's 4K and the data
      if (clustered) throw new TsmdError('ENOSPC', `Warning: The max num of nodes can't exceed ${Math.floor(((space.dataOffset - sbStart) * 512 - 4096) / (bitmap.areaSectors * 512))}`);
      throw new TsmdError('ENOSPC', `bitmap (${bmArea} sectors) does not fit between the superblock and the data offset ${space.dataOffset}`);
    }
  }
  if (!clustered) {
    const want = o.bitmap !== 'none' ? bitmapOffset + bitmap.areaSectors : 8 + space.bmSpace;
    if (space.dataOffset >= sbStart + want + 8) bblogOffset = want;
    else if (space.dataOffset >= sbStart + 16) bblogOffset = space.dataOffset - 8 - sbStart;
    if (bblogOffset !== 0) bblogSize = 8;
  }
  return { sbStart, bitmapOffset, bblogOffset, bblogSize, dataSize: dev - space.dataOffset };
}

/** One member's superblock as mdadm --create writes it. */
function memberSuperblock(a: ArrayPlan, i: number, place: ReturnType<typeof memberPlacement>): Superblock1 {
  const { o, layout, chunkSectors, space, clustered } = a;
  const level = o.level;
  const m = o.members[i]!;
  let feature = 0;
  if (o.bitmap !== 'none') feature |= Feature.BITMAP_OFFSET;
  if (clustered) feature |= Feature.CLUSTERED;
  const noRedundancy = level === 0 || level === -1;
  return {
    majorVersion: 1,
    featureMap: feature,
    pad0: 0,
    setUuid: o.uuid.slice(),
    setName: nameBytes(o.setName, 32),
    ctime: BigInt(o.nowSeconds),
    level,
    layout: level === 1 || level === -1 ? 0 : layout,
    size: noRedundancy ? 0n : BigInt(space.componentSectors),
    chunkSize: chunkSectors,
    raidDisks: o.raidDisks,
    bitmapOffset: place.bitmapOffset,
    newLevel: 0,
    reshapePosition: 0n,
    deltaDisks: 0,
    newLayout: 0,
    newChunk: 0,
    newOffset: 0,
    dataOffset: BigInt(space.dataOffset),
    dataSize: BigInt(place.dataSize),
    superOffset: BigInt(place.sbStart),
    recoveryOffset: 0n,
    devNumber: a.devNumbers[i]!,
    cntCorrectedRead: 0,
    deviceUuid: o.deviceUuids[i]!.slice(),
    devFlags: (m.writeMostly ? 1 : 0) | (m.failFast ? 2 : 0),
    bblogShift: 0,
    bblogSize: place.bblogSize,
    bblogOffset: place.bblogOffset,
    utime: BigInt(o.nowSeconds),
    events: 0n,
    resyncOffset: noRedundancy || !a.needsResync ? MAX_SECTOR : 0n,
    sbCsum: 0,
    maxDev: a.maxDev,
    pad3: new Uint8Array(32),
    devRoles: a.roles.slice(),
  };
}

/** The bitmap area of a member: one header + bits per node slot. */
function bitmapImageOf(a: ArrayPlan): Uint8Array | null {
  const { o, bitmap, clustered, nodes } = a;
  if (o.bitmap === 'none') return null;
  const slots = Math.max(1, nodes);
  const image = new Uint8Array(bitmap.areaSectors * 512 * slots);
  for (let k = 0; k < slots; k++) {
    // the cluster name as mdadm writes it: strncpy() into the 64-byte field, the last byte NUL
    const sup = newBitmapSuper({ uuid: o.uuid, syncSectors: a.syncSectors, chunkBytes: bitmap.chunkBytes, daemonSleepSec: o.bitmapDelaySec, clustered, nodes, clusterName: nameBytes((o.clusterName ?? '').slice(0, 63), 64) });
    const base = k * bitmap.areaSectors * 512;
    image.set(encodeBitmapSuper(sup), base);
    // node 0: every bit set (whole array needs its initial sync) unless clean; others clear
    const fill = k === 0 && (a.needsResync || a.recoverOntoLast || a.missing > 0) ? 0xff : 0x00;
    image.fill(fill, base + 256, base + 256 + Math.ceil(bitmap.nbits / 8));
    // mdadm writes padding bits past nbits as 1s; keep the header-only form otherwise
    if (fill === 0 && !clustered) fillCleanBits(image.subarray(base, base + 256 + Math.ceil(bitmap.nbits / 8)), bitmap.nbits);
  }
  return image;
}

/**
 * mdadm --create's plan as a pure function: every member's superblock and bitmap image, the
 * array's size and whether it owes an initial sync. Each step is one of mdadm's Create/super1
 * decisions, in mdadm's order.
 */
export function planCreate(o: CreateOptions): CreatePlan {
  const level = o.level;
  const missing = checkDevices(o);
  const { chunkKiB, layout } = chunkAndLayout(o);
  const clustered = checkBitmap(o);
  const space = memberSpace(o, chunkKiB);
  const chunkSectors = chunkKiB * 2;
  let arraySectors = arraySize(o, layout, chunkSectors, space.componentSectors);
  const syncSectors = level === 10 ? arraySectors : space.componentSectors;
  const bitmap = bitmapGeometry(o, syncSectors, space.componentSectors);
  // mdadm raid4/5: last active device becomes a spare that the kernel recovers onto
  const recoverOntoLast = (level === 4 || level === 5) && !o.assumeClean && !o.force && missing === 0 && o.raidDisks > 1;
  const needsResync = hasRedundancy(level) && !o.assumeClean && !recoverOntoLast && missing === 0;
  const nodes = clustered ? (o.nodes ?? DEFAULT_CLUSTER_NODES) : 0;
  const roles = rolesOf(o, recoverOntoLast);
  const a: ArrayPlan = { o, layout, chunkSectors, space, bitmap, clustered, nodes, syncSectors, missing, recoverOntoLast, needsResync, ...roles };
  const sbs: PlannedMember[] = [];
  o.members.forEach((m, i) => {
    if (m.sizeSectors === null) return;
    const place = memberPlacement(a, m.sizeSectors);
    sbs.push({ index: i, sb: memberSuperblock(a, i, place), bitmapImage: bitmapImageOf(a), sbStartSector: place.sbStart });
  });
  if (level === 0) {
    const rounded = new Set(sbs.map((p) => Number(p.sb.dataSize) - (Number(p.sb.dataSize) % chunkSectors)));
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
  const { componentSectors, dataOffset } = space;
  return { members: sbs, componentSectors, dataOffsetSectors: dataOffset, chunkSectors, layout, arraySectors, recoverOntoLast, needsResync };
}
