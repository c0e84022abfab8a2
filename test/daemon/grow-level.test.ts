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
import { type ArrayState, controlCall } from '../../src/daemon/control.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
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
  /** what --grow prints, for the array's device name */
  says: (md: string) => RegExp;
  end: { level: string; disks: number; layout: string; spares: number };
}

const cliCases: CliCase[] = [
  {
    name: 'raid0 -> raid5 with --add',
    create: ['--level=0', '-n3'],
    devices: 3,
    spares: 0,
    grow: ['--level=5', '--add', 'ADD'],
    says: (md) => new RegExp(`^tsmd: level of ${md} changed to raid5\ntsmd: added .*-3\\.img\n$`),
    end: { level: 'raid5', disks: 4, layout: 'left-symmetric', spares: 0 },
  },
  {
    name: 'raid5 -> raid6 --layout=preserve',
    create: ['--level=5', '-n4'],
    devices: 4,
    spares: 1,
    grow: ['--level=6', '--layout=preserve'],
    says: (md) => new RegExp(`^tsmd: level of ${md} changed to raid6\n$`),
    end: { level: 'raid6', disks: 5, layout: 'left-symmetric-6', spares: 0 },
  },
  {
    // restriped to parity-last, then the parity device failed and removed (raid0_takeover_raid45)
    name: 'raid5 -> raid0',
    create: ['--level=5', '-n4'],
    devices: 4,
    spares: 0,
    grow: ['--level=0'],
    says: () => /^$/,
    end: { level: 'raid0', disks: 3, layout: '', spares: 0 },
  },
  {
    name: 'raid6 -> raid5',
    create: ['--level=6', '-n5'],
    devices: 5,
    spares: 0,
    grow: ['--level=5'],
    says: () => /^$/,
    end: { level: 'raid5', disks: 4, layout: 'left-symmetric', spares: 1 },
  },
];

/** The daemon's view of /dev/mdN. */
async function stateOf(d: TestDaemon, md: string): Promise<ArrayState> {
  const rep = await controlCall(join(d.runDir, 'control.sock'), { op: 'arrays' }, 5000);
  const st = rep.arrays!.find((a) => a.mdName === md.replace('/dev/', ''));
  assert.ok(st, `${md} runs`);
  return st;
}

async function waitFor(d: TestDaemon, md: string, what: string, ok: (s: ArrayState) => boolean): Promise<void> {
  const t0 = Date.now();
  while (!ok(await stateOf(d, md))) {
    assert.ok(Date.now() - t0 < 60_000, `${md}: ${what} within a minute`);
    await new Promise((r) => setTimeout(r, 30));
  }
}

// one daemon for all (its start is a good part of a case's time on a loaded machine)
describe('tsmd --grow --level in the daemon', () => {
  let dir: ReturnType<typeof tempDir>;
  let d: TestDaemon;
  before(async () => {
    dir = tempDir('grow-level');
    d = await startDaemon(join(dir.path, 'run'), ['--no-nbd']);
  });
  after(async () => {
    if (d.proc.exitCode === null) assert.equal(await d.stop(), 0);
    dir.cleanup();
  });

  for (const [n, c] of cliCases.entries()) {
    test(`${c.name}: mdadm's messages, the final geometry, check 0, mdadm --examine agrees`, async () => {
      const md = `/dev/md${n}`;
      const tag = c.name.replace(/[^a-z0-9]+/gi, '-');
      const files = Array.from({ length: c.devices + Math.max(c.spares, 1) }, (_, i) => sparseFile(join(dir.path, `${tag}-${i}.img`), 6 * MiB));
      let r = d.tsmd(['--create', md, ...c.create, '-c64', '--run', '--assume-clean', ...files.slice(0, c.devices)]);
      assert.equal(r.status, 0, r.stderr);
      for (const f of files.slice(c.devices, c.devices + c.spares)) {
        r = d.tsmd([md, '--add', f]);
        assert.equal(r.status, 0, r.stderr);
      }
      r = d.tsmd(['--grow', md, ...c.grow.map((x) => (x === 'ADD' ? files[c.devices]! : x))]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, c.says(md));
      const endLevel = Number(c.end.level.replace('raid', ''));
      await waitFor(d, md, 'the change is done', (s) => s.reshape === null && !s.syncBusy && !s.degraded && s.level === endLevel && s.raidDisks === c.end.disks);
      if (endLevel !== 0) {
        r = d.tsmd(['--action=check', md]);
        assert.equal(r.status, 0, r.stderr);
        await waitFor(d, md, 'check', (s) => !s.syncBusy);
        const st = await stateOf(d, md);
        assert.ok(st.syncHistory.some((h) => h.kind === 'check' && h.completed), 'check ran');
        assert.equal(st.mismatchCnt, 0);
      }
      const detail = d.tsmd(['--detail', md]).stdout;
      assert.match(detail, new RegExp(`Raid Level : ${c.end.level}\\n`));
      assert.match(detail, new RegExp(`Raid Devices : ${c.end.disks}\\n`));
      if (c.end.layout) assert.match(detail, new RegExp(`Layout : ${c.end.layout}\\n`));
      assert.match(detail, new RegExp(`Spare Devices : ${c.end.spares}\\n`));
      r = d.tsmd(['--stop', md]);
      assert.equal(r.status, 0, r.stderr);
      if (haveTool('mdadm')) {
        for (const f of files.slice(0, c.devices + (c.grow.includes('ADD') ? 1 : c.spares))) {
          // (raid5 -> raid0: the parity device removed keeps the superblock it had; both read it)
          const theirs = run('mdadm', ['--examine', f]);
          assert.equal(theirs.status, 0, theirs.stderr);
          assert.equal(await tsmdExamine(f), theirs.stdout, `--examine ${f}`);
        }
      }
    });
  }

  test("refusals: mdadm's messages and exit codes, nothing written", async () => {
    const md = '/dev/md9';
    const files = Array.from({ length: 5 }, (_, i) => sparseFile(join(dir.path, `bad-${i}.img`), 6 * MiB));
    let r = d.tsmd(['--create', md, '--level=5', '-n4', '-c64', '--run', '--assume-clean', ...files.slice(0, 4)]);
    assert.equal(r.status, 0, r.stderr);
    r = d.tsmd([md, '--add', files[4]!]);
    assert.equal(r.status, 0, r.stderr);
    const hash = () => files.map((f) => createHash('sha256').update(readFileSync(f)).digest('hex'));
    const before = hash();
    const refused: Array<[string[], number, RegExp]> = [
      [['--grow', md, '--level=6', '--chunk=128'], 1, /Cannot change array level in the same operation as changing chunk size\./],
      [['--grow', md, '--level=6', '--layout=normalise'], 1, /normalise is only meaningful when reshaping a RAID6 array\./],
      [['--grow', md, '--level=6', '--raid-devices=7'], 1, /Need 3 spares to avoid degraded array, and only have 1\.\n\s+Use --force to over-ride this check\./],
      [['--grow', md, '--level=6', '--layout=bogus'], 1, /layout bogus not understood for raid6/],
    ];
    for (const [args, status, msg] of refused) {
      r = d.tsmd(args);
      assert.equal(r.status, status, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, msg, args.join(' '));
    }
    const st = await stateOf(d, md);
    assert.equal(st.level, 5);
    assert.equal(st.reshape, null);
    r = d.tsmd(['--stop', md]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(hash(), before, 'nothing written');
  });
});
