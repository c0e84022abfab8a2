/**
 * Issue 15: a recovery interrupted by a crash resumes from its checkpoint. md_do_sync records
 * its progress (curr_resync_completed, copied into the rebuilding rdev's recovery_offset by
 * md_update_sb) every 1/16 of the device; a kill -9 of the daemon at 88% of a raid6 recovery
 * used to leave "Recovery Offset : 0" on the spare and the restarted recovery began again at 0.
 * Through the real daemon: raid6 of files, a member failed and removed, a spare added, the
 * recovery slowed by the speed limit and the daemon killed well past a checkpoint; the real
 * mdadm --examine of the spare must show the checkpoint, and the resumed recovery must start
 * there, finish, keep the data and leave check with 0 mismatches.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { controlCall } from '../../src/daemon/control.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { fields, requireTool, run, sparseFile, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

let dir: ReturnType<typeof tempDir>;
before(() => {
  dir = tempDir('recovery-resume');
});
after(() => dir.cleanup());

async function md0(d: TestDaemon) {
  const rep = await controlCall(join(d.runDir, 'control.sock'), { op: 'arrays' }, 5000);
  const a = rep.arrays!.find((x) => x.mdName === 'md0');
  assert.ok(a, 'md0 runs');
  return a;
}

async function until<T>(what: string, fn: () => Promise<T | null | false>, ms = 120_000, d?: TestDaemon): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    assert.ok(Date.now() - t0 < ms, `${what} within ${ms / 1000} s${d ? `\n${d.logs().slice(-4000)}` : ''}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('kill -9 during a raid6 recovery: the spare keeps its checkpoint and the recovery resumes from it', async (t) => {
  if (!requireTool(t, 'mdadm', 'the judge of the Recovery Offset on disk')) return;
  // 64 MiB members (about 62 MiB of data each): several checkpoints at md's 1/16 rule
  const files = Array.from({ length: 6 }, (_, k) => sparseFile(join(dir.path, `m${k}.img`), 64 * MiB));
  const [f0, failed, f2, f3, f4, spare] = files as [string, string, string, string, string, string];
  const runDir = join(dir.path, 'run');
  // slow enough to be caught mid-way (about 8 s for the whole recovery)
  const slow = ['--speed-limit-min=100', '--speed-limit-max=8000'];
  let d = await startDaemon(runDir, slow);
  let r = d.tsmd(['--create', '/dev/md0', '-l6', '-n5', '-c64', '--run', '--assume-clean', f0, failed, f2, f3, f4]);
  assert.equal(r.status, 0, r.stderr);
  const c = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
  const size = c.sizeBytes;
  const data = randomBytes(size);
  for (let off = 0; off < size; off += 8 * MiB) await c.write(off, data.subarray(off, Math.min(size, off + 8 * MiB)));
  await c.flush();
  await c.close();
  r = d.tsmd(['/dev/md0', '--fail', failed, '--remove', failed]);
  assert.equal(r.status, 0, r.stderr);
  r = d.tsmd(['/dev/md0', '--add', spare]);
  assert.equal(r.status, 0, r.stderr);

  const st = await until('the recovery to pass 60%', async () => {
    const a = await md0(d);
    return a.sync?.kind === 'recovery' && a.sync.doneSectors >= 0.6 * a.sync.totalSectors ? a.sync : null;
  }, 120_000, d);
  await d.stop('SIGKILL');
  const doneAtKill = st.doneSectors;

  // the real mdadm reads the checkpoint from the spare
  const ex = run('mdadm', ['--examine', spare]);
  assert.equal(ex.status, 0, ex.stderr);
  const offText = fields(ex.stdout).get('Recovery Offset');
  assert.ok(offText, `the spare records a recovery offset:\n${ex.stdout}`);
  const offset = Number(/^(\d+) sectors$/.exec(offText)?.[1]);
  assert.ok(offset > 0, `Recovery Offset ${offText}: progress was checkpointed before the kill at ${doneAtKill} sectors`);
  // near where it was: at most one checkpoint interval (1/16) plus a sync window (16 MiB) behind
  assert.ok(offset <= st.totalSectors, `offset ${offset} inside the member`);
  assert.ok(offset >= doneAtKill - st.totalSectors / 16 - 2 * 2048 * 16, `offset ${offset} is near the progress at the kill (${doneAtKill} of ${st.totalSectors})`);

  d = await startDaemon(runDir, slow);
  try {
    r = d.tsmd(['--assemble', '/dev/md0', f0, f2, f3, f4, spare]);
    assert.equal(r.status, 0, r.stderr);
    // the first position the resumed recovery reports is the checkpoint, not 0
    const first = await until('the resumed recovery', async () => {
      const a = await md0(d);
      if (a.sync?.kind === 'recovery') return a.sync;
      const rec = a.syncHistory.find((h) => h.kind === 'recovery');
      assert.ok(!rec, `the recovery ran before it could be seen: ${JSON.stringify(rec)}`);
      return null;
    }, 30_000, d);
    assert.ok(first.doneSectors >= offset, `resumed at ${first.doneSectors}, checkpoint ${offset}`);
    const done = await until('the recovery and the resync to finish', async () => {
      const a = await md0(d);
      return !a.syncBusy && !a.degraded && a.syncHistory.some((h) => h.kind === 'recovery' && h.completed) ? a : null;
    }, 300_000, d);
    const rec = done.syncHistory.find((h) => h.kind === 'recovery' && h.completed)!;
    assert.ok(rec.workedSectors <= rec.totalSectors - offset, `the resumed recovery worked ${rec.workedSectors} of ${rec.totalSectors} sectors: from the checkpoint ${offset}, not from 0`);
    assert.ok(rec.workedSectors > 0);
    t.diagnostic(`killed at ${doneAtKill} of ${st.totalSectors} sectors; Recovery Offset ${offset}; resumed at ${first.doneSectors}; worked ${rec.workedSectors}`);

    const v = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
    for (let off = 0; off < size; off += 8 * MiB) {
      const len = Math.min(8 * MiB, size - off);
      assert.ok((await v.read(off, len)).equals(data.subarray(off, off + len)), `data at ${off} reads back`);
    }
    await v.close();
    r = d.tsmd(['--action=check', '/dev/md0']);
    assert.equal(r.status, 0, r.stderr);
    const checked = await until('check', async () => {
      const a = await md0(d);
      return !a.syncBusy && a.syncHistory.some((h) => h.kind === 'check' && h.completed) ? a : null;
    }, 300_000, d);
    assert.equal(checked.mismatchCnt, 0, 'check after the resumed recovery');
    const spareEx = fields(run('mdadm', ['--examine', spare]).stdout);
    assert.equal(spareEx.get('Recovery Offset'), undefined, 'the spare is in sync now');
  } finally {
    assert.equal(await d.stop(), 0, d.logs().slice(-4000));
  }
});
