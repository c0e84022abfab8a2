/**
 * Reshapes in the daemon (tsmd --grow --raid-devices / --chunk) on file members, judged by an
 * NBD client that knows which writes were acknowledged, by the superblocks and by check:
 *
 *  - the daemon is killed (SIGKILL) at random moments while the reshape runs and NBD writers
 *    write (FUA and FLUSH); after every restart and re-assembly the reshape resumes, and every
 *    write acknowledged with FUA or before an acknowledged FLUSH reads back;
 *  - at the end the array has its new geometry and size (a new NBD connection sees it), every
 *    durable write reads back, check finds 0 mismatches, and the real mdadm --examine prints
 *    what tsmd --examine prints for every member;
 *  - bad --grow requests are refused with mdadm's message and nothing is written.
 * TSMD_RESHAPE_CRASH_ITERATIONS sets the kills per reshape (default 10: 60 in all over the six
 * reshapes of test/daemon/reshape-crash*.test.ts; more for a long run).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { controlCall } from '../../src/daemon/control.js';
import { startDaemon, type TestDaemon } from './daemon.js';
import { NbdTestClient } from './nbd-client.js';
import { prng } from './prng.js';
import { haveTool, run, sparseFile, tsmdBin } from './tools.js';

const MiB = 1024 * 1024;
const BLOCK = 4096;

export async function arrayState(d: TestDaemon) {
  const rep = await controlCall(join(d.runDir, 'control.sock'), { op: 'arrays' }, 5000);
  return rep.arrays!.find((a) => a.mdName === 'md0')!;
}

export async function until(d: TestDaemon, what: string, ok: (s: Awaited<ReturnType<typeof arrayState>>) => boolean): Promise<void> {
  const t0 = Date.now();
  while (!ok(await arrayState(d))) {
    assert.ok(Date.now() - t0 < 60_000, `${what} within a minute`);
    await new Promise((r) => setTimeout(r, 30));
  }
}

/** Every durable block reads back: the array read 1 MiB at a time, 8 reads in flight. */
async function verify(port: number, durable: Map<number, Buffer>, why: string): Promise<void> {
  const v = await NbdTestClient.connect(port, 'md0');
  try {
    const per = MiB / BLOCK;
    const jobs = [...new Set([...durable.keys()].map((b) => b - (b % per)))].sort((x, y) => x - y);
    for (let i = 0; i < jobs.length; i += 8) {
      await Promise.all(
        jobs.slice(i, i + 8).map(async (b0) => {
          const n = Math.min(per, Math.floor(v.sizeBytes / BLOCK) - b0);
          const got = await v.read(b0 * BLOCK, n * BLOCK);
          for (let k = 0; k < n; k++) {
            const want = durable.get(b0 + k);
            if (want) assert.ok(got.subarray(k * BLOCK, (k + 1) * BLOCK).equals(want), `${why}: block ${b0 + k} lost an acknowledged durable write`);
          }
        }),
      );
    }
  } finally {
    await v.close();
  }
}

export interface Kind {
  name: string;
  level: 5 | 6 | 10;
  /** --layout at create (raid10's n2) */
  layout?: string;
  n: number;
  spares: number;
  grow: string[];
  bitmap: boolean;
  /** raid disks and chunk (KiB) at the end */
  disks: number;
  chunkKiB: number;
  /** the level at the end (a --level change; default: level) */
  endLevel?: 5 | 6;
  /** does the array grow (default: when spares join) */
  grows?: boolean;
  /** what --grow prints (mdadm's "level of /dev/md0 changed to raid6") */
  says?: RegExp;
  /** a shrink: --array-size to the size mdadm's refusal suggests, first */
  shrink?: boolean;
  /** --grow with --backup-file (a reshape in place; the daemon's run directory links it) */
  backup?: boolean;
  /** --create --size (KiB): room after the data for the data offset to move up */
  createSizeKiB?: number;
  /** --metadata at create (1.0: the data at sector 0, no room before it: a grow runs in place) */
  metadata?: '1.0';
  /**
   * kills when TSMD_RESHAPE_CRASH_ITERATIONS is not set (default 10); the kinds the issue names
   * (raid5/raid6 grow, raid5 -> raid6, chunk change, raid5 shrink) add up to 40 per CI run
   */
  iterations?: number;
}

