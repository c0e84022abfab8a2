/**
 * The member-I/O adapter: what a personality sees of the members (md's rdev I/O through
 * bio_set + the rdev flags). It maps a slot to its working member, adds data_offset, sends a
 * replacement the writes below its frontier, remembers failed reads for correction and hands
 * every error to the core's md_error. It also lends the sync offload the members' fds.
 *
 * The slot count is read from the array each time (not captured), so a new personality with
 * another raid_disks can be installed on a quiesced array.
 */
import { TsmdError } from '../errors.js';
import { MAX_SECTOR } from '../format/superblock.js';
import type { DirectFd } from '../io/block-device.js';
import type { BulkPiece, FdAt, SyncOffload } from '../raid/offload/bulk.js';
import type { MemberBulk, MemberIo, MemberLoc } from '../raid/personality.js';
import { dataByteOffset, DEV_FLAG_WRITEMOSTLY, type Member, type MemberSet } from './members.js';

/** What the adapter asks of the array. */
export interface MemberIoHost {
  readonly memberSet: MemberSet;
  readonly raidDisks: number;
  readonly readOnly: boolean;
  /** md's recovery_cp (MAX_SECTOR: in sync) */
  readonly resyncCp: bigint;
  /**
   * md-cluster's area_resyncing(READ): while a node failure is recovered, or another node
   * resyncs, reads are not balanced (every node reads the same copy of a region that may
   * still differ between mirrors). Simpler than md's per-range answer: the whole array.
   */
  readonly readFirstCopy: boolean;
  /** the slot's working member; a replacement whose original failed is promoted here */
  slotMember(slot: number): Member | null;
  /** ranges of a slot being rebuilt onto its replacement from the others (copy fallback) */
  readonly rebuildingForReplacement: ReadonlyMap<number, [number, number]>;
  /** a member read failed: the range waits for md's fix_read_error */
  noteBadRead(m: Member, start: number, end: number): void;
  /** the core's decision on a member I/O error (read error counting, then md_error) */
  reportError(slot: number, op: 'read' | 'write', err: unknown): void;
  /** md_error for a member (a replacement's failure does not touch the array) */
  mdError(m: Member, why: string): boolean;
}

function inRange(r: [number, number] | undefined, deviceSector: number | undefined, sectors: number | undefined): boolean {
  if (!r) return false;
  return deviceSector === undefined || (deviceSector < r[1] && r[0] < deviceSector + (sectors ?? 1));
}

export class MemberIoAdapter implements MemberIo {
  readonly bulk: MemberBulk | null;

  constructor(
    private readonly host: MemberIoHost,
    offload: SyncOffload | null,
  ) {
    this.bulk = offload ? this.memberBulk(offload) : null;
  }

  get slots(): number {
    // during a shrink the leaving members keep their slots (MemberSet.raidDisks)
    return this.host.memberSet.raidDisks;
  }

  get anyWriteMostly(): boolean {
    for (const m of this.host.memberSet.list) if ((m.loaded.sb.devFlags & DEV_FLAG_WRITEMOSTLY) !== 0 && !m.faulty && m.slot !== null) return true;
    return false;
  }

  get resyncFrom(): number {
    if (this.host.readFirstCopy) return 0;
    const cp = this.host.resyncCp;
    return cp === MAX_SECTOR ? Infinity : Number(cp);
  }

  writeMostly(slot: number): boolean {
    return ((this.host.slotMember(slot)?.loaded.sb.devFlags ?? 0) & DEV_FLAG_WRITEMOSTLY) !== 0;
  }

  available(slot: number, deviceSector?: number, sectors?: number): boolean {
    const m = this.host.slotMember(slot);
    if (!m) return false;
    // a range rebuilt onto the replacement (the old member could not read it)
    if (this.host.rebuildingForReplacement.size > 0 && inRange(this.host.rebuildingForReplacement.get(slot), deviceSector, sectors)) return false;
    if (m.badReads && m.badReads.length > 0) {
      if (deviceSector === undefined) return false;
      const end = deviceSector + (sectors ?? 1);
      if (m.badReads.some(([a, b]) => deviceSector < b && a < end)) return false;
    }
    if (m.recoveryOffset === null) return true;
    if (deviceSector === undefined) return false;
    return deviceSector + (sectors ?? 1) <= m.recoveryOffset;
  }

