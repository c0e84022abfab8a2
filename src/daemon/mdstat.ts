/**
 * The /proc/mdstat text, byte for byte as Linux md prints it; the tsmd daemon writes it to
 * <run-dir>/mdstat so that scripts and monitors that read /proc/mdstat (mdadm's own parser,
 * node_exporter's procfs, Nagios checks, eyes) read tsmd unchanged.
 *
 * A pure formatter: the caller describes each array (what the kernel keeps in struct mddev, its
 * rdevs and its personality's conf) and gets the text back. Every rule below is a fact of the
 * kernel's drivers/md (md.c: md_seq_show, status_resync, status_personalities, status_unused,
 * md_bitmap_status; each personality's status function), restated, not copied:
 *
 *   Personalities : [raid0] [raid1] [raid10] [raid6] [raid5] [raid4]␠
 *   md0 : active raid5 vdd[4] vdc[3] vdb[1] vda[0]
 *         63488 blocks super 1.2 level 5, 64k chunk, algorithm 2 [4/4] [UUUU]
 *         [===>.................]  reshape = 19.0% (6272/31744) finish=0.4min speed=1045K/sec
 *         bitmap: 1/1 pages [4KB], 65536KB chunk
 *   ␠␠␠␠␠␠                                   (or an empty line after a bitmap line)
 *   unused devices: <none>
 *
 * Ordering (both are list_add() at the head of a kernel list, so the newest comes first):
 * - members: md_seq_show walks mddev->disks, to which bind_rdev_to_array() adds each rdev at the
 *   head. The line lists members in REVERSE order of binding (adding) to the array, whatever
 *   their number or slot: after `mdadm --create ... vda vdb vdc vdd` it is
 *   "vdd[4] vdc[2] vdb[1] vda[0]", a later `--add vde` prints first, and a member removed and
 *   added again moves to the front. Callers pass `members` in the order they were added.
 * - arrays: mddev_alloc() adds each new md device at the head of all_mddevs, so the most recently
 *   created array is printed first. Callers pass `arrays` in the order they were created.
 */
import { assert } from '../errors.js';
import { findLevel } from '../raid/levels.js';

/** What the sync thread is doing (the kernel's MD_RECOVERY_* bits as sync_action names them). */
export type MdstatSyncAction = 'resync' | 'recovery' | 'reshape' | 'check' | 'repair';

export interface MdstatMember {
  /** block device name as the kernel prints it (%pg): 'vda', 'sdb1', or a member file's basename */
  name: string;
  /** the number in brackets: rdev->desc_nr, which for v1.x superblocks is sb->dev_number */
  descNr: number;
  /** (F): failed member still bound to the array (then neither (S) nor (R) is printed) */
  faulty?: boolean;
  /**
   * (S): not in a slot (rdev->raid_disk < 0): a hot spare, or every member of an inactive
   * array that was never run (the kernel only assigns slots when the array runs). A member
   * being recovered into a slot is not (S).
   */
  spare?: boolean;
  /** (W): write-mostly */
  writeMostly?: boolean;
  /** (J): raid4/5/6 write journal device */
  journal?: boolean;
  /** (R): replacement being built for a slot (mdadm --replace) */
  replacement?: boolean;
}

/** A running sync thread (resync, recovery, reshape, check or repair). */
export interface MdstatSync {
  /**
   * 'repair' prints as "resync" (the kernel has no separate word for it); 'check' as "check";
   * 'recovery' as "recovery"; 'reshape' as "reshape".
   */
  action: MdstatSyncAction;
  /**
   * Sectors done: the kernel's curr_resync minus the sectors still in flight (recovery_active).
   * Clamped like the kernel: to totalSectors at most, and to 3 (its "active, nothing done yet"
   * marker, shown as 1 block) at least.
   */
  doneSectors: number;
  /**
   * The sync's whole range: the kernel's resync_max_sectors for resync, repair, check and
   * reshape (per-member sectors for raid1/4/5/6, array sectors for a raid10 resync), dev_sectors
   * for recovery. Printed halved as the "/N" in "(done/N)".
   */
  totalSectors: number;
  /**
   * The kernel's speed window: sectors completed since the sync mark (db) over whole seconds
   * since the mark (dt, at least 1). Give both for the kernel's exact speed and finish numbers.
   */
  windowSectors?: number;
  windowSeconds?: number;
  /** Speed in KiB/s, used when no window is given (as db = 2*speed over dt = 1 s). */
  speedKiBs?: number;
  /** The sync waits for another array sharing a device (curr_resync DELAYED/YIELDED): prints "resync=DELAYED". */
  delayed?: boolean;
}

