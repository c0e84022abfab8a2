/**
 * Members made by `tsmd --create` for every level and layout are judged by the real mdadm 4.2:
 * `mdadm --examine` must accept them and print exactly what `tsmd --examine` prints (and the
 * fields must say what was asked for); `mdadm --examine-bitmap` through a read-only loop
 * device must print what `tsmd --examine-bitmap` prints.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  diffLines,
  fields,
  requireRoot,
  requireTool,
  run,
  sparseFile,
  tempDir,
  tsmd,
  withLoop,
} from '../helpers/tools.js';

interface Case {
  name: string;
  args: string[];
  /** member sizes in MiB */
  sizes: number[];
  expect: Record<string, string>;
  bitmap?: boolean;
}

const r5 = [
  'left-asymmetric',
  'right-asymmetric',
  'left-symmetric',
  'right-symmetric',
  'parity-first',
  'parity-last',
];
const r6 = [
  ...r5,
  'ddf-zero-restart',
  'ddf-N-restart',
  'ddf-N-continue',
  'left-asymmetric-6',
  'right-asymmetric-6',
  'left-symmetric-6',
  'right-symmetric-6',
  'parity-first-6',
];

const cases: Case[] = [
  {
    name: 'linear',
    args: ['--level=linear', '-n2'],
    sizes: [24, 40],
    expect: { 'Raid Level': 'linear', 'Raid Devices': '2' },
  },
  {
    name: 'raid0',
    args: ['-l0', '-n3', '-c64'],
    sizes: [32, 32, 32],
    expect: { 'Raid Level': 'raid0', 'Chunk Size': '64K' },
  },
  {
    name: 'raid0 multi-zone original',
    args: ['-l0', '-n3', '-c64', '--layout=original'],
    sizes: [32, 20, 32],
    expect: { 'Raid Level': 'raid0', Layout: 'original', 'Feature Map': '0x1000' },
  },
  {
    name: 'raid0 multi-zone alternate',
    args: ['-l0', '-n3', '-c32', '--layout=alternate'],
    sizes: [32, 20, 40],
    expect: { Layout: 'alternate', 'Chunk Size': '32K' },
  },
  {
    name: 'raid1 bitmap',
    args: ['-l1', '-n2', '--bitmap=internal'],
    sizes: [32, 32],
    expect: { 'Raid Level': 'raid1', 'Internal Bitmap': '8 sectors from superblock' },
    bitmap: true,
  },
  {
    name: 'raid1 3-way write-mostly 64K bitmap chunk',
    args: [
      '--level=mirror',
      '--raid-devices=3',
      '-b',
      'internal',
      '--bitmap-chunk=64K',
      '--write-mostly',
    ],
    sizes: [32, 32, 32],
    expect: { 'Raid Devices': '3' },
    bitmap: true,
  },
  {
    name: 'raid1 metadata 1.0',
    args: ['-l1', '-n2', '-e1.0', '-b', 'internal'],
    sizes: [32, 32],
    expect: { Version: '1.0' },
    bitmap: true,
  },
  {
    name: 'raid1 metadata 1.1',
    args: ['-l1', '-n2', '--metadata=1.1'],
    sizes: [32, 32],
    expect: { Version: '1.1', 'Super Offset': '0 sectors' },
  },
  {
    name: 'raid1 clustered 4 nodes',
    args: ['-l1', '-n2', '--bitmap=clustered', '--nodes=4', '--cluster-name=tsmdclu'],
    sizes: [32, 32],
    expect: { 'Feature Map': '0x101' },
    bitmap: true,
  },
  {
    name: 'raid4',
    args: ['-l4', '-n3', '-c128'],
    sizes: [32, 32, 32],
    expect: { 'Raid Level': 'raid4', 'Chunk Size': '128K' },
  },
  ...r5.map((l) => ({
    name: `raid5 ${l}`,
    args: ['-l5', '-n4', '-c64', `--layout=${l}`, '--assume-clean'],
    sizes: [24, 24, 24, 24],
    expect: { Layout: l },
  })),
  {
    name: 'raid5 bitmap default',
    args: ['-l5', '-n4', '--bitmap=internal'],
    sizes: [48, 48, 48, 48],
    expect: { Layout: 'left-symmetric', 'Chunk Size': '512K' },
    bitmap: true,
  },
  ...r6.map((l) => ({
    name: `raid6 ${l}`,
    args: ['-l6', '-n5', '-c64', `-p${l}`, '--assume-clean'],
    sizes: [24, 24, 24, 24, 24],
    expect: { Layout: l },
  })),
  {
    name: 'raid6 synced bitmap',
    args: ['-l6', '-n4', '-c64', '-binternal'],
    sizes: [24, 24, 24, 24],
    expect: { 'Raid Level': 'raid6' },
    bitmap: true,
  },
  {
    name: 'raid10 n2',
    args: ['-l10', '-n4', '-c64'],
    sizes: [24, 24, 24, 24],
    expect: { Layout: 'near=2' },
  },
  {
    name: 'raid10 f2',
    args: ['-l10', '-n4', '-c64', '--layout=f2', '--assume-clean'],
    sizes: [24, 24, 24, 24],
    expect: { Layout: 'far=2' },
  },
  {
    name: 'raid10 o2',
    args: ['-l10', '-n3', '-c64', '--layout=o2', '--assume-clean'],
    sizes: [24, 24, 24],
    expect: { Layout: 'offset=2' },
  },
  {
    name: 'raid10 n3 bitmap',
    args: ['-l10', '-n3', '-c32', '--layout=n3', '-binternal', '--assume-clean'],
    sizes: [24, 24, 24],
    expect: { Layout: 'near=3' },
    bitmap: true,
  },
  {
    name: 'raid10 f3 with spare',
    args: ['-l10', '-n3', '-x1', '-c64', '--layout=f3', '--assume-clean'],
    sizes: [24, 24, 24, 24],
    expect: { Layout: 'far=3' },
  },
];

