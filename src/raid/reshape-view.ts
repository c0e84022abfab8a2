/**
 * An array in the middle of a reshape (RESHAPE_ACTIVE): array sectors on one side of
 * reshape_position are in the new geometry (at data_offset + new_offset on every member), the
 * rest in the old one (shared/spec/md-formats.md §1.7, §4.2). This view serves reads across
 * both; writes and the reshape itself belong to the reshape engine.
 */
import { TsmdError } from '../errors.js';
import { Feature, type Superblock1 } from '../format/superblock.js';
import type { MemberIo, Personality } from './personality.js';

export type MakePersonality = (
  level: number,
  layout: number,
  chunk: number,
  disks: number,
  io: MemberIo,
) => Personality;

export class ReshapeView implements Personality {
  readonly level: number;
  readonly arraySectors: number;
  readonly maxDegraded: number;
  readonly syncSectors = 0;
  readonly recoverySectors = 0;
  readonly oldGeo: Personality;
  readonly newGeo: Personality;
  /** array sector of the reshape frontier */
  readonly position: number;
  readonly backwards: boolean;
  private readonly oldDisks: number;

  constructor(sb: Superblock1, io: MemberIo, make: MakePersonality) {
    const oldDisks = sb.raidDisks - sb.deltaDisks;
    const newOffset = (sb.featureMap & Feature.NEW_OFFSET) !== 0 ? sb.newOffset : 0;
    const narrow = (slots: number, shift: number): MemberIo => ({
      slots,
      available: (s, d, n) =>
        s < slots && io.available(s, d === undefined ? undefined : d + shift, n),
      read: (s, d, b) => io.read(s, d + shift, b),
      write: (s, d, b) => io.write(s, d + shift, b),
      flush: (s) => io.flush(s),
      reportError: (s, op, e) => io.reportError(s, op, e),
      bulk: null, // a reshape moves data between layouts; its sync is not offloaded
      get anyWriteMostly() {
        return io.anyWriteMostly;
      },
      writeMostly: (s) => io.writeMostly(s),
      get resyncFrom() {
        return io.resyncFrom;
      },
    });
    this.oldDisks = oldDisks;
    this.oldGeo = make(sb.level, sb.layout, sb.chunkSize, oldDisks, narrow(oldDisks, 0));
    this.newGeo = make(
      sb.newLevel,
      sb.newLayout,
      sb.newChunk,
      sb.raidDisks,
      narrow(sb.raidDisks, newOffset),
    );
    this.level = sb.level;
    this.position = Number(sb.reshapePosition);
    this.backwards = (sb.featureMap & Feature.RESHAPE_BACKWARDS) !== 0 || sb.deltaDisks < 0;
    // until the reshape completes the array keeps the smaller of the two sizes
    this.arraySectors = Math.min(this.oldGeo.arraySectors, this.newGeo.arraySectors);
    this.maxDegraded = Math.min(this.oldGeo.maxDegraded, this.newGeo.maxDegraded);
  }

  canRun(available: readonly boolean[]): boolean {
    return this.oldGeo.canRun(available.slice(0, this.oldDisks)) && this.newGeo.canRun(available);
  }

  /** Is this array sector already in the new geometry? */
  inNew(s: number): boolean {
    return this.backwards ? s >= this.position : s < this.position;
  }

  async read(buf: Uint8Array, arraySector: number): Promise<void> {
    const sectors = buf.length / 512;
    if (arraySector < 0 || arraySector + sectors > this.arraySectors) {
      throw new TsmdError(
        'ENOSPC',
        `read at sector ${arraySector} beyond the array end (${this.arraySectors})`,
      );
    }
    const split = Math.min(Math.max(this.position - arraySector, 0), sectors);
    const first = buf.subarray(0, split * 512);
    const second = buf.subarray(split * 512);
    const [lo, hi] = this.backwards ? [this.oldGeo, this.newGeo] : [this.newGeo, this.oldGeo];
    const jobs: Promise<void>[] = [];
    if (first.length) jobs.push(lo.read(first, arraySector));
    if (second.length) jobs.push(hi.read(second, arraySector + split));
    await Promise.all(jobs);
  }

  async write(): Promise<void> {
    throw new TsmdError('EBUSY', 'a reshape is in progress: writes need the reshape engine');
  }

  flush(): Promise<void> {
    return this.newGeo.flush();
  }

  syncRangeOf(): [number, number] {
    return [0, 0];
  }

  recoveryToSync(): Array<[number, number]> {
    return [];
  }

  async syncRegion(): Promise<void> {
    throw new TsmdError('EBUSY', 'no resync while a reshape is in progress');
  }

  async checkRegion(): Promise<number> {
    throw new TsmdError('EBUSY', 'no check while a reshape is in progress');
  }
}
