/**
 * Assembly decisions, as mdadm's Assemble.c and the kernel's analyze_sbs make them, as pure
 * functions over superblocks already loaded (no I/O here, so every rule is testable on
 * hand-made superblocks):
 *
 *  - members are grouped by array UUID (with --uuid/--name the devices are a pool to search);
 *  - the superblock with the highest events defines the array;
 *  - active members older than (events − 1) are left out as stale unless --force;
 *  - a member the array records as faulty, or a second claimant of a slot, is left out;
 *  - a replacement (feature REPLACEMENT) pairs with its slot's original, or fills the slot;
 *  - an array missing members starts only when asked to (--run).
 */
import { TsmdError } from '../errors.js';
import { deviceRole, Feature, isActiveRole, MAX_SECTOR, Role, type Superblock1, setNameText, uuidText } from '../format/superblock.js';
import type { BlockDevice } from '../io/block-device.js';
import { findLevel } from '../raid/levels.js';
import type { Member } from './members.js';
import { slotCount } from './reshape.js';
import type { LoadedSuperblock } from './sb-io.js';

export interface AssemblyReport {
  accepted: string[];
  stale: string[];
  spares: string[];
  missingSlots: number[];
  degraded: boolean;
}

/** A device and the superblock read from it. */
export interface Candidate {
  dev: BlockDevice;
  l: LoadedSuperblock;
}

export interface AssemblyPlan {
  /** the freshest superblock: the array's fields */
  fresh: Superblock1;
  /** the members taken, with bitmaps still to load */
  members: Member[];
  report: AssemblyReport;
}

export interface SearchOptions {
  /** search the devices for the members of this array (others are skipped, not refused) */
  uuid?: Uint8Array;
  /** search by array name (set_name, with or without the "homehost:" part) */
  name?: string;
}

/** md's level name for messages (the number for a level tsmd has no personality for). */
export function levelText(level: number): string {
  return findLevel(level)?.name ?? `raid${level}`;
}

/** Does this superblock belong to the array searched for (no search: every one does)? */
export function matchesSearch(sb: Superblock1, opts: SearchOptions): boolean {
  if (opts.uuid && uuidText(sb.setUuid) !== uuidText(opts.uuid)) return false;
  if (opts.name !== undefined) {
    const n = setNameText(sb);
    if (n !== opts.name && !n.endsWith(`:${opts.name}`)) return false;
  }
  return true;
}

/** Every candidate belongs to one array; the freshest superblock defines it. */
function freshest(found: readonly Candidate[]): Superblock1 {
  const first = found[0]!.l.sb;
  for (const { dev, l } of found) {
    if (uuidText(l.sb.setUuid) !== uuidText(first.setUuid))
      throw new TsmdError('EINVAL', `superblock on ${dev.name} (array ${uuidText(l.sb.setUuid)}) doesn't match others (array ${uuidText(first.setUuid)}) - assembly aborted`);
  }
  const fresh = found.reduce((a, b) => (b.l.sb.events > a.l.sb.events ? b : a)).l.sb;
  for (const { dev, l } of found) {
    const s = l.sb;
    const same = s.level === fresh.level && s.layout === fresh.layout && s.chunkSize === fresh.chunkSize;
    if (!same && (s.events === fresh.events || isActiveRole(deviceRole(s))))
      throw new TsmdError(
        'EINVAL',
        `${dev.name}: geometry (${levelText(s.level)}, layout ${s.layout}, chunk ${s.chunkSize}) disagrees with the array (${levelText(fresh.level)}, layout ${fresh.layout}, chunk ${fresh.chunkSize}) - assembly aborted`,
      );
  }
  return fresh;
}

function newMember(c: Candidate, slot: number | null, recoveryOffset: number | null, replacement?: boolean): Member {
  const m: Member = { dev: c.dev, loaded: c.l, devNumber: c.l.sb.devNumber, slot, faulty: false, recoveryOffset, bitmaps: [] };
  if (replacement) m.replacement = true;
  return m;
}

/**
 * The members of the array the candidates make up, and the report of what was left out.
 * `force` takes members whose events are behind (mdadm --force).
 */