export interface MdstatBitmap {
  /** counter pages in memory (the kernel's pages - missing_pages) */
  pagesUsed: number;
  /** counter pages of the bitmap: ceil(chunks / 2048) for 4 KiB pages, see bitmapCounterPages */
  pagesTotal: number;
  /** bitmap chunk in bytes (printed in KB, or in B when under 1 KiB) */
  chunkBytes: number;
  /** page size in KiB, for "[nKB]" (default 4) */
  pageKiB?: number;
  /** external bitmap file (absolute path); printed as ", file: PATH" with space, tab, newline octal-escaped */
  file?: string;
}

export interface MdstatArray {
  /** the kernel's device name: md0, md127 (an /dev/md/NAME array has an mdN too), md_NAME */
  name: string;
  /** a personality runs the array ("active"); false: members bound but not running ("inactive") */
  active: boolean;
  /** newer kernels print "broken" instead of "active" once raid0/linear lost a member (MD_BROKEN) */
  broken?: boolean;
  /** true or 'read-only': " (read-only)"; 'auto-read-only': " (auto-read-only)" (active arrays only) */
  readOnly?: boolean | 'read-only' | 'auto-read-only';
  /** -1 linear, 0, 1, 4, 5, 6, 10 (not printed for an inactive array) */
  level: number;
  /** in the order they were added to the array (printed newest first, see the file comment) */
  members: MdstatMember[];
  /**
   * "N blocks": 1 KiB blocks; for an active array its size (array_sectors/2), for an inactive one
   * the sum of the non-faulty members' data sizes. The line is left out when there are no members.
   */
  blocks: number;
  /** '1.2', '1.1', '1.0'; '0.90' prints nothing; 'external:imsm' etc.; 'non-persistent' */
  superVersion: string;
  /** chunk size in KiB: raid0 "Nk chunks", raid4/5/6 "Nk chunk", raid10 "NK chunks", linear "Nk rounding" */
  chunkKiB?: number;
  /** raid4/5/6: algorithm number (2 = left-symmetric); raid10: the md layout word (0x102 = n2, 0x201 = f2, 0x10201 = o2) */
  layout?: number;
  /** raid1/4/5/6/10: one entry per slot, true when a member is in the slot and in sync ("U"), else "_" */
  slotsUp?: boolean[];
  /** cross-check for slotsUp.length (raid_disks) */
  raidDisks?: number;
  /** the second number of "[n/m]": raid_disks - degraded; default: the count of "U" slots */
  workingDisks?: number;
  /** write-intent bitmap, or null/undefined when the array has none */
  bitmap?: MdstatBitmap | null;
  /** the running sync thread, if any (linear and raid0 have none, and print none) */
  sync?: MdstatSync | null;
  /** no sync thread but the array is not known in sync (resync_offset < MaxSector): "resync=PENDING" */
  resyncPending?: boolean;
  /** md-cluster: another node is syncing this array: "recover=REMOTE" / "reshape=REMOTE" / "resync=REMOTE" */
  remoteSync?: 'recover' | 'reshape' | 'resync' | null;
}

export interface MdstatOptions {
  /** registered personalities in registration order; default DEFAULT_PERSONALITIES */
  personalities?: readonly string[];
  /** devices bound to no array (the kernel's pending_raid_disks); default none */
  unusedDevices?: readonly string[];
}

/**
 * What tsmd registers: every level it runs, in the order a kernel with all md modules loaded at
 * boot lists them (raid456 registers raid6, raid5, raid4 in that order).
 */
export const DEFAULT_PERSONALITIES: readonly string[] = ['linear', 'raid0', 'raid1', 'raid10', 'raid6', 'raid5', 'raid4'];

const INDENT = '      ';

/** The personality name the kernel prints for a level. */
export function personalityName(level: number): string {
  const d = findLevel(level);
  if (!d) throw new RangeError(`mdstat: no md personality for level ${level}`);
  return d.name;
}

/** Levels whose personality has a sync_request, so that mdstat shows sync progress. */
function hasSyncThread(level: number): boolean {
  return findLevel(level)?.redundancy !== 'none';
}

