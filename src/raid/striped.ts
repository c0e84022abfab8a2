/**
 * Personalities without parity: linear, raid0 (no redundancy), raid1 and raid10 (mirrors).
 * Requests are cut at chunk (or member) boundaries and the pieces issued concurrently.
 *
 * Request path costs (docs/perf.md): a request that maps to one piece (every 4 KiB random
 * request, and any request inside one chunk) is issued straight to the member, without piece
 * arrays or Promise.all; adjacent pieces of a write that land contiguously on the same
 * members are merged into one member write (raid1's 1 MiB pieces, raid10 with as many copies
 * as disks); the pieces of a large mirrored read are spread over the copies.
 */
import { assert, TsmdError } from '../errors.js';
import { linearArraySectors, linearMap } from './geometry/linear.js';
import { type Raid0Zone, raid0ArraySectors, raid0Map, raid0Zones } from './geometry/raid0.js';
import {
  decodeRaid10Layout,
  type Raid10Geometry,
  raid10ArraySectors,
  raid10DeviceToArray,
  raid10Map,
  raid10Validate,
} from './geometry/raid10.js';
import { runLimited, settleAll } from '../util/async.js';
import type { MemberBulkPiece, MemberIo, MemberLoc, Personality } from './personality.js';
import { registerLevel } from './registry.js';
import { flushMembers, giveSyncBuffer, mismatchedSectors, runOffload, SYNC_PARALLEL, takeSyncBuffer } from './sync-support.js';

const SECTOR = 512;

interface Piece {
  /** byte offset within the request buffer */
  bufOffset: number;
  sectors: number;
  targets: Array<{ disk: number; deviceSector: number }>;
}

function checkRange(p: Personality, buf: Uint8Array, arraySector: number): void {
  // MdArray.checkIo (md's bio_check_eod) has already refused requests past the array end and
  // turned unaligned ones into whole sectors: one that reaches here is a bug in md/, not a
  // user error. Constant messages: nothing is built on the hot path.
  assert(buf.length % SECTOR === 0, 'striped request: whole sectors');
  assert(Number.isSafeInteger(arraySector) && arraySector >= 0 && arraySector * SECTOR + buf.length <= p.arraySectors * SECTOR, 'striped request inside the array');
}

/** Read a piece from one of its targets, trying the others on error (mirrors); returns the copy read. */
async function readPiece(
  io: MemberIo,
  buf: Uint8Array,
  piece: Piece,
  start: number,
): Promise<{ disk: number; deviceSector: number }> {
  const bytes = piece.sectors * SECTOR;
  assert(piece.sectors > 0 && piece.bufOffset + bytes <= buf.length, 'striped read piece inside the request buffer');
  const view =
    piece.bufOffset === 0 && bytes === buf.length
      ? buf
      : buf.subarray(piece.bufOffset, piece.bufOffset + bytes);
  const n = piece.targets.length;
  let lastErr: unknown = null;
  // write-mostly members (raid1) are read only when no other copy can serve: a second pass
  const passes = n > 1 && io.anyWriteMostly ? 2 : 1;
  for (let pass = 0; pass < passes; pass++) {
    for (let i = 0; i < n; i++) {
      const t = piece.targets[(start + i) % n]!;
      if (passes === 2 && io.writeMostly(t.disk) !== (pass === 1)) continue;
      if (!io.available(t.disk, t.deviceSector, piece.sectors)) continue;
      try {
        await io.read(t.disk, t.deviceSector, view);
        return t;
      } catch (e) {
        lastErr = e;
        io.reportError(t.disk, 'read', e);
      }
    }
  }
  throw new TsmdError('EIO', `no working copy of array data at piece offset ${piece.bufOffset}`, {
    cause: lastErr,
  });
}

