/**
 * md-cluster benchmarks (issue 16, "Performance"), each against a baseline measured in the same
 * run:
 *
 *  io      one node's 1 MiB sequential write (MB/s) and 4 KiB random write (IOPS) through NBD
 *          (fio --ioengine=nbd) on a clustered raid1 of two shared disks with two other nodes
 *          joined and idle, against the same disks (same host, same loop devices) created as a
 *          standalone raid1 with an internal bitmap of the same chunk. The standalone array runs
 *          under the clustered one's I/O policy (members O_DIRECT, forced by the bench-only
 *          preload bench/direct-members.ts): the ratio is md-cluster's cost; the deployed
 *          standalone (buffered members) is printed for information. Target >= 0.95x.
 *  resync  the initial resync (no --assume-clean) of a clustered raid1 on node 1 with nodes 2
 *          and 3 joined (so every 32 MiB window is a RESYNCING round), against the standalone
 *          resync of the same disks (members O_DIRECT as well). Target >= 0.8x.
 *  meta    a METADATA_UPDATED round with three nodes, in one process (three MdArrays over memory
 *          disks, three EtcdDlm clients to one etcd): p50/p99 of Metadata.update() on one node
 *          (token, superblock write, message, every receiver's re-read and ack), next to a raw
 *          etcd transaction; sequential etcd round trips per round from the etcd DLM's Lamport
 *          clock (every logged operation carries the largest round-trip count its writer had
 *          seen plus one, src/cluster/dlm/etcd.ts), the max over the three nodes after the round
 *          minus before.
 *  kill    kill -9 of node 3's daemon right after it wrote (its bitmap slot dirty) to the first
 *          sign of a sync on node 1 or 2 (the control socket's arrays op polled every 20 ms),
 *          against the lease TTL (daemon --etcd-lease-ttl); min / median / max, and what each
 *          survivor's sync jobs worked (the dead slot's dirty chunks, by one survivor).
 *
 * The io, resync and kill parts run real daemons on hosts of test/helpers/hosts.ts (mount
 * namespaces, own loop devices with direct I/O over the shared backing files, a real etcd):
 * they need root, util-linux, fio and etcd; meta needs etcd only.
 *
 * Environment:
 *   TSMD_BENCH_CLUSTER=io,resync,meta,kill   the parts to run (default all)
 *   TSMD_BENCH_MODES=LIST                    io: of clustered,standalone-direct,standalone-buffered (default)
 *                                            and clustered-alone (node 1 only, no peer joined)
 *   TSMD_BENCH_CASES=REGEX                   io: only the cases whose label matches
 *   TSMD_BENCH_REPS=N                        repetitions (io, resync: full 3, quick 1; kill: full 5, quick 2)
 *   TSMD_BENCH_SECONDS=S                     seconds per fio run (full 3, quick 1.5)
 *   TSMD_BENCH_RESYNC_MIB=N                  resync: the members' size (full 256, quick 128)
 *   TSMD_BENCH_TTL=SEC[,SEC]                 the lease TTLs of the kill part (full 5,10; quick 5)
 *   TSMD_BENCH_PROF=DIR                      node 1's daemon profiles itself (inspector), one .cpuprofile in DIR
 *                                            per timed resync / io mode (bench/direct-members.ts)
 *   TSMD_BENCH_TRACE=FILE                    node 1's daemon appends the duration of md-cluster's operations
 *                                            and of each sync window to FILE (bench/direct-members.ts)
 *
 * Run: node dist/bench/cluster.js [--quick]   (as root)
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { EtcdDlm } from '../src/cluster/dlm/etcd.js';
import type { Dlm, LockHandle, LockOptions, Lockspace, Mode as LockMode } from '../src/cluster/dlm/types.js';
import { MdCluster } from '../src/cluster/md-cluster/md-cluster.js';
import { controlCall, type ArrayState } from '../src/daemon/control.js';
import { SystemClock } from '../src/env/clock.js';
import { MemoryBlockDevice } from '../src/io/memory-device.js';
import { MdArray } from '../src/md/array.js';
import { createArray } from '../src/md/create.js';
import { have, median, runFio, settle } from './array-nbd.js';

const MiB = 1024 * 1024;
const here = dirname(fileURLToPath(import.meta.url));
const clock = new SystemClock();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Hosts = typeof import('../test/helpers/hosts.js');
type Cluster = Awaited<ReturnType<Hosts['Cluster']['start']>>;
type Host = Cluster['hosts'][number];

function pct(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

function load(): string {
  return loadavg().map((x) => x.toFixed(2)).join(' ');
}

function ok(h: Host, args: string[]): string {
  const r = h.tsmd(args, { timeoutMs: 120_000 });
  if (r.status !== 0) throw new Error(`${h.name}: tsmd ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

async function arrays(h: Host): Promise<ArrayState[]> {
  const rep = await controlCall(join(h.runDir, 'control.sock'), { op: 'arrays' }, 10_000);
  return rep.arrays ?? [];
}

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 120_000, stepMs = 50): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(stepMs);
  }
}

/**
 * h.startDaemon, again on another port when the host's NBD port was taken meanwhile (the
 * harness picks it free once; other jobs on the machine open ports too).
 */
