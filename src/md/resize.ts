/**
 * --grow changes that move no data: raid1 --raid-devices (md's raid1_reshape through
 * update_raid_disks), linear --grow --add (mdadm's Grow_Add_device + md's linear_add) and
 * --size (md's update_size + the personalities' resize: raid1_resize, raid5_resize,
 * raid10_resize). Each is one metadata transaction on the quiesced array; the personality of
 * the new geometry is installed in the same transaction (as md swaps its conf under
 * mddev_suspend), and the sync engine then does what md's recovery thread does next: recover
 * a spare into a new mirror slot, resync a grown region.
 *
 * Refusals happen before anything is written, with mdadm 4.2's words (Grow.c).
 */
import { TsmdError } from '../errors.js';
import { type BitmapSuper, bitmapAreaBytes, bitmapBits, setBit, testBit } from '../format/bitmap.js';
import { encodeSuperblock, Feature, Role, type Superblock1 } from '../format/superblock.js';
import type { BlockDevice } from '../io/block-device.js';
import { decodeRaid10Layout, raid10Derive } from '../raid/geometry/raid10.js';
import type { WriteIntentBitmap } from './bitmap.js';
import type { Member } from './members.js';
import { needSpares, type ReshapeHost } from './reshape.js';
import type { LoadedSuperblock } from './sb-io.js';

/** What these changes ask of the array beyond the reshape host (MdArray, a few lines). */
export interface ResizeHost {
  readonly base: ReshapeHost;
  readonly bitmap: WriteIntentBitmap | null;
  /** replace the runtime bitmap by one of another size (md_bitmap_resize), same writer */
  resizeBitmap(sup: BitmapSuper, nbits: number, bits: Uint8Array): WriteIntentBitmap;
  /** md's recovery_cp lowered to `at` (resync space): the grown region is resynced */
  resyncFrom(at: number): void;
  /** let the sync engine look for work (a spare into a new mirror slot) */
  kick(): void;
}

export interface MirrorsRequest {
  raidDisks: number;
  force?: boolean;
  devName: string;
}

/**
 * raid1 --raid-devices=N (Grow.c: no restriping, raid_disks set through SET_ARRAY_INFO; md's
 * update_raid_disks -> raid1_reshape). More mirrors: the new slots are empty and a spare
 * fills each by recovery (mdadm first insists on the spares unless --force). Fewer: md
 * refuses (-EBUSY, mdadm "failed to set raid disks") while more slots hold a device than
 * the new count; otherwise the devices are packed into the low slots in slot order.
 * Returns mdadm's stdout line, or null when nothing changes.
 */
export async function growMirrors(h: ResizeHost, req: MirrorsRequest): Promise<string | null> {
  const host = h.base;
  const sb = host.sb;
  const n = req.raidDisks;
  if (n === sb.raidDisks) return null;
  if (n < 1) throw new TsmdError('EINVAL', 'failed to set raid disks');
  const spares = host.memberSet.list.filter((m) => m.slot === null && !m.faulty).length;
  const delta = n - sb.raidDisks;
  if (delta > 0 && spares < delta && !req.force)
    throw needSpares(delta, spares);
  // md counts the slots holding a device (faulty ones too, until removed); replacements ride along
  const holders = host.memberSet.list.filter((m) => m.slot !== null && !m.replacement).sort((a, b) => a.slot! - b.slot!);
  if (holders.length > n) throw new TsmdError('EBUSY', 'failed to set raid disks');
  await host.quiesced(async () => {
    await host.personality.flush();
    await host.update(() => {
      if (delta < 0) {
        // raid1_reshape packs the devices so that the missing ones have the high slots
        const moved = new Map<number, number>();
        holders.forEach((m, i) => {
          moved.set(m.slot!, i);
          m.slot = i;
        });
        for (const m of host.memberSet.list) if (m.replacement && m.slot !== null) m.slot = moved.get(m.slot) ?? null;
      }
      sb.raidDisks = n;
      host.install(host.makePersonality(sb));
    });
  });
  host.log(`md: ${req.devName}: raid1 now has ${n} mirrors (was ${n - delta})`);
  h.kick();
  return `raid_disks for ${req.devName} set to ${n}`;
}

/**
 * mdadm --grow --add DEV on a linear array (Grow_Add_device: the new superblock, written
 * first on the new device, is the last member's with its own device number, device uuid,
 * role and data size; md's linear_add appends it and the array grows by its data size; then
 * every member's superblock carries raid_disks + 1 and the new role).
 */
