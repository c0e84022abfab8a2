/**
 * NBD server throughput: tsmd's server over a file-backed target (src/io openDevice) against
 * nbdkit's file plugin serving the same file, both driven by fio's nbd engine (libnbd) over
 * TCP loopback, in the same run: sequential 1 MiB write and read at iodepth 8, random 4 KiB
 * read and write at iodepth 32. Prints MB/s or IOPS and the ratio tsmd/nbdkit per line.
 *
 * The file lives in a temporary directory (page cache, no fsync). A second table serves memory
 * (MemoryBlockDevice against nbdkit's memory plugin), which leaves only the servers' own cost
 * per request: the difference between the two tables is the file I/O path.
 *
 * Run: node dist/bench/nbd.js [--quick]
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { openDevice } from '../src/io/file-device.js';
import { NbdServer } from '../src/nbd/server.js';
import { MapExportRegistry } from '../src/nbd/target.js';
import { MemoryBlockDevice } from '../src/io/memory-device.js';

const MiB = 1024 * 1024;

interface Case {
  name: string;
  rw: 'write' | 'read' | 'randread' | 'randwrite';
  bs: string;
  iodepth: number;
  unit: 'MB/s' | 'IOPS';
}

const CASES: Case[] = [
  { name: 'seq write 1 MiB qd8', rw: 'write', bs: '1m', iodepth: 8, unit: 'MB/s' },
  { name: 'seq read  1 MiB qd8', rw: 'read', bs: '1m', iodepth: 8, unit: 'MB/s' },
  { name: 'rand read  4 KiB qd32', rw: 'randread', bs: '4k', iodepth: 32, unit: 'IOPS' },
  { name: 'rand write 4 KiB qd32', rw: 'randwrite', bs: '4k', iodepth: 32, unit: 'IOPS' },
];

function have(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

function runFio(uri: string, c: Case, seconds: number, sizeBytes: number, cwd: string): Promise<{ mbs: number; iops: number }> {
  const args = [
    '--name=bench',
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${c.rw}`,
    `--bs=${c.bs}`,
    `--iodepth=${c.iodepth}`,
    `--size=${sizeBytes}`,
    '--time_based',
    `--runtime=${seconds}`,
    '--ramp_time=0.5',
    '--randrepeat=0',
    '--norandommap',
    '--output-format=json',
  ];
  return new Promise((resolve, reject) => {
    const p = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'], cwd });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0) {
        reject(new Error(`fio ${c.name} on ${uri} failed (${code}): ${err.slice(0, 500)}`));
        return;
      }
      const j = JSON.parse(out.slice(out.indexOf('{'))) as {
        jobs: { read: { bw_bytes: number; iops: number }; write: { bw_bytes: number; iops: number } }[];
      };
      const side = c.rw === 'read' || c.rw === 'randread' ? j.jobs[0].read : j.jobs[0].write;
      resolve({ mbs: side.bw_bytes / 1e6, iops: side.iops });
    });
  });
}

async function startNbdkit(plugin: string[], port: number): Promise<() => Promise<void>> {
  const p = spawn('nbdkit', ['--foreground', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), ...plugin], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  // wait until it accepts connections
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (ok) break;
    if (p.exitCode !== null) throw new Error(`nbdkit exited: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return () =>
    new Promise<void>((resolve) => {
      if (p.exitCode !== null) {
        resolve();
        return;
      }
      p.once('close', () => resolve());
      p.kill('SIGTERM');
    });
}

function nbdkitVersion(): string {
  const r = spawnSync('nbdkit', ['--version'], { encoding: 'utf8' });
  return (r.stdout ?? '').trim().split(' ').at(-1) ?? '?';
}

async function compare(
  title: string,
  tsmdUri: string,
  nbdkitPlugin: string[],
  seconds: number,
  sizeBytes: number,
  cwd: string,
): Promise<void> {
  const port = await freePort();
  const stop = await startNbdkit(nbdkitPlugin, port);
  console.log(`  ${title}, ${seconds} s per case`);
  try {
    for (const c of CASES) {
      const t = await runFio(tsmdUri, c, seconds, sizeBytes, cwd);
      const k = await runFio(`nbd://127.0.0.1:${port}/`, c, seconds, sizeBytes, cwd);
      const pick = (r: { mbs: number; iops: number }) => (c.unit === 'MB/s' ? r.mbs : r.iops);
      const fmt = (v: number) => (c.unit === 'MB/s' ? `${v.toFixed(0)} MB/s` : `${(v / 1000).toFixed(1)}k IOPS`);
      console.log(
        `    ${c.name.padEnd(22)} tsmd ${fmt(pick(t)).padStart(12)}   nbdkit ${fmt(pick(k)).padStart(12)}   ratio ${(pick(t) / pick(k)).toFixed(2)}`,
      );
    }
  } finally {
    await stop();
  }
}

export async function runNbdBench(opts: { quick?: boolean } = {}): Promise<void> {
  const quick = !!opts.quick;
  console.log('\nNBD server: tsmd vs nbdkit, fio ioengine=nbd (libnbd) over TCP loopback');
  const missing = ['fio', 'nbdkit'].filter((t) => !have(t));
  if (missing.length) {
    console.log(`  MISSING TOOL: ${missing.join(', ')}: NBD benchmark skipped (Debian packages fio, nbdkit)`);
    return;
  }
  const sizeBytes = (quick ? 256 : 512) * MiB;
  console.log(
    `  nbdkit ${nbdkitVersion()} (16 threads); tsmd in-process, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? '4 (default)'}; ` +
      `${availableParallelism()} CPUs shared by fio and the server`,
  );
  const dir = mkdtempSync(join(tmpdir(), 'tsmd-bench-nbd-'));
  const file = join(dir, 'disk.img');
  try {
    // real data everywhere, so that no server reads holes
    const fh = await open(file, 'w');
    const block = randomBytes(4 * MiB);
    for (let off = 0; off < sizeBytes; off += block.length) await fh.write(block, 0, block.length, off);
    await fh.close();

    const dev = await openDevice(file);
    // smaller than the file, so that time-based sequential writes mostly overwrite pages
    const memBytes = Math.min(sizeBytes, 128 * MiB);
    const mem = new MemoryBlockDevice('bench-mem', memBytes);
    const server = new NbdServer({
      exports: new MapExportRegistry([
        { name: 'file', target: dev },
        { name: 'mem', target: mem },
      ]),
    });
    const port = (await server.listen({ host: '127.0.0.1', port: 0 })).port!;
    try {
      await compare(
        `file-backed (${sizeBytes / MiB} MiB file in the page cache): src/io FileBlockDevice vs nbdkit file`,
        `nbd://127.0.0.1:${port}/file`,
        ['file', `file=${file}`],
        quick ? 1.5 : 3,
        sizeBytes,
        dir,
      );
      await compare(
        `memory-backed (${memBytes / MiB} MiB; the servers' own cost): MemoryBlockDevice vs nbdkit memory`,
        `nbd://127.0.0.1:${port}/mem`,
        ['memory', String(memBytes)],
        quick ? 1 : 2,
        memBytes,
        dir,
      );
    } finally {
      await server.close();
      await dev.close();
      await mem.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await runNbdBench({ quick: process.argv.includes('--quick') });
}
