/**
 * tsmd --grow --level through the CLI against a node daemon (mdadm's grammar, messages and
 * exit codes for the instant takeovers, src/md/takeover.ts): raid1 -> raid5, raid0 -> raid10
 * with --add (the recovery then runs in the daemon's background), and the refusals, which
 * write nothing. The data and superblock checks are test/md/takeover*.test.ts's.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { fields, sparseFile, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

describe('--grow --level through the daemon', () => {
  let dir: ReturnType<typeof tempDir>;
  let d: TestDaemon;
  before(async () => {
    dir = tempDir('takeover-cli');
    d = await startDaemon(join(dir.path, 'run'), ['--speed-limit-min=200000']);
  });
  after(async () => {
    await d.stop();
    dir.cleanup();
  });

  const hashOf = (files: string[]) => files.map((f) => createHash('sha256').update(readFileSync(f)).digest('hex'));
  const detail = (md: string) => {
    const r = d.tsmd(['--detail', md]);
    assert.equal(r.status, 0, r.stderr);
    return fields(r.stdout);
  };

  test('raid1 -> raid5: "level of /dev/md0 changed to raid5"; the export keeps its data', async () => {
    const files = [0, 1].map((i) => sparseFile(join(dir.path, `r1-${i}.img`), 16 * MiB));
    let r = d.tsmd(['--create', '/dev/md0', '-l1', '-n2', '--run', '--assume-clean', ...files]);
    assert.equal(r.status, 0, r.stderr);
    const c = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
    const data = Buffer.alloc(256 * 1024, 0x5a);
    await c.write(MiB, data, true);
    await c.close();
    r = d.tsmd(['--grow', '/dev/md0', '--level=5']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, 'tsmd: level of /dev/md0 changed to raid5\n');
    const f = detail('/dev/md0');
    assert.equal(f.get('Raid Level'), 'raid5');
    assert.equal(f.get('Layout'), 'left-symmetric');
    assert.equal(f.get('Chunk Size'), '64K');
    const c2 = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
    assert.ok((await c2.read(MiB, data.length)).equals(data));
    await c2.close();
    // the same level again: mdadm's "no change requested", exit 0
    r = d.tsmd(['--grow', '/dev/md0', '--level=raid5']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /\/dev\/md0: no change requested/);
    // refusals, nothing written
    const before = hashOf(files);
    const refused: Array<[string[], number, RegExp]> = [
      [['--grow', '/dev/md0', '--level=1', '--chunk=128'], 1, /^tsmd: Cannot change array level in the same operation as changing chunk size\.\n$/],
      [['--grow', '/dev/md0', '--level=10'], 1, /^tsmd: Impossible level change requested\n$/],
      // left-symmetric -> raid0 restripes to parity-last first (level-reshape.ts), not with 2 devices
      [['--grow', '/dev/md0', '--level=0'], 1, /^tsmd: Impossible level change requested\n$/],
      [['--grow', '/dev/md0', '--level=bogus'], 2, /invalid raid level: bogus/],
    ];
    for (const [args, status, msg] of refused) {
      r = d.tsmd(args);
      assert.equal(r.status, status, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, msg, args.join(' '));
    }
    assert.deepEqual(hashOf(files), before, 'nothing written');
  });

  test('raid0 -> raid10 needs 2 spares; with --add of two: raid10 near=2, recovered in the background', async () => {
    const files = [0, 1, 2, 3].map((i) => sparseFile(join(dir.path, `r0-${i}.img`), 16 * MiB));
    let r = d.tsmd(['--create', '/dev/md1', '-l0', '-n2', '-c64', '--run', files[0]!, files[1]!]);
    assert.equal(r.status, 0, r.stderr);
    const before = hashOf(files);
    r = d.tsmd(['--grow', '/dev/md1', '--level=10']);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, 'tsmd: Need 2 spares to create working array, and only have 0.\n');
    assert.deepEqual(hashOf(files), before, 'nothing written');
    r = d.tsmd(['--grow', '/dev/md1', '--level=10', '--add', files[2]!, files[3]!]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, `tsmd: level of /dev/md1 changed to raid10\ntsmd: added ${files[2]}\ntsmd: added ${files[3]}\n`);
    r = d.tsmd(['--wait', '/dev/md1']);
    assert.ok(r.status === 0 || r.status === 1, r.stderr);
    const f = detail('/dev/md1');
    assert.equal(f.get('Raid Level'), 'raid10');
    assert.equal(f.get('Raid Devices'), '4');
    assert.equal(f.get('Layout'), 'near=2');
    assert.equal(f.get('State'), 'clean');
    assert.equal(f.get('Active Devices'), '4');
  });

  test('raid0 --raid-devices=3 --add: through raid4 and back, a raid0 of 3 at the end', async () => {
    const files = [0, 1, 2].map((i) => sparseFile(join(dir.path, `g0-${i}.img`), 16 * MiB));
    let r = d.tsmd(['--create', '/dev/md2', '-l0', '-n2', '-c64', '--run', files[0]!, files[1]!]);
    assert.equal(r.status, 0, r.stderr);
    const size = Number(detail('/dev/md2').get('Array Size')!.split(' ')[0]);
    r = d.tsmd(['--grow', '/dev/md2', '--raid-devices=3', '--add', files[2]!]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, `tsmd: level of /dev/md2 changed to raid4\ntsmd: added ${files[2]}\n`);
    r = d.tsmd(['--wait', '/dev/md2']);
    assert.ok(r.status === 0 || r.status === 1, r.stderr);
    const f = detail('/dev/md2');
    assert.equal(f.get('Raid Level'), 'raid0');
    assert.equal(f.get('Raid Devices'), '3');
    assert.equal(Number(f.get('Array Size')!.split(' ')[0]), (size * 3) / 2);
  });
});
