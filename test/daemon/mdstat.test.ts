/**
 * The daemon's mdstat file is /proc/mdstat byte for byte:
 * (1) every `cat /proc/mdstat` recorded by the real kernel in shared/fixtures/kernel-md comes
 *     out of formatMdstat() identical, from an array description built out of the
 *     `mdadm --detail` / `--examine-bitmap` output recorded with it;
 * (2) each other variant md_seq_show, status_resync, md_bitmap_status and the personalities'
 *     status functions print, with hand-computed expectations;
 * (3) mdadm's and node_exporter's (prometheus/procfs) parsers, restated in mdstat-parsers.ts,
 *     read back what the model says.
 */
import assert from 'node:assert/strict';
import { basename } from 'node:path';
import { describe, test } from 'node:test';
import {
  bitmapCounterPages,
  DEFAULT_PERSONALITIES,
  formatMdstat,
  formatMdstatArray,
  formatSyncProgress,
  mdstatMemberName,
  personalityName,
  raid10Geometry,
  type MdstatArray,
  type MdstatMember,
  type MdstatSync,
} from '../../src/daemon/mdstat.js';
import { mdstatSnapshots, type MdstatSnapshot } from './mdstat-fixtures.js';
import { mdadmConfLines, mdadmParseMdstat, procfsParseMdstat } from './mdstat-parsers.js';

/** What the fixture VM's kernel had registered (raid0, raid1, raid10 and raid456 loaded in that order). */
const VM_PERSONALITIES = ['raid0', 'raid1', 'raid10', 'raid6', 'raid5', 'raid4'];

// ------------------------------------------------------------------ (1) kernel fixtures

/**
 * What --detail does not record: counter pages in memory (they come and go with writes) and
 * the reshape's exact position and speed window. The reshape line reads "(6272/31744)" and
 * "speed=1045K/sec"; the kernel's mark window was not recorded, so take one mark step (3 s) with
 * the sectors that give that speed: db = 6270, dt = 3 (finish then comes out 0.4 min, as recorded).
 */
const RESHAPE_AT_19: MdstatSync = { action: 'reshape', doneSectors: 12544, totalSectors: 63488, windowSectors: 6270, windowSeconds: 3 };
const EXTRAS: Record<string, { bitmapPagesUsed?: number; sync?: MdstatSync }> = {
  'raid1-2disk-bitmap#0': { bitmapPagesUsed: 1 },
  'raid1-degraded-bitmap#0': { bitmapPagesUsed: 0 },
  'raid1-degraded-bitmap#1': { bitmapPagesUsed: 1 },
  'raid1-degraded-bitmap-chunk64k#0': { bitmapPagesUsed: 0 },
  'raid1-degraded-bitmap-chunk64k#1': { bitmapPagesUsed: 1 },
  'raid5-4disk-ls-chunk64#0': { bitmapPagesUsed: 1 },
  'raid5-grow-interrupted#1': { sync: RESHAPE_AT_19 },
  'raid5-grow-crashed#1': { sync: RESHAPE_AT_19 },
};

const LEVELS: Record<string, number> = { linear: -1, raid0: 0, raid1: 1, raid4: 4, raid5: 5, raid6: 6, raid10: 10 };
const RAID5_ALGORITHMS: Record<string, number> = {
  'left-asymmetric': 0, 'right-asymmetric': 1, 'left-symmetric': 2, 'right-symmetric': 3, 'parity-first': 4, 'parity-last': 5,
};

function raid10Layout(text: string): number {
  let layout = 0;
  for (const part of text.split(/,\s*/)) {
    const m = /^(near|far|offset)=(\d+)$/.exec(part);
    assert.ok(m, `raid10 layout '${text}'`);
    const n = Number(m[2]);
    if (m[1] === 'near') layout |= n;
    else if (m[1] === 'far') layout |= n << 8;
    else layout |= (n << 8) | 0x10000;
  }
  if ((layout & 0xff) === 0) layout |= 1;
  if ((layout & 0xff00) === 0) layout |= 1 << 8;
  return layout;
}

