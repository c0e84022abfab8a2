/**
 * The sync offload (raid/offload/bulk.ts): resync, recovery, check and repair on file members with the
 * helper threads, judged by the raw member files (mirrors byte-equal, the members of a raid4/5
 * row XOR to zero, the array's data unchanged) and by the counts the engine's own path gives;
 * an offload that fails leaves the same results (the personality redoes the work itself).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { type BulkOp, type BulkPiece, SyncOffload } from '../../src/raid/offload/bulk.js';
import { openDevice } from '../../src/io/file-device.js';
import { MdArray } from '../../src/md/array.js';
import { createArray } from '../../src/md/create.js';
import type { Level } from '../../src/md/create-plan.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { SystemClock } from '../../src/env/clock.js';

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'tsmd-offload-'));
const offload = new SyncOffload(2);
after(async () => {
  await offload.close();
  rmSync(dir, { recursive: true, force: true });
});

/** An offload whose every call fails (as a vanished fd would): the engine must not depend on it. */
class FailingOffload extends SyncOffload {
  override async run(_op: BulkOp, _pieces: readonly BulkPiece[]): Promise<Set<number>> {
    this.stats.failed++;
    throw new Error('injected offload failure');
  }
}

let seq = 0;

interface FileArrayOptions {
  level: Level;
  files: number;
  raidDisks: number;
  mib: number;
  chunkKiB?: number;
  layout?: number;
  assumeClean: boolean;
  force?: boolean;
  fill?: boolean;
}

/** Member files of `mib` MiB each (random content when `fill`), an array created over the first `raidDisks`. */
async function fileArray(o: FileArrayOptions): Promise<string[]> {
  const paths = Array.from({ length: o.files }, (_, i) => join(dir, `a${seq}-${i}.img`));
  seq++;
  for (const p of paths) writeFileSync(p, o.fill ? randomBytes(o.mib * MiB) : Buffer.alloc(o.mib * MiB));
  const devs = await Promise.all(paths.map((p) => openDevice(p)));
  await createArray(
    devs,
    {
      level: o.level,
      raidDisks: o.raidDisks,
      metadata: '1.2',
      chunkKiB: o.level === 1 ? undefined : (o.chunkKiB ?? 64),
      layout: o.layout,
      setName: 'test:offload',
      uuid: randomBytes(16),
      deviceUuids: devs.map(() => randomBytes(16)),
      bitmap: 'none',
      assumeClean: o.assumeClean,
      force: o.force,
      nowSeconds: 1_700_000_000,
      members: devs.map((d) => ({ sizeSectors: Math.floor(d.sizeBytes / 512) })),
    },
    { confirmOverwrite: async () => true, initialSync: false, clock: new SystemClock() },
  );
  return paths;
}

async function assemble(paths: string[], off: SyncOffload | null): Promise<MdArray> {
  return MdArray.assemble(await Promise.all(paths.map((p) => openDevice(p))), { clock: new SystemClock(), run: true, syncOffload: off });
}

/** A member's data area, read straight from its file. */
async function dataArea(path: string): Promise<Buffer> {
  const d = await openDevice(path, { readOnly: true });
  const l = (await loadSuperblock(d))!;
  await d.close();
  const out = Buffer.alloc(Number(l.sb.size) * 512);
  const fd = openSync(path, 'r');
  readSync(fd, out, 0, out.length, Number(l.sb.dataOffset) * 512);
  closeSync(fd);
  return out;
}

async function rawWrite(path: string, dataOffsetAt: number, bytes: Uint8Array): Promise<void> {
  const d = await openDevice(path, { readOnly: true });
  const l = (await loadSuperblock(d))!;
  await d.close();
  const fd = openSync(path, 'r+');
  writeSync(fd, bytes, 0, bytes.length, Number(l.sb.dataOffset) * 512 + dataOffsetAt);
  closeSync(fd);
}

async function readAll(arr: MdArray): Promise<Buffer> {
  const out = Buffer.alloc(arr.sizeBytes);
  for (let off = 0; off < out.length; off += MiB) await arr.read(out.subarray(off, Math.min(out.length, off + MiB)), off);
  return out;
}

/** XOR of equal-length buffers is all zero (the raid4/5 invariant, whatever the layout). */
function xorsToZero(bufs: Buffer[]): boolean {
  const acc = Buffer.from(bufs[0]!);
  for (const b of bufs.slice(1)) for (let i = 0; i < acc.length; i++) acc[i]! ^= b[i]!;
  return acc.equals(Buffer.alloc(acc.length));
}

