/**
 * mdadm --manage on a running array: --fail, --remove, --add / --re-add, --replace (md's
 * ioctls SET_DISK_FAULTY, HOT_REMOVE_DISK, ADD_NEW_DISK and the sysfs "want_replacement"),
 * over a narrow view of the array. Every change goes through the metadata transaction; a
 * failure goes through md_error.
 */
import { TsmdError } from '../errors.js';
import { bitmapAreaBytes } from '../format/bitmap.js';
import { deviceRole, encodeSuperblock, Feature, isActiveRole, type Superblock1, uuidText } from '../format/superblock.js';
import type { BlockDevice } from '../io/block-device.js';
import type { Personality } from '../raid/personality.js';
import { type AssemblyReport, levelText } from './assemble.js';
import type { ClusterOps } from './cluster-ops.js';
import type { WriteIntentBitmap } from './bitmap.js';
import { DEV_FLAG_WRITEMOSTLY, inSync, type Member, type MemberSet } from './members.js';
import type { UpdateOptions } from './metadata.js';
import { type LoadedSuperblock, loadBitmaps, loadSuperblock } from './sb-io.js';

export interface ManageHost {
  readonly memberSet: MemberSet;
  /** the array-wide superblock fields */
  readonly sb: Superblock1;
  readonly personality: Personality;
  readonly bitmap: WriteIntentBitmap | null;
  readonly redundant: boolean;
  readonly report: AssemblyReport;
  readonly isReadOnly: boolean;
  slotMember(slot: number): Member | null;
  update(mutate: () => unknown, opts?: UpdateOptions): Promise<void>;
  /** write what md_error recorded, now */
  settle(): Promise<void>;
  mdError(m: Member, why: string): boolean;
  /** let the sync engine look for work (recovery onto a spare, a replacement) */
  kick(): void;
  log(msg: string): void;
  /** md-cluster, for a clustered array */
  readonly cluster: ClusterOps | null;
}

/**
 * Device changes every node must agree on go through md-cluster's NEWDISK / REMOVE rounds
 * (spec §4.5–§4.7): not built yet (md-cluster part 2), so they are refused on a clustered
 * array before anything is written (the kernel refuses an add without MD_DISK_CLUSTER_ADD).
 */
function refuseClustered(h: ManageHost, what: string): void {
  if (h.cluster) throw new TsmdError('ENOTSUP', `${what} on a clustered array needs md-cluster's device rounds (add/confirm/remove), not supported yet`);
}

/** mdadm --fail: mark a member faulty; the array goes on degraded if it can. */
export async function failMember(h: ManageHost, path: string): Promise<void> {
  const m = h.memberSet.byPath(path);
  if (m.faulty) return;
  if (inSync(m) && !h.personality.canRun(h.memberSet.availability(m.slot!)))
    throw new TsmdError('EBUSY', `set ${path} faulty refused: the array cannot run without it`);
  if (!h.mdError(m, `${path} set faulty (slot ${m.slot ?? 'spare'})`)) throw new TsmdError('EBUSY', `set ${path} faulty refused: it is the last working copy`);
  // md_error only records the change; --fail returns once it is on every member
  await h.settle();
  h.kick();
}

/**
 * mdadm --replace [--with]: mark an active member for replacement; a spare (the --with one
 * when given) is rebuilt as its copy while it keeps serving, then it is marked faulty. With
 * no spare yet the mark waits for one (--add). Returns the slot.
 */
export function requestReplacement(h: ManageHost, path: string, withPath?: string): number {
  refuseClustered(h, `--replace ${path}`);
  if (!h.redundant) throw new TsmdError('EINVAL', `${levelText(h.sb.level)} has no redundancy: ${path} cannot be replaced`);
  if (h.isReadOnly) throw new TsmdError('EROFS', 'array is read-only');
  const m = h.memberSet.byPath(path);
  if (m.faulty || m.slot === null || m.replacement || m.recoveryOffset !== null) throw new TsmdError('EINVAL', `${path} is not active and so cannot be replaced.`);
  if (withPath !== undefined) {
    const w = h.memberSet.byPath(withPath);
    if (w.faulty) throw new TsmdError('EINVAL', `${withPath} is faulty and cannot be a replacement`);
    if (w.slot !== null) throw new TsmdError('EINVAL', `${withPath} is active and cannot be a replacement`);
    w.replaceFor = m.slot;
  }
  m.wantReplacement = true;
  h.log(`md: ${path} (slot ${m.slot}) marked for replacement${withPath ? ` by ${withPath}` : ''}`);
  h.kick();
  return m.slot;
}

