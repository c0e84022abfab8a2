/**
 * The node's md-cluster stack as the md core receives it at assembly (md_setup_cluster: the
 * module plus the cluster it runs in): its cluster name, the DLM, and how members are opened
 * for shared use (uncached: other hosts write the same disks).
 */
import type { Clock } from '../../env/clock.js';
import type { BlockDevice } from '../../io/block-device.js';
import type { ClusterSetup } from '../../md/cluster-ops.js';
import type { Dlm } from '../dlm/types.js';
import { MdCluster } from './md-cluster.js';

export interface NodeClusterOptions {
  clusterName: string;
  dlm: Dlm;
  clock: Clock;
  /** every bounded DLM wait (default 30 s) */
  timeoutMs?: number;
  /** switch a member to O_DIRECT (the daemon passes the io layer's); absent: members as opened */
  direct?: (dev: BlockDevice, log: (msg: string, level?: 'info' | 'warn' | 'error') => void) => Promise<BlockDevice>;
}

/** A ClusterSetup for MdArray.assemble; `clusters` lists what it made (metrics, tests). */
export function nodeClusterSetup(o: NodeClusterOptions): ClusterSetup & { readonly clusters: MdCluster[] } {
  const clusters: MdCluster[] = [];
  return {
    clusterName: o.clusterName,
    clusters,
    create: (info, host) => {
      const c = new MdCluster({ dlm: o.dlm, clock: o.clock, info, host, timeoutMs: o.timeoutMs });
      clusters.push(c);
      return c;
    },
    prepareMember: o.direct,
  };
}
