/**
 * `mdadm --examine` for v1.x members, as mdadm 4.2 prints it (super1.c examine_super1 and
 * brief_examine_super1, Examine.c), line for line, from decoded structures.
 */
import type { BitmapSuper } from '../../format/bitmap.js';
import { Feature, pplOffset, Role, type Superblock1, uuidText } from '../../format/superblock.js';
import { humanSize, mdCtime, sbSeconds } from './human.js';
import {
  int32,
  levelName,
  r0LayoutName,
  r5LayoutName,
  r6LayoutName,
  r10LayoutText,
} from './names.js';
import {
  bitmapNodes,
  clusterNameField,
  isInSync,
  isLocalToHost,
  type LoadedSuper1,
  loadSuper1,
  setNameCString,
  setNameField,
  unusedSpace,
} from './super1-view.js';

const U64 = (x: bigint): bigint => BigInt.asUintN(64, x);
const I64 = (x: bigint): bigint => BigInt.asIntN(64, x);
/** Array State prints one character per role; roles are 16-bit, so more would be all '.'. */
const MAX_STATE_CHARS = 0x10000;

export interface ExamineInput {
  /** as given on the command line, printed as "<name>:" first line */
  deviceName: string;
  /** decoded superblock */
  sb: Superblock1;
  /** the 4096 bytes read at the superblock location (for the checksum line) */
  raw: Uint8Array;
  /** size of the member device in sectors (for Unused Space) */
  devSectors: number | bigint;
  /** "(local to host X)" when set_name starts with "X:" */
  homehost?: string;
  /**
   * The bitmap superblock at sb_start + bitmap_offset when BITMAP_OFFSET is set; null or
   * absent = unreadable. mdadm drops the feature bit in memory when its magic or uuid does not
   * match (then prints "Feature Map" without it and a checksum "expected" over that copy).
   */
  bitmap?: BitmapSuper | null;
  /**
   * Ignored: mdadm 4.2 prints " - bad blocks present." from the BAD_BLOCKS feature bit alone.
   * @deprecated
   */
  badBlocksPresent?: boolean;
}

function uuidField(u: Uint8Array): string {
  return uuidText(u);
}

export function versionText(sb: Superblock1): string {
  if (sb.superOffset <= 4n) return '1.1';
  if (sb.superOffset <= 8n) return '1.2';
  return '1.0';
}

function hex(v: number): string {
  return (v >>> 0).toString(16);
}