/** The array as mdadm --detail described it (plus EXTRAS). */
function arrayFromSnapshot(snap: MdstatSnapshot): MdstatArray {
  const f = snap.detail.fields;
  const get = (k: string): string => {
    const v = f.get(k);
    assert.ok(v !== undefined, `${snap.fixture}#${snap.index}: --detail has '${k}'`);
    return v;
  };
  const extra = EXTRAS[`${snap.fixture}#${snap.index}`] ?? {};
  const level = LEVELS[get('Raid Level')];
  assert.ok(level !== undefined);
  const raidDisks = Number(get('Raid Devices'));
  const slotsUp = new Array<boolean>(raidDisks).fill(false);
  for (const r of snap.detail.rows) if (r.raidDevice !== null && /\bactive sync\b/.test(r.state)) slotsUp[r.raidDevice] = true;
  // The fixtures added members in dev_number order: the create command line order, then --add.
  const members: MdstatMember[] = snap.detail.rows
    .filter((r) => r.device !== undefined && r.number !== null)
    .sort((a, b) => a.number! - b.number!)
    .map((r) => ({
      name: basename(r.device!),
      descNr: r.number!,
      spare: r.raidDevice === null && /\bspare\b/.test(r.state),
      faulty: /\bfaulty\b/.test(r.state),
    }));
  const arr: MdstatArray = {
    name: 'md0', active: true, level, members,
    blocks: Number.parseInt(get('Array Size'), 10),
    superVersion: get('Version'),
  };
  const chunk = f.get('Chunk Size');
  if (chunk !== undefined) arr.chunkKiB = Number(/^(\d+)K$/.exec(chunk)![1]);
  if (level === 4 || level === 5 || level === 6) arr.layout = RAID5_ALGORITHMS[get('Layout')];
  if (level === 10) arr.layout = raid10Layout(get('Layout'));
  if (level >= 1) {
    arr.slotsUp = slotsUp;
    arr.raidDisks = raidDisks;
    arr.workingDisks = Number(get('Active Devices'));
  }
  if (f.get('Intent Bitmap') === 'Internal') {
    assert.ok(snap.bitmap, `${snap.fixture}#${snap.index}: an --examine-bitmap follows`);
    assert.ok(extra.bitmapPagesUsed !== undefined, `${snap.fixture}#${snap.index}: EXTRAS gives the bitmap pages in memory`);
    arr.bitmap = { pagesUsed: extra.bitmapPagesUsed, pagesTotal: bitmapCounterPages(snap.bitmap.bits), chunkBytes: snap.bitmap.chunkBytes };
  }
  const status = f.get('Reshape Status') ?? f.get('Resync Status') ?? f.get('Rebuild Status') ?? f.get('Check Status');
  assert.equal(status !== undefined, extra.sync !== undefined, `${snap.fixture}#${snap.index}: a sync runs exactly when --detail says so`);
  if (extra.sync) arr.sync = extra.sync;
  return arr;
}

const produced: Array<{ what: string; text: string; arrays: MdstatArray[]; personalities: readonly string[] }> = [];

function format(what: string, arrays: MdstatArray[], personalities: readonly string[] = DEFAULT_PERSONALITIES, unusedDevices?: string[]): string {
  const text = formatMdstat(arrays, { personalities, ...(unusedDevices ? { unusedDevices } : {}) });
  produced.push({ what, text, arrays, personalities });
  return text;
}

describe('mdstat: the kernel fixtures, byte for byte', () => {
  const snaps = mdstatSnapshots();

  test('every fixture has its mdstat snapshots (15 in all)', () => {
    const per = new Map<string, number>();
    for (const s of snaps) per.set(s.fixture, (per.get(s.fixture) ?? 0) + 1);
    assert.equal(per.size, 11);
    assert.equal(snaps.length, 15);
  });

  for (const snap of snaps) {
    test(`${snap.fixture} #${snap.index} (${snap.state})`, () => {
      const arr = arrayFromSnapshot(snap);
      const text = format(`${snap.fixture}#${snap.index}`, [arr], VM_PERSONALITIES);
      assert.equal(text, snap.text);
      // mdadm --detail's own "NN% complete" agrees with the line's percentage
      const status = snap.detail.fields.get('Reshape Status');
      if (status) assert.match(text, new RegExp(`= ${/^(\d+)%/.exec(status)![1]}\\.\\d%`));
    });
  }
});

// ------------------------------------------------------------------ (2) the other variants

const m = (name: string, descNr: number, flags: Partial<MdstatMember> = {}): MdstatMember => ({ name, descNr, ...flags });
const pair = (): MdstatMember[] => [m('vda', 0), m('vdb', 1)];
const raid1 = (over: Partial<MdstatArray> = {}): MdstatArray => ({
  name: 'md0', active: true, level: 1, members: pair(), blocks: 31744, superVersion: '1.2', slotsUp: [true, true], ...over,
});

