/**
 * Whole-path array throughput: the tsmd daemon (a child process, as deployed: `tsmd daemon`)
 * serving md arrays over sparse files, against `nbdkit file` serving one file of the array's
 * size, both driven by fio's nbd engine (libnbd) over TCP loopback in the same run. Each line
 * prints tsmd, nbdkit, the ratio and the target ratio (issue goals: raid0 >= 1.0 sequential,
 * >= 0.8 random 4 KiB; raid1 write >= 0.8; raid5 full-stripe write >= 0.6).
 *
 * Every backing file lives in one temporary directory (same filesystem, page cache, no fsync
 * from fio). Both sides are prefilled before the cases, so reads never hit holes.
 *
 * Environment:
 *   TSMD_BENCH_UV=N          UV_THREADPOOL_SIZE for the daemon child (default: inherited)
 *   TSMD_BENCH_PROF=DIR      run the daemon with --cpu-prof, profiles written to DIR
 *   TSMD_BENCH_CASES=REGEX   only the cases whose label matches
 *   TSMD_BENCH_SECONDS=S     seconds per fio run (full 2, quick 1.2)
 *   TSMD_BENCH_REPS=N        pairs of runs (tsmd, then nbdkit) per case (full 3, quick 1)
 *   TSMD_BENCH_JSON=FILE     also write the figures as JSON
 *
 * Each case runs tsmd and nbdkit back to back, REPS times. The figures printed are the medians
 * of each side, the ratio is the median of the pairs' ratios, and the range of those ratios is
 * printed after it: on this kind of VM single runs move by 20 % and more, and a pair shares
 * the machine's state of the moment (another tenant, writeback, the host).
 *
 * Run: node dist/bench/array-nbd.js [--quick]
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const MiB = 1024 * 1024;
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const TSMD = join(ROOT, 'bin', 'tsmd');

type Rw = 'write' | 'read' | 'randread' | 'randwrite';

interface FioCase {
  label: string;
  rw: Rw;
  bs: string;
  iodepth: number;
  unit: 'MB/s' | 'IOPS';
  /** tsmd/nbdkit ratio the issue asks for; null = informational */
  target: number | null;
  /** run in --quick mode too */
  quick: boolean;
}

interface ArrayCase {
  name: string;
  /** mdadm --create arguments (level, devices, chunk) */
  create: string[];
  files: number;
  /** array data size wanted (the members get room for the superblock area on top) */
  arrayMiB: number;
  dataDisks: number;
  cases: FioCase[];
}

const seqW = (target: number | null, quick = true, bs = '1m'): FioCase => ({
  label: `seq write ${bs === '1m' ? '1M' : bs} qd8`,
  rw: 'write',
  bs,
  iodepth: 8,
  unit: 'MB/s',
  target,
  quick,
});
const seqR = (target: number | null, quick = true): FioCase => ({
  label: 'seq read 1M qd8',
  rw: 'read',
  bs: '1m',
  iodepth: 8,
  unit: 'MB/s',
  target,
  quick,
});
const rnd = (rw: 'randread' | 'randwrite', target: number | null, quick = true): FioCase => ({
  label: `${rw === 'randread' ? 'rand read' : 'rand write'} 4K qd32`,
  rw,
  bs: '4k',
  iodepth: 32,
  unit: 'IOPS',
  target,
  quick,
});