/** mdadm --remove: only a faulty or spare member can go; its slot becomes empty. */
export async function removeMember(h: ManageHost, path: string): Promise<void> {
  refuseClustered(h, `--remove ${path}`);
  const m = h.memberSet.byPath(path);
  if (!m.faulty && m.slot !== null) throw new TsmdError('EBUSY', `hot remove failed for ${path}: Device or resource busy (fail it first)`);
  await h.update(() => {
    h.memberSet.remove(m);
    if (m.slot !== null && !h.report.missingSlots.includes(m.slot) && !h.slotMember(m.slot)) h.report.missingSlots.push(m.slot);
  });
  await m.dev.close().catch(() => {});
  h.log(`md: unbind ${path}`);
}

export interface AddOptions {
  reAdd?: boolean;
  deviceUuid: Uint8Array;
  writeMostly?: boolean;
}

function withFlags(opts: AddOptions, flags: number): number {
  if (opts.writeMostly === undefined) return flags;
  return opts.writeMostly ? flags | DEV_FLAG_WRITEMOSTLY : flags & ~DEV_FLAG_WRITEMOSTLY;
}

/**
 * mdadm --add / --add-spare: a new member joins as a spare (superblock written on it).
 * A device that was a member of this array and is still current goes back into its slot
 * (--re-add semantics); one that missed writes needs the recovery of the sync engine.
 */
export async function addMember(h: ManageHost, dev: BlockDevice, opts: AddOptions): Promise<'spare' | 're-added'> {
  refuseClustered(h, `--add ${dev.name}`);
  if (h.memberSet.list.some((m) => m.dev.name === dev.name)) throw new TsmdError('EBUSY', `${dev.name} is already a member`);
  if (opts.writeMostly && h.sb.level !== 1) throw new TsmdError('EINVAL', `--write-mostly is only meaningful for raid1 (${dev.name})`);
  const existing = await loadSuperblock(dev);
  if (existing && existing.problems.length === 0 && uuidText(existing.sb.setUuid) === uuidText(h.sb.setUuid)) {
    const r = await tryReAdd(h, dev, existing, opts);
    if (r) return r;
  } else if (opts.reAdd) {
    throw new TsmdError('EINVAL', `--re-add for ${dev.name} to array ${uuidText(h.sb.setUuid)} is not possible: it was not a member`);
  }
  if (dev.readOnly) throw new TsmdError('EROFS', `${dev.name} is read-only`);
  const member = newSpare(h, dev, opts);
  await copyBitmapArea(h, member);
  await h.update(() => h.memberSet.add(member));
  h.log(`md: bind ${dev.name} as a spare (device number ${member.devNumber})`);
  h.kick();
  return 'spare';
}

