/**
 * The mdadm 4.2 report formatters against mdadm's own output: every member of every kernel-md
 * fixture (--examine, --examine-bitmap), every --detail recorded while the fixture arrays ran,
 * and the hand-made images of spec §6.
 */
process.env.TZ = 'UTC';

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import {
  type DetailInput,
  type DetailMember,
  detailFieldsFromSuperblock,
  formatDetail,
  formatDetailBrief,
} from '../../src/mdadm/report/detail.js';
import {
  examineSpareCount,
  formatExamine,
  formatExamineBrief,
  formatExamineScan,
} from '../../src/mdadm/report/examine.js';
import { formatExamineBitmap } from '../../src/mdadm/report/examine-bitmap.js';
import { cFixed1, humanSize, humanSizeBrief, mdCtime } from '../../src/mdadm/report/human.js';
import { Feature, type Superblock1 } from '../../src/format/superblock.js';
import {
  decodeMember,
  FIXTURES_DIR,
  finalSections,
  fixtureDirs,
  lineDiff,
  type Member,
  manifestSizes,
  memberImages,
  parseInfo,
  readXzPrefix,
  type Section,
  textLines,
  vdName,
} from '../helpers/report-fixtures.js';
import { specImages, specOutputs } from '../helpers/report-images.js';

function assertLines(actualText: string, expected: string[], what: string): void {
  const actual = textLines(actualText);
  if (actual.length === expected.length && actual.every((l, i) => l === expected[i])) return;
  assert.fail(`${what}: output differs from mdadm\n${lineDiff(expected, actual)}`);
}

interface Fixture {
  dir: string;
  sections: Section[];
  members: Member[];
  devSectors: number[];
}

const PREFIX_BYTES = 64 * 1024;
const fixtures: Fixture[] = [];

before(async () => {
  const sizes = manifestSizes();
  await Promise.all(
    fixtureDirs().map(async (dir) => {
      const images = memberImages(dir);
      const members = await Promise.all(
        images.map(async (f) =>
          decodeMember(await readXzPrefix(join(FIXTURES_DIR, dir, f), PREFIX_BYTES), 8),
        ),
      );
      const devSectors = images.map((f) => {
        const bytes = sizes.get(`${dir}/${f.replace(/\.xz$/, '')}`);
        assert.ok(bytes, `MANIFEST has no size for ${dir}/${f}`);
        return bytes / 512;
      });
      const { sections } = parseInfo(
        readFileSync(join(FIXTURES_DIR, dir, 'mdadm-info.txt'), 'utf8'),
      );
      fixtures.push({ dir, sections, members, devSectors });
    }),
  );
  fixtures.sort((a, b) => (a.dir < b.dir ? -1 : 1));
  assert.ok(fixtures.length >= 11, `expected the 11 kernel-md fixtures, found ${fixtures.length}`);
});

describe('mdadm --examine of the kernel-md fixtures (FINAL STATE)', () => {
  it('matches every member line for line', () => {
    let compared = 0;
    for (const fx of fixtures) {
      const fin = finalSections(fx.sections);
      fx.members.forEach((m, i) => {
        const dev = vdName(i);
        const sec = fin.find((s) => s.title === `mdadm --examine ${dev}`);
        assert.ok(sec, `${fx.dir}: no final --examine for ${dev}`);
        const text = formatExamine({
          deviceName: dev,
          sb: m.sb,
          raw: m.raw,
          devSectors: fx.devSectors[i]!,
          homehost: 'mdlab',
          bitmap: m.slots[0]?.sup ?? null,
        });
        assertLines(text, sec.lines, `${fx.dir} ${dev}`);
        compared++;
      });
    }
    assert.ok(compared >= 38, `compared ${compared} members`);
  });

  it('matches every --examine-bitmap', () => {
    let compared = 0;
    for (const fx of fixtures) {
      const fin = finalSections(fx.sections);
      fx.members.forEach((m, i) => {
        const dev = vdName(i);
        const sec = fin.find((s) => s.title === `mdadm --examine-bitmap ${dev}`);
        const text = formatExamineBitmap({ fileName: dev, sb: m.sb, slots: m.slots });
        if (!sec) {
          assert.equal(
            m.sb.featureMap & Feature.BITMAP_OFFSET,
            0,
            `${fx.dir} ${dev}: bitmap but no -X`,
          );
          assert.equal(text, '');
          return;
        }
        assertLines(text, sec.lines, `${fx.dir} -X ${dev}`);
        compared++;
      });
    }
    assert.ok(compared >= 10, `compared ${compared} bitmaps`);
  });

  it('prints the ARRAY line of --examine --scan', () => {
    const fx = fixtures.find((f) => f.dir === 'raid1-2disk-bitmap')!;
    const sb = fx.members[0]!.sb;
    const uuid = /Array UUID : (\S+)/.exec(finalSections(fx.sections)[0]!.lines.join('\n'))![1];
    assert.equal(
      formatExamineBrief(sb, { homehost: 'mdlab' }),
      `ARRAY /dev/md/0  metadata=1.2 UUID=${uuid} name=mdlab:0\n`,
    );
    const devs = fx.members.map((m, i) => ({ name: vdName(i), sb: m.sb }));
    assert.equal(
      formatExamineScan(devs, { verbose: true }),
      `ARRAY /dev/md/0  level=raid1 metadata=1.2 num-devices=2 UUID=${uuid} name=mdlab:0\n` +
        '   devices=/dev/vda,/dev/vdb\n',
    );
    // a spare among the members gives a second line
    const spareSb: Superblock1 = { ...sb, devNumber: 5 };
    assert.equal(examineSpareCount([sb, spareSb]), 1);
    assert.equal(
      formatExamineScan([devs[0]!, { name: '/dev/vdc', sb: spareSb }]),
      `ARRAY /dev/md/0  metadata=1.2 UUID=${uuid} name=mdlab:0\n   spares=1\n`,
    );
  });
});

