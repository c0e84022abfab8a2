/**
 * The --grow changes that move no data, through the CLI against a daemon, with mdadm's
 * messages and exit codes, NBD clients as the judge of the export's size and data, and
 * mdadm --examine as the judge of the superblocks: --size=max (the export grows, the data
 * reads back, the new region is resynced, check 0), raid1 --raid-devices with --add (the
 * spare recovers the new mirror), linear --grow --add (the export grows by the new member),
 * --grow --add of a raid5 refused. --detail during a raid10 grow shows the size the array has
 * now (md changes it at the end) while --examine shows the new one, as mdadm does.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { arrayStateOf, startDaemon, type TestDaemon, untilAsync } from '../helpers/daemon.js';
import { NbdTestClient, readExport } from '../helpers/nbd-client.js';
import { fields, requireTool, run, sparseFile, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

describe('--grow --size / --raid-devices / --add through the daemon', () => {
  let dir: ReturnType<typeof tempDir>;
  let d: TestDaemon;
  before(async () => {
    dir = tempDir('growsize');
    d = await startDaemon(join(dir.path, 'run'), ['--speed-limit-min=200000']);
  });
  after(async () => {
    await d.stop();
    dir.cleanup();
  });

  test('raid1: --size=max grows the export, data reads back, new region resynced, check 0; --raid-devices=3 --add recovers the new mirror; --add alone refused', async (t) => {
    const files = [0, 1, 2].map((k) => sparseFile(join(dir.path, `m${k}.img`), 16 * MiB));
    const md = '/dev/md/gs1';
    let r = d.tsmd(['--create', md, '-l1', '-n2', '--size=6M', '--run', '--assume-clean', '--homehost=h', files[0]!, files[1]!]);
    assert.equal(r.status, 0, r.stderr);
    t.after(() => {
      d.tsmd(['--stop', md]);
    });
    let c = await NbdTestClient.connect(d.info.nbd!.port, 'gs1');
    assert.equal(c.sizeBytes, 6 * MiB);
    const model = randomBytes(6 * MiB);
    await c.write(0, model, true);
    await c.close();
    r = d.tsmd(['--grow', md, '--size=max']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, `tsmd: component size of ${md} has been set to 15360K\n`);
    r = d.tsmd(['--grow', md, '--size=max']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, `tsmd: component size of ${md} unchanged at 15360K\n`);
    await untilAsync('resync of the new region', async () => !(await arrayStateOf(d, md)).syncBusy);
    const st = await arrayStateOf(d, md);
    const resync = st.syncHistory.filter((h) => h.kind === 'resync');
    assert.equal(resync.length, 1, JSON.stringify(st.syncHistory));
    assert.equal(resync[0]!.workedSectors, (15 - 6) * 2048, 'only the new region');
    c = await NbdTestClient.connect(d.info.nbd!.port, 'gs1');
    assert.equal(c.sizeBytes, 15 * MiB, 'the export grew');
    assert.ok((await readExport(c, 6 * MiB)).equals(model));
    const tail = randomBytes(9 * MiB);
    await c.write(6 * MiB, tail, true);
    assert.ok((await c.read(6 * MiB, 9 * MiB)).equals(tail));
    // refused before anything changes: --add without --raid-devices is linear's, and --size alone
    r = d.tsmd(['--grow', md, '--add', files[2]!]);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, 'tsmd: can only add devices to linear arrays\n');
    r = d.tsmd(['--grow', md, '--size=max', '--raid-devices=3']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /cannot change component size at the same time as other changes/);
    // more mirrors, the spare given on the same command line (mdadm adds it first)
    r = d.tsmd(['--grow', md, '--raid-devices=3', '--add', files[2]!]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `raid_disks for ${md} set to 3\n`);
    assert.match(r.stderr, /added .*m2\.img/);
    await untilAsync('recovery of the new mirror', async () => {
      const s = await arrayStateOf(d, md);
      return !s.syncBusy && s.syncHistory.some((h) => h.kind === 'recovery' && h.completed);
    });
    r = d.tsmd(['--action=check', md]);
    assert.equal(r.status, 0, r.stderr);
    await untilAsync('check', async () => {
      const s = await arrayStateOf(d, md);
      return !s.syncBusy && s.syncHistory.some((h) => h.kind === 'check' && h.completed);
    });
    assert.equal((await arrayStateOf(d, md)).mismatchCnt, 0);
    assert.ok((await readExport(c, 6 * MiB)).equals(model));
    await c.close();
    r = d.tsmd(['--stop', md]);
    assert.equal(r.status, 0, r.stderr);
    if (requireTool(t, 'mdadm', 'the judge of the superblocks')) {
      for (const f of files) {
        const e = fields(run('mdadm', ['--examine', f]).stdout);
        assert.equal(e.get('Raid Devices'), '3');
        assert.equal(e.get('Array Size'), '15360 KiB (15.00 MiB 15.73 MB)');
        assert.match(e.get('Array State') ?? '', /^AAA /);
        assert.equal(e.get('State'), 'clean');
      }
    }
  });

  test('linear --grow --add: the export grows by the new member', async (t) => {
    const files = [0, 1, 2].map((k) => sparseFile(join(dir.path, `l${k}.img`), 8 * MiB));
    const md = '/dev/md/gl1';
    let r = d.tsmd(['--create', md, '-llinear', '-n2', '--run', '--homehost=h', files[0]!, files[1]!]);
    assert.equal(r.status, 0, r.stderr);
    t.after(() => {
      d.tsmd(['--stop', md]);
    });
    let c = await NbdTestClient.connect(d.info.nbd!.port, 'gl1');
    const before = c.sizeBytes;
    const model = randomBytes(before);
    await c.write(0, model, true);
    await c.close();
    r = d.tsmd(['--grow', md, '--add', files[2]!]);
    assert.equal(r.status, 0, r.stderr);
    c = await NbdTestClient.connect(d.info.nbd!.port, 'gl1');
    assert.equal(c.sizeBytes, before + 7 * MiB);
    assert.ok((await readExport(c, before)).equals(model));
    await c.write(before, randomBytes(7 * MiB), true);
    await c.close();
    r = d.tsmd(['--detail', md]);
    assert.match(r.stdout, /Raid Devices : 3/);
    r = d.tsmd(['--stop', md]);
    assert.equal(r.status, 0, r.stderr);
    if (requireTool(t, 'mdadm', 'the judge of the superblocks')) {
      const e = fields(run('mdadm', ['--examine', files[2]!]).stdout);
      assert.equal(e.get('Raid Devices'), '3');
      assert.equal(e.get('Device Role'), 'Active device 2');
    }
  });

  test('--detail during a raid10 grow: Array Size is the size now (md changes it at the end), --examine the new one', async (t) => {
    const files = [0, 1, 2, 3, 4].map((k) => sparseFile(join(dir.path, `t${k}.img`), 16 * MiB));
    const md = '/dev/md/gt1';
    let r = d.tsmd(['--create', md, '-l10', '-n4', '--layout=n2', '--run', '--assume-clean', '--homehost=h', ...files.slice(0, 4)]);
    assert.equal(r.status, 0, r.stderr);
    t.after(() => {
      d.tsmd(['--stop', md]);
    });
    r = d.tsmd([md, '--add', files[4]!]);
    assert.equal(r.status, 0, r.stderr);
    const sizeBefore = fields(d.tsmd(['--detail', md]).stdout).get('Array Size');
    assert.equal(sizeBefore, '28672 (28.00 MiB 29.36 MB)');
    // slow, so that --detail sees it running
    r = d.tsmd(['--speed-limit-max=1000', md]);
    assert.equal(r.status, 0, r.stderr);
    r = d.tsmd(['--grow', md, '--raid-devices=5']);
    assert.equal(r.status, 0, r.stderr);
    r = d.tsmd(['--detail', md]);
    assert.equal(r.status, 0, r.stderr);
    const det = fields(r.stdout);
    assert.equal(det.get('Array Size'), sizeBefore);
    assert.equal(det.get('Raid Devices'), '5');
    assert.equal(det.get('Delta Devices'), '1, (4->5)');
    if (requireTool(t, 'mdadm', 'the judge of the superblocks')) {
      const e = fields(run('mdadm', ['--examine', files[0]!]).stdout);
      // (28672 KiB x 5 / 4)
      assert.equal(e.get('Array Size'), '35840 KiB (35.00 MiB 36.70 MB)');
      assert.equal(e.get('Delta Devices'), '1 (4->5)');
    }
  });
});
