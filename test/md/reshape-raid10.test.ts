/**
 * tsmd's own raid10 near-layout --raid-devices grow (src/md/reshape-raid10.ts through the
 * reshape engine) on file members: data written before, during (concurrent writers with
 * flushes) and after reads back, the array grows at the end, check 0, and the superblocks as
 * the real `mdadm --examine` reads them (data offset moved down by a chunk as mdadm 4.2 moves
 * it, raid devices, array size, no reshape left). A reshape stopped in the middle resumes
 * after a new assembly. Refusals write nothing.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { isTsmdError } from '../../src/errors.js';
import { Feature } from '../../src/format/superblock.js';
import { fields, haveTool, run, tempDir } from '../helpers/tools.js';
import { fileHashes as hashes, type MakeOpts, makeRaid10, openRaid10 as open, superblockOf as loadSuperblockOf } from '../helpers/raid10-files.js';
import { prng } from '../helpers/prng.js';
import { checkMismatches as checkZero, fillBlocks as fill, verifyModel as verify } from '../helpers/reshape-model.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const dir = tempDir('r10grow');
after(() => dir.cleanup());
const make = (disks: number, spares: number, layout: number, opts: MakeOpts = {}) => makeRaid10(dir.path, disks, spares, layout, opts);

describe('raid10 near --grow --raid-devices', () => {
  const cases = [
    { name: 'near=2 4->5', disks: 4, spares: 1, layout: 0x102 },
    { name: 'near=2 4->6', disks: 4, spares: 2, layout: 0x102 },
    // disks/near is not a whole number: the member rows advance by fractions of a chunk
    { name: 'near=3 3->4', disks: 3, spares: 1, layout: 0x103 },
  ];
  for (const c of cases) {
    test(`${c.name}: data before, during (concurrent writers) and after; check 0; mdadm --examine agrees`, async () => {
      const files = await make(c.disks, c.spares, c.layout);
      const arr = await open(files);
      const model = new Map<number, number>();
      const before = arr.sizeBytes;
      const rnd = prng(7 + c.disks);
      try {
        const buf = new Uint8Array(MiB);
        for (let off = 0; off < before; off += MiB) {
          fill(buf, off, 1);
          await arr.write(buf, off);
          for (let b = 0; b < MiB; b += 4096) model.set((off + b) / 4096, 1);
        }
        arr.sync.local.maxKiBs = 4000; // slow enough that the writers overlap it
        arr.startBackground();
        assert.equal(await arr.grow({ raidDisks: c.disks + c.spares, devName: '/dev/md0' }), true);
        assert.equal(arr.reshapeActive, true);
        // md keeps the old size until the end (raid10_finish_reshape)
        assert.equal(arr.sizeBytes, before);
        let gen = 2;
        const writer = async (k: number) => {
          const b = new Uint8Array(16 * KiB);
          const groups = Math.floor(before / (16 * KiB));
          while (arr.reshapeActive) {
            const blk = (Math.floor((rnd() * groups) / 3) * 3 + k) * 4;
            if (blk * 4096 + b.length > before) continue;
            const g = gen++;
            for (let i = 0; i < 4; i++) fill(b.subarray(i * 4096, (i + 1) * 4096), (blk + i) * 4096, g);
            await arr.write(b, blk * 4096);
            for (let i = 0; i < 4; i++) model.set(blk + i, g);
            if (g % 7 === 0) await arr.flush();
            await new Promise((r) => setTimeout(r, 1));
          }
        };
        const seen = arr.sync.history.length;
        await Promise.all([writer(0), writer(1), writer(2), arr.reshape.wait()]);
        assert.ok(gen > 10, `writes ran during the reshape (${gen - 2})`);
        assert.equal(arr.reshape.lastError, null);
        assert.equal(arr.reshapeActive, false);
        await verify(arr, model, before);
        // md: the reshape moves the old size, then the grown region is resynced (and only it)
        await arr.sync.runUntilIdle();
        const resync = arr.sync.history.slice(seen).filter((h) => h.kind === 'resync');
        assert.equal(resync.length, 1, JSON.stringify(arr.sync.history));
        assert.equal(resync[0]!.workedSectors, (arr.sizeBytes - before) / 512);
        assert.equal(arr.sizeBytes, Math.floor(((before / (64 * KiB)) * (c.disks + c.spares)) / c.disks) * 64 * KiB, 'the array grew by the new members / copies');
        // after: the new space too
        for (let off = before; off < arr.sizeBytes; off += MiB) {
          const n = Math.min(MiB, arr.sizeBytes - off);
          fill(buf.subarray(0, n), off, 99);
          await arr.write(buf.subarray(0, n), off);
          for (let b = 0; b < n; b += 4096) model.set((off + b) / 4096, 99);
        }
        await verify(arr, model, arr.sizeBytes);
        assert.equal(await checkZero(arr), 0);
      } finally {
        await arr.close();
      }
      const copies = c.layout & 0xff;
      if (haveTool('mdadm')) {
        for (const f of files) {
          const r = run('mdadm', ['--examine', f]);
          assert.equal(r.status, 0, r.stderr);
          const e = fields(r.stdout);
          assert.equal(e.get('Raid Devices'), String(c.disks + c.spares));
          assert.equal(e.get('Feature Map'), '0x0');
          assert.equal(e.get('Data Offset'), '1920 sectors', 'moved down by one chunk, as mdadm 4.2 moves it');
          assert.equal(e.get('Chunk Size'), '64K');
          assert.equal(e.get('Layout'), `near=${c.layout & 0xff}`);
          // mdadm's examine: size x raid_disks / copies, not rounded to chunks as md's raid10_size is
          const component = Number((await loadSuperblockOf(f)).size);
          assert.match(e.get('Array Size') ?? '', new RegExp(`^${Math.floor((component * 512 * (c.disks + c.spares)) / copies / 1024)} KiB`));
          assert.equal(e.get('Reshape pos\'n'), undefined);
          assert.equal(e.get('State'), 'clean');
        }
      }
      const again = await open(files);
      try {
        await verify(again, model, again.sizeBytes);
        assert.equal(await checkZero(again), 0);
      } finally {
        await again.close();
      }
    });
  }

  test('stopped in the middle: the superblocks say where (mdadm --examine), a new assembly resumes it', async () => {
    const files = await make(4, 1, 0x102, { sizeMiB: 16 });
    let arr = await open(files);
    const model = new Map<number, number>();
    const size = arr.sizeBytes;
    const buf = new Uint8Array(MiB);
    for (let off = 0; off < size; off += MiB) {
      fill(buf, off, 1);
      await arr.write(buf, off);
      for (let b = 0; b < MiB; b += 4096) model.set((off + b) / 4096, 1);
    }
    arr.sync.local.maxKiBs = 2000;
    arr.startBackground();
    await arr.grow({ raidDisks: 5, devName: '/dev/md0' });
    while (Number(arr.sb.reshapePosition) < 4096) await new Promise((r) => setTimeout(r, 10));
    await arr.close();
    if (haveTool('mdadm')) {
      const e = fields(run('mdadm', ['--examine', files[0]!]).stdout);
      assert.equal(e.get('Feature Map'), '0x44');
      assert.equal(e.get('Delta Devices'), '1 (4->5)');
      assert.equal(e.get('New Offset'), '1920 sectors');
      assert.match(e.get('Reshape pos\'n') ?? '', /^\d+/);
    }
    arr = await open(files);
    try {
      assert.equal(arr.reshapeActive, true);
      assert.equal(arr.isReadOnly, false);
      await verify(arr, model, size);
      arr.startBackground();
      await arr.reshape.wait();
      assert.equal(arr.reshape.lastError, null);
      await verify(arr, model, size);
      assert.equal(await checkZero(arr), 0);
    } finally {
      await arr.close();
    }
  });

  test('refusals write nothing: far layout, no spare', async () => {
    const far = await make(4, 1, 0x201);
    const noSpare = await make(4, 0, 0x102);
    const all = [...far, ...noSpare];
    const sums = hashes(all);
    for (const [files, re, code] of [
      [far, /^Cannot reshape RAID10 in far-mode$/, 'EINVAL'],
      [noSpare, /^Need 1 spare to avoid degraded array, and only have 0\.\n {7}Use --force to over-ride this check\.$/, 'EINVAL'],
    ] as const) {
      const arr = await open(files);
      try {
        await assert.rejects(arr.grow({ raidDisks: 5, devName: '/dev/md0' }), (e) => isTsmdError(e, code) && re.test(e.message));
        assert.equal(arr.reshapeActive, false);
      } finally {
        await arr.close();
      }
    }
    assert.deepEqual(hashes(all), sums);
    // the superblocks still say what they said (no reshape feature)
    const arr = await open(far);
    try {
      assert.equal(arr.sb.featureMap & Feature.RESHAPE_ACTIVE, 0);
    } finally {
      await arr.close();
    }
  });
});
