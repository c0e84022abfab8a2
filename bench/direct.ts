/**
 * O_DIRECT member I/O (src/io/file-device.ts `direct`, what a clustered array's members use)
 * against the buffered path every other member uses, on one file member in the same run:
 * sequential 1 MiB writes at depth 8 over the whole file with the closing fdatasync in the
 * time, and random 4 KiB reads at depth 32. Caller buffers are plain Buffers, as the NBD server
 * hands them over, so the direct path copies through the aligned pool; a third column gives
 * the direct path on page-aligned buffers (no copy). The buffered random reads are page-cache
 * hits (the file was just read whole): that is what O_DIRECT gives up, and the ratio says what
 * it costs. When fio is installed, its O_DIRECT random reads of the same file with 4 psync
 * threads (the shape of libuv's default thread pool, which runs every direct pread) are a
 * second baseline: the device's own limit at that concurrency. The file lives in os.tmpdir(),
 * which must be a disk file system.
 *
 * Run: node dist/bench/direct.js [--quick]
 */
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { pageAlignedArrayBuffer } from '../src/io/aligned-pool.js';
import { type FileBlockDevice, openDevice, registerPageAlignedMemory } from '../src/io/file-device.js';

const MiB = 1024 * 1024;

type BufKind = 'plain' | 'aligned';

function buffers(kind: BufKind, count: number, bytes: number): Uint8Array[] {
  if (kind === 'plain') return Array.from({ length: count }, () => Buffer.from(randomBytes(bytes)));
  const ab = pageAlignedArrayBuffer(count * bytes);
  registerPageAlignedMemory(ab);
  return Array.from({ length: count }, (_, i) => {
    const v = new Uint8Array(ab, i * bytes, bytes);
    v.set(randomBytes(bytes));
    return v;
  });
}

/** MB/s of writing the whole device in 1 MiB requests at depth 8, fdatasync included. */
async function seqWrite(dev: FileBlockDevice, kind: BufKind): Promise<number> {
  const depth = 8;
  const bufs = buffers(kind, depth, MiB);
  const t0 = process.hrtime.bigint();
  let next = 0;
  await Promise.all(
    bufs.map(async (b) => {
      for (;;) {
        const off = next;
        next += MiB;
        if (off + MiB > dev.sizeBytes) return;
        await dev.write(b, off);
      }
    }),
  );
  await dev.flush();
  return (dev.sizeBytes / Number(process.hrtime.bigint() - t0)) * 1000;
}

/** IOPS of `ops` random 4 KiB reads at depth 32. */
async function randRead(dev: FileBlockDevice, kind: BufKind, ops: number): Promise<number> {
  const depth = 32;
  const bufs = buffers(kind, depth, 4096);
  const blocks = dev.sizeBytes / 4096;
  let x = 0x2545f491;
  let left = ops;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    bufs.map(async (b) => {
      while (left-- > 0) {
        x = (x * 1103515245 + 12345) >>> 0;
        await dev.read(b, (x % blocks) * 4096);
      }
    }),
  );
  return (ops / Number(process.hrtime.bigint() - t0)) * 1e9;
}

/** fio's O_DIRECT 4 KiB random read IOPS on `file` with 4 psync threads, or null without fio. */
function fioRandRead(file: string, seconds: number): number | null {
  const r = spawnSync(
    'fio',
    ['--name=direct', `--filename=${file}`, '--rw=randread', '--bs=4k', '--ioengine=psync', '--numjobs=4', '--direct=1',
      `--runtime=${seconds}`, '--time_based', '--group_reporting', '--output-format=json'],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) return null;
  const out = JSON.parse(r.stdout) as { jobs: Array<{ read: { iops: number } }> };
  return out.jobs[0]!.read.iops;
}

export async function runDirectBench(opts: { quick?: boolean } = {}): Promise<void> {
  const mib = opts.quick ? 64 : 256;
  const ops = opts.quick ? 20_000 : 100_000;
  const dir = mkdtempSync(join(tmpdir(), 'tsmd-bench-direct-'));
  try {
    const file = join(dir, 'member.img');
    writeFileSync(file, Buffer.alloc(mib * MiB));
    const buffered = await openDevice(file);
    const direct = await openDevice(file, { direct: true });
    try {
      await seqWrite(buffered, 'plain'); // warm-up: allocates the file's blocks
      const wb = await seqWrite(buffered, 'plain');
      const wd = await seqWrite(direct, 'plain');
      const wa = await seqWrite(direct, 'aligned');
      console.log(
        `direct seq write 1 MiB qd8 +fdatasync  buffered ${wb.toFixed(0)} MB/s  direct ${wd.toFixed(0)} MB/s (${(wd / wb).toFixed(2)}x)  direct, aligned buffers ${wa.toFixed(0)} MB/s (${(wa / wb).toFixed(2)}x)  [${mib} MiB file]`,
      );
      const chunk = new Uint8Array(4 * MiB);
      for (let off = 0; off < buffered.sizeBytes; off += chunk.length) await buffered.read(chunk, off); // into the page cache
      const rb = await randRead(buffered, 'plain', ops);
      const rd = await randRead(direct, 'plain', ops);
      const ra = await randRead(direct, 'aligned', ops);
      const fio = fioRandRead(file, opts.quick ? 2 : 5);
      const fioText = fio === null ? 'fio not installed' : `fio psync x4 ${(fio / 1000).toFixed(1)}k IOPS, direct ${(rd / fio).toFixed(2)}x fio`;
      console.log(
        `direct rand read 4 KiB qd32           buffered ${(rb / 1000).toFixed(1)}k IOPS (page-cache hits)  direct ${(rd / 1000).toFixed(1)}k IOPS (${(rd / rb).toFixed(2)}x)  direct, aligned buffers ${(ra / 1000).toFixed(1)}k IOPS (${(ra / rb).toFixed(2)}x)  [${fioText}]`,
      );
    } finally {
      await buffered.close();
      await direct.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runDirectBench({ quick: process.argv.includes('--quick') }).catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
