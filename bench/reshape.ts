/**
 * Reshape benchmarks (issue 17), against baselines measured in the same run on the same kind
 * of files:
 *  - reshape throughput (array bytes moved per second, from --grow to the superblocks of the
 *    new geometry) for raid5 4->5 devices and for a raid5 chunk change 64K->128K, against `cp`
 *    of one member file of the same size;
 *  - random 4 KiB writes over NBD (fio, QD32) while a reshape runs, against the same
 *    workload on the same array without one. The reshape is capped per member during that
 *    part, so that it outlasts fio's run.
 * TSMD_BENCH_SKIP_MOVE=1 runs only the second part, TSMD_BENCH_SKIP_NBD=1 only the first.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlCall } from '../src/daemon/control.js';
import { have, runFio, settle, startDaemon, tsmdCli } from './array-nbd.js';

const MiB = 1024 * 1024;

function seconds(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}

function fill(path: string, mib: number): void {
  spawnSync('sh', ['-c', `head -c ${mib * MiB} /dev/urandom > '${path}'`]);
}

async function reshaping(runDir: string, md: string): Promise<boolean> {
  const rep = await controlCall(join(runDir, 'control.sock'), { op: 'arrays' }, 10_000);
  return rep.arrays!.find((x) => x.mdName === md)!.reshape !== null;
}

async function untilDone(runDir: string, md: string): Promise<void> {
  while (await reshaping(runDir, md)) await new Promise((r) => setTimeout(r, 10));
}

/**
 * Seconds the engine took for the reshape that just finished, as the daemon measured it (from
 * its first step to the superblocks of the new geometry): the CLI's start-up (0.3-0.4 s of
 * Node) is not the reshape's.
 */
async function reshapeSeconds(runDir: string, md: string): Promise<number> {
  const rep = await controlCall(join(runDir, 'control.sock'), { op: 'arrays' }, 10_000);
  const last = rep.arrays!.find((x) => x.mdName === md)!.lastReshape;
  if (!last) throw new Error(`${md}: the daemon reports no finished reshape`);
  return last.elapsedMs / 1000;
}

