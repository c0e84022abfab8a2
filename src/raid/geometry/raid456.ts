/**
 * RAID4 / RAID5 / RAID6 address mapping (shared/spec/md-formats.md §4.1, kernel raid5.c
 * raid5_compute_sector and the RAID6 syndrome source order). Pure functions, no I/O.
 *
 * Terms: n = raidDisks, D = data disks per stripe (n-1 or n-2), C = chunkSectors. A "stripe"
 * is one chunk row: stripe s occupies device sectors [s*C, (s+1)*C) on every member (relative
 * to the member's data_offset). Logical data chunk dd (0..D-1) of stripe s is array chunk
 * s*D + dd.
 */
import { fail, requireChunkPow2, requireInt } from './check.js';

/** md `ALGORITHM_*` layout codes (the superblock `layout` field of RAID4/5/6). */
export const Raid456Algorithm = {
  LEFT_ASYMMETRIC: 0,
  RIGHT_ASYMMETRIC: 1,
  LEFT_SYMMETRIC: 2,
  RIGHT_SYMMETRIC: 3,
  PARITY_0: 4,
  PARITY_N: 5,
  ROTATING_ZERO_RESTART: 8,
  ROTATING_N_RESTART: 9,
  ROTATING_N_CONTINUE: 10,
  LEFT_ASYMMETRIC_6: 16,
  RIGHT_ASYMMETRIC_6: 17,
  LEFT_SYMMETRIC_6: 18,
  RIGHT_SYMMETRIC_6: 19,
  PARITY_0_6: 20,
} as const;

const A = Raid456Algorithm;

export interface Raid456Geometry {
  level: 4 | 5 | 6;
  raidDisks: number;
  layout: number;
  chunkSectors: number;
}

export interface StripeMap {
  /** member role holding P */
  pDisk: number;
  /** role holding Q, -1 for level 4/5 */
  qDisk: number;
  /** dataDisks[dd] = role holding logical data chunk dd of this stripe */
  dataDisks: number[];
  /**
   * level 6: GF(2^8) coefficient exponent (slot) of data chunk dd in the Q syndrome;
   * [] for level 4/5. md layouts: walk the disks from Q+1 (disk 0 when Q is the last disk),
   * wrapping, skipping P and Q, numbering data disks 0,1,...; DDF layouts (8, 9, 10): the
   * slot is the disk number.
   */
  qSlots: number[];
  /** level 6: number of coefficient slots (D for md layouts, raidDisks for DDF); 0 for 4/5 */
  syndromeSlots: number;
}

const RAID5_LAYOUTS = [0, 1, 2, 3, 4, 5];
const RAID6_LAYOUTS = [0, 1, 2, 3, 4, 5, 8, 9, 10, 16, 17, 18, 19, 20];
/** mdadm creates RAID4 with layout 0; the kernel's takeovers write PARITY_N (5). */
const RAID4_LAYOUTS = [0, 5];

/** Layout codes the kernel accepts for `level` (RAID4: 0 and 5, both meaning parity-last). */
export function validLayouts(level: 4 | 5 | 6): number[] {
  switch (level) {
    case 4:
      return [...RAID4_LAYOUTS];
    case 5:
      return [...RAID5_LAYOUTS];
    case 6:
      return [...RAID6_LAYOUTS];
    default:
      return fail(`validLayouts: level must be 4, 5 or 6, got ${level}`);
  }
}

/** Whether the layout is one of the DDF RAID6 layouts (Q coefficients indexed by disk). */
export function isDdfLayout(g: Raid456Geometry): boolean {
  return (
    g.level === 6 &&
    (g.layout === A.ROTATING_ZERO_RESTART ||
      g.layout === A.ROTATING_N_RESTART ||
      g.layout === A.ROTATING_N_CONTINUE)
  );
}

