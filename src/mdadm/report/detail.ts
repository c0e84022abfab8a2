/**
 * `mdadm --detail` and `mdadm --detail --brief` for a v1.x array, as mdadm 4.2 prints them
 * (Detail.c with super1.c detail_super1 / brief_detail_super1). The kernel's view of the array
 * (GET_ARRAY_INFO, GET_DISK_INFO, sysfs, /proc/mdstat) comes in as plain data; the superblock of
 * one active member supplies the name / uuid / events block and the reshape lines.
 */
import type { BitmapSuper } from '../../format/bitmap.js';
import { Feature, MAX_SECTOR, type Superblock1, uuidText } from '../../format/superblock.js';
import { printQuoted } from './examine.js';
import { humanSize, mdCtime, sbSeconds } from './human.js';
import { levelName, r0LayoutName, r5LayoutName, r6LayoutName, r10LayoutText } from './names.js';
import {
  bitmapMatches,
  clusterNameField,
  isLocalToHost,
  setNameCString,
  setNameField,
} from './super1-view.js';

/** One device as the kernel reports it (GET_DISK_INFO), in device-number order. */
export interface DetailMember {
  /** the device number (superblock dev_number); null prints '-' */
  number: number | null;
  major: number;
  minor: number;
  /** the slot (role) it fills; null prints '-' (spare, faulty, journal) */
  raidDevice: number | null;
  /**
   * Kernel state flags as mdadm words: 'faulty', 'active', 'sync', 'removed', 'writemostly'
   * (or 'write-mostly'), 'failfast', 'journal'. 'spare' and 'rebuilding' are accepted and
   * ignored: mdadm prints them for a device with none of active/sync/removed/faulty/journal
   * ("rebuilding" when it has a slot). 'set-A'... for raid10 is added by the formatter.
   */
  state: string[];
  /** device path (/dev/vda); null prints "missing" unless major:minor is 0:0 */
  path: string | null;
}

export type SyncAction = 'recovery' | 'resync' | 'reshape' | 'check';

/** What /proc/mdstat says about a running sync (mdstat_read's resync/percent). */
export interface DetailSync {
  action: SyncAction;
  /** whole percent done, or the word mdstat shows instead ("resync=DELAYED" ...) */
  percent: number | 'delayed' | 'pending' | 'remote';
}

export interface DetailCounts {
  total: number;
  active: number;
  working: number;
  failed: number;
  spare: number;
}

export interface DetailInput {
  /** the md device as given, e.g. /dev/md0 (first line "<dev>:") */
  devName: string;
  /** "1.2" (array.major_version.minor_version, or the external text version) */
  metadataVersion: string;
  /** external metadata (sysfs major_version < 0): no Persistence and no Spare Devices lines */
  external?: boolean;
  /** member of a container: prints "Container : <name>, member <member>" instead of Version */
  container?: { name: string; member: string } | null;
  /** array ctime/utime in Unix seconds; 0 = line not printed */
  ctime: number;
  utime: number;
  /** the kernel's level (array.level) */
  level: number;
  /**
   * The kernel's layout (array.layout). For raid0 without the RAID0_LAYOUT feature the
   * kernel reports -1, which mdadm prints as "-unknown-"; see kernelLayout().
   */
  layout: number;
  /** array.chunk_size in bytes (0 = no Chunk Size line) */
  chunkSizeBytes: number;
  /** size of the md block device in bytes; 0 = no Array Size line and ", Not Started" */
  arraySizeBytes: bigint | number;
  /** component size in sectors (sysfs component_size × 2, = superblock size); 0 = "unknown" */
  usedDevSizeSectors: bigint | number;
  /** array.raid_disks */
  raidDisks: number;
  /** GET_DISK_INFO for every device, in device-number order */
  members: DetailMember[];
  /** GET_ARRAY_INFO counters; default: derived from members like the kernel does */
  counts?: Partial<DetailCounts>;
  /** default true ("Superblock is persistent") */
  persistent?: boolean;
  /** the array's bitmap (MD_SB_BITMAP_PRESENT / MD_SB_CLUSTERED / GET_BITMAP_FILE) */
  bitmap?: null | 'internal' | 'clustered' | { file: string };
  /** array.state has MD_SB_CLEAN (the kernel's in_sync) */
  clean: boolean;
  /** sysfs array_state, printed instead of "clean" for a clean raid0/linear; default 'clean' */
  arrayState?: string;
  /** clustered and not clean: mdadm reads the first device's bitmap (dirty -> "active") */
  clusterBitmapDirty?: boolean;
  /** inactive array (raid_disks 0): "State : inactive" */
  inactive?: boolean;
  /** /proc/mdstat has an entry for the array (default true) */
  inMdstat?: boolean;
  /** the running sync operation per /proc/mdstat, if any */
  sync?: DetailSync | null;
  /** sysfs consistency_policy ('resync', 'bitmap', 'none', 'journal', 'ppl'); null = no line */
  consistencyPolicy?: string | null;
  /** superblock of the first active member (name / uuid / events, reshape lines) */
  sb?: Superblock1 | null;
  /** that member's bitmap superblock (cluster name) */
  bitmapSuper?: BitmapSuper | null;
  /** "(local to host X)" */
  homehost?: string;
  /** --no-devices: no member table */
  noDevices?: boolean;
}

