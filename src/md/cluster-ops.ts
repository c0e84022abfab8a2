/**
 * The md-cluster seam (Linux: struct md_cluster_operations, shared/spec/md-cluster-protocol.md
 * §1 and §3). The core calls these at exactly the places where md asks the cluster, and only
 * for a clustered array (bitmap version 5 with more than one node slot): `MdArray.cluster` is
 * null otherwise, and every call site is guarded by it, as md guards by mddev_is_clustered().
 * The implementation lives in src/cluster/ over the Dlm interface (md-cluster issue, part 1);
 * the operations of part 2 (add/remove/re-add, grow, bitmap switching) are declared here so
 * the seam does not move when they arrive.
 *
 * Every operation that waits on the DLM is bounded by the implementation (md-cluster learned
 * it the hard way: an unbounded wait there is a cluster-wide hang) and rejects with a
 * TsmdError (ETIMEDOUT, EFENCED...) rather than hanging.
 */

/** A sector range [lo, hi) in the resync address space. */
export interface SyncWindow {
  lo: number;
  hi: number;
}

export interface ClusterOps {
  // ---- part 1: membership, resync, metadata ----

  /** join(): enter the lockspace, take a slot, load the other slots' bitmaps (§2.1, §4.1) */
  join(nodes: number): Promise<void>;
  /** leave(): hand over unfinished work and leave the lockspace (§4.2, §4.9) */
  leave(): Promise<void>;
  /** slot_number(): this node's bitmap slot, from 0: its DLM lockspace slot − 1 (§2.1) */
  slotNumber(): number;
  /** resync_info_update(): publish the window this node resyncs (bitmap LVB + RESYNCING) */
  resyncInfoUpdate(window: SyncWindow): Promise<void>;
  /** resync_start() / resync_finish(): the cluster-wide `resync` lock around a resync */
  resyncStart(): Promise<void>;
  resyncFinish(): Promise<void>;
  /**
   * metadata_update_start(): take the token BEFORE the change is decided (§4.4); the core's
   * metadata transaction (Metadata.update) brackets every superblock change with it.
   */
  metadataUpdateStart(): Promise<void>;
  /** metadata_update_finish(): send METADATA_UPDATED and release the token */
  metadataUpdateFinish(): Promise<void>;
  /** metadata_update_cancel(): release the token without a message (the change was refused) */
  metadataUpdateCancel(): Promise<void>;
  /** area_resyncing(): is [lo, hi) inside another node's resync window (writes wait there)? */
  areaResyncing(direction: 'read' | 'write', lo: number, hi: number): boolean;

  // ---- part 2: devices, bitmaps, size (declared now; implemented by the part 2 issue) ----

  /** add_new_disk() start/finish/cancel and new_disk_ack(): --add under the `no-new-dev` lock */
  addNewDiskStart(deviceUuid: Uint8Array): Promise<void>;
  addNewDiskFinish(): Promise<void>;
  addNewDiskCancel(): Promise<void>;
  newDiskAck(ack: boolean): Promise<void>;
  /** remove_disk(): REMOVE message for a member every node must drop */
  removeDisk(devNumber: number): Promise<void>;
  /** gather_bitmaps(): merge every slot's dirty bits before a re-add's recovery */
  gatherBitmaps(): Promise<void>;
  /** lock_all_bitmaps() / unlock_all_bitmaps(): --grow --bitmap changes on a cluster */
  lockAllBitmaps(): Promise<boolean>;
  unlockAllBitmaps(): Promise<void>;
  /** update_size(): --grow --size agreed by every node */
  updateSize(oldDevSectors: number): Promise<void>;
  /** resize_bitmaps(): every slot's bitmap resized for a new size */
  resizeBitmaps(newSectors: number, oldSectors: number): Promise<void>;
}