describe('mdstat: first line (state, personality, members)', () => {
  test('members print newest first, whatever their numbers', () => {
    const a = raid1({ members: [m('vdb', 1), m('vda', 0), m('vdc', 7, { spare: true })] });
    assert.equal(formatMdstatArray(a).split('\n')[0], 'md0 : active raid1 vdc[7](S) vda[0] vdb[1]');
  });

  test('inactive: no level, every member (S) as given, 7-space line', () => {
    const a: MdstatArray = {
      name: 'md127', active: false, level: 5, blocks: 95232, superVersion: '1.2',
      members: [m('vda', 0, { spare: true }), m('vdb', 1, { spare: true }), m('vdc', 2, { spare: true })],
    };
    assert.equal(formatMdstatArray(a), 'md127 : inactive vdc[2](S) vdb[1](S) vda[0](S)\n      95232 blocks super 1.2\n       \n');
    assert.equal(format('inactive', [a]), 'Personalities : [linear] [raid0] [raid1] [raid10] [raid6] [raid5] [raid4] \n'
      + 'md127 : inactive vdc[2](S) vdb[1](S) vda[0](S)\n      95232 blocks super 1.2\n       \nunused devices: <none>\n');
  });

  test('inactive without members: no blocks line', () => {
    const a: MdstatArray = { name: 'md1', active: false, level: 1, members: [], blocks: 0, superVersion: '1.2' };
    assert.equal(formatMdstatArray(a), 'md1 : inactive super 1.2\n       \n');
  });

  test('(read-only) and (auto-read-only)', () => {
    assert.equal(format('ro', [raid1({ readOnly: true })]).split('\n')[1], 'md0 : active (read-only) raid1 vdb[1] vda[0]');
    assert.equal(formatMdstatArray(raid1({ readOnly: 'read-only' })).split('\n')[0], 'md0 : active (read-only) raid1 vdb[1] vda[0]');
    const auto = raid1({ readOnly: 'auto-read-only', resyncPending: true });
    assert.equal(formatMdstatArray(auto), 'md0 : active (auto-read-only) raid1 vdb[1] vda[0]\n      31744 blocks super 1.2 [2/2] [UU]\n      \tresync=PENDING\n      \n');
    format('auto-ro pending', [auto]);
  });

  test('member flags in the kernel order: (W) (J), then (F) alone, else (S) (R)', () => {
    const a = raid1({
      members: [
        m('vda', 0), m('vdb', 1, { writeMostly: true }), m('vdc', 2, { faulty: true }), m('vdd', 3, { spare: true }),
        m('vde', 4, { replacement: true }), m('vdf', 5, { writeMostly: true, faulty: true, spare: true, replacement: true }),
        m('vdg', 6, { spare: true, replacement: true }),
      ],
      slotsUp: [true, true, false], workingDisks: 2,
    });
    assert.equal(format('flags', [a]).split('\n')[1],
      'md0 : active raid1 vdg[6](S)(R) vdf[5](W)(F) vde[4](R) vdd[3](S) vdc[2](F) vdb[1](W) vda[0]');
    const j: MdstatArray = {
      name: 'md0', active: true, level: 5, chunkKiB: 512, layout: 2, blocks: 63488, superVersion: '1.2',
      members: [m('vda', 0), m('vdb', 1), m('vdc', 2), m('vdd', 3, { journal: true })], slotsUp: [true, true, true],
    };
    assert.equal(format('journal', [j]).split('\n').slice(1, 3).join('\n'),
      'md0 : active raid5 vdd[3](J) vdc[2] vdb[1] vda[0]\n      63488 blocks super 1.2 level 5, 512k chunk, algorithm 2 [3/3] [UUU]');
  });

  test('broken (newer kernels, raid0/linear missing a member)', () => {
    const a: MdstatArray = { name: 'md0', active: true, broken: true, level: 0, chunkKiB: 64, members: pair(), blocks: 63488, superVersion: '1.2' };
    assert.equal(format('broken', [a]).split('\n').slice(1, 4).join('\n'), 'md0 : broken raid0 vdb[1] vda[0]\n      63488 blocks super 1.2 64k chunks\n      ');
  });
});

