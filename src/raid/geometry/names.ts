/**
 * mdadm's layout vocabulary, both directions, as mdadm 4.2 parses `--layout=` (mdadm.c with
 * the maps.c tables r5layout / r6layout / r0layout and util.c parse_layout_10) and prints the
 * `Layout :` line of `--examine` (super1.c) and `--detail` (Detail.c).
 *
 * Where mdadm prints the line at all:
 *  - RAID5/6: always, `map_num(r5layout|r6layout)` or `-unknown-`.
 *  - RAID10: always, via print_r10_layout (see raid10LayoutSuffix for the exact bytes).
 *  - RAID0: `--examine` only when the superblock has feature bit RAID0_LAYOUT; `--detail` only
 *    when the kernel's layout is non-zero (a 1.x RAID0 without the bit reports -1, printed
 *    `-unknown-`). Names: 1 `original`, 2 `alternate`, 0 `dangerous`.
 *  - RAID4, RAID1, linear: never.
 */
import { fail, requireInt } from './check.js';

type Mapping = ReadonlyArray<readonly [string, number]>;

/** maps.c r5layout, in table order (the first name of a value is what mdadm prints). */
const R5_LAYOUT: Mapping = [
  ['left-asymmetric', 0],
  ['right-asymmetric', 1],
  ['left-symmetric', 2],
  ['right-symmetric', 3],
  ['default', 2],
  ['la', 0],
  ['ra', 1],
  ['ls', 2],
  ['rs', 3],
  ['parity-first', 4],
  ['parity-last', 5],
  ['ddf-zero-restart', 1],
  ['ddf-N-restart', 0],
  ['ddf-N-continue', 2],
];

/** maps.c r6layout, in table order. */
const R6_LAYOUT: Mapping = [
  ['left-asymmetric', 0],
  ['right-asymmetric', 1],
  ['left-symmetric', 2],
  ['right-symmetric', 3],
  ['default', 2],
  ['la', 0],
  ['ra', 1],
  ['ls', 2],
  ['rs', 3],
  ['parity-first', 4],
  ['parity-last', 5],
  ['ddf-zero-restart', 8],
  ['ddf-N-restart', 9],
  ['ddf-N-continue', 10],
  ['left-asymmetric-6', 16],
  ['right-asymmetric-6', 17],
  ['left-symmetric-6', 18],
  ['right-symmetric-6', 19],
  ['parity-first-6', 20],
];

/** maps.c r0layout, in table order. */
const R0_LAYOUT: Mapping = [
  ['original', 1],
  ['alternate', 2],
  ['1', 1],
  ['2', 2],
  ['dangerous', 0],
];

/** mdadm's level names (maps.c pers, first name per level) for messages. */
function levelName(level: number): string {
  switch (level) {
    case -1:
      return 'linear';
    case -4:
      return 'multipath';
    case -5:
      return 'faulty';
    case -100:
      return 'container';
    default:
      return `raid${level}`;
  }
}

function byName(map: Mapping, name: string): number | undefined {
  // mdadm's map_name is an exact, case-sensitive strcmp
  for (const [n, v] of map) if (n === name) return v;
  return undefined;
}

function byNumber(map: Mapping, value: number): string | undefined {
  for (const [n, v] of map) if (v === value) return n;
  return undefined;
}

function names(map: Mapping): string {
  return map.map(([n]) => n).join(', ');
}

/**
 * A `--layout=` value for `level` (0, 5, 6, 10) as mdadm 4.2 reads it. For RAID10 the text is
 * `nK`, `fK` or `oK` with 1 <= K <= 200; when raidDisks is given, near*far copies must fit
 * ("that layout requires at least N devices"). Throws TsmdError('EINVAL') listing valid names.
 */
