/**
 * The personality seam (Linux: struct md_personality). A level knows how array sectors map to
 * member sectors and how to keep redundancy; the core (md/) owns members, superblocks and
 * failure policy and hands the level a MemberIo. Each level is described once in the level
 * registry (raid/registry.ts), which builds its personality.
 *
 * Required: everything without a `?`. Optional hooks (md's personality has the same split:
 * the core checks for NULL before calling): errorHandler, resize, discard and the reshape
 * hooks (checkReshape, startReshape, reshapeRegion, finishReshape, takeover). A level without
 * a hook gets the core's default, said at each hook.
 */
import type { BulkOp, Syndrome } from './offload/bulk.js';

/** A place in a member's data area: slot and member sector (relative to data_offset). */
export interface MemberLoc {
  slot: number;
  sector: number;
}

/** One piece for the sync offload: see BulkPiece (raid/offload/bulk.ts), in member terms. */
export interface MemberBulkPiece {
  srcs: MemberLoc[];
  dsts: MemberLoc[];
  sectors: number;
  /** pq and q only (see raid/offload/bulk.ts) */
  syndrome?: Syndrome;
}

/**
 * The sync offload (raid/offload/bulk.ts) over the members: runs pieces on helper threads and resolves
 * to the indices of the flagged pieces (compare: the copies differ; xor without dsts: not
 * zero). It decides and reports nothing: on any error it rejects, and the personality redoes
 * the range on its own path, which retries reads and fails members as md does.
 */
export interface MemberBulk {
  /** Can every one of these slots take part now (a plain file or block device member)? */
  usable(slots: Iterable<number>): boolean;
  run(op: BulkOp, pieces: readonly MemberBulkPiece[]): Promise<Set<number>>;
}

export interface MemberIo {
  /** Number of slots (raid_disks). */
  readonly slots: number;
  /** Is the member in this slot present and in sync for this member sector range? */
  available(slot: number, deviceSector?: number, sectors?: number): boolean;
  /**
   * Does any slot hold a write-mostly member (raid1 --write-mostly)? Reads then go to the
   * others first (writeMostly(slot) tells which), and to a write-mostly copy only when no
   * other copy can serve them.
   */
  readonly anyWriteMostly: boolean;
  /**
   * Resync-space sector from which the copies may still differ (md's recovery_cp while a
   * resync is owed; Infinity when in sync). Mirror reads reaching past it use the first
   * copy, the one the resync copies from, so two reads never see different data.
   */
  readonly resyncFrom: number;
  writeMostly(slot: number): boolean;
  /** Read from a member's data area (sector relative to data_offset). Throws on error. */
  read(slot: number, deviceSector: number, buf: Uint8Array): Promise<void>;
  write(slot: number, deviceSector: number, buf: Uint8Array): Promise<void>;
  flush(slot: number): Promise<void>;
  /** The sync offload, when the array has one (the daemon's arrays; never in the simulator). */
  readonly bulk: MemberBulk | null;
  /**
   * A member I/O failed. The core decides (fail the member, count read errors...). After this
   * returns, available(slot) tells whether the personality may still use the member.
   */
  reportError(slot: number, op: 'read' | 'write', err: unknown): void;
}

export interface Personality {
  readonly level: number;
  readonly arraySectors: number;
  /** How many members may be missing while data stays readable, in the best case. */
  readonly maxDegraded: number;
  /** Can the array serve all data with only these slots available? */
  canRun(available: readonly boolean[]): boolean;
  /** Read/write whole sectors of the array (offset and length multiples of 512). */
  read(buf: Uint8Array, arraySector: number): Promise<void>;
  write(buf: Uint8Array, arraySector: number): Promise<void>;
  flush(): Promise<void>;
  /**
   * Size of the resync address space, which the write-intent bitmap also covers: member
   * sectors (raid1/4/5/6) or array sectors (raid10), as in md.
   */
  readonly syncSectors: number;
  /** Size of the recovery address space: member sectors (raid10 recovers by device, as md). */
  readonly recoverySectors: number;
  /** The resync-space range [start, end) that a request on these array sectors touches. */
  syncRangeOf(arraySector: number, sectors: number): [number, number];
  /**
   * The resync-space ranges whose data lives in recovery-space [start, start+sectors) of
   * `slot` (identity except raid10): what a bitmap-guided recovery asks the bitmap about.
   */
  recoveryToSync(slot: number, start: number, sectors: number): Array<[number, number]>;
  /**
   * Make [start, start+sectors) consistent (the personality's part of md's sync_request):
   * with `rebuild` empty, a resync of the resync space (mirrors copied from the first good
   * copy, parity recomputed); otherwise a recovery of the recovery space that writes the
   * rebuilt content of those slots.
   */
  syncRegion(start: number, sectors: number, rebuild: ReadonlySet<number>): Promise<void>;
  /**
   * md's check / repair of [start, start+sectors) of the resync space: compare the copies or
   * the parity with the data; returns the mismatched sectors, counted per 4 KiB (8 sectors)
   * as md counts mismatch_cnt. With `repair`, rewrite the redundancy from the data.
   */
  checkRegion(start: number, sectors: number, repair: boolean): Promise<number>;

  // ---- optional hooks ----

  /**
   * md's error_handler (raid1_error, raid10_error...): may the member in `slot` be failed
   * after an I/O error? `available` is the slots that would still be usable without it.
   * false keeps the member (the request that met the error fails with EIO instead): raid1
   * and raid10 never fail the last in-sync copy of a range. Default: fail it.
   */
  errorHandler?(slot: number, available: readonly boolean[]): boolean;
  /**
   * md's ->resize: the component size changed (--grow --size); returns the new array size in
   * sectors. Default: the size cannot change (reshape issue).
   */
  resize?(componentSectors: number): number;
  /** md's discard support: unmap array sectors. Default: discards are not offered. */
  discard?(arraySector: number, sectors: number): Promise<void>;
  /**
   * md's ->check_reshape: can this array move to `to`? null when it can, else the reason in
   * mdadm's words. Default: no reshape (the reshape issue fills these hooks in).
   */
  checkReshape?(to: LevelGeometry): string | null;
  /** md's ->start_reshape: set up the move to `to` (the core has written the superblocks). */
  startReshape?(to: LevelGeometry): void;
  /** md's reshape_request: move [start, start+sectors) of the array to the new geometry. */
  reshapeRegion?(start: number, sectors: number): Promise<void>;
  /** md's ->finish_reshape: the new geometry holds all the data. */
  finishReshape?(): void;
  /**
   * md's ->takeover: the geometry this array has as `level` without moving data (raid1 of
   * two as raid5, raid0 as raid10...), or null when that takes a reshape. Default: none.
   */
  takeover?(level: number): LevelGeometry | null;
}

/** A level's geometry as the superblock states it (level, layout, chunk, raid_disks). */
export interface LevelGeometry {
  level: number;
  layout: number;
  chunkSectors: number;
  raidDisks: number;
}
