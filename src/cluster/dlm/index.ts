/** The DLM: interface (types), grant engine, in-memory and etcd backends. */
export * from './types.js';
export { type LockEntry, type ResourceState } from './grant.js';
export { MemoryDlmCluster, type MemoryDlmOptions } from './memory.js';
export { EtcdDlm, type EtcdDlmOptions, type EtcdDlmStats, type EtcdLockspace, type EtcdLockspaceInternals } from './etcd.js';