const FAULTY = 1 << 0;
const ACTIVE = 1 << 1;
const SYNC = 1 << 2;
const REMOVED = 1 << 3;
const WRITEMOSTLY = 1 << 9;
const FAILFAST = 1 << 10;
const JOURNAL = 1 << 18;

const WORD_BITS: Record<string, number> = {
  faulty: FAULTY,
  active: ACTIVE,
  sync: SYNC,
  removed: REMOVED,
  writemostly: WRITEMOSTLY,
  'write-mostly': WRITEMOSTLY,
  failfast: FAILFAST,
  journal: JOURNAL,
  spare: 0,
  rebuilding: 0,
};

interface Disk {
  number: number;
  major: number;
  minor: number;
  raidDisk: number;
  state: number;
  path: string | null;
}

function stateBits(m: DetailMember): number {
  let s = 0;
  for (const w of m.state) {
    const b = WORD_BITS[w];
    if (b === undefined) {
      throw new TypeError(`unknown member state word ${JSON.stringify(w)} for ${m.path ?? '?'}`);
    }
    s |= b;
  }
  return s;
}

/** GET_ARRAY_INFO's counters as the kernel computes them from its devices. */
export function countsFromMembers(members: DetailMember[]): DetailCounts {
  let total = 0;
  let failed = 0;
  let working = 0;
  let active = 0;
  let spare = 0;
  for (const m of members) {
    if (m.major === 0 && m.minor === 0) continue; // a 'removed' placeholder, not a device
    const s = stateBits(m);
    total++;
    if (s & FAULTY) failed++;
    else {
      working++;
      if (s & SYNC) active++;
      else if (!(s & JOURNAL)) spare++;
    }
  }
  return { total, active, working, failed, spare };
}

/** Detail()'s disks[] table: two entries per slot (device, replacement), then the others. */
function buildDisks(d: DetailInput): Disk[] {
  const raidDisks = Math.max(0, d.raidDisks | 0);
  const disks: Disk[] = [];
  for (let i = 0; i < raidDisks * 2; i++) {
    disks.push({ number: -1, major: 0, minor: 0, raidDisk: i >> 1, state: REMOVED, path: null });
  }
  const extra: Disk[] = [];
  for (const m of d.members) {
    if (m.major === 0 && m.minor === 0) continue;
    const disk: Disk = {
      number: m.number ?? -1,
      major: m.major,
      minor: m.minor,
      raidDisk: m.raidDevice ?? -1,
      state: stateBits(m),
      path: m.path,
    };
    const rd = disk.raidDisk;
    const inRange = rd >= 0 && rd < raidDisks && !(disk.state & JOURNAL);
    if (inRange && disks[rd * 2]!.state === REMOVED) disks[rd * 2] = disk;
    else if (inRange && disks[rd * 2 + 1]!.state === REMOVED) disks[rd * 2 + 1] = disk;
    else extra.push(disk);
  }
  return disks.concat(extra);
}

