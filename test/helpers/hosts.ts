/**
 * Several hosts on one machine, for the md-cluster tests (issue 16).
 *
 * Linux md-cluster runs one md array on several hosts that see the same disks (a SAN, shared
 * SCSI, iSCSI) and coordinate through the DLM. What makes that hard is what the hosts do NOT
 * share: each has its own page cache over the disks, its own processes, its own network
 * position. This harness models that on one machine with namespaces, so a cluster test can run
 * real `tsmd daemon`s as nodes and a real etcd as the DLM's engine.
 *
 * A **host** (class Host) is:
 * - a mount namespace and a UTS namespace (its own host name, e.g. `node1`), held by a
 *   long-lived `unshare --mount --uts --propagation private sleep infinity` ("the holder");
 *   every command of the host runs there through `nsenter -t <holder> -m -u -n`;
 * - its OWN loop devices over the shared backing files (`losetup --direct-io=on`, attached in
 *   the root namespace: loop devices are global, the mount is what is per host). The host sees
 *   them as `<sharedDir>/d0 .. dN-1`: inside its mount namespace a small tmpfs is mounted on
 *   `sharedDir` holding block device nodes (mknod, the major:minor of ITS loop devices). So
 *   every host names the disks by the same path, as hosts name a SAN LUN by the same
 *   /dev/disk/by-id path, while each reaches them through its own block device and therefore
 *   its own page cache. In the root namespace `sharedDir` is an empty directory: nothing there
 *   resolves to a disk, so a test cannot use the root's view by mistake.
 *   Kernel fact the tests must know: a block device's page cache is dropped at its last close,
 *   so a host's cache only persists while something in the host holds the device open (a
 *   running daemon does).
 * - optionally (`net: true`) a network namespace with two veth pairs into the root namespace,
 *   each a /30 of its own (no bridge, no forwarding; hosts cannot reach one another, only the
 *   root namespace, where etcd and the test's NBD clients run):
 *     the **cluster link** (`tsmh<B>c` ↔ `cluster` in the host): etcd listens on the root side
 *       (`host.etcdAddress`); `partition()` sets it down: the host loses etcd, as a node cut
 *       off the DLM network, while its disks and its NBD clients stay;
 *     the **client link** (`tsmh<B>n` ↔ `client`): the host's NBD server listens on its side
 *       (`host.address`), the test connects to it from the root namespace;
 *       `partition({ clients: true })` cuts this one too.
 *   Addresses are taken from 198.18.0.0/15 (RFC 2544, reserved for network tests): block B is
 *   the /29 at 198.18.0.0 + 8B. A block is claimed atomically by creating the netns `tsmh-B`
 *   (`ip netns add` fails if it exists), skipping blocks that overlap any route or address
 *   already on the machine, so test files running at the same time never collide.
 *   Without `net` the host shares the root's network: NBD on 127.0.0.1, etcd on 127.0.0.1.
 * - its own directory (`host.dir`, for the host's private files), run directory
 *   (`host.runDir`: TSMD_RUN_DIR for everything run in the host) and NBD port (`host.nbdPort`,
 *   picked free once, kept across daemon restarts so clients can reconnect).
 *
 * **Shared** between hosts: the backing files (the "disks"), etcd, the machine's file system
 * outside `sharedDir` (so paths in temp dirs mean the same everywhere), /dev (a host could open
 * another host's /dev/loopN by that name: tests use `host.disk(i)`, never a loop device name),
 * /sys, pids, the clock.
 *
 * Cleanup: `host.close()` / `cluster.close()` kill the host's processes, detach its loop
 * devices (only if they still back our file), delete its netns and links: best effort, every
 * step tried, idempotent, errors reported together at the end. `Cluster.start(opts, t)`
 * registers `t.after(close)`; hosts still alive when the process exits or gets SIGINT/SIGTERM
 * are cleaned up synchronously, and every process the harness starts carries
 * PR_SET_PDEATHSIG=SIGKILL (setpriv), so even a SIGKILLed test process leaves no holder or
 * daemon running (only its loop devices and netns, named tsmh-B).
 *
 * Usage:
 *   const c = await Cluster.start({ hosts: 3, disks: 2, diskSize: 64 * MiB, net: true, etcd: true }, t);
 *   for (const h of c.hosts) await h.startDaemon(['--node-name', h.name, `--etcd=${c.etcdUrl(h)}`]);
 *   c.hosts[0].tsmd(['--create', '/dev/md0', '-l1', '-n2', c.hosts[0].disk(0), c.hosts[0].disk(1)]);
 *   run('nbdinfo', [c.hosts[1].nbdUri('md0')]);  c.hosts[2].mdstat();  c.hosts[2].partition();
 */
