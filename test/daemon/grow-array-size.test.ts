/**
 * --grow --size under an --array-size, through the CLI against a daemon (md's external_size:
 * raid1_resize / raid5_resize / raid10_resize leave an imposed array size as it is, through
 * md_set_array_sectors, and refuse with EINVAL a component size whose array would be smaller;
 * --array-size=max, md's "default", lets the array follow its members again). NBD clients
 * judge the export's size and data, mdadm --examine the superblocks.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { arrayStateOf, startDaemon, type TestDaemon, untilAsync } from '../helpers/daemon.js';
import { NbdTestClient, readExport } from '../helpers/nbd-client.js';
import { fields, requireTool, run, sparseFile, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

describe('--grow --size with --array-size through the daemon', () => {
  let dir: ReturnType<typeof tempDir>;
  let d: TestDaemon;
  before(async () => {
    dir = tempDir('growarraysize');
    d = await startDaemon(join(dir.path, 'run'), ['--speed-limit-min=200000']);
  });
  after(async () => {
    await d.stop();
    dir.cleanup();
  });

  test('--array-size then --size (md\'s external_size): the imposed size stays while the members grow, a shrink below it is refused, nothing written; --array-size=max lets the array follow', async (t) => {
    const files = [0, 1].map((k) => sparseFile(join(dir.path, `as${k}.img`), 16 * MiB));
    const md = '/dev/md/gs2';
    let r = d.tsmd(['--create', md, '-l1', '-n2', '--size=6M', '--run', '--assume-clean', '--homehost=h', ...files]);
    assert.equal(r.status, 0, r.stderr);
    t.after(() => {
      d.tsmd(['--stop', md]);
    });
    let c = await NbdTestClient.connect(d.info.nbd!.port, 'gs2');
    const model = randomBytes(4 * MiB);
    await c.write(0, model, true);
    await c.close();
    r = d.tsmd(['--grow', md, '--array-size=4M']);
    assert.equal(r.status, 0, r.stderr);
    // the members grow; the array keeps the size imposed (md_set_array_sectors does nothing)
    r = d.tsmd(['--grow', md, '--size=10M']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, `tsmd: component size of ${md} has been set to 10240K\n`);
    let det = fields(d.tsmd(['--detail', md]).stdout);
    // (mdadm gives no human-readable size below 5000 KiB)
    assert.equal(det.get('Array Size'), '4096');
    assert.equal(det.get('Used Dev Size'), '10240 (10.00 MiB 10.49 MB)');
    c = await NbdTestClient.connect(d.info.nbd!.port, 'gs2');
    assert.equal(c.sizeBytes, 4 * MiB);
    assert.ok((await readExport(c, 4 * MiB)).equals(model));
    await c.close();
    await untilAsync('resync of the new region', async () => !(await arrayStateOf(d, md)).syncBusy);
    // a component size whose array would be smaller than the size imposed: raid1_resize's EINVAL
    const events = () => fields(run('mdadm', ['--examine', files[0]!]).stdout).get('Events');
    const hasMdadm = requireTool(t, 'mdadm', 'the judge of the superblocks');
    const before = hasMdadm ? events() : undefined;
    r = d.tsmd(['--grow', md, '--size=3M']);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `tsmd: Cannot set device size for ${md}: Invalid argument\n`);
    if (hasMdadm) assert.equal(events(), before, 'nothing written');
    det = fields(d.tsmd(['--detail', md]).stdout);
    assert.equal(det.get('Used Dev Size'), '10240 (10.00 MiB 10.49 MB)');
    // down to the size imposed is allowed
    r = d.tsmd(['--grow', md, '--size=4M']);
    assert.equal(r.status, 0, r.stderr);
    // "default": the array follows its members again
    r = d.tsmd(['--grow', md, '--array-size=max']);
    assert.equal(r.status, 0, r.stderr);
    c = await NbdTestClient.connect(d.info.nbd!.port, 'gs2');
    assert.equal(c.sizeBytes, 4 * MiB);
    await c.close();
    r = d.tsmd(['--grow', md, '--size=max']);
    assert.equal(r.status, 0, r.stderr);
    c = await NbdTestClient.connect(d.info.nbd!.port, 'gs2');
    assert.equal(c.sizeBytes, 15 * MiB);
    assert.ok((await readExport(c, 4 * MiB)).equals(model));
    await c.close();
    await untilAsync('resync of the new region', async () => !(await arrayStateOf(d, md)).syncBusy);
    r = d.tsmd(['--stop', md]);
    assert.equal(r.status, 0, r.stderr);
    if (hasMdadm) {
      const e = fields(run('mdadm', ['--examine', files[1]!]).stdout);
      assert.equal(e.get('Array Size'), '15360 KiB (15.00 MiB 15.73 MB)');
      assert.equal(e.get('State'), 'clean');
    }
  });
});