describe('mdadm --examine / --examine-bitmap of the spec §6 images', () => {
  const outputs = specOutputs();
  for (const img of specImages()) {
    it(img.name, () => {
      const want = outputs.get(img.name);
      assert.ok(want?.examine, `spec has no --examine output for ${img.name}`);
      const text = formatExamine({
        deviceName: `out/${img.name}.img`,
        sb: img.sb,
        raw: img.raw,
        devSectors: img.devSectors,
        bitmap: img.slots[0]?.sup ?? null,
      });
      assertLines(text, want.examine, `${img.name} --examine`);
      if (want.examineBitmap) {
        const x = formatExamineBitmap({ fileName: '/dev/loop0', sb: img.sb, slots: img.slots });
        assertLines(x, want.examineBitmap, `${img.name} --examine-bitmap`);
      }
    });
  }
  it('local to host, and the brief line of image A', () => {
    const a = specImages()[0]!;
    const text = formatExamine({
      deviceName: 'a',
      sb: a.sb,
      raw: a.raw,
      devSectors: a.devSectors,
      homehost: 'testhost',
      bitmap: a.slots[0]!.sup,
    });
    assert.match(text, /\n {11}Name : testhost:mdtest {2}\(local to host testhost\)\n/);
    assert.equal(
      formatExamineBrief(a.sb, {}),
      'ARRAY /dev/md/mdtest  metadata=1.2 UUID=01234567:89abcdef:fedcba98:76543210 name=testhost:mdtest\n',
    );
  });
});

/** Build the kernel's view of a running fixture array from the decoded members + its log. */
function detailInputFor(fx: Fixture, idx: number): { input: DetailInput; expected: string[] } {
  const sec = fx.sections[idx]!;
  // the array size and /proc/mdstat recorded in the same STATE group
  let sizeBytes = 0n;
  let mdstat: string[] = [];
  for (let j = idx - 1; j >= 0 && !fx.sections[j]!.title.startsWith('STATE'); j--) {
    const s = fx.sections[j]!;
    if (s.title === 'array size in bytes') sizeBytes = BigInt(s.lines[0]!.trim());
    if (s.title === 'cat /proc/mdstat') mdstat = s.lines;
  }
  const text = sec.lines.join('\n');
  const m0 = fx.members[0]!;
  const mdstatText = mdstat.join('\n');
  const reshaping = /\breshape\b/.test(mdstatText);
  const sb: Superblock1 = {
    ...m0.sb,
    events: BigInt(/ Events : (\d+)/.exec(text)![1]!),
    featureMap: reshaping
      ? m0.sb.featureMap
      : m0.sb.featureMap & ~(Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET),
  };
  const base = detailFieldsFromSuperblock(sb, m0.slots[0]?.sup ?? null);
  const disks = /\[(\d+)\/(\d+)\]/.exec(mdstatText);
  const syncM = /\b(reshape|resync|recovery|check)\s*=\s*([\d.]+)%/.exec(mdstatText);
  const utime = /Update Time : (.+)/.exec(text)![1]!;
  const state = /State : (\w+)/.exec(text)![1]!;
  const members: DetailMember[] = [];
  const header = sec.lines.findIndex((l) => l.startsWith('    Number   Major'));
  for (const l of sec.lines.slice(header + 1)) {
    if (l === '') continue;
    const r = /^\s+(\d+|-)\s+(\d+)\s+(\d+)\s+(\d+|-)\s+(.*?)(?: {3}(\/\S+))?$/.exec(l);
    assert.ok(r, `${fx.dir}: cannot parse member row ${JSON.stringify(l)}`);
    members.push({
      number: r[1] === '-' ? null : Number(r[1]),
      major: Number(r[2]),
      minor: Number(r[3]),
      raidDevice: r[4] === '-' ? null : Number(r[4]),
      state: r[5]!.split(' ').filter((w) => w && !w.startsWith('set-')),
      path: r[6] ?? null,
    });
  }
  const input: DetailInput = {
    ...base,
    devName: '/dev/md0',
    sb,
    homehost: 'mdlab',
    utime: Math.floor(Date.parse(`${utime} UTC`) / 1000),
    raidDisks: disks ? Number(disks[1]) : base.raidDisks,
    arraySizeBytes: sizeBytes,
    members,
    clean: state === 'clean',
    sync: syncM
      ? {
          action: syncM[1] as 'reshape' | 'resync' | 'recovery' | 'check',
          percent: Math.floor(Number(syncM[2])),
        }
      : null,
  };
  return { input, expected: sec.lines };
}

