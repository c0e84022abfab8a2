/**
 * A node's cluster configuration, as the mdadm operations see it (`Ctx.cluster`): who this node
 * is, which cluster it belongs to, and the DLM it locks through. Linux reads the same facts from
 * the cluster stack: the node name from corosync's nodelist, the cluster name from
 * corosync's `totem.cluster_name` (mdadm's get_cluster_name, over libcmap), and the DLM is the
 * kernel's fs/dlm run by dlm_controld. tsmd takes them from `tsmd daemon` flags instead
 * (daemon/cluster-options.ts) and locks through the etcd DLM (cluster/dlm/etcd.ts).
 */
import type { Dlm } from '../cluster/dlm/types.js';
import { TsmdError } from '../errors.js';

export interface ClusterConfig {
  /** this node's name, unique in the cluster; the DLM node id (default: the host name) */
  nodeName: string;
  /**
   * corosync's totem.cluster_name: what `--create --bitmap=clustered` writes into the bitmap
   * when no --cluster-name is given, and what a clustered array's bitmap must name to be
   * assembled here. null: this daemon belongs to no cluster.
   */
  clusterName: string | null;
  /** the DLM clustered arrays join a lockspace of at assembly; null: none configured (no --etcd) */
  dlm: Dlm | null;
  /** the DLM's lease TTL (s): how long a dead node holds its locks, and the fencing bound */
  leaseTtlSec: number;
  /** what status output may show of the DLM's connection (never a password); null without --etcd */
  etcd: { endpoints: string[]; user: string | null; tls: boolean } | null;
}

/**
 * The bitmap superblock's cluster_name is 64 bytes, NUL-terminated: mdadm strncpy()s the name
 * and clears the 64th byte (super1.c add_internal_bitmap1), and the kernel copies at most 63
 * bytes out of it (md-bitmap's read_sb, strscpy(..., 64)). A name of 64 bytes would reach the
 * disk cut to 63 and never match the daemon's again, so the daemon's own is at most 63.
 */
export const CLUSTER_NAME_MAX_BYTES = 63;
/** the DLM's node id limit (cluster/dlm/etcd.ts), an etcd key component */
export const NODE_NAME_MAX_BYTES = 64;

/** printable ASCII without space or '/': a component of the DLM's etcd keys */
const NAME_RE = /^[\x21-\x2e\x30-\x7e]+$/;

/** Check a node or cluster name given to `tsmd daemon` (EINVAL with the reason). */
export function checkClusterIdent(what: '--node-name' | '--cluster-name', name: string): string {
  const max = what === '--node-name' ? NODE_NAME_MAX_BYTES : CLUSTER_NAME_MAX_BYTES;
  if (name.length === 0) throw new TsmdError('EINVAL', `${what} must not be empty`);
  if (!NAME_RE.test(name))
    throw new TsmdError('EINVAL', `${what} ${JSON.stringify(name)}: use printable ASCII without spaces or '/' (it is part of the DLM's etcd keys)`);
  if (Buffer.byteLength(name) > max)
    throw new TsmdError(
      'EINVAL',
      what === '--node-name'
        ? `${what} ${JSON.stringify(name)} is longer than ${max} bytes (the DLM's node id limit)`
        : `${what} ${JSON.stringify(name)} is longer than ${max} bytes: the clustered bitmap's cluster name field holds ${max} bytes and a NUL`,
    );
  return name;
}

/** A node daemon without --etcd cannot run a clustered array: the refusal, naming the cure. */
export function noDlmMessage(clusterName: string): string {
  return `this node has no DLM configured: a clustered array needs tsmd daemon --etcd=URL (cluster ${clusterName})`;
}

/** One line for logs and status: node, cluster, DLM (no secrets). */
export function describeCluster(c: ClusterConfig): Record<string, unknown> {
  return {
    nodeName: c.nodeName,
    clusterName: c.clusterName,
    dlm: c.etcd ? { kind: 'etcd', endpoints: c.etcd.endpoints, user: c.etcd.user, tls: c.etcd.tls, leaseTtlSec: c.leaseTtlSec } : null,
  };
}
