/**
 * tsmd --grow --bitmap=internal|none on a running array, driven through the CLI against a
 * daemon, judged by mdadm --examine / --examine-bitmap on the member files, and by a SIGKILL:
 * after the bitmap was added online, the resync after the crash covers exactly the chunks the
 * bitmap on disk records, and every acknowledged write reads back.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { controlCall } from '../../src/daemon/control.js';
import { arrayStateOf, startDaemon, type TestDaemon, untilAsync } from '../helpers/daemon.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { fields, requireTool, run, sparseFile, tempDir, withLoop } from '../helpers/tools.js';

const MiB = 1024 * 1024;

/** The kernel-style name (md127...) the daemon gave the array at `devPath`. */
async function mdNameOf(d: TestDaemon, devPath: string): Promise<string> {
  const arrays = (await controlCall(join(d.runDir, 'control.sock'), { op: 'arrays' }, 5000)).arrays ?? [];
  const a = arrays.find((x) => x.devPath === devPath);
  assert.ok(a, `${devPath} is running`);
  return a.mdName;
}

describe('--grow --bitmap on a running array', () => {
  let dir: ReturnType<typeof tempDir>;
  let d: TestDaemon;
  before(async () => {
    dir = tempDir('growbm');
    d = await startDaemon(join(dir.path, 'run'), ['--speed-limit-min=200000']);
  });
  after(async () => {
    await d.stop();
    dir.cleanup();
  });

  for (const meta of ['1.2', '1.0']) {
    test(`metadata ${meta}: add (mdadm sees it, bits go on disk), crash resyncs only those chunks, remove`, async (t) => {
      const hasMdadm = requireTool(t, 'mdadm');
      const tag = meta.replace('.', '');
      const files = [0, 1, 2].map((k) => sparseFile(join(dir.path, `g${tag}-${k}.img`), 32 * MiB));
      const md = `/dev/md/g${tag}`;
      let r = d.tsmd(['--create', md, '-l5', '-n3', '-c64', `-e${meta}`, '--run', '--assume-clean', '--homehost=h', ...files]);
      assert.equal(r.status, 0, r.stderr);
      // a failure below must not leave the array running into the next test (the daemon is
      // shared); after a clean end it is stopped already and this is refused, harmlessly
      t.after(() => {
        d.tsmd(['--stop', md]);
      });
      let mdName = await mdNameOf(d, md);
      let c = await NbdTestClient.connect(d.info.nbd!.port, `g${tag}`);
      const model = randomBytes(c.sizeBytes);
      for (let off = 0; off < model.length; off += 8 * MiB) await c.write(off, model.subarray(off, Math.min(model.length, off + 8 * MiB)), true);
      // refused on a level without redundancy, and with nothing to do
      r = d.tsmd(['--grow', md, '--bitmap=none']);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /no bitmap found/);
      // added with writes in flight on another connection
      const busy = (async () => {
        for (let i = 0; i < 50; i++) {
          const buf = randomBytes(4096);
          const at = (i * 7919 * 4096) % (model.length - 4096);
          await c.write(at, buf, false);
          buf.copy(model, at);
        }
      })();
      // --delay=60: the bitmap daemon leaves the bits this test counts on disk however slow the
      // machine (5 s would clear them while mdadm -X and the crash below are still to come)
      r = d.tsmd(['--grow', md, '--bitmap=internal', '--bitmap-chunk=128K', '--delay=60']);
      assert.equal(r.status, 0, r.stderr);
      await busy;
      await c.flush();
      r = d.tsmd(['--grow', md, '--bitmap=internal']);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /bitmap already present/);
      const st = await arrayStateOf(d, mdName);
      assert.ok(st.bitmap, 'runtime bitmap');
      assert.equal(st.bitmap.chunkSectors, 256);
      r = d.tsmd(['--detail', md]);
      assert.match(r.stdout, /Intent Bitmap : Internal/);
      if (hasMdadm) {
        const e = fields(run('mdadm', ['--examine', files[0]!]).stdout);
        assert.match(e.get('Internal Bitmap') ?? '', meta === '1.2' ? /^8 sectors from superblock$/ : /^-\d+ sectors from superblock$/);
        // (mdadm -X locates an internal bitmap only on a block device)
        const x = await withLoop(files[1]!, (dev) => run('mdadm', ['--examine-bitmap', dev]));
        assert.equal(x.status, 0, x.stderr);
        assert.match(x.stdout, /Chunksize : 128 KB/);
        assert.match(x.stdout, /Daemon : 60s flush period/);
        assert.match(x.stdout, /Version : 4/);
      }
      // writes to three chunks after the bitmap exists: their bits are on disk before the data
      for (const chunk of [3, 40, 41]) {
        const buf = randomBytes(8192);
        // array chunk 64K x 2 data disks: member-space chunk of 128K = array 256K
        const at = chunk * 256 * 1024 + 4096;
        await c.write(at, buf, true);
        buf.copy(model, at);
      }
      let dirtyOnDisk = 0;
      if (hasMdadm) {
        const x = await withLoop(files[0]!, (dev) => run('mdadm', ['--examine-bitmap', dev]));
        const m = /Bitmap : (\d+) bits \(chunks\), (\d+) dirty/.exec(x.stdout);
        assert.ok(m, x.stdout);
        dirtyOnDisk = Number(m[2]);
        // the three chunks, and those the writes racing the grow touched after it
        assert.ok(dirtyOnDisk >= 3 && dirtyOnDisk < Number(m[1]) / 4, `dirty bits on disk: ${dirtyOnDisk} of ${m[1]}`);
      }
      await c.close();
      // crash: the resync covers what the bitmap records, not the whole array
      await d.stop('SIGKILL');
      d = await startDaemon(join(dir.path, 'run'), ['--speed-limit-min=200000']);
      r = d.tsmd(['--assemble', md, ...files]);
      assert.equal(r.status, 0, r.stderr);
      // assembly takes the lowest free number, which need not be the one --create had
      mdName = await mdNameOf(d, md);
      // the sync engine starts after the assembly returns: wait for the resync to have run
      await untilAsync('resync', async () => {
        const s = await arrayStateOf(d, mdName);
        return !s.syncBusy && s.syncHistory.some((h) => h.kind === 'resync');
      });
      const s2 = await arrayStateOf(d, mdName);
      const resync = s2.syncHistory.filter((h) => h.kind === 'resync');
      assert.equal(resync.length, 1, JSON.stringify(s2.syncHistory));
      if (hasMdadm) assert.equal(resync[0]!.workedSectors, dirtyOnDisk * 256, 'resync == dirty bits x chunk');
      else assert.ok(resync[0]!.workedSectors >= 3 * 256 && resync[0]!.workedSectors < resync[0]!.totalSectors / 4);
      c = await NbdTestClient.connect(d.info.nbd!.port, `g${tag}`);
      for (let off = 0; off < model.length; off += 8 * MiB) {
        const n = Math.min(8 * MiB, model.length - off);
        assert.ok((await c.read(off, n)).equals(model.subarray(off, off + n)), `bytes at ${off}`);
      }
      await c.close();
      r = d.tsmd(['--action=check', md]);
      assert.equal(r.status, 0, r.stderr);
      await untilAsync('check', async () => !(await arrayStateOf(d, mdName)).syncBusy);
      assert.equal((await arrayStateOf(d, mdName)).mismatchCnt, 0);
      // removed online: mdadm no longer finds it, the array goes on
      r = d.tsmd(['--grow', md, '--bitmap=none']);
      assert.equal(r.status, 0, r.stderr);
      assert.equal((await arrayStateOf(d, mdName)).bitmap, null);
      r = d.tsmd(['--detail', md]);
      assert.doesNotMatch(r.stdout, /Intent Bitmap/);
      if (hasMdadm) assert.equal(fields(run('mdadm', ['--examine', files[2]!]).stdout).get('Internal Bitmap'), undefined);
      c = await NbdTestClient.connect(d.info.nbd!.port, `g${tag}`);
      await c.write(0, randomBytes(65536), true);
      await c.close();
      r = d.tsmd(['--stop', md]);
      assert.equal(r.status, 0, r.stderr);
      if (hasMdadm) {
        const ev = files.map((f) => fields(run('mdadm', ['--examine', f]).stdout).get('Events'));
        assert.equal(new Set(ev).size, 1, `events agree: ${ev.join(' ')}`);
      }
    });
  }

  test('refused without redundancy, with a reshape flag, and for a chunk too small', async () => {
    const files = [0, 1].map((k) => sparseFile(join(dir.path, `z${k}.img`), 16 * MiB));
    let r = d.tsmd(['--create', '/dev/md/z0', '-l0', '-n2', '--run', '--homehost=h', ...files]);
    assert.equal(r.status, 0, r.stderr);
    r = d.tsmd(['--grow', '/dev/md/z0', '--bitmap=internal']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /Bitmaps not meaningful with level raid0/);
    // a raid0 grows through raid4 (takeover.ts): one more device needs a spare
    r = d.tsmd(['--grow', '/dev/md/z0', '--raid-devices=3']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /Need 1 spare to create working array, and only have 0\./);
    r = d.tsmd(['--stop', '/dev/md/z0']);
    assert.equal(r.status, 0, r.stderr);
    const m = [0, 1].map((k) => sparseFile(join(dir.path, `y${k}.img`), 64 * MiB));
    r = d.tsmd(['--create', '/dev/md/y1', '-l1', '-n2', '--run', '--assume-clean', '--homehost=h', ...m]);
    assert.equal(r.status, 0, r.stderr);
    r = d.tsmd(['--grow', '/dev/md/y1', '--bitmap=internal', '--bitmap-chunk=2K']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /too small/);
    r = d.tsmd(['--stop', '/dev/md/y1']);
    assert.equal(r.status, 0, r.stderr);
  });
});