/** Write a piece to all its available targets; fails only if no copy could be written. */
async function writePiece(io: MemberIo, buf: Uint8Array, piece: Piece): Promise<void> {
  const bytes = piece.sectors * SECTOR;
  assert(piece.sectors > 0 && piece.bufOffset + bytes <= buf.length, 'striped write piece inside the request buffer');
  // every array sector maps to at least one member (md's map functions never return none)
  assert(piece.targets.length > 0, 'striped write piece has a target');
  const view =
    piece.bufOffset === 0 && bytes === buf.length
      ? buf
      : buf.subarray(piece.bufOffset, piece.bufOffset + bytes);
  if (piece.targets.length === 1) {
    // no copies (linear, raid0): one member write, no Promise.all
    const t = piece.targets[0]!;
    if (!io.available(t.disk, t.deviceSector, 1)) throw new TsmdError('EIO', 'write failed on every copy');
    try {
      await io.write(t.disk, t.deviceSector, view);
    } catch (e) {
      io.reportError(t.disk, 'write', e);
      throw new TsmdError('EIO', 'write failed on every copy', { cause: e });
    }
    return;
  }
  let ok = 0;
  let lastErr: unknown = null;
  await Promise.all(
    piece.targets.map(async (t) => {
      // a member being rebuilt gets the write when it starts below its recovery frontier
      // (the sync engine's barrier keeps the frontier from moving under the request)
      if (!io.available(t.disk, t.deviceSector, 1)) return;
      try {
        await io.write(t.disk, t.deviceSector, view);
        ok++;
      } catch (e) {
        lastErr = e;
        io.reportError(t.disk, 'write', e);
      }
    }),
  );
  if (ok === 0) throw new TsmdError('EIO', 'write failed on every copy', { cause: lastErr });
}

/** Can `next` (the piece right after `prev` in the request) be issued with it as one I/O? */
function contiguous(prev: Piece, next: Piece): boolean {
  const a = prev.targets;
  const b = next.targets;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i]!.disk !== b[i]!.disk || a[i]!.deviceSector + prev.sectors !== b[i]!.deviceSector)
      return false;
  }
  return true;
}

abstract class PieceMapped implements Personality {
  abstract readonly level: number;
  abstract readonly arraySectors: number;
  abstract readonly maxDegraded: number;
  protected readonly io: MemberIo;
  private rr = 0;

  constructor(io: MemberIo) {
    this.io = io;
  }

  abstract canRun(available: readonly boolean[]): boolean;
  /** Targets of array sector s and how many sectors from s stay contiguous on them. */
  protected abstract map(s: number): {
    sectors: number;
    targets: Array<{ disk: number; deviceSector: number }>;
  };

  /** The pieces of a request; with `merge`, adjacent pieces contiguous on the members join. */
  protected pieces(arraySector: number, totalSectors: number, merge = false): Piece[] {
    const out: Piece[] = [];
    let done = 0;
    while (done < totalSectors) {
      const m = this.map(arraySector + done);
      // a mapping that covers no sector would loop forever
      assert(m.sectors > 0, 'striped mapping covers at least one sector');
      const n = Math.min(m.sectors, totalSectors - done);
      const piece = { bufOffset: done * SECTOR, sectors: n, targets: m.targets };
      const last = out[out.length - 1];
      if (merge && last && contiguous(last, piece)) last.sectors += n;
      else out.push(piece);
      done += n;
    }
    return out;
  }

  read(buf: Uint8Array, arraySector: number): Promise<void> {
    try {
      checkRange(this, buf, arraySector);
    } catch (e) {
      return Promise.reject(e);
    }
    const total = buf.length / SECTOR;
    if (total === 0) return Promise.resolve();
    // past the resync point the copies may differ: read the one the resync copies from (md)
    const unsynced = arraySector + total > this.io.resyncFrom;
    const start = unsynced ? 0 : this.rr++;
    const m = this.map(arraySector);
    if (m.sectors >= total) {
      return readPiece(this.io, buf, { bufOffset: 0, sectors: total, targets: m.targets }, start).then(() => {});
    }
    // several pieces: each starts on the next copy, so a large read spreads over the mirrors
    return settleAll(
      this.pieces(arraySector, total).map((p, i) => readPiece(this.io, buf, p, unsynced ? 0 : start + i)),
    );
  }

  write(buf: Uint8Array, arraySector: number): Promise<void> {
    try {
      checkRange(this, buf, arraySector);
    } catch (e) {
      return Promise.reject(e);
    }
    const total = buf.length / SECTOR;
    if (total === 0) return Promise.resolve();
    const m = this.map(arraySector);
    if (m.sectors >= total) {
      return writePiece(this.io, buf, { bufOffset: 0, sectors: total, targets: m.targets });
    }
    const pieces = this.pieces(arraySector, total, true);
    if (pieces.length === 1) return writePiece(this.io, buf, pieces[0]!);
    return settleAll(pieces.map((p) => writePiece(this.io, buf, p)));
  }

