/**
 * raid10 reshapes (md's raid10_check_reshape + raid10_start_reshape, mdadm 4.2's
 * analyse_change case 10 / raid10_reshape / set_new_data_offset), run by the reshape engine of
 * reshape.ts: --raid-devices (more or fewer), --chunk, and --layout between near (nN) and
 * offset (oN) with the same number of copies, alone or together.
 *
 * The row arithmetic the engine needs (raid10.c __raid10_find_phys):
 *  - near: a raid0 of "virtual chunks" over the members with each array chunk written `near`
 *    times in a row: array chunk k has its copies at virtual chunks k*near .. k*near+near-1,
 *    on member v % disks at row floor(v / disks). The first row of chunk k is
 *    floor(k * near / disks): the engine's raid4/5/6 arithmetic with disks/near "data disks"
 *    (a fraction when near does not divide the member count), taken at chunk granularity.
 *  - offset (one near copy): a stripe of `disks` array chunks fills `far` whole rows (the
 *    first copies in row stripe*far, copy f rotated by f members in row stripe*far+f). The
 *    engine works with `disks` data disks and a stripe height of `far` rows, and a step ends
 *    on a whole stripe of the new geometry.
 * With those, the engine's step rule is md's reshape_safe rule for raid10, exact: the new
 * copies written (at data_offset + new_offset) never reach the member rows that still hold
 * data not yet moved as of the last checkpoint on disk; every step is checkpointed before the
 * next one may overwrite anything (unlike md, which checkpoints a raid10 reshape only now and
 * then). Offset layouts with more than one near copy (n2o2) are refused: md maps their near
 * copies across stripes, which this arithmetic does not cover.
 *
 * The data offset always moves (mdadm has no backup file for raid10), by at least mdadm's
 * min_offset_change = max(old chunk x old far, new chunk x new far):
 *  - more devices: down by exactly that (forwards; "Insufficient head-space for reshape on");
 *  - fewer devices: up by that (backwards, md's reshape_backwards from the end of the new
 *    size down); when there is less room than that after the data, mdadm first reduces the
 *    component size by as much; mdadm demands --array-size first when the array would shrink;
 *  - the same number: towards the larger free space, to mdadm's choose_offset (about half of
 *    it, aligned), forwards when moving down, backwards (RESHAPE_BACKWARDS) when moving up.
 * The added members are In_sync from the start (the reshape writes every copy they hold); the
 * array keeps its old size until the end (raid10_finish_reshape sets the new one and resyncs
 * the grown region); after a shrink the members past the new count become spares.
 *
 * An internal bitmap is resized to the new array size at the start as md_bitmap_resize does
 * (raid10's bitmap covers array sectors), written all set while the reshape runs (a restart
 * resyncs rather than trusts it) and clean at the end.
 *
 * Not here (refused with the reason, nothing written): far layouts (md cannot: mdadm's
 * "Cannot reshape RAID10 in far-mode"), a change of the number of copies (md: -EINVAL).
 */
import { TsmdError } from '../errors.js';
import { bitmapBits } from '../format/bitmap.js';
import { Feature, type Superblock1 } from '../format/superblock.js';
import { decodeRaid10Layout, raid10Derive } from '../raid/geometry/raid10.js';
import type { Member } from './members.js';
import { needSpares, type ReshapeHost, type ReshapeRequest } from './reshape.js';
import { mdBitmapSpace, resizedBitmapChunk } from './bitmap-resize.js';

const F_RESHAPE = Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET | Feature.RESHAPE_BACKWARDS;

/** How the member rows of a raid10 layout advance: see the header. */
export interface Raid10Rows {
  /** array chunks per stripe, as member rows count them (disks/near for near layouts) */
  dataDisks: number;
  /** chunk rows one stripe fills (far copies of an offset layout; 1 for near) */
  height: number;
  /** array chunks a step must end on (a whole stripe of an offset layout; 1 for near) */
  stripeChunks: number;
}