describe('mdstat: second line per personality', () => {
  const second = (a: MdstatArray): string => formatMdstatArray(a).split('\n')[1]!;

  test('linear rounding, raid0 chunks; no sync line even if given', () => {
    const lin: MdstatArray = { name: 'md0', active: true, level: -1, chunkKiB: 0, members: pair(), blocks: 63488, superVersion: '1.2' };
    assert.equal(format('linear', [lin]).split('\n').slice(1, 4).join('\n'), 'md0 : active linear vdb[1] vda[0]\n      63488 blocks super 1.2 0k rounding\n      ');
    const r0: MdstatArray = { ...lin, level: 0, chunkKiB: 512, sync: { action: 'resync', doneSectors: 10, totalSectors: 100 } };
    assert.equal(formatMdstatArray(r0), 'md0 : active raid0 vdb[1] vda[0]\n      63488 blocks super 1.2 512k chunks\n      \n');
  });

  test('raid4/5/6: level, chunk, algorithm; degraded [n/m]', () => {
    const r6: MdstatArray = {
      name: 'md2', active: true, level: 6, chunkKiB: 64, layout: 18, blocks: 95232, superVersion: '1.2',
      members: [m('vda', 0), m('vdb', 1), m('vdc', 2), m('vdd', 3), m('vde', 4, { faulty: true })],
      slotsUp: [true, true, true, true, false],
    };
    assert.equal(second(r6), '      95232 blocks super 1.2 level 6, 64k chunk, algorithm 18 [5/4] [UUUU_]');
    const r4: MdstatArray = { ...r6, level: 4, layout: 5, members: r6.members.slice(0, 4), slotsUp: [true, true, false, true] };
    assert.equal(formatMdstatArray(r4).split('\n')[0], 'md2 : active raid4 vdd[3] vdc[2] vdb[1] vda[0]');
    assert.equal(second(r4), '      95232 blocks super 1.2 level 4, 64k chunk, algorithm 5 [4/3] [UU_U]');
    format('raid6 + raid4', [r6, { ...r4, name: 'md3' }]);
  });

  test('raid10: K chunks unless near copies span all disks; near, far, offset, far sets', () => {
    const r10 = (layout: number, disks: number): MdstatArray => ({
      name: 'md0', active: true, level: 10, chunkKiB: 512, layout, blocks: 1000, superVersion: '1.2',
      members: Array.from({ length: disks }, (_, i) => m(`vd${String.fromCharCode(97 + i)}`, i)), slotsUp: new Array<boolean>(disks).fill(true),
    });
    assert.equal(second(r10(0x102, 4)), '      1000 blocks super 1.2 512K chunks 2 near-copies [4/4] [UUUU]');
    assert.equal(second(r10(0x201, 4)), '      1000 blocks super 1.2 512K chunks 2 far-copies [4/4] [UUUU]');
    assert.equal(second(r10(0x10201, 4)), '      1000 blocks super 1.2 512K chunks 2 offset-copies [4/4] [UUUU]');
    assert.equal(second(r10(0x102, 2)), '      1000 blocks super 1.2 2 near-copies [2/2] [UU]');
    assert.equal(second(r10(0x103, 3)), '      1000 blocks super 1.2 3 near-copies [3/3] [UUU]');
    assert.equal(second(r10(0x202, 4)), '      1000 blocks super 1.2 512K chunks 2 near-copies 2 far-copies [4/4] [UUUU]');
    assert.equal(second(r10(0x40201, 4)), '      1000 blocks super 1.2 512K chunks 2 far-copies 2 devices per set [4/4] [UUUU]');
    assert.equal(second(r10(0x20201, 5)), '      1000 blocks super 1.2 512K chunks 2 far-copies 2 devices per set [5/5] [UUUUU]');
    assert.equal(second(r10(0x101, 4)), '      1000 blocks super 1.2 512K chunks [4/4] [UUUU]');
    assert.deepEqual(raid10Geometry(0x50302, 6), { nearCopies: 2, farCopies: 3, farOffset: true, farSetSize: 6 });
    assert.throws(() => formatMdstatArray(r10(0x60201, 4)), /not a valid md layout/);
    format('raid10 o2', [r10(0x10201, 4)]);
  });

  test('superblock kinds: 0.90 prints nothing, external, non-persistent', () => {
    assert.equal(second(raid1({ superVersion: '0.90' })), '      31744 blocks [2/2] [UU]');
    assert.equal(second(raid1({ superVersion: '1.0' })), '      31744 blocks super 1.0 [2/2] [UU]');
    assert.equal(second(raid1({ superVersion: 'external:/md127/0' })), '      31744 blocks super external:/md127/0 [2/2] [UU]');
    assert.equal(second(raid1({ superVersion: 'non-persistent' })), '      31744 blocks super non-persistent [2/2] [UU]');
    assert.throws(() => formatMdstatArray(raid1({ superVersion: 'v1' })), /superVersion/);
    format('0.90', [raid1({ superVersion: '0.90' })]);
  });
});

