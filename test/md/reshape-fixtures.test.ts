/**
 * Reshapes the real kernel (6.1) and mdadm 4.2 left in the middle (shared/fixtures/kernel-md
 * raid5-grow-*, shared/fixtures/kernel-md-reshape/): tsmd reads the documented pattern across
 * the frontier and continues every one of them to the end (pattern over the pre-reshape size,
 * check 0, superblocks with the new geometry); the shrink without its backup file is refused as
 * mdadm refuses it; the stale chunk change is continued as the kernel continues it; the
 * completed chunk change reads as it should.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SystemClock } from '../../src/env/clock.js';
import { isTsmdError } from '../../src/errors.js';
import { decodeSuperblock, encodeSuperblock, Feature } from '../../src/format/superblock.js';
import { openDevice } from '../../src/io/file-device.js';
import { MdArray } from '../../src/md/array.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { checkPattern, fixtureMembers, sharedDir } from '../helpers/fixtures.js';
import { tempDir } from '../helpers/tools.js';

interface Fx {
  set: string;
  name: string;
  /** bytes carrying the pattern (the pre-reshape size) */
  patternBytes: number;
  /** after the reshape: raid disks, chunk (sectors), layout, array bytes, level; members that became spares */
  end?: { disks: number; chunk: number; layout: number; bytes: number; level?: number; spares?: number[] };
  /** members rebuilt along with the reshape (recovery_offset in the images) */
  rebuilt?: number;
  /** the fixture has the reshape's backup file (backup-file.img.xz): given at assembly */
  backup?: boolean;
}

const continued: Fx[] = [
  { set: 'kernel-md', name: 'raid5-grow-interrupted', patternBytes: 65011712, end: { disks: 4, chunk: 128, layout: 2, bytes: 97517568 } },
  { set: 'kernel-md', name: 'raid5-grow-crashed', patternBytes: 65011712, end: { disks: 4, chunk: 128, layout: 2, bytes: 97517568 } },
  { set: 'kernel-md-reshape', name: 'raid5-chunk-interrupted', patternBytes: 97517568, end: { disks: 4, chunk: 256, layout: 2, bytes: 97517568 } },
  { set: 'kernel-md-reshape', name: 'raid5-layout-interrupted', patternBytes: 97517568, end: { disks: 4, chunk: 128, layout: 1, bytes: 97517568 } },
  { set: 'kernel-md-reshape', name: 'raid6-grow-interrupted', patternBytes: 97517568, end: { disks: 6, chunk: 128, layout: 2, bytes: 130023424 } },
  // a member rebuilt along with the reshape (Q of the raid6 takeover, the parity of the raid0
  // takeover): missing in the old geometry, in sync below the frontier
  { set: 'kernel-md-reshape', name: 'raid5-to-raid6-interrupted', patternBytes: 97517568, end: { disks: 5, chunk: 128, layout: 2, bytes: 97517568, level: 6 }, rebuilt: 1 },
  { set: 'kernel-md-reshape', name: 'raid0-to-raid5-interrupted', patternBytes: 97517568, end: { disks: 4, chunk: 128, layout: 2, bytes: 97517568, level: 5 }, rebuilt: 1 },
  // in place, backwards, with mdadm's backup file (all zero: nothing to restore); vdd leaves
  { set: 'kernel-md-reshape', name: 'raid5-shrink-interrupted', patternBytes: 65011712, backup: true, end: { disks: 3, chunk: 128, layout: 2, bytes: 65011712, spares: [3] } },
  // raid10 near=2 4->5 (reshape-raid10.ts): stopped by the kernel with a plain --stop (raid10 keeps its own window)
  { set: 'kernel-md-reshape', name: 'raid10-grow-interrupted', patternBytes: 65011712, end: { disks: 5, chunk: 128, layout: 0x102, bytes: 81264640 } },
];

// (every kernel reshape fixture is continued now; a new kind tsmd cannot continue goes here)

/** Writable copies of a fixture's members (sparse) in dir. */
function copies(fx: Fx, dir: string): string[] {
  return fixtureMembers(fx.name, fx.set).map((p, i) => {
    const dst = join(dir, `${fx.name}-${i}.img`);
    execFileSync('cp', ['--sparse=always', p, dst]);
    return dst;
  });
}

