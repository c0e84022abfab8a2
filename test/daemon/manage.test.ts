/**
 * Online management through the daemon with mdadm's vocabulary, and its superblock effects as
 * the real mdadm reads them: --fail, --remove, --add, --re-add, --readonly/--readwrite,
 * --detail --scan, --query, --stop --scan, --assemble --scan with an mdadm.conf.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { fields, requireTool, run, sparseFile, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

describe('online management', () => {
  let dir: ReturnType<typeof tempDir>;
  let d: TestDaemon;
  let files: string[];
  before(async () => {
    dir = tempDir('manage');
    d = await startDaemon(join(dir.path, 'run'));
    files = [0, 1, 2, 3].map((i) => sparseFile(join(dir.path, `m${i}.img`), 24 * MiB));
    const r = d.tsmd(['--create', '/dev/md0', '-l1', '-n3', '--run', '--bitmap=internal', '--homehost=h', files[0]!, files[1]!, files[2]!]);
    assert.equal(r.status, 0, r.stderr);
  });
  after(async () => {
    await d.stop();
    dir.cleanup();
  });

  const mdstat = () => readFileSync(join(d.runDir, 'mdstat'), 'utf8');
  const detail = () => {
    const r = d.tsmd(['--detail', '/dev/md0']);
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };

  test('--fail marks the member faulty on the others and in mdstat', async (t) => {
    const before = fields(detail()).get('Events');
    const r = d.tsmd(['/dev/md0', '--fail', files[1]!]);
    assert.equal(r.status, 0, r.stderr);
    const f = fields(detail());
    assert.equal(f.get('State'), 'clean, degraded');
    assert.equal(f.get('Failed Devices'), '1');
    assert.ok(Number(f.get('Events')) > Number(before), 'events bumped');
    assert.match(detail(), /faulty\s+\S*m1\.img/);
    assert.match(mdstat(), /m1\.img\[1\]\(F\)/);
    assert.match(mdstat(), /\[3\/2\] \[U_U\]/);
    if (!requireTool(t, 'mdadm')) return;
    const e = fields(run('mdadm', ['--examine', files[0]!]).stdout);
    assert.equal(e.get('Array State'), "A.A ('A' == active, '.' == missing, 'R' == replacing)");
  });

  test('--remove of an active member is refused; of the faulty one it works', () => {
    let r = d.tsmd(['/dev/md0', '--remove', files[0]!]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /Device or resource busy/);
    r = d.tsmd(['/dev/md0', '--remove', files[1]!]);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(mdstat(), /m1\.img/);
    assert.match(detail(), /-\s+0\s+0\s+1\s+removed/);
  });

  test('--add to a degraded array: the new device takes the empty slot and is rebuilt (--wait waits for it)', (t) => {
    const r = d.tsmd(['/dev/md0', '--add', files[3]!]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(mdstat(), /m3\.img\[3\]/);
    const w = d.tsmd(['--wait', '/dev/md0']);
    assert.ok(w.status === 0 || w.status === 1, w.stderr);
    assert.match(mdstat(), /\[3\/3\] \[UUU\]/);
    assert.doesNotMatch(mdstat(), /recovery/);
    const f = fields(detail());
    assert.equal(f.get('Active Devices'), '3');
    assert.equal(f.get('State'), 'clean');
    if (!requireTool(t, 'mdadm')) return;
    const e = run('mdadm', ['--examine', files[3]!]);
    assert.equal(e.status, 0, e.stderr);
    assert.equal(fields(e.stdout).get('Device Role'), 'Active device 1');
    assert.equal(fields(e.stdout).get('Array UUID'), fields(run('mdadm', ['--examine', files[0]!]).stdout).get('Array UUID'));
    assert.equal(fields(run('mdadm', ['--examine', files[0]!]).stdout).get('Array State'), "AAA ('A' == active, '.' == missing, 'R' == replacing)");
  });

  test('--re-add of the old member whose slot was taken meanwhile is refused with the reason', () => {
    const r = d.tsmd(['/dev/md0', '--re-add', files[1]!]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /its slot is in use/);
  });

  test('--readonly refuses NBD writes (EPERM), --readwrite allows them again', async () => {
    let r = d.tsmd(['--readonly', '/dev/md0']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(mdstat(), /^md0 : active \(read-only\) raid1/m);
    let c = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
    assert.ok(c.flags & 2, 'READ_ONLY transmission flag');
    await assert.rejects(c.write(0, new Uint8Array(4096)), (e: { nbdError?: number }) => e.nbdError === 1);
    await c.close();
    r = d.tsmd(['--readwrite', '/dev/md0']);
    assert.equal(r.status, 0, r.stderr);
    c = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
    await c.write(0, new Uint8Array(4096).fill(7), true);
    assert.equal((await c.read(0, 4096))[100], 7);
    await c.close();
  });

  test('--detail --scan, --query, --stop --scan and --assemble --scan with mdadm.conf', () => {
    let r = d.tsmd(['--detail', '--scan']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^ARRAY \/dev\/md0 metadata=1\.2 name=h:0 UUID=[0-9a-f:]{35}$/m);
    const uuid = /UUID=([0-9a-f:]+)/.exec(r.stdout)![1]!;
    r = d.tsmd(['--query', '/dev/md0', files[0]!]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /\/dev\/md0: 2[0-9.]+MiB raid1 3 devices, 0 spare/);
    assert.match(r.stdout, /m0\.img: device 0 in 3 device active raid1 \/dev\/md0/);
    r = d.tsmd(['--stop', '--scan']);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(mdstat(), /md0/);
    const conf = join(dir.path, 'mdadm.conf');
    writeFileSync(conf, `DEVICE ${join(dir.path, 'm*.img')}\nARRAY /dev/md0 metadata=1.2 UUID=${uuid}\n`);
    r = d.tsmd(['--assemble', '--scan', `--config=${conf}`]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /\/dev\/md0 has been started with 3 drives/);
    assert.match(r.stderr, /m1\.img/, 'the stale member is reported');
    assert.match(mdstat(), /^md0 : active raid1/m);
  });
});
