/**
 * The array's members and the questions every part of the core asks about them (md's rdev
 * list with its flags: In_sync, Faulty, Replacement, WantReplacement, recovery_offset). The
 * set owns the list; the array, the member-I/O adapter, recovery planning and the manage
 * operations read and change members only through it.
 */
import { assert, TsmdError } from '../errors.js';
import type { BlockDevice } from '../io/block-device.js';
import type { LoadedBitmap, LoadedSuperblock } from './sb-io.js';

export interface Member {
  dev: BlockDevice;
  loaded: LoadedSuperblock;
  devNumber: number;
  /** active slot, or null for a spare */
  slot: number | null;
  faulty: boolean;
  /** sectors already recovered when the member is being rebuilt; null = in sync */
  recoveryOffset: number | null;
  bitmaps: LoadedBitmap[];
  /** re-added member whose recovery visits only the chunks the bitmap says it missed */
  bitmapGuided?: boolean;
  /** member sectors that failed to read and wait for correction (md's fix_read_error) */
  badReads?: Array<[number, number]>;
  /** read errors seen (md: read_errors); past the limit the member is failed */
  readErrors?: number;
  /**
   * Being built as the replacement of the working member of the same slot (mdadm --replace;
   * superblock feature REPLACEMENT). It gets every write that starts below its recovery
   * frontier and is never read; when it is complete the member it replaces is marked faulty.
   */
  replacement?: boolean;
  /** mdadm --replace asked for this member to be replaced (md's WantReplacement, in memory) */
  wantReplacement?: boolean;
  /** mdadm --with: this spare is the one to replace the member of that slot */
  replaceFor?: number;
}

/** devflags bit 0: WriteMostly (raid1 reads avoid the member) */
export const DEV_FLAG_WRITEMOSTLY = 1;

/** md's max_corr_read_errors default: more read errors than this fail the member */
export const MAX_READ_ERRORS = 20;

/**
 * Byte offset on the member's device of a sector of its data area: the one place that adds
 * data_offset (the superblock's, in sectors) to a member sector. The sector may be negative:
 * a reshape's new geometry starts at data_offset + new_offset, and new_offset can be below 0.
 */
export function dataByteOffset(m: Member, deviceSector: number): number {
  const sector = Number(m.loaded.sb.dataOffset) + deviceSector;
  assert(sector >= 0 && Number.isSafeInteger(sector), 'a member I/O lands on the device');
  return sector * 512;
}

/** Active, working and not being rebuilt (md's In_sync). */
export function inSync(m: Member): boolean {
  return m.slot !== null && !m.faulty && m.recoveryOffset === null;
}

export class MemberSet {
  /** the members, in assembly order (spares and faulty ones included) */
  readonly list: Member[];
  /** some member is a replacement being built (the write path then looks for it) */
  private replacingNow = false;

  constructor(list: Member[], private readonly raidDisksOf: () => number) {
    this.list = list;
    this.updateReplacing();
  }

  get raidDisks(): number {
    return this.raidDisksOf();
  }

  get replacing(): boolean {
    return this.replacingNow;
  }

  /** `replacing` is derived: some working member is a replacement being built. */
  updateReplacing(): void {
    this.replacingNow = this.list.some((x) => x.replacement === true && !x.faulty);
  }

  /** The working, non-replacement member of a slot (being rebuilt or not), or null. */
  original(slot: number): Member | null {
    for (const m of this.list) if (m.slot === slot && !m.faulty && !m.replacement) return m;
    return null;
  }

  /** The replacement being built for a slot, if any (hot paths ask `replacing` first). */
  replacementOf(slot: number): Member | null {
    for (const m of this.list) if (m.slot === slot && !m.faulty && m.replacement) return m;
    return null;
  }

  /** Slots with a working, in-sync member. */
  get workingSlots(): number[] {
    const out: number[] = [];
    for (const m of this.list) if (inSync(m)) out.push(m.slot!);
    return out;
  }

  /** Per slot: is there an in-sync member, leaving out `without` (md's "enough" input). */
  availability(without?: number): boolean[] {
    const out = new Array<boolean>(this.raidDisks).fill(false);
    for (const m of this.list) if (inSync(m) && m.slot! < out.length && m.slot !== without) out[m.slot!] = true;
    return out;
  }

  /** Fewer in-sync members than raid_disks (counts without allocating: the write path asks). */
  get degraded(): boolean {
    let working = 0;
    for (const m of this.list) if (inSync(m)) working++;
    return working < this.raidDisks;
  }

  /** Slots that hold a member being rebuilt. */
  get rebuildingSlots(): number[] {
    const out: number[] = [];
    for (const m of this.list) if (m.slot !== null && !m.faulty && m.recoveryOffset !== null) out.push(m.slot);
    return out;
  }

  /** A member by its device name; an unknown one is ENODEV in mdadm's words. */
  byPath(path: string): Member {
    const m = this.list.find((x) => x.dev.name === path);
    if (!m) throw new TsmdError('ENODEV', `${path} is not a member of this array`);
    return m;
  }

  /** A spare that can take a slot: the --with one for `forSlot` first, else any unreserved one. */
  freeSpare(forSlot?: number): Member | null {
    const spares = this.list.filter((m) => m.slot === null && !m.faulty);
    if (forSlot !== undefined) return spares.find((m) => m.replaceFor === forSlot) ?? spares.find((m) => m.replaceFor === undefined) ?? null;
    return spares[0] ?? null;
  }

  add(m: Member): void {
    assert(!this.list.includes(m), `${m.dev.name} is added once`);
    assert(!this.list.some((x) => x.devNumber === m.devNumber), `device number ${m.devNumber} is free`);
    this.list.push(m);
    this.updateReplacing();
  }

  remove(m: Member): void {
    const i = this.list.indexOf(m);
    assert(i >= 0, `${m.dev.name} is a member`);
    this.list.splice(i, 1);
    this.updateReplacing();
  }

  /** Lowest device number from `from` up that no member uses (the kernel's choice for a new spare). */
  freeDevNumber(from: number): number {
    let dn = from;
    while (this.list.some((m) => m.devNumber === dn)) dn++;
    return dn;
  }
}