/** Throws a TsmdError('EINVAL') unless `g` is a geometry the kernel would run. */
export function raid456Validate(g: Raid456Geometry): void {
  if (g === null || typeof g !== 'object') fail('RAID4/5/6 geometry must be an object');
  if (g.level !== 4 && g.level !== 5 && g.level !== 6) {
    fail(`RAID4/5/6 geometry: level must be 4, 5 or 6, got ${g.level}`);
  }
  requireInt('raidDisks', g.raidDisks, g.level === 6 ? 4 : 2);
  requireInt('layout', g.layout, 0);
  const allowed = g.level === 4 ? RAID4_LAYOUTS : g.level === 5 ? RAID5_LAYOUTS : RAID6_LAYOUTS;
  if (!allowed.includes(g.layout)) {
    fail(`layout ${g.layout} is not valid for RAID${g.level} (valid: ${allowed.join(', ')})`);
  }
  requireChunkPow2('chunkSectors', g.chunkSectors);
}

/** Data chunks per stripe: n-1 for RAID4/5, n-2 for RAID6. */
export function dataDisksPerStripe(g: Raid456Geometry): number {
  raid456Validate(g);
  return g.raidDisks - (g.level === 6 ? 2 : 1);
}

/**
 * P and Q roles of a stripe, plus the rule placing data chunk dd. Internal and unchecked:
 * callers validated `g` and `stripe`. Returns [p, q, diskOf] where diskOf(dd) is the role.
 */
function placement(
  level: number,
  layout: number,
  n: number,
  stripe: number,
): [number, number, (dd: number) => number] {
  if (level === 4) return [n - 1, -1, (dd) => dd];
  if (level === 5) {
    const left = n - 1 - (stripe % n);
    const right = stripe % n;
    switch (layout) {
      case A.LEFT_ASYMMETRIC:
        return [left, -1, (dd) => (dd >= left ? dd + 1 : dd)];
      case A.RIGHT_ASYMMETRIC:
        return [right, -1, (dd) => (dd >= right ? dd + 1 : dd)];
      case A.LEFT_SYMMETRIC:
        return [left, -1, (dd) => (left + 1 + dd) % n];
      case A.RIGHT_SYMMETRIC:
        return [right, -1, (dd) => (right + 1 + dd) % n];
      case A.PARITY_0:
        return [0, -1, (dd) => dd + 1];
      case A.PARITY_N:
        return [n - 1, -1, (dd) => dd];
    }
    return fail(`layout ${layout} is not valid for RAID5`);
  }
  // RAID6
  switch (layout) {
    case A.LEFT_ASYMMETRIC:
    case A.RIGHT_ASYMMETRIC:
    case A.ROTATING_ZERO_RESTART:
    case A.ROTATING_N_RESTART: {
      let p: number;
      if (layout === A.LEFT_ASYMMETRIC) p = n - 1 - (stripe % n);
      else if (layout === A.ROTATING_N_RESTART) p = n - 1 - ((stripe + 1) % n);
      else p = stripe % n;
      if (p === n - 1) return [p, 0, (dd) => dd + 1]; // Q D D D P
      return [p, p + 1, (dd) => (dd >= p ? dd + 2 : dd)]; // D D P Q D
    }
    case A.LEFT_SYMMETRIC:
    case A.RIGHT_SYMMETRIC: {
      const p = layout === A.LEFT_SYMMETRIC ? n - 1 - (stripe % n) : stripe % n;
      return [p, (p + 1) % n, (dd) => (p + 2 + dd) % n];
    }
    case A.ROTATING_N_CONTINUE: {
      const p = n - 1 - (stripe % n);
      return [p, (p + n - 1) % n, (dd) => (p + 1 + dd) % n];
    }
    case A.PARITY_0:
      return [0, 1, (dd) => dd + 2];
    case A.PARITY_N:
      return [n - 2, n - 1, (dd) => dd];
    case A.LEFT_ASYMMETRIC_6:
    case A.RIGHT_ASYMMETRIC_6:
    case A.LEFT_SYMMETRIC_6:
    case A.RIGHT_SYMMETRIC_6: {
      // the RAID5 layout of the same name over disks 0..n-2, Q fixed on the last disk
      const m = n - 1;
      const leftward = layout === A.LEFT_ASYMMETRIC_6 || layout === A.LEFT_SYMMETRIC_6;
      const p = leftward ? m - 1 - (stripe % m) : stripe % m;
      const asym = layout === A.LEFT_ASYMMETRIC_6 || layout === A.RIGHT_ASYMMETRIC_6;
      return [p, n - 1, asym ? (dd) => (dd >= p ? dd + 1 : dd) : (dd) => (p + 1 + dd) % m];
    }
    case A.PARITY_0_6:
      return [0, n - 1, (dd) => dd + 1];
  }
  return fail(`layout ${layout} is not valid for RAID6`);
}

