/**
 * RAID0 zones and address mapping (shared/spec/md-formats.md §4.4; kernel raid0.c
 * create_strip_zones, find_zone, map_sector). Pure functions, no I/O.
 *
 * The kernel only requires the chunk to be a multiple of the members' logical block size, so
 * any positive number of 512-byte sectors works here (it need not be a power of two).
 */
import { fail, requireArraySector, requireInt } from './check.js';

export interface Raid0Zone {
  /** array sector where this zone ends (exclusive), accumulated over the zones */
  zoneEndSectors: number;
  /** member sector (relative to data_offset) where this zone starts on each of its members */
  devStartSectors: number;
  /** roles of the members striped in this zone, ascending */
  members: number[];
}

/** Superblock `layout` values for RAID0 (with feature bit RAID0_LAYOUT). */
export const Raid0Layout = { UNSPECIFIED: 0, ORIGINAL: 1, ALTERNATE: 2 } as const;

/**
 * Zones as the kernel's create_strip_zones builds them. memberSectors is indexed by role and
 * holds each member's data_size; each is rounded down to the chunk first.
 */
export function raid0Zones(memberSectors: number[], chunkSectors: number): Raid0Zone[] {
  if (!Array.isArray(memberSectors) || memberSectors.length === 0) {
    fail('raid0Zones: memberSectors must be a non-empty array (one entry per role)');
  }
  requireInt('chunkSectors', chunkSectors, 1);
  const sizes = memberSectors.map((s, role) => {
    requireInt(`memberSectors[${role}]`, s, 0);
    const rounded = Math.floor(s / chunkSectors) * chunkSectors;
    if (rounded === 0) {
      fail(`RAID0 member role ${role} (${s} sectors) is smaller than one chunk (${chunkSectors})`);
    }
    return rounded;
  });
  const all = sizes.map((_, role) => role);
  let smallest = Math.min(...sizes);
  const zones: Raid0Zone[] = [
    { zoneEndSectors: smallest * sizes.length, devStartSectors: 0, members: all },
  ];
  const zoneCount = new Set(sizes).size;
  let zoneEnd = zones[0].zoneEndSectors;
  for (let z = 1; z < zoneCount; z++) {
    const devStart = smallest;
    const members = all.filter((role) => sizes[role] > devStart);
    smallest = Math.min(...members.map((role) => sizes[role]));
    zoneEnd += (smallest - devStart) * members.length;
    zones.push({ zoneEndSectors: zoneEnd, devStartSectors: devStart, members });
  }
  return zones;
}

/** Array size: the last zone's end = sum of the rounded member sizes. */
export function raid0ArraySectors(zones: Raid0Zone[]): number {
  requireZones(zones);
  return zones[zones.length - 1].zoneEndSectors;
}

function requireZones(zones: Raid0Zone[]): void {
  if (!Array.isArray(zones) || zones.length === 0) fail('RAID0 zones must be a non-empty array');
  let prevEnd = 0;
  for (const [i, z] of zones.entries()) {
    if (!z || !Array.isArray(z.members) || z.members.length === 0) {
      fail(`RAID0 zone ${i} has no members`);
    }
    if (!Number.isSafeInteger(z.zoneEndSectors) || z.zoneEndSectors <= prevEnd) {
      fail(`RAID0 zone ${i} ends at ${z.zoneEndSectors}, not after the previous zone (${prevEnd})`);
    }
    prevEnd = z.zoneEndSectors;
  }
}

/**
 * Member role and device sector of array sector `arraySector`.
 * layout: 0 (unspecified) or 1 = original (pre-3.14 kernels: the member is chosen by the
 * global chunk number), 2 = alternate (3.14+: chosen by the zone-relative chunk number).
 * With one zone, or when zone 1 has a single member, both are the same and "original" is used,
 * as the kernel does.
 */
export function raid0Map(
  zones: Raid0Zone[],
  chunkSectors: number,
  layout: number,
  arraySector: number,
): { disk: number; deviceSector: number } {
  requireZones(zones);
  requireInt('chunkSectors', chunkSectors, 1);
  if (layout !== 0 && layout !== 1 && layout !== 2) {
    fail(`RAID0 layout must be 0, 1 (original) or 2 (alternate), got ${layout}`);
  }
  requireArraySector(arraySector, raid0ArraySectors(zones));
  let zi = 0;
  while (arraySector >= zones[zi].zoneEndSectors) zi++;
  const zone = zones[zi];
  const zoneOffset = arraySector - (zi === 0 ? 0 : zones[zi - 1].zoneEndSectors);
  const nb = zone.members.length;
  const alternate = layout === 2 && zones.length > 1 && zones[1].members.length > 1;
  const selector = alternate ? zoneOffset : arraySector;
  const devChunk = Math.floor(zoneOffset / (chunkSectors * nb));
  const member = Math.floor(selector / chunkSectors) % nb;
  return {
    disk: zone.members[member],
    deviceSector: zone.devStartSectors + devChunk * chunkSectors + (selector % chunkSectors),
  };
}
