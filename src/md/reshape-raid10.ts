/**
 * raid10 near-layout --raid-devices grow (md's raid10_check_reshape + raid10_start_reshape,
 * mdadm 4.2's raid10_reshape / set_new_data_offset), run by the reshape engine of reshape.ts.
 *
 * The near layout is a raid0 of "virtual chunks" over the members with each array chunk
 * written `near` times in a row (raid10.c __raid10_find_phys): array chunk k has its copies at
 * virtual chunks k*near .. k*near+near-1, on member v % disks at row floor(v / disks). So the
 * member row where the data of an array chunk starts is floor(k * near / disks) chunks: the
 * engine's row arithmetic of raid4/5/6 with disks/near "data disks" (a fraction when near does
 * not divide the member count). The engine's step rule is then md's reshape_safe rule for
 * raid10: the new copies written (below, at data_offset + new_offset) never reach the member
 * rows that still hold data not yet moved; every step is checkpointed before the next one.
 *
 * mdadm moves the data offset of every member down by max(old chunk x far, new chunk x far)
 * (Grow.c analyse_change: min_offset_change; set_new_data_offset: data_offset - min when
 * raid_disks grows), and does not need a backup file. The added members are In_sync from the
 * start (raid10_start_reshape): the reshape writes every copy they hold. The array keeps its
 * old size until the end (raid10_finish_reshape sets the new one).
 *
 * Not here (refused with the reason, nothing written): far layouts (md cannot), offset
 * layouts, chunk or layout changes and fewer devices (backwards), an internal bitmap
 * (md_bitmap_resize at the start of the reshape).
 */
import { TsmdError } from '../errors.js';
import { Feature, type Superblock1 } from '../format/superblock.js';
import { decodeRaid10Layout, raid10Derive } from '../raid/geometry/raid10.js';
import type { Member } from './members.js';
import { needSpares, type ReshapeHost, type ReshapeRequest } from './reshape.js';

const F_RESHAPE = Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET | Feature.RESHAPE_BACKWARDS;

/** The engine's "data disks" of a raid10 near layout: member rows advance by chunk per disks/near chunks. */
export function raid10DataDisks(layout: number, disks: number): number {
  const l = decodeRaid10Layout(layout);
  if (l.far !== 1 || l.offset) throw new TsmdError('ENOTSUP', 'only raid10 near layouts are reshaped by tsmd');
  return disks / l.near;
}

/** Why tsmd cannot continue this raid10 reshape (null: it can). */
export function raid10CannotContinue(sb: Superblock1, members: readonly Member[]): string | null {
  if (sb.newLevel !== 10) return `the reshape from raid10 to raid${sb.newLevel} is not supported by tsmd`;
  const l = decodeRaid10Layout(sb.layout);
  if (l.far !== 1 || l.offset || sb.newLayout !== sb.layout) return 'the raid10 reshape changes or uses a far/offset layout: not supported yet by tsmd (near-layout grows are)';
  if (sb.newChunk !== sb.chunkSize) return 'the raid10 reshape changes the chunk size: not supported yet by tsmd';
  if (sb.deltaDisks <= 0 || (sb.featureMap & Feature.RESHAPE_BACKWARDS) !== 0) return 'the raid10 reshape runs backwards (fewer devices): not supported yet by tsmd';
  if ((sb.featureMap & Feature.NEW_OFFSET) === 0) return 'the raid10 reshape does not move the data offset: md cannot do that either';
  if ((sb.featureMap & Feature.CLUSTERED) !== 0) return 'the array is clustered: md-cluster reshapes are not supported';
  for (const m of members) {
    if (m.faulty || m.slot === null) continue;
    if (m.recoveryOffset !== null) return `${m.dev.name} is being rebuilt along with the reshape: not supported yet by tsmd`;
    const own = m.loaded.sb;
    const shift = (own.featureMap & Feature.NEW_OFFSET) !== 0 ? own.newOffset : sb.newOffset;
    // raid10_start_reshape: every member's offset moves by at least a chunk
    if (shift >= 0 || -shift < sb.chunkSize) return `new offset ${shift} of ${m.dev.name} leaves no room to move a ${sb.chunkSize}-sector chunk forwards`;
  }
  return null;
}

/**
 * mdadm --grow --raid-devices=N of a raid10 near layout: mdadm's checks, then the reshape's
 * superblocks (md's raid10_start_reshape). Returns false when nothing changes.
 */