/** Counter pages of a write-intent bitmap of `chunks` chunks (2048 16-bit counters per 4 KiB page). */
export function bitmapCounterPages(chunks: number, pageBytes = 4096): number {
  assert(Number.isSafeInteger(chunks) && chunks >= 0, 'bitmap chunks is a non-negative integer');
  assert(Number.isSafeInteger(pageBytes) && pageBytes >= 512, 'page size is an integer >= 512');
  const perPage = (pageBytes * 8) / 16;
  return Math.ceil(chunks / perPage);
}

export interface Raid10Geometry {
  nearCopies: number;
  farCopies: number;
  /** far copies placed at an offset (the o layouts) */
  farOffset: boolean;
  /** devices per far set (raid_disks for the original layout) */
  farSetSize: number;
}

/** Decode the raid10 layout word as the kernel's setup_geo() does. */
export function raid10Geometry(layout: number, raidDisks: number): Raid10Geometry {
  assert(Number.isSafeInteger(layout) && layout >= 0, 'raid10 layout is a non-negative integer');
  assert(Number.isSafeInteger(raidDisks) && raidDisks > 0, 'raid10 raid_disks is a positive integer');
  const nearCopies = layout & 0xff;
  const farCopies = (layout >>> 8) & 0xff;
  const farOffset = (layout & 0x10000) !== 0;
  const setsMode = Math.floor(layout / 0x20000);
  let farSetSize: number;
  if (setsMode === 0) {
    farSetSize = raidDisks; // the original layout
  } else if (setsMode === 1 && farCopies > 0) {
    farSetSize = Math.floor(raidDisks / farCopies); // the first, buggy "improved" layout
  } else if (setsMode === 2) {
    farSetSize = farCopies * nearCopies; // the "improved" layout as documented
  } else {
    throw new RangeError(`mdstat: raid10 layout 0x${layout.toString(16)} is not a valid md layout`);
  }
  return { nearCopies, farCopies, farOffset, farSetSize };
}

/**
 * A name fit for the member list: mdadm and node_exporter split the line on white space and
 * take the name up to '['. Block device names always fit; file basenames may not.
 */
export function mdstatMemberName(name: string): string {
  const clean = name.replace(/[\s[\]()]/g, '_');
  return clean === '' ? '_' : clean;
}

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

/** seq_file_path(..., " \t\n"): those characters become a backslash and three octal digits. */
function escapePath(path: string): string {
  return path.replace(/[ \t\n]/g, (c) => '\\' + c.charCodeAt(0).toString(8).padStart(3, '0'));
}

function superText(version: string): string {
  if (version === '0.90') return '';
  if (version === 'non-persistent') return ' super non-persistent';
  if (version.startsWith('external:')) {
    assert(version.length > 'external:'.length && !/\s/.test(version), 'external metadata type is one word');
    return ` super ${version}`;
  }
  assert(/^\d+\.\d+$/.test(version), `superVersion '${version}' is MAJOR.MINOR, external:TYPE or non-persistent`);
  return ` super ${version}`;
}

/** " [n/m] [UU_]" as raid1/raid10/raid5's status functions print it. */
function slotsText(a: MdstatArray): string {
  const slots = a.slotsUp;
  assert(Array.isArray(slots) && slots.length > 0, `${a.name}: slotsUp has one entry per slot`);
  assert(a.raidDisks === undefined || a.raidDisks === slots.length, `${a.name}: raidDisks equals slotsUp.length`);
  const working = a.workingDisks ?? slots.filter(Boolean).length;
  assert(isCount(working) && working <= slots.length, `${a.name}: workingDisks is within 0..raid_disks`);
  return ` [${slots.length}/${working}] [${slots.map((up) => (up ? 'U' : '_')).join('')}]`;
}

function chunkOf(a: MdstatArray): number {
  assert(isCount(a.chunkKiB), `${a.name}: chunkKiB is a non-negative integer for ${personalityName(a.level)}`);
  return a.chunkKiB;
}