export async function linearAdd(h: ResizeHost, dev: BlockDevice, deviceUuid: Uint8Array, devName: string): Promise<void> {
  const host = h.base;
  const sb = host.sb;
  if (sb.level !== -1) throw new TsmdError('EINVAL', 'can only add devices to linear arrays');
  if (dev.readOnly) throw new TsmdError('EROFS', `cannot open ${dev.name}`);
  if (host.memberSet.list.some((m) => m.dev.name === dev.name)) throw new TsmdError('EBUSY', `Cannot open ${dev.name}: Device or resource busy`);
  const last = host.memberSet.list.filter((m) => m.slot !== null).sort((a, b) => b.slot! - a.slot!)[0];
  if (!last) throw new TsmdError('ENODEV', `cannot get device detail for device ${sb.raidDisks - 1}`);
  const d = sb.raidDisks;
  // super1's "linear-grow-new": the first device number whose role is spare or faulty must
  // be d (it is for every array mdadm made; otherwise mdadm gives up)
  let free = 0;
  while (free < sb.maxDev && (sb.devRoles[free] ?? Role.SPARE) < Role.FAULTY) free++;
  if (free !== d || host.memberSet.list.some((m) => m.devNumber === d)) throw new TsmdError('EINVAL', `Preparing new metadata failed on ${dev.name}`);
  const t = last.loaded;
  const devSectors = Math.floor(dev.sizeBytes / 512);
  const own = t.sb;
  let superOffset = Number(own.superOffset);
  let dataSize: number;
  if (superOffset < Number(own.dataOffset)) dataSize = devSectors - Number(own.dataOffset);
  else {
    // v1.0: the superblock at the end of the new device
    superOffset = (devSectors - 16) & ~7;
    dataSize = superOffset - Number(own.dataOffset);
  }
  if (dataSize <= 0) throw new TsmdError('ENOSPC', `${dev.name} is too small to be added`);
  const roles = sb.devRoles.slice();
  while (roles.length <= d) roles.push(Role.SPARE);
  roles[d] = d;
  const newSb: Superblock1 = {
    ...own,
    devNumber: d,
    deviceUuid,
    devFlags: 0,
    dataSize: BigInt(dataSize),
    superOffset: BigInt(superOffset),
    recoveryOffset: 0n,
    cntCorrectedRead: 0,
    maxDev: Math.max(own.maxDev, d + 1),
    devRoles: roles,
  };
  const raw = encodeSuperblock({ ...newSb });
  const sbStart = t.minor === 0 ? superOffset : t.sbStartSector;
  // mdadm stores the new superblock before the kernel sees the device
  await dev.write(raw, sbStart * 512);
  await dev.flush();
  const loaded: LoadedSuperblock = { sb: newSb, raw, minor: t.minor, sbStartSector: sbStart, devSectors, problems: [] };
  const m: Member = { dev, loaded, devNumber: d, slot: d, faulty: false, recoveryOffset: null, bitmaps: [] };
  const before = host.personality.arraySectors;
  await host.quiesced(async () => {
    await host.update(() => {
      host.memberSet.add(m);
      sb.raidDisks = d + 1;
      host.install(host.makePersonality(sb));
    });
  });
  host.log(`md: ${devName}: linear grown by ${dev.name}: ${before / 2}K -> ${host.personality.arraySectors / 2}K`);
}

export interface SizeRequest {
  /** component size in sectors, or 'max' (mdadm --size=max) */
  sectors: number | 'max';
  devName: string;
}

/** What --size did: mdadm's message, and whether anything changed. */
export interface SizeResult {
  message: string;
  changed: boolean;
}

/** The rounding each personality's resize applies to a component size (sectors). */
function roundComponent(sb: Superblock1, sectors: number): number {
  if (sb.level === 4 || sb.level === 5 || sb.level === 6) return sectors - (sectors % sb.chunkSize);
  if (sb.level === 10) return raid10Derive({ raidDisks: sb.raidDisks, layout: sb.layout, chunkSectors: sb.chunkSize, componentSectors: sectors }).devSectors;
  return sectors;
}

/**
 * The sectors a member can give the array (md's rdev->sectors after rdev_size_store "0" or N:
 * super_1_rdev_size_change): for v1.1/1.2 the device from the data offset on; for v1.0 the
 * recorded data size (moving a superblock at the end is not done here).
 */
function memberRoom(m: Member): number {
  const sb = m.loaded.sb;
  if (Number(sb.superOffset) < Number(sb.dataOffset)) return Math.floor(m.dev.sizeBytes / 512) - Number(sb.dataOffset);
  return Number(sb.dataSize);
}

/**
 * mdadm --grow --size=N|max (Grow.c "set size" + md's update_size and ->resize). The members'
 * data size first follows their devices (rdev_size_change), then the component size becomes
 * N, or the largest every device (spares too) allows for max, rounded as the personality rounds
 * it; the array (and what NBD exports) is resized; a grown region is resynced from the old
 * end (md: recovery_cp = old size), and with an internal bitmap its chunks are marked to need
 * a sync instead (md_bitmap_resize sets NEEDED on the new chunks). Shrinking is allowed as md
 * allows it (data past the new end is no longer part of the array).
 */
