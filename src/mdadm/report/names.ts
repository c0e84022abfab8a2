/**
 * The name tables mdadm 4.2 prints (maps.c: pers, r0layout, r5layout, r6layout,
 * consistency_policies) and print_r10_layout (util.c). Private to the report formatters;
 * lookups return the first name that maps to a number, as mdadm's map_num does. The layout
 * tables themselves live with the geometry (src/raid/geometry/names.ts).
 */
import { mdadmLayoutName, raid10LayoutSuffix } from '../../raid/geometry/names.js';

const LEVEL_NAMES = new Map<number, string>([
  [-1, 'linear'],
  [0, 'raid0'],
  [1, 'raid1'],
  [4, 'raid4'],
  [5, 'raid5'],
  [-4, 'multipath'],
  [6, 'raid6'],
  [10, 'raid10'],
  [-5, 'faulty'],
  [-100, 'container'],
]);

/** C's `int` view of a 32-bit field. */
export function int32(v: number): number {
  return v | 0;
}

/** map_num(pers, level): undefined when mdadm prints "-unknown-" (or nothing). */
export function levelName(level: number): string | undefined {
  return LEVEL_NAMES.get(int32(level));
}

export function r5LayoutName(layout: number): string | undefined {
  return mdadmLayoutName('r5', int32(layout));
}

export function r6LayoutName(layout: number): string | undefined {
  return mdadmLayoutName('r6', int32(layout));
}

export function r0LayoutName(layout: number): string | undefined {
  return mdadmLayoutName('r0', int32(layout));
}

/**
 * print_r10_layout(): " near=2", " far=2", " near=2, offset=2", or "NO REDUNDANCY" (sic, no
 * leading space) for one copy. The caller prints the label ("Layout :") right before it.
 */
export function r10LayoutText(layout: number): string {
  return raid10LayoutSuffix(layout >>> 0);
}

export type ConsistencyPolicy = 'unknown' | 'none' | 'resync' | 'bitmap' | 'journal' | 'ppl';