/** util.c enough(): can the array run with these slots available? */
export function enough(
  level: number,
  raidDisks: number,
  layout: number,
  clean: boolean,
  avail: boolean[],
): boolean {
  let availDisks = 0;
  for (let i = 0; i < raidDisks; i++) if (avail[i]) availDisks++;
  switch (level) {
    case 10: {
      const copies = (layout & 255) * ((layout >> 8) & 255);
      if (raidDisks <= 0) return false;
      let first = 0;
      let guard = 0;
      do {
        let n = copies;
        let cnt = 0;
        let cur = first;
        while (n-- > 0) {
          if (avail[cur]) cnt++;
          cur = (cur + 1) % raidDisks;
        }
        if (cnt === 0) return false;
        first = (first + (layout & 255)) % raidDisks;
      } while (first !== 0 && ++guard < 1 << 20);
      return true;
    }
    case -4:
      return availDisks >= 1;
    case -1:
    case 0:
      return availDisks === raidDisks;
    case 1:
      return availDisks >= 1;
    case 4:
      if (availDisks === raidDisks - 1 && !avail[raidDisks - 1]) return true;
      return clean ? availDisks >= raidDisks - 1 : availDisks >= raidDisks;
    case 5:
      return clean ? availDisks >= raidDisks - 1 : availDisks >= raidDisks;
    case 6:
      return clean ? availDisks >= raidDisks - 2 : availDisks >= raidDisks;
    default:
      return false;
  }
}

function availability(d: DetailInput, disks: Disk[]): boolean[] {
  // is_dev_alive(): the device node exists; a 0:0 placeholder is not alive
  const alive = (x: Disk | undefined) => !!x && (x.major !== 0 || x.minor !== 0);
  const avail: boolean[] = [];
  for (let i = 0; i < d.raidDisks; i++) {
    const a = disks[i * 2];
    const b = disks[i * 2 + 1];
    avail.push((alive(a) && !!(a!.state & SYNC)) || (alive(b) && !!(b!.state & SYNC)));
  }
  return avail;
}

const SYNC_INDEX: Record<SyncAction, number> = { recovery: 0, resync: 1, reshape: 2, check: 3 };

function pad5(n: number): string {
  return n.toString().padStart(5, ' ');
}

function big(v: bigint | number): bigint {
  return typeof v === 'bigint' ? v : BigInt(Math.trunc(v));
}

function uuidField(u: Uint8Array): string {
  return uuidText(u);
}

function tableRow(d: DetailInput, disk: Disk): string {
  let row: string;
  if (disk.number < 0 && disk.raidDisk < 0) {
    row = `       -   ${pad5(disk.major)}    ${pad5(disk.minor)}        -     `;
  } else if (disk.raidDisk < 0 || disk.state & JOURNAL) {
    row = `   ${pad5(disk.number)}   ${pad5(disk.major)}    ${pad5(disk.minor)}        -     `;
  } else if (disk.number < 0) {
    row = `       -   ${pad5(disk.major)}    ${pad5(disk.minor)}    ${pad5(disk.raidDisk)}     `;
  } else {
    row =
      `   ${pad5(disk.number)}   ${pad5(disk.major)}    ${pad5(disk.minor)}    ` +
      `${pad5(disk.raidDisk)}     `;
  }
  if (d.raidDisks) {
    const s = disk.state;
    if (s & FAULTY) row += ' faulty';
    if (s & ACTIVE) row += ' active';
    if (s & SYNC) {
      row += ' sync';
      const layout = d.layout | 0;
      if ((d.level | 0) === 10 && (layout & ~0x1ffff) === 0) {
        const nc = layout & 0xff;
        const fc = (layout >> 8) & 0xff;
        const copies = nc * fc;
        if (fc === 1 && copies > 0 && d.raidDisks % copies === 0 && copies <= 26) {
          const set = ((disk.raidDisk % copies) + copies) % copies;
          row += ` set-${String.fromCharCode(65 + set)}`;
        }
      }
    }
    if (s & REMOVED) row += ' removed';
    if (s & WRITEMOSTLY) row += ' writemostly';
    if (s & FAILFAST) row += ' failfast';
    if (s & JOURNAL) row += ' journal';
    if ((s & (ACTIVE | SYNC | REMOVED | FAULTY | JOURNAL)) === 0) {
      row += ' spare';
      if (disk.raidDisk < d.raidDisks && disk.raidDisk >= 0) row += ' rebuilding';
    }
  }
  if (disk.path !== null) row += `   ${disk.path}`;
  else if (disk.major !== 0 || disk.minor !== 0) row += '   missing';
  return row;
}