  flush(): Promise<void> {
    return flushMembers(this.io, (a) => this.canRun(a));
  }

  get syncSectors(): number {
    return this.arraySectors;
  }

  get recoverySectors(): number {
    return this.arraySectors;
  }

  syncRangeOf(arraySector: number, sectors: number): [number, number] {
    return [arraySector, arraySector + sectors];
  }

  recoveryToSync(_slot: number, start: number, sectors: number): Array<[number, number]> {
    return [[start, start + sectors]];
  }

  /**
   * Mirror sync over array sectors: read one good copy of each piece, write it to the other
   * copies (resync) or to the copies on the slots being rebuilt (recovery).
   */
  async syncRegion(start: number, sectors: number, rebuild: ReadonlySet<number>): Promise<void> {
    // the sync engine's windows (md_do_sync) are non-empty and inside the resync space
    assert(Number.isSafeInteger(start) && start >= 0 && sectors > 0 && start + sectors <= this.syncSectors, 'mirror sync window inside the array');
    for (const d of rebuild) assert(Number.isInteger(d) && d >= 0 && d < this.io.slots, 'mirror rebuild slot in range');
    if (this.maxDegraded === 0) return; // linear / raid0: nothing to sync
    const end = Math.min(this.syncSectors, start + sectors);
    if (await this.offloadSync(start, end, rebuild)) return;
    const jobs: Array<() => Promise<void>> = [];
    for (let pos = start; pos < end;) {
      const m = this.map(pos);
      const n = Math.min(m.sectors, end - pos);
      jobs.push(async () => {
        const buf = takeSyncBuffer(n * SECTOR);
        try {
          const sources = m.targets.filter((t) => !rebuild.has(t.disk));
          const from = await readPiece(this.io, buf, { bufOffset: 0, sectors: n, targets: sources }, 0);
          const dests =
            rebuild.size > 0 ? m.targets.filter((t) => rebuild.has(t.disk)) : m.targets.filter((t) => t !== from);
          await writeCopies(this.io, dests, buf);
        } finally {
          giveSyncBuffer(buf);
        }
      });
      pos += n;
    }
    await runLimited(jobs, SYNC_PARALLEL);
  }

  /**
   * The window on the sync offload (raid/offload/bulk.ts): each piece copied from a readable copy (not a
   * write-mostly one when another can serve) to the other copies (resync) or to the slots being
   * rebuilt (recovery). False when the offload cannot take the window or failed (nothing
   * reported): the caller then does it on its own path.
   */
  private async offloadSync(start: number, end: number, rebuild: ReadonlySet<number>): Promise<boolean> {
    assert(start < end, 'mirror sync offload: window start < end');
    const b = this.io.bulk;
    if (!b) return false;
    const pieces: MemberBulkPiece[] = [];
    const slots = new Set<number>();
    for (const p of this.pieces(start, end - start)) {
      const from = this.syncSource(p.targets.filter((t) => !rebuild.has(t.disk)), p.sectors);
      if (!from) return false;
      const dests = rebuild.size > 0 ? p.targets.filter((t) => rebuild.has(t.disk)) : p.targets.filter((t) => t !== from);
      pieces.push(bulkPiece([from], dests, p.sectors, slots));
    }
    return (await runOffload(b, 'copy', pieces, slots)) !== null;
  }

  /**
   * The array ranges of [start, end) that check must do on its own path after the offload
   * compared the copies: the pieces where they differ; all of [start, end) when the offload
   * cannot take it (no offload, a piece with fewer than two copies, a failure).
   */
  private async offloadCompare(start: number, end: number): Promise<Array<[number, number]>> {
    assert(start < end, 'mirror check offload: window start < end');
    const all: Array<[number, number]> = [[start, end]];
    const b = this.io.bulk;
    if (!b) return all;
    const found = this.pieces(start, end - start);
    const pieces: MemberBulkPiece[] = [];
    const slots = new Set<number>();
    for (const p of found) {
      const copies = p.targets.filter((t) => this.io.available(t.disk, t.deviceSector, p.sectors));
      if (copies.length < 2) return all;
      pieces.push(bulkPiece(copies, [], p.sectors, slots));
    }
    const flagged = await runOffload(b, 'compare', pieces, slots);
    if (!flagged) return all;
    return [...flagged].sort((x, y) => x - y).map((i) => {
      const at = start + found[i]!.bufOffset / SECTOR;
      return [at, at + found[i]!.sectors];
    });
  }