export async function startRaid10Reshape(host: ReshapeHost, req: ReshapeRequest, roomBefore: (m: Member) => number): Promise<boolean> {
  const sb = host.sb;
  const md = req.devName ?? 'the array';
  const disks = req.raidDisks ?? sb.raidDisks;
  const chunk = req.chunkSectors ?? sb.chunkSize;
  const layout = req.layout ?? sb.layout;
  if (disks === sb.raidDisks && chunk === sb.chunkSize && layout === sb.layout) return false;
  const l = decodeRaid10Layout(sb.layout);
  // Grow.c analyse_change, case 10
  if (l.far > 1 && !l.offset) throw new TsmdError('EINVAL', 'Cannot reshape RAID10 in far-mode');
  if (l.offset) throw new TsmdError('ENOTSUP', `${md}: reshaping a raid10 offset layout is not supported yet by tsmd (near layouts are)`);
  if (chunk !== sb.chunkSize || layout !== sb.layout) throw new TsmdError('ENOTSUP', `${md}: changing the chunk or layout of raid10 is not supported yet by tsmd (--raid-devices of near layouts is)`);
  const copies = l.near * l.far;
  if (disks < copies) throw new TsmdError('EINVAL', `Cannot set array shape for ${md}`);
  const newBytes = raid10Derive({ raidDisks: disks, layout, chunkSectors: chunk, componentSectors: Number(sb.size) }).arraySectors;
  const oldBytes = host.personality.arraySectors;
  if (newBytes < oldBytes)
    throw new TsmdError('EINVAL', `this change will reduce the size of the array.\n       use --grow --array-size first to truncate array.\n       e.g. mdadm --grow ${md} --array-size ${newBytes / 2}`);
  if (disks < sb.raidDisks) throw new TsmdError('ENOTSUP', `${md}: fewer raid10 devices (a backwards reshape) is not supported yet by tsmd`);
  if ((sb.featureMap & Feature.CLUSTERED) !== 0) throw new TsmdError('ENOTSUP', `${md} is clustered: md-cluster reshapes are not supported by tsmd`);
  if ((sb.featureMap & Feature.BITMAP_OFFSET) !== 0)
    throw new TsmdError('ENOTSUP', `${md}: a raid10 reshape with an internal bitmap is not supported yet by tsmd (md resizes the bitmap); remove it first (--grow --bitmap=none)`);
  const delta = disks - sb.raidDisks;
  const spares = host.memberSet.list.filter((m) => m.slot === null && !m.faulty);
  if (spares.length < delta && !req.force)
    throw needSpares(delta, spares.length);
  // raid10_start_reshape: "spares < delta_disks" is -EINVAL in md (it cannot run degraded on new slots)
  if (spares.length < delta) throw new TsmdError('EINVAL', `Cannot set array shape for ${md}`);
  const joining = spares.slice(0, delta);
  const moving = [...host.memberSet.list.filter((m) => m.slot !== null && !m.faulty), ...joining];
  // Grow.c: min_offset_change = max(old chunk, new chunk) x far copies; raid_disks grows: down by that
  const min = Math.max(chunk, sb.chunkSize) * l.far;
  for (const m of moving) {
    if (roomBefore(m) < min) throw new TsmdError('ENOSPC', `Insufficient head-space for reshape on ${m.dev.name}`);
    if (Number(m.loaded.sb.dataSize) < Number(sb.size)) throw new TsmdError('ENOSPC', `${m.dev.name} is too small to join ${md}`);
  }
  const shift = -min;
  await host.quiesced(async () => {
    await host.personality.flush();
    await host.update(() => {
      joining.forEach((m, i) => {
        m.slot = sb.raidDisks + i;
        m.recoveryOffset = null; // raid10_start_reshape: a member in a new slot is In_sync
      });
      for (const m of moving) m.loaded.sb.newOffset = shift;
      sb.deltaDisks = delta;
      sb.raidDisks = disks;
      sb.newLevel = 10;
      sb.newLayout = layout;
      sb.newChunk = chunk;
      sb.newOffset = shift;
      sb.reshapePosition = 0n;
      sb.featureMap = (sb.featureMap & ~F_RESHAPE) | Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET;
      host.suspendBitmap();
      host.install(host.makePersonality(sb));
    });
  });
  host.log(`md: reshape of RAID array ${md} started (raid10 ${disks - delta}->${disks} devices, new offset ${shift})`);
  return true;
}
