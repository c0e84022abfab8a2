/**
 * bin/tsmd: `tsmd daemon ...` runs the node daemon; any other command is mdadm's grammar. When
 * a daemon answers on the run directory's control socket, the command runs there (where the
 * arrays live) and its output is printed here; otherwise it runs in this process.
 */
import { existsSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline/promises';
import type cliProgress from 'cli-progress';
import { deliver, MonitorState } from './monitor.js';
import { finalProgress, type WaitProgress, waitLine } from './progress.js';
import type { ArrayState } from '../daemon/control.js';
import { controlCall } from '../daemon/control.js';
import type { Daemon } from '../daemon/daemon.js';
import { controlPath, defaultRunDir } from '../daemon/run-dir.js';
import { TsmdError } from '../errors.js';
import { openDevice } from '../io/file-device.js';
import { detectUse } from '../md/create.js';
import { parseArgs, UsageError } from '../mdadm/args.js';
import { SystemClock } from '../env/clock.js';
import { checkMonitor, exitCodeOf, type Io, main, monitorConf, VERSION } from '../mdadm/main.js';
import { MIN_ABOVE_MAX, parseSpeedLimit, speedLimitsText } from '../mdadm/live.js';

/** The terminal's Io for the mdadm operations: stdout, stderr, questions on stdin. */
function processIo(): Io {
  return {
    out: (s) => process.stdout.write(s),
    err: (s) => process.stderr.write(s),
    interactive: !!process.stdin.isTTY,
    ask: async (q) => {
      const rl = createInterface({ input: process.stdin, output: process.stderr });
      try {
        return await rl.question(q);
      } finally {
        rl.close();
      }
    },
    env: process.env,
  };
}

const DAEMON_USAGE = `Usage: tsmd daemon [options]

  --run-dir=DIR        control socket, pid file and mdstat live here (TSMD_RUN_DIR)
  --listen=HOST:PORT   NBD listener (default 127.0.0.1:10809; port 0 = any free port)
  --unix=PATH          also serve NBD on a Unix socket
  --no-nbd             do not serve NBD
  --tls-cert=FILE --tls-key=FILE [--tls-ca=FILE] [--tls=require]
                       NBD over TLS (x509); --tls=require refuses plain clients;
                       with --tls-ca, clients must present a certificate signed by
                       that CA (no certificate or another CA's: refused), as
                       nbd-server and qemu-nbd do
  --metrics=HOST:PORT  Prometheus metrics on http://HOST:PORT/metrics
  --log-level=LEVEL    pino level (info)
  --speed-limit-min=K  resync/recovery/check speed always allowed, KiB/s (md default 1000)
  --speed-limit-max=K  resync/recovery/check speed never exceeded, KiB/s (md default 200000)
  --config=FILE        mdadm.conf for the assembly at start (default TSMD_CONF,
                       /etc/mdadm/mdadm.conf, /etc/mdadm.conf)
  --no-assemble        do not assemble at start (also TSMD_AUTO_ASSEMBLE=0). By default the
                       daemon starts the arrays of the config's ARRAY lines, as
                       mdadm --assemble --scan at boot: members from devices= or the DEVICE
                       globs, matched by UUID=/name=; an array missing members is not started
                       (assemble it by hand with --run); one log line per array

 Cluster (md-cluster: clustered raid1/raid10 shared by several nodes; see docs/)
  --node-name=NAME     this node's name in the cluster, unique (default: the host name)
  --cluster-name=NAME  the cluster this node belongs to (corosync's totem.cluster_name):
                       --create --bitmap=clustered writes it, and clustered arrays whose
                       bitmap names another cluster are not assembled here. None: no cluster
  --etcd=URL[,URL...]  the DLM's etcd endpoints, http(s)://HOST:PORT (needs --cluster-name).
                       etcd is not contacted at start beyond one probe: a warning when it does
                       not answer; local arrays run anyway, clustered ones fail to assemble
  --etcd-ca=FILE --etcd-cert=FILE --etcd-key=FILE
                       TLS to etcd (https:// endpoints): etcd's CA; a client certificate and key
  --etcd-user=USER     etcd authentication; the password comes from --etcd-password-file=FILE
                       or the TSMD_ETCD_PASSWORD environment variable, never the command line
  --etcd-lease-ttl=SEC the DLM lease TTL (default 10): a dead node's locks are released, and a
                       node cut off from etcd fences itself, within this many seconds

  --fault-injection    (tests) member devices accept injected I/O errors over the control socket
  --demo[=DIR]         create (first start) or assemble a RAID5 of four 64 MiB sparse files
                       in DIR (default ./demo-data) and export it as md0
`;

function takeOpt(args: string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === `--${name}`) {
      const v = args[i + 1];
      args.splice(i, 2);
      return v;
    }
    if (a.startsWith(`--${name}=`)) {
      args.splice(i, 1);
      return a.slice(name.length + 3);
    }
  }
  return undefined;
}