  /** The copy a sync reads: the first available one, write-mostly copies last (null: none). */
  protected syncSource(copies: ReadonlyArray<{ disk: number; deviceSector: number }>, sectors: number): { disk: number; deviceSector: number } | null {
    let wm: { disk: number; deviceSector: number } | null = null;
    for (const t of copies) {
      if (!this.io.available(t.disk, t.deviceSector, sectors)) continue;
      if (!this.io.anyWriteMostly || !this.io.writeMostly(t.disk)) return t;
      wm ??= t;
    }
    return wm;
  }

  /** check / repair: every available copy compared with the first readable one. */
  async checkRegion(start: number, sectors: number, repair: boolean): Promise<number> {
    assert(Number.isSafeInteger(start) && start >= 0 && sectors > 0 && start + sectors <= this.syncSectors, 'mirror check window inside the array');
    if (this.maxDegraded === 0) return 0;
    const end = Math.min(this.syncSectors, start + sectors);
    // counted and repaired here: what the offload found different, or everything
    let mismatched = 0;
    for (const [a, b] of await this.offloadCompare(start, end)) mismatched += await this.checkRange(a, b, repair);
    return mismatched;
  }

  private async checkRange(start: number, end: number, repair: boolean): Promise<number> {
    assert(start >= 0 && start < end && end <= this.syncSectors, 'mirror check range: start < end inside the array');
    let mismatched = 0;
    const jobs: Array<() => Promise<void>> = [];
    for (let pos = start; pos < end;) {
      const m = this.map(pos);
      const n = Math.min(m.sectors, end - pos);
      const at = pos;
      jobs.push(async () => {
        const copies = m.targets.filter((t) => this.io.available(t.disk, t.deviceSector, n));
        const bufs = copies.map(() => takeSyncBuffer(n * SECTOR));
        try {
          const ok = await Promise.all(
            copies.map(async (t, i) => {
              try {
                await this.io.read(t.disk, t.deviceSector, bufs[i]!);
                return true;
              } catch (e) {
                this.io.reportError(t.disk, 'read', e);
                return false;
              }
            }),
          );
          const good = ok.indexOf(true);
          if (good < 0) throw new TsmdError('EIO', `check: no readable copy at sector ${at}`);
          const bad: Array<{ disk: number; deviceSector: number }> = [];
          let worst = 0;
          copies.forEach((t, i) => {
            if (i === good || !ok[i]) return;
            const diff = mismatchedSectors(bufs[good]!, bufs[i]!);
            if (diff > 0) bad.push(t);
            worst = Math.max(worst, diff);
          });
          mismatched += worst;
          if (repair && bad.length > 0) await writeCopies(this.io, bad, bufs[good]!);
        } finally {
          for (const b of bufs) giveSyncBuffer(b);
        }
      });
      pos += n;
    }
    await runLimited(jobs, SYNC_PARALLEL);
    return mismatched;
  }
}

/** A sync offload piece from targets, noting their slots. */
function bulkPiece(
  srcs: ReadonlyArray<{ disk: number; deviceSector: number }>,
  dsts: ReadonlyArray<{ disk: number; deviceSector: number }>,
  sectors: number,
  slots: Set<number>,
): MemberBulkPiece {
  const loc = (t: { disk: number; deviceSector: number }): MemberLoc => {
    slots.add(t.disk);
    return { slot: t.disk, sector: t.deviceSector };
  };
  return { srcs: srcs.map(loc), dsts: dsts.map(loc), sectors };
}

/** Write one buffer to several copies; a failed copy is reported (the member fails). */
async function writeCopies(
  io: MemberIo,
  dests: ReadonlyArray<{ disk: number; deviceSector: number }>,
  buf: Uint8Array,
): Promise<void> {
  await Promise.all(
    dests.map(async (t) => {
      try {
        await io.write(t.disk, t.deviceSector, buf);
      } catch (e) {
        io.reportError(t.disk, 'write', e);
      }
    }),
  );
}

export class LinearPersonality extends PieceMapped {
  readonly level = -1;
  readonly arraySectors: number;
  readonly maxDegraded = 0;
  private readonly memberSectors: number[];
  private readonly starts: number[];

