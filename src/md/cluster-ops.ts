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

import type { BlockDevice } from '../io/block-device.js';

/** A sector range [lo, hi) in the resync address space. */
export interface SyncWindow {
  lo: number;
  hi: number;
}

export interface ClusterOps {
  // ---- part 1: membership, resync, metadata ----

  /** join(): enter the lockspace, take a slot and its bitmap lock (§2.1, §4.1 join) */
  join(nodes: number): Promise<void>;
  /**
   * load_bitmaps(): with this node's bitmap running, gather the other slots (live ones: their
   * resync window suspends our writes; free ones: their dirty bits merged into ours) and start
   * receiving messages (§4.1 load_bitmaps).
   */
  loadBitmaps(nodes: number): Promise<void>;
  /** leave(): hand over unfinished work and leave the lockspace (§4.2, §4.9) */
  leave(): Promise<void>;
  /** slot_number(): this node's bitmap slot, from 0: its DLM lockspace slot − 1 (§2.1) */
  slotNumber(): number;
  /**
   * The other nodes in the lockspace now (DLM membership; 0: this node is alone). No md
   * counterpart: tsmd's assembly asks it before a node that cannot open an active member
   * writes anything (MdArray.joinCluster).
   */
  peers(): number;
  /** resync_info_update(): publish the window this node resyncs (bitmap LVB + RESYNCING) */
  resyncInfoUpdate(window: SyncWindow): Promise<void>;
  /**
   * resync_start() / resync_finish(): the cluster-wide `resync` lock around a resync,
   * recovery or check. resyncStart waits (queued) while another node holds it; `signal`
   * aborts the wait (stop, frozen): it then rejects with ECANCELED.
   */
  resyncStart(signal?: AbortSignal): Promise<void>;
  /** `closing`: the array is being stopped (no RESYNCING(0,0): leave hands the work over) */
  resyncFinish(closing?: boolean): Promise<void>;
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

/** The md-cluster window kinds a peer shows in mdstat while another node syncs. */
export type RemoteSyncKind = 'resync' | 'recover' | 'reshape';

/**
 * What md-cluster calls back into the array (the md side of md_cluster_operations: what
 * md-cluster.c reaches through mddev). Implemented by MdArray.
 */
export interface ClusterHost {
  /** the array's name for messages (md: mdname) */
  readonly arrayName: string;
  log(msg: string, level?: 'info' | 'warn' | 'error'): void;
  /**
   * copy_from_slot(): read another slot's on-disk bitmap, merge its dirty bits into this
   * node's bitmap (they then need a resync), and with `clear` clear them in that slot on disk.
   * Returns the resync-space range [lo, hi) the dirty bits cover, or null when it is clean.
   */
  copyFromSlot(slot: number, clear: boolean): Promise<SyncWindow | null>;
  /** A resync of [lo, ...) is owed (md: recovery_cp lowered, RECOVERY_NEEDED, wake). */
  needResync(lo: number): void;
  /**
   * Another node's resync window (null: none any more). Writes into it wait; resolves once
   * the writes in flight inside the new window have finished (md's quiesce).
   */
  setRemoteWindow(w: SyncWindow | null): Promise<void>;
  /** A remote node's syncing state for mdstat (md's MD_RESYNCING_REMOTE), null: none. */
  setRemoteSync(kind: RemoteSyncKind | null): void;
  /**
   * METADATA_UPDATED: re-read the superblock of member `devNumber` (a good one, named by the
   * sender) and apply what changed (md_reload_sb / check_sb_changes).
   */
  reloadSuperblock(devNumber: number): Promise<void>;
  /** desc_nr of the first working in-sync member (METADATA_UPDATED's raid_slot), or null. */
  goodDevNumber(): number | null;
  /** This node lost its cluster membership: from now on no member write, every request EIO. */
  fenced(why: string): void;
  /** Look for sync work (md_wakeup_thread). */
  kick(): void;
}

/** What the node brings to a clustered assembly (md_setup_cluster's module and cluster stack). */
export interface ClusterSetup {
  /** this node's cluster name (corosync's totem.cluster_name); null: not configured */
  readonly clusterName: string | null;
  /** build md-cluster for one array (join happens after, through ClusterOps.join) */
  create(info: ClusterArrayInfo, host: ClusterHost): ClusterOps;
  /**
   * Switch a member to uncached I/O (O_DIRECT): other hosts write the same disks, and this
   * host's page cache would serve stale data. May return the device itself (with a warning
   * logged) where the device cannot do it.
   */
  prepareMember?(dev: BlockDevice, log: (msg: string, level?: 'info' | 'warn' | 'error') => void): Promise<BlockDevice>;
}

export interface ClusterArrayInfo {
  /** lockspace name: the array UUID, 8-4-4-4-12 lowercase hex with dashes (spec §2.1) */
  lockspace: string;
  /** the bitmap's slots */
  nodes: number;
  /** raid1 / raid10 resync window size in resync-space sectors (spec §1 constants) */
  windowSectors: number;
}

/** The refusal of an array whose bitmap names another cluster (the DLM's -EBADR at lockspace creation). */
export function clusterNameMismatch(arrayCluster: string, nodeCluster: string): string {
  return `the array belongs to cluster ${JSON.stringify(arrayCluster)}, this node is in cluster ${JSON.stringify(nodeCluster)}`;
}
