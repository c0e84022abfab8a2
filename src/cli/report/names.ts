/**
 * The name tables mdadm 4.2 prints (maps.c: pers, r0layout, r5layout, r6layout,
 * consistency_policies) and print_r10_layout (util.c). Private to the report formatters;
 * lookups return the first name that maps to a number, as mdadm's map_num does.
 */

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

const R5_LAYOUTS = new Map<number, string>([
  [0, 'left-asymmetric'],
  [1, 'right-asymmetric'],
  [2, 'left-symmetric'],
  [3, 'right-symmetric'],
  [4, 'parity-first'],
  [5, 'parity-last'],
]);

const R6_LAYOUTS = new Map<number, string>([
  [0, 'left-asymmetric'],
  [1, 'right-asymmetric'],
  [2, 'left-symmetric'],
  [3, 'right-symmetric'],
  [4, 'parity-first'],
  [5, 'parity-last'],
  [8, 'ddf-zero-restart'],
  [9, 'ddf-N-restart'],
  [10, 'ddf-N-continue'],
  [16, 'left-asymmetric-6'],
  [17, 'right-asymmetric-6'],
  [18, 'left-symmetric-6'],
  [19, 'right-symmetric-6'],
  [20, 'parity-first-6'],
]);

const R0_LAYOUTS = new Map<number, string>([
  [1, 'original'],
  [2, 'alternate'],
  [0, 'dangerous'],
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
  return R5_LAYOUTS.get(int32(layout));
}

export function r6LayoutName(layout: number): string | undefined {
  return R6_LAYOUTS.get(int32(layout));
}

export function r0LayoutName(layout: number): string | undefined {
  return R0_LAYOUTS.get(int32(layout));
}

/**
 * print_r10_layout(): " near=2", " far=2", " near=2, offset=2", or "NO REDUNDANCY" (sic, no
 * leading space) for one copy. The caller prints the label ("Layout :") right before it.
 */
export function r10LayoutText(layout: number): string {
  const near = layout & 255;
  const far = (layout >> 8) & 255;
  const offset = (layout & 0x10000) !== 0;
  let out = '';
  let sep = '';
  if (near !== 1) {
    out += `${sep} near=${near}`;
    sep = ',';
  }
  if (far !== 1) out += `${sep} ${offset ? 'offset' : 'far'}=${far}`;
  if (near * far === 1) out += 'NO REDUNDANCY';
  return out;
}

export type ConsistencyPolicy = 'unknown' | 'none' | 'resync' | 'bitmap' | 'journal' | 'ppl';
