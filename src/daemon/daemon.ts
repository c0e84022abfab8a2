/**
 * The tsmd node daemon: holds the running arrays (the kernel's role for mdadm), serves them over
 * NBD, answers mdadm commands on the control socket, keeps <run-dir>/mdstat current, exports
 * Prometheus metrics, and on SIGTERM/SIGINT stops every array cleanly.
 */
import { chmodSync, linkSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { Server } from 'node:net';
import { join, resolve } from 'node:path';
import { isatty } from 'node:tty';
import pino, { type DestinationStream, type Logger } from 'pino';
import pinoPretty from 'pino-pretty';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { detailOf, main, VERSION } from '../mdadm/main.js';
import { TsmdError } from '../errors.js';
import { defaultSyncThreads, SyncOffload } from '../raid/offload/bulk.js';
import { FaultyBlockDevice } from '../io/fault-device.js';
import type { MdArray } from '../md/array.js';
import { DEFAULT_SYNC_LIMITS, type SyncLimits } from '../md/sync.js';
import { levelByNumber } from '../raid/levels.js';
import { NbdServer } from '../nbd/server.js';
import type { BlockTarget, ExportRegistry, NbdExport } from '../nbd/target.js';
import { type ArrayState, controlCall, type ControlRequest, serveControl } from './control.js';
import { bootAssemble } from './boot-assemble.js';
import { mdstatText } from './mdstat-view.js';
import { ArrayRegistry, type RunningArray } from '../mdadm/registry.js';
import { applySystemSpeedLimits } from '../mdadm/live.js';
import { type ClusterConfig, describeCluster } from '../mdadm/cluster-config.js';
import { localNodeConfig } from './cluster-options.js';
import { controlPath, defaultRunDir } from './run-dir.js';

/** (where the CLI finds a daemon: run-dir.ts, kept importable from here) */
export { controlPath, defaultRunDir };

export interface DaemonOptions {
  runDir: string;
  /** NBD listener; false = none. Default 127.0.0.1:10809 */
  nbd?: { host: string; port: number; path?: string; tls?: { key: string; cert: string; ca?: string; require: boolean } } | false;
  /** Prometheus metrics listener; default none */
  metrics?: { host: string; port: number } | false;
  logLevel?: string;
  /** log destination (default stderr) */
  logFd?: number;
  /** sync speed limits for every array, KiB/s (md's speed_limit_min / speed_limit_max) */
  syncLimits?: SyncLimits;
  /** wrap member devices so tests can inject I/O errors through the control socket */
  faultInjection?: boolean;
  /** helper threads for resync / recovery / check (raid/offload/bulk.ts); default defaultSyncThreads(), 0 = none */
  syncThreads?: number;
  /**
   * At start, assemble the ARRAY lines of mdadm.conf (config: that file, else mdadm's lookup),
   * as `mdadm --assemble --scan` does at boot (./boot-assemble.ts). Default: off.
   */
  assemble?: { config?: string } | false;
  /**
   * This node in its cluster (./cluster-options.ts builds it from the flags): node name, cluster
   * name (null: none), the DLM (null: no --etcd) and its lease TTL. Default: the host name, no
   * cluster, no DLM. The daemon closes the DLM when it stops.
   */
  cluster?: ClusterConfig;
}

function arrayState(r: RunningArray): ArrayState {
  const a = r.array;
  const cur = a.sync.current;
  const reshaped = a.reshapeActive ? a.reshape.progress() : null;
  return {
    mdName: r.mdName,
    devPath: r.devPath.startsWith('/dev/') ? r.devPath : `/dev/${r.devPath}`,
    uuid: a.uuid,
    level: a.level,
    raidDisks: a.raidDisks,
    degraded: a.degraded,
    missing: a.redundant ? a.raidDisks - a.workingSlots.length : 0,
    members: a.members.map((m) => ({ path: m.dev.name, slot: m.slot, faulty: m.faulty, rebuilding: m.slot !== null && m.recoveryOffset !== null })),
    sync: cur ? { kind: cur.kind, doneSectors: cur.doneSectors, totalSectors: cur.totalSectors, speedKiBs: cur.speedKiBs } : null,
    syncBusy: a.sync.busy,
    reshape: a.reshapeActive
      ? {
          positionSectors: Number(a.sb.reshapePosition),
          running: a.reshape.active,
          frozen: a.reshape.frozen,
          stuck: a.reshapeStuck,
          doneSectors: reshaped?.doneSectors ?? null,
          totalSectors: reshaped?.totalSectors ?? null,
        }
      : null,
    lastReshape: a.reshape.lastRun ? { ...a.reshape.lastRun } : null,
    mismatchCnt: a.sync.mismatchCnt,
    syncHistory: a.sync.history.map((h) => ({ ...h })),
    bitmap: a.bitmap ? { chunkSectors: a.bitmap.chunkSectors, dirty: a.bitmap.dirtyCount, nbits: a.bitmap.nbits } : null,
    cluster: a.clustered ? { slot: a.bitmapSlot, remoteSync: a.remoteSync, pending: a.syncPendingCluster, fenced: a.fenced } : null,
  };
}

/** md's safe_mode_delay: an array idle this long is marked clean (kernel default 200 ms). */
export const SAFE_MODE_DELAY_MS = 200;
/**
 * While a resync/recovery/check/reshape runs, <run-dir>/mdstat is rewritten this often: the
 * kernel's /proc/mdstat is computed when read, so its progress line is always current; a file
 * written only when a sync starts or ends said 0.0% while --detail said 23%.
 */
export const MDSTAT_PROGRESS_MS = 500;

/**
 * Default run directory: TSMD_RUN_DIR, else /run/tsmd for root, else a per-user temp dir.
 * Under the test suite (TSMD_UNDER_TEST, set by test/helpers/isolate.ts) there is no default:
 * it would be the user's own daemon (`npm start`), which a test must never drive.
 */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** MdArray as an NBD block target, with I/O metrics. */
function targetOf(r: RunningArray, m: DaemonMetrics): BlockTarget {
  const arr: MdArray = r.array;
  // metric children bound once per operation: no label objects or validation per request
  const bind = (op: string) => {
    const labels = { array: r.mdName, op };
    return { latency: m.latency.labels(labels), ops: m.ops.labels(labels), bytes: m.bytes.labels(labels), errors: m.errors.labels(labels) };
  };
  const ops = { read: bind('read'), write: bind('write'), flush: bind('flush'), write_zeroes: bind('write_zeroes') };
  const timed = async <T>(op: keyof typeof ops, bytes: number, fn: () => Promise<T>): Promise<T> => {
    const c = ops[op];
    const t0 = performance.now();
    try {
      const v = await fn();
      c.ops.inc();
      if (bytes) c.bytes.inc(bytes);
      return v;
    } catch (e) {
      c.errors.inc();
      throw e;
    } finally {
      c.latency.observe((performance.now() - t0) / 1000);
    }
  };
  return {
    get sizeBytes() {
      return arr.sizeBytes;
    },
    get readOnly() {
      return arr.isReadOnly;
    },
    blockSize: { min: 512, preferred: 4096, max: 32 * 1024 * 1024 },
    read: (buf, off) => timed('read', buf.length, () => arr.read(buf, off)),
    write: (buf, off) => timed('write', buf.length, () => arr.write(buf, off)),
    flush: () => timed('flush', 0, () => arr.flush()),
    // TRIM is a hint: md passes discards down, but contents are undefined afterwards either way
    trim: async () => {},
    writeZeroes: (off, len) =>
      timed('write_zeroes', len, async () => {
        const chunk = new Uint8Array(Math.min(len, 1 << 20));
        for (let done = 0; done < len; done += chunk.length) {
          await arr.write(chunk.subarray(0, Math.min(chunk.length, len - done)), off + done);
        }
      }),
    cache: async () => {},
  };
}

interface DaemonMetrics {
  registry: Registry;
  ops: Counter<string>;
  bytes: Counter<string>;
  errors: Counter<string>;
  latency: Histogram<string>;
}

function makeMetrics(d: Daemon): DaemonMetrics {
  const registry = new Registry();
  // no prefix: process_* and nodejs_* are the names every Prometheus client library gives its
  // process metrics (client_golang, client_python, prom-client), so stock dashboards and alerts
  // (process_resident_memory_bytes, process_cpu_seconds_total) work; the job label says it is
  // tsmd. prom-client's prefix is prepended to the full names: 'tsmd_process_' made
  // tsmd_process_process_cpu_seconds_total.
  collectDefaultMetrics({ register: registry });
  const ops = new Counter({ name: 'tsmd_io_ops_total', help: 'Completed I/O requests by array and operation', labelNames: ['array', 'op'], registers: [registry] });
  const bytes = new Counter({ name: 'tsmd_io_bytes_total', help: 'Bytes transferred by array and operation', labelNames: ['array', 'op'], registers: [registry] });
  const errors = new Counter({ name: 'tsmd_io_errors_total', help: 'Failed I/O requests by array and operation', labelNames: ['array', 'op'], registers: [registry] });
  const latency = new Histogram({
    name: 'tsmd_io_latency_seconds',
    help: 'I/O latency by array and operation',
    labelNames: ['array', 'op'],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
  new Gauge({
    name: 'tsmd_array_info',
    help: 'Running arrays (value 1) with their level and state',
    labelNames: ['array', 'name', 'level', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of d.registry.list()) {
        const a = r.array;
        const state = a.reshapeActive ? 'reshaping' : a.degraded ? 'degraded' : a.isReadOnly ? 'readonly' : a.isClean ? 'clean' : 'active';
        this.set({ array: r.mdName, name: r.exportName, level: levelByNumber(a.level).name, state }, 1);
      }
    },
  });
  new Gauge({
    name: 'tsmd_array_degraded',
    help: 'Number of missing or failed slots (0 = fully redundant)',
    labelNames: ['array'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of d.registry.list()) this.set({ array: r.mdName }, r.array.raidDisks - r.array.workingSlots.length);
    },
  });
  new Gauge({
    name: 'tsmd_array_members',
    help: 'Members by state (active, spare, faulty, rebuilding)',
    labelNames: ['array', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of d.registry.list()) {
        const c = { active: 0, spare: 0, faulty: 0, rebuilding: 0 };
        for (const m of r.array.members) {
          if (m.faulty) c.faulty++;
          else if (m.slot === null) c.spare++;
          else if (m.recoveryOffset !== null) c.rebuilding++;
          else c.active++;
        }
        for (const [state, n] of Object.entries(c)) this.set({ array: r.mdName, state }, n);
      }
    },
  });
  new Gauge({
    name: 'tsmd_array_size_bytes',
    help: 'Array size in bytes',
    labelNames: ['array'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of d.registry.list()) this.set({ array: r.mdName }, r.array.sizeBytes);
    },
  });
  new Gauge({
    name: 'tsmd_array_sync_progress_ratio',
    help: 'Progress of the running resync/recovery/reshape (0..1); absent when idle',
    labelNames: ['array', 'action'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of d.registry.list()) {
        const a = r.array;
        if (a.reshapeActive) {
          const dataDisks = Math.max(1, a.raidDisks - (a.sb.newLevel === 6 ? 2 : a.sb.newLevel >= 4 ? 1 : 0));
          this.set({ array: r.mdName, action: 'reshape' }, Number(a.sb.reshapePosition) / dataDisks / Math.max(1, Number(a.sb.size)));
        }
      }
    },
  });
  new Gauge({
    name: 'tsmd_nbd_connections',
    help: 'Open NBD connections',
    registers: [registry],
    collect() {
      this.set(d.nbd?.connections ?? 0);
    },
  });
  return { registry, ops, bytes, errors, latency };
}

