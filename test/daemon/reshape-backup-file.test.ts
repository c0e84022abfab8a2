/**
 * The kernel's interrupted shrink (shared/fixtures/kernel-md-reshape/raid5-shrink-interrupted:
 * raid5 4->3 in place, backwards, with mdadm 4.2's backup file) through the CLI, as mdadm is
 * used on it: --assemble without the backup file is refused with mdadm's message and nothing
 * written; with --backup-file the daemon continues the reshape to the end (--grow --continue
 * while it is frozen goes on), the pattern reads back over the NBD export, check finds 0,
 * /dev/vdd's copy is a spare, the backup file is removed (mdadm unlinks it), and the real
 * mdadm --examine prints what tsmd --examine prints.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { controlCall } from '../../src/daemon/control.js';
import { startDaemon } from '../helpers/daemon.js';
import { checkPattern, fixtureMembers, sharedDir } from '../helpers/fixtures.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { haveTool, run, sparseFile, tempDir, tsmdBin } from '../helpers/tools.js';

const NAME = 'raid5-shrink-interrupted';
const PATTERN_BYTES = 65011712;
const MiB = 1024 * 1024;

describe('kernel shrink fixture through the CLI and the daemon', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('reshape-backup');
  });
  after(() => dir.cleanup());

  test('--assemble: refused without the backup file; with it the shrink finishes', async () => {
    const paths = fixtureMembers(NAME, 'kernel-md-reshape').map((p, i) => {
      const dst = join(dir.path, `d${i}.img`);
      execFileSync('cp', ['--sparse=always', p, dst]);
      return dst;
    });
    const backup = join(dir.path, 'md0-shrink.backup');
    execFileSync('sh', ['-c', 'xz -dc "$1" > "$2"', 'sh', join(sharedDir(), 'fixtures', 'kernel-md-reshape', NAME, 'backup-file.img.xz'), backup]);
    const hash = () => paths.map((p) => createHash('sha256').update(readFileSync(p)).digest('hex'));
    const before = hash();
    const d = await startDaemon(join(dir.path, 'run'));
    try {
      let r = d.tsmd(['--assemble', '/dev/md0', ...paths]);
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /\/dev\/md0: Need a backup file to complete reshape of this array\.\nPlease provided one with "--backup-file=\.\.\."/);
      assert.deepEqual(hash(), before, 'nothing written');
      // paused as soon as it runs, then --grow --continue
      r = d.tsmd(['--speed-limit-max=1000']);
      assert.equal(r.status, 0, r.stderr);
      r = d.tsmd(['--assemble', '/dev/md0', `--backup-file=${backup}`, ...paths]);
      assert.equal(r.status, 0, r.stderr);
      r = d.tsmd(['--action=frozen', '/dev/md0']);
      assert.equal(r.status, 0, r.stderr);
      r = d.tsmd(['--detail', '/dev/md0']);
      assert.match(r.stdout, /Delta Devices : -1, \(4->3\)/);
      assert.match(r.stdout, /Array Size : 63488 /);
      r = d.tsmd(['--speed-limit-max=200000']);
      assert.equal(r.status, 0, r.stderr);
      r = d.tsmd(['--grow', '--continue', '/dev/md0']);
      assert.equal(r.status, 0, r.stderr);
      const sock = join(d.runDir, 'control.sock');
      const t0 = Date.now();
      for (;;) {
        const a = (await controlCall(sock, { op: 'arrays' }, 5000)).arrays!.find((x) => x.mdName === 'md0')!;
        if (a.reshape === null && !a.syncBusy) break;
        assert.equal(a.reshape?.stuck ?? null, null);
        assert.ok(Date.now() - t0 < 60_000, 'the shrink finishes within a minute');
        await new Promise((res) => setTimeout(res, 100));
      }
      // (removed right after the superblocks of the end are written, as mdadm's child unlinks it
      // once it sees the reshape done: a moment after the state says so)
      for (let i = 0; i < 50 && existsSync(backup); i++) await new Promise((res) => setTimeout(res, 100));
      assert.equal(existsSync(backup), false, 'the backup file is removed at the end, as mdadm does');
      const c = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
      try {
        assert.equal(c.sizeBytes, PATTERN_BYTES);
        let bad = 0;
        for (let off = 0; off < PATTERN_BYTES; off += 1 << 20) {
          const buf = await c.read(off, Math.min(1 << 20, PATTERN_BYTES - off));
          for (let b = 0; b < buf.length; b += 4096) if (checkPattern(buf.subarray(b, b + 4096), off + b) !== -1) bad++;
        }
        assert.equal(bad, 0, 'the pattern after the shrink');
      } finally {
        await c.close();
      }
      r = d.tsmd(['--action=check', '/dev/md0']);
      assert.equal(r.status, 0, r.stderr);
      r = d.tsmd(['--wait', '/dev/md0']);
      const a = (await controlCall(sock, { op: 'arrays' }, 5000)).arrays!.find((x) => x.mdName === 'md0')!;
      assert.ok(a.syncHistory.some((h) => h.kind === 'check' && h.completed), 'check ran');
      assert.equal(a.mismatchCnt, 0);
      assert.equal(a.raidDisks, 3);
      assert.deepEqual(a.members.map((m) => m.slot), [0, 1, 2, null], 'vdd left: a spare');
      r = d.tsmd(['--stop', '/dev/md0']);
      assert.equal(r.status, 0, r.stderr);
    } finally {
      await d.stop();
    }
    if (haveTool('mdadm')) {
      const ours = run(process.execPath, [tsmdBin, '--examine', ...paths]);
      const theirs = run('mdadm', ['--examine', ...paths]);
      assert.equal(theirs.status, 0, theirs.stderr);
      assert.equal(ours.stdout, theirs.stdout);
      assert.doesNotMatch(theirs.stdout, /Reshape pos'n/);
      assert.match(theirs.stdout, /Device Role : spare/);
    }
  });

  test('a grow in place through the CLI (superblock 1.0, no room around the data): the critical section on the joining spare', async () => {
    const files = Array.from({ length: 5 }, (_, i) => sparseFile(join(dir.path, `v10-${i}.img`), 12 * MiB));
    const d = await startDaemon(join(dir.path, 'run-inplace'));
    try {
      let r = d.tsmd(['--create', '/dev/md1', '--metadata=1.0', '--level=5', '-n4', '-c64', '--run', '--assume-clean', ...files.slice(0, 4)]);
      assert.equal(r.status, 0, r.stderr);
      const c = await NbdTestClient.connect(d.info.nbd!.port, 'md1');
      const data = randomBytes(c.sizeBytes);
      try {
        for (let off = 0; off < data.length; off += MiB) await c.write(off, data.subarray(off, off + MiB));
        await c.flush();
      } finally {
        await c.close();
      }
      r = d.tsmd(['/dev/md1', '--add', files[4]!]);
      assert.equal(r.status, 0, r.stderr);
      r = d.tsmd(['--grow', '/dev/md1', '--raid-devices=5']);
      assert.equal(r.status, 0, r.stderr);
      // mdadm's "old way": no new data offset, the critical section backed up first
      assert.match(r.stderr, /Need to backup 768K of critical section\.\./);
      r = d.tsmd(['--wait', '/dev/md1']);
      const sock = join(d.runDir, 'control.sock');
      const a = (await controlCall(sock, { op: 'arrays' }, 5000)).arrays!.find((x) => x.mdName === 'md1')!;
      assert.equal(a.reshape, null);
      assert.equal(a.raidDisks, 5);
      const c2 = await NbdTestClient.connect(d.info.nbd!.port, 'md1');
      try {
        assert.ok(c2.sizeBytes > data.length, 'the array grew');
        for (let off = 0; off < data.length; off += MiB) {
          const back = await c2.read(off, Math.min(MiB, data.length - off));
          assert.ok(back.equals(data.subarray(off, off + MiB)), `the data reads back after the grow (at ${off})`);
        }
      } finally {
        await c2.close();
      }
      r = d.tsmd(['--stop', '/dev/md1']);
      assert.equal(r.status, 0, r.stderr);
    } finally {
      await d.stop();
    }
    if (haveTool('mdadm')) {
      const ours = run(process.execPath, [tsmdBin, '--examine', ...files]);
      const theirs = run('mdadm', ['--examine', ...files]);
      assert.equal(theirs.status, 0, theirs.stderr);
      assert.equal(ours.stdout, theirs.stdout);
      assert.match(theirs.stdout, /Raid Devices : 5/);
      assert.match(theirs.stdout, /Unused Space : before=0 sectors/);
    }
  });
});