describe('tsmd --create judged by mdadm 4.2', () => {
  for (const c of cases) {
    test(c.name, async (t) => {
      if (!requireTool(t, 'mdadm', 'the format judge')) return;
      const dir = tempDir('interop');
      try {
        const files = c.sizes.map((mib, i) => {
          return sparseFile(join(dir.path, `m${i}.img`), mib * 1024 * 1024);
        });
        const cr = tsmd([
          '--create',
          '/dev/md/interop',
          '--run',
          '--homehost=tsmdhost',
          ...c.args,
          ...files,
        ]);
        assert.equal(cr.status, 0, `create failed: ${cr.stderr}`);
        // one call each for all members: mdadm prints one block per device, in order
        const m = run('mdadm', ['--examine', '--homehost=tsmdhost', ...files]);
        assert.equal(m.status, 0, `mdadm --examine refused the members: ${m.stderr}`);
        const ours = tsmd(['--examine', '--homehost=tsmdhost', ...files]);
        assert.equal(ours.status, 0, ours.stderr);
        assert.equal(
          ours.stdout,
          m.stdout,
          `tsmd -E differs from mdadm -E:\n${diffLines(m.stdout, ours.stdout)}`,
        );
        const blocks = m.stdout.split(/\n(?=\S.*:\n)/);
        assert.equal(blocks.length, files.length, 'one --examine block per member');
        for (const block of blocks) {
          const fm = fields(block);
          for (const [k, v] of Object.entries(c.expect))
            assert.equal(fm.get(k), v, `${k} in\n${block}`);
          assert.equal(fm.get('Name'), 'tsmdhost:interop  (local to host tsmdhost)');
          assert.match(fm.get('Checksum') ?? '', / - correct$/);
        }
        // --brief/--scan grouping agrees too
        const mb = run('mdadm', ['--examine', '--scan', ...files]);
        const tb = tsmd(['--examine', '--scan', ...files]);
        assert.equal(tb.stdout, mb.stdout, diffLines(mb.stdout, tb.stdout));
        if (c.bitmap && requireRoot(t, 'mdadm --examine-bitmap (loop device)')) {
          if (!requireTool(t, 'losetup')) return;
          for (const f of files.slice(0, 2)) {
            const theirs = await withLoop(f, (dev) => run('mdadm', ['--examine-bitmap', dev]));
            assert.equal(theirs.status, 0, theirs.stderr);
            const ours = tsmd(['--examine-bitmap', f]);
            assert.equal(ours.status, 0, ours.stderr);
            const strip = (s: string) => s.split('\n').slice(1).join('\n');
            assert.equal(
              strip(ours.stdout),
              strip(theirs.stdout),
              diffLines(strip(theirs.stdout), strip(ours.stdout)),
            );
          }
        }
      } finally {
        dir.cleanup();
      }
    });
  }
});