import './isolate.js';
import { type ChildProcess, spawn, type SpawnOptions, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statfsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { type DaemonSpawnOptions, startDaemon, type TestDaemon } from './daemon.js';
import { EtcdServer, freePort } from './etcd.js';
import { haveTool, requireRoot, requireTool, run, type RunResult, sparseFile, tsmdBin } from './tools.js';

/** The tools the harness runs (util-linux, iproute2, coreutils). */
export const HOST_TOOLS = ['unshare', 'nsenter', 'setpriv', 'losetup', 'mount', 'mknod', 'ip', 'dd'] as const;

/** Skips t loudly (fails under CI=true) unless root and every harness tool is there. */
export function requireHosts(t: TestContext): boolean {
  if (!requireRoot(t, 'the hosts harness (loop devices, mount and network namespaces)')) return false;
  for (const tool of HOST_TOOLS) if (!requireTool(t, tool, 'the hosts harness models each cluster node as namespaces on this machine')) return false;
  return true;
}

export function haveHosts(): boolean {
  return process.getuid?.() === 0 && HOST_TOOLS.every((x) => haveTool(x));
}

const TMPFS_MAGIC = 0x01021994;

/**
 * What is not yet closed (hosts, etcd, the disks' directory), in creation order: cleaned up
 * synchronously, last first, if the process exits or is signalled before close().
 */
const live = new Set<() => void>();
let exitHooked = false;

function runLive(): void {
  for (const f of [...live].reverse()) {
    live.delete(f);
    try {
      f();
    } catch {
      // best effort: the next one
    }
  }
}

/** Register a synchronous last-resort cleanup; returns its deregistration. */
function onExit(f: () => void): () => void {
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', runLive);
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      const onSig = (): void => {
        runLive();
        process.removeListener(sig, onSig);
        process.kill(process.pid, sig);
      };
      process.on(sig, onSig);
    }
  }
  live.add(f);
  return () => live.delete(f);
}