/**
 * Where the log goes: JSON lines (for journald, files, log shippers), except on a terminal,
 * where a person reads it: pino-pretty's one line per message, written synchronously as the
 * JSON destination is (a crash must not lose its last lines).
 */
function logDestination(fd: number): DestinationStream {
  if (!isatty(fd)) return pino.destination({ fd, sync: true });
  return pinoPretty({ destination: fd, sync: true, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'hostname' });
}

export class Daemon {
  readonly runDir: string;
  readonly registry = new ArrayRegistry();
  readonly log: Logger;
  nbd: NbdServer | null = null;
  nbdAddress: { host?: string; port?: number; path?: string } | null = null;
  metricsAddress: { host: string; port: number } | null = null;
  private control: Server | null = null;
  private http: HttpServer | null = null;
  private metrics: DaemonMetrics;
  private stopping: Promise<void> | null = null;
  /** management commands run one at a time (as mdadm's would against the kernel) */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly targets = new Map<string, BlockTarget>();
  private safeModeTimer: NodeJS.Timeout | null = null;
  private progressTimer: NodeJS.Timeout | null = null;
  private readonly lastSeq = new Map<string, number>();
  readonly syncLimits: SyncLimits;
  private readonly faults: Map<string, FaultyBlockDevice> | null;
  readonly syncOffload: SyncOffload | null;
  readonly cluster: ClusterConfig;