function arrayCases(quick: boolean): ArrayCase[] {
  const mib = quick ? 256 : 512;
  return [
    {
      name: 'raid0x4',
      create: ['--level=0', '--raid-devices=4', '--chunk=512'],
      files: 4,
      arrayMiB: mib,
      dataDisks: 4,
      cases: [seqW(1.0), seqR(1.0), rnd('randread', 0.8), rnd('randwrite', 0.8)],
    },
    {
      name: 'raid1x2',
      create: ['--level=1', '--raid-devices=2', '--bitmap=none'],
      files: 2,
      arrayMiB: mib,
      dataDisks: 1,
      cases: [seqW(0.8), seqR(null, false)],
    },
    {
      name: 'raid5x4',
      // chunk 512 KiB (mdadm's default): a full stripe is 3 x 512 KiB = 1536 KiB
      create: ['--level=5', '--raid-devices=4', '--chunk=512', '--bitmap=none'],
      files: 4,
      arrayMiB: mib,
      dataDisks: 3,
      cases: [
        { ...seqW(0.6, true, '1536k'), label: 'full-stripe write 1536K qd8' },
        rnd('randwrite', null, false),
      ],
    },
  ];
}

export function have(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => res(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitPort(port: number, child: ChildProcess, what: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((res) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => {
        c.destroy();
        res(true);
      });
      c.once('error', () => res(false));
    });
    if (ok) return;
    if (child.exitCode !== null) throw new Error(`server exited: ${what()}`);
    await sleep(25);
  }
  throw new Error(`server did not listen on ${port}: ${what()}`);
}

function stopChild(p: ChildProcess, timeoutMs = 15000): Promise<void> {
  return new Promise((res) => {
    if (p.exitCode !== null || p.signalCode !== null) {
      res();
      return;
    }
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.once('exit', () => {
      clearTimeout(t);
      res();
    });
    p.kill('SIGTERM');
  });
}

interface FioResult {
  mbs: number;
  iops: number;
}

export function runFio(
  uri: string,
  o: { rw: Rw; bs: string; iodepth: number; sizeBytes: number; seconds?: number },
  cwd: string,
): Promise<FioResult> {
  const args = [
    '--name=bench',
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${o.rw}`,
    `--bs=${o.bs}`,
    `--iodepth=${o.iodepth}`,
    `--size=${o.sizeBytes}`,
    '--randrepeat=0',
    '--norandommap',
    '--verify_state_save=0',
    '--output-format=json',
  ];
  if (o.seconds) args.push('--time_based', `--runtime=${o.seconds}`, '--ramp_time=0.5');
  return new Promise((res, rej) => {
    const p = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'], cwd });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    p.on('error', rej);
    p.on('close', (code) => {
      if (code !== 0) {
        rej(new Error(`fio ${o.rw} ${o.bs} on ${uri} failed (${code}): ${err.slice(0, 500)}`));
        return;
      }
      const j = JSON.parse(out.slice(out.indexOf('{'))) as {
        jobs: { read: FioResult & { bw_bytes: number }; write: FioResult & { bw_bytes: number } }[];
      };
      const side = o.rw === 'read' || o.rw === 'randread' ? j.jobs[0].read : j.jobs[0].write;
      res({ mbs: side.bw_bytes / 1e6, iops: side.iops });
    });
  });
}

export function tsmdCli(runDir: string, argv: string[], cwd: string): void {
  const r = spawnSync(process.execPath, [TSMD, '--run-dir', runDir, ...argv], { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tsmd ${argv.join(' ')} failed (${r.status}): ${r.stderr}`);
}

function nbdSize(uri: string): number {
  const r = spawnSync('nbdinfo', ['--size', uri], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`nbdinfo --size ${uri} failed: ${r.stderr}`);
  return Number(r.stdout.trim());
}

