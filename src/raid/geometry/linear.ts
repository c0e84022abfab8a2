/**
 * Linear (concatenation) address mapping: members in role order, each contributing its whole
 * data_size (shared/spec/md-formats.md §2.7, §4.4). Pure functions, no I/O.
 */
import { AssertionError } from '../../errors.js';
import { fail, requireArraySector, requireInt } from './check.js';

function requireMembers(memberSectors: number[]): void {
  if (!Array.isArray(memberSectors) || memberSectors.length === 0) {
    fail('linear: memberSectors must be a non-empty array (one entry per role)');
  }
  memberSectors.forEach((s, role) => {
    requireInt(`memberSectors[${role}]`, s, 0);
  });
}

export function linearArraySectors(memberSectors: number[]): number {
  requireMembers(memberSectors);
  let total = 0;
  for (const s of memberSectors) total += s;
  requireInt('linear array size', total, 0);
  return total;
}

/** Member role and device sector (relative to data_offset) of array sector `arraySector`. */
export function linearMap(
  memberSectors: number[],
  arraySector: number,
): { disk: number; deviceSector: number } {
  requireArraySector(arraySector, linearArraySectors(memberSectors));
  let start = 0;
  for (let disk = 0; disk < memberSectors.length; disk++) {
    const end = start + memberSectors[disk];
    if (arraySector < end) return { disk, deviceSector: arraySector - start };
    start = end;
  }
  throw new AssertionError('tsmd invariant violated: linearMap ran past the last member');
}
