/**
 * RAID10 address mapping (shared/spec/md-formats.md §4.3; kernel raid10.c setup_geo,
 * calc_sectors, raid10_size and __raid10_find_phys). Pure functions, no I/O.
 *
 * layout bits: 0-7 near copies, 8-15 far copies, 16 "offset", 17-18 far-set mode, >= 19 zero.
 */
import { assert } from '../../errors.js';
import { fail, requireArraySector, requireChunkPow2, requireInt } from './check.js';

export interface Raid10Layout {
  near: number;
  far: number;
  offset: boolean;
  /** 0 = original (far set = all disks), 1 = buggy far sets (raid_disks/far), 2 = near*far */
  farSetMode: 0 | 1 | 2;
}

export interface Raid10Geometry {
  raidDisks: number;
  layout: number;
  chunkSectors: number;
  /** the superblock `size`: per-member sectors available to the array */
  componentSectors: number;
}

/** Everything the mapping needs, derived once from a geometry (kernel `struct geom`). */
export interface Raid10Derived extends Raid10Layout {
  copies: number;
  farSetSize: number;
  /** array size in sectors (kernel raid10_size) */
  arraySectors: number;
  /** per-member sectors actually used (kernel conf->dev_sectors) */
  devSectors: number;
  /** distance between far copies on a member (kernel geo->stride) */
  strideSectors: number;
}

/** Splits a RAID10 layout value; throws on bits >= 19, far-set mode 3, or zero copies. */
export function decodeRaid10Layout(layout: number): Raid10Layout {
  requireInt('RAID10 layout', layout, 0);
  if (layout >= 2 ** 19) {
    fail(`RAID10 layout 0x${layout.toString(16)} has bits >= 19 set; only bits 0-18 are defined`);
  }
  const near = layout & 0xff;
  const far = (layout >> 8) & 0xff;
  const offset = (layout & 0x10000) !== 0;
  const mode = layout >> 17;
  if (mode === 3) fail(`RAID10 layout 0x${layout.toString(16)} has an invalid far-set mode 3`);
  if (near === 0 || far === 0) {
    fail(
      `RAID10 layout 0x${layout.toString(16)} has ${near} near and ${far} far copies; both >= 1`,
    );
  }
  return { near, far, offset, farSetMode: mode as 0 | 1 | 2 };
}

export function encodeRaid10Layout(l: Raid10Layout): number {
  if (l === null || typeof l !== 'object') fail('RAID10 layout must be an object');
  requireInt('near copies', l.near, 1, 255);
  requireInt('far copies', l.far, 1, 255);
  if (l.farSetMode !== 0 && l.farSetMode !== 1 && l.farSetMode !== 2) {
    fail(`RAID10 far-set mode must be 0, 1 or 2, got ${l.farSetMode}`);
  }
  return l.near | (l.far << 8) | (l.offset ? 0x10000 : 0) | (l.farSetMode * 0x20000);
}

/**
 * Throws a TsmdError('EINVAL') unless the kernel would run this geometry: layout decodable,
 * near >= 1, far >= 1, 2 <= near*far <= raidDisks, chunk a power of two >= 8 sectors.
 */
export function raid10Validate(g: Raid10Geometry): void {
  raid10Derive(g);
}

/** Validates `g` and derives the kernel's geometry values (copies, far set, stride, sizes). */
export function raid10Derive(g: Raid10Geometry): Raid10Derived {
  if (g === null || typeof g !== 'object') fail('RAID10 geometry must be an object');
  requireInt('raidDisks', g.raidDisks, 2);
  const l = decodeRaid10Layout(g.layout);
  requireChunkPow2('chunkSectors', g.chunkSectors);
  requireInt('componentSectors', g.componentSectors, 0);
  const n = g.raidDisks;
  const copies = l.near * l.far;
  if (copies < 2 || copies > n) {
    fail(
      `RAID10 layout 0x${g.layout.toString(16)} needs ${copies} copies: at least 2 and at most ` +
        `raidDisks (${n})`,
    );
  }
  const farSetSize = l.farSetMode === 0 ? n : l.farSetMode === 1 ? Math.floor(n / l.far) : copies;
  const c = g.chunkSectors;
  // kernel calc_sectors(): array chunks, then used chunks per device (rounded up)
  const arrayChunks = Math.floor(
    (Math.floor(Math.floor(g.componentSectors / c) / l.far) * n) / l.near,
  );
  const devChunks = Math.ceil((arrayChunks * copies) / n);
  const strideSectors = l.offset ? c : Math.floor(devChunks / l.far) * c;
  // kernel raid10_size() from dev_sectors; equals arrayChunks (checked here as an invariant)
  const sizeChunks = Math.floor((Math.floor(devChunks / l.far) * n) / l.near);
  assert(sizeChunks === arrayChunks, `raid10 size ${sizeChunks} != ${arrayChunks} chunks`);
  return {
    ...l,
    copies,
    farSetSize,
    arraySectors: arrayChunks * c,
    devSectors: devChunks * c,
    strideSectors,
  };
}