async function startNode(h: Host, args: string[], env: NodeJS.ProcessEnv = {}): Promise<void> {
  const { freePort } = await import('../test/helpers/etcd.js');
  for (let attempt = 0; ; attempt++) {
    try {
      await h.startDaemon(args, env);
      return;
    } catch (e) {
      if (attempt >= 3 || !/EADDRINUSE/.test((e as Error).message)) throw e;
      h.nbdPort = await freePort();
    }
  }
}

interface Env {
  c: Cluster;
  hosts: [Host, Host, Host];
  /** node 1 opens members O_DIRECT while this file exists (bench/direct-members.ts) */
  directFlag: string;
}

/** Three hosts, two shared disks, etcd, a node daemon on each (node 1 with the direct preload). */
async function startEnv(diskBytes: number, extra: string[] = []): Promise<Env> {
  const { Cluster } = (await import('../test/helpers/hosts.js')) as Hosts;
  const c = await Cluster.start({ hosts: 3, disks: 2, diskSize: diskBytes, etcd: true });
  try {
    // every block of the backing files written once (different data on each): no timed run
    // pays the file system's block allocation, whichever mode comes first
    for (const f of c.disks.files) {
      const r = spawnSync('dd', ['if=/dev/urandom', `of=${f}`, 'bs=1M', `count=${diskBytes / MiB}`, 'conv=notrunc,fsync', 'status=none']);
      if (r.status !== 0) throw new Error(`dd to ${f}: ${r.stderr.toString()}`);
    }
    const directFlag = join(c.disks.dir, 'force-direct');
    const hosts = c.hosts as [Host, Host, Host];
    for (const h of hosts) {
      const env: NodeJS.ProcessEnv = h.index === 0 ? { NODE_OPTIONS: `--import=${pathToFileURL(join(here, 'direct-members.js')).href}`, TSMD_BENCH_DIRECT_FLAG: directFlag } : {};
      if (h.index === 0 && process.env.TSMD_BENCH_PROF) env.TSMD_BENCH_PROF_DIR = resolve(process.env.TSMD_BENCH_PROF);
      if (h.index === 0 && process.env.TSMD_BENCH_TRACE) env.TSMD_BENCH_TRACE = resolve(process.env.TSMD_BENCH_TRACE);
      await startNode(h, ['--node-name', h.name, '--cluster-name', 'bench', `--etcd=${c.etcdUrl(h)}`, '--log-level', 'warn', ...extra], env);
    }
    return { c, hosts, directFlag };
  } catch (e) {
    await c.close().catch(() => undefined);
    throw e;
  }
}

/** With TSMD_BENCH_PROF / _TRACE: node 1's daemon writes its CPU profile / I/O counts so far (bench/direct-members.ts). */
function profileMark(h: Host): void {
  if (process.env.TSMD_BENCH_PROF || process.env.TSMD_BENCH_TRACE) h.daemon!.proc.kill('SIGUSR2');
}

/** clustered-alone: the clustered array on node 1 only (nodes 2 and 3 not joined): md-cluster's own path without peers */
type Mode = 'clustered' | 'clustered-alone' | 'standalone-direct' | 'standalone-buffered';