/** P/Q/data roles of stripe number `stripe` (= chunk row on every member). */
export function stripeMap(g: Raid456Geometry, stripe: number): StripeMap {
  const dataCount = dataDisksPerStripe(g);
  requireInt('stripe', stripe, 0);
  const n = g.raidDisks;
  const [pDisk, qDisk, diskOf] = placement(g.level, g.layout, n, stripe);
  const dataDisks = new Array<number>(dataCount);
  for (let dd = 0; dd < dataCount; dd++) dataDisks[dd] = diskOf(dd);
  if (g.level !== 6) return { pDisk, qDisk: -1, dataDisks, qSlots: [], syndromeSlots: 0 };

  let qSlots: number[];
  let syndromeSlots: number;
  if (isDdfLayout(g)) {
    qSlots = dataDisks.slice();
    syndromeSlots = n;
  } else {
    const slotOfDisk = new Array<number>(n).fill(-1);
    const start = qDisk === n - 1 ? 0 : qDisk + 1;
    let next = 0;
    for (let i = 0; i < n; i++) {
      const disk = (start + i) % n;
      if (disk !== pDisk && disk !== qDisk) slotOfDisk[disk] = next++;
    }
    qSlots = dataDisks.map((disk) => slotOfDisk[disk]);
    syndromeSlots = dataCount;
  }
  return { pDisk, qDisk, dataDisks, qSlots, syndromeSlots };
}

/** Array sector -> stripe, logical data index dd, member role and device sector. */
export function mapArraySector(
  g: Raid456Geometry,
  arraySector: number,
): { stripe: number; dd: number; disk: number; deviceSector: number } {
  const dataCount = dataDisksPerStripe(g);
  requireInt('arraySector', arraySector, 0);
  const c = g.chunkSectors;
  const chunkNo = Math.floor(arraySector / c);
  const offset = arraySector - chunkNo * c;
  const stripe = Math.floor(chunkNo / dataCount);
  const dd = chunkNo - stripe * dataCount;
  const disk = placement(g.level, g.layout, g.raidDisks, stripe)[2](dd);
  return { stripe, dd, disk, deviceSector: stripe * c + offset };
}

/**
 * Inverse of mapArraySector: the array sector stored at `deviceSector` of member `disk`, or
 * null when that chunk holds P or Q.
 */
export function raid456DeviceToArray(
  g: Raid456Geometry,
  disk: number,
  deviceSector: number,
): { arraySector: number; stripe: number; dd: number } | null {
  raid456Validate(g);
  requireInt('disk', disk, 0, g.raidDisks - 1);
  requireInt('deviceSector', deviceSector, 0);
  const stripe = Math.floor(deviceSector / g.chunkSectors);
  const offset = deviceSector - stripe * g.chunkSectors;
  const map = stripeMap(g, stripe);
  const dd = map.dataDisks.indexOf(disk);
  if (dd < 0) return null;
  const arraySector = (stripe * map.dataDisks.length + dd) * g.chunkSectors + offset;
  return { arraySector, stripe, dd };
}

/** Exported array size: round_down(componentSectors, chunk) * D (kernel raid5_size). */
export function raid456ArraySectors(g: Raid456Geometry, componentSectors: number): number {
  const dataCount = dataDisksPerStripe(g);
  requireInt('componentSectors', componentSectors, 0);
  const rows = Math.floor(componentSectors / g.chunkSectors);
  return rows * g.chunkSectors * dataCount;
}