export async function runReshapeBench(opts: { quick?: boolean } = {}): Promise<void> {
  const mib = opts.quick ? 64 : 256;
  const dir = mkdtempSync(join(tmpdir(), 'tsmd-bench-reshape-'));
  console.log(`\nreshape (raid5 of 4, members of ${mib} MiB, chunk 64K; baseline cp of one member, same run)`);
  const d = await startDaemon(dir, ['--speed-limit-min=100000000', '--speed-limit-max=100000000']);
  try {
    const files = [0, 1, 2, 3, 4].map((k) => join(dir, `r5-${k}.img`));
    const copy = join(dir, 'copy.img');
    const memberBytes = (mib + 1) * MiB;
    let cp = 0;
    // the reshape's data is durable at every checkpoint: cp followed by a sync is its like
    let cpSync = 0;
    const best: Record<string, number> = { grow: 0, chunk: 0 };
    const reps = opts.quick ? 1 : 2;
    for (let rep = 0; rep < (process.env.TSMD_BENCH_SKIP_MOVE ? 0 : reps); rep++) {
      for (const f of files) fill(f, mib + 1);
      settle();
      // the first copy after the fill runs 3-8x slower than the next ones on this VM (ext4
      // with discard, the blocks just freed by the fill's truncation): the best of three
      for (let k = 0; k < 3; k++) {
        cp = Math.max(cp, memberBytes / 1e6 / seconds(() => spawnSync('cp', [files[0]!, copy])));
        rmSync(copy);
        settle();
        cpSync = Math.max(cpSync, memberBytes / 1e6 / seconds(() => spawnSync('sh', ['-c', `cp '${files[0]!}' '${copy}' && sync -d '${copy}'`])));
        rmSync(copy);
        settle();
      }
      tsmdCli(d.runDir, ['--create', '/dev/md0', '-l5', '-n4', '-c64', '--run', '--assume-clean', '--force', ...files.slice(0, 4)], dir);
      tsmdCli(d.runDir, ['/dev/md0', '--add', files[4]!], dir);
      const arrayBytes = 3 * mib * MiB;
      settle();
      tsmdCli(d.runDir, ['--grow', '/dev/md0', '--raid-devices=5'], dir);
      await untilDone(d.runDir, 'md0');
      best.grow = Math.max(best.grow!, arrayBytes / 1e6 / (await reshapeSeconds(d.runDir, 'md0')));
      tsmdCli(d.runDir, ['--stop', '/dev/md0'], dir);
      // the chunk change on a fresh raid5 of 4 (same members, new array)
      for (const f of files.slice(0, 4)) fill(f, mib + 1);
      tsmdCli(d.runDir, ['--create', '/dev/md0', '-l5', '-n4', '-c64', '--run', '--assume-clean', '--force', ...files.slice(0, 4)], dir);
      settle();
      tsmdCli(d.runDir, ['--grow', '/dev/md0', '--chunk=128'], dir);
      await untilDone(d.runDir, 'md0');
      best.chunk = Math.max(best.chunk!, arrayBytes / 1e6 / (await reshapeSeconds(d.runDir, 'md0')));
      tsmdCli(d.runDir, ['--stop', '/dev/md0'], dir);
    }
    console.log(`  (best of ${reps}; cp + fdatasync ${cpSync.toFixed(0)} MB/s: grow ${(best.grow! / cpSync).toFixed(2)}x, chunk ${(best.chunk! / cpSync).toFixed(2)}x of it)`);
    console.log(`  raid5 4->5 devices  ${best.grow!.toFixed(0).padStart(6)} MB/s of array data   cp ${cp.toFixed(0).padStart(6)} MB/s   ratio ${(best.grow! / cp).toFixed(2)}x (target >= 0.5x)`);
    console.log(`  raid5 chunk 64->128K ${best.chunk!.toFixed(0).padStart(5)} MB/s of array data   cp ${cp.toFixed(0).padStart(6)} MB/s   ratio ${(best.chunk! / cp).toFixed(2)}x (target >= 0.5x)`);

    // --- NBD writes during a reshape against none, on the same members
    for (const f of files) fill(f, mib + 1);
    tsmdCli(d.runDir, ['--create', '/dev/md1', '-l5', '-n4', '-c64', '--run', '--assume-clean', '--force', ...files.slice(0, 4)], dir);
    tsmdCli(d.runDir, ['/dev/md1', '--add', files[4]!], dir);
    const secs = opts.quick ? 3 : 6;
    // the reshape must outlast fio's run: md's limits are per member, so a member's bytes over
    // three times fio's seconds (uncapped, a reshape of the quick array ended before fio did
    // and the ratio meant nothing)
    const capKiBs = Math.floor((mib * 1024) / (3 * secs));
    tsmdCli(d.runDir, [`--speed-limit-min=${Math.min(1000, capKiBs)}`, `--speed-limit-max=${capKiBs}`], dir);
    if (process.env.TSMD_BENCH_SKIP_NBD) return;
    const fio = () => runFio(`nbd://127.0.0.1:${d.port}/md1`, { rw: 'randwrite', bs: '4k', iodepth: 32, sizeBytes: 3 * mib * MiB, seconds: secs }, dir);
    settle();
    const without = await fio();
    tsmdCli(d.runDir, ['--grow', '/dev/md1', '--raid-devices=5'], dir);
    const during = await fio();
    const stillReshaping = await reshaping(d.runDir, 'md1');
    await untilDone(d.runDir, 'md1');
    console.log(
      `  raid5 randwrite 4K QD32 over NBD: during a reshape ${during.iops.toFixed(0)} IOPS, without ${without.iops.toFixed(0)} IOPS   ratio ${(during.iops / without.iops).toFixed(2)}x (target >= 0.5x; reshape capped at ${capKiBs} KiB/s)${stillReshaping ? '' : ' (the reshape ended before fio did)'}`,
    );
    tsmdCli(d.runDir, ['--stop', '/dev/md1'], dir);
  } finally {
    await d.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1]?.endsWith('reshape.js')) {
  if (!have('fio')) throw new Error('fio is needed (apt-get install fio)');
  await runReshapeBench({ quick: process.argv.includes('--quick') });
}