export function parseLayout(level: number, text: string, raidDisks?: number): number {
  requireInt('level', level, -100);
  if (typeof text !== 'string') fail('layout must be a string');
  switch (level) {
    case 0:
    case 5:
    case 6: {
      const map = level === 0 ? R0_LAYOUT : level === 5 ? R5_LAYOUT : R6_LAYOUT;
      const value = byName(map, text);
      if (value === undefined) {
        fail(`layout ${text} not understood for raid${level}; valid layouts: ${names(map)}`);
      }
      return value;
    }
    case 10: {
      // util.c parse_layout_10: a letter, then strtoul(..., 10) with nothing after it
      const m = /^([nfo])[ \t\n\v\f\r]*\+?(\d+)$/.exec(text);
      const copies = m ? Number(m[2]) : 0;
      if (!m || copies < 1 || copies > 200) {
        fail(
          'layout for raid10 must be \'nNN\', \'oNN\' or \'fNN\' where NN is a number (1-200), ' +
            `not ${text}`,
        );
      }
      const value =
        m[1] === 'n'
          ? 0x100 + copies
          : m[1] === 'o'
            ? 0x10000 + (copies << 8) + 1
            : 1 + (copies << 8);
      if (raidDisks !== undefined) {
        requireInt('raidDisks', raidDisks, 1);
        if (copies > raidDisks) fail(`that layout requires at least ${copies} devices`);
      }
      return value;
    }
    default:
      return fail(`layout not meaningful for ${levelName(level)} arrays.`);
  }
}

/**
 * map_num() over maps.c's r5layout / r6layout / r0layout: the first name of a value, as mdadm
 * prints it; undefined when mdadm has none ("-unknown-").
 */
export function mdadmLayoutName(table: 'r5' | 'r6' | 'r0', layout: number): string | undefined {
  const t = table === 'r5' ? R5_LAYOUT : table === 'r6' ? R6_LAYOUT : R0_LAYOUT;
  return t.find(([, v]) => v === layout)?.[0];
}

/**
 * Exactly what mdadm 4.2's print_r10_layout writes after "Layout :" (note the leading space
 * before each part, and no space before "NO REDUNDANCY"): " near=2", " far=2", " offset=2",
 * " near=2, far=2", "NO REDUNDANCY".
 */
export function raid10LayoutSuffix(layout: number): string {
  requireInt('layout', layout, 0);
  const near = layout & 0xff;
  const far = (layout >> 8) & 0xff;
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

/**
 * The layout as mdadm -E / -D print it after "Layout : " ("left-symmetric", "near=2",
 * "far=2", "offset=2", "near=2, far=2", "original", ...), "-unknown-" when mdadm has no name.
 * RAID4 answers with the RAID5 name although mdadm prints no Layout line for RAID4; levels
 * without a layout (1, linear, ...) answer "-unknown-".
 */
export function layoutText(level: number, layout: number): string {
  requireInt('level', level, -100);
  requireInt('layout', layout, -(2 ** 31));
  switch (level) {
    case 0:
      return byNumber(R0_LAYOUT, layout) ?? '-unknown-';
    case 4:
    case 5:
      return byNumber(R5_LAYOUT, layout) ?? '-unknown-';
    case 6:
      return byNumber(R6_LAYOUT, layout) ?? '-unknown-';
    case 10:
      if (layout < 0) return '-unknown-';
      return raid10LayoutSuffix(layout).replace(/^ /, '');
    default:
      return '-unknown-';
  }
}

/**
 * The `New Layout :` value of `mdadm --detail` during a reshape. Same as layoutText except
 * RAID10, which Detail.c prints as "near=N, far=F" / "near=N, offset=F" (always both parts).
 * (`--examine` prints its New Layout like layoutText.)
 */
export function detailNewLayoutText(level: number, layout: number): string {
  if (level !== 10) return layoutText(level, layout);
  requireInt('layout', layout, 0);
  const kind = layout & 0x10000 ? 'offset' : 'far';
  return `near=${layout & 0xff}, ${kind}=${(layout >> 8) & 0xff}`;
}

/**
 * mdadm 4.2's default layout at create (Create.c default_layout): RAID5/6 left-symmetric (2),
 * RAID10 n2 (0x102), RAID0 original (1); 0 for every other level.
 */
export function defaultLayout(level: number): number {
  requireInt('level', level, -100);
  switch (level) {
    case 5:
    case 6:
      return 2;
    case 10:
      return 0x102;
    case 0:
      return 1;
    default:
      return 0;
  }
}