/** The personality's own part of the second line (its ->status()). */
function personalityStatus(a: MdstatArray): string {
  switch (a.level) {
    case -1:
      return ` ${chunkOf(a)}k rounding`;
    case 0:
      return ` ${chunkOf(a)}k chunks`;
    case 1:
      return slotsText(a);
    case 4:
    case 5:
    case 6:
      assert(isCount(a.layout), `${a.name}: layout (algorithm) is given for raid${a.level}`);
      return ` level ${a.level}, ${chunkOf(a)}k chunk, algorithm ${a.layout}` + slotsText(a);
    case 10: {
      assert(isCount(a.layout), `${a.name}: layout is given for raid10`);
      const disks = a.slotsUp?.length ?? 0;
      assert(disks > 0, `${a.name}: slotsUp has one entry per slot`);
      const g = raid10Geometry(a.layout, disks);
      let s = '';
      if (g.nearCopies < disks) s += ` ${chunkOf(a)}K chunks`;
      if (g.nearCopies > 1) s += ` ${g.nearCopies} near-copies`;
      if (g.farCopies > 1) {
        s += g.farOffset ? ` ${g.farCopies} offset-copies` : ` ${g.farCopies} far-copies`;
        if (g.farSetSize !== disks) s += ` ${g.farSetSize} devices per set`;
      }
      return s + slotsText(a);
    }
    default:
      throw new RangeError(`mdstat: no md personality for level ${a.level}`);
  }
}

/** Kernel's markers in curr_resync: 3 = active, nothing done yet. */
const RESYNC_ACTIVE = 3n;

/**
 * The progress text of status_resync() for a running sync (without the leading indent):
 * "[===>.................]  reshape = 19.0% (6272/31744) finish=0.4min speed=1045K/sec",
 * or "\tresync=DELAYED".
 */
export function formatSyncProgress(sync: MdstatSync): string {
  assert(isCount(sync.doneSectors), 'sync doneSectors is a non-negative integer');
  assert(isCount(sync.totalSectors) && sync.totalSectors > 0, 'sync totalSectors is a positive integer');
  if (sync.delayed) return '\tresync=DELAYED';

  const max = BigInt(sync.totalSectors);
  let resync = BigInt(sync.doneSectors);
  if (resync > max) resync = max;
  if (resync < RESYNC_ACTIVE) resync = RESYNC_ACTIVE;

  // per-mille: (resync >> 10) * 1000 / ((max >> 10) + 1), the divisor cut to 32 bits as sector_div does
  const divisor = ((max >> 10n) + 1n) & 0xffffffffn;
  assert(divisor > 0n, 'sync totalSectors within what the kernel can print');
  const perMille = Number(((resync >> 10n) * 1000n) / divisor);
  const x = Math.floor(perMille / 50);
  const bar = '[' + '='.repeat(x) + '>' + '.'.repeat(20 - x) + '] ';

  const word = sync.action === 'reshape' ? 'reshape'
    : sync.action === 'check' ? 'check'
      : sync.action === 'recovery' ? 'recovery' : 'resync';
  const pct = String(Math.floor(perMille / 10)).padStart(3, ' ') + '.' + String(perMille % 10);

  // speed window: db sectors since the mark, dt whole seconds since the mark (never 0)
  let db: bigint;
  let dt: bigint;
  if (sync.windowSectors !== undefined || sync.windowSeconds !== undefined) {
    assert(isCount(sync.windowSectors) && isCount(sync.windowSeconds), 'sync windowSectors and windowSeconds come together, as integers');
    db = BigInt(sync.windowSectors);
    dt = BigInt(Math.max(1, sync.windowSeconds));
  } else {
    const speed = sync.speedKiBs ?? 0;
    assert(Number.isFinite(speed) && speed >= 0, 'sync speedKiBs is a non-negative number');
    db = BigInt(Math.floor(speed)) * 2n;
    dt = 1n;
  }
  // remaining time: (max - resync) / (db/32 + 1) * dt / 32 seconds
  let rt = (max - resync) / (db / 32n + 1n);
  rt = (rt * dt) >> 5n;
  const finish = `${rt / 60n}.${(rt % 60n) / 6n}`;
  const speedKiBs = db / 2n / dt;

  return `${bar} ${word} =${pct}% (${resync / 2n}/${max / 2n}) finish=${finish}min speed=${speedKiBs}K/sec`;
}