/** The rows of the member table that mdadm prints (and the blank line before the extras). */
function tableLines(d: DetailInput, disks: Disk[]): string[] {
  const out: string[] = [];
  const rd2 = Math.max(0, d.raidDisks | 0) * 2;
  disks.forEach((disk, i) => {
    const zero = disk.major === 0 && disk.minor === 0;
    if (i >= rd2 && zero) return;
    if (i & 1 && zero) return;
    if (i === rd2) out.push('');
    out.push(tableRow(d, disk));
  });
  return out;
}

function reshapeLines(d: DetailInput): string[] {
  const sb = d.sb;
  if (!sb || !(sb.featureMap & Feature.RESHAPE_ACTIVE)) return [];
  const out: string[] = [];
  const delta = sb.deltaDisks | 0;
  const level = d.level | 0;
  const newLevel = sb.newLevel | 0;
  const newLayout = sb.newLayout | 0;
  if (delta !== 0) {
    out.push(`     Delta Devices : ${delta}, (${(d.raidDisks - delta) | 0}->${d.raidDisks | 0})`);
  }
  if (newLevel !== level) out.push(`         New Level : ${levelName(newLevel) ?? '-unknown-'}`);
  if (newLevel !== level || newLayout !== (d.layout | 0)) {
    if (newLevel === 5) out.push(`        New Layout : ${r5LayoutName(newLayout) ?? '-unknown-'}`);
    if (newLevel === 6) out.push(`        New Layout : ${r6LayoutName(newLayout) ?? '-unknown-'}`);
    if (newLevel === 10) {
      out.push(
        `        New Layout : near=${newLayout & 255}, ${newLayout & 0x10000 ? 'offset' : 'far'}=${(newLayout >> 8) & 255}`,
      );
    }
  }
  const newChunkBytes = ((sb.newChunk >>> 0) * 512) | 0; // info->new_chunk is an int
  if (newChunkBytes !== (d.chunkSizeBytes | 0)) {
    out.push(`     New Chunksize : ${Math.trunc(newChunkBytes / 1024)}K`);
  }
  out.push('');
  return out;
}

/** detail_super1(): Name (+ Cluster Name), UUID, Events and a blank line. */
function detailSuper1Lines(d: DetailInput): string[] {
  const sb = d.sb;
  if (!sb) return [];
  const out: string[] = [];
  let name = `              Name : ${setNameField(sb)}`;
  if (isLocalToHost(sb, d.homehost)) name += `  (local to host ${d.homehost})`;
  out.push(name);
  const bms = d.bitmapSuper;
  if (
    sb.featureMap & Feature.BITMAP_OFFSET &&
    bms &&
    bitmapMatches(sb, bms) &&
    bms.nodes >>> 0 > 0
  ) {
    out.push(`      Cluster Name : ${clusterNameField(bms)}`);
  }
  out.push(`              UUID : ${uuidField(sb.setUuid)}`);
  out.push(`            Events : ${sb.events}`);
  out.push('');
  return out;
}