  async read(slot: number, deviceSector: number, buf: Uint8Array): Promise<void> {
    const m = this.working(slot);
    try {
      await m.dev.read(buf, dataByteOffset(m, deviceSector));
    } catch (e) {
      // remembered for correction: the range is rewritten from redundancy after the read
      this.host.noteBadRead(m, deviceSector, deviceSector + buf.length / 512);
      throw e;
    }
  }

  async write(slot: number, deviceSector: number, buf: Uint8Array): Promise<void> {
    const m = this.working(slot);
    if (this.host.readOnly) throw new TsmdError('EROFS', 'array is read-only');
    const r = this.host.memberSet.replacing ? this.host.memberSet.replacementOf(slot) : null;
    if (r) {
      const only = this.host.rebuildingForReplacement.get(slot);
      if (only && deviceSector >= only[0] && deviceSector < only[1]) return this.writeReplacement(r, deviceSector, buf);
      // a replacement gets the writes that start below its frontier (the sync window holds
      // the barrier, so the copy never runs under a write; above it, the copy brings the data)
      if (r.recoveryOffset !== null && deviceSector < r.recoveryOffset) {
        await Promise.all([m.dev.write(buf, dataByteOffset(m, deviceSector)), this.writeReplacement(r, deviceSector, buf)]);
        return;
      }
    }
    await m.dev.write(buf, dataByteOffset(m, deviceSector));
  }

  async flush(slot: number): Promise<void> {
    const m = this.host.slotMember(slot);
    const r = this.host.memberSet.replacing ? this.host.memberSet.replacementOf(slot) : null;
    if (r) await r.dev.flush().catch((e: unknown) => this.host.mdError(r, `replacement ${r.dev.name} failed: ${e instanceof Error ? e.message : String(e)}`));
    if (m) await m.dev.flush();
  }

  reportError(slot: number, op: 'read' | 'write', err: unknown): void {
    this.host.reportError(slot, op, err);
  }

  /** A write to a replacement; if it fails, the replacement fails (the array is not affected). */
  async writeReplacement(r: Member, deviceSector: number, buf: Uint8Array): Promise<void> {
    try {
      await r.dev.write(buf, dataByteOffset(r, deviceSector));
    } catch (e) {
      this.host.mdError(r, `replacement ${r.dev.name} failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  private working(slot: number): Member {
    const m = this.host.slotMember(slot);
    if (!m) throw new TsmdError('ENODEV', `slot ${slot} has no working member`);
    return m;
  }

  /**
   * The sync offload over the members: slots whose member is a plain file or block device,
   * not failing and not being replaced. Each call holds the members' fds open until it ends.
   */
  private memberBulk(offload: SyncOffload): MemberBulk {
    const usable = (slot: number): boolean => {
      const m = this.host.slotMember(slot);
      return !!m && !m.faulty && !(m.badReads && m.badReads.length > 0) && typeof m.dev.directFd === 'function';
    };
    return {
      usable: (slots) => {
        if (this.host.readOnly || this.host.memberSet.replacing || this.host.rebuildingForReplacement.size > 0) return false;
        for (const s of slots) if (!usable(s)) return false;
        return true;
      },
      run: async (op, pieces) => {
        const held = new Map<number, { fd: DirectFd; m: Member }>();
        const place = (l: MemberLoc, write: boolean): FdAt => {
          let h = held.get(l.slot);
          if (!h) {
            const m = this.host.slotMember(l.slot);
            const fd = m?.dev.directFd?.() ?? null;
            if (!m || !fd) throw new TsmdError('ENODEV', `slot ${l.slot}: no member for the sync offload`);
            h = { fd, m };
            held.set(l.slot, h);
          }
          if (write && h.fd.readOnly) throw new TsmdError('EROFS', `slot ${l.slot}: opened read-only`);
          return [h.fd.fd, dataByteOffset(h.m, l.sector)];
        };
        try {
          const fdPieces: BulkPiece[] = pieces.map((p, tag) => ({
            tag,
            srcs: p.srcs.map((l) => place(l, false)),
            dsts: p.dsts.map((l) => place(l, true)),
            bytes: p.sectors * 512,
            syndrome: p.syndrome,
          }));
          return await offload.run(op, fdPieces);
        } finally {
          for (const h of held.values()) h.fd.release();
        }
      },
    };
  }
}