/** The `examine_super1()` lines for an already loaded superblock (no "<dev>:" line). */
export function examineSuper1Lines(
  v: LoadedSuper1,
  devSectors: number | bigint,
  homehost?: string,
): string[] {
  const sb = v.sb;
  const out: string[] = [];
  const fm = v.featureMap;
  const levelU = sb.level >>> 0;
  const level = int32(sb.level);
  const raidDisks = sb.raidDisks >>> 0;

  out.push('          Magic : a92b4efc');
  out.push(`        Version : ${versionText(sb)}`);
  out.push(`    Feature Map : 0x${hex(fm)}`);
  out.push(`     Array UUID : ${uuidField(sb.setUuid)}`);
  let name = `           Name : ${setNameField(sb)}`;
  if (isLocalToHost(sb, homehost)) name += `  (local to host ${homehost})`;
  out.push(name);
  if (bitmapNodes(v) > 0 && v.bms) out.push(`   Cluster Name : ${clusterNameField(v.bms)}`);
  out.push(`  Creation Time : ${mdCtime(sbSeconds(sb.ctime))}`);
  out.push(`     Raid Level : ${levelName(level) ?? '-unknown-'}`);
  out.push(`   Raid Devices : ${int32(raidDisks)}`);
  out.push('');
  out.push(` Avail Dev Size : ${sb.dataSize} sectors${humanSize(I64(U64(sb.dataSize << 9n)))}`);
  if (levelU > 0) {
    // (the level is an unsigned field in mdadm: linear/multipath/faulty take this branch too)
    let ddsks = 0;
    let denom = 1;
    switch (level) {
      case 1:
        ddsks = 1;
        break;
      case 4:
      case 5:
        ddsks = int32(raidDisks - 1);
        break;
      case 6:
        ddsks = int32(raidDisks - 2);
        break;
      case 10: {
        const layout = int32(sb.layout);
        ddsks = int32(raidDisks);
        denom = (layout & 255) * ((layout >> 8) & 255);
        break;
      }
    }
    if (ddsks !== 0 && denom !== 0) {
      // long long asize = size; asize = (asize << 9) * ddsks / ddsks_denom;
      const asize = I64(I64(I64(sb.size) << 9n) * BigInt(ddsks)) / BigInt(denom);
      out.push(`     Array Size : ${U64(asize >> 10n)} KiB${humanSize(asize)}`);
    }
    if (sb.size !== sb.dataSize) {
      out.push(`  Used Dev Size : ${sb.size} sectors${humanSize(I64(U64(sb.size << 9n)))}`);
    }
  }
  if (sb.dataOffset !== 0n) out.push(`    Data Offset : ${sb.dataOffset} sectors`);
  if (sb.newOffset !== 0 && fm & Feature.NEW_OFFSET) {
    out.push(`     New Offset : ${U64(sb.dataOffset + BigInt(sb.newOffset | 0))} sectors`);
  }
  out.push(`   Super Offset : ${sb.superOffset} sectors`);
  if (fm & Feature.RECOVERY_OFFSET) out.push(`Recovery Offset : ${sb.recoveryOffset} sectors`);
  const space = unusedSpace(v, devSectors);
  if (space.spaceAfter !== 1n && !(fm & Feature.NEW_OFFSET)) {
    out.push(
      `   Unused Space : before=${space.spaceBefore} sectors, after=${space.spaceAfter} sectors`,
    );
  }
  out.push(`          State : ${sb.resyncOffset === 0xffff_ffff_ffff_ffffn ? 'clean' : 'active'}`);
  out.push(`    Device UUID : ${uuidField(sb.deviceUuid)}`);
  out.push('');
  if (fm & Feature.BITMAP_OFFSET) {
    out.push(`Internal Bitmap : ${sb.bitmapOffset | 0} sectors from superblock`);
  } else if (fm & (Feature.PPL | Feature.MULTIPLE_PPLS)) {
    const ppl = pplOffset(sb);
    out.push(
      `            PPL : ${ppl.size} sectors at offset ${ppl.offset} sectors from superblock`,
    );
  }
  let deltaExtra = 0;
  if (fm & Feature.RESHAPE_ACTIVE) {
    out.push(
      `  Reshape pos'n : ${sb.reshapePosition / 2n}${humanSize(I64(U64(sb.reshapePosition << 9n)))}`,
    );
    const delta = int32(sb.deltaDisks);
    if (delta !== 0) {
      out.push(`  Delta Devices : ${delta} (${int32(raidDisks - delta)}->${int32(raidDisks)})`);
      if (delta < 0) deltaExtra = -delta;
    }
    if (int32(sb.newLevel) !== level) {
      out.push(`      New Level : ${levelName(sb.newLevel) ?? '-unknown-'}`);
    }
    if (sb.newLayout >>> 0 !== sb.layout >>> 0) {
      // mdadm names the new layout by the *current* level
      if (level === 5) out.push(`     New Layout : ${r5LayoutName(sb.newLayout) ?? '-unknown-'}`);
      if (level === 6) out.push(`     New Layout : ${r6LayoutName(sb.newLayout) ?? '-unknown-'}`);
      if (level === 10) out.push(`     New Layout :${r10LayoutText(int32(sb.newLayout))}`);
    }
    if (sb.newChunk >>> 0 !== sb.chunkSize >>> 0) {
      out.push(`  New Chunksize : ${int32(Math.floor((sb.newChunk >>> 0) / 2))}K`);
    }
    out.push('');
  }
  if (sb.devFlags !== 0) {
    let flags = '          Flags :';
    if (sb.devFlags & 1) flags += ' write-mostly';
    if (sb.devFlags & 2) flags += ' failfast';
    out.push(flags);
  }
  out.push(`    Update Time : ${mdCtime(sbSeconds(sb.utime))}`);
  if (sb.bblogSize !== 0 && sb.bblogOffset !== 0) {
    let bbl =
      `  Bad Block Log : ${Math.floor((sb.bblogSize * 512) / 8)} entries available at offset ` +
      `${sb.bblogOffset | 0} sectors`;
    if (fm & Feature.BAD_BLOCKS) bbl += ' - bad blocks present.';
    out.push(bbl);
  }
  if (v.csumExpected >>> 0 === sb.sbCsum >>> 0) {
    out.push(`       Checksum : ${hex(sb.sbCsum)} - correct`);
  } else {
    out.push(`       Checksum : ${hex(sb.sbCsum)} - expected ${hex(v.csumExpected)}`);
  }
  out.push(`         Events : ${sb.events}`);
  out.push('');
  if (level === 0 && fm & Feature.RAID0_LAYOUT) {
    out.push(`         Layout : ${r0LayoutName(sb.layout) ?? '-unknown-'}`);
  }
  if (level === 5) out.push(`         Layout : ${r5LayoutName(sb.layout) ?? '-unknown-'}`);
  if (level === 6) out.push(`         Layout : ${r6LayoutName(sb.layout) ?? '-unknown-'}`);
  if (level === 10) out.push(`         Layout :${r10LayoutText(int32(sb.layout))}`);
  switch (level) {
    case 0:
    case 4:
    case 5:
    case 6:
    case 10:
      out.push(`     Chunk Size : ${int32(Math.floor((sb.chunkSize >>> 0) / 2))}K`);
      break;
    case -1:
      out.push(`       Rounding : ${int32(Math.floor((sb.chunkSize >>> 0) / 2))}K`);
      break;
  }
  out.push('');
  // role_from_sb(): beyond max_dev = spare
  const role = sb.devNumber >>> 0 < sb.maxDev >>> 0 ? sb.devRoles[sb.devNumber]! : Role.SPARE;
  if (role >= Role.FAULTY) out.push('   Device Role : spare');
  else if (role === Role.JOURNAL) out.push('   Device Role : Journal');
  else if (fm & Feature.REPLACEMENT) out.push(`   Device Role : Replacement device ${role}`);
  else out.push(`   Device Role : Active device ${role}`);

  const slots = (raidDisks + deltaExtra) >>> 0;
  const counts = new Map<number, number>();
  for (let i = 0; i < sb.maxDev; i++) {
    const r = sb.devRoles[i]!;
    counts.set(r, (counts.get(r) ?? 0) + 1);
  }
  let inconsistent = false;
  let state = '';
  const shown = Math.min(slots, MAX_STATE_CHARS);
  for (let d = 0; d < shown; d++) {
    const cnt = counts.get(d) ?? 0;
    if (cnt === 2 && levelU > 0) state += 'R';
    else if (cnt === 1) state += 'A';
    else if (cnt === 0) state += '.';
    else {
      state += '?';
      inconsistent = true;
    }
  }
  out.push(`   Array State : ${state} ('A' == active, '.' == missing, 'R' == replacing)`);
  for (let i = 0; i < sb.maxDev; i++) {
    const r = sb.devRoles[i]!;
    if (r <= Role.MAX_ACTIVE && r > slots) inconsistent = true;
  }
  if (inconsistent) {
    out.push('WARNING Array state is inconsistent - each number should appear only once');
    let l = '';
    for (let i = 0; i < sb.maxDev; i++) {
      const r = sb.devRoles[i]!;
      l += r >= Role.FAULTY ? ` ${i}:-` : ` ${i}:${r}`;
    }
    out.push(l);
  }
  return out;
}