describe('mdadm --detail of the running fixture arrays', () => {
  it('matches every recorded --detail line for line', () => {
    let compared = 0;
    for (const fx of fixtures) {
      fx.sections.forEach((s, idx) => {
        if (s.title !== 'mdadm --detail /dev/md0') return;
        const { input, expected } = detailInputFor(fx, idx);
        assertLines(formatDetail(input), expected, `${fx.dir} --detail (log line ${s.at + 1})`);
        compared++;
      });
    }
    assert.ok(compared >= 15, `compared ${compared} --detail outputs`);
  });

  it('prints the ARRAY line of --detail --brief', () => {
    const fx = fixtures.find((f) => f.dir === 'raid5-grow-interrupted')!;
    const idx = fx.sections.findIndex((s) => s.title === 'mdadm --detail /dev/md0');
    const { input } = detailInputFor(fx, idx);
    const uuid = /UUID : (\S+)/.exec(fx.sections[idx]!.lines.join('\n'))![1];
    assert.equal(
      formatDetailBrief(input),
      `ARRAY /dev/md0 metadata=1.2 spares=1 name=mdlab:0 UUID=${uuid}\n`,
    );
    assert.equal(
      formatDetailBrief(input, { verbose: true }),
      `ARRAY /dev/md0 level=raid5 num-devices=3 metadata=1.2 spares=1 name=mdlab:0 UUID=${uuid}\n` +
        '   devices=/dev/vda,/dev/vdb,/dev/vdc,/dev/vdd\n',
    );
  });

  it('prints degraded / FAILED / rebuilding / faulty states like mdadm', () => {
    const fx = fixtures.find((f) => f.dir === 'raid5-4disk-ls-chunk64')!;
    const idx = fx.sections.findIndex((s) => s.title === 'mdadm --detail /dev/md0');
    const { input } = detailInputFor(fx, idx);
    const ms = input.members;
    const degraded = formatDetail({
      ...input,
      members: [
        ms[0]!,
        ms[1]!,
        { ...ms[2]!, raidDevice: null, state: ['faulty'] },
        ms[3]!,
        { number: 5, major: 254, minor: 64, raidDevice: 2, state: ['spare'], path: '/dev/vde' },
      ],
      sync: { action: 'recovery', percent: 42 },
    });
    assert.match(degraded, /\n {13}State : clean, degraded, recovering \n/);
    assert.match(
      degraded,
      /\n {4}Active Devices : 3\n {3}Working Devices : 4\n {4}Failed Devices : 1\n {5}Spare Devices : 1\n/,
    );
    assert.match(degraded, /\n {4}Rebuild Status : 42% complete\n\n/);
    assert.match(degraded, /\n {7}5 {5}254 {7}64 {8}2 {6}spare rebuilding {3}\/dev\/vde\n/);
    assert.match(degraded, /\n {7}4 {5}254 {7}48 {8}3 {6}active sync {3}\/dev\/vdd\n\n/);
    assert.match(degraded, /\n {7}2 {5}254 {7}32 {8}- {6}faulty {3}\/dev\/vdc\n$/);
    const removed = formatDetail({ ...input, members: [ms[0]!, ms[1]!, ms[3]!] });
    assert.match(removed, /\n {13}State : clean, degraded \n/);
    assert.match(removed, /\n {7}- {7}0 {8}0 {8}2 {6}removed\n/);
    const failed = formatDetail({ ...input, members: [ms[0]!, ms[1]!], arraySizeBytes: 0 });
    assert.match(failed, /\n {13}State : clean, FAILED, Not Started \n/);
  });
});

describe('human sizes and times', () => {
  it('human_size / human_size_brief', () => {
    assert.equal(humanSize(5000 * 1024 - 1), '');
    assert.equal(humanSize(129024 * 512), ' (63.00 MiB 66.06 MB)');
    assert.equal(humanSize(2n * 1024n ** 3n), ' (2.00 GiB 2.15 GB)');
    assert.equal(humanSize(4n * 1024n ** 4n), ' (4.00 TiB 4.40 TB)');
    assert.equal(humanSizeBrief(97517568, 'JEDEC'), '97.52MB');
    assert.equal(humanSizeBrief(97517568, 'IEC'), '93.00MiB');
  });
  it('ctime and %.1f', () => {
    assert.equal(mdCtime(1700000000), 'Tue Nov 14 22:13:20 2023');
    assert.equal(mdCtime(1699056000), 'Sat Nov  4 00:00:00 2023');
    assert.equal(cFixed1(0.25), '0.2');
    assert.equal(cFixed1(0.75), '0.8');
    assert.equal(cFixed1((100 * 3) / 63), '4.8');
    assert.equal(cFixed1((100 * 32) / 63), '50.8');
  });
});