  constructor(io: MemberIo, memberSectors: number[]) {
    super(io);
    this.memberSectors = [...memberSectors];
    this.arraySectors = linearArraySectors(this.memberSectors);
    this.starts = [];
    let acc = 0;
    for (const s of this.memberSectors) {
      this.starts.push(acc);
      acc += s;
    }
  }

  canRun(available: readonly boolean[]): boolean {
    return available.every(Boolean);
  }

  protected map(s: number) {
    const m = linearMap(this.memberSectors, s);
    const left = this.memberSectors[m.disk]! - m.deviceSector;
    return { sectors: left, targets: [m] };
  }
}

export class Raid0Personality extends PieceMapped {
  readonly level = 0;
  readonly arraySectors: number;
  readonly maxDegraded = 0;
  readonly zones: Raid0Zone[];
  private readonly chunkSectors: number;
  private readonly layout: number;

  constructor(io: MemberIo, memberSectors: number[], chunkSectors: number, layout: number) {
    super(io);
    this.chunkSectors = chunkSectors;
    this.layout = layout;
    this.zones = raid0Zones(memberSectors, chunkSectors);
    this.arraySectors = raid0ArraySectors(this.zones);
  }

  canRun(available: readonly boolean[]): boolean {
    return available.every(Boolean);
  }

  protected map(s: number) {
    const m = raid0Map(this.zones, this.chunkSectors, this.layout, s);
    const left = this.chunkSectors - (s % this.chunkSectors);
    return { sectors: left, targets: [m] };
  }
}

export class Raid1Personality extends PieceMapped {
  readonly level = 1;
  readonly arraySectors: number;
  readonly maxDegraded: number;
  private readonly disks: number;

  constructor(io: MemberIo, componentSectors: number) {
    super(io);
    this.disks = io.slots;
    this.arraySectors = componentSectors;
    this.maxDegraded = this.disks - 1;
  }

  canRun(available: readonly boolean[]): boolean {
    return available.some(Boolean);
  }

  /** raid1_error: the last in-sync mirror is never failed; the I/O that met the error gets EIO. */
  errorHandler(_slot: number, available: readonly boolean[]): boolean {
    return this.canRun(available);
  }

  protected map(s: number) {
    // one piece per 1 MiB so that large reads spread over the mirrors
    const span = 2048 - (s % 2048);
    const targets = [];
    for (let d = 0; d < this.disks; d++) targets.push({ disk: d, deviceSector: s });
    return { sectors: span, targets };
  }
}

export class Raid10Personality extends PieceMapped {
  readonly level = 10;
  readonly arraySectors: number;
  readonly maxDegraded: number;
  private readonly g: Raid10Geometry;

  constructor(io: MemberIo, g: Raid10Geometry) {
    super(io);
    raid10Validate(g);
    this.g = g;
    this.arraySectors = raid10ArraySectors(g);
    const l = decodeRaid10Layout(g.layout);
    this.maxDegraded = l.near * l.far - 1;
  }

  canRun(available: readonly boolean[]): boolean {
    // every array chunk needs one available copy; checking one chunk row per disk position is
    // enough because the copy pattern repeats with the disk count
    const rows = this.g.raidDisks * 2;
    for (let c = 0; c < rows && c * this.g.chunkSectors < this.arraySectors; c++) {
      const copies = raid10Map(this.g, c * this.g.chunkSectors);
      if (!copies.some((t) => available[t.disk])) return false;
    }
    return true;
  }

  /** raid10_error: a member whose loss leaves some chunk with no copy (md's enough()) is kept. */
  errorHandler(_slot: number, available: readonly boolean[]): boolean {
    return this.canRun(available);
  }

  protected map(s: number) {
    const left = this.g.chunkSectors - (s % this.g.chunkSectors);
    return { sectors: left, targets: raid10Map(this.g, s) };
  }

  /** md recovers raid10 by member sector (raid10_find_virt): the member's used area. */
  override get recoverySectors(): number {
    return this.g.componentSectors;
  }

  override recoveryToSync(slot: number, start: number, sectors: number): Array<[number, number]> {
    assert(slot >= 0 && slot < this.g.raidDisks, 'raid10 recovery slot in range');
    assert(start >= 0 && sectors >= 0 && start + sectors <= this.g.componentSectors, 'raid10 recovery range inside the member');
    const out: Array<[number, number]> = [];
    const c = this.g.chunkSectors;
    for (let d = start; d < start + sectors;) {
      const n = Math.min(c - (d % c), start + sectors - d);
      const a = raid10DeviceToArray(this.g, slot, d);
      if (a !== null) out.push([a, a + n]);
      d += n;
    }
    return out;
  }