describe('mdstat: bitmap line', () => {
  test('pages, KB, chunk in KB or B, external file escaped', () => {
    const line = (b: MdstatArray['bitmap']): string => formatMdstatArray(raid1({ bitmap: b })).split('\n')[2]!;
    assert.equal(line({ pagesUsed: 0, pagesTotal: 1, chunkBytes: 65536 }), '      bitmap: 0/1 pages [0KB], 64KB chunk');
    assert.equal(line({ pagesUsed: 3, pagesTotal: 5, chunkBytes: 64 << 20 }), '      bitmap: 3/5 pages [12KB], 65536KB chunk');
    assert.equal(line({ pagesUsed: 1, pagesTotal: 1, chunkBytes: 512 }), '      bitmap: 1/1 pages [4KB], 512B chunk');
    assert.equal(line({ pagesUsed: 1, pagesTotal: 2, chunkBytes: 4096, pageKiB: 64 }), '      bitmap: 1/2 pages [64KB], 4KB chunk');
    assert.equal(line({ pagesUsed: 1, pagesTotal: 1, chunkBytes: 1 << 20, file: '/var/lib/tsmd/my bitmap\tx' }),
      '      bitmap: 1/1 pages [4KB], 1024KB chunk, file: /var/lib/tsmd/my\\040bitmap\\011x');
    const a = raid1({ bitmap: { pagesUsed: 1, pagesTotal: 1, chunkBytes: 65536 } });
    assert.equal(formatMdstatArray(a), 'md0 : active raid1 vdb[1] vda[0]\n      31744 blocks super 1.2 [2/2] [UU]\n      bitmap: 1/1 pages [4KB], 64KB chunk\n\n');
    format('bitmap', [a]);
  });

  test('counter pages: 2048 chunks per 4 KiB page', () => {
    assert.equal(bitmapCounterPages(0), 0);
    assert.equal(bitmapCounterPages(1), 1);
    assert.equal(bitmapCounterPages(496), 1);
    assert.equal(bitmapCounterPages(2048), 1);
    assert.equal(bitmapCounterPages(2049), 2);
    assert.equal(bitmapCounterPages(4096, 16384), 1);
  });
});

describe('mdstat: sync progress (status_resync)', () => {
  test('half-way resync with a 3 s mark window', () => {
    const s: MdstatSync = { action: 'resync', doneSectors: 31744, totalSectors: 63488, windowSectors: 6000, windowSeconds: 3 };
    assert.equal(formatSyncProgress(s), '[=========>...........]  resync = 49.2% (15872/31744) finish=0.2min speed=1000K/sec');
    const a = raid1({ sync: s, bitmap: { pagesUsed: 1, pagesTotal: 1, chunkBytes: 64 << 20 } });
    assert.equal(format('resync+bitmap', [a]), 'Personalities : [linear] [raid0] [raid1] [raid10] [raid6] [raid5] [raid4] \n'
      + 'md0 : active raid1 vdb[1] vda[0]\n      31744 blocks super 1.2 [2/2] [UU]\n'
      + '      [=========>...........]  resync = 49.2% (15872/31744) finish=0.2min speed=1000K/sec\n'
      + '      bitmap: 1/1 pages [4KB], 65536KB chunk\n\nunused devices: <none>\n');
  });

  test('2 TiB recovery from speedKiBs alone (db = 2*speed over 1 s)', () => {
    assert.equal(formatSyncProgress({ action: 'recovery', doneSectors: 1e9, totalSectors: 2 ** 32, speedKiBs: 150000 }),
      '[====>................]  recovery = 23.2% (500000000/2147483648) finish=183.0min speed=150000K/sec');
  });

  test('start of a sync: at least 3 sectors (1 block) shown, 0.0%, empty bar', () => {
    assert.equal(formatSyncProgress({ action: 'resync', doneSectors: 0, totalSectors: 63488 }),
      '[>....................]  resync =  0.0% (1/31744) finish=33.0min speed=0K/sec');
  });

  test('check below 10 % (right-aligned percentage); repair prints as resync; 99.9 % is the most', () => {
    const total = 1024 * 999;
    assert.equal(formatSyncProgress({ action: 'check', doneSectors: 52 * 1024, totalSectors: total }),
      '[=>...................]  check =  5.2% (26624/511488) finish=505.0min speed=0K/sec');
    assert.equal(formatSyncProgress({ action: 'repair', doneSectors: total + 5000, totalSectors: total }),
      '[===================>.]  resync = 99.9% (511488/511488) finish=0.0min speed=0K/sec');
  });

  test('DELAYED, PENDING, REMOTE; pending is not shown while a sync runs', () => {
    const delayed = raid1({ sync: { action: 'resync', doneSectors: 0, totalSectors: 63488, delayed: true } });
    assert.equal(formatMdstatArray(delayed), 'md0 : active raid1 vdb[1] vda[0]\n      31744 blocks super 1.2 [2/2] [UU]\n      \tresync=DELAYED\n      \n');
    format('delayed', [delayed]);
    const running = raid1({ resyncPending: true, sync: { action: 'resync', doneSectors: 31744, totalSectors: 63488, speedKiBs: 1000 } });
    assert.match(formatMdstatArray(running).split('\n')[2]!, /^ {6}\[=========>\.{11}\] {2}resync = 49\.2%/);
    format('resync over pending', [running]);
    for (const r of ['recover', 'reshape', 'resync'] as const) {
      const a = raid1({ remoteSync: r, resyncPending: true });
      assert.equal(formatMdstatArray(a).split('\n')[2], `      \t${r}=REMOTE`);
    }
  });

  test('recovery onto a spare of a degraded raid5', () => {
    const a: MdstatArray = {
      name: 'md5', active: true, level: 5, chunkKiB: 64, layout: 2, blocks: 95232, superVersion: '1.2',
      members: [m('vda', 0), m('vdb', 1), m('vdc', 2), m('vdd', 4)], slotsUp: [true, true, true, false],
      sync: { action: 'recovery', doneSectors: 20000, totalSectors: 63488, windowSectors: 60000, windowSeconds: 30 },
    };
    // 19*1000/63 = 301; rt = 43488/(1875+1) = 23, *30 >> 5 = 21 s; speed 60000/2/30
    assert.equal(formatMdstatArray(a), 'md5 : active raid5 vdd[4] vdc[2] vdb[1] vda[0]\n'
      + '      95232 blocks super 1.2 level 5, 64k chunk, algorithm 2 [4/3] [UUU_]\n'
      + '      [======>..............]  recovery = 30.1% (10000/31744) finish=0.3min speed=1000K/sec\n      \n');
    format('recovery', [a]);
  });
});