/** The full `mdadm --detail <dev>` output (ends with a newline). */
export function formatDetail(d: DetailInput): string {
  const out: string[] = [];
  const level = d.level | 0;
  const raidDisks = d.raidDisks | 0;
  const disks = buildDisks(d);
  const counts = { ...countsFromMembers(d.members), ...(d.counts ?? {}) };
  const larray = big(d.arraySizeBytes);
  const isContainer = raidDisks === 0 && !!d.external;

  out.push(`${d.devName}:`);
  if (d.container)
    out.push(`         Container : ${d.container.name}, member ${d.container.member}`);
  else out.push(`           Version : ${d.metadataVersion}`);
  if (d.ctime) out.push(`     Creation Time : ${mdCtime(d.ctime)}`);
  const levelStr = isContainer ? 'container' : levelName(level);
  if (levelStr) out.push(`        Raid Level : ${levelStr}`);
  if (larray !== 0n) out.push(`        Array Size : ${larray >> 10n}${humanSize(larray)}`);
  if (level >= 1) {
    const dsize = big(d.usedDevSizeSectors);
    const kib = dsize / 2n;
    const arraySizeField = BigInt.asIntN(32, kib); // array.size (KiB, an int)
    if (larray >= 0xffffffffn || arraySizeField === 0n) {
      if (dsize > 0n)
        out.push(`     Used Dev Size : ${kib}${humanSize(BigInt.asIntN(64, dsize << 9n))}`);
      else out.push('     Used Dev Size : unknown');
    } else {
      out.push(
        `     Used Dev Size : ${BigInt.asUintN(64, arraySizeField)}${humanSize(BigInt.asIntN(64, BigInt.asUintN(64, arraySizeField) << 10n))}`,
      );
    }
  }
  if (raidDisks) out.push(`      Raid Devices : ${raidDisks}`);
  out.push(`     Total Devices : ${counts.total}`);
  if (!d.external) {
    out.push(
      `       Persistence : Superblock is ${d.persistent === false ? 'not ' : ''}persistent`,
    );
  }
  out.push('');
  const bm = d.bitmap ?? null;
  if (bm && typeof bm === 'object') out.push(`     Intent Bitmap : ${bm.file}`, '');
  else if (bm === 'clustered') out.push('     Intent Bitmap : Internal(Clustered)', '');
  else if (bm === 'internal') out.push('     Intent Bitmap : Internal', '');
  if (d.utime) out.push(`       Update Time : ${mdCtime(d.utime)}`);

  const inMdstat = d.inMdstat ?? true;
  const sync = inMdstat ? (d.sync ?? null) : null;
  const percentKnown = sync !== null && typeof sync.percent === 'number' && sync.percent >= 0;
  if (raidDisks) {
    const avail = availability(d, disks);
    const availDisks = avail.filter(Boolean).length;
    let deg: string;
    if (availDisks === raidDisks) deg = '';
    else if (!enough(level, raidDisks, d.layout | 0, true, avail)) deg = ', FAILED';
    else deg = ', degraded';
    let arrayst: string;
    if (d.clean) {
      arrayst = level === 0 || level === -1 ? (d.arrayState ?? 'clean') : 'clean';
    } else {
      arrayst = 'active';
      if (bm === 'clustered') arrayst = (d.clusterBitmapDirty ?? true) ? 'active' : 'clean';
    }
    const action =
      sync && (percentKnown || typeof sync.percent === 'string')
        ? [', recovering', ', resyncing', ', reshaping', ', checking'][SYNC_INDEX[sync.action]]!
        : '';
    const notStarted = larray !== 0n ? '' : ', Not Started';
    const delayed = sync?.percent === 'delayed' ? ' (DELAYED)' : '';
    const pending = sync?.percent === 'pending' ? ' (PENDING)' : '';
    const remote = sync?.percent === 'remote' ? ' (REMOTE)' : '';
    out.push(
      `             State : ${arrayst}${deg}${action}${notStarted}${delayed}${pending}${remote} `,
    );
  } else if (d.inactive && !isContainer) {
    out.push('             State : inactive');
  }
  if (raidDisks) out.push(`    Active Devices : ${counts.active}`);
  if (counts.working > 0) out.push(`   Working Devices : ${counts.working}`);
  if (raidDisks) {
    out.push(`    Failed Devices : ${counts.failed}`);
    if (!d.external) out.push(`     Spare Devices : ${counts.spare}`);
  }
  out.push('');
  const layout = d.layout | 0;
  if (level === 5) out.push(`            Layout : ${r5LayoutName(layout) ?? '-unknown-'}`);
  if (level === 0 && layout)
    out.push(`            Layout : ${r0LayoutName(layout) ?? '-unknown-'}`);
  if (level === 6) out.push(`            Layout : ${r6LayoutName(layout) ?? '-unknown-'}`);
  if (level === 10) out.push(`            Layout :${r10LayoutText(layout)}`);
  const chunk = d.chunkSizeBytes | 0;
  switch (level) {
    case 0:
    case 4:
    case 5:
    case 10:
    case 6:
      if (chunk) out.push(`        Chunk Size : ${Math.trunc(chunk / 1024)}K`, '');
      break;
    case -1:
      out.push(`          Rounding : ${Math.trunc(chunk / 1024)}K`, '');
      break;
  }
  if (raidDisks && d.consistencyPolicy) out.push(`Consistency Policy : ${d.consistencyPolicy}`, '');
  if (sync && percentKnown) {
    const label = ['Rebuild', 'Resync', 'Reshape', 'Check'][SYNC_INDEX[sync.action]]!;
    out.push(`    ${label.padStart(7, ' ')} Status : ${sync.percent}% complete`);
  }
  const rl = reshapeLines(d);
  if (rl.length) out.push(...rl);
  else if (sync && percentKnown) out.push('');
  out.push(...detailSuper1Lines(d));
  if (!d.noDevices) {
    out.push(
      raidDisks
        ? '    Number   Major   Minor   RaidDevice State'
        : '    Number   Major   Minor   RaidDevice',
    );
    out.push(...tableLines(d, disks));
  }
  return `${out.join('\n')}\n`;
}