/** md0 on node 1 in the given mode (on every node when clustered); the disks' old array is stopped first. */
function setUp(e: Env, mode: Mode, opts: { assumeClean: boolean }): void {
  const [h1, h2, h3] = e.hosts;
  const disks = [h1.disk(0), h1.disk(1)];
  const clean = opts.assumeClean ? ['--assume-clean'] : [];
  if (mode === 'clustered' || mode === 'clustered-alone') {
    rmSync(e.directFlag, { force: true });
    ok(h1, ['--create', '/dev/md0', '--run', '--level=1', '--raid-devices=2', '--bitmap=clustered', '--nodes=4', ...clean, ...disks]);
    if (mode === 'clustered') {
      ok(h2, ['--assemble', '/dev/md0', h2.disk(0), h2.disk(1)]);
      ok(h3, ['--assemble', '/dev/md0', h3.disk(0), h3.disk(1)]);
    }
  } else {
    if (mode === 'standalone-direct') writeFileSync(e.directFlag, '');
    else rmSync(e.directFlag, { force: true });
    ok(h1, ['--create', '/dev/md0', '--run', '--level=1', '--raid-devices=2', '--bitmap=internal', ...clean, ...disks]);
  }
}

/**
 * How node 1's daemon has the shared disks open, read from /proc (fd links and fdinfo flags):
 * 'direct', 'buffered' or 'mixed' (an O_EXCL claim fd kept next to the direct one counts as
 * unused: only the O_DIRECT ones carry I/O then).
 */
function memberOpenMode(e: Env): string {
  const pid = e.hosts[0].daemon!.proc.pid!;
  const seen: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    if (!target.startsWith(e.c.disks.sharedDir)) continue;
    const flags = parseInt(/flags:\s*([0-7]+)/.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1] ?? '0', 8);
    seen.push(`${target.slice(e.c.disks.sharedDir.length + 1)}:${flags & 0o40000 ? 'direct' : 'buffered'}`);
  }
  return seen.sort().join(' ');
}

/** CPU seconds (user + system) used so far by each node's daemon and by etcd, from /proc. */
function cpuSeconds(e: Env): number[] {
  const etcdPid = (e.c.etcd!.server as unknown as { proc?: { pid?: number } }).proc?.pid;
  const pids = [...e.hosts.map((h) => h.daemon!.proc.pid!), etcdPid ?? 0];
  return pids.map((pid) => {
    try {
      // fields after the command's closing parenthesis: utime and stime are the 12th and 13th
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return (Number(f[11]) + Number(f[12])) / 100;
    } catch {
      return NaN;
    }
  });
}

function tearDown(e: Env, mode: Mode): void {
  const [h1, h2, h3] = e.hosts;
  if (mode === 'clustered') {
    ok(h3, ['--stop', '/dev/md0']);
    ok(h2, ['--stop', '/dev/md0']);
  }
  ok(h1, ['--stop', '/dev/md0']);
  rmSync(e.directFlag, { force: true });
}

// ---------------------------------------------------------------------------------------------
// io