/** A writable copy of the fixture's backup file. */
function backupCopy(fx: Fx, dir: string): string {
  const dst = join(dir, `${fx.name}.backup`);
  execFileSync('sh', ['-c', 'xz -dc "$1" > "$2"', 'sh', join(sharedDir(), 'fixtures', fx.set, fx.name, 'backup-file.img.xz'), dst]);
  return dst;
}

async function assemble(paths: string[], log: string[], backup?: string): Promise<MdArray> {
  const devs = await Promise.all(paths.map((p) => openDevice(p)));
  const backupFile = backup ? { dev: await openDevice(backup) } : undefined;
  return MdArray.assemble(devs, { clock: new SystemClock(), log: (m) => log.push(m), backupFile });
}

/** Bad 4 KiB blocks of the pattern over [0, bytes). */
async function patternErrors(arr: MdArray, bytes: number): Promise<number> {
  let bad = 0;
  const step = 1 << 20;
  for (let off = 0; off < bytes; off += step) {
    const buf = new Uint8Array(Math.min(step, bytes - off));
    await arr.read(buf, off);
    for (let b = 0; b < buf.length; b += 4096) if (checkPattern(buf.subarray(b, b + 4096), off + b) !== -1) bad++;
  }
  return bad;
}

async function check(arr: MdArray): Promise<number> {
  // a resync owed first (raid10_finish_reshape resyncs the grown region), as mdadm --wait
  await arr.sync.runUntilIdle();
  await arr.setSyncAction('check');
  await arr.sync.runUntilIdle();
  return arr.sync.mismatchCnt;
}