/** The full `mdadm --examine <dev>` block for one v1.x member (ends with a newline). */
export function formatExamine(x: ExamineInput): string {
  const v = loadSuper1(x.sb, x.raw, x.bitmap);
  const lines = [`${x.deviceName}:`, ...examineSuper1Lines(v, x.devSectors, x.homehost)];
  return `${lines.join('\n')}\n`;
}

/** print_quoted(): quote with " or ' only when the text has a blank or a quote. */
export function printQuoted(str: string): string {
  let first = '';
  for (const c of str) {
    if (c === "'" || c === '"') {
      first = c;
      break;
    }
    if (c === ' ' || c === '\t') first = c;
  }
  if (!first) return str;
  let q = first === '"' ? "'" : '"';
  let out = q;
  for (const c of str) {
    if (c === q) {
      out += q;
      q = q === '"' ? "'" : '"';
      out += q;
    }
    out += c;
  }
  return out + q;
}

/** print_escape(): blanks become '_', '/' becomes '-' (for /dev/md/ names). */
export function printEscape(str: string): string {
  return str.replace(/[ \t]/g, '_').replace(/\//g, '-');
}

export interface ExamineBriefOptions {
  /** accepted for symmetry with --examine; mdadm 4.2's brief line does not use it */
  homehost?: string;
  /** `--verbose`: adds level=, num-devices= and a "   devices=" line */
  verbose?: boolean;
  /** device names of this array, in command-line order (printed with verbose) */
  devices?: string[];
  /**
   * number of listed devices that are not in sync (spare, faulty, journal, replacement); see
   * examineSpareCount(). Printed as "   spares=N".
   */
  spares?: number;
}

/** brief_examine_super1(): the ARRAY line (with its newline). */
function briefExamineSuper1(sb: Superblock1, verbose: boolean): string {
  const full = setNameCString(sb);
  const first = full.slice(0, 32);
  const colon = full.indexOf(':');
  let nm: string | null;
  if (colon >= 0) nm = full.slice(colon + 1);
  else if (first.length > 0) nm = full;
  else nm = null;
  let s = 'ARRAY ';
  if (nm !== null) s += `/dev/md/${printEscape(nm)} `;
  const lvl = levelName(sb.level);
  if (verbose && lvl) s += ` level=${lvl}`;
  s += ` metadata=${versionText(sb)} `;
  if (verbose) s += `num-devices=${int32(sb.raidDisks)} `;
  s += `UUID=${uuidField(sb.setUuid)}`;
  if (first.length > 0) s += ` name=${printQuoted(full)}`;
  return `${s}\n`;
}

/** How many of these members `mdadm --examine --brief` counts as spares (not MD_DISK_SYNC). */
export function examineSpareCount(sbs: Superblock1[]): number {
  return sbs.filter((sb) => !isInSync(sb)).length;
}

/**
 * `mdadm --examine --brief` / `--examine --scan` output for one array: the ARRAY line of its
 * first member's superblock, then "   spares=N" / "   devices=a,b" on a second line when
 * there are spares or --verbose.
 */
export function formatExamineBrief(sb: Superblock1, opts: ExamineBriefOptions = {}): string {
  const verbose = opts.verbose ?? false;
  let s = briefExamineSuper1(sb, verbose);
  const spares = opts.spares ?? 0;
  if (spares) s += `   spares=${spares}`;
  if (verbose) {
    s += '   devices';
    let sep = '=';
    for (const d of opts.devices ?? []) {
      s += `${sep}${d}`;
      sep = ',';
    }
  }
  if (spares || verbose) s += '\n';
  return s;
}

/** compare_super1(): same uuid, ctime, level, layout, size, chunk and raid_disks. */
function sameArray(a: Superblock1, b: Superblock1): boolean {
  for (let i = 0; i < 16; i++) if (a.setUuid[i] !== b.setUuid[i]) return false;
  return (
    a.ctime === b.ctime &&
    a.level === b.level &&
    a.layout === b.layout &&
    a.size === b.size &&
    a.chunkSize === b.chunkSize &&
    a.raidDisks === b.raidDisks
  );
}

/**
 * `mdadm --examine --scan` (or --brief over several devices): members grouped into arrays the
 * way Examine() does, most recently discovered array first.
 */
export function formatExamineScan(
  devs: Array<{ name: string; sb: Superblock1 }>,
  opts: { verbose?: boolean } = {},
): string {
  const arrays: Array<{ sb: Superblock1; devices: string[]; spares: number }> = [];
  for (const d of devs) {
    let ap = arrays.find((a) => sameArray(a.sb, d.sb));
    if (!ap) {
      ap = { sb: d.sb, devices: [], spares: 0 };
      arrays.unshift(ap);
    }
    if (!isInSync(d.sb)) ap.spares++;
    ap.devices.push(d.name);
  }
  return arrays
    .map((a) =>
      formatExamineBrief(a.sb, { verbose: opts.verbose, devices: a.devices, spares: a.spares }),
    )
    .join('');
}