/** Exported array size in sectors: chunk * floor(floor(floor(size/chunk)/far) * n / near). */
export function raid10ArraySectors(g: Raid10Geometry): number {
  return raid10Derive(g).arraySectors;
}

/** One step of a far copy to the next disk, within its far set (kernel __raid10_find_phys). */
function nextFarDisk(d: number, n: number, near: number, farSetSize: number): number {
  const set = Math.floor(d / farSetSize);
  const lastSetStart = (Math.floor(n / farSetSize) - 1) * farSetSize;
  const lastSetSize = farSetSize + (n % farSetSize);
  d += near;
  if (n % farSetSize !== 0 && d > lastSetStart) {
    return lastSetStart + ((d - lastSetStart) % lastSetSize);
  }
  return (d % farSetSize) + set * farSetSize;
}

function mapDerived(
  g: Raid10Geometry,
  d: Raid10Derived,
  arraySector: number,
): Array<{ disk: number; deviceSector: number }> {
  const c = g.chunkSectors;
  const n = g.raidDisks;
  const arrayChunk = Math.floor(arraySector / c);
  const offsetInChunk = arraySector - arrayChunk * c;
  const virtualChunk = arrayChunk * d.near;
  let row = Math.floor(virtualChunk / n);
  let dev = virtualChunk - row * n;
  if (d.offset) row *= d.far;
  let sector = row * c + offsetInChunk;
  const out: Array<{ disk: number; deviceSector: number }> = [];
  for (let i = 0; i < d.near; i++) {
    let disk = dev;
    let s = sector;
    out.push({ disk, deviceSector: s });
    for (let f = 1; f < d.far; f++) {
      disk = nextFarDisk(disk, n, d.near, d.farSetSize);
      s += d.strideSectors;
      out.push({ disk, deviceSector: s });
    }
    dev++;
    if (dev >= n) {
      dev = 0;
      sector += c;
    }
  }
  return out;
}

/**
 * All copies of array sector `arraySector`, in the kernel's slot order (near copy 0 and its
 * far copies, near copy 1 and its far copies, ...). Works for near/far/offset layouts and the
 * far-set modes 1 and 2.
 */
export function raid10Map(
  g: Raid10Geometry,
  arraySector: number,
): Array<{ disk: number; deviceSector: number }> {
  const d = raid10Derive(g);
  requireArraySector(arraySector, d.arraySectors);
  return mapDerived(g, d, arraySector);
}

/**
 * Inverse of raid10Map: the array sector whose copy lives at `deviceSector` of member `disk`
 * (what the kernel's raid10_find_virt answers for recovery), or null when that address holds
 * no copy (past the used area, or the unused tail of a far region). Found by mapping the few
 * candidate array chunks forward, so it agrees with raid10Map by construction.
 */
export function raid10DeviceToArray(
  g: Raid10Geometry,
  disk: number,
  deviceSector: number,
): number | null {
  const d = raid10Derive(g);
  const n = g.raidDisks;
  const c = g.chunkSectors;
  requireInt('disk', disk, 0, n - 1);
  requireInt('deviceSector', deviceSector, 0);
  if (deviceSector >= d.devSectors) return null;
  const offsetInChunk = deviceSector % c;
  const physicalRow = Math.floor(deviceSector / c);
  // virtual rows (rows of the first far copy, before the offset multiplication) to try
  const rows = new Set<number>();
  if (d.offset) {
    for (let r = Math.floor((physicalRow - d.far) / d.far); r <= physicalRow / d.far; r++) {
      if (r >= 0) rows.add(r);
    }
  } else {
    const strideRows = d.strideSectors / c;
    for (let k = 0; k < d.far && k * strideRows <= physicalRow; k++) {
      const r = physicalRow - k * strideRows;
      rows.add(r);
      if (r > 0) rows.add(r - 1);
    }
  }
  for (const r of [...rows].sort((a, b) => a - b)) {
    const first = Math.floor((r * n) / d.near);
    const last = Math.floor(((r + 1) * n - 1) / d.near);
    for (let chunk = first; chunk <= last; chunk++) {
      const arraySector = chunk * c + offsetInChunk;
      if (arraySector >= d.arraySectors) break;
      const copies = mapDerived(g, d, arraySector);
      if (copies.some((cp) => cp.disk === disk && cp.deviceSector === deviceSector)) {
        return arraySector;
      }
    }
  }
  return null;
}
