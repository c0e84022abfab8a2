/**
 * Level changes that move data through tsmd --grow --level in the daemon (level-reshape.ts):
 * raid0 -> raid5 --add, raid5 -> raid6 --layout=preserve, raid6 -> raid5, raid5 -> raid0:
 * mdadm's messages, the final geometry, check 0, and the real mdadm --examine prints what
 * tsmd --examine prints for every member; refusals with mdadm's messages, nothing written.
 * (raid5 -> raid6 under kill -9: reshape-crash-level.test.ts.)
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon } from '../helpers/daemon.js';
import { arrayState, until } from '../helpers/reshape-crash.js';
import { tsmdExamine } from '../helpers/examine.js';
import { haveTool, run, sparseFile, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

interface CliCase {
  name: string;
  create: string[];
  devices: number;
  spares: number;
  /** --grow arguments; ADD stands for the extra device */
  grow: string[];
  says: RegExp;
  end: { level: string; disks: number; layout: string; spares: number };
}

const cliCases: CliCase[] = [
  {
    name: 'raid0 -> raid5 with --add',
    create: ['--level=0', '-n3'],
    devices: 3,
    spares: 0,
    grow: ['--level=5', '--add', 'ADD'],
    says: /^tsmd: level of \/dev\/md0 changed to raid5\ntsmd: added .*-3\.img\n$/,
    end: { level: 'raid5', disks: 4, layout: 'left-symmetric', spares: 0 },
  },
  {
    name: 'raid5 -> raid6 --layout=preserve',
    create: ['--level=5', '-n4'],
    devices: 4,
    spares: 1,
    grow: ['--level=6', '--layout=preserve'],
    says: /^tsmd: level of \/dev\/md0 changed to raid6\n$/,
    end: { level: 'raid6', disks: 5, layout: 'left-symmetric-6', spares: 0 },
  },
  {
    // restriped to parity-last, then the parity device failed and removed (raid0_takeover_raid45)
    name: 'raid5 -> raid0',
    create: ['--level=5', '-n4'],
    devices: 4,
    spares: 0,
    grow: ['--level=0'],
    says: /^$/,
    end: { level: 'raid0', disks: 3, layout: '', spares: 0 },
  },
  {
    name: 'raid6 -> raid5',
    create: ['--level=6', '-n5'],
    devices: 5,
    spares: 0,
    grow: ['--level=5'],
    says: /^$/,
    end: { level: 'raid5', disks: 4, layout: 'left-symmetric', spares: 1 },
  },
];

describe('level changes through tsmd --grow --level', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('grow-level');
  });
  after(() => dir.cleanup());

  for (const c of cliCases) {
    test(`${c.name}: mdadm's messages, the final geometry, check 0, mdadm --examine agrees`, async () => {
      const tag = c.name.replace(/[^a-z0-9]+/gi, '-');
      const files = Array.from({ length: c.devices + Math.max(c.spares, 1) }, (_, i) => sparseFile(join(dir.path, `${tag}-${i}.img`), 12 * MiB));
      const d = await startDaemon(join(dir.path, `run-${tag}`), ['--no-nbd']);
      try {
        let r = d.tsmd(['--create', '/dev/md0', ...c.create, '-c64', '--run', '--assume-clean', ...files.slice(0, c.devices)]);
        assert.equal(r.status, 0, r.stderr);
        for (const f of files.slice(c.devices, c.devices + c.spares)) {
          r = d.tsmd(['/dev/md0', '--add', f]);
          assert.equal(r.status, 0, r.stderr);
        }
        r = d.tsmd(['--grow', '/dev/md0', ...c.grow.map((x) => (x === 'ADD' ? files[c.devices]! : x))]);
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stderr, c.says);
        const endLevel = Number(c.end.level.replace('raid', ''));
        await until(d, 'the change is done', (s) => s.reshape === null && !s.syncBusy && !s.degraded && s.level === endLevel && s.raidDisks === c.end.disks);
        if (endLevel !== 0) {
          r = d.tsmd(['--action=check', '/dev/md0']);
          assert.equal(r.status, 0, r.stderr);
          await until(d, 'check', (s) => !s.syncBusy);
          const st = await arrayState(d);
          assert.ok(st.syncHistory.some((h) => h.kind === 'check' && h.completed), 'check ran');
          assert.equal(st.mismatchCnt, 0);
        }
        const detail = d.tsmd(['--detail', '/dev/md0']).stdout;
        assert.match(detail, new RegExp(`Raid Level : ${c.end.level}\\n`));
        assert.match(detail, new RegExp(`Raid Devices : ${c.end.disks}\\n`));
        if (c.end.layout) assert.match(detail, new RegExp(`Layout : ${c.end.layout}\\n`));
        assert.match(detail, new RegExp(`Spare Devices : ${c.end.spares}\\n`));
        assert.equal(await d.stop(), 0);
        if (haveTool('mdadm')) {
          for (const f of files.slice(0, c.devices + (c.grow.includes('ADD') ? 1 : c.spares))) {
            // (raid5 -> raid0: the parity device removed keeps the superblock it had; both read it)
            const theirs = run('mdadm', ['--examine', f]);
            assert.equal(theirs.status, 0, theirs.stderr);
            assert.equal(await tsmdExamine(f), theirs.stdout, `--examine ${f}`);
          }
        }
      } finally {
        if (d.proc.exitCode === null) await d.stop('SIGKILL');
      }
    });
  }
});

describe('tsmd --grow --level refusals', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('grow-level-bad');
  });
  after(() => dir.cleanup());

  test("mdadm's messages and exit codes, nothing written", async () => {
    const files = Array.from({ length: 5 }, (_, i) => sparseFile(join(dir.path, `bad-${i}.img`), 12 * MiB));
    const d = await startDaemon(join(dir.path, 'run-bad'), ['--no-nbd']);
    try {
      let r = d.tsmd(['--create', '/dev/md0', '--level=5', '-n4', '-c64', '--run', '--assume-clean', ...files.slice(0, 4)]);
      assert.equal(r.status, 0, r.stderr);
      r = d.tsmd(['/dev/md0', '--add', files[4]!]);
      assert.equal(r.status, 0, r.stderr);
      const hash = () => files.map((f) => createHash('sha256').update(readFileSync(f)).digest('hex'));
      const before = hash();
      const refused: Array<[string[], number, RegExp]> = [
        [['--grow', '/dev/md0', '--level=6', '--chunk=128'], 1, /Cannot change array level in the same operation as changing chunk size\./],
        [['--grow', '/dev/md0', '--level=6', '--layout=normalise'], 1, /normalise is only meaningful when reshaping a RAID6 array\./],
        [['--grow', '/dev/md0', '--level=6', '--raid-devices=7'], 1, /Need 3 spares to avoid degraded array, and only have 1\.\n\s+Use --force to over-ride this check\./],
        [['--grow', '/dev/md0', '--level=6', '--layout=bogus'], 1, /layout bogus not understood for raid6/],
      ];
      for (const [args, status, msg] of refused) {
        r = d.tsmd(args);
        assert.equal(r.status, status, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, msg, args.join(' '));
      }
      const st = await arrayState(d);
      assert.equal(st.level, 5);
      assert.equal(st.reshape, null);
      assert.equal(await d.stop(), 0);
      assert.deepEqual(hash(), before, 'nothing written');
    } finally {
      if (d.proc.exitCode === null) await d.stop('SIGKILL');
    }
  });
});