export const kinds: Kind[] = [
  { name: 'raid5 grow 4->5', level: 5, n: 4, spares: 1, grow: ['--raid-devices=5'], bitmap: true, disks: 5, chunkKiB: 64, iterations: 7 },
  { name: 'raid6 grow 5->6', level: 6, n: 5, spares: 1, grow: ['--raid-devices=6'], bitmap: false, disks: 6, chunkKiB: 64, iterations: 7 },
  { name: 'raid5 chunk 64K->128K', level: 5, n: 4, spares: 0, grow: ['--chunk=128'], bitmap: false, disks: 4, chunkKiB: 128, iterations: 7 },
  // takeover to left-symmetric-6 + reshape to left-symmetric, Q rebuilt along with it
  {
    name: 'raid5 -> raid6',
    level: 5,
    n: 4,
    spares: 1,
    grow: ['--level=6', '--raid-devices=5'],
    bitmap: true,
    disks: 5,
    chunkKiB: 64,
    endLevel: 6,
    grows: false,
    says: /^tsmd: level of \/dev\/md0 changed to raid6$/m,
    iterations: 7,
  },
  { name: 'raid5 shrink 4->3 in place', level: 5, n: 4, spares: 0, grow: ['--raid-devices=3'], bitmap: false, disks: 3, chunkKiB: 64, shrink: true, backup: true, iterations: 6 },
  { name: 'raid5 shrink 4->3 offset up', level: 5, n: 4, spares: 0, grow: ['--raid-devices=3'], bitmap: true, disks: 3, chunkKiB: 64, shrink: true, createSizeKiB: 10 * 1024, iterations: 6 },
  // superblock 1.0 at full size: no room around the data, mdadm's old way (critical section
  // on the joining spare, then forwards in place)
  { name: 'raid5 grow 4->5 in place (1.0)', level: 5, n: 4, spares: 1, grow: ['--raid-devices=5'], bitmap: false, disks: 5, chunkKiB: 64, metadata: '1.0', iterations: 6 },
  { name: 'raid10 near=2 grow 4->5', level: 10, layout: 'n2', n: 4, spares: 1, grow: ['--raid-devices=5'], bitmap: true, disks: 5, chunkKiB: 64, iterations: 6 },
  // keeps the number of devices: the distance the data offset moved bounds every step
  // fewer devices: backwards, the data offset moved up; no room after the data, so the
  // component size first gives up min_offset_change (mdadm's raid10_reshape)
  { name: 'raid10 offset=2 shrink 5->4', level: 10, layout: 'o2', n: 5, spares: 0, grow: ['--raid-devices=4'], bitmap: false, disks: 4, chunkKiB: 64, shrink: true, iterations: 5 },
  { name: 'raid10 near=2 -> offset=2, chunk 64K->128K', level: 10, layout: 'n2', n: 4, spares: 0, grow: ['--layout=o2', '--chunk=128'], bitmap: false, disks: 4, chunkKiB: 128, iterations: 5 },
];

/** What each member adds to the array (raid10 near=2: half a member), as a count of members. */
function dataMembers(level: number, disks: number): number {
  return level === 10 ? disks / 2 : disks - (level === 6 ? 2 : 1);
}