/** Run a command in the root namespace; throws with its output when it fails. */
function must(cmd: string, args: string[], what = `${cmd} ${args.join(' ')}`): string {
  const r = run(cmd, args, { timeoutMs: 30_000 });
  if (r.status !== 0) throw new Error(`${what}: exit ${r.status}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Same, synchronously and silently, for the exit-time cleanup (no throwing there). */
function quiet(cmd: string, args: string[]): void {
  spawnSync(cmd, args, { stdio: 'ignore', timeout: 10_000 });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// shared disks

export interface SharedDisks {
  /** the test-owned temp dir (on a disk file system, never tmpfs); removed by cleanup() */
  dir: string;
  /** the backing files, one per disk */
  files: string[];
  /** where every host sees the disks (an empty directory in the root namespace) */
  sharedDir: string;
  /** `sharedDir/d0 .. dN-1`: the disks' names, the same in every host */
  paths: string[];
  sizeBytes: number;
  cleanup: () => void;
}

/** A temp directory on a file system where O_DIRECT works (tmpdir() unless tmpfs, else /var/tmp). */
function diskTempDir(prefix: string): string {
  for (const base of [tmpdir(), '/var/tmp']) {
    try {
      if (statfsSync(base).type !== TMPFS_MAGIC) return mkdtempSync(join(base, prefix));
    } catch {
      // not there: the next candidate
    }
  }
  throw new Error(`no disk-backed temp directory (${tmpdir()} and /var/tmp are tmpfs): the shared disks need O_DIRECT on their loop devices; set TMPDIR`);
}

/** `n` sparse backing files of `sizeBytes` each in a fresh test-owned directory. */
export function createSharedDisks(n: number, sizeBytes: number): SharedDisks {
  if (!(n >= 1) || sizeBytes % 4096 !== 0 || sizeBytes <= 0) throw new Error(`createSharedDisks: ${n} disks of ${sizeBytes} bytes (whole 4 KiB blocks)`);
  const dir = diskTempDir('tsmd-hosts-');
  const files = Array.from({ length: n }, (_, i) => sparseFile(join(dir, `disk${i}.img`), sizeBytes));
  const sharedDir = join(dir, 'shared');
  mkdirSync(sharedDir);
  const remove = () => rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  const forget = onExit(remove);
  return {
    dir,
    files,
    sharedDir,
    paths: files.map((_, i) => join(sharedDir, `d${i}`)),
    sizeBytes,
    cleanup: () => {
      forget();
      remove();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// addresses

const NET_BASE = (198 << 24) | (18 << 16); // 198.18.0.0/15, RFC 2544 benchmarking
const NET_BLOCKS = (1 << 17) / 8; // /29 blocks in the /15
let blockSeq = 0;

function ipv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function parseIpv4(s: string): number {
  const p = s.split('.').map(Number);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
}

/** Every IPv4 prefix on the machine (addresses and routes of all tables), but the default route. */
function usedPrefixes(): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const text = must('ip', ['-4', '-o', 'addr', 'show']) + must('ip', ['-4', 'route', 'show', 'table', 'all']);
  for (const m of text.matchAll(/(?:^|\s)(\d+\.\d+\.\d+\.\d+)(?:\/(\d+))?/gm)) {
    const len = m[2] === undefined ? 32 : Number(m[2]);
    if (len === 0) continue;
    const start = (parseIpv4(m[1]!) & ((0xffffffff << (32 - len)) >>> 0)) >>> 0;
    out.push([start, start + 2 ** (32 - len)]);
  }
  return out;
}

interface NetClaim {
  block: number;
  netns: string;
  clusterLink: string;
  clientLink: string;
  /** root side / host side of the cluster link, the client link */
  clusterRoot: string;
  clusterHost: string;
  clientRoot: string;
  clientHost: string;
}

/** Claim a free /29 by creating its netns, then its two veth pairs (see the header). */
function claimNet(): NetClaim {
  const used = usedPrefixes();
  const start = (process.pid * 8 + blockSeq++) % NET_BLOCKS;
  for (let k = 0; k < NET_BLOCKS; k++) {
    const block = (start + k) % NET_BLOCKS;
    const lo = NET_BASE + block * 8;
    if (used.some(([a, b]) => a < lo + 8 && lo < b)) continue;
    const netns = `tsmh-${block}`;
    if (run('ip', ['netns', 'add', netns]).status !== 0) continue; // another test process has it
    const c: NetClaim = {
      block,
      netns,
      clusterLink: `tsmh${block}c`,
      clientLink: `tsmh${block}n`,
      clusterRoot: ipv4(lo + 1),
      clusterHost: ipv4(lo + 2),
      clientRoot: ipv4(lo + 5),
      clientHost: ipv4(lo + 6),
    };
    try {
      for (const [link, inner, root, host] of [
        [c.clusterLink, 'cluster', c.clusterRoot, c.clusterHost],
        [c.clientLink, 'client', c.clientRoot, c.clientHost],
      ] as const) {
        must('ip', ['link', 'add', link, 'type', 'veth', 'peer', 'name', inner, 'netns', netns]);
        must('ip', ['addr', 'add', `${root}/30`, 'dev', link]);
        must('ip', ['link', 'set', link, 'up']);
        must('ip', ['-n', netns, 'addr', 'add', `${host}/30`, 'dev', inner]);
        must('ip', ['-n', netns, 'link', 'set', inner, 'up']);
      }
      must('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    } catch (e) {
      releaseNetSync(c);
      throw e;
    }
    return c;
  }
  throw new Error('no free /29 left in 198.18.0.0/15 for a host network namespace');
}

function releaseNetSync(c: NetClaim): void {
  // deleting the netns destroys the veth ends inside it and so their root-side peers; the
  // explicit link deletes cover a netns some process still holds
  quiet('ip', ['netns', 'del', c.netns]);
  for (const l of [c.clusterLink, c.clientLink]) if (existsSync(`/sys/class/net/${l}`)) quiet('ip', ['link', 'del', l]);
}

// ---------------------------------------------------------------------------------------------
// hosts

export interface HostOptions {
  /** a network namespace of its own (see the header); default false */
  net?: boolean;
}

export interface ExecOptions {
  env?: NodeJS.ProcessEnv;
  input?: string;
  timeoutMs?: number;
  /** working directory (default: this process's), the same path inside the host */
  cwd?: string;
}

/** A tsmd daemon running in a host: test/helpers/daemon.ts's handle. */
export type HostDaemon = TestDaemon;

function nsOf(pid: number, ns: string): string {
  return readlinkSync(`/proc/${pid}/ns/${ns}`);
}

function alive(p: ChildProcess): boolean {
  return p.exitCode === null && p.signalCode === null;
}

async function killAndWait(p: ChildProcess, ms = 10_000): Promise<void> {
  if (!alive(p)) return;
  let timer: NodeJS.Timeout | undefined;
  const gone = new Promise<boolean>((r) => {
    p.once('exit', () => r(true));
    timer = setTimeout(() => r(false), ms);
  });
  p.kill('SIGKILL');
  const ok = await gone;
  clearTimeout(timer);
  if (!ok) throw new Error(`pid ${p.pid} did not exit within ${ms} ms of SIGKILL`);
}

export class Host {
  /** `node<index+1>`: also the host name inside the host (`hostname`) */
  readonly name: string;
  /** the loop device behind each shared disk, for this host only (never open these by name) */
  readonly loops: string[] = [];
  /** the host's private directory (files no other host sees by intent) */
  readonly dir: string;
  /** TSMD_RUN_DIR of everything run in this host */
  readonly runDir: string;
  /** the NBD port of this host's daemon */
  nbdPort = 0;
  /** the network namespace's name, the root-side link names, when `net` */
  net: NetClaim | undefined;
  /** the holder process: its namespaces are the host's */
  private holder: ChildProcess | undefined;
  private readonly procs = new Set<ChildProcess>();
  private readonly daemons: HostDaemon[] = [];
  private closing: Promise<void> | undefined;
  private readonly forget: () => void;

  private constructor(
    readonly disks: SharedDisks,
    /** 0-based */
    readonly index: number,
  ) {
    this.name = `node${index + 1}`;
    this.dir = join(disks.dir, this.name);
    this.runDir = join(this.dir, 'run');
    mkdirSync(this.runDir, { recursive: true });
    this.forget = onExit(() => this.cleanupSync());
  }

  /** Bring up host `index` over `disks`; on failure nothing of it is left. */
  static async create(disks: SharedDisks, index: number, opts: HostOptions = {}): Promise<Host> {
    const h = new Host(disks, index);
    try {
      await h.setUp(opts);
    } catch (e) {
      await h.close().catch(() => undefined);
      throw e;
    }
    return h;
  }

  private async setUp(opts: HostOptions): Promise<void> {
    if (opts.net) this.net = claimNet();
    this.nbdPort = await freePort();
    // the holder: its own mount and UTS namespaces (in the host's netns when it has one)
    const enterNet = this.net ? ['nsenter', `--net=/run/netns/${this.net.netns}`, '--'] : [];
    const holder = spawn('setpriv', ['--pdeathsig', 'KILL', '--', ...enterNet, 'unshare', '--mount', '--uts', '--propagation', 'private', '--', 'sleep', 'infinity'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.holder = holder;
    let err = '';
    holder.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
    const rootMnt = nsOf(process.pid, 'mnt');
    for (const t0 = Date.now(); ;) {
      if (!alive(holder)) throw new Error(`${this.name}: the namespace holder exited (${holder.exitCode}): ${err}`);
      try {
        if (nsOf(holder.pid!, 'mnt') !== rootMnt) break;
      } catch {
        // /proc entry between fork and exec
      }
      if (Date.now() - t0 > 10_000) throw new Error(`${this.name}: unshare did not make a mount namespace within 10 s`);
      await sleep(10);
    }
    // wait for the whole exec chain to reach `sleep` (setpriv, nsenter, unshare exec in turn):
    // entering it earlier would enter a namespace that is not the final one
    for (const t0 = Date.now(); readlinkSync(`/proc/${holder.pid}/exe`).split('/').pop() !== 'sleep';) {
      if (Date.now() - t0 > 10_000) throw new Error(`${this.name}: the namespace holder never reached sleep`);
      await sleep(10);
    }
    // this host's own loop devices over the shared files (global devices: attached from here)
    for (const f of this.disks.files) this.loops.push(attachLoop(f));
    // inside: the host name, and the disks under the shared path as this host's devices
    const setup = this.exec(['sh', '-ec', 'hostname "$0"; mount -t tmpfs -o size=64k,mode=0755 tsmd-disks "$1"', this.name, this.disks.sharedDir]);
    if (setup.status !== 0) throw new Error(`${this.name}: namespace setup failed: ${setup.stderr}`);
    for (const [i, dev] of this.loops.entries()) {
      const { major, minor } = devNumbers(dev);
      const r = this.exec(['mknod', '-m', '0660', this.disks.paths[i]!, 'b', String(major), String(minor)]);
      if (r.status !== 0) throw new Error(`${this.name}: mknod ${this.disks.paths[i]}: ${r.stderr}`);
    }
  }

  /** The holder's pid: /proc/<pid>/ns/* are this host's namespaces. */
  get pid(): number {
    if (!this.holder || !alive(this.holder)) throw new Error(`${this.name} is down (its namespace holder is gone)`);
    return this.holder.pid!;
  }

  /** Shared disk i as this host names it (the same path on every host). */
  disk(i: number): string {
    const p = this.disks.paths[i];
    if (p === undefined) throw new Error(`no shared disk ${i} (there are ${this.disks.paths.length})`);
    return p;
  }

  /** Where this host's NBD server listens and the root namespace reaches it. */
  get address(): string {
    return this.net ? this.net.clientHost : '127.0.0.1';
  }

  /** The local address etcd must listen on for this host to reach it. */
  get etcdAddress(): string {
    return this.net ? this.net.clusterRoot : '127.0.0.1';
  }

  /** nbd://address:port/export of this host's daemon. */
  nbdUri(exportName = 'md0'): string {
    return `nbd://${this.address}:${this.nbdPort}/${exportName}`;
  }

  /** `nsenter` into this host's namespaces, keeping `cwd`; exec's the command (same pid). */
  private enter(cwd = process.cwd()): string[] {
    return ['nsenter', '-t', String(this.pid), '-m', '-u', '-n', `--wd=${cwd}`, '--'];
  }

  private env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
    return { ...process.env, TZ: 'UTC', TSMD_RUN_DIR: this.runDir, ...extra };
  }

  /** Run a command to completion inside the host (TSMD_RUN_DIR = its run dir). */
  exec(argv: string[], opts: ExecOptions = {}): RunResult {
    const [cmd, ...args] = [...this.enter(opts.cwd), ...argv];
    return run(cmd!, args, { env: { TSMD_RUN_DIR: this.runDir, ...opts.env }, input: opts.input, timeoutMs: opts.timeoutMs });
  }

  /**
   * exec() without blocking this process: for long commands, and while daemons run whose
   * stderr pipes this process must keep reading (a blocked event loop stalls their logging).
   */
  execAsync(argv: string[], opts: ExecOptions = {}): Promise<RunResult> {
    const timeoutMs = opts.timeoutMs ?? 300_000;
    const p = this.spawn(argv, { cwd: opts.cwd, env: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    p.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    p.stdin!.on('error', () => undefined); // a command that does not read its input
    p.stdin!.end(opts.input ?? '');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      p.once('error', reject);
      p.once('close', (code, signal) => {
        clearTimeout(timer);
        if (signal === 'SIGKILL' && code === null) {
          reject(new Error(`${this.name}: ${argv.join(' ')}: no exit within ${timeoutMs / 1000} s (killed)\n--- stdout:\n${stdout.slice(-4000)}\n--- stderr:\n${stderr.slice(-4000)}`));
        } else resolve({ status: code ?? -1, stdout, stderr });
      });
    });
  }

  /**
   * Start a process inside the host; it is killed by close() (and by the kernel if this test
   * process dies). The returned pid is the command's own.
   */
  spawn(argv: string[], opts: SpawnOptions & { cwd?: string } = {}): ChildProcess {
    const p = spawn('setpriv', ['--pdeathsig', 'KILL', '--', ...this.enter(opts.cwd), ...argv], { ...opts, env: this.env(opts.env) });
    this.procs.add(p);
    p.once('exit', () => this.procs.delete(p));
    return p;
  }

  /**
   * `tsmd daemon --no-assemble --listen=<address>:<nbdPort> --run-dir=<runDir> ...extra` inside
   * the host. One daemon per host at a time (the run directory's pid file says so).
   */
  async startDaemon(extra: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<HostDaemon> {
    const opts: DaemonSpawnOptions = { wrap: ['setpriv', '--pdeathsig', 'KILL', '--', ...this.enter()], listen: `${this.address}:${this.nbdPort}` };
    const d = await startDaemon(this.runDir, extra, { TSMD_RUN_DIR: this.runDir, ...env }, opts);
    this.daemons.push(d);
    return d;
  }

  /** The last daemon started in this host (running or not). */
  get daemon(): HostDaemon | undefined {
    return this.daemons[this.daemons.length - 1];
  }

  /** The tsmd CLI inside the host, against its run directory (its daemon when one runs). */
  tsmd(args: string[], opts: ExecOptions = {}): RunResult {
    return this.exec([process.execPath, tsmdBin, '--run-dir', this.runDir, ...args], opts);
  }

  /** The host's /proc/mdstat: its daemon's mdstat file. */
  mdstat(): string {
    return readFileSync(join(this.runDir, 'mdstat'), 'utf8');
  }

  /**
   * Cut the host off etcd (its cluster link down: packets dropped, no reset, as a real
   * partition); with `clients`, off its NBD clients too. Needs `net`.
   */
  partition(opts: { clients?: boolean } = {}): void {
    const n = this.needNet('partition');
    must('ip', ['link', 'set', n.clusterLink, 'down']);
    if (opts.clients) must('ip', ['link', 'set', n.clientLink, 'down']);
  }

  /** Undo partition(): both links up again. */
  heal(): void {
    const n = this.needNet('heal');
    must('ip', ['link', 'set', n.clusterLink, 'up']);
    must('ip', ['link', 'set', n.clientLink, 'up']);
  }

  private needNet(what: string): NetClaim {
    if (!this.net) throw new Error(`${this.name}.${what}(): the host has no network namespace (create it with { net: true })`);
    return this.net;
  }

  /**
   * Stop everything of the host: its processes (SIGKILL: a test that wants a clean daemon
   * stop does it first), its holder (the namespaces go with the last process in them), its
   * loop devices, its netns and links. Best effort, idempotent; throws the failures at the end.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const errors: unknown[] = [];
    const step = async (f: () => unknown): Promise<void> => {
      try {
        await f();
      } catch (e) {
        errors.push(e);
      }
    };
    for (const d of this.daemons) await step(() => killAndWait(d.proc));
    for (const p of [...this.procs]) await step(() => killAndWait(p));
    if (this.holder) await step(() => killAndWait(this.holder!));
    for (const [i, dev] of this.loops.entries()) await step(() => detachLoop(dev, this.disks.files[i]!));
    if (this.net) {
      const n = this.net;
      await step(() => {
        releaseNetSync(n);
        for (const l of [n.clusterLink, n.clientLink]) if (existsSync(`/sys/class/net/${l}`)) throw new Error(`${this.name}: link ${l} still exists`);
        if (existsSync(`/run/netns/${n.netns}`)) throw new Error(`${this.name}: netns ${n.netns} still exists`);
      });
    }
    this.forget();
    if (errors.length) throw new AggregateError(errors, `${this.name}: cleanup failed: ${errors.map((e) => (e as Error).message).join('; ')}`);
  }

  /** The exit-time cleanup: synchronous, silent. */
  private cleanupSync(): void {
    for (const p of [...this.daemons.map((d) => d.proc), ...this.procs, ...(this.holder ? [this.holder] : [])]) {
      if (alive(p)) p.kill('SIGKILL');
    }
    for (const [i, dev] of this.loops.entries()) {
      if (backingFile(dev) === this.disks.files[i]) quiet('losetup', ['-d', dev]);
    }
    if (this.net) releaseNetSync(this.net);
  }
}

