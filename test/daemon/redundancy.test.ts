/**
 * Redundancy at runtime, driven as a user would: a daemon (with --fault-injection so member
 * devices can be made to fail), arrays created with the CLI, sustained writes by NBD clients.
 *  - fault matrix (raid1/5/6/10): read errors answered from redundancy and rewritten, a write
 *    error that fails a member and a hot spare rebuilt in its place, a member that vanishes,
 *    a new spare added and rebuilt; the clients never see an error, every byte reads back,
 *    and check reports mismatch_cnt 0;
 *  - a stale member (its file moved aside while the array ran degraded) is left out at
 *    assembly, re-added with --re-add, and only the chunks written meanwhile are copied;
 *  - tsmd --monitor with --program: the events and their order.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ArrayState, controlCall } from '../../src/daemon/control.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { prng } from '../helpers/prng.js';
import { alertProgram, fields, requireTool, run, sparseFile, tempDir, tsmdBin } from '../helpers/tools.js';

const MiB = 1024 * 1024;

async function state(d: TestDaemon, md = 'md0'): Promise<ArrayState> {
  const rep = await controlCall(join(d.runDir, 'control.sock'), { op: 'arrays' }, 5000);
  const a = rep.arrays?.find((x) => x.mdName === md);
  assert.ok(a, `${md} is running`);
  return a;
}

async function fault(d: TestDaemon, f: NonNullable<Parameters<typeof controlCall>[1]['fault']>): Promise<void> {
  const rep = await controlCall(join(d.runDir, 'control.sock'), { op: 'fault', fault: f }, 5000);
  assert.equal(rep.code, 0, rep.stderr);
}

async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** data area of a member file, from mdadm --examine's own words when mdadm is there */
function dataOffsetBytes(file: string): number {
  const e = run(process.execPath, [tsmdBin, '--examine', file]);
  const m = /Data Offset : (\d+) sectors/.exec(e.stdout);
  assert.ok(m, e.stdout + e.stderr);
  return Number(m[1]) * 512;
}