async function benchIo(quick: boolean): Promise<void> {
  const arrayMiB = quick ? 128 : 256;
  const reps = Number(process.env.TSMD_BENCH_REPS ?? (quick ? 1 : 3));
  const seconds = Number(process.env.TSMD_BENCH_SECONDS ?? (quick ? 1.5 : 3));
  console.log(`\nmd-cluster io: node 1 of 3 (two idle nodes joined) vs the same disks standalone; raid1 of 2 x ${arrayMiB} MiB, bitmap chunk 64 MiB (default), ` +
    `loop devices with direct I/O over files on ${'ext4/virtio'}; fio nbd engine, ${seconds} s runs, ${reps} rounds (load ${load()})`);
  const e = await startEnv((arrayMiB + 8) * MiB);
  const modes = (process.env.TSMD_BENCH_MODES ?? 'clustered,standalone-direct,standalone-buffered').split(',') as Mode[];
  const filter = process.env.TSMD_BENCH_CASES ? new RegExp(process.env.TSMD_BENCH_CASES) : null;
  const allCases = [
    { label: 'seq write 1M qd8', rw: 'write' as const, bs: '1m', iodepth: 8, pick: (r: { mbs: number }) => r.mbs, unit: 'MB/s' },
    { label: 'rand write 4K qd32', rw: 'randwrite' as const, bs: '4k', iodepth: 32, pick: (r: { iops: number }) => r.iops, unit: 'IOPS' },
  ];
  const cases = allCases.filter((c) => !filter || filter.test(c.label));
  const res = new Map<string, number[]>();
  /** per mode and round: CPU seconds of node 1, 2, 3 and etcd over the timed runs */
  const cpuBy = new Map<Mode, number[][]>();
  const key = (m: Mode, c: string) => `${m}/${c}`;
  try {
    const h1 = e.hosts[0];
    const sizeBytes = arrayMiB * MiB;
    for (let rep = 0; rep < reps; rep++) {
      // rotate the order: each mode runs first once over three rounds
      const order = [...modes.slice(rep % modes.length), ...modes.slice(0, rep % modes.length)];
      for (const mode of order) {
        setUp(e, mode, { assumeClean: true });
        try {
          const uri = h1.nbdUri('md0');
          // the first round writes the whole array once (not timed): no run meets unallocated blocks
          if (rep === 0 && mode === order[0]) await runFio(uri, { rw: 'write', bs: '1m', iodepth: 8, sizeBytes }, e.c.disks.dir);
          settle();
          profileMark(h1);
          if (rep === 0) console.log(`    ${mode}: node 1's member fds ${memberOpenMode(e)}`);
          const cpu0 = cpuSeconds(e);
          for (const c of cases) {
            const r = await runFio(uri, { rw: c.rw, bs: c.bs, iodepth: c.iodepth, sizeBytes, seconds }, e.c.disks.dir);
            settle();
            const k = key(mode, c.label);
            res.set(k, [...(res.get(k) ?? []), c.pick(r)]);
          }
          profileMark(h1);
          const cpu = cpuSeconds(e).map((x, i) => x - cpu0[i]!);
          cpuBy.set(mode, [...(cpuBy.get(mode) ?? []), cpu]);
        } finally {
          tearDown(e, mode);
        }
      }
    }
  } finally {
    await e.c.close();
  }
  for (const c of cases) {
    const cl = res.get(key('clustered', c.label)) ?? [];
    const sd = res.get(key('standalone-direct', c.label)) ?? [];
    const sb = res.get(key('standalone-buffered', c.label)) ?? [NaN];
    const ratios = cl.map((x, i) => x / sd[i]!);
    const f = (v: number) => (c.unit === 'MB/s' ? `${v.toFixed(0)} MB/s` : `${(v / 1000).toFixed(2)}k IOPS`);
    const alone = res.get(key('clustered-alone', c.label));
    if (alone && sd.length) {
      const ra = alone.map((x, i) => x / sd[i]!);
      console.log(`  ${c.label.padEnd(20)} clustered, node 1 alone ${f(median(alone))}: ratio to standalone O_DIRECT ${median(ra).toFixed(2)} [${Math.min(...ra).toFixed(2)}-${Math.max(...ra).toFixed(2)}]`);
    }
    const r = median(ratios);
    console.log(`  ${c.label.padEnd(20)} clustered ${f(median(cl)).padStart(11)}  standalone O_DIRECT ${f(median(sd)).padStart(11)}  ratio ${r.toFixed(2)} ` +
      `[${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}] (target >= 0.95) ${r >= 0.95 ? 'ok' : 'MISS'};  standalone buffered ${f(median(sb))} (ratio ${(median(cl) / median(sb)).toFixed(2)})`);
    console.log(`    runs: clustered ${cl.map((x) => f(x)).join(', ')}; direct ${sd.map((x) => f(x)).join(', ')}; buffered ${sb.map((x) => f(x)).join(', ')}`);
  }
  for (const [mode, rows] of cpuBy) {
    const med = [0, 1, 2, 3].map((i) => median(rows.map((r) => r[i]!)));
    console.log(`  CPU seconds over the ${cases.length} timed runs (${mode}, median of rounds): node1 ${med[0]!.toFixed(2)}, node2 ${med[1]!.toFixed(2)}, node3 ${med[2]!.toFixed(2)}, etcd ${med[3]!.toFixed(2)}`);
  }
  console.log(`  (load after: ${load()})`);
}

// ---------------------------------------------------------------------------------------------
// resync

/**
 * Resync throughput of md0 on node 1 from the moment the limit is lifted (every node joined by
 * then): sectors done after that point over the time until the job is over (its final flush and
 * superblocks included), the control socket polled every 10 ms.
 */