/** The members part of the first line: " vdd[4](S) vdc[3] ...", newest first. */
function membersText(a: MdstatArray): string {
  let s = '';
  for (let i = a.members.length - 1; i >= 0; i--) {
    const m = a.members[i]!;
    assert(typeof m.name === 'string' && /^[^\s[\]()]+$/.test(m.name), `${a.name}: member name '${m.name}' is one word without brackets (see mdstatMemberName)`);
    assert(isCount(m.descNr), `${a.name}: member ${m.name} descNr is a non-negative integer`);
    s += ` ${m.name}[${m.descNr}]`;
    if (m.writeMostly) s += '(W)';
    if (m.journal) s += '(J)';
    if (m.faulty) {
      s += '(F)';
      continue;
    }
    if (m.spare) s += '(S)';
    if (m.replacement) s += '(R)';
  }
  return s;
}

function bitmapText(b: MdstatBitmap): string {
  assert(isCount(b.pagesUsed) && isCount(b.pagesTotal) && b.pagesUsed <= b.pagesTotal, 'bitmap pagesUsed is within 0..pagesTotal');
  assert(isCount(b.chunkBytes) && b.chunkBytes > 0, 'bitmap chunkBytes is a positive integer');
  const pageKiB = b.pageKiB ?? 4;
  assert(isCount(pageKiB) && pageKiB > 0, 'bitmap pageKiB is a positive integer');
  const chunkKiB = Math.floor(b.chunkBytes / 1024);
  let s = `bitmap: ${b.pagesUsed}/${b.pagesTotal} pages [${b.pagesUsed * pageKiB}KB], `
    + (chunkKiB ? `${chunkKiB}KB chunk` : `${b.chunkBytes}B chunk`);
  if (b.file !== undefined) s += `, file: ${escapePath(b.file)}`;
  return s + '\n';
}

/** One array's stanza, ending with the blank line the kernel prints after it. */
export function formatMdstatArray(a: MdstatArray): string {
  assert(typeof a.name === 'string' && a.name.length < 32 && /^md(\d+|_[A-Za-z0-9_.-]+)$/.test(a.name), `array name '${a.name}' is a kernel md name (md0, md127, md_NAME)`);
  assert(Array.isArray(a.members), `${a.name}: members is a list`);
  assert(isCount(a.blocks), `${a.name}: blocks is a non-negative integer`);

  let s = `${a.name} : `;
  if (a.active) {
    s += a.broken ? 'broken' : 'active';
    if (a.readOnly === true || a.readOnly === 'read-only') s += ' (read-only)';
    else if (a.readOnly === 'auto-read-only') s += ' (auto-read-only)';
    s += ' ' + personalityName(a.level);
  } else {
    s += 'inactive';
  }
  s += membersText(a);
  if (a.members.length > 0) s += `\n${INDENT}${a.blocks} blocks`;
  s += superText(a.superVersion);

  if (a.active) {
    s += personalityStatus(a) + '\n' + INDENT;
    if (hasSyncThread(a.level)) {
      let progress = '';
      if (a.sync) progress = formatSyncProgress(a.sync);
      else if (a.remoteSync) progress = `\t${a.remoteSync}=REMOTE`;
      else if (a.resyncPending) progress = '\tresync=PENDING';
      if (progress) s += progress + '\n' + INDENT;
    }
  } else {
    s += '\n' + INDENT + ' ';
  }
  if (a.bitmap) s += bitmapText(a.bitmap);
  return s + '\n';
}

/** The whole file: personalities, one stanza per array (newest first), unused devices. */
export function formatMdstat(arrays: readonly MdstatArray[], opts: MdstatOptions = {}): string {
  const personalities = opts.personalities ?? DEFAULT_PERSONALITIES;
  let s = 'Personalities : ';
  for (const p of personalities) {
    assert(/^[A-Za-z0-9_-]+$/.test(p), `personality '${p}' is one word`);
    s += `[${p}] `;
  }
  s += '\n';
  const names = new Set<string>();
  for (let i = arrays.length - 1; i >= 0; i--) {
    const a = arrays[i]!;
    assert(!names.has(a.name), `array ${a.name} is listed once`);
    names.add(a.name);
    s += formatMdstatArray(a);
  }
  s += 'unused devices: ';
  const unused = opts.unusedDevices ?? [];
  for (const d of unused) {
    assert(/^[^\s]+$/.test(d), `unused device '${d}' is one word`);
    s += `${d} `;
  }
  if (unused.length === 0) s += '<none>';
  return s + '\n';
}
