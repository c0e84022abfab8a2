/**
 * RAID engine throughput through the library (MdArray.read/write) over in-memory members, so
 * the figure is the engine's own cost (mapping, parity, bookkeeping) and not the disks'.
 * Baseline: memcpy of the same bytes in the same run. Later benches (NBD, fio, nbdkit)
 * measure the whole path over real files.
 *
 * Run: node dist/bench/array.js [--quick]
 */
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { MemoryBlockDevice } from '../src/io/memory-device.js';
import { MdArray } from '../src/md/array.js';
import { createArray } from '../src/md/create.js';
import type { Level } from '../src/md/create-plan.js';
import { SystemClock } from '../src/env/clock.js';

const MiB = 1024 * 1024;

function memcpyGBs(bytes: number): number {
  const src = randomBytes(4 * MiB);
  const dst = new Uint8Array(4 * MiB);
  const t0 = process.hrtime.bigint();
  let done = 0;
  while (done < bytes) {
    dst.set(src);
    done += src.length;
  }
  return done / Number(process.hrtime.bigint() - t0);
}

async function oneCase(
  name: string,
  level: Level,
  disks: number,
  memberMiB: number,
  reqKiB: number,
  chunkKiB: number,
) {
  const devs = Array.from(
    { length: disks },
    (_, i) => new MemoryBlockDevice(`m${i}`, memberMiB * MiB),
  );
  await createArray(
    devs,
    {
      level,
      raidDisks: disks,
      metadata: '1.2',
      chunkKiB: level === 1 ? undefined : chunkKiB,
      setName: 'bench:0',
      uuid: randomBytes(16),
      deviceUuids: devs.map(() => randomBytes(16)),
      bitmap: 'none',
      assumeClean: true,
      nowSeconds: 1_700_000_000,
    },
    { confirmOverwrite: async () => false, clock: new SystemClock() },
  );
  const arr = await MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock() });
  const req = randomBytes(reqKiB * 1024);
  const total = Math.floor(arr.sizeBytes / req.length) * req.length;
  const depth = 8;
  const run = async (op: 'read' | 'write') => {
    const t0 = process.hrtime.bigint();
    let next = 0;
    const worker = async () => {
      const mine = new Uint8Array(req.length);
      for (;;) {
        const off = next;
        next += req.length;
        if (off >= total) return;
        if (op === 'write') await arr.write(req, off);
        else await arr.read(mine, off);
      }
    };
    await Promise.all(Array.from({ length: depth }, worker));
    return total / Number(process.hrtime.bigint() - t0);
  };
  await run('write'); // warm-up: allocates the members' pages
  const w = Math.max(await run('write'), await run('write'));
  const r = Math.max(await run('read'), await run('read'));
  const base = memcpyGBs(total);
  console.log(
    `array ${name.padEnd(22)} seq write ${w.toFixed(2)} GB/s (${(w / base).toFixed(2)}x memcpy)  seq read ${r.toFixed(2)} GB/s (${(r / base).toFixed(2)}x memcpy)  [${reqKiB} KiB requests, depth ${depth}, memcpy ${base.toFixed(1)} GB/s]`,
  );
  await arr.close();
}

export async function runArrayBench(opts: { quick?: boolean } = {}): Promise<void> {
  const mib = opts.quick ? 16 : 64;
  await oneCase('raid0 x4 chunk 512K', 0, 4, mib, 1024, 512);
  await oneCase('raid1 x2', 1, 2, mib, 1024, 0);
  await oneCase('raid5 x4 chunk 64K', 5, 4, mib, 192, 64);
  await oneCase('raid5 x4 chunk 512K', 5, 4, mib, 1536, 512);
  await oneCase('raid6 x6 chunk 64K', 6, 6, mib, 256, 64);
  await oneCase('raid10 n2 x4 chunk 512K', 10, 4, mib, 1024, 512);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runArrayBench({ quick: process.argv.includes('--quick') }).catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