describe('kernel reshape fixtures', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('reshape-fx');
  });
  after(() => dir.cleanup());

  for (const fx of continued) {
    test(`${fx.name}: read across the frontier, resumed to the end, pattern and check 0`, async () => {
      const paths = copies(fx, dir.path);
      const log: string[] = [];
      const arr = await assemble(paths, log, fx.backup ? backupCopy(fx, dir.path) : undefined);
      try {
        assert.equal(arr.reshapeActive, true);
        assert.equal(arr.isReadOnly, false, log.join('\n'));
        assert.equal(arr.members.filter((m) => m.recoveryOffset !== null).length, fx.rebuilt ?? 0);
        assert.equal(await patternErrors(arr, fx.patternBytes), 0, 'the pattern across the frontier before the reshape resumes');
        arr.startBackground();
        await arr.reshape.wait();
        assert.equal(arr.reshape.lastError, null);
        assert.equal(arr.reshapeActive, false);
        assert.equal(arr.sizeBytes, fx.end!.bytes);
        assert.equal(await patternErrors(arr, fx.patternBytes), 0, 'the pattern after the reshape');
        assert.equal(await check(arr), 0);
      } finally {
        await arr.close();
      }
      for (const p of paths) {
        const dev = await openDevice(p, { readOnly: true });
        const sb = (await loadSuperblock(dev))!.sb;
        await dev.close();
        // the new geometry, every member in sync (a rebuilt one too: no recovery offset), the
        // members a shrink let go spares
        assert.equal(sb.featureMap & (Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET | Feature.RECOVERY_OFFSET), 0);
        assert.deepEqual([sb.raidDisks, sb.chunkSize, sb.layout, sb.deltaDisks], [fx.end!.disks, fx.end!.chunk, fx.end!.layout, 0]);
        if (fx.end!.level !== undefined) assert.equal(sb.level, fx.end!.level);
        const spare = fx.end!.spares?.includes(paths.indexOf(p)) ?? false;
        assert.equal(sb.devRoles[sb.devNumber] === 0xffff, spare, `${p}: ${spare ? 'a spare' : 'active'}`);
        if (!spare) assert.ok(sb.devRoles[sb.devNumber]! < sb.raidDisks, `${p}: an active member`);
      }
      const again = await assemble(paths, []);
      try {
        assert.equal(await patternErrors(again, fx.patternBytes), 0, 'the pattern assembled again');
      } finally {
        await again.close();
      }
    });
  }

  test('raid5-shrink-interrupted without its backup file: refused as mdadm refuses it, nothing written', async () => {
    const fx: Fx = { set: 'kernel-md-reshape', name: 'raid5-shrink-interrupted', patternBytes: 65011712 };
    const paths = copies(fx, dir.path);
    const hash = () => paths.map((p) => createHash('sha256').update(readFileSync(p)).digest('hex'));
    const before = hash();
    await assert.rejects(assemble(paths, []), (e) => isTsmdError(e, 'EINVAL') && /^Need a backup file to complete reshape of this array\.\nPlease provided one with "--backup-file=\.\.\."$/.test(e.message));
    // read-only, it is served as it is (the frontier at 43008K)
    const devs = await Promise.all(paths.map((p) => openDevice(p, { readOnly: true })));
    const ro = await MdArray.assemble(devs, { clock: new SystemClock(), readOnly: true });
    try {
      assert.equal(Number(ro.sb.reshapePosition), 43008 * 2);
      assert.equal(await patternErrors(ro, fx.patternBytes), 0);
    } finally {
      await ro.close();
    }
    assert.deepEqual(hash(), before, 'nothing written');
  });

  test('raid5-to-raid6-interrupted, the Q member one checkpoint behind: its recovery offset follows reshape_position', async () => {
    // a crash between the superblock writes of a checkpoint (they do not bump events) can leave
    // the member rebuilt along with the reshape with the previous recovery offset; the new
    // stripes below reshape_position were flushed to every member before any superblock
    // recorded it, so the member is in sync there and the reshape goes on
    const fx: Fx = { set: 'kernel-md-reshape', name: 'raid5-to-raid6-interrupted', patternBytes: 97517568 };
    const paths = copies(fx, dir.path);
    const q = paths[4]!;
    const raw = Buffer.alloc(4096);
    const fd = openSync(q, 'r+');
    try {
      readSync(fd, raw, 0, 4096, 4096);
      const sb = decodeSuperblock(raw);
      assert.equal(sb.recoveryOffset, 15360n);
      sb.recoveryOffset = 15360n - 1024n;
      writeSync(fd, encodeSuperblock(sb), 0, undefined, 4096);
    } finally {
      closeSync(fd);
    }
    const log: string[] = [];
    const arr = await assemble(paths, log);
    try {
      assert.equal(arr.isReadOnly, false, log.join('\n'));
      assert.equal(arr.members.find((m) => m.recoveryOffset !== null)?.recoveryOffset, 15360);
      assert.equal(await patternErrors(arr, fx.patternBytes), 0);
      arr.startBackground();
      await arr.reshape.wait();
      assert.equal(arr.reshapeActive, false);
      assert.equal(await patternErrors(arr, fx.patternBytes), 0);
      assert.equal(await check(arr), 0);
    } finally {
      await arr.close();
    }
  });

  test("raid5-chunk-completed: the kernel's finished chunk change (data offset moved to 1024) reads the pattern, check 0, nothing left to do", async () => {
    const fx: Fx = { set: 'kernel-md-reshape', name: 'raid5-chunk-completed', patternBytes: 97517568 };
    const paths = copies(fx, dir.path);
    const arr = await assemble(paths, []);
    try {
      assert.equal(arr.reshapeActive, false);
      assert.equal(arr.isReadOnly, false);
      assert.deepEqual([arr.sb.chunkSize, Number(arr.sb.dataOffset), arr.sizeBytes], [256, 1024, fx.patternBytes]);
      assert.equal(await patternErrors(arr, fx.patternBytes), 0);
      assert.equal(await check(arr), 0);
    } finally {
      await arr.close();
    }
  });

  test('raid5-chunk-stopped-stale: continued as the kernel continues it (from the stale checkpoint)', async () => {
    // The kernel resumed this from reshape_position 0 while ~20 % had already moved, and lost
    // data (README). tsmd does the same with the same superblocks: what it reads is recorded.
    const fx: Fx = { set: 'kernel-md-reshape', name: 'raid5-chunk-stopped-stale', patternBytes: 97517568 };
    const paths = copies(fx, dir.path);
    const arr = await assemble(paths, []);
    try {
      assert.equal(arr.reshapeActive, true);
      assert.equal(Number(arr.sb.reshapePosition), 0);
      const before = await patternErrors(arr, fx.patternBytes);
      arr.startBackground();
      await arr.reshape.wait();
      assert.equal(arr.reshapeActive, false);
      const afterBad = await patternErrors(arr, fx.patternBytes);
      console.log(`raid5-chunk-stopped-stale: bad 4 KiB blocks of the pattern before the resume ${before}, after ${afterBad} (of ${fx.patternBytes / 4096})`);
      // the old copy of the moved 20 % was overwritten by the kernel: like the kernel, the
      // pattern is damaged; the parity tsmd wrote is consistent with what it read
      assert.ok(afterBad > 0, 'the stale checkpoint loses data (as with the kernel)');
      assert.equal(await check(arr), 0);
    } finally {
      await arr.close();
    }
  });
});
