/**
 * `tsmd daemon`'s cluster flags → the node's ClusterConfig (../mdadm/cluster-config.ts).
 *
 *   --node-name=NAME        this node (default: the host name); the DLM node id
 *   --cluster-name=NAME     corosync's totem.cluster_name; none: the node is in no cluster
 *   --etcd=URL[,URL...]     the DLM's etcd endpoints, http(s)://host:port
 *   --etcd-ca/-cert/-key    TLS (https endpoints): the CA of etcd's certificate, a client pair
 *   --etcd-user=USER        etcd authentication; the password from --etcd-password-file=FILE
 *                           or TSMD_ETCD_PASSWORD, never from the command line (argv is
 *                           readable by every user of the host, through ps and /proc)
 *   --etcd-lease-ttl=SEC    the DLM lease TTL (EtcdDlm's default 10 s)
 *
 * Nothing here talks to etcd: the DLM connects lazily, and a lockspace is joined per array at
 * assembly (md-cluster's join, spec §2.1). The daemon probes etcd once after it started and
 * only warns (Daemon.start): local arrays must keep working while the cluster stack is down.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { EtcdDlm } from '../cluster/dlm/etcd.js';
import type { Clock } from '../env/clock.js';
import { TsmdError } from '../errors.js';
import { UsageError } from '../mdadm/args.js';
import { checkClusterIdent, type ClusterConfig } from '../mdadm/cluster-config.js';

/** The raw flag values (undefined: not given). */
export interface ClusterFlags {
  nodeName?: string;
  clusterName?: string;
  etcd?: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
  etcdPasswordFile?: string;
  etcdLeaseTtl?: string;
}

/** EtcdDlm's default lease TTL (cluster/dlm/etcd.ts) and its accepted range. */
export const DEFAULT_LEASE_TTL_SEC = 10;
const MIN_LEASE_TTL_SEC = 2;
const MAX_LEASE_TTL_SEC = 3600;

/** The environment variable that may carry the etcd password. */
export const ETCD_PASSWORD_ENV = 'TSMD_ETCD_PASSWORD';

/** The message for a password on the command line: refused, and why. */
export const PASSWORD_ON_ARGV =
  '--etcd-password is refused: a password on the command line can be read by every user of this host (ps, /proc/PID/cmdline); use --etcd-password-file=FILE or the TSMD_ETCD_PASSWORD environment variable';