async function consistent(level: Level, paths: string[]): Promise<boolean> {
  const areas = await Promise.all(paths.map(dataArea));
  if (level === 1) return areas.every((a) => a.equals(areas[0]!));
  return xorsToZero(areas);
}

describe('sync offload (helper threads)', () => {
  test('the helper threads copy, compare and XOR file ranges and flag exactly the differing pieces', async () => {
    const a = join(dir, 'u-a.img');
    const b = join(dir, 'u-b.img');
    const c = join(dir, 'u-c.img');
    const da = randomBytes(3 * MiB);
    const db = randomBytes(3 * MiB);
    writeFileSync(a, da);
    writeFileSync(b, db);
    writeFileSync(c, Buffer.alloc(3 * MiB));
    const fa = openSync(a, 'r');
    const fb = openSync(b, 'r+');
    const fc = openSync(c, 'r+');
    try {
      // c = a ^ b over 3 MiB (cut into 1 MiB requests over two threads); then a ^ b ^ c is zero
      await offload.run('xor', [{ tag: 0, srcs: [[fa, 0], [fb, 0]], dsts: [[fc, 0]], bytes: 3 * MiB }]);
      const flaggedZero = await offload.run('xor', [{ tag: 7, srcs: [[fa, 0], [fb, 0], [fc, 0]], dsts: [], bytes: 3 * MiB }]);
      assert.deepEqual([...flaggedZero], []);
      // one byte off in the second MiB: only the piece holding it is flagged
      const fcw = openSync(c, 'r+');
      writeSync(fcw, Buffer.from([0x5a ^ 0xff]), 0, 1, MiB + 12345);
      closeSync(fcw);
      const pieces = [0, 1, 2].map((i) => ({
        tag: 10 + i,
        srcs: [[fa, i * MiB], [fb, i * MiB], [fc, i * MiB]] as Array<[number, number]>,
        dsts: [],
        bytes: MiB,
      }));
      assert.deepEqual([...(await offload.run('xor', pieces))], [11]);
      // copy a over b from 512 KiB on, then compare: equal there, different before
      await offload.run('copy', [{ tag: 0, srcs: [[fa, 512 * 1024]], dsts: [[fb, 512 * 1024]], bytes: 3 * MiB - 512 * 1024 }]);
      const cmp = await offload.run('compare', [
        { tag: 1, srcs: [[fa, 0], [fb, 0]], dsts: [], bytes: 512 * 1024 },
        { tag: 2, srcs: [[fa, 512 * 1024], [fb, 512 * 1024]], dsts: [], bytes: 3 * MiB - 512 * 1024 },
      ]);
      assert.deepEqual([...cmp], [1]);
      const got = Buffer.alloc(3 * MiB);
      readSync(fb, got, 0, got.length, 0);
      assert.ok(got.subarray(512 * 1024).equals(da.subarray(512 * 1024)), 'copied range');
      assert.ok(got.subarray(0, 512 * 1024).equals(db.subarray(0, 512 * 1024)), 'range before it untouched');
    } finally {
      closeSync(fa);
      closeSync(fb);
      closeSync(fc);
    }
    // a closed descriptor fails the call with an error (the caller then does the work itself)
    const bad = openSync(a, 'r');
    closeSync(bad);
    await assert.rejects(offload.run('compare', [{ tag: 0, srcs: [[bad, 0], [bad, 0]], dsts: [], bytes: 4096 }]), /sync offload/);
  });

  for (const c of [
    { name: 'raid1 (3 copies)', level: 1 as Level, files: 4, raidDisks: 3 },
    { name: 'raid10 (near 2, 4 members)', level: 10 as Level, files: 5, raidDisks: 4, layout: 0x102 },
    { name: 'raid4', level: 4 as Level, files: 5, raidDisks: 4 },
    { name: 'raid5', level: 5 as Level, files: 5, raidDisks: 4 },
    // pq for check and resync; recovery by stripe: XOR where the slot holds data or P, q where Q
    { name: 'raid6', level: 6 as Level, files: 6, raidDisks: 5 },
  ]) {
    test(`${c.name}: resync, check, repair and recovery on the offload give what the engine's own path gives`, async () => {
      // members full of different data and no --assume-clean: the initial resync has everything
      // to do (--force: raid4/5 resync their parity instead of recovering the last member)
      const paths = await fileArray({ ...c, mib: 12, assumeClean: false, force: true, fill: true });
      const active = paths.slice(0, c.raidDisks);
      const before = { ...offload.stats };
      let arr = await assemble(paths, offload);
      const data0 = c.level === 1 || c.level === 10 ? null : await readAll(arr); // raid4/5 resync keeps the data, rewrites parity
      const rs = await arr.syncNow();
      assert.ok(rs.resynced > 0, 'a resync ran');
      if (data0) assert.ok((await readAll(arr)).equals(data0), 'data unchanged by the resync');
      const model = randomBytes(arr.sizeBytes);
      await arr.write(model, 0);
      await arr.close();
      assert.ok(offload.stats.bytes > before.bytes, 'the offload did the work');
      // (raid10 and raid6: the engine's own check below, which finds exactly the corruption)
      if (c.level !== 10 && c.level !== 6) assert.ok(await consistent(c.level, active), 'members consistent after the resync');

      // three 4 KiB units of one member corrupted (four on raid6): check counts 8 sectors each, repair fixes them
      await rawWrite(active[1]!, 4096 * 37, randomBytes(4096));
      await rawWrite(active[1]!, 4096 * 300, randomBytes(8192));
      // raid6 (left-symmetric, 5 members, 64K chunks): stripe 4 has P on slot 0 and Q on
      // slot 1, so this unit is Q only (the two above are data and P)
      if (c.level === 6) await rawWrite(active[1]!, 4 * 65536 + 8192, randomBytes(4096));
      const units = c.level === 6 ? 32 : 24;
      for (const off of [offload, new FailingOffload(1), null]) {
        arr = await assemble(paths, off);
        await arr.setSyncAction('check');
        await arr.sync.runUntilIdle();
        assert.equal(arr.sync.mismatchCnt, units, `check (${off === null ? 'no offload' : off === offload ? 'offload' : 'failing offload'})`);
        await arr.close();
      }
      arr = await assemble(paths, offload);
      await arr.setSyncAction('repair');
      await arr.sync.runUntilIdle();
      await arr.setSyncAction('check');
      await arr.sync.runUntilIdle();
      assert.equal(arr.sync.mismatchCnt, 0, 'after repair');
      // repair keeps the data and rewrites the redundancy (md): a corrupted raid4/5 data block
      // stays as it is now, a corrupted mirror copy is rewritten from the first copy
      const truth = await readAll(arr);
      if (c.level === 1 || c.level === 10) assert.ok(truth.equals(model), 'mirrors repaired from the first copy');

      // a member fails: the spare is rebuilt on the offload and holds its share alone
      await arr.failMember(active[0]!);
      const bytesBefore = offload.stats.bytes;
      const rec = await arr.syncNow();
      assert.ok(rec.recovered > 0, 'a recovery ran');
      assert.ok(offload.stats.bytes >= bytesBefore + rec.recovered * 512, 'the recovery ran on the offload');
      assert.equal(arr.degraded, false);
      if (c.level === 10) await arr.failMember(active[1]!); // the rebuilt member's near partner
      else if (c.level === 6) {
        await arr.failMember(active[1]!);
        await arr.failMember(active[2]!);
      } else if (c.level !== 1) await arr.failMember(active[2]!);
      else {
        await arr.failMember(active[1]!);
        await arr.failMember(active[2]!);
      }
      const back = await readAll(arr);
      await arr.close();
      assert.ok(back.equals(truth), 'data read through the rebuilt member');
    });
  }

  test('raid5: a failing offload leaves resync and recovery to the engine, with the same result', async () => {
    const failing = new FailingOffload(1);
    const paths = await fileArray({ level: 5, files: 4, raidDisks: 3, mib: 8, assumeClean: false, fill: true });
    const arr = await assemble(paths, failing);
    const data0 = await readAll(arr);
    await arr.syncNow();
    assert.ok(failing.stats.failed > 0, 'the offload was tried');
    assert.ok((await readAll(arr)).equals(data0));
    await arr.failMember(paths[2]!);
    await arr.syncNow();
    await arr.close();
    assert.ok(await consistent(5, [paths[0]!, paths[1]!, paths[3]!]), 'rebuilt member consistent');
  });
});