/** One reshape kind: create, grow, kill -9 at random moments, finish, judge. */
export async function reshapeCrashRun(k: Kind, dir: string): Promise<void> {
  const iterations = Number(process.env.TSMD_RESHAPE_CRASH_ITERATIONS ?? k.iterations ?? 10);
  const tag = k.name.replace(/[^a-z0-9]+/gi, '-');
  const files = Array.from({ length: k.n + k.spares }, (_, i) => sparseFile(join(dir, `${tag}-${i}.img`), 12 * MiB));
  const runDir = join(dir, `run-${tag}`);
  // slow enough that the kills land inside the reshape
  const opts = ['--speed-limit-max=250'];
  let d = await startDaemon(runDir, opts);
  try {
    let r = d.tsmd(['--create', '/dev/md0', `--level=${k.level}`, `-n${k.n}`, '-c64', ...(k.metadata ? [`--metadata=${k.metadata}`] : []), ...(k.layout ? [`--layout=${k.layout}`] : []), '--run', '--assume-clean', ...(k.bitmap ? ['--bitmap=internal'] : []), ...(k.createSizeKiB ? [`--size=${k.createSizeKiB}`] : []), ...files.slice(0, k.n)]);
    assert.equal(r.status, 0, r.stderr);
    if (k.shrink) {
      // mdadm's refusal names the size; --array-size truncates the array to it (not on disk)
      r = d.tsmd(['--grow', '/dev/md0', ...k.grow]);
      assert.equal(r.status, 1, r.stderr);
      const m = /e\.g\. mdadm --grow \/dev\/md0 --array-size (\d+)/.exec(r.stderr);
      assert.ok(m, r.stderr);
      r = d.tsmd(['--grow', '/dev/md0', `--array-size=${m[1]}`]);
      assert.equal(r.status, 0, r.stderr);
      const c = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
      assert.equal(c.sizeBytes, Number(m[1]) * 1024, 'the export has the new size');
      await c.close();
    }
    for (const f of files.slice(k.n)) {
      r = d.tsmd(['/dev/md0', '--add', f]);
      assert.equal(r.status, 0, r.stderr);
    }
    const durable = new Map<number, Buffer>();
    const rnd = prng(k.n * 7 + k.spares * 1000 + k.level);
    // before: a durable base over the whole array
    {
      const c = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
      const blocks = c.sizeBytes / BLOCK;
      for (let b = 0; b < blocks; b += 64) {
        const data = randomBytes(Math.min(64, blocks - b) * BLOCK);
        await c.write(b * BLOCK, data);
        for (let i = 0; i * BLOCK < data.length; i++) durable.set(b + i, data.subarray(i * BLOCK, (i + 1) * BLOCK));
      }
      await c.flush();
      await c.close();
    }
    const sizeBefore = (await arrayState(d)).raidDisks;
    assert.equal(sizeBefore, k.n);
    // after each kill the daemon assembles the array at start (its mdadm.conf), as at boot
    const conf = join(dir, `${tag}.conf`);
    writeFileSync(conf, `ARRAY /dev/md0 UUID=${(await arrayState(d)).uuid} devices=${files.join(',')}\n`);
    const bootOpts = [...opts, `--config=${conf}`];
    const backupFile = join(dir, `${tag}.backup`);
    if (k.shrink) {
      // without a backup file: mdadm's answer when the offset cannot move, nothing started
      r = d.tsmd(['--grow', '/dev/md0', ...k.grow]);
      if (k.backup) {
        assert.equal(r.status, 1, r.stderr);
        assert.match(r.stderr, /Cannot grow - need backup-file/);
        assert.equal((await arrayState(d)).reshape, null);
      } else assert.equal(r.status, 0, r.stderr);
    }
    if (!k.shrink || k.backup) {
      r = d.tsmd(['--grow', '/dev/md0', ...k.grow, ...(k.backup ? [`--backup-file=${backupFile}`] : [])]);
      assert.equal(r.status, 0, r.stderr);
      if (k.says) assert.match(r.stderr, k.says);
    }
    assert.ok((await arrayState(d)).reshape, 'the reshape started');
    if (k.backup) assert.ok(existsSync(backupFile), 'the backup file');
    let killsDuringReshape = 0;
    let acked = 0;
    const trace = process.env.TSMD_TRACE ? (m: string) => console.log(`${Date.now() % 100000} ${m}`) : () => {};
    for (let it = 0; it < iterations; it++) {
      trace(`iteration ${it} ${JSON.stringify((await arrayState(d)).reshape)}`);
      const reshaping = (await arrayState(d)).reshape !== null;
      const c = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
      const blocks = Math.floor(c.sizeBytes / BLOCK);
      // acknowledged, not yet flushed writes, per writer: a writer's FLUSH vouches for its own
      // (a shared map let one writer's flush, completing after the other's newer FUA write of
      // a block, record the older version as the durable one)
      const unflushedBy = [new Map<number, Buffer>(), new Map<number, Buffer>()];
      const touched = new Set<number>();
      let inflight: Array<{ b: number; count: number }> = [];
      let stop = false;
      let killing = false;
      let writeError: unknown = null;
      // each writer its own groups of 8 blocks (group % 2): two writes in flight on the same
      // block could land in either order, and the model could not tell which one is durable
      const writer = async (k: number) => {
        let unflushed = unflushedBy[k]!;
        while (!stop) {
          const group = Math.floor((rnd() * Math.floor(blocks / 8)) / 2) * 2 + k;
          const first = Math.floor(rnd() * 8);
          const b = group * 8 + first;
          const count = Math.min(1 + Math.floor(rnd() * (8 - first)), blocks - b);
          if (count <= 0) continue;
          const data = randomBytes(count * BLOCK);
          const fua = rnd() < 0.3;
          const mine = { b, count };
          inflight.push(mine);
          try {
            await c.write(b * BLOCK, data, fua);
          } catch (e) {
            if (!killing) writeError = e; // refused while the daemon ran: a failure
            return; // the daemon died
          }
          acked++;
          inflight = inflight.filter((x) => x !== mine);
          for (let i = 0; i < count; i++) touched.add(b + i);
          for (let i = 0; i < count; i++) {
            const piece = data.subarray(i * BLOCK, (i + 1) * BLOCK);
            if (fua) {
              durable.set(b + i, piece);
              unflushed.delete(b + i);
            } else unflushed.set(b + i, piece);
          }
          if (rnd() < 0.1) {
            const snapshot = unflushed;
            unflushed = new Map();
            unflushedBy[k] = unflushed;
            try {
              await c.flush();
            } catch (e) {
              if (!killing) writeError = e;
              for (const [x, v] of snapshot) if (!unflushed.has(x)) unflushed.set(x, v);
              return;
            }
            for (const [x, v] of snapshot) if (!unflushed.has(x)) durable.set(x, v);
          }
        }
      };
      // two writers: concurrent requests in flight across the frontier
      const writers = Promise.all([writer(0), writer(1)]);
      await new Promise((res) => setTimeout(res, 50 + rnd() * 300));
      killing = true;
      await d.stop('SIGKILL');
      if (reshaping) killsDuringReshape++;
      stop = true;
      await writers;
      assert.equal(writeError, null, `iteration ${it}: a write or flush failed while the daemon ran`);
      c.destroy();
      for (const m of unflushedBy) for (const x of m.keys()) durable.delete(x);
      for (const l of inflight) for (let i = 0; i < l.count; i++) durable.delete(l.b + i);
      trace('killed');
      // the superblocks a kill left in the middle of the reshape read in the real mdadm as in
      // tsmd (what the kernel would resume from: position, delta, new geometry, new offset)
      if (reshaping && killsDuringReshape === 1 && haveTool('mdadm')) {
        for (const f of files) {
          const ours = run(process.execPath, [tsmdBin, '--examine', f]);
          const theirs = run('mdadm', ['--examine', f]);
          assert.equal(theirs.status, 0, theirs.stderr);
          assert.equal(ours.stdout, theirs.stdout, `--examine ${f} in the middle of the reshape`);
          assert.match(theirs.stdout, /Reshape pos'n : \d+/);
        }
      }
      d = await startDaemon(runDir, bootOpts);
      trace('started');
      assert.ok(await arrayState(d), `iteration ${it}: assembled at start: ${d.logs()}`);
      // every 4th restart the whole array; else the blocks this iteration wrote (the rest
      // is read at the end: a block the reshape lost stays lost)
      const fresh = new Map([...touched.keys()].filter((x) => durable.has(x)).map((x) => [x, durable.get(x)!]));
      await verify(d.info.nbd!.port, it % 4 === 3 ? durable : fresh, `iteration ${it}`);
      trace('verified');
    }
    assert.ok(acked > iterations * 5, `writes acknowledged during the loop: ${acked}`);
    assert.ok(killsDuringReshape >= Math.min(iterations, 8), `kills during the reshape: ${killsDuringReshape} of ${iterations}`);
    // the end: let it finish at full speed
    r = d.tsmd(['--speed-limit-max=200000']);
    assert.equal(r.status, 0, r.stderr);
    await until(d, 'the reshape finishes', (s) => s.reshape === null && !s.syncBusy);
    const st = await arrayState(d);
    assert.equal(st.raidDisks, k.disks);
    if (k.backup) assert.equal(existsSync(backupFile), false, 'the backup file is removed at the end (as mdadm does)');
    await verify(d.info.nbd!.port, durable, 'after the reshape');
    {
      const c = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
      const endLevel = k.endLevel ?? k.level;
      // whole stripes (raid10: whole chunks, a stripe being a fraction of a row)
      const stripeBytes = (endLevel === 10 ? 1 : dataMembers(endLevel, k.disks)) * k.chunkKiB * 1024;
      assert.equal(c.sizeBytes % stripeBytes, 0);
      if (k.grows ?? k.spares > 0) assert.ok(c.sizeBytes > dataMembers(k.level, k.n) * 11 * MiB, `the export grew (${c.sizeBytes})`);
      // after: the new space is writable
      const tail = randomBytes(BLOCK);
      await c.write(c.sizeBytes - BLOCK, tail, true);
      assert.ok((await c.read(c.sizeBytes - BLOCK, BLOCK)).equals(tail));
      await c.close();
    }
    r = d.tsmd(['--action=check', '/dev/md0']);
    assert.equal(r.status, 0, r.stderr);
    await until(d, 'check', (s) => !s.syncBusy);
    const checked = await arrayState(d);
    assert.ok(checked.syncHistory.some((h) => h.kind === 'check' && h.completed), 'check ran');
    assert.equal(checked.mismatchCnt, 0, 'check after the reshape');
    const detail = d.tsmd(['--detail', '/dev/md0']);
    assert.match(detail.stdout, new RegExp(`Raid Devices : ${k.disks}\\n`));
    assert.match(detail.stdout, new RegExp(`Raid Level : raid${k.endLevel ?? k.level}\\n`));
    assert.match(detail.stdout, new RegExp(`Chunk Size : ${k.chunkKiB}K`));
    if (k.shrink) assert.match(detail.stdout, /Spare Devices : 1\n/, 'the member that left is a spare');
    assert.equal(await d.stop(), 0);
    // the real mdadm reads the superblocks as tsmd wrote them
    if (haveTool('mdadm')) {
      for (const f of files) {
        const ours = run(process.execPath, [tsmdBin, '--examine', f]);
        const theirs = run('mdadm', ['--examine', f]);
        assert.equal(theirs.status, 0, theirs.stderr);
        assert.equal(ours.stdout, theirs.stdout, `--examine ${f}`);
        assert.doesNotMatch(theirs.stdout, /Reshape pos'n/);
      }
    }
  } finally {
    if (d.proc.exitCode === null) await d.stop('SIGKILL');
  }
}

/** Bad --grow requests: mdadm's messages, nothing written. */
export async function badGrowRequests(dir: string): Promise<void> {
  const files = Array.from({ length: 4 }, (_, i) => sparseFile(join(dir, `bad-${i}.img`), 12 * MiB));
  const r1 = Array.from({ length: 2 }, (_, i) => sparseFile(join(dir, `bad-r1-${i}.img`), 12 * MiB));
  const d = await startDaemon(join(dir, 'run-bad'), ['--no-nbd']);
  try {
    let r = d.tsmd(['--create', '/dev/md0', '--level=5', '-n4', '-c64', '--run', '--assume-clean', ...files]);
    assert.equal(r.status, 0, r.stderr);
    r = d.tsmd(['--create', '/dev/md1', '--level=1', '-n2', '--run', '--assume-clean', ...r1]);
    assert.equal(r.status, 0, r.stderr);
    const hash = () => [...files, ...r1].map((f) => createHash('sha256').update(readFileSync(f)).digest('hex'));
    const before = hash();
    const refused: Array<[string[], number, RegExp]> = [
      [['--grow', '/dev/md0', '--raid-devices=5'], 1, /Need 1 spare to avoid degraded array, and only have 0\.\n\s+Use --force to over-ride this check\./],
      [['--grow', '/dev/md0', '--raid-devices=3'], 1, /this change will reduce the size of the array\.\n\s+use --grow --array-size first to truncate array\./],
      [['--grow', '/dev/md0', '--chunk=3'], 2, /invalid chunk\/rounding value: 3/],
      [['--grow', '/dev/md0', '--layout=bogus'], 1, /layout bogus not understood for raid5/],
      [['--grow', '/dev/md0', '--level=6'], 1, /Need 1 spare to avoid degraded array, and only have 0\.\n\s+Use --force to over-ride this check\./],
      [['--grow', '/dev/md0', '--size=32'], 1, /component size must be larger than chunk size\./],
      [['--grow', '/dev/md0', '--size=100M'], 1, /Cannot set device size for \/dev\/md0: No space left on device/],
      [['--grow', '/dev/md0', '--size=max', '--raid-devices=5'], 1, /cannot change component size at the same time as other changes\./],
      [['--grow', '/dev/md0', '--array-size=1000', '--raid-devices=3'], 1, /cannot change array size in same operation as changing raiddisks or level\./],
      [['--grow', '/dev/md0', '--array-size=100G'], 1, /--array-size setting is too large\./],
      [['--grow', '/dev/md0', '--array-size=0'], 2, /invalid array size: 0/],
      [['--grow', '/dev/md0', '--raid-devices=5', `--backup-file=${join(dir, 'bad.backup')}`], 1, /Need 1 spare to avoid degraded array/],
      [['--grow', '/dev/md0', '--raid-devices=3', `--backup-file=${join(dir, 'bad.backup')}`], 1, /this change will reduce the size of the array/],
      [['--grow', '/dev/md1', '--raid-devices=3'], 1, /Need 1 spare to avoid degraded array, and only have 0\.\n\s+Use --force to over-ride this check\./],
      [['--grow', '/dev/md1', '--add', files[0]!], 1, /can only add devices to linear arrays/],
      [['--grow', '/dev/md1', '--chunk=128'], 1, /reshaping raid1 is not supported yet by tsmd/],
    ];
    for (const [args, status, msg] of refused) {
      r = d.tsmd(args);
      assert.equal(r.status, status, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, msg, args.join(' '));
    }
    r = d.tsmd(['--grow', '/dev/md0', '--chunk=64']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /no change requested/);
    assert.deepEqual(hash(), before, 'nothing written');
    assert.equal(existsSync(join(dir, 'bad.backup')), false, 'no backup file left by a refused --grow');
  } finally {
    await d.stop();
  }
}