/** A name as a usage error (exit 2, like mdadm's bad option values). */
function ident(what: '--node-name' | '--cluster-name', v: string): string {
  try {
    return checkClusterIdent(what, v);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** One etcd client URL: http:// or https://, a host and an explicit port, nothing else. */
export function parseEtcdUrl(text: string): URL {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new UsageError(`--etcd: ${JSON.stringify(text)} is not a URL; want http://HOST:PORT or https://HOST:PORT`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`--etcd: ${text}: the scheme must be http or https`);
  if (!u.hostname) throw new UsageError(`--etcd: ${text} has no host`);
  if (u.username || u.password) throw new UsageError(`--etcd: ${text}: no credentials in the URL (use --etcd-user and --etcd-password-file)`);
  if ((u.pathname !== '/' && u.pathname !== '') || u.search || u.hash) throw new UsageError(`--etcd: ${text}: only http(s)://HOST:PORT, no path or query`);
  // new URL drops a scheme's default port (https://h:443 → port ''): look at the text itself
  if (!/:\d+\/?$/.test(text)) throw new UsageError(`--etcd: ${text}: give the port (etcd's client port is usually 2379)`);
  return u;
}

/** A file the daemon needs, read now: a clear error when it cannot be (exit 1). */
function readNeeded(flag: string, path: string, read: (p: string) => Buffer): Buffer {
  try {
    return read(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (e as Error).message;
    throw new TsmdError(code === 'EACCES' ? 'EPERM' : 'ENOENT', `${flag}=${path}: cannot read it (${why})`);
  }
}

/**
 * A TLS file checked now: gRPC would otherwise fail deep inside the etcd client with OpenSSL's
 * "PEM routines::no start line", naming no file.
 */
function pem(flag: string, path: string, data: Buffer, kind: 'cert' | 'key'): Buffer {
  try {
    if (kind === 'cert') new X509Certificate(data);
    else createPrivateKey(data);
  } catch (e) {
    throw new TsmdError('EINVAL', `${flag}=${path}: not a PEM ${kind === 'cert' ? 'certificate' : 'private key'} (${(e as Error).message})`);
  }
  return data;
}

export interface ClusterDeps {
  env: NodeJS.ProcessEnv;
  clock: Clock;
  hostname?: () => string;
  readFile?: (path: string) => Buffer;
}

/**
 * Validate the flags and build the node's ClusterConfig, with an EtcdDlm when --etcd is given
 * (node id = node name). Usage errors (exit 2) for bad values and combinations; a TsmdError
 * (exit 1) for a file that cannot be read.
 */
export function clusterConfigFromFlags(f: ClusterFlags, deps: ClusterDeps): ClusterConfig {
  const read = deps.readFile ?? ((p: string) => readFileSync(p));
  const etcdOnly: Array<[keyof ClusterFlags, string]> = [
    ['etcdCa', '--etcd-ca'],
    ['etcdCert', '--etcd-cert'],
    ['etcdKey', '--etcd-key'],
    ['etcdUser', '--etcd-user'],
    ['etcdPasswordFile', '--etcd-password-file'],
    ['etcdLeaseTtl', '--etcd-lease-ttl'],
  ];
  if (f.etcd === undefined) {
    const stray = etcdOnly.find(([k]) => f[k] !== undefined);
    if (stray) throw new UsageError(`${stray[1]} needs --etcd (the DLM's etcd endpoints)`);
  }
  let nodeName: string;
  if (f.nodeName !== undefined) nodeName = ident('--node-name', f.nodeName);
  else {
    const host = (deps.hostname ?? hostname)();
    try {
      nodeName = checkClusterIdent('--node-name', host);
    } catch (e) {
      // only a cluster needs a valid node name: a plain node keeps running on any host name
      if (f.clusterName === undefined && f.etcd === undefined) return localNodeConfig(() => host);
      throw new UsageError(`the host name cannot be this node's name (${(e as Error).message}); give --node-name`);
    }
  }
  const clusterName = f.clusterName !== undefined ? ident('--cluster-name', f.clusterName) : null;
  if (f.etcd === undefined) return { nodeName, clusterName, dlm: null, leaseTtlSec: DEFAULT_LEASE_TTL_SEC, etcd: null };
  // a DLM serves the arrays of one cluster: their bitmaps name it, as corosync's does
  if (clusterName === null) throw new UsageError('--etcd needs --cluster-name: clustered bitmaps carry the cluster name, and an array is assembled only by nodes of that cluster');
  const endpoints = f.etcd.split(',').map((s) => s.trim());
  if (endpoints.some((e) => e === '')) throw new UsageError(`--etcd: an empty URL in ${JSON.stringify(f.etcd)}`);
  const urls = endpoints.map(parseEtcdUrl);
  const tls = urls[0]!.protocol === 'https:';
  if (urls.some((u) => (u.protocol === 'https:') !== tls)) throw new UsageError('--etcd: the endpoints are all http:// or all https:// (one connection, one set of credentials)');
  if (!tls && (f.etcdCa !== undefined || f.etcdCert !== undefined || f.etcdKey !== undefined))
    throw new UsageError('--etcd-ca, --etcd-cert and --etcd-key are for https:// endpoints; these are http://');
  if (tls && f.etcdCa === undefined) throw new UsageError("https:// etcd endpoints need --etcd-ca (the CA that signed etcd's certificate)");
  if ((f.etcdCert === undefined) !== (f.etcdKey === undefined)) throw new UsageError('--etcd-cert and --etcd-key go together');
  let leaseTtlSec = DEFAULT_LEASE_TTL_SEC;
  if (f.etcdLeaseTtl !== undefined) {
    const t = f.etcdLeaseTtl;
    if (!/^\d+$/.test(t) || Number(t) < MIN_LEASE_TTL_SEC || Number(t) > MAX_LEASE_TTL_SEC)
      throw new UsageError(`--etcd-lease-ttl wants whole seconds, ${MIN_LEASE_TTL_SEC}..${MAX_LEASE_TTL_SEC}, got ${t}`);
    leaseTtlSec = Number(t);
  }
  let auth: { username: string; password: string } | undefined;
  const envPassword = deps.env[ETCD_PASSWORD_ENV];
  if (f.etcdUser !== undefined) {
    if (f.etcdUser === '') throw new UsageError('--etcd-user must not be empty');
    let password: string;
    if (f.etcdPasswordFile !== undefined) {
      // the file's first line (a trailing newline is not part of the password)
      password = readNeeded('--etcd-password-file', f.etcdPasswordFile, read).toString('utf8').replace(/\r?\n$/, '');
    } else if (envPassword !== undefined) password = envPassword;
    else throw new UsageError(`--etcd-user needs a password: --etcd-password-file=FILE or the ${ETCD_PASSWORD_ENV} environment variable`);
    if (password === '') throw new UsageError(`the etcd password (${f.etcdPasswordFile !== undefined ? `--etcd-password-file=${f.etcdPasswordFile}` : ETCD_PASSWORD_ENV}) is empty`);
    auth = { username: f.etcdUser, password };
  } else if (f.etcdPasswordFile !== undefined) throw new UsageError('--etcd-password-file needs --etcd-user');
  const tlsFiles = tls
    ? {
        ca: pem('--etcd-ca', f.etcdCa!, readNeeded('--etcd-ca', f.etcdCa!, read), 'cert'),
        cert: f.etcdCert !== undefined ? pem('--etcd-cert', f.etcdCert, readNeeded('--etcd-cert', f.etcdCert, read), 'cert') : undefined,
        key: f.etcdKey !== undefined ? pem('--etcd-key', f.etcdKey, readNeeded('--etcd-key', f.etcdKey, read), 'key') : undefined,
      }
    : undefined;
  const hosts = urls.map((u) => `${u.protocol}//${u.host}`);
  const dlm = new EtcdDlm({ nodeId: nodeName, endpoints: hosts, tls: tlsFiles, auth, leaseTtlSec, clock: deps.clock });
  return { nodeName, clusterName, dlm, leaseTtlSec, etcd: { endpoints: hosts, user: auth?.username ?? null, tls } };
}

/** A node with no cluster flags: its host name, no cluster, no DLM. */
export function localNodeConfig(host: () => string = hostname): ClusterConfig {
  let nodeName = host();
  try {
    checkClusterIdent('--node-name', nodeName);
  } catch {
    // a host name that is no valid DLM node id matters only to clustered arrays, which this node has none of
    nodeName = nodeName.slice(0, 64);
  }
  return { nodeName, clusterName: null, dlm: null, leaseTtlSec: DEFAULT_LEASE_TTL_SEC, etcd: null };
}