/** A former member back in its slot, when it is current or the bitmap records what it missed. */
async function tryReAdd(h: ManageHost, dev: BlockDevice, existing: LoadedSuperblock, opts: AddOptions): Promise<'re-added' | null> {
  const role = deviceRole(existing.sb);
  const freeSlot = isActiveRole(role) && role < h.sb.raidDisks && !h.slotMember(role);
  const numberFree = !h.memberSet.list.some((m) => m.devNumber === existing.sb.devNumber);
  const current = existing.sb.events + 1n >= h.sb.events;
  // md: a member newer than events_cleared missed only what the bitmap still records
  const wasRecovering = (existing.sb.featureMap & Feature.RECOVERY_OFFSET) !== 0;
  const fromBitmap = !current && h.bitmap !== null && existing.sb.events >= h.bitmap.sup.eventsCleared && !wasRecovering;
  if (freeSlot && numberFree && (current || fromBitmap)) {
    const bitmaps = await loadBitmaps(dev, existing).catch(() => []);
    existing.sb.devFlags = withFlags(opts, existing.sb.devFlags);
    const m: Member = { dev, loaded: existing, devNumber: existing.sb.devNumber, slot: role, faulty: false, recoveryOffset: null, bitmaps };
    if (fromBitmap) {
      m.recoveryOffset = 0;
      m.bitmapGuided = true;
    }
    await h.update(() => {
      h.memberSet.add(m);
      h.report.missingSlots = h.report.missingSlots.filter((s) => s !== role);
    });
    if (h.bitmap) await h.bitmap.writeThrough(true);
    h.log(`md: re-added ${dev.name} to slot ${role}${fromBitmap ? ' (recovery of the chunks the bitmap records)' : ''}`);
    if (fromBitmap) h.kick();
    return 're-added';
  }
  if (!opts.reAdd) return null;
  throw new TsmdError(
    'EBUSY',
    freeSlot
      ? `--re-add for ${dev.name} is not possible: it missed writes the bitmap does not record (events ${existing.sb.events}, bitmap cleared at ${h.bitmap?.sup.eventsCleared ?? 'no bitmap'}); use --add for a full recovery`
      : `--re-add for ${dev.name} to array ${uuidText(h.sb.setUuid)} is not possible: its slot is in use`,
  );
}

/** The new spare's superblock, laid out like a working member's (data offset, minor version). */
function newSpare(h: ManageHost, dev: BlockDevice, opts: AddOptions): Member {
  // a new spare: lowest free device number from raid_disks up (the kernel's choice)
  const dn = h.memberSet.freeDevNumber(h.sb.raidDisks);
  const template = h.memberSet.list.find((m) => !m.faulty)?.loaded;
  if (!template) throw new TsmdError('ENODEV', 'no working member to copy the layout from');
  const devSectors = Math.floor(dev.sizeBytes / 512);
  const own = template.sb;
  const minor = template.minor;
  const sbStart = minor === 0 ? Math.floor((devSectors - 16) / 8) * 8 : template.sbStartSector;
  const needed = h.redundant ? Number(h.sb.size) : 0;
  const dataSize = minor === 0 ? sbStart - (template.sbStartSector - Number(own.dataSize)) : devSectors - Number(own.dataOffset);
  if (dataSize < needed || dataSize <= 0) throw new TsmdError('ENOSPC', `${dev.name} is too small: ${dataSize} data sectors, the array needs ${needed}`);
  const sb: Superblock1 = {
    ...own,
    devNumber: dn,
    deviceUuid: opts.deviceUuid,
    devFlags: withFlags(opts, 0),
    dataSize: BigInt(dataSize),
    superOffset: BigInt(sbStart),
    recoveryOffset: 0n,
    cntCorrectedRead: 0,
    devRoles: h.sb.devRoles.slice(),
  };
  const loaded: LoadedSuperblock = { sb, raw: encodeSuperblock({ ...sb }), minor, sbStartSector: sbStart, devSectors, problems: [] };
  return { dev, loaded, devNumber: dn, slot: null, faulty: false, recoveryOffset: null, bitmaps: [] };
}

/** An internal bitmap area on the new member, copied from a working member. */
async function copyBitmapArea(h: ManageHost, member: Member): Promise<void> {
  const src = h.memberSet.list.find((m) => !m.faulty && m.bitmaps.length > 0);
  const own = member.loaded.sb;
  if (!src || (own.featureMap & Feature.BITMAP_OFFSET) === 0) return;
  const b = src.bitmaps[0]!;
  const area = new Uint8Array(bitmapAreaBytes(b.nbits) * Math.max(1, src.bitmaps.length));
  await src.dev.read(area, b.startSector * 512);
  await member.dev.write(area, (member.loaded.sbStartSector + own.bitmapOffset) * 512);
  member.bitmaps = await loadBitmaps(member.dev, member.loaded).catch(() => []);
}