async function timedResync(e: Env, mode: Mode): Promise<{ mbs: number; sectors: number; kind: string }> {
  const [h1, h2, h3] = e.hosts;
  // slow until every node is in (as the mdadm tests lower speed_limit_max), then unthrottled
  ok(h1, ['--speed-limit-min=100', '--speed-limit-max=100']);
  setUp(e, mode, { assumeClean: false });
  if (mode === 'clustered') {
    await until('node 1 resyncing, nodes 2 and 3 pending', () => /resync =/.test(h1.mdstat()) && /PENDING/.test(h2.mdstat()) && /PENDING/.test(h3.mdstat()));
  } else {
    await until('node 1 resyncing', () => /resync =/.test(h1.mdstat()));
  }
  if (process.env.TSMD_BENCH_VERBOSE) console.log(`    ${mode}: node 1's member fds ${memberOpenMode(e)}`);
  const before = (await arrays(h1)).find((a) => a.mdName === 'md0')!;
  const history0 = before.syncHistory.length;
  profileMark(h1);
  ok(h1, ['--speed-limit-min=10000000', '--speed-limit-max=10000000']);
  const t0 = performance.now();
  const done0 = (await arrays(h1)).find((a) => a.mdName === 'md0')!.sync?.doneSectors ?? 0;
  let last: ArrayState | undefined;
  await until('resync done', async () => {
    last = (await arrays(h1)).find((a) => a.mdName === 'md0');
    return !!last && !last.syncBusy && last.syncHistory.length > history0;
  }, 300_000, 10);
  const secs = (performance.now() - t0) / 1000;
  profileMark(h1);
  const job = last!.syncHistory.at(-1)!;
  if (!job.completed) throw new Error(`${mode}: the resync did not complete: ${JSON.stringify(job)}`);
  const sectors = job.totalSectors - done0;
  if (mode === 'clustered') await until('nodes 2 and 3 idle', () => [h2, h3].every((h) => !/resync|PENDING|REMOTE/.test(h.mdstat())));
  if (process.env.TSMD_BENCH_VERBOSE) console.log(`    ${mode}: job ${JSON.stringify(job)}, from ${done0} sectors, ${secs.toFixed(3)} s after the limit was lifted`);
  return { mbs: (sectors * 512) / 1e6 / secs, sectors, kind: job.kind };
}

async function benchResync(quick: boolean): Promise<void> {
  const arrayMiB = Number(process.env.TSMD_BENCH_RESYNC_MIB ?? (quick ? 128 : 256));
  const reps = Number(process.env.TSMD_BENCH_REPS ?? (quick ? 1 : 3));
  console.log('\nmd-cluster resync: node 1 resyncs a fresh clustered raid1 (nodes 2, 3 joined, PENDING) vs the standalone resync of the same disks (members O_DIRECT on both); ' +
    `2 x ${arrayMiB} MiB, ${reps} rounds (load ${load()})`);
  const e = await startEnv((arrayMiB + 8) * MiB);
  const cl: number[] = [];
  const sd: number[] = [];
  const ratios: number[] = [];
  try {
    for (let rep = 0; rep < reps; rep++) {
      const order: Mode[] = rep % 2 ? ['standalone-direct', 'clustered'] : ['clustered', 'standalone-direct'];
      const got: Partial<Record<Mode, number>> = {};
      for (const mode of order) {
        try {
          const r = await timedResync(e, mode);
          got[mode] = r.mbs;
          console.log(`    ${mode}: ${r.mbs.toFixed(0)} MB/s over ${((r.sectors * 512) / MiB).toFixed(0)} MiB (${r.kind})`);
        } finally {
          tearDown(e, mode);
          settle();
        }
      }
      cl.push(got.clustered!);
      sd.push(got['standalone-direct']!);
      ratios.push(got.clustered! / got['standalone-direct']!);
    }
  } finally {
    await e.c.close();
  }
  const r = median(ratios);
  console.log(`  resync raid1          clustered ${median(cl).toFixed(0).padStart(5)} MB/s  standalone ${median(sd).toFixed(0).padStart(5)} MB/s  ratio ${r.toFixed(2)} ` +
    `[${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}] (target >= 0.8) ${r >= 0.8 ? 'ok' : 'MISS'}  (load after: ${load()})`);
}

// ---------------------------------------------------------------------------------------------
// meta

interface LockEvent {
  node: string;
  resource: string;
  from: string;
  to: string;
  startMs: number;
  ms: number;
}

const MODE_NAMES = ['NL', 'CR', 'CW', 'PR', 'PW', 'EX'];

/**
 * A Dlm that remembers the lockspaces it joined (the etcd backend's internals take them) and
 * times every conversion md-cluster makes on them into `events` (a round's timeline).
 */
