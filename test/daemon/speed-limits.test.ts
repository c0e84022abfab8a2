/**
 * The node-wide sync speed limits at run time: `tsmd --speed-limit-min=K --speed-limit-max=K`
 * without an array, what writing /proc/sys/dev/raid/speed_limit_min/_max does on Linux (the
 * speed-limit writes of mdadm's clustermd_tests become this). A running resync slows to the
 * new max (measured from its progress, and in the mdstat file's speed=), speeds up again when
 * it is raised and finishes; an array started after the change syncs under it from the start.
 * Without a daemon it is an error that says so; bad values are usage errors; min above max is
 * accepted, as md accepts it, and the max wins.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ArrayState, controlCall } from '../../src/daemon/control.js';
import { controlPath } from '../../src/daemon/daemon.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { sparseFile, tempDir, tsmd } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('node-wide sync speed limits', () => {
  let dir: { path: string; cleanup: () => void };
  let d: TestDaemon;
  let files: string[];

  before(async () => {
    dir = tempDir('speed');
    files = ['a', 'b', 'c', 'e'].map((n) => sparseFile(join(dir.path, n), 256 * MiB));
    // at start: 20 MB/s, so the first resync (256 MiB) is still running when the test lowers it
    d = await startDaemon(join(dir.path, 'run'), ['--no-nbd', '--speed-limit-max=20000']);
  });
  after(async () => {
    if (d) assert.equal(await d.stop(), 0);
    dir.cleanup();
  });

  async function state(md: string): Promise<ArrayState> {
    const rep = await controlCall(controlPath(d.runDir), { op: 'arrays' }, 10_000);
    const s = rep.arrays?.find((x) => x.mdName === md);
    assert.ok(s, `${md} is running`);
    return s;
  }

  /** KiB/s of the running resync over `ms`, from its progress (doneSectors) */
  async function rate(md: string, ms: number): Promise<number> {
    const s0 = await state(md);
    assert.ok(s0.sync, `${md} is syncing`);
    const t0 = performance.now();
    await sleep(ms);
    const s1 = await state(md);
    assert.ok(s1.sync, `${md} is still syncing`);
    return (s1.sync.doneSectors - s0.sync.doneSectors) / 2 / ((performance.now() - t0) / 1000);
  }

  function setLimits(args: string[]): string {
    const r = d.tsmd(args);
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  }

  async function waitIdle(md: string, ms: number): Promise<void> {
    const t0 = Date.now();
    while ((await state(md)).sync !== null || (await state(md)).syncBusy) {
      assert.ok(Date.now() - t0 < ms, `${md} did not finish its sync within ${ms / 1000} s`);
      await sleep(100);
    }
  }

  test('a running resync follows a lowered max, then a raised one, and finishes', async () => {
    const r = d.tsmd(['--create', '/dev/md1', '--level=1', '--raid-devices=2', '--run', files[0]!, files[1]!]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(setLimits(['--speed-limit-max=2000']), 'dev.raid.speed_limit_min = 1000\ndev.raid.speed_limit_max = 2000\n');
    await sleep(1500); // the throttle looks at the last second or so
    const slow = await rate('md1', 3000);
    assert.ok(slow > 1000 && slow < 3200, `resync at ${slow.toFixed(0)} KiB/s with speed_limit_max 2000`);
    // the mdstat file's speed= (md's 10 s window) comes down to the limit too
    await sleep(9000);
    const line = /speed=(\d+)K\/sec/.exec(readFileSync(join(d.runDir, 'mdstat'), 'utf8'));
    assert.ok(line, 'mdstat shows the resync speed');
    assert.ok(Number(line[1]) > 1000 && Number(line[1]) < 3200, `mdstat speed=${line[1]}K/sec with speed_limit_max 2000`);
    assert.match(d.logs(), /"msg":"sync speed limits changed"/);
    // raised: it speeds up and ends
    assert.equal(setLimits(['--speed-limit-max=1000000', '--speed-limit-min=1000']), 'dev.raid.speed_limit_min = 1000\ndev.raid.speed_limit_max = 1000000\n');
    const fast = await rate('md1', 500).catch(() => Infinity); // it may be done already
    assert.ok(fast > 10 * 2000, `resync at ${fast} KiB/s after the max was raised`);
    await waitIdle('md1', 60_000);
    const last = (await state('md1')).syncHistory.at(-1);
    assert.ok(last && last.kind === 'resync' && last.completed, 'the resync completed');
  });

  test('an array started after the change syncs under the new max from the start; its own limit overrides it', async () => {
    setLimits(['--speed-limit-max=2000']);
    const r = d.tsmd(['--create', '/dev/md2', '--level=1', '--raid-devices=2', '--run', files[2]!, files[3]!]);
    assert.equal(r.status, 0, r.stderr);
    await sleep(1500);
    const slow = await rate('md2', 3000);
    assert.ok(slow > 1000 && slow < 3200, `new array resyncs at ${slow.toFixed(0)} KiB/s with speed_limit_max 2000`);
    // md's sync_speed_max for this array alone, then "system" again
    let out = d.tsmd(['--speed-limit-max=8000', '/dev/md2']);
    assert.equal(out.status, 0, out.stderr);
    assert.equal(out.stdout, '/dev/md2: sync speed limits 1000 (system) / 8000 (local) KiB/s\n');
    await sleep(1500);
    const own = await rate('md2', 3000);
    assert.ok(own > 5000 && own < 11000, `the array's own max 8000: ${own.toFixed(0)} KiB/s`);
    out = d.tsmd(['--speed-limit-max=system', '/dev/md2']);
    assert.equal(out.stdout, '/dev/md2: sync speed limits 1000 (system) / 2000 (system) KiB/s\n');
    setLimits(['--speed-limit-max=1000000']);
    await waitIdle('md2', 60_000);
  });

  test('min above max: accepted as md does, with a note; max still bounds the sync', () => {
    const r = d.tsmd(['--speed-limit-min=5000', '--speed-limit-max=3000']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'dev.raid.speed_limit_min = 5000\ndev.raid.speed_limit_max = 3000\n');
    assert.match(r.stderr, /speed_limit_min \(5000\) is above speed_limit_max \(3000\): md accepts it, and the max wins/);
    setLimits(['--speed-limit-min=1000', '--speed-limit-max=200000']);
  });

  test('bad values are usage errors (exit 2) and change nothing', () => {
    for (const v of ['0', '-5', 'abc', '1.5', '2147483648', 'system']) {
      const r = d.tsmd([`--speed-limit-max=${v}`]);
      assert.equal(r.status, 2, `${v}: ${r.stderr}`);
      assert.match(r.stderr, /--speed-limit-max wants a positive whole number of KiB\/s/);
    }
    assert.equal(setLimits(['--speed-limit-min=1000']), 'dev.raid.speed_limit_min = 1000\ndev.raid.speed_limit_max = 200000\n');
  });

  test('without a node daemon: an error that says the limits are the daemon\'s', () => {
    const r = tsmd(['--run-dir', join(dir.path, 'nobody'), '--speed-limit-max=2000']);
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stderr, 'tsmd: no node daemon is running: the node-wide sync speed limits (md\'s /proc/sys/dev/raid/speed_limit_min and _max) are those of "tsmd daemon"\n');
  });
});