describe('mdstat: the whole file', () => {
  test('arrays print newest first; unused devices; empty', () => {
    const md0 = raid1();
    const md1: MdstatArray = { ...raid1(), name: 'md1', members: [m('vdc', 0), m('vdd', 1)] };
    const text = format('two arrays', [md0, md1], ['raid1'], ['vde', 'vdf']);
    assert.equal(text, 'Personalities : [raid1] \n'
      + 'md1 : active raid1 vdd[1] vdc[0]\n      31744 blocks super 1.2 [2/2] [UU]\n      \n'
      + 'md0 : active raid1 vdb[1] vda[0]\n      31744 blocks super 1.2 [2/2] [UU]\n      \n'
      + 'unused devices: vde vdf \n');
    assert.equal(formatMdstat([], { personalities: [] }), 'Personalities : \nunused devices: <none>\n');
    assert.equal(formatMdstat([]), 'Personalities : [linear] [raid0] [raid1] [raid10] [raid6] [raid5] [raid4] \nunused devices: <none>\n');
  });

  test('a busy node: every kind of stanza in one file', () => {
    const arrays: MdstatArray[] = [
      raid1({ name: 'md0', bitmap: { pagesUsed: 1, pagesTotal: 1, chunkBytes: 65536 }, sync: { action: 'check', doneSectors: 40000, totalSectors: 63488, speedKiBs: 5000 } }),
      { name: 'md1', active: true, level: 0, chunkKiB: 64, members: [m('vdc', 0), m('vdd', 1)], blocks: 63488, superVersion: '1.2' },
      { name: 'md127', active: false, level: 5, members: [m('vde', 0, { spare: true }), m('vdf', 1, { spare: true })], blocks: 63488, superVersion: '1.2' },
      {
        name: 'md126', active: true, level: 10, chunkKiB: 64, layout: 0x102, blocks: 63488, superVersion: '1.2',
        members: [m('vdg', 0), m('vdh', 1), m('vdi', 2), m('vdj', 3, { writeMostly: true }), m('vdk', 4, { faulty: true })],
        slotsUp: [true, true, true, false], sync: { action: 'recovery', doneSectors: 1000, totalSectors: 31744, delayed: true },
      },
      raid1({ name: 'md2', readOnly: 'auto-read-only', resyncPending: true, bitmap: { pagesUsed: 0, pagesTotal: 1, chunkBytes: 65536 } }),
      { ...raid1({ name: 'md3' }), level: 6, chunkKiB: 512, layout: 2, slotsUp: [true, true, true, true], members: [m('a1', 0), m('a2', 1), m('a3', 2), m('a4', 3)], sync: RESHAPE_AT_19 },
    ];
    const text = format('busy', arrays);
    assert.deepEqual(text.split('\n').filter((l) => /^md/.test(l)).map((l) => l.split(' ')[0]), ['md3', 'md2', 'md126', 'md127', 'md1', 'md0']);
  });

  test('argument checks: names, duplicates, slots', () => {
    assert.throws(() => formatMdstatArray(raid1({ members: [m('my disk', 0)] })), /member name/);
    assert.throws(() => formatMdstatArray(raid1({ members: [m('vda[1]', 0)] })), /member name/);
    assert.throws(() => formatMdstatArray(raid1({ name: '/dev/md0' })), /kernel md name/);
    assert.throws(() => formatMdstat([raid1(), raid1()]), /listed once/);
    assert.throws(() => formatMdstatArray(raid1({ slotsUp: [true, true], raidDisks: 3 })), /raidDisks/);
    assert.throws(() => formatMdstatArray(raid1({ slotsUp: undefined })), /slotsUp/);
    assert.throws(() => formatMdstatArray(raid1({ level: 3 })), /no md personality/);
    assert.equal(mdstatMemberName('my disk[1].img'), 'my_disk_1_.img');
    assert.equal(personalityName(-1), 'linear');
  });
});