function recording(d: EtcdDlm, events: LockEvent[]): { dlm: Dlm; spaces: Lockspace[] } {
  const spaces: Lockspace[] = [];
  const modeName = (m: number | null) => (m === null ? '-' : (MODE_NAMES[m] ?? String(m)));
  const dlm: Dlm = {
    nodeId: d.nodeId,
    join: async (o) => {
      const ls = await d.join(o);
      spaces.push(ls);
      const lock = async (resource: string, mode: LockMode, opts?: LockOptions): Promise<LockHandle> => {
        const h = await ls.lock(resource, mode, opts);
        const convert = h.convert.bind(h);
        Object.defineProperty(h, 'convert', {
          value: async (to: LockMode, co?: LockOptions): Promise<void> => {
            const from = modeName(h.mode);
            const startMs = performance.now();
            try {
              await convert(to, co);
            } finally {
              events.push({ node: d.nodeId, resource, from, to: modeName(to), startMs, ms: performance.now() - startMs });
            }
          },
        });
        return h;
      };
      return new Proxy(ls, {
        get: (t, prop) => {
          if (prop === 'lock') return lock;
          const v = Reflect.get(t, prop, t) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
        },
      });
    },
  };
  return { dlm, spaces };
}

async function benchMeta(quick: boolean): Promise<void> {
  const { EtcdServer } = await import('../test/helpers/etcd.js');
  const rounds = quick ? 40 : 200;
  console.log(`\nmd-cluster METADATA_UPDATED round, 3 nodes in one process (MdArray over memory disks, 3 EtcdDlm clients, one etcd on loopback), ${rounds} rounds (load ${load()})`);
  const server = await EtcdServer.start();
  const etcds: EtcdDlm[] = [];
  const nodes: MdArray[] = [];
  try {
    const devs = [0, 1].map((i) => new MemoryBlockDevice(`shared${i}`, 32 * MiB));
    await createArray(devs, {
      level: 1, raidDisks: 2, metadata: '1.2', setName: 'b:0', uuid: randomBytes(16), deviceUuids: devs.map(() => randomBytes(16)),
      bitmap: 'clustered', nodes: 4, clusterName: 'bench', bitmapChunkBytes: 64 * MiB, assumeClean: true, nowSeconds: Math.floor(Date.now() / 1000),
      members: devs.map((d) => ({ sizeSectors: Math.floor(d.sizeBytes / 512) })),
    }, { confirmOverwrite: async () => false, initialSync: false, clock });
    const prefix = `bench/${process.pid}`;
    const events: LockEvent[] = [];
    const recs = ['n1', 'n2', 'n3'].map((id) => {
      const d = new EtcdDlm({ clock, nodeId: id, endpoints: [server.clientUrl], prefix, leaseTtlSec: 10 });
      etcds.push(d);
      return recording(d, events);
    });
    for (const [i, r] of recs.entries()) {
      nodes.push(await MdArray.assemble(devs.map((d) => d.reopen()), {
        run: true, clock, log: () => {},
        cluster: { clusterName: 'bench', create: (info, host) => new MdCluster({ dlm: r.dlm, clock, info, host }) },
      }));
      void i;
    }
    // raw etcd transaction (compare + put), the baseline
    const kv = etcds[0]!.client.kv;
    const key = Buffer.from(`${prefix}/raw`);
    let rev = (await kv.put({ key, value: Buffer.from('x') })).header.revision;
    const txn: number[] = [];
    for (let i = 0; i < rounds + 20; i++) {
      const t0 = performance.now();
      const r = await kv.txn({
        compare: [{ key, target: 'Mod', result: 'Equal', mod_revision: rev }],
        success: [{ request_put: { key, value: Buffer.from(`t${i}`) } }],
        failure: [{ request_range: { key } }],
      });
      rev = r.header.revision;
      if (i >= 20) txn.push(performance.now() - t0);
    }
    const rt = (): number => Math.max(...recs.map((r, i) => etcds[i]!.internals(r.spaces[0]!).roundTrips));
    const lat: number[] = [];
    const trips: number[] = [];
    const tripsAll: number[] = [];
    const txns: number[] = [];
    const conflicts: number[] = [];
    const timelines: Array<{ t: number; t0: number; sender: string; events: LockEvent[] }> = [];
    let seed = 7;
    for (let i = 0; i < rounds + 10; i++) {
      await sleep(30); // the previous round's trailing operations (receivers re-arming) land everywhere
      const s = i < 10 ? 0 : (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 3;
      const r0 = rt();
      const tx0 = etcds.reduce((a, d) => a + d.stats.txns, 0);
      const cf0 = etcds.reduce((a, d) => a + d.stats.conflicts, 0);
      const t0 = performance.now();
      await nodes[s]!.meta.update(() => {});
      const t = performance.now() - t0;
      // the sender's clock when its round returns: the critical path (it saw every ack)
      const rSender = etcds[s]!.internals(recs[s]!.spaces[0]!).roundTrips;
      await sleep(30);
      const mine = events.splice(0).filter((ev) => ev.startMs >= t0 - 1);
      if (i < 10) continue;
      timelines.push({ t, t0, sender: `n${s + 1}`, events: mine });
      txns.push(etcds.reduce((a, d) => a + d.stats.txns, 0) - tx0);
      conflicts.push(etcds.reduce((a, d) => a + d.stats.conflicts, 0) - cf0);
      lat.push(t);
      trips.push(rSender - r0);
      tripsAll.push(rt() - r0);
    }
    const sbEvents = nodes.map((n) => n.meta.sb.events);
    if (!sbEvents.every((x) => x === sbEvents[0])) throw new Error(`nodes disagree on events after the rounds: ${sbEvents.join(', ')}`);
    const t50 = pct(txn, 50);
    console.log(`  raw etcd txn (compare + put)      p50 ${pct(txn, 50).toFixed(2)} ms  p99 ${pct(txn, 99).toFixed(2)} ms`);
    console.log(`  METADATA_UPDATED round            p50 ${pct(lat, 50).toFixed(2)} ms  p99 ${pct(lat, 99).toFixed(2)} ms  (${(pct(lat, 50) / t50).toFixed(1)}x raw txn p50)`);
    console.log(`  sequential etcd round trips per round (Lamport clock at the sender's return): median ${pct(trips, 50)}, min ${Math.min(...trips)}, max ${Math.max(...trips)}; ` +
      `with the receivers' re-arm after it (all nodes, quiescent): median ${pct(tripsAll, 50)}, max ${Math.max(...tripsAll)}`);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    console.log(`  etcd transactions per round (all nodes, the receivers' re-arm included): mean ${mean(txns).toFixed(1)}, of which failed compares (retried) ${mean(conflicts).toFixed(1)}`);
    // the round closest to the median, step by step (ms from its start): where the time goes
    const mid = [...timelines].sort((a, b) => Math.abs(a.t - pct(lat, 50)) - Math.abs(b.t - pct(lat, 50)))[0]!;
    console.log(`  the median round (${mid.t.toFixed(1)} ms, sender ${mid.sender}), its lock conversions [start +duration ms]:`);
    for (const ev of mid.events.sort((a, b) => a.startMs - b.startMs)) {
      console.log(`    ${ev.node}${ev.node === mid.sender ? '*' : ' '} ${`${ev.resource} ${ev.from}->${ev.to}`.padEnd(24)} [${(ev.startMs - mid.t0).toFixed(1).padStart(6)} +${ev.ms.toFixed(1)}]`);
    }
    console.log('  ' +
      `${(pct(lat, 50) / pct(trips, 50)).toFixed(2)} ms per round trip at p50  (load after: ${load()})`);
  } finally {
    for (const n of nodes) await n.close().catch(() => undefined);
    for (const d of etcds) d.close();
    await server.cleanup();
  }
}

// ---------------------------------------------------------------------------------------------
// kill

async function benchKill(quick: boolean): Promise<void> {
  for (const ttl of (process.env.TSMD_BENCH_TTL ?? (quick ? '5' : '5,10')).split(',').map(Number)) await benchKillTtl(quick, ttl);
}

async function benchKillTtl(quick: boolean, ttl: number): Promise<void> {
  const { NbdTestClient } = await import('../test/helpers/nbd-client.js');
  const reps = Number(process.env.TSMD_BENCH_REPS ?? (quick ? 2 : 5));
  console.log(`\nmd-cluster node death: kill -9 of node 3 (its slot dirty) to a survivor's sync starting, --etcd-lease-ttl=${ttl}, ${reps} repetitions (load ${load()})`);
  const e = await startEnv(72 * MiB, ['--etcd-lease-ttl', String(ttl)]);
  const [h1, h2, h3] = e.hosts;
  const times: number[] = [];
  try {
    setUp(e, 'clustered', { assumeClean: true });
    for (let rep = 0; rep < reps; rep++) {
      const hist0 = await Promise.all([h1, h2].map(async (h) => (await arrays(h)).find((a) => a.mdName === 'md0')!.syncHistory.length));
      const cl = await NbdTestClient.connect(h3.nbdPort, 'md0', h3.address);
      for (let i = 0; i < 8; i++) await cl.write(i * 8 * MiB, randomBytes(64 << 10));
      await cl.flush();
      cl.destroy();
      if (!(await arrays(h3))[0]!.bitmap?.dirty) throw new Error('node 3 has no dirty bit to hand over');
      const t0 = performance.now();
      await h3.daemon!.kill9();
      let who = '';
      await until('a survivor starts the resync of the dead slot', async () => {
        for (const [i, h] of [h1, h2].entries()) {
          const a = (await arrays(h)).find((x) => x.mdName === 'md0');
          if (a && (a.syncBusy || a.syncHistory.length > hist0[i]!)) who = h.name;
        }
        return who !== '';
      }, 120_000, 20);
      const ms = performance.now() - t0;
      times.push(ms);
      await until('survivors idle', async () => {
        for (const h of [h1, h2]) if ((await arrays(h)).find((x) => x.mdName === 'md0')?.syncBusy) return false;
        return true;
      });
      const jobs = await Promise.all([h1, h2].map(async (h, i) => (await arrays(h)).find((a) => a.mdName === 'md0')!.syncHistory.slice(hist0[i]!)));
      const what = jobs.map((js, i) => `node${i + 1}: ${js.map((j) => `${j.kind} ${((j.workedSectors * 512) / MiB).toFixed(0)} MiB`).join(', ') || 'none'}`).join('; ');
      console.log(`    rep ${rep + 1}: ${(ms / 1000).toFixed(2)} s (first seen on ${who}; ${what})`);
      // node 3 comes back and joins again
      await startNode(h3, ['--node-name', h3.name, '--cluster-name', 'bench', `--etcd=${e.c.etcdUrl(h3)}`, '--log-level', 'warn', '--etcd-lease-ttl', String(ttl)]);
      ok(h3, ['--assemble', '/dev/md0', h3.disk(0), h3.disk(1)]);
      await until('all idle', () => e.hosts.every((h) => !/resync|recovery|PENDING|REMOTE/.test(h.mdstat())));
    }
    tearDown(e, 'clustered');
  } finally {
    await e.c.close();
  }
  const s = times.map((x) => x / 1000);
  console.log(`  kill -9 to survivor resync start   min ${Math.min(...s).toFixed(2)} s  median ${median(s).toFixed(2)} s  max ${Math.max(...s).toFixed(2)} s  ` +
    `(lease TTL ${ttl} s: median - TTL = ${(median(s) - ttl).toFixed(2)} s)  (load after: ${load()})`);
}

// ---------------------------------------------------------------------------------------------

export async function runClusterBench(opts: { quick?: boolean } = {}): Promise<void> {
  const quick = !!opts.quick;
  const parts = (process.env.TSMD_BENCH_CLUSTER ?? 'io,resync,meta,kill').split(',');
  const { haveHosts } = (await import('../test/helpers/hosts.js')) as Hosts;
  const missing = ['fio', 'etcd'].filter((t) => !have(t));
  const hostsOk = haveHosts() && missing.length === 0;
  for (const p of parts) {
    if (p === 'meta') {
      if (have('etcd')) await benchMeta(quick);
      else console.log('\nmd-cluster meta: MISSING etcd (Debian etcd-server): skipped');
      continue;
    }
    if (!hostsOk) {
      console.log(`\nmd-cluster ${p}: needs root, the hosts harness's tools and ${missing.join(', ') || 'fio, etcd'}: skipped`);
      continue;
    }
    if (p === 'io') await benchIo(quick);
    else if (p === 'resync') await benchResync(quick);
    else if (p === 'kill') await benchKill(quick);
    else throw new Error(`TSMD_BENCH_CLUSTER: unknown part ${p} (io, resync, meta, kill)`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  runClusterBench({ quick: process.argv.includes('--quick') }).then(
    () => process.exit(0),
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
}
