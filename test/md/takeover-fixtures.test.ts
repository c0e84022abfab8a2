/**
 * The takeovers the real kernel (6.1) and mdadm 4.2 made (shared/fixtures/kernel-md-reshape:
 * raid1-to-raid5-takeover, raid0-to-raid10-takeover, raid5-to-raid1-takeover): tsmd assembles
 * their images, reads the documented pattern and check finds 0 mismatches; and tsmd's own
 * takeover of the same starting array (same device sizes, level, chunk, the same commands)
 * leaves superblocks that mdadm --examine describes as it describes the kernel's, field by field
 * (geometry, sizes, offsets, roles: the raid0 members of a raid0 -> raid10 in slots 0 and 2,
 * the second device added in slot 1, the first in slot 3).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { MdArray } from '../../src/md/array.js';
import { checkPattern, fillPattern, fixtureMembers } from '../helpers/fixtures.js';
import { assembleFiles, checkMismatches, examineAgrees, type FileArrayOptions, fileArray, mdadmExamine, takeover } from '../helpers/takeover.js';
import { requireTool, sparseFile, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

interface Fx {
  name: string;
  /** bytes of the pattern (the array size) */
  patternBytes: number;
  /** the array the fixture started from, and the takeover made on it */
  from: FileArrayOptions;
  level: number;
  /** devices given with --add */
  add: number;
}

const fixtures: Fx[] = [
  { name: 'raid1-to-raid5-takeover', patternBytes: 32505856, from: { level: 1, raidDisks: 2, sizesMiB: [32, 32] }, level: 5, add: 0 },
  { name: 'raid0-to-raid10-takeover', patternBytes: 65011712, from: { level: 0, raidDisks: 2, sizesMiB: [32, 32], chunkKiB: 64 }, level: 10, add: 2 },
  { name: 'raid5-to-raid1-takeover', patternBytes: 32505856, from: { level: 5, raidDisks: 2, sizesMiB: [32, 32], chunkKiB: 64 }, level: 1, add: 0 },
];

/** The fields of mdadm --examine that a takeover decides (not the times, uuids, events, checksums). */
const GEOMETRY = ['Version', 'Feature Map', 'Raid Level', 'Raid Devices', 'Avail Dev Size', 'Array Size', 'Used Dev Size', 'Data Offset', 'Super Offset', 'Unused Space', 'State', 'Layout', 'Chunk Size', 'Device Role', 'Array State'];

async function patternErrors(arr: MdArray, bytes: number): Promise<number> {
  let bad = 0;
  for (let off = 0; off < bytes; off += MiB) {
    const buf = new Uint8Array(Math.min(MiB, bytes - off));
    await arr.read(buf, off);
    for (let b = 0; b < buf.length; b += 4096) if (checkPattern(buf.subarray(b, b + 4096), off + b) !== -1) bad++;
  }
  return bad;
}

describe('kernel takeover fixtures', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('takeover-fx');
  });
  after(() => dir.cleanup());

  for (const fx of fixtures) {
    test(`${fx.name}: assembled, the pattern, check 0; tsmd's own takeover agrees with the kernel's superblocks`, async (t) => {
      if (!requireTool(t, 'mdadm', 'the judge of the superblocks')) return;
      const images = fixtureMembers(fx.name, 'kernel-md-reshape');
      // 1. the kernel's result, in tsmd
      const copies = images.map((p, i) => {
        const dst = join(dir.path, `${fx.name}-fx${i}.img`);
        execFileSync('cp', ['--sparse=always', p, dst]);
        return dst;
      });
      let arr = await assembleFiles(copies);
      try {
        assert.equal(arr.level, fx.level);
        assert.equal(arr.sizeBytes, fx.patternBytes);
        assert.equal(await patternErrors(arr, fx.patternBytes), 0, 'the pattern of the kernel fixture');
        assert.equal(await checkMismatches(arr), 0);
      } finally {
        await arr.close();
      }
      // 2. tsmd's own takeover from the same start, with the pattern written before it
      const paths = await fileArray(dir.path, fx.name, fx.from);
      const add = Array.from({ length: fx.add }, (_, k) => sparseFile(join(dir.path, `${fx.name}-${paths.length + k}.img`), 32 * MiB));
      arr = await assembleFiles(paths);
      try {
        assert.equal(arr.sizeBytes, fx.patternBytes);
        const buf = new Uint8Array(MiB);
        for (let off = 0; off < fx.patternBytes; off += MiB) {
          fillPattern(buf, off);
          await arr.write(buf.subarray(0, Math.min(MiB, fx.patternBytes - off)), off);
        }
        const r = await takeover(arr, { level: fx.level }, add);
        assert.equal(r.done, true);
        // as the fixture's mdadm-info.txt records: "level of /dev/md0 changed to raidN", "added ..."
        assert.deepEqual(r.said, [`level of /dev/md0 changed to raid${fx.level}`, ...add.map((p) => `added ${p}`)]);
        await arr.syncNow();
        assert.equal(await patternErrors(arr, fx.patternBytes), 0, 'the pattern after tsmd\'s takeover');
        assert.equal(await checkMismatches(arr), 0);
      } finally {
        await arr.close();
      }
      const ours = [...paths, ...add];
      assert.equal(ours.length, images.length);
      for (const [i, p] of ours.entries()) {
        const mine = await examineAgrees(p);
        const kernel = mdadmExamine(images[i]!).fields;
        for (const k of GEOMETRY) assert.equal(mine.get(k), kernel.get(k), `${fx.name} d${i}: ${k}`);
      }
    });
  }
});