/** The row arithmetic of a raid10 layout tsmd reshapes (near, or offset with one near copy). */
export function raid10Rows(layout: number, disks: number): Raid10Rows {
  const l = decodeRaid10Layout(layout);
  if (l.far === 1) return { dataDisks: disks / l.near, height: 1, stripeChunks: 1 };
  if (l.offset && l.near === 1) return { dataDisks: disks, height: l.far, stripeChunks: disks };
  throw new TsmdError('ENOTSUP', `raid10 layout 0x${layout.toString(16)} is not reshaped by tsmd (near and offset layouts with one near copy are)`);
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/**
 * The engine's unit for a raid10 reshape (array sectors): every step but the last ends on a
 * multiple of it, a whole chunk of both geometries and a whole stripe of a new offset layout
 * (and a multiple of the new chunk, which the backwards step rule relies on).
 */
export function raid10Unit(sb: Superblock1): number {
  const a = Math.max(sb.chunkSize, sb.newChunk);
  const b = sb.newChunk * raid10Rows(sb.newLayout, sb.raidDisks).stripeChunks;
  return (a / gcd(a, b)) * b;
}

/** mdadm's min_offset_change for raid10: max(old chunk x old far, new chunk x new far). */
function minOffsetChange(oldLayout: number, oldChunk: number, newLayout: number, newChunk: number): number {
  return Math.max(oldChunk * decodeRaid10Layout(oldLayout).far, newChunk * decodeRaid10Layout(newLayout).far);
}

/** tsmd reshapes this raid10 layout (near; offset with one near copy), or why not. */
function layoutProblem(layout: number): string | null {
  const l = decodeRaid10Layout(layout);
  if (l.far > 1 && !l.offset) return 'far';
  if (l.offset && l.near > 1) return `the raid10 offset layout with ${l.near} near copies (0x${layout.toString(16)}) is not reshaped by tsmd (near layouts and offset layouts with one near copy are)`;
  return null;
}

/** Why tsmd cannot continue this raid10 reshape (null: it can). */
export function raid10CannotContinue(sb: Superblock1, members: readonly Member[]): string | null {
  if (sb.newLevel !== 10) return `the reshape from raid10 to raid${sb.newLevel} is not supported by tsmd`;
  for (const layout of [sb.layout, sb.newLayout]) {
    const why = layoutProblem(layout);
    if (why === 'far') return 'the raid10 reshape uses a far layout: md cannot reshape that';
    if (why) return why;
  }
  const [a, b] = [decodeRaid10Layout(sb.layout), decodeRaid10Layout(sb.newLayout)];
  if (a.near * a.far !== b.near * b.far) return 'the raid10 reshape changes the number of copies: md cannot do that';
  if ((sb.featureMap & Feature.NEW_OFFSET) === 0) return 'the raid10 reshape does not move the data offset: md cannot do that either';
  if ((sb.featureMap & Feature.CLUSTERED) !== 0) return 'the array is clustered: md-cluster reshapes are not supported';
  const back = sb.deltaDisks < 0 || (sb.featureMap & Feature.RESHAPE_BACKWARDS) !== 0;
  if (sb.deltaDisks > 0 && back) return 'the raid10 reshape adds devices backwards: md never does that';
  const min = minOffsetChange(sb.layout, sb.chunkSize, sb.newLayout, sb.newChunk);
  for (const m of members) {
    if (m.faulty || m.slot === null) continue;
    if (m.recoveryOffset !== null) return `${m.dev.name} is being rebuilt along with the reshape: not supported yet by tsmd`;
    const own = m.loaded.sb;
    const shift = (own.featureMap & Feature.NEW_OFFSET) !== 0 ? own.newOffset : sb.newOffset;
    // raid10_run / raid10_start_reshape: every member's offset moves by at least
    // max(old, new) chunk x far copies, in the direction of the reshape
    if (back ? shift < min : shift >= 0 || -shift < min)
      return `new offset ${shift} of ${m.dev.name} leaves no room to move ${min} sectors ${back ? 'backwards' : 'forwards'}`;
  }
  return null;
}

/**
 * md's raid10_start_reshape resizes the internal bitmap to the new array size (the raid10
 * bitmap covers array sectors) with md_bitmap_resize(chunksize 0): the chunk stays if the
 * bits fit in the space md believes the bitmap has, else it doubles until they do
 * (resize.ts: mdBitmapSpace, resizedBitmapChunk, shared with --size); md_bitmap_update_sb
 * then records that space as sectors_reserved. null: no bitmap, or it already has that size.
 */
function bitmapResize(members: readonly Member[], oldSectors: number, newSectors: number): { chunkBytes: number; nbits: number; reserved: number } | null {
  const withBitmap = members.filter((m) => !m.faulty && m.bitmaps[0] !== undefined && (m.loaded.sb.featureMap & Feature.BITMAP_OFFSET) !== 0);
  const first = withBitmap[0]?.bitmaps[0];
  if (!first || Number(first.sup.syncSize) === newSectors) return null;
  if (Number(first.sup.syncSize) !== oldSectors)
    throw new TsmdError('EINVAL', `the bitmap covers ${Number(first.sup.syncSize)} sectors, not the array's ${oldSectors}: cannot resize it`);
  const space = Math.min(
    ...withBitmap.map((m) => mdBitmapSpace(m.loaded.minor, m.loaded.sb.bitmapOffset, m.bitmaps[0]!.sup.sectorsReserved, m.bitmaps[0]!.nbits)),
  );
  const chunkBytes = resizedBitmapChunk(newSectors, first.sup.chunkSize, space);
  return { chunkBytes, nbits: bitmapBits(newSectors, chunkBytes), reserved: space };
}

/**
 * mdadm's choose_offset (Grow.c): a new data offset between lo and hi, within [min, max],
 * near the middle of lo..hi and aligned to as large a power of two as it can (up to 1 MiB).
 */
export function chooseOffset(lo: number, hi: number, min: number, max: number): number {
  let choice = Math.floor((lo + hi) / 2);
  for (let bit = 1; bit < 2048; bit *= 2) {
    if ((choice & bit) === 0) continue;
    const bigger = choice + bit;
    const smaller = choice - bit;
    if (bigger > max && smaller < min) break;
    if (bigger > max) choice = smaller;
    else if (smaller < min) choice = bigger;
    else if (hi - bigger > smaller - lo) choice = bigger;
    else choice = smaller;
  }
  return choice;
}

/**
 * mdadm --grow --raid-devices/--chunk/--layout of a raid10: mdadm's checks (analyse_change,
 * raid10_reshape, set_new_data_offset) and md's (raid10_check_reshape), then the reshape's
 * superblocks (raid10_start_reshape). Returns false when nothing changes.
 */
export async function startRaid10Reshape(
  host: ReshapeHost,
  req: ReshapeRequest,
  roomBefore: (m: Member) => number,
): Promise<boolean> {
  const sb = host.sb;
  const md = req.devName ?? 'the array';
  const disks = req.raidDisks ?? sb.raidDisks;
  const chunk = req.chunkSectors ?? sb.chunkSize;
  const layout = req.layout ?? sb.layout;
  if (disks === sb.raidDisks && chunk === sb.chunkSize && layout === sb.layout) return false;
  // Grow.c analyse_change, case 10
  if (layoutProblem(sb.layout) === 'far') throw new TsmdError('EINVAL', 'Cannot reshape RAID10 in far-mode');
  let nl;
  try {
    nl = decodeRaid10Layout(layout);
  } catch {
    throw new TsmdError('EINVAL', `Cannot set array shape for ${md}`);
  }
  if (nl.far > 1 && !nl.offset) throw new TsmdError('EINVAL', 'Cannot reshape RAID10 to far-mode');
  const l = decodeRaid10Layout(sb.layout);
  const copies = l.near * l.far;
  if (nl.near * nl.far !== copies) throw new TsmdError('EINVAL', 'Cannot change number of copies when reshaping RAID10');
  for (const x of [sb.layout, layout]) {
    const why = layoutProblem(x);
    if (why) throw new TsmdError('ENOTSUP', `${md}: ${why}`);
  }
  // Grow.c: the new chunk must divide the component size
  const size = Number(sb.size);
  if (chunk !== sb.chunkSize && (chunk < 8 || (chunk & (chunk - 1)) !== 0)) throw new TsmdError('EINVAL', `invalid chunk size ${chunk / 2}K`);
  if (size % chunk !== 0) {
    const shrink = size - (size % chunk);
    throw new TsmdError(
      'EINVAL',
      `New chunk size (${chunk / 2}K) does not evenly divide device size (${size / 2}k)\n` +
        `After shrinking any filesystem, "mdadm --grow ${md} --size ${shrink / 2}"\nwill shrink the array so the given chunk size would work.`,
    );
  }
  // md's raid10_check_reshape: the copies fit, the array size is whole new chunks
  if (disks < copies || host.exportedSectors % chunk !== 0) throw new TsmdError('EINVAL', `Cannot set array shape for ${md}`);
  if ((sb.featureMap & Feature.CLUSTERED) !== 0) throw new TsmdError('ENOTSUP', `${md} is clustered: md-cluster reshapes are not supported by tsmd`);
  const delta = disks - sb.raidDisks;
  const min = minOffsetChange(sb.layout, sb.chunkSize, layout, chunk);
  const inSync = host.memberSet.list.filter((m) => m.slot !== null && !m.faulty);
  const spares = host.memberSet.list.filter((m) => m.slot === null && !m.faulty);
  const after = Math.min(...inSync.map((m) => Number(m.loaded.sb.dataSize) - size));
  // analyse_change: a shrink with less room than min after the data gives up a chunk of the
  // component size (raid10_reshape sets component_size first)
  const newComponent = delta < 0 && after < min ? size - min : size;
  const newSectors = raid10Derive({ raidDisks: disks, layout, chunkSectors: chunk, componentSectors: newComponent }).arraySectors;
  if (newSectors < host.exportedSectors) {
    if (delta < 0)
      throw new TsmdError('EINVAL', `this change will reduce the size of the array.\n       use --grow --array-size first to truncate array.\n       e.g. mdadm --grow ${md} --array-size ${newSectors / 2}`);
    // md's raid10_start_reshape would lose the end of the array: it refuses (-EINVAL)
    throw new TsmdError('EINVAL', `Cannot set array shape for ${md}`);
  }
  const bitmap = bitmapResize(host.memberSet.list, host.personality.arraySectors, newSectors);
  if (delta > 0 && spares.length < delta && !req.force) throw needSpares(delta, spares.length);
  // raid10_start_reshape: "spares < delta_disks" is -EINVAL in md (it cannot run degraded on new slots)
  if (delta > 0 && spares.length < delta) throw new TsmdError('EINVAL', `Cannot set array shape for ${md}`);
  const joining = delta > 0 ? spares.slice(0, delta) : [];
  const moving = [...inSync, ...joining];
  for (const m of joining) if (Number(m.loaded.sb.dataSize) < size) throw new TsmdError('ENOSPC', `${m.dev.name} is too small to join ${md}`);
  // set_new_data_offset: the least room before and after over the members, then each
  // member's new offset
  const before = Math.min(...moving.map(roomBefore));
  const roomAfter = Math.min(...moving.map((m) => Number(m.loaded.sb.dataSize) - newComponent));
  const backwards = delta < 0 || (delta === 0 && !(before > roomAfter));
  const shiftOf = new Map<Member, number>();
  for (const m of moving) {
    const off = Number(m.loaded.sb.dataOffset);
    let to: number;
    // set_new_data_offset names the member that lacks the room
    const headShort = roomBefore(m) < min;
    const tailShort = Number(m.loaded.sb.dataSize) - newComponent < min;
    if (delta > 0) {
      if (headShort) throw new TsmdError('ENOSPC', `Insufficient head-space for reshape on ${m.dev.name}`);
      to = off - min;
    } else if (delta < 0) {
      if (tailShort) throw new TsmdError('ENOSPC', `Insufficient tail-space for reshape on ${m.dev.name}`);
      to = off + min;
    } else if (backwards) {
      if (tailShort) throw new TsmdError('ENOSPC', `Insufficient tail-space for reshape on ${m.dev.name}`);
      to = chooseOffset(off, off + roomAfter, off + min, off + roomAfter);
    } else {
      if (headShort) throw new TsmdError('ENOSPC', `insufficient head-room on ${m.dev.name}`);
      to = chooseOffset(off - before, off, off - before, off - min);
    }
    shiftOf.set(m, to - off);
  }
  // the array's own new_offset: the smallest move (the engine bounds every step by it)
  const shifts = [...shiftOf.values()];
  const shift = backwards ? Math.min(...shifts) : Math.max(...shifts);
  await host.quiesced(async () => {
    await host.personality.flush();
    // md's raid10_start_reshape: a backwards reshape starts at the end of the new size
    const startAt = backwards ? Math.min(newSectors, host.personality.arraySectors) : 0;
    await host.update(() => {
      joining.forEach((m, i) => {
        m.slot = sb.raidDisks + i;
        m.recoveryOffset = null; // raid10_start_reshape: a member in a new slot is In_sync
      });
      for (const m of moving) m.loaded.sb.newOffset = shiftOf.get(m)!;
      // md_bitmap_resize: every member's bitmap covers the new array size from now on
      if (bitmap) {
        for (const m of host.memberSet.list) {
          for (const b of m.bitmaps) {
            b.sup.syncSize = BigInt(newSectors);
            b.sup.chunkSize = bitmap.chunkBytes;
            b.sup.sectorsReserved = bitmap.reserved;
            b.nbits = bitmap.nbits;
          }
        }
      }
      sb.size = BigInt(newComponent);
      sb.deltaDisks = delta;
      sb.raidDisks = disks;
      sb.newLevel = 10;
      sb.newLayout = layout;
      sb.newChunk = chunk;
      sb.newOffset = shift;
      sb.reshapePosition = BigInt(startAt);
      sb.featureMap = (sb.featureMap & ~F_RESHAPE) | Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET;
      // md writes RESHAPE_BACKWARDS only when the number of devices stays (super_1_sync)
      if (backwards && delta === 0) sb.featureMap |= Feature.RESHAPE_BACKWARDS;
      host.suspendBitmap();
      host.install(host.makePersonality(sb));
      // the bits of the resized bitmap: all set (a restart in the middle, by md or tsmd,
      // resyncs rather than trusts bits of another size); the end writes them as the array is
    }, { bitmapBits: bitmap ? 'all' : undefined });
  });
  const what = [
    delta ? `${disks - delta}->${disks} devices` : '',
    chunk !== sb.chunkSize ? `chunk ${sb.chunkSize / 2}K->${chunk / 2}K` : '',
    layout !== sb.layout ? `layout 0x${sb.layout.toString(16)}->0x${layout.toString(16)}` : '',
  ].filter((x) => x);
  host.log(`md: reshape of RAID array ${md} started (raid10 ${what.join(', ')}, new offset ${shift}${backwards ? ', backwards' : ''})`);
  return true;
}