  private constructor(opts: DaemonOptions) {
    this.runDir = resolve(opts.runDir);
    this.log = pino({ name: 'tsmd', level: opts.logLevel ?? 'info' }, logDestination(opts.logFd ?? 2));
    this.metrics = makeMetrics(this);
    // one object for every array, changed in place by `tsmd --speed-limit-*` (SyncEngine.system)
    this.syncLimits = { ...(opts.syncLimits ?? DEFAULT_SYNC_LIMITS) };
    this.faults = opts.faultInjection ? new Map() : null;
    const threads = opts.syncThreads ?? defaultSyncThreads();
    this.syncOffload = threads > 0 ? new SyncOffload(threads) : null;
    this.cluster = opts.cluster ?? localNodeConfig();
  }

  get pidPath(): string {
    return join(this.runDir, 'tsmd.pid');
  }

  get mdstatPath(): string {
    return join(this.runDir, 'mdstat');
  }

  get controlPath(): string {
    return controlPath(this.runDir);
  }

  get infoPath(): string {
    return join(this.runDir, 'daemon.json');
  }

  /** Take the run directory: refuse when another daemon owns it, clean up after a dead one. */
  private async claimRunDir(): Promise<void> {
    mkdirSync(this.runDir, { recursive: true, mode: 0o700 });
    // the pid file appears with its content or not at all (a link of a finished temp file):
    // a second daemon must never read it empty and take it for a dead one's
    const tmp = `${this.pidPath}.${process.pid}.tmp`;
    writeFileSync(tmp, `${process.pid}\n`, { mode: 0o644 });
    try {
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          linkSync(tmp, this.pidPath);
          return;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        }
        const pid = Number.parseInt(readFileSync(this.pidPath, 'utf8').trim(), 10);
        let answering: boolean;
        try {
          await controlCall(this.controlPath, { op: 'ping' }, 2000);
          answering = true;
        } catch {
          answering = false;
        }
        if ((Number.isFinite(pid) && pid !== process.pid && pidAlive(pid)) || answering) {
          throw new TsmdError('EBUSY', `another tsmd daemon (pid ${pid}) is running on ${this.runDir}`);
        }
        // not `pid`: pino puts this process's pid there already
        this.log.warn({ stalePid: pid }, 'removing the pid file and socket of a daemon that is gone');
        for (const p of [this.pidPath, this.controlPath]) {
          try {
            unlinkSync(p);
          } catch {
            // already gone
          }
        }
      }
    } finally {
      unlinkSync(tmp);
    }
    throw new TsmdError('EBUSY', `cannot take ${this.pidPath}`);
  }

  static async start(opts: DaemonOptions): Promise<Daemon> {
    const d = new Daemon(opts);
    await d.claimRunDir();
    try {
      try {
        unlinkSync(d.controlPath);
      } catch {
        // no stale socket
      }
      d.control = serveControl(d.controlPath, (req) => d.handle(req), (e) => d.log.error({ err: e }, 'control request failed'));
      await new Promise<void>((res, rej) => {
        d.control!.once('error', rej);
        d.control!.listen(d.controlPath, () => res());
      });
      chmodSync(d.controlPath, 0o600);
      d.registry.onChange(() => d.onRegistryChange());
      if (opts.nbd !== false) {
        const nbdOpts = opts.nbd ?? { host: '127.0.0.1', port: 10809 };
        d.nbd = new NbdServer({
          exports: d.exportRegistry(),
          // --tls-ca means clients must show a certificate that CA signed (nbd-server, qemu-nbd)
          tls: nbdOpts.tls && { ...nbdOpts.tls, verifyPeer: nbdOpts.tls.ca !== undefined },
          log: (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) =>
            d.log[level]({ ...fields, component: 'nbd' }, msg),
          // a broken invariant under NBD I/O: the arrays' state is not to be trusted, so the
          // daemon dies (a kernel BUG() in md's place), with the reason in its log first
          onBug: (e) => {
            d.log.fatal({ err: e, component: 'nbd' }, 'tsmd invariant violated; the daemon exits');
            process.nextTick(() => {
              throw e;
            });
          },
        });
        d.nbdAddress = await d.nbd.listen({ host: nbdOpts.host, port: nbdOpts.port });
        if (nbdOpts.path) await d.nbd.listen({ path: nbdOpts.path });
      }
      if (opts.metrics) {
        d.http = createHttpServer((req, res) => {
          if (req.url !== '/metrics') {
            res.writeHead(404).end('not found\n');
            return;
          }
          d.metrics.registry.metrics().then(
            (text) => res.writeHead(200, { 'content-type': d.metrics.registry.contentType }).end(text),
            (e: unknown) => res.writeHead(500).end(String(e)),
          );
        });
        await new Promise<void>((res) => d.http!.listen(opts.metrics ? opts.metrics.port : 0, opts.metrics ? opts.metrics.host : '127.0.0.1', () => res()));
        const a = d.http.address();
        if (a && typeof a === 'object') d.metricsAddress = { host: a.address, port: a.port };
      }
      d.safeModeTimer = setInterval(() => d.safeModeTick(), SAFE_MODE_DELAY_MS);
      d.safeModeTimer.unref();
      d.progressTimer = setInterval(() => d.progressTick(), MDSTAT_PROGRESS_MS);
      d.progressTimer.unref();
      d.writeMdstat();
      // boot assembly before daemon.json announces the daemon: whoever waits for it sees the arrays
      if (opts.assemble) {
        await bootAssemble(d.log, opts.assemble.config, process.env, (argv) => {
          const run = d.queue.then(() => d.runMdadm({ id: 0, op: 'mdadm', argv }));
          d.queue = run.catch(() => {});
          return run;
        });
      }
      // where this daemon listens (ports may have been chosen by the OS)
      writeWhole(d.infoPath, `${JSON.stringify({ pid: process.pid, version: VERSION, nbd: d.nbdAddress, metrics: d.metricsAddress, control: d.controlPath, cluster: describeCluster(d.cluster) })}\n`);
      d.log.info({ runDir: d.runDir, nbd: d.nbdAddress, metrics: d.metricsAddress, syncThreads: d.syncOffload?.threads ?? 0, cluster: describeCluster(d.cluster) }, 'tsmd daemon started');
      d.probeDlm();
      return d;
    } catch (e) {
      await d.stop().catch(() => {});
      throw e;
    }
  }

  /**
   * Is etcd there? Asked once, in the background, and only logged: the daemon does not wait for
   * the cluster stack, and a node whose etcd is down keeps serving its local arrays (an md node
   * whose dlm_controld is down does too); assembling a clustered array fails then, with the
   * DLM's error. A warning at start tells the operator before that happens.
   */
  private probeDlm(): void {
    const dlm = this.cluster.dlm;
    if (!dlm?.probe) return;
    const endpoints = this.cluster.etcd?.endpoints;
    dlm.probe().then(
      () => this.log.info({ endpoints }, 'etcd answers: clustered arrays can be assembled'),
      (e: unknown) =>
        this.log.warn({ endpoints, err: e instanceof Error ? e.message : String(e) }, 'etcd does not answer: local arrays run, clustered arrays cannot be assembled until it does'),
    );
  }

  private exportRegistry(): ExportRegistry {
    const toExport = (r: RunningArray): NbdExport => {
      let t = this.targets.get(r.mdName);
      if (!t) {
        t = targetOf(r, this.metrics);
        this.targets.set(r.mdName, t);
      }
      const lvl = levelByNumber(r.array.level).name;
      return { name: r.exportName, description: `${r.devPath} (${lvl}, ${r.array.raidDisks} devices, uuid ${r.array.uuid})`, target: t };
    };
    return {
      list: () => this.registry.list().map(toExport),
      get: (name: string) => {
        const r = this.registry.list().find((x) => x.exportName === name || x.mdName === name);
        return r ? toExport(r) : undefined;
      },
    };
  }

  private onRegistryChange(): void {
    const live = new Set(this.registry.list().map((r) => r.mdName));
    for (const k of [...this.targets.keys()]) if (!live.has(k)) this.targets.delete(k);
    this.writeMdstat();
  }

  /** md's safe mode: an array with no write for a whole period is marked clean. */
  private safeModeTick(): void {
    for (const r of this.registry.list()) {
      const seq = r.array.writeSequence;
      const idle = this.lastSeq.get(r.mdName) === seq;
      this.lastSeq.set(r.mdName, seq);
      if (idle && r.array.isDirty) {
        r.array.markClean().then(
          () => this.writeMdstat(),
          (e: unknown) => this.log.error({ err: e, array: r.mdName }, 'marking the array clean failed'),
        );
      }
    }
  }

  /** A sync is running (or just ended): the mdstat file shows where it is, as --detail does. */
  private progressTick(): void {
    const busy = this.registry.list().some((r) => r.array.sync.current !== null || r.array.reshapeActive);
    if (busy || this.syncWasRunning) this.writeMdstat();
    this.syncWasRunning = busy;
  }

  private syncWasRunning = false;

  mdstat(): string {
    return mdstatText(this.registry.list());
  }

  /** Rewrite <run-dir>/mdstat atomically (write + rename), as readers expect a whole file. */
  writeMdstat(): void {
    try {
      writeWhole(this.mdstatPath, this.mdstat());
    } catch (e) {
      this.log.error({ err: e }, 'cannot write the mdstat file');
    }
  }

  private async handle(req: ControlRequest) {
    switch (req.op) {
      case 'ping':
        return { pid: process.pid, version: VERSION };
      case 'shutdown':
        setImmediate(() => void this.stop());
        return { code: 0 };
      case 'fault': {
        const f = req.fault;
        const dev = f ? this.faults?.get(f.path) : undefined;
        if (!this.faults) return { code: 1, stderr: 'fault injection is off (tsmd daemon --fault-injection)\n' };
        if (!f || !dev) return { code: 1, stderr: `no member device ${f?.path ?? '(none)'} is open\n` };
        if (f.kind === 'vanish') dev.vanish();
        else if (f.kind === 'clear') {
          dev.clearFaults();
          dev.restore();
        } else dev.addFault({ op: f.kind, startBytes: f.startBytes ?? 0, endBytes: f.endBytes ?? dev.sizeBytes, count: f.count ?? Infinity });
        this.log.warn({ fault: f }, 'fault injected');
        return { code: 0 };
      }
      case 'speed-limits': {
        // md's sysctl write: at once, not behind a queued command; the arrays hold this object
        const before = { ...this.syncLimits };
        const now = applySystemSpeedLimits(this.syncLimits, req.speedLimits ?? {});
        if (before.minKiBs !== now.minKiBs || before.maxKiBs !== now.maxKiBs) this.log.info({ before, now }, 'sync speed limits changed');
        return { code: 0, speedLimits: now };
      }
      case 'arrays':
        // what --wait and --monitor poll: answered at once, outside the command queue
        return { code: 0, arrays: this.registry.list().map(arrayState) };
      case 'mdadm': {
        const run = this.queue.then(() => this.runMdadm(req));
        this.queue = run.catch(() => {});
        return run;
      }
      default:
        throw new TsmdError('EINVAL', `unknown control operation ${String((req as { op: unknown }).op)}`);
    }
  }

  private async runMdadm(req: ControlRequest): Promise<{ code: number; stdout: string; stderr: string }> {
    let stdout = '';
    let stderr = '';
    const env = { ...process.env, ...(req.env ?? {}) };
    const code = await main(
      req.argv ?? [],
      {
        out: (s) => {
          stdout += s;
        },
        err: (s) => {
          stderr += s;
        },
        interactive: false,
        ask: async () => 'n',
        env,
      },
      {
        registry: this.registry,
        daemon: true,
        detailOf,
        mdstat: () => this.mdstat(),
        cwd: req.cwd,
        // md's printk level carried over: a failed member is an error, not news
        arrayLog: (md, msg, level = 'info') => this.log[level]({ array: md }, msg),
        syncLimits: this.syncLimits,
        syncOffload: this.syncOffload,
        cluster: this.cluster,
        changed: () => this.writeMdstat(),
        mapDir: this.runDir,
        wrapDevice: this.faults
          ? (dev) => {
              const f = new FaultyBlockDevice(dev);
              this.faults!.set(dev.name, f);
              return f;
            }
          : undefined,
      },
    );
    this.log.info({ argv: req.argv, code }, 'mdadm command');
    this.writeMdstat();
    return { code, stdout, stderr };
  }

  /** Stop everything: NBD (in-flight requests finish), arrays (clean superblocks), files. */
  stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = (async () => {
        this.log.info('stopping');
        if (this.safeModeTimer) clearInterval(this.safeModeTimer);
        if (this.progressTimer) clearInterval(this.progressTimer);
        if (this.nbd) await this.nbd.close().catch((e: unknown) => this.log.error({ err: e }, 'nbd close'));
        if (this.control) await new Promise<void>((res) => this.control!.close(() => res()));
        if (this.http) await new Promise<void>((res) => this.http!.close(() => res()));
        await this.queue.catch(() => {});
        for (const r of this.registry.list()) {
          try {
            await r.array.close();
            this.log.info({ array: r.mdName }, 'array stopped cleanly');
          } catch (e) {
            this.log.error({ err: e, array: r.mdName }, 'array stop failed');
          }
          this.registry.remove(r.mdName);
        }
        await this.syncOffload?.close();
        // after the arrays: a clustered array leaves its lockspace when it stops
        this.cluster.dlm?.close?.();
        for (const p of [this.controlPath, this.pidPath, this.infoPath, `${this.infoPath}.tmp`, this.mdstatPath, `${this.mdstatPath}.tmp`]) {
          try {
            unlinkSync(p);
          } catch {
            // not there
          }
        }
        this.log.info('stopped');
        this.log.flush?.();
      })();
    }
    return this.stopping;
  }
}

/** Replace a file whole (write `<path>.tmp`, rename): whoever reads it never sees half of it. */
function writeWhole(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}