  /**
   * Resync over array sectors (the mirror sync above); recovery over member sectors of the
   * slots being rebuilt: each device chunk piece is mapped back to its array sector and the
   * content is read from a copy on another member.
   */
  override async syncRegion(start: number, sectors: number, rebuild: ReadonlySet<number>): Promise<void> {
    if (rebuild.size === 0) return super.syncRegion(start, sectors, rebuild);
    // recovery by member sector (raid10_sync_request's recovery half): inside the member's used area
    assert(Number.isSafeInteger(start) && start >= 0 && sectors > 0 && start + sectors <= this.recoverySectors, 'raid10 recovery window inside the members');
    for (const d of rebuild) assert(Number.isInteger(d) && d >= 0 && d < this.g.raidDisks, 'raid10 rebuild slot in range');
    const end = Math.min(this.recoverySectors, start + sectors);
    const c = this.g.chunkSectors;
    // each device chunk piece of a rebuilt slot, with the copies of its array data elsewhere
    const jobs: Array<{ dest: { disk: number; deviceSector: number }; sectors: number; sources: Array<{ disk: number; deviceSector: number }> }> = [];
    for (const slot of rebuild) {
      for (let d = start; d < end;) {
        const n = Math.min(c - (d % c), end - d);
        const a = raid10DeviceToArray(this.g, slot, d);
        if (a !== null) jobs.push({ dest: { disk: slot, deviceSector: d }, sectors: n, sources: raid10Map(this.g, a).filter((t) => !rebuild.has(t.disk)) });
        d += n;
      }
    }
    if (await this.offloadRecovery(jobs)) return;
    for (const j of jobs) {
      const buf = new Uint8Array(j.sectors * SECTOR);
      await readPiece(this.io, buf, { bufOffset: 0, sectors: j.sectors, targets: j.sources }, 0);
      await writeCopies(this.io, [j.dest], buf);
    }
  }

  /** The recovery pieces on the sync offload (false: not taken). */
  private async offloadRecovery(
    jobs: ReadonlyArray<{ dest: { disk: number; deviceSector: number }; sectors: number; sources: Array<{ disk: number; deviceSector: number }> }>,
  ): Promise<boolean> {
    const b = this.io.bulk;
    if (!b) return false;
    const pieces: MemberBulkPiece[] = [];
    const slots = new Set<number>();
    for (const j of jobs) {
      const from = this.syncSource(j.sources, j.sectors);
      if (!from) return false;
      pieces.push(bulkPiece([from], [j.dest], j.sectors, slots));
    }
    return (await runOffload(b, 'copy', pieces, slots)) !== null;
  }
}

// RAID_MODULE_REGISTER for the levels of this module (mdadm's minimum device counts)
registerLevel({
  level: -1,
  name: 'linear',
  aliases: [],
  minDevices: 1,
  redundancy: 'none',
  usesChunk: false,
  maxDegraded: () => 0,
  create: (a) => new LinearPersonality(a.io, [...a.memberSectors]),
});
registerLevel({
  level: 0,
  name: 'raid0',
  aliases: ['stripe'],
  minDevices: 1,
  redundancy: 'none',
  usesChunk: true,
  maxDegraded: () => 0,
  create: (a) => new Raid0Personality(a.io, [...a.memberSectors], a.chunkSectors, a.layout),
});
registerLevel({
  level: 1,
  name: 'raid1',
  aliases: ['mirror'],
  minDevices: 1,
  redundancy: 'mirror',
  usesChunk: false,
  maxDegraded: (disks) => disks - 1,
  create: (a) => new Raid1Personality(a.io, a.componentSectors),
});
registerLevel({
  level: 10,
  name: 'raid10',
  aliases: [],
  minDevices: 2,
  redundancy: 'mirror',
  usesChunk: true,
  maxDegraded: (_disks, layout) => {
    const l = decodeRaid10Layout(layout);
    return l.near * l.far - 1;
  },
  create: (a) => new Raid10Personality(a.io, { raidDisks: a.raidDisks, layout: a.layout, chunkSectors: a.chunkSectors, componentSectors: a.componentSectors }),
});
