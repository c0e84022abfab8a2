/**
 * Redundancy benchmarks (issue: bitmap, sync engine), each against a baseline measured in the
 * same run on the same kind of files:
 *  - recovery of a raid1 member and resync of a raid1 array, through the daemon, against
 *    `cp` of one member file of the same size;
 *  - check of a raid5 of 4 members against `cat` of the four member files to /dev/null;
 *  - random 4 KiB write IOPS over NBD (fio, queue depth 32) with the internal bitmap on and
 *    off.
 * Files are written first and the page cache is dropped of dirty data (sync) before each
 * timed part; both sides read what the page cache holds, so the figures compare the engines,
 * not the disk.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlCall } from '../src/daemon/control.js';
import { have, runFio, settle, sparse, startDaemon, tsmdCli } from './array-nbd.js';

const MiB = 1024 * 1024;

function seconds(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}

/**
 * Wait until the array's sync engine is idle; the job's own clock gives its times: `dataSecs`
 * until its last window (everything read and written, in the page cache), `secs` for the whole
 * job including the flush and superblocks that make it durable.
 */
async function waitIdle(runDir: string, md: string): Promise<{ workedSectors: number; secs: number; dataSecs: number }> {
  for (;;) {
    const rep = await controlCall(join(runDir, 'control.sock'), { op: 'arrays' }, 10_000);
    const a = rep.arrays!.find((x) => x.mdName === md)!;
    if (!a.syncBusy) {
      const last = a.syncHistory.at(-1);
      if (!last) throw new Error(`${md}: no sync ran`);
      return { workedSectors: last.workedSectors, secs: last.elapsedMs / 1000, dataSecs: last.dataMs / 1000 };
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

function ratioLine(name: string, r: { data: number; all: number }, cpMBs: number, cpSyncMBs: number): string {
  const { data, all } = r;
  return (
    `  ${name.padEnd(18)} ${data.toFixed(0).padStart(6)} MB/s   cp ${cpMBs.toFixed(0).padStart(6)} MB/s   ratio ${(data / cpMBs).toFixed(2)}x (target >= 0.8x)\n` +
    `  ${(name + ', durable').padEnd(18)} ${all.toFixed(0).padStart(6)} MB/s   cp + fdatasync ${cpSyncMBs.toFixed(0).padStart(6)} MB/s   ratio ${(all / cpSyncMBs).toFixed(2)}x`
  );
}

/** Fill a file with incompressible data through dd (outside the timed parts). */
function fill(path: string, mib: number): void {
  spawnSync('sh', ['-c', `head -c ${mib * MiB} /dev/urandom > '${path}'`]);
}

export async function runSyncBench(opts: { quick?: boolean } = {}): Promise<void> {
  const mib = opts.quick ? 64 : 256;
  const dir = mkdtempSync(join(tmpdir(), 'tsmd-bench-sync-'));
  console.log(`\nsync engine (members of ${mib} MiB; baselines cp / cat of the same files, same run)`);
  // no speed cap: the engine's own throughput is what is measured
  const d = await startDaemon(dir, ['--speed-limit-min=100000000', '--speed-limit-max=100000000']);
  try {
    // Three rounds, each timing the baseline right before the engine; the best of each side is
    // reported (single runs on 2 shared vCPUs and a VM disk swing by 2x and more).
    const reps = 3;
    const memberBytes = (mib + 4) * MiB;
    const best = { cp: 0, cpSync: 0, cat: 0 };
    type Phase = { data: number; all: number };
    const rsBest: Phase = { data: 0, all: 0 };
    const recBest: Phase = { data: 0, all: 0 };
    const keep = (b: Phase, bytes: number, r: { secs: number; dataSecs: number }) => {
      b.data = Math.max(b.data, bytes / 1e6 / r.dataSecs);
      b.all = Math.max(b.all, bytes / 1e6 / r.secs);
    };
    // --- resync: a raid1 created over members full of different data (no --assume-clean):
    // the initial resync copies the first member over the second, all of it;
    // --- recovery: then a member fails and the hot spare is rebuilt from the other
    const r1 = [0, 1, 2].map((k) => join(dir, `r1-${k}.img`));
    const copy = join(dir, 'copy.img');
    for (let rep = 0; rep < reps; rep++) {
      fill(r1[0]!, mib + 4);
      fill(r1[1]!, mib + 4);
      rmSync(r1[2]!, { force: true });
      sparse(r1[2]!, (mib + 4) * MiB);
      settle();
      best.cp = Math.max(best.cp, memberBytes / 1e6 / seconds(() => spawnSync('cp', [r1[0]!, copy])));
      rmSync(copy);
      settle();
      // the sync's last step makes its writes durable (md: the superblock write with a flush)
      best.cpSync = Math.max(best.cpSync, memberBytes / 1e6 / seconds(() => spawnSync('sh', ['-c', `cp '${r1[0]!}' '${copy}' && sync -d '${copy}'`])));
      rmSync(copy);
      settle();
      tsmdCli(d.runDir, ['--create', '/dev/md0', '-l1', '-n2', '-x1', '--run', '--force', '--bitmap=internal', ...r1], dir);
      const rs = await waitIdle(d.runDir, 'md0');
      keep(rsBest, rs.workedSectors * 512, rs);
      settle();
      tsmdCli(d.runDir, ['/dev/md0', '--fail', r1[1]!], dir);
      const rec = await waitIdle(d.runDir, 'md0');
      keep(recBest, rec.workedSectors * 512, rec);
      tsmdCli(d.runDir, ['--stop', '/dev/md0'], dir);
    }
    console.log(`  (best of ${reps} rounds each)`);
    console.log(ratioLine('raid1 resync', rsBest, best.cp, best.cpSync));
    console.log(ratioLine('raid1 recovery', recBest, best.cp, best.cpSync));

    // --- check: raid5 of 4, against cat of the four files
    const r5 = [0, 1, 2, 3].map((k) => join(dir, `r5-${k}.img`));
    for (const f of r5) fill(f, mib + 4);
    tsmdCli(d.runDir, ['--create', '/dev/md1', '-l5', '-n4', '-c512', '--run', '--assume-clean', '--force', ...r5], dir);
    tsmdCli(d.runDir, ['--action=repair', '/dev/md1'], dir); // make the parity right first
    await waitIdle(d.runDir, 'md1');
    let ckMBs = 0;
    for (let rep = 0; rep < reps; rep++) {
      settle();
      const catSecs = seconds(() => spawnSync('sh', ['-c', `cat ${r5.map((f) => `'${f}'`).join(' ')} > /dev/null`]));
      best.cat = Math.max(best.cat, (4 * memberBytes) / 1e6 / catSecs);
      tsmdCli(d.runDir, ['--action=check', '/dev/md1'], dir);
      const ck = await waitIdle(d.runDir, 'md1');
      ckMBs = Math.max(ckMBs, (4 * ck.workedSectors * 512) / 1e6 / ck.secs);
    }
    console.log(`  raid5 check        ${ckMBs.toFixed(0).padStart(6)} MB/s   cat ${best.cat.toFixed(0).padStart(5)} MB/s   ratio ${(ckMBs / best.cat).toFixed(2)}x (target >= 0.8x)`);
    tsmdCli(d.runDir, ['--stop', '/dev/md1'], dir);

    // --- random 4 KiB writes over NBD with the bitmap on and off (raid1 of 2): both arrays
    // up at once, runs alternating, best of each side (single runs on 2 shared cores swing)
    const iops: Record<string, number> = { none: 0, internal: 0 };
    const mds: Record<string, string> = { none: '/dev/md2', internal: '/dev/md3' };
    for (const bm of ['none', 'internal']) {
      const files = [0, 1].map((k) => join(dir, `bm-${bm}-${k}.img`));
      for (const f of files) sparse(f, (mib + 4) * MiB);
      tsmdCli(d.runDir, ['--create', mds[bm]!, '-l1', '-n2', '--run', '--assume-clean', `--bitmap=${bm}`, ...(bm === 'internal' ? ['--bitmap-chunk=64M'] : []), ...files], dir);
    }
    for (let rep = 0; rep < 3; rep++) {
      for (const bm of rep % 2 === 0 ? ['none', 'internal'] : ['internal', 'none']) {
        settle();
        const r = await runFio(`nbd://127.0.0.1:${d.port}/${mds[bm]!.slice(5)}`, { rw: 'randwrite', bs: '4k', iodepth: 32, sizeBytes: mib * MiB, seconds: opts.quick ? 3 : 8 }, dir);
        iops[bm] = Math.max(iops[bm]!, r.iops);
      }
    }
    for (const bm of ['none', 'internal']) tsmdCli(d.runDir, ['--stop', mds[bm]!], dir);
    console.log(`  raid1 randwrite 4K QD32 (best of 3): bitmap ${iops.internal!.toFixed(0)} IOPS, none ${iops.none!.toFixed(0)} IOPS   ratio ${(iops.internal! / iops.none!).toFixed(2)}x (target >= 0.9x)`);
  } finally {
    await d.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1]?.endsWith('sync.js')) {
  if (!have('fio')) throw new Error('fio is needed (apt-get install fio)');
  await runSyncBench({ quick: process.argv.includes('--quick') });
}