function devNumbers(dev: string): { major: number; minor: number } {
  // the kernel's new_encode_dev layout, as stat(2) reports st_rdev
  const rdev = BigInt(statSync(dev).rdev);
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return { major, minor };
}

/** The file behind /dev/loopN, or undefined when it is detached. */
export function backingFile(dev: string): string | undefined {
  try {
    return readFileSync(`/sys/block/${dev.replace('/dev/', '')}/loop/backing_file`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

let dioWarned = false;

function attachLoop(file: string): string {
  // `losetup -f` picks a free device and another process may take it first: it retries then
  for (let attempt = 0; ; attempt++) {
    const r = run('losetup', ['-f', '--show', '--direct-io=on', file], { timeoutMs: 30_000 });
    if (r.status === 0) {
      const dev = r.stdout.trim();
      // O_DIRECT from the loop device to the file: no shared cache under the hosts' own ones,
      // as with a real SAN (without it the hosts' caches still differ, the backing file's is
      // shared)
      if (!dioWarned && readFileSync(`/sys/block/${dev.slice(5)}/loop/dio`, 'utf8').trim() !== '1') {
        dioWarned = true;
        console.warn(`hosts: ${dev} over ${file} runs without direct I/O (the file system refused O_DIRECT)`);
      }
      return dev;
    }
    if (attempt >= 5 || !/busy|resource/i.test(r.stderr)) throw new Error(`losetup -f --show ${file}: ${r.stderr}`);
  }
}

function detachLoop(dev: string, file: string): void {
  if (backingFile(dev) !== file) return; // already detached (and maybe reused: not ours then)
  must('losetup', ['-d', dev]);
}

// ---------------------------------------------------------------------------------------------
// etcd for hosts

export interface HostsEtcd {
  server: EtcdServer;
  /** the client URL host i must use: etcd's address on its cluster link, or loopback */
  urls: string[];
  url: (h: Host) => string;
  /** stop etcd, remove its data */
  cleanup: () => Promise<void>;
}

/**
 * A real etcd (test/helpers/etcd.ts) on loopback and on the root side of every host's cluster
 * link, so every host reaches it and a partitioned host does not.
 */
export async function startEtcdFor(hosts: Host[], opts: { tls?: boolean } = {}): Promise<HostsEtcd> {
  const listen = [...new Set(hosts.filter((h) => h.net).map((h) => h.etcdAddress))];
  const server = await EtcdServer.start({ tls: opts.tls, listen });
  const forget = onExit(() => server.cleanupSync());
  return {
    server,
    cleanup: async () => {
      forget();
      await server.cleanup();
    },
    urls: hosts.map((h) => server.urlOn(h.etcdAddress)),
    url: (h) => server.urlOn(h.etcdAddress),
  };
}

// ---------------------------------------------------------------------------------------------
// cluster

export interface ClusterOptions {
  /** number of hosts (default 3) */
  hosts?: number;
  /** number of shared disks (default 2) */
  disks?: number;
  /** bytes per disk (default 64 MiB, sparse) */
  diskSize?: number;
  /** network namespaces: for every host, or per host index (default false) */
  net?: boolean | boolean[];
  /** start an etcd every host reaches (default false); `{ tls: true }`: mutual TLS only */
  etcd?: boolean | { tls?: boolean };
}

export class Cluster {
  private closing: Promise<void> | undefined;

  private constructor(
    readonly disks: SharedDisks,
    readonly hosts: Host[],
    public etcd: HostsEtcd | undefined,
  ) {}

  /**
   * Shared disks, hosts node1..nodeN and (opts.etcd) an etcd. With `t`, close() is registered
   * as t.after, so a failing test still cleans up; a suite calls close() in its after().
   */
  static async start(opts: ClusterOptions = {}, t?: Pick<TestContext, 'after'>): Promise<Cluster> {
    const n = opts.hosts ?? 3;
    const disks = createSharedDisks(opts.disks ?? 2, opts.diskSize ?? 64 * 1024 * 1024);
    const c = new Cluster(disks, [], undefined);
    t?.after(() => c.close());
    try {
      for (let i = 0; i < n; i++) {
        const net = Array.isArray(opts.net) ? opts.net[i] === true : opts.net === true;
        c.hosts.push(await Host.create(disks, i, { net }));
      }
      if (opts.etcd) c.etcd = await startEtcdFor(c.hosts, { tls: typeof opts.etcd === 'object' && opts.etcd.tls === true });
    } catch (e) {
      await c.close().catch(() => undefined);
      throw e;
    }
    return c;
  }

  /** The etcd client URL for host h (needs opts.etcd). */
  etcdUrl(h: Host): string {
    if (!this.etcd) throw new Error('the cluster was started without etcd');
    return this.etcd.url(h);
  }

  /** Close every host, stop etcd, remove the disks' directory; best effort, idempotent. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const results = await Promise.allSettled([
      ...this.hosts.map((h) => h.close()),
      (async () => await this.etcd?.cleanup())(),
    ]);
    const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
    try {
      this.disks.cleanup();
    } catch (e) {
      errors.push(e);
    }
    if (errors.length) throw new AggregateError(errors, `cluster cleanup failed: ${errors.map((e) => (e as Error).message).join('; ')}`);
  }
}