/** The tsmd daemon as a child process; its NBD port comes from <run-dir>/daemon.json. */
export async function startDaemon(dir: string, extra: string[] = []): Promise<{ port: number; runDir: string; stop: () => Promise<void> }> {
  const runDir = join(dir, 'run');
  const env = { ...process.env };
  if (process.env.TSMD_BENCH_UV) env.UV_THREADPOOL_SIZE = process.env.TSMD_BENCH_UV;
  const nodeArgs: string[] = [];
  if (process.env.TSMD_BENCH_PROF) nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${resolve(process.env.TSMD_BENCH_PROF)}`);
  const p = spawn(
    process.execPath,
    [...nodeArgs, TSMD, 'daemon', '--run-dir', runDir, '--listen', '127.0.0.1:0', '--log-level', 'warn', ...extra],
    { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  p.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const info = join(runDir, 'daemon.json');
  let port = 0;
  try {
    // wait until daemon.json appears (the daemon renames it into place whole)
    for (let i = 0; i < 400 && port === 0; i++) {
      if (p.exitCode !== null) throw new Error(`tsmd daemon exited (${p.exitCode}): ${err}`);
      try {
        port = (JSON.parse(readFileSync(info, 'utf8')) as { nbd: { port: number } }).nbd.port;
      } catch {
        await sleep(25);
      }
    }
    if (port === 0) throw new Error(`tsmd daemon did not write ${info}: ${err}`);
    await waitPort(port, p, () => err);
  } catch (e) {
    await stopChild(p);
    throw e;
  }
  return {
    port,
    runDir,
    stop: async () => {
      await stopChild(p);
      if (err.trim()) process.stderr.write(`  (daemon stderr: ${err.trim().slice(0, 400)})\n`);
    },
  };
}

async function startNbdkit(file: string): Promise<{ port: number; stop: () => Promise<void> }> {
  const port = await freePort();
  const p = spawn('nbdkit', ['-f', '--exit-with-parent', '-p', String(port), '-i', '127.0.0.1', 'file', file], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  p.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  await waitPort(port, p, () => err);
  return { port, stop: () => stopChild(p) };
}

/**
 * Write the dirty pages back now (sync(1)), outside the timed runs: otherwise the kernel's
 * flusher does it during whichever run comes next, on the same 2 CPUs.
 */
export function settle(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

export function sparse(path: string, bytes: number): void {
  closeSync(openSync(path, 'w'));
  truncateSync(path, bytes);
}

export interface ArrayNbdLine {
  array: string;
  label: string;
  tsmd: number;
  nbdkit: number;
  /** median of the pairs' ratios */
  ratio: number;
  /** smallest and largest ratio of a pair */
  ratioMin: number;
  ratioMax: number;
  target: number | null;
  unit: string;
}

/** The middle value (the mean of the two middle ones for an even count). */
export function median(xs: readonly number[]): number {
  const v = [...xs].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

export async function runArrayNbdBench(opts: { quick?: boolean } = {}): Promise<ArrayNbdLine[]> {
  const quick = !!opts.quick;
  console.log('\nArrays over NBD: tsmd daemon (child process) vs nbdkit file, fio ioengine=nbd over TCP loopback');
  const missing = ['fio', 'nbdkit', 'nbdinfo'].filter((t) => !have(t));
  if (missing.length) {
    console.log(`  MISSING TOOL: ${missing.join(', ')}: array NBD benchmark skipped (Debian packages fio, nbdkit, libnbd-bin)`);
    return [];
  }
  if (!existsSync(join(ROOT, 'dist', 'src', 'cli', 'entry.js'))) throw new Error('dist/ is missing: build first');
  const seconds = Number(process.env.TSMD_BENCH_SECONDS ?? (quick ? 1.2 : 2));
  const reps = Number(process.env.TSMD_BENCH_REPS ?? (quick ? 1 : 3));
  if (!Number.isSafeInteger(reps) || reps < 1) throw new Error(`TSMD_BENCH_REPS=${process.env.TSMD_BENCH_REPS}: a positive integer`);
  const filter = process.env.TSMD_BENCH_CASES ? new RegExp(process.env.TSMD_BENCH_CASES) : null;
  const uv = process.env.TSMD_BENCH_UV ?? process.env.UV_THREADPOOL_SIZE;
  console.log(
    `  nbdkit file (default threads); tsmd daemon UV_THREADPOOL_SIZE=${uv ?? '4 (default)'}; ` +
      `${availableParallelism()} CPUs shared by fio, nbdkit/tsmd; medians of ${reps} pair(s) of ${seconds} s runs`,
  );
  const lines: ArrayNbdLine[] = [];
  for (const ac of arrayCases(quick)) {
    const cases = ac.cases.filter((c) => (!quick || c.quick) && (!filter || filter.test(`${ac.name} ${c.label}`)));
    if (cases.length === 0) continue;
    const dir = mkdtempSync(join(tmpdir(), 'tsmd-bench-array-nbd-'));
    try {
      // members: their share of the array plus room for data_offset (superblock, bitmap area)
      const memberBytes = (ac.arrayMiB / ac.dataDisks + 8) * MiB;
      const files = Array.from({ length: ac.files }, (_, i) => join(dir, `m${i}.img`));
      for (const f of files) sparse(f, Math.ceil(memberBytes / MiB) * MiB);
      const daemon = await startDaemon(dir);
      let kit: { port: number; stop: () => Promise<void> } | null = null;
      try {
        tsmdCli(daemon.runDir, ['--create', '/dev/md0', ...ac.create, '--run', '--assume-clean', ...files], dir);
        const tsmdUri = `nbd://127.0.0.1:${daemon.port}/md0`;
        const sizeBytes = nbdSize(tsmdUri);
        const base = join(dir, 'nbdkit.img');
        sparse(base, sizeBytes);
        kit = await startNbdkit(base);
        const kitUri = `nbd://127.0.0.1:${kit.port}/`;
        // prefill both sides (not timed): reads then see data, not holes
        const fill = { rw: 'write' as const, bs: '1m', iodepth: 8, sizeBytes };
        await runFio(tsmdUri, fill, dir);
        await runFio(kitUri, fill, dir);
        settle();
        for (const c of cases) {
          const o = { rw: c.rw, bs: c.bs, iodepth: c.iodepth, sizeBytes, seconds };
          const pick = (r: FioResult) => (c.unit === 'MB/s' ? r.mbs : r.iops);
          // pairs of runs, tsmd then nbdkit (this VM's figures vary run to run)
          const ts: number[] = [];
          const ks: number[] = [];
          const ratios: number[] = [];
          for (let rep = 0; rep < reps; rep++) {
            const tr = pick(await runFio(tsmdUri, o, dir));
            if (c.rw.includes('write')) settle();
            const kr = pick(await runFio(kitUri, o, dir));
            if (c.rw.includes('write')) settle();
            ts.push(tr);
            ks.push(kr);
            ratios.push(tr / kr);
          }
          const t = median(ts);
          const k = median(ks);
          const ratio = median(ratios);
          const ratioMin = Math.min(...ratios);
          const ratioMax = Math.max(...ratios);
          lines.push({ array: ac.name, label: c.label, tsmd: t, nbdkit: k, ratio, ratioMin, ratioMax, target: c.target, unit: c.unit });
          const fmt = (v: number) => (c.unit === 'MB/s' ? `${v.toFixed(0)} MB/s` : `${(v / 1000).toFixed(1)}k IOPS`);
          const verdict = c.target === null ? '(no target)' : `(target >= ${c.target.toFixed(1)})  ${ratio >= c.target ? 'ok' : 'MISS'}`;
          console.log(
            `  ${`${ac.name} ${c.label}:`.padEnd(42)} tsmd ${fmt(t).padStart(11)}  nbdkit ${fmt(k).padStart(11)}  ratio ${ratio.toFixed(2)} ` +
              `${reps > 1 ? `[${ratioMin.toFixed(2)}-${ratioMax.toFixed(2)}] ` : ''}${verdict}`,
          );
        }
      } finally {
        await kit?.stop();
        await daemon.stop();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  if (process.env.TSMD_BENCH_JSON) writeFileSync(process.env.TSMD_BENCH_JSON, `${JSON.stringify(lines, null, 1)}\n`);
  return lines;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runArrayNbdBench({ quick: process.argv.includes('--quick') }).catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