describe('fault matrix: errors during sustained NBD writes', () => {
  let dir: ReturnType<typeof tempDir>;
  let d: TestDaemon;
  before(async () => {
    dir = tempDir('faults');
    d = await startDaemon(join(dir.path, 'run'), ['--fault-injection', '--speed-limit-min=200000']);
  });
  after(async () => {
    await d.stop();
    dir.cleanup();
  });

  const cases = [
    { level: 'raid1', n: 2, extra: [] as string[] },
    { level: 'raid5', n: 4, extra: ['-c64'] },
    { level: 'raid6', n: 5, extra: ['-c64'] },
    { level: 'raid10', n: 4, extra: ['-c64', '--layout=n2'] },
  ];
  let mdNo = 0;
  for (const c of cases) {
    test(c.level, async (t) => {
      t.after(() => {
        if (process.env.TSMD_TEST_LOGS) console.log(d.logs().split('\n').filter((l) => l.includes('"array":"md') || /error|fault/i.test(l)).slice(-40).join('\n'));
      });
      const md = `md${mdNo++}`;
      const files = Array.from({ length: c.n + 2 }, (_, k) => sparseFile(join(dir.path, `${c.level}-${k}.img`), 16 * MiB));
      const members = files.slice(0, c.n + 1); // n active + one hot spare
      const later = files[c.n + 1]!; // added by hand after a member vanished
      let r = d.tsmd(['--create', `/dev/${md}`, `--level=${c.level}`, `-n${c.n}`, '-x1', ...c.extra, '--run', '--assume-clean', '--bitmap=internal', '--bitmap-chunk=256K', ...members]);
      assert.equal(r.status, 0, r.stderr);
      const cl = await NbdTestClient.connect(d.info.nbd!.port, md);
      const size = cl.sizeBytes;
      const model = Buffer.alloc(size);
      const rnd = prng(c.n * 101 + c.level.length);
      let stop = false;
      let writes = 0;
      // two writers on disjoint halves, and a reader that checks what is already acknowledged
      const writer = async (half: number) => {
        const w = await NbdTestClient.connect(d.info.nbd!.port, md);
        while (!stop) {
          const len = 4096 * (1 + Math.floor(rnd() * 16));
          const base = half * (size / 2);
          const off = base + Math.floor(rnd() * ((size / 2 - len) / 4096)) * 4096;
          const data = randomBytes(len);
          await w.write(off, data);
          data.copy(model, off);
          writes++;
        }
        await w.close();
      };
      const running = [writer(0), writer(1)];
      const sync = () => state(d, md);
      // 1. read errors on member 0: answered from redundancy, corrected, member stays
      const off0 = dataOffsetBytes(members[0]!);
      // three bad spots, each fixed by the rewrite (the drive remaps the sector)
      for (const k of [0, 1, 2]) await fault(d, { path: members[0]!, kind: 'read', startBytes: off0 + k * MiB, endBytes: off0 + k * MiB + 4096, count: 1 });
      // reads over the whole array (so every member's first MiBs are read at least once)
      for (let at = 0; at < size; at += MiB) {
        const got = await cl.read(at, Math.min(MiB, size - at));
        assert.ok(got.length > 0);
      }
      assert.equal((await sync()).members.find((m) => m.path === members[0])!.faulty, false, 'a corrected read error does not fail the member');
      assert.match(d.logs(), /read error corrected/);
      // bad spots the reads happened not to touch (another copy served them) go away
      await fault(d, { path: members[0]!, kind: 'clear' });
      // 2. write errors on member 1: it fails, the hot spare takes its slot and is rebuilt
      await fault(d, { path: members[1]!, kind: 'write', count: null });
      await until('member 1 failed', async () => (await sync()).members.find((m) => m.path === members[1])!.faulty);
      await until('spare rebuilt', async () => {
        const s = await sync();
        return !s.degraded && !s.syncBusy && s.members.find((m) => m.path === members[c.n])!.slot !== null;
      });
      // 3. a member vanishes: the array goes on degraded; a new spare is added and rebuilt
      await fault(d, { path: members[2]!, kind: 'vanish' });
      await until('member 2 failed', async () => (await sync()).members.find((m) => m.path === members[2])!.faulty);
      assert.equal((await sync()).degraded, true);
      r = d.tsmd([`/dev/${md}`, '--add', later]);
      assert.equal(r.status, 0, r.stderr);
      await until('new member rebuilt', async () => {
        const s = await sync();
        return !s.degraded && !s.syncBusy;
      });
      stop = true;
      await Promise.all(running);
      assert.ok(writes > 20, `sustained writes (${writes})`);
      // every byte reads back
      for (let off = 0; off < size; off += MiB) {
        const got = await cl.read(off, Math.min(MiB, size - off));
        assert.ok(got.equals(model.subarray(off, off + got.length)), `${c.level}: data differs in MiB ${off / MiB}`);
      }
      await cl.close();
      // and the redundancy is consistent
      r = d.tsmd(['--action=check', `/dev/${md}`]);
      assert.equal(r.status, 0, r.stderr);
      await until('check done', async () => !(await sync()).syncBusy);
      const s = await sync();
      const checkRun = s.syncHistory.filter((h) => h.kind === 'check').at(-1);
      assert.ok(checkRun?.completed, 'check completed');
      assert.equal(s.mismatchCnt, 0);
      // the superblocks tell the story (judged by mdadm when it is there)
      const detailText = d.tsmd(['--detail', `/dev/${md}`]).stdout;
      const detail = fields(detailText);
      assert.equal(detail.get('Failed Devices'), '2', detailText);
      assert.equal(detail.get('Active Devices'), String(c.n));
      assert.ok(/error|corrected/.test(d.logs()));
      r = d.tsmd(['--stop', `/dev/${md}`]);
      assert.equal(r.status, 0, r.stderr);
    });
  }
});

