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
import { type BitmapSuper, bitmapAreaBytes, bitmapBits, setBit } from '../format/bitmap.js';
import { encodeSuperblock, Feature, Role, type Superblock1, sbLocation } from '../format/superblock.js';
import type { BlockDevice } from '../io/block-device.js';
import { decodeRaid10Layout, raid10Derive } from '../raid/geometry/raid10.js';
import type { WriteIntentBitmap } from './bitmap.js';
import { chooseBmSpace } from './create-plan.js';
import type { Member } from './members.js';
import { mdBitmapSpace, resizedBitmapChunk } from './bitmap-resize.js';
import { needSpares, type ReshapeHost } from './reshape.js';
import type { LoadedSuperblock } from './sb-io.js';

/** What these changes ask of the array beyond the reshape host (MdArray, a few lines). */
export interface ResizeHost {
  readonly base: ReshapeHost;
  readonly bitmap: WriteIntentBitmap | null;
  /** replace the runtime bitmap by one of another size (md_bitmap_resize), same writer */
  resizeBitmap(sup: BitmapSuper, nbits: number, bits: Uint8Array): WriteIntentBitmap;
  /** md's external_size: the array size --array-size imposed (sectors), or null */
  readonly imposedArraySectors: number | null;
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
  /**
   * mdadm --grow --size --assume-clean (Grow.c: resync_start "none" after the size changed):
   * the grown region is taken as in sync, nothing is resynced or marked.
   */
  assumeClean?: boolean;
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

/** A member's new place and size, as md's rdev_size_store leaves them. */
interface MemberSize {
  m: Member;
  /** rdev->sectors: what the member gives the array, written as its data_size */
  sectors: number;
  /** v1.0: the superblock's new start (md moves it to the new end of the device) */
  sbStart: number;
}

/** The device's size in sectors now (md reads bdev_nr_sectors at the moment of the change). */
function devSectorsOf(m: Member): number {
  return Math.floor(m.dev.sizeBytes / 512);
}

/**
 * md's super_1_rdev_size_change for an active member (mdadm writes "size" = N, or 0 for max,
 * to every member's sysfs entry before the size changes): the largest size the device allows
 * now, or N when smaller; 0 when md declines (N below the component size in use, a data offset
 * that is moving, or v1.0 metadata with an internal bitmap: "we can't move" the bitmap, so the
 * superblock stays where it is). v1.1/1.2: the device from the data offset on. v1.0: the
 * superblock goes to the new end of the device, (size - 8K) & ~4K, and the data may reach the
 * bitmap and bad-block room md reserves below it (super_1_choose_bm_space + 4K).
 */
function superRdevSizeChange(m: Member, n: number, usedSectors: number, bitmap: boolean): { sectors: number; sbStart: number } | null {
  const own = m.loaded.sb;
  if (n !== 0 && n < usedSectors) return null;
  if (own.newOffset !== 0) return null;
  const devSectors = devSectorsOf(m);
  const dataOffset = Number(own.dataOffset);
  if (Number(own.superOffset) < dataOffset) {
    const max = devSectors - dataOffset;
    return { sectors: n === 0 || n > max ? max : n, sbStart: m.loaded.sbStartSector };
  }
  if (bitmap) return null;
  const sbStart = Math.floor((devSectors - 16) / 8) * 8;
  const max = sbStart - chooseBmSpace(devSectors) - 8;
  return { sectors: n === 0 || n > max ? max : n, sbStart };
}

/**
 * md's rdev_size_store, per member, as mdadm's size branch drives it: an active member goes
 * through super_1_rdev_size_change (above); a spare takes N as given, and "0" (max) is refused
 * for it (EINVAL: 0 is below the size in use), so a spare keeps its data size and bounds a
 * --size=max. Unlike md, which records N for a spare without looking at its device, tsmd leaves
 * a spare whose device is too small for N as it is (update_size then refuses with ENOSPC).
 * A refused member (md: EBUSY or EINVAL, which mdadm does not look at) keeps its size.
 */
function rdevSizeStore(m: Member, n: number, usedSectors: number, bitmap: boolean): MemberSize {
  const own = m.loaded.sb;
  const keep: MemberSize = { m, sectors: Number(own.dataSize), sbStart: m.loaded.sbStartSector };
  let sectors = n;
  let sbStart = m.loaded.sbStartSector;
  if (m.slot !== null) {
    const r = superRdevSizeChange(m, n, usedSectors, bitmap);
    if (!r) return keep;
    sectors = r.sectors;
    sbStart = r.sbStart;
  } else if (n > memberRoom(m)) return keep;
  if (sectors < usedSectors) return keep;
  return { m, sectors, sbStart };
}

/** The sectors a spare's device can give from its data offset (v1.0: up to its superblock's room). */
function memberRoom(m: Member): number {
  const sb = m.loaded.sb;
  if (Number(sb.superOffset) < Number(sb.dataOffset)) return devSectorsOf(m) - Number(sb.dataOffset);
  return Number(sb.dataSize);
}

/**
 * mdadm --grow --size=N|max (Grow.c "set size": every member's sysfs size first, then
 * SET_ARRAY_INFO with the new size; md's update_array_info -> update_size -> ->resize:
 * raid1_resize, raid5_resize, raid10_resize).
 *
 * Each member's data size first follows its device as md's rdev_size_store leaves it
 * (rdevSizeStore: v1.1/1.2 grow into a device that grew; v1.0 without a bitmap moves its
 * superblock to the device's new end), then the component size becomes N, or for max the
 * smallest member size (spares too: update_size looks at every rdev), rounded as the
 * personality rounds it. The array (and what NBD exports) is resized, unless an --array-size
 * is in force: md's external_size, under which md_set_array_sectors leaves the array size as
 * it is and ->resize refuses (EINVAL) a component size whose array would be smaller. A grown
 * region is resynced from the old end (md: recovery_cp = old dev_sectors), or with an internal
 * bitmap its chunks are marked (md_bitmap_resize, which doubles the bitmap chunk when the
 * bits would not fit). Shrinking is allowed as md allows it.
 *
 * Refusals happen before anything is written (md has already written the members' new data
 * sizes by the time update_size refuses, and bumps the events; tsmd writes nothing).
 */
export async function growSize(h: ResizeHost, req: SizeRequest): Promise<SizeResult> {
  const host = h.base;
  const sb = host.sb;
  const md = req.devName;
  const oldK = Number(sb.size) / 2;
  const used = Number(sb.size);
  if (req.sectors !== 'max' && req.sectors === used) return { message: `${md}: no change requested`, changed: false };
  if (used === 0) throw new TsmdError('EINVAL', 'Cannot set device size in this type of array.');
  if (sb.level > 1 && req.sectors !== 'max' && req.sectors < sb.chunkSize) throw new TsmdError('EINVAL', 'component size must be larger than chunk size.');
  const invalid = (): TsmdError => new TsmdError('EINVAL', `Cannot set device size for ${md}: Invalid argument`);
  const resizable = sb.level === 1 || sb.level === 4 || sb.level === 5 || sb.level === 6 || sb.level === 10;
  if (!resizable) throw invalid();
  if (sb.level === 10) {
    const l = decodeRaid10Layout(sb.layout);
    // raid10_resize: far layouts (not offset) cannot change size
    if (l.far > 1 && !l.offset) throw invalid();
  }
  const working = host.memberSet.list.filter((m) => !m.faulty && m.slot !== null);
  const devices = host.memberSet.list.filter((m) => !m.faulty);
  // md reads each device's size now: a member file or volume may have grown under the array
  for (const m of devices) await m.dev.refreshSize?.();
  const bm = h.bitmap;
  const hasBitmap = (sb.featureMap & Feature.BITMAP_OFFSET) !== 0;
  const sizes = devices.map((m) => rdevSizeStore(m, req.sectors === 'max' ? 0 : req.sectors, used, hasBitmap));
  // update_size: fit (max) to the smallest member, or every member must hold N
  let want: number;
  if (req.sectors === 'max') want = Math.min(...sizes.map((s) => s.sectors));
  else {
    if (sizes.some((s) => s.sectors < (req.sectors as number))) throw new TsmdError('ENOSPC', `Cannot set device size for ${md}: No space left on device`);
    want = req.sectors;
  }
  want = roundComponent(sb, want);
  if (want <= 0) throw invalid();
  const oldSync = host.personality.syncSectors;
  const oldArray = host.personality.arraySectors;
  const next = host.makePersonality({ ...sb, size: BigInt(want) });
  // ->resize with md's external_size (an --array-size in force): the array may not end up
  // smaller than the size imposed; the imposed size stays (md_set_array_sectors does nothing)
  const imposed = h.imposedArraySectors;
  if (imposed !== null && imposed > next.arraySectors) throw invalid();
  const grown = next.syncSectors > oldSync;
  let resized: ResizedBitmap | null = null;
  if (bm) {
    resized = resizeBitmap(bm, next.syncSectors, oldSync, grown && !req.assumeClean, working[0]!);
    const need = bitmapAreaBytes(resized.nbits) / 512;
    // never past the room on a member (md trusts its space figure here; tsmd checks it)
    if (working.some((m) => need > bitmapSpace(m)))
      throw new TsmdError('EBUSY', `Cannot set device size for ${md}: Device or resource busy\n       Bitmap must be removed before size can be changed`);
  }
  const moved = sizes.filter((s) => s.sbStart !== s.m.loaded.sbStartSector);
  await host.quiesced(async () => {
    await host.personality.flush();
    // a v1.0 superblock that moves takes its bad-block log along (md would find it there)
    for (const s of moved) await moveBadBlockLog(s);
    if (resized) {
      const nb = h.resizeBitmap(resized.sup, resized.nbits, resized.bits);
      for (const m of working) for (const b of m.bitmaps) {
        b.sup = { ...resized.sup };
        b.nbits = resized.nbits;
        b.bits = resized.bits.slice();
      }
      await nb.writeThrough(true);
    }
    await host.update(() => {
      for (const s of sizes) {
        const own = s.m.loaded.sb;
        own.dataSize = BigInt(s.sectors);
        if (s.sbStart !== s.m.loaded.sbStartSector) {
          own.superOffset = BigInt(s.sbStart);
          s.m.loaded = { ...s.m.loaded, sbStartSector: s.sbStart, devSectors: devSectorsOf(s.m) };
        }
      }
      sb.size = BigInt(want);
      host.install(host.makePersonality(sb));
    });
  });
  for (const s of moved) host.log(`md: ${md}: ${s.m.dev.name}: superblock moved to sector ${s.sbStart} (device grew)`);
  if (hasBitmap && devices.some((m) => m.slot !== null && m.loaded.minor === 0 && sbLocation(0, devSectorsOf(m)) !== m.loaded.sbStartSector))
    host.log(`md: ${md}: v1.0 superblock with an internal bitmap: not moved to the device's new end (md cannot move the bitmap; remove it first)`);
  const chunkNote = resized && bm && resized.sup.chunkSize !== bm.sup.chunkSize ? `, bitmap chunk ${bm.sup.chunkSize / 1024}K -> ${resized.sup.chunkSize / 1024}K` : '';
  host.log(`md: ${md}: component size ${oldK}K -> ${want / 2}K, array ${oldArray / 2}K -> ${host.personality.arraySectors / 2}K${chunkNote}${grown && !req.assumeClean ? (bm ? ' (new region marked in the bitmap)' : ' (new region to resync)') : ''}`);
  // md: recovery_cp = old size when the array grew (with a bitmap, only the marked chunks);
  // --assume-clean: mdadm then writes resync_start "none"
  if (grown && !req.assumeClean) h.resyncFrom(oldSync);
  h.kick();
  const message = want / 2 === oldK ? `component size of ${md} unchanged at ${oldK}K` : `component size of ${md} has been set to ${want / 2}K`;
  return { message, changed: true };
}

/** A runtime bitmap's new shape and bits. */
interface ResizedBitmap {
  sup: BitmapSuper;
  nbits: number;
  bits: Uint8Array;
}

/**
 * md_bitmap_resize for a resize of the array (chunksize 0, not init): the chunk is chosen as
 * md chooses it (resizedBitmapChunk, in the space md believes the bitmap has), a new chunk
 * needs a sync if any old chunk it covers did (NEEDED; a bit set only for a write that has
 * ended is not carried), and every chunk holding space past the old end is marked NEEDED.
 * The bitmap superblock then records the new chunk size, sync_size and, as md_bitmap_update_sb
 * writes it, the space as sectors_reserved.
 *
 * md marks the new space from the end of the old bitmap's last chunk, and skips counters in a
 * counter page that was never allocated (an idle array's), so it may mark less, and its resync
 * from recovery_cp then skips unmarked chunks: the grown region of such an array is left
 * unsynced. tsmd marks every chunk holding a sector past the old sync size.
 */
function resizeBitmap(bm: WriteIntentBitmap, syncSectors: number, oldSync: number, markNew: boolean, ref: Member): ResizedBitmap {
  const own = ref.loaded.sb;
  const space = mdBitmapSpace(ref.loaded.minor, own.bitmapOffset, bm.sup.sectorsReserved, bm.nbits);
  const chunkBytes = resizedBitmapChunk(syncSectors, bm.sup.chunkSize, space);
  const chunk = chunkBytes / 512;
  const nbits = bitmapBits(syncSectors, chunkBytes);
  const bits = new Uint8Array(Math.ceil(nbits / 8));
  for (let i = 0; i < bm.nbits; i++) {
    if (!bm.needsSync(i)) continue;
    const j = Math.floor((i * bm.chunkSectors) / chunk);
    if (j < nbits) setBit(bits, j);
  }
  if (markNew) for (let j = 0; j < nbits; j++) if (Math.min((j + 1) * chunk, syncSectors) > oldSync) setBit(bits, j);
  return { sup: { ...bm.sup, chunkSize: chunkBytes, syncSize: BigInt(syncSectors), sectorsReserved: space }, nbits, bits };
}

/** Copy a member's bad-block log from its superblock's old place to the new one. */
async function moveBadBlockLog(s: MemberSize): Promise<void> {
  const own = s.m.loaded.sb;
  if (own.bblogOffset === 0 || own.bblogSize === 0) return;
  const buf = new Uint8Array(own.bblogSize * 512);
  await s.m.dev.read(buf, (s.m.loaded.sbStartSector + own.bblogOffset) * 512);
  await s.m.dev.write(buf, (s.sbStart + own.bblogOffset) * 512);
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