export function planAssembly(found: readonly Candidate[], opts: { force?: boolean; log?: (msg: string) => void }): AssemblyPlan {
  if (found.length === 0) throw new TsmdError('ENODEV', 'no devices to assemble');
  const log = opts.log ?? (() => {});
  const fresh = freshest(found);
  const report: AssemblyReport = { accepted: [], stale: [], spares: [], missingSlots: [], degraded: false };
  const members: Member[] = [];
  const bySlot = new Map<number, Member>();
  const byEvents = [...found].sort((a, b) => (a.l.sb.events > b.l.sb.events ? -1 : a.l.sb.events < b.l.sb.events ? 1 : 0));
  for (const c of byEvents) {
    const { dev, l } = c;
    const dn = l.sb.devNumber;
    const role = dn < fresh.maxDev ? fresh.devRoles[dn]! : Role.SPARE;
    const behind = l.sb.events + 1n < fresh.events;
    const kick = () => {
      log(`kicking non-fresh ${dev.name} from array (events ${l.sb.events} < ${fresh.events})`);
      report.stale.push(dev.name);
    };
    if (role === Role.FAULTY) {
      log(`${dev.name} is marked faulty in the array; not using it`);
      report.stale.push(dev.name);
    } else if (isActiveRole(role) && role < slotCount(fresh)) {
      if (behind && !opts.force) kick();
      else if ((l.sb.featureMap & Feature.REPLACEMENT) !== 0) {
        // a replacement being built for the slot: paired with its original below
        members.push(newMember(c, role, Number(l.sb.recoveryOffset), true));
        report.accepted.push(dev.name);
      } else if (bySlot.has(role)) {
        log(`${dev.name} claims slot ${role} which ${bySlot.get(role)!.dev.name} already holds; not using it`);
        report.stale.push(dev.name);
      } else {
        const m = newMember(c, role, (l.sb.featureMap & Feature.RECOVERY_OFFSET) !== 0 ? Number(l.sb.recoveryOffset) : null);
        bySlot.set(role, m);
        members.push(m);
        report.accepted.push(dev.name);
      }
    } else if (isActiveRole(deviceRole(l.sb)) && behind) {
      // it thinks it is active but the array has moved on without it: stale
      kick();
    } else {
      members.push(newMember(c, null, null));
      report.spares.push(dev.name);
    }
  }
  pairReplacements(members, bySlot, fresh, report, log);
  for (let s = 0; s < slotCount(fresh); s++) if (!bySlot.has(s)) report.missingSlots.push(s);
  return { fresh, members, report };
}

/** Each replacement with its slot's original, or in the slot of a missing one. */
function pairReplacements(members: Member[], bySlot: Map<number, Member>, fresh: Superblock1, report: AssemblyReport, log: (msg: string) => void): void {
  for (const m of [...members]) {
    if (!m.replacement) continue;
    const slot = m.slot!;
    if (!bySlot.has(slot)) {
      // its original is missing: the replacement fills the slot and is rebuilt from the others
      m.replacement = false;
      bySlot.set(slot, m);
      log(`${m.dev.name} replaces the missing member of slot ${slot}; its recovery goes on`);
    } else if (members.some((x) => x !== m && x.replacement && x.slot === slot)) {
      log(`${m.dev.name} is a second replacement for slot ${slot}; not using it`);
      members.splice(members.indexOf(m), 1);
      report.accepted = report.accepted.filter((n) => n !== m.dev.name);
      report.stale.push(m.dev.name);
    } else if (fresh.resyncOffset !== MAX_SECTOR) {
      // after an unclean stop a write may have reached the original and not the
      // replacement: the copy starts again
      m.recoveryOffset = 0;
    }
  }
}

/**
 * May the array start? `canRun` is the personality's answer for the in-sync slots. mdadm
 * counts a member being rebuilt as present (okcnt + rebuilding_cnt): its recovery just goes
 * on; only a slot with no member at all needs --run.
 */
export function startDecision(plan: AssemblyPlan, canRun: (available: readonly boolean[]) => boolean, run: boolean, log: (msg: string) => void): void {
  const { fresh, report } = plan;
  const available = Array.from({ length: slotCount(fresh) }, (_, s) => plan.members.some((m) => m.slot === s && !m.replacement && m.recoveryOffset === null));
  const usable = available.filter(Boolean).length;
  if (!canRun(available))
    throw new TsmdError('EIO', `${levelText(fresh.level)} array ${uuidText(fresh.setUuid)}: only ${usable} of ${fresh.raidDisks} members usable - not enough to start the array`);
  report.degraded = available.some((a) => !a);
  if (report.missingSlots.length > 0 && !run)
    throw new TsmdError(
      'EBUSY',
      `array ${uuidText(fresh.setUuid)} assembled from ${usable} drive(s) (out of ${fresh.raidDisks}), but not started: it would run degraded - use --run to start it anyway`,
    );
  if (report.degraded) log(`array ${uuidText(fresh.setUuid)} has been started degraded (${usable}/${fresh.raidDisks})`);
}