/** `mdadm --detail --brief` (`--detail --scan`): the ARRAY line (with --verbose, devices=). */
export function formatDetailBrief(d: DetailInput, opts: { verbose?: boolean } = {}): string {
  const raidDisks = d.raidDisks | 0;
  const isContainer = raidDisks === 0 && !!d.external;
  let s = d.inactive && !isContainer ? `INACTIVE-ARRAY ${d.devName}` : `ARRAY ${d.devName}`;
  if (opts.verbose) {
    const counts = { ...countsFromMembers(d.members), ...(d.counts ?? {}) };
    if (raidDisks) s += ` level=${levelName(d.level) ?? '-unknown-'} num-devices=${raidDisks}`;
    else if (isContainer) s += ` level=container num-devices=${counts.total}`;
    else s += ` num-devices=${counts.total}`;
  }
  if (d.container) s += ` container=${d.container.name} member=${d.container.member}`;
  else s += ` metadata=${d.metadataVersion}`;
  const bm = d.bitmap ?? null;
  if (bm && typeof bm === 'object') s += ` bitmap=${bm.file}`;
  const disks = buildDisks(d);
  let spares = 0;
  const devices: string[] = [];
  const rd2 = Math.max(0, raidDisks) * 2;
  disks.forEach((disk, i) => {
    const zero = disk.major === 0 && disk.minor === 0;
    if (i >= rd2 && zero) return;
    if (i & 1 && zero) return;
    if (disk.state === 0) spares++;
    if (disk.path !== null) devices.push(disk.path);
  });
  if (spares && raidDisks) s += ` spares=${spares}`;
  if (d.sb) {
    const sb = d.sb;
    if (sb.setName[0] !== 0) s += ` name=${printQuoted(setNameCString(sb))}`;
    s += ` UUID=${uuidField(sb.setUuid)}`;
  }
  if (opts.verbose && devices.length) {
    devices.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    s += `\n   devices=${devices.join(',')}`;
  }
  return `${s}\n`;
}

/**
 * The parts of DetailInput the kernel derives from a v1.x superblock when it runs the array:
 * version, times, level, layout (-1 for raid0 without RAID0_LAYOUT), chunk, raid disks,
 * component size, bitmap kind, consistency policy and the clean flag (resync_offset).
 */
export function detailFieldsFromSuperblock(
  sb: Superblock1,
  bitmap?: BitmapSuper | null,
): Pick<
  DetailInput,
  | 'metadataVersion'
  | 'ctime'
  | 'utime'
  | 'level'
  | 'layout'
  | 'chunkSizeBytes'
  | 'raidDisks'
  | 'usedDevSizeSectors'
  | 'bitmap'
  | 'consistencyPolicy'
  | 'clean'
  | 'sb'
  | 'bitmapSuper'
> {
  const level = sb.level | 0;
  const fm = sb.featureMap;
  const hasBitmap = (fm & Feature.BITMAP_OFFSET) !== 0 && bitmapMatches(sb, bitmap);
  let policy: string;
  if (fm & Feature.JOURNAL) policy = 'journal';
  else if (fm & (Feature.PPL | Feature.MULTIPLE_PPLS)) policy = 'ppl';
  else if (hasBitmap) policy = 'bitmap';
  else if (level <= 0) policy = 'none';
  else policy = 'resync';
  const minor = sb.superOffset <= 4n ? 1 : sb.superOffset <= 8n ? 2 : 0;
  return {
    metadataVersion: `1.${minor}`,
    ctime: sbSeconds(sb.ctime),
    utime: sbSeconds(sb.utime),
    level,
    layout: level === 0 && !(fm & Feature.RAID0_LAYOUT) ? -1 : sb.layout | 0,
    chunkSizeBytes: (sb.chunkSize >>> 0) * 512,
    raidDisks: sb.raidDisks >>> 0,
    usedDevSizeSectors: sb.size,
    bitmap: hasBitmap ? ((bitmap?.nodes ?? 0) > 1 ? 'clustered' : 'internal') : null,
    consistencyPolicy: policy,
    clean: sb.resyncOffset === MAX_SECTOR,
    sb,
    bitmapSuper: bitmap ?? null,
  };
}