// ------------------------------------------------------------------ (3) the parsers

/** The kernel's per-mille, restated for the expectations. */
function perMille(s: MdstatSync): number {
  const done = Math.max(3, Math.min(s.doneSectors, s.totalSectors));
  return Math.floor((Math.floor(done / 1024) * 1000) / (Math.floor(s.totalSectors / 1024) + 1));
}

function printedMembers(a: MdstatArray): MdstatMember[] {
  return [...a.members].reverse();
}

function hasSlots(a: MdstatArray): boolean {
  return a.active && [1, 4, 5, 6, 10].includes(a.level);
}

/** What the sync line says, or null when there is none. */
function syncOf(a: MdstatArray): { kind: 'progress'; s: MdstatSync } | { kind: 'delayed' | 'pending' } | { kind: 'remote'; r: string } | null {
  if (!hasSlots(a)) return null;
  if (a.sync) return a.sync.delayed ? { kind: 'delayed' } : { kind: 'progress', s: a.sync };
  if (a.remoteSync) return { kind: 'remote', r: a.remoteSync };
  if (a.resyncPending) return { kind: 'pending' };
  return null;
}

const SYNC_WORD_MDADM: Record<string, number> = { recovery: 0, resync: 1, repair: 1, reshape: 2, check: 3, recover: 0 };

function checkMdadm(text: string, arrays: MdstatArray[], what: string): void {
  const ents = mdadmParseMdstat(text);
  const printed = [...arrays].reverse();
  assert.equal(ents.length, printed.length, `${what}: mdadm sees every array`);
  printed.forEach((a, i) => {
    const e = ents[i]!;
    const ctx = `${what} ${a.name} (mdadm)`;
    assert.equal(e.devnm, a.name, ctx);
    const running = a.active && !a.broken;
    assert.equal(e.active, running ? 1 : a.active ? -1 : 0, ctx);
    assert.equal(e.level, running ? personalityName(a.level) : null, ctx);
    // mdadm collects members only after the level word (active) or "inactive": none for "broken"
    assert.deepEqual(e.members, a.broken ? [] : printedMembers(a).map((x) => x.name), ctx);
    assert.equal(e.metadataVersion, a.superVersion === '0.90' ? null : a.superVersion, ctx);
    assert.equal(e.raidDisks, hasSlots(a) ? a.slotsUp!.length : 0, ctx);
    assert.equal(e.pattern, hasSlots(a) ? a.slotsUp!.map((u) => (u ? 'U' : '_')).join('') : null, ctx);
    const sync = syncOf(a);
    if (!sync) {
      assert.equal(e.percent, 'NONE', ctx);
    } else if (sync.kind === 'progress') {
      assert.equal(e.percent, Math.floor(perMille(sync.s) / 10), ctx);
      assert.equal(e.resync, SYNC_WORD_MDADM[sync.s.action], ctx);
    } else if (sync.kind === 'remote') {
      assert.equal(e.percent, 'REMOTE', ctx);
      assert.equal(e.resync, SYNC_WORD_MDADM[sync.r], ctx);
    } else {
      assert.equal(e.percent, sync.kind === 'delayed' ? 'DELAYED' : 'PENDING', ctx);
      assert.equal(e.resync, 1, ctx);
    }
  });
}