export async function growSize(h: ResizeHost, req: SizeRequest): Promise<SizeResult> {
  const host = h.base;
  const sb = host.sb;
  const md = req.devName;
  const oldK = Number(sb.size) / 2;
  if (req.sectors !== 'max' && req.sectors === Number(sb.size)) return { message: `${md}: no change requested`, changed: false };
  if (Number(sb.size) === 0) throw new TsmdError('EINVAL', 'Cannot set device size in this type of array.');
  if (sb.level > 1 && req.sectors !== 'max' && req.sectors < sb.chunkSize) throw new TsmdError('EINVAL', 'component size must be larger than chunk size.');
  const resizable = sb.level === 1 || sb.level === 4 || sb.level === 5 || sb.level === 6 || sb.level === 10;
  if (!resizable) throw new TsmdError('EINVAL', `Cannot set device size for ${md}: Invalid argument`);
  if (sb.level === 10) {
    const l = decodeRaid10Layout(sb.layout);
    // raid10_resize: far layouts (not offset) cannot change size
    if (l.far > 1 && !l.offset) throw new TsmdError('EINVAL', `Cannot set device size for ${md}: Invalid argument`);
  }
  const working = host.memberSet.list.filter((m) => !m.faulty && m.slot !== null);
  // update_size: every device of the array bounds the size, spares too (rdev_for_each)
  const devices = host.memberSet.list.filter((m) => !m.faulty);
  const room = Math.min(...devices.map(memberRoom));
  let want = req.sectors === 'max' ? room : req.sectors;
  if (want > room) throw new TsmdError('ENOSPC', `Cannot set device size for ${md}: No space left on device`);
  want = roundComponent(sb, want);
  if (want <= 0) throw new TsmdError('EINVAL', `Cannot set device size for ${md}: Invalid argument`);
  const oldSync = host.personality.syncSectors;
  const oldArray = host.personality.arraySectors;
  // the bitmap's new size (md_bitmap_resize keeps the chunk when the bits still fit)
  const bm = h.bitmap;
  let resized: { sup: BitmapSuper; nbits: number; bits: Uint8Array } | null = null;
  const next = host.makePersonality({ ...sb, size: BigInt(want) });
  if (bm) {
    const chunk = bm.sup.chunkSize;
    const nbits = bitmapBits(next.syncSectors, chunk);
    const space = Math.min(...working.map(bitmapSpace));
    if (bitmapAreaBytes(nbits) / 512 > space)
      throw new TsmdError('EBUSY', `Cannot set device size for ${md}: Device or resource busy\n       Bitmap must be removed before size can be changed`);
    const bits = new Uint8Array(Math.ceil(nbits / 8));
    const old = bm.snapshotBits();
    for (let i = 0; i < nbits; i++) {
      const startSector = i * (chunk / 512);
      // the old bits as they are; every chunk reaching past the old end needs a sync
      if ((i < bm.nbits && testBit(old, i)) || startSector + chunk / 512 > oldSync) setBit(bits, i);
    }
    resized = { sup: { ...bm.sup, syncSize: BigInt(next.syncSectors) }, nbits, bits };
  }
  await host.quiesced(async () => {
    await host.personality.flush();
    if (resized) {
      const nb = h.resizeBitmap(resized.sup, resized.nbits, resized.bits);
      for (const m of working) for (const b of m.bitmaps) b.nbits = resized.nbits;
      await nb.writeThrough(true);
    }
    await host.update(() => {
      for (const m of devices) {
        const own = m.loaded.sb;
        // rdev_size_change: the member's data size follows its device (never below its use)
        if (Number(own.superOffset) < Number(own.dataOffset)) own.dataSize = BigInt(Math.max(Number(own.dataSize), memberRoom(m)));
      }
      sb.size = BigInt(want);
      host.install(host.makePersonality(sb));
    });
  });
  const grown = host.personality.syncSectors > oldSync;
  host.log(`md: ${md}: component size ${oldK}K -> ${want / 2}K, array ${oldArray / 2}K -> ${host.personality.arraySectors / 2}K${grown ? (bm ? ' (new region marked in the bitmap)' : ' (new region to resync)') : ''}`);
  // md: recovery_cp = old size when the array grew (with a bitmap, only the marked chunks)
  if (grown) h.resyncFrom(oldSync);
  h.kick();
  const message = want / 2 === oldK ? `component size of ${md} unchanged at ${oldK}K` : `component size of ${md} has been set to ${want / 2}K`;
  return { message, changed: true };
}

/** Sectors the internal bitmap may take on this member (up to the data, or the bad-block log). */
function bitmapSpace(m: Member): number {
  const sb = m.loaded.sb;
  const superOff = Number(sb.superOffset);
  const start = superOff + sb.bitmapOffset;
  if ((sb.featureMap & Feature.BITMAP_OFFSET) === 0) return 0;
  if (superOff < Number(sb.dataOffset)) {
    let end = Number(sb.dataOffset);
    if (sb.bblogSize > 0 && sb.bblogOffset > sb.bitmapOffset) end = Math.min(end, superOff + sb.bblogOffset);
    return end - start;
  }
  // v1.0: the bitmap sits before the superblock, after the data
  return superOff - start;
}