describe('stale member and --re-add; monitoring', () => {
  let dir: ReturnType<typeof tempDir>;
  let d: TestDaemon;
  before(async () => {
    dir = tempDir('stale');
    d = await startDaemon(join(dir.path, 'run'), ['--speed-limit-min=200000']);
  });
  after(async () => {
    await d.stop();
    dir.cleanup();
  });

  test('a member copied aside and put back is left out, re-added, and only the dirty chunks are copied', async (t) => {
    const files = [0, 1, 2].map((k) => sparseFile(join(dir.path, `s${k}.img`), 24 * MiB));
    let r = d.tsmd(['--create', '/dev/md/stale', '-l1', '-n3', '--run', '--assume-clean', '--bitmap=internal', '--bitmap-chunk=64K', '--homehost=h', ...files]);
    assert.equal(r.status, 0, r.stderr);
    let c = await NbdTestClient.connect(d.info.nbd!.port, 'stale');
    const all = randomBytes(c.sizeBytes);
    await c.write(0, all, true);
    await c.close();
    r = d.tsmd(['--stop', '/dev/md/stale']);
    assert.equal(r.status, 0, r.stderr);
    // the disk goes away; the array runs degraded and gets writes in five chunks
    renameSync(files[2]!, `${files[2]}.aside`);
    r = d.tsmd(['--assemble', '/dev/md/stale', '--run', files[0]!, files[1]!]);
    assert.equal(r.status, 0, r.stderr);
    c = await NbdTestClient.connect(d.info.nbd!.port, 'stale');
    for (const chunk of [1, 7, 8, 100, 300]) {
      const data = randomBytes(8192);
      await c.write(chunk * 65536 + 4096, data, true);
      data.copy(all, chunk * 65536 + 4096);
    }
    await c.close();
    r = d.tsmd(['--stop', '/dev/md/stale']);
    assert.equal(r.status, 0, r.stderr);
    renameSync(`${files[2]}.aside`, files[2]!);
    // back: older events, so it is kicked at assembly
    r = d.tsmd(['--assemble', '/dev/md/stale', '--run', ...files]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /kicking non-fresh .*s2\.img/);
    let s = await state(d, 'md127');
    assert.equal(s.degraded, true);
    assert.equal(s.members.some((m) => m.path === files[2]), false);
    r = d.tsmd(['/dev/md/stale', '--re-add', files[2]!]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /re-added/);
    await until('re-add recovery', async () => {
      const x = await state(d, 'md127');
      return !x.degraded && !x.syncBusy;
    });
    s = await state(d, 'md127');
    const rec = s.syncHistory.filter((h) => h.kind === 'recovery');
    assert.equal(rec.length, 1);
    assert.equal(rec[0]!.workedSectors, 5 * 128, 'exactly the five 64 KiB chunks written while it was away');
    c = await NbdTestClient.connect(d.info.nbd!.port, 'stale');
    assert.ok((await c.read(0, c.sizeBytes)).equals(all));
    await c.close();
    r = d.tsmd(['--stop', '/dev/md/stale']);
    assert.equal(r.status, 0, r.stderr);
    // the re-added member's data area equals the others', byte for byte
    const areas = files.map((f) => {
      const off = dataOffsetBytes(f);
      return readFileSync(f).subarray(off, off + all.length);
    });
    assert.ok(areas[2]!.equals(areas[0]!) && areas[1]!.equals(areas[0]!));
    if (requireTool(t, 'mdadm')) {
      const ev = files.map((f) => fields(run('mdadm', ['--examine', f]).stdout).get('Events'));
      assert.equal(new Set(ev).size, 1, `events agree: ${ev.join(' ')}`);
    }
  });

  test('--replace --with through the CLI: mdadm --examine shows the replacement mid-way (stop and re-assemble keep it) and the old member faulty at the end', async (t) => {
    const files = [0, 1, 2, 3].map((k) => sparseFile(join(dir.path, `r${k}.img`), 24 * MiB));
    let r = d.tsmd(['--create', '/dev/md/repl', '-l5', '-n3', '-c64', '--run', '--assume-clean', '--homehost=h', ...files.slice(0, 3)]);
    assert.equal(r.status, 0, r.stderr);
    let c = await NbdTestClient.connect(d.info.nbd!.port, 'repl');
    const all = randomBytes(c.sizeBytes);
    for (let off = 0; off < all.length; off += 8 * MiB) await c.write(off, all.subarray(off, Math.min(all.length, off + 8 * MiB)), true);
    await c.close();
    r = d.tsmd(['--speed-limit-max=2000', '/dev/md/repl']);
    assert.equal(r.status, 0, r.stderr);
    r = d.tsmd(['/dev/md/repl', '--add', files[3]!, '--replace', files[1]!, '--with', files[3]!]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /Marked .*r1\.img \(device 1 in \/dev\/md\/repl\) for replacement/);
    assert.match(r.stderr, /Marked .*r3\.img in \/dev\/md\/repl as replacement for device 1/);
    await until('replacement started', async () => (await state(d, 'md127')).sync?.kind === 'recovery');
    await new Promise((res) => setTimeout(res, 600));
    const mdstat = readFileSync(join(d.runDir, 'mdstat'), 'utf8');
    assert.match(mdstat, /r3\.img\[3\]\(R\)/, mdstat);
    assert.match(mdstat, /\[3\/3\] \[UUU\]/, 'never degraded');
    r = d.tsmd(['--stop', '/dev/md/repl']);
    assert.equal(r.status, 0, r.stderr);
    if (requireTool(t, 'mdadm')) {
      const e = fields(run('mdadm', ['--examine', files[3]!]).stdout);
      assert.equal(e.get('Device Role'), 'Replacement device 1');
      assert.match(e.get('Array State') ?? '', /^ARA /);
      assert.match(e.get('Recovery Offset') ?? '', /^\d+ sectors$/);
    }
    r = d.tsmd(['--assemble', '/dev/md/repl', ...files]);
    assert.equal(r.status, 0, r.stderr);
    // (at the default speed the rest of the copy may be over before a --wait could see it)
    await until('replacement done', async () => {
      const x = await state(d, 'md127');
      return !x.syncBusy && x.members.some((m) => m.path === files[1] && m.faulty);
    });
    r = d.tsmd(['--detail', '/dev/md/repl']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /State : clean \n/);
    assert.match(r.stdout, /Failed Devices : 1\n/);
    assert.match(r.stdout, /faulty +\S*r1\.img/);
    assert.match(r.stdout, /active sync +\S*r3\.img/);
    c = await NbdTestClient.connect(d.info.nbd!.port, 'repl');
    for (let off = 0; off < all.length; off += 8 * MiB) {
      const n = Math.min(8 * MiB, all.length - off);
      assert.ok((await c.read(off, n)).equals(all.subarray(off, off + n)), `bytes at ${off}`);
    }
    await c.close();
    r = d.tsmd(['--action=check', '/dev/md/repl']);
    assert.equal(r.status, 0, r.stderr);
    await until('check', async () => !(await state(d, 'md127')).syncBusy);
    assert.equal((await state(d, 'md127')).mismatchCnt, 0);
    r = d.tsmd(['--stop', '/dev/md/repl']);
    assert.equal(r.status, 0, r.stderr);
    if (requireTool(t, 'mdadm')) {
      const e = fields(run('mdadm', ['--examine', files[3]!]).stdout);
      assert.equal(e.get('Device Role'), 'Active device 1');
      assert.match(e.get('Array State') ?? '', /^AAA /);
    }
  });

  test('--monitor --program sees Fail, the rebuild steps, RebuildFinished, SpareActive and DeviceDisappeared in order', async () => {
    const files = [0, 1, 2].map((k) => sparseFile(join(dir.path, `mon${k}.img`), 24 * MiB));
    let r = d.tsmd(['--create', '/dev/md5', '-l1', '-n2', '-x1', '--run', '--assume-clean', '--bitmap=internal', files[0]!, files[1]!, files[2]!]);
    assert.equal(r.status, 0, r.stderr);
    const c = await NbdTestClient.connect(d.info.nbd!.port, 'md5');
    await c.write(0, randomBytes(c.sizeBytes), true);
    await c.close();
    // a recovery slow enough to be watched: about 3 s
    r = d.tsmd(['--speed-limit-max=8000', '--speed-limit-min=1000', '/dev/md5']);
    assert.equal(r.status, 0, r.stderr);
    const { program: script, events: seen, clear } = alertProgram(dir.path, 'handler');
    // one-shot test mode first: a TestMessage per array
    r = d.tsmd(['--monitor', '--scan', '--oneshot', '--test', `--program=${script}`]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(seen(), /^TestMessage \/dev\/md5 $/m);
    clear();
    const mon = spawn(process.execPath, [tsmdBin, '--run-dir', d.runDir, '--monitor', '--delay=0.1', `--program=${script}`, '/dev/md5'], { stdio: 'ignore' });
    try {
      await new Promise((res) => setTimeout(res, 500));
      r = d.tsmd(['/dev/md5', '--fail', files[0]!]);
      assert.equal(r.status, 0, r.stderr);
      await until('recovery done', async () => {
        const s = await state(d, 'md5');
        return !s.degraded && !s.syncBusy;
      });
      await new Promise((res) => setTimeout(res, 500));
      r = d.tsmd(['--stop', '/dev/md5']);
      assert.equal(r.status, 0, r.stderr);
      await until('DeviceDisappeared', async () => /DeviceDisappeared/.test(seen()), 10_000);
    } finally {
      mon.kill();
    }
    const lines = seen().trim().split('\n');
    const names = lines.map((l) => l.split(' ')[0]!);
    const steps = names.filter((n) => /^Rebuild\d\d$/.test(n));
    assert.ok(steps.length >= 2, `rebuild progress steps seen: ${lines.join(' | ')}`);
    assert.deepEqual(steps, [...steps].sort(), 'steps increase');
    // the failure and the start of the rebuild usually land in one poll: mdadm reports the
    // sync events of a poll before the device events (Monitor.c), so either order is right
    assert.deepEqual(new Set(names.slice(0, 2)), new Set(['Fail', 'RebuildStarted']), lines.join('\n'));
    assert.deepEqual(names.slice(2), [...steps, 'RebuildFinished', 'SpareActive', 'DeviceDisappeared'], lines.join('\n'));
    assert.equal(lines[names.indexOf('Fail')], `Fail /dev/md5 ${files[0]}`);
    assert.equal(lines[names.indexOf('SpareActive')], `SpareActive /dev/md5 ${files[2]}`);
  });
  test('--monitor reports a reshape as mdadm does: RebuildStarted, the steps, RebuildFinished', async () => {
    const files = [0, 1, 2, 3, 4].map((k) => sparseFile(join(dir.path, `monr${k}.img`), 16 * MiB));
    let r = d.tsmd(['--create', '/dev/md6', '-l5', '-n4', '-c64', '--run', '--assume-clean', ...files.slice(0, 4)]);
    assert.equal(r.status, 0, r.stderr);
    r = d.tsmd(['/dev/md6', '--add', files[4]!]);
    assert.equal(r.status, 0, r.stderr);
    // a reshape slow enough to be watched: about 3 s
    r = d.tsmd(['--speed-limit-max=5000', '--speed-limit-min=1000', '/dev/md6']);
    assert.equal(r.status, 0, r.stderr);
    const { program: script, events: seen } = alertProgram(dir.path, 'handler-reshape');
    const mon = spawn(process.execPath, [tsmdBin, '--run-dir', d.runDir, '--monitor', '--delay=0.1', `--program=${script}`, '/dev/md6'], { stdio: 'ignore' });
    try {
      await new Promise((res) => setTimeout(res, 500));
      r = d.tsmd(['--grow', '/dev/md6', '--raid-devices=5']);
      assert.equal(r.status, 0, r.stderr);
      await until('reshape done', async () => (await state(d, 'md6')).reshape === null, 30_000);
      await until('RebuildFinished', async () => /RebuildFinished/.test(seen()), 10_000);
    } finally {
      mon.kill();
      d.tsmd(['--stop', '/dev/md6']);
    }
    const lines = seen().trim().split('\n');
    const names = lines.map((l) => l.split(' ')[0]!);
    const steps = names.filter((n) => /^Rebuild\d\d$/.test(n));
    assert.ok(steps.length >= 2, `reshape progress steps seen: ${lines.join(' | ')}`);
    // the spare takes the new slot in sync when the reshape starts (md's raid5_start_reshape):
    // mdadm sees an active device where a spare was
    assert.deepEqual(lines.filter((l) => l.startsWith('SpareActive')), [`SpareActive /dev/md6 ${files[4]}`], lines.join('\n'));
    assert.deepEqual(names.filter((n) => n !== 'SpareActive'), ['RebuildStarted', ...steps, 'RebuildFinished'], lines.join('\n'));
    assert.deepEqual(steps, [...steps].sort(), 'steps increase');
  });
});