function checkProcfs(text: string, arrays: MdstatArray[], personalities: readonly string[], what: string): void {
  const printed = [...arrays].reverse();
  // procfs has no reading for md-cluster's "reshape=REMOTE"/"resync=REMOTE" (nor has it for the kernel's)
  const rejected = printed.some((a) => {
    const s = syncOf(a);
    return s?.kind === 'remote' && s.r !== 'recover';
  });
  if (rejected) {
    assert.throws(() => procfsParseMdstat(text), /recovery line/);
    return;
  }
  const stats = procfsParseMdstat(text);
  assert.equal(stats.length, printed.length, `${what}: procfs sees every array`);
  printed.forEach((a, i) => {
    const p = stats[i]!;
    const ctx = `${what} ${a.name} (procfs)`;
    assert.equal(p.name, a.name, ctx);
    assert.equal(p.type, a.active && personalities.includes(personalityName(a.level)) ? personalityName(a.level) : 'unknown', ctx);
    const members = printedMembers(a);
    assert.equal(p.disksFailed, members.filter((x) => x.faulty).length, ctx);
    assert.equal(p.disksSpare, members.filter((x) => x.spare && !x.faulty).length, ctx);
    assert.equal(p.blocksTotal, a.blocks, ctx);
    if (!a.active) {
      assert.deepEqual([p.disksActive, p.disksTotal, p.disksDown], [0, 0, 0], ctx);
    } else if (a.level <= 0) {
      assert.deepEqual([p.disksActive, p.disksTotal, p.disksDown], [members.length, members.length, 0], ctx);
    } else {
      const slots = a.slotsUp!;
      assert.deepEqual([p.disksActive, p.disksTotal, p.disksDown],
        [a.workingDisks ?? slots.filter(Boolean).length, slots.length, slots.filter((u) => !u).length], ctx);
    }
    const state = !a.active ? 'inactive' : a.broken ? 'broken' : 'active';
    const sync = syncOf(a);
    if (sync?.kind === 'progress') {
      const s = sync.s;
      const word = s.action === 'recovery' ? 'recovering' : s.action === 'reshape' ? 'reshaping' : s.action === 'check' ? 'checking' : 'resyncing';
      assert.equal(p.activityState, word, ctx);
      assert.equal(p.blocksSynced, Math.floor(Math.max(3, Math.min(s.doneSectors, s.totalSectors)) / 2), ctx);
      assert.equal(p.blocksToBeSynced, Math.floor(s.totalSectors / 2), ctx);
      assert.equal(p.blocksSyncedPct, perMille(s) / 10, ctx);
      const line = formatSyncProgress(s);
      assert.equal(p.blocksSyncedFinishTime, Number(/finish=(\d+\.\d)min/.exec(line)![1]), ctx);
      assert.equal(p.blocksSyncedSpeed, Number(/speed=(\d+)K\/sec/.exec(line)![1]), ctx);
      if (s.speedKiBs !== undefined && s.windowSectors === undefined) assert.equal(p.blocksSyncedSpeed, Math.floor(s.speedKiBs), ctx);
    } else if (sync?.kind === 'delayed' || sync?.kind === 'pending') {
      assert.equal(p.activityState, 'resyncing', ctx);
      assert.equal(p.blocksSynced, 0, ctx);
    } else {
      assert.equal(p.activityState, state, ctx); // includes "recover=REMOTE", which procfs does not notice
      assert.equal(p.blocksSynced, a.blocks, ctx);
    }
    // procfs's component pattern only takes a flag group of S/F letters right after "[n]"
    const expected = members.map((x) => {
      const plain = !x.writeMostly && !x.journal;
      return {
        name: x.name, descriptorIndex: x.descNr, writeMostly: false, journal: false, replacement: false,
        faulty: plain && !!x.faulty, spare: plain && !x.faulty && !!x.spare,
      };
    });
    assert.deepEqual(p.devices, expected, ctx);
  });
}

describe('mdstat: mdadm and node_exporter read what we write', () => {
  test('conf_line joins continuation lines and splits words', () => {
    assert.deepEqual(mdadmConfLines('md0 : active raid1 a[0]\n      10 blocks\n      \nunused devices: <none>\n'),
      [['md0', ':', 'active', 'raid1', 'a[0]', '10', 'blocks'], ['unused', 'devices:', '<none>']]);
  });

  test('every file produced above parses with both', () => {
    assert.ok(produced.length >= 30, `collected ${produced.length} files`);
    for (const p of produced) {
      checkMdadm(p.text, p.arrays, p.what);
      checkProcfs(p.text, p.arrays, p.personalities, p.what);
    }
  });

  test('REMOTE states: mdadm reads them; procfs reads recover=REMOTE as plain active and rejects the others', () => {
    for (const r of ['recover', 'reshape', 'resync'] as const) {
      const arrays = [raid1({ remoteSync: r })];
      const text = formatMdstat(arrays);
      checkMdadm(text, arrays, `remote ${r}`);
      checkProcfs(text, arrays, DEFAULT_PERSONALITIES, `remote ${r}`);
    }
  });
});