function takeFlag(args: string[], name: string): boolean {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return false;
  args.splice(i, 1);
  return true;
}

function hostPort(text: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  if (!m) throw new UsageError(`${what} wants HOST:PORT, got ${text}`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port: Number(m[3]) };
}

async function runDaemon(args: string[]): Promise<number> {
  // the daemon's own modules (pino, prom-client, etcd3) load only here: every other command is
  // a client of a running daemon and starts without them
  const { Daemon } = await import('../daemon/daemon.js');
  const { clusterConfigFromFlags, PASSWORD_ON_ARGV } = await import('../daemon/cluster-options.js');
  const io = processIo();
  if (takeFlag(args, 'help')) {
    io.out(DAEMON_USAGE);
    return 0;
  }
  const runDir = resolve(takeOpt(args, 'run-dir') ?? defaultRunDir());
  const listen = takeOpt(args, 'listen');
  const unix = takeOpt(args, 'unix');
  const noNbd = takeFlag(args, 'no-nbd');
  const cert = takeOpt(args, 'tls-cert');
  const key = takeOpt(args, 'tls-key');
  const ca = takeOpt(args, 'tls-ca');
  const tlsMode = takeOpt(args, 'tls');
  const metrics = takeOpt(args, 'metrics');
  const logLevel = takeOpt(args, 'log-level');
  const speedMin = takeOpt(args, 'speed-limit-min');
  const speedMax = takeOpt(args, 'speed-limit-max');
  const kibs = (v: string | undefined, name: string, dflt: number) => (v === undefined ? dflt : (parseSpeedLimit(name, v, false) as number));
  const syncLimits = { minKiBs: kibs(speedMin, 'speed-limit-min', 1000), maxKiBs: kibs(speedMax, 'speed-limit-max', 200_000) };
  // (the password file first: takeOpt('etcd-password') must not see --etcd-password-file)
  const clusterFlags = {
    nodeName: takeOpt(args, 'node-name'),
    clusterName: takeOpt(args, 'cluster-name'),
    etcdCa: takeOpt(args, 'etcd-ca'),
    etcdCert: takeOpt(args, 'etcd-cert'),
    etcdKey: takeOpt(args, 'etcd-key'),
    etcdUser: takeOpt(args, 'etcd-user'),
    etcdPasswordFile: takeOpt(args, 'etcd-password-file'),
    etcdLeaseTtl: takeOpt(args, 'etcd-lease-ttl'),
    etcd: takeOpt(args, 'etcd'),
  };
  // never echo the value: the message would put the password in a log
  if (args.some((x) => x === '--etcd-password' || x.startsWith('--etcd-password='))) throw new UsageError(PASSWORD_ON_ARGV);
  const faultInjection = takeFlag(args, 'fault-injection');
  const config = takeOpt(args, 'config');
  const noAssemble = takeFlag(args, 'no-assemble') || process.env.TSMD_AUTO_ASSEMBLE === '0';
  let demo: string | undefined;
  const di = args.findIndex((a) => a === '--demo' || a.startsWith('--demo='));
  if (di >= 0) {
    demo = args[di]!.includes('=') ? args[di]!.slice(7) : 'demo-data';
    args.splice(di, 1);
  }
  if (args.length) throw new UsageError(`tsmd daemon: unknown argument ${args[0]} (see tsmd daemon --help)`);
  if ((cert && !key) || (key && !cert)) throw new UsageError('--tls-cert and --tls-key go together');
  if (tlsMode && tlsMode !== 'require' && tlsMode !== 'on') throw new UsageError('--tls is "on" or "require"');
  const tls = cert && key ? { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8'), ca: ca ? readFileSync(ca, 'utf8') : undefined, require: tlsMode === 'require' } : undefined;
  if (tlsMode === 'require' && !tls) throw new UsageError('--tls=require needs --tls-cert and --tls-key');
  const nbdAt = listen ? hostPort(listen, '--listen') : { host: '127.0.0.1', port: 10809 };
  const cluster = clusterConfigFromFlags(clusterFlags, { env: process.env, clock: new SystemClock() });
  const d = await Daemon.start({
    cluster,
    runDir,
    nbd: noNbd ? false : { ...nbdAt, path: unix, tls },
    metrics: metrics ? hostPort(metrics, '--metrics') : false,
    logLevel,
    syncLimits,
    faultInjection,
    assemble: noAssemble ? false : { config },
  });
  const onSignal = (sig: string) => {
    d.log.info({ signal: sig }, 'signal received');
    d.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
  if (demo !== undefined) await startDemo(d, resolve(demo));
  // stay up until a signal or a shutdown request
  return await new Promise<number>(() => {});
}

/** npm start's demo: a RAID5 of four sparse files, created on first start, exported as md0. */
async function startDemo(d: Daemon, dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const files = [0, 1, 2, 3].map((i) => join(dir, `disk${i}.img`));
  const fresh = !files.every((f) => existsSync(f));
  if (fresh) {
    for (const f of files) {
      writeFileSync(f, '');
      truncateSync(f, 64 * 1024 * 1024);
    }
  }
  const argv = fresh
    ? ['--create', '/dev/md0', '--level=5', '--raid-devices=4', '--chunk=64', '--bitmap=internal', '--run', '--homehost=tsmd-demo', ...files]
    : ['--assemble', '/dev/md0', ...files];
  const rep = await controlCall(controlPath(d.runDir), { op: 'mdadm', argv, cwd: dir });
  process.stderr.write(rep.stderr ?? '');
  if (rep.code !== 0) throw new TsmdError('EIO', `demo array could not be started (exit ${rep.code})`);
  const at = d.nbdAddress;
  process.stderr.write(
    `tsmd demo: RAID5 of ${files.length} files in ${dir} served on nbd://${at?.host ?? '127.0.0.1'}:${at?.port ?? 10809}/md0\n` +
      `  try: nbdinfo nbd://127.0.0.1:${at?.port ?? 10809}/md0    (Ctrl-C stops the daemon cleanly)\n`,
  );
}

/** Forward an mdadm command to the daemon; returns null when no daemon answers. */
async function forward(argv: string[], runDir: string): Promise<number | null> {
  const path = controlPath(runDir);
  if (!existsSync(path)) return null;
  try {
    await controlCall(path, { op: 'ping' }, 3000);
  } catch {
    return null;
  }
  const io = processIo();
  // mdadm asks before overwriting devices that look used; only this end has the terminal
  let a: ReturnType<typeof parseArgs> | null;
  try {
    a = parseArgs(argv);
  } catch {
    a = null; // the daemon reports the usage error
  }
  if (a?.mode === 'create' && !a.opts.has('run') && !a.opts.has('force') && io.interactive) {
    const used: string[] = [];
    for (const p of a.devices) {
      if (p === 'missing') continue;
      try {
        const dev = await openDevice(p, { readOnly: true });
        try {
          const what = await detectUse(dev);
          if (what) used.push(`tsmd: ${p} ${what}\n`);
        } finally {
          await dev.close();
        }
      } catch {
        // the daemon reports it
      }
    }
    if (used.length) {
      for (const u of used) io.err(u);
      if (!/^y(es)?$/i.test((await io.ask('Continue creating array? ')).trim())) {
        io.err('tsmd: create aborted.\n');
        return 1;
      }
      argv = [...argv, '--run'];
    }
  }
  if (a?.mode === 'monitor') return runMonitor(a, path, io);
  if (a?.mode === 'misc' && a.misc === 'speed-limit' && a.devices.length === 0) return runSpeedLimits(a, path, io);
  if (a?.mode === 'misc' && a.misc === 'wait') return runWait(a, path, io);
  const env: Record<string, string> = {};
  for (const k of ['TSMD_HOMEHOST', 'TSMD_CONF', 'TZ', 'MDADM_GROW_ALLOW_OLD']) if (process.env[k] !== undefined) env[k] = process.env[k]!;
  const rep = await controlCall(path, { op: 'mdadm', argv, cwd: process.cwd(), env });
  if (rep.stdout) process.stdout.write(rep.stdout);
  if (rep.stderr) process.stderr.write(rep.stderr);
  return rep.code ?? 1;
}

async function pollArrays(path: string): Promise<ArrayState[]> {
  const rep = await controlCall(path, { op: 'arrays' }, 10_000);
  return rep.arrays ?? [];
}

function findArray(list: ArrayState[], name: string): ArrayState | undefined {
  const short = name.replace(/^\/dev\//, '');
  return list.find((x) => x.devPath === name || x.mdName === short || x.devPath === `/dev/${short}` || x.mdName === name);
}

/**
 * mdadm --wait: block until the named arrays have no resync/recovery/check running; a progress
 * bar on a terminal. Exit 0 when something was waited for, 1 when there was nothing to wait for.
 */
async function runWait(a: ReturnType<typeof parseArgs>, path: string, io: ReturnType<typeof processIo>): Promise<number> {
  if (a.devices.length === 0) throw new UsageError('--wait needs an md device');
  let waited = false;
  const tty = io.interactive && process.stderr.isTTY;
  // loaded only here: only a --wait on a terminal draws a bar
  const progress = tty ? (await import('cli-progress')).default : null;
  for (const d of a.devices) {
    // one bar per sync job; its numbers are the daemon's (./progress.ts), not cli-progress's ETA
    let bar: { b: cliProgress.SingleBar; last: WaitProgress; historyTail: string } | null = null;
    let st: ArrayState | undefined;
    const finish = () => {
      if (!bar) return;
      // the job is over: 100 % when it completed (the last poll may have seen 97 %); the
      // history is bounded, so "new" is "not the newest entry seen when the job started"
      const newest = st?.syncHistory.at(-1);
      const done = !!newest && JSON.stringify(newest) !== bar.historyTail && newest.kind === bar.last.kind && newest.completed;
      bar.b.update(0, { p: finalProgress(bar.last, done) });
      bar.b.stop();
      bar = null;
    };
    for (;;) {
      st = findArray(await pollArrays(path), d);
      if (!st) {
        finish();
        io.err(`tsmd: ${d} is not an active md array\n`);
        return waited ? 0 : 1;
      }
      if (!st.sync && !st.syncBusy) break;
      waited = true;
      if (bar && (!st.sync || st.sync.kind !== bar.last.kind || st.sync.totalSectors !== bar.last.totalSectors)) finish();
      if (st.sync && progress) {
        const p: WaitProgress = { ...st.sync };
        if (!bar) {
          const b = new progress.SingleBar(
            { format: (_o, _params, payload: { p: WaitProgress }) => waitLine(d, payload.p), stream: process.stderr, hideCursor: true },
            progress.Presets.shades_classic,
          );
          b.start(1, 0, { p });
          bar = { b, last: p, historyTail: JSON.stringify(st.syncHistory.at(-1) ?? null) };
        }
        bar.last = p;
        bar.b.update(0, { p });
      }
      await new Promise((r) => setTimeout(r, tty ? 250 : 100));
    }
    finish();
  }
  return waited ? 0 : 1;
}

/**
 * `tsmd --speed-limit-min=K --speed-limit-max=K` without an array: the node-wide limits, what
 * writing /proc/sys/dev/raid/speed_limit_min and _max does on Linux. Every running array of the
 * daemon follows at its next throttle step, and so does every array started later.
 */
async function runSpeedLimits(a: ReturnType<typeof parseArgs>, path: string, io: ReturnType<typeof processIo>): Promise<number> {
  const v = (name: string): number | undefined => {
    const t = a.opts.get(name);
    return typeof t === 'string' ? (parseSpeedLimit(name, t, false) as number) : undefined;
  };
  const speedLimits = { minKiBs: v('speed-limit-min'), maxKiBs: v('speed-limit-max') };
  const rep = await controlCall(path, { op: 'speed-limits', speedLimits }, 10_000);
  const now = rep.speedLimits;
  if (!now) throw new TsmdError('EIO', 'the node daemon did not answer with its speed limits (an older daemon?)');
  io.out(speedLimitsText(now));
  if (now.minKiBs > now.maxKiBs) io.err(`tsmd: ${MIN_ABOVE_MAX(now)}\n`);
  return 0;
}

/** mdadm --monitor against the node daemon (see ./monitor.ts). */
async function runMonitor(a: ReturnType<typeof parseArgs>, path: string, io: ReturnType<typeof processIo>): Promise<number> {
  const str = (k: string): string | undefined => (typeof a.opts.get(k) === 'string' ? (a.opts.get(k) as string) : undefined);
  // mdadm.conf's MAILADDR, MAILFROM, PROGRAM, MONITORDELAY and ARRAY spares=, where the
  // command line says nothing (Monitor.c, mdadm.c)
  const conf = monitorConf(a, process.env);
  const scan = a.opts.has('scan');
  let program = str('program') ?? str('alert');
  if (!program && conf?.program) {
    program = conf.program;
    if (!scan) io.err(`tsmd: Monitor using program "${program}" from config file\n`);
  }
  let mail = str('mail');
  if (!mail && conf?.mailAddr) {
    mail = conf.mailAddr;
    if (!scan) io.err(`tsmd: Monitor using email address "${mail}" from config file\n`);
  }
  const syslog = a.opts.has('syslog');
  const oneshot = a.opts.has('oneshot');
  const test = a.opts.has('test');
  const delayText = a.opts.get('delay');
  const delaySec = typeof delayText === 'string' ? Number(delayText) : (conf?.monitorDelay ?? 60);
  if (!Number.isFinite(delaySec) || delaySec <= 0) throw new UsageError(`--delay wants a positive number of seconds, got ${String(delayText)}`);
  const incText = a.opts.get('increment');
  const increment = typeof incText === 'string' ? Number(incText) : 20;
  if (!Number.isInteger(increment) || increment < 1 || increment > 99) throw new UsageError(`--increment wants 1..99, got ${String(incText)}`);
  // (Monitor.c refuses only --scan with nowhere to send events; given devices, events with
  // nowhere to go are printed on stdout)
  checkMonitor(a, conf);
  const wanted = a.devices.length > 0 && !scan ? a.devices : null;
  const spares = new Map<string, number>();
  const state = new MonitorState({ increment, test, spares });
  for (;;) {
    let list: ArrayState[];
    try {
      list = await pollArrays(path);
    } catch (e) {
      io.err(`tsmd: the node daemon does not answer: ${(e as Error).message}\n`);
      return 1;
    }
    if (wanted) list = list.filter((x) => wanted.some((w) => findArray([x], w)));
    // ARRAY lines with spares=N, by the device each names now
    for (const c of conf?.arrays ?? []) {
      const x = c.spares === undefined ? undefined : findArray(list, c.dev);
      if (x) spares.set(x.devPath, c.spares!);
    }
    for (const ev of state.update(list)) await deliver(ev, { program, syslog, mail, mailFrom: conf?.mailFrom, mdstatPath: join(dirname(path), 'mdstat'), out: io.out, err: io.err });
    // --test only adds TestMessage to the first pass (Monitor.c clears c->test after it)
    if (oneshot) return 0;
    // Monitor.c: no array left that a member failure could change
    if (!list.some((x) => x.level !== 0 && x.level !== -1)) {
      io.err('tsmd: No array with redundancy detected, stopping\n');
      return 0;
    }
    await new Promise((r) => setTimeout(r, delaySec * 1000));
  }
}

export async function run(argv: string[]): Promise<number> {
  const io = processIo();
  try {
    if (argv[0] === 'daemon') return await runDaemon(argv.slice(1));
    if (argv[0] === 'version' || argv.includes('--version') || argv.includes('-V')) {
      io.err(`tsmd - v${VERSION} - mdadm 4.2 compatible command line\n`);
      return 0;
    }
    const args = [...argv];
    const runDir = takeOpt(args, 'run-dir') ?? defaultRunDir();
    // help is printed here, never forwarded: `--monitor --help` must not start a monitor
    let wantsHelp = false;
    try {
      const parsed = parseArgs(args);
      wantsHelp = parsed.help || parsed.helpOptions;
    } catch {
      // main (or the daemon) reports the usage error
    }
    if (wantsHelp) return await main(args, io);
    const forwarded = await forward(args, resolve(runDir));
    if (forwarded !== null) return forwarded;
    return await main(args, io);
  } catch (e) {
    // mdadm's exit codes, from ERROR_CODES (a TsmdError from the daemon keeps its code)
    const code = exitCodeOf(e);
    if (code === null) throw e;
    io.err(`tsmd: ${(e as Error).message}\n`);
    return code;
  }
}
