/**
 * Member roles beyond plain in-sync / spare, on in-memory members: raid1 write-mostly members
 * (reads avoid them while another copy can serve) and --replace (a spare rebuilt as the
 * replacement of a working member, redundancy kept all along). Judges: per-member read and
 * write counters and the members' raw bytes and superblocks as decoded from disk.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { FaultyBlockDevice } from '../../src/io/fault-device.js';
import { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { DEV_FLAG_WRITEMOSTLY, MdArray } from '../../src/md/array.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { memoryArray } from '../helpers/arrays.js';
import { prng } from '../helpers/prng.js';
import { ManualClock, SystemClock } from '../../src/env/clock.js';

function reopenAll(devs: MemoryBlockDevice[]): MemoryBlockDevice[] {
  return devs.map((d) => d.reopen());
}

async function readAll(arr: MdArray): Promise<Uint8Array> {
  const out = new Uint8Array(arr.sizeBytes);
  for (let off = 0; off < out.length; off += 1 << 20) await arr.read(out.subarray(off, Math.min(out.length, off + (1 << 20))), off);
  return out;
}

async function sbOf(dev: MemoryBlockDevice) {
  const d = dev.reopen({ readOnly: true });
  const l = (await loadSuperblock(d))!;
  await d.close();
  return l.sb;
}

describe('raid1 write-mostly', () => {
  test('reads never touch a write-mostly member while another copy serves; writes reach it; it serves reads when it is the last copy', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [8, 8, 8], writeMostly: [2], assumeClean: true });
    assert.equal((await sbOf(devs[2]!)).devFlags & DEV_FLAG_WRITEMOSTLY, DEV_FLAG_WRITEMOSTLY);
    assert.equal((await sbOf(devs[0]!)).devFlags & DEV_FLAG_WRITEMOSTLY, 0);
    const live = reopenAll(devs);
    const arr = await MdArray.assemble(live, { clock: new SystemClock() });
    const rnd = prng(7);
    const data = randomBytes(arr.sizeBytes);
    await arr.write(data, 0);
    const before = live.map((d) => ({ ...d.stats }));
    // random reads of every size and alignment, several at once
    for (let round = 0; round < 20; round++) {
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          const sectors = 1 + Math.floor(rnd() * 4096);
          const at = Math.floor(rnd() * (arr.sizeBytes / 512 - sectors));
          const buf = new Uint8Array(sectors * 512);
          await arr.read(buf, at * 512);
          assert.ok(Buffer.from(buf).equals(data.subarray(at * 512, at * 512 + buf.length)));
        }),
      );
    }
    const reads = live.map((d, i) => d.stats.reads - before[i]!.reads);
    assert.equal(reads[2], 0, `write-mostly member read ${reads[2]} times`);
    assert.ok(reads[0]! > 0 && reads[1]! > 0, `reads spread over the others: ${reads.join('/')}`);
    assert.ok(live[2]!.stats.writtenBytes >= arr.sizeBytes, 'writes reached the write-mostly member');
    // with the others gone the write-mostly copy is read
    await arr.failMember(live[0]!.name);
    await arr.failMember(live[1]!.name);
    const all = await readAll(arr);
    assert.ok(Buffer.from(all).equals(data));
    assert.ok(live[2]!.stats.reads > before[2]!.reads);
    await arr.close();
  });

  test('--add --write-mostly sets the flag on the new member; --readwrite clears it on re-add', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [8, 8], assumeClean: true, bitmap: 'internal', bitmapChunkKiB: 64 });
    const arr = await MdArray.assemble(reopenAll(devs), { clock: new SystemClock() });
    const spare = new MemoryBlockDevice('spare', 8 << 20);
    assert.equal(await arr.addMember(spare, { deviceUuid: randomBytes(16), writeMostly: true }), 'spare');
    assert.equal((await sbOf(spare)).devFlags & DEV_FLAG_WRITEMOSTLY, DEV_FLAG_WRITEMOSTLY);
    await arr.failMember(arr.members[1]!.dev.name);
    await arr.removeMember(arr.members[1]!.dev.name);
    await arr.syncNow();
    assert.deepEqual(arr.workingSlots.sort(), [0, 1]);
    // a raid5 refuses the flag
    const r5 = await memoryArray({ level: 5, sizesMiB: [8, 8, 8], assumeClean: true });
    const arr5 = await MdArray.assemble(reopenAll(r5), { clock: new SystemClock() });
    await assert.rejects(arr5.addMember(new MemoryBlockDevice('x', 8 << 20), { deviceUuid: randomBytes(16), writeMostly: true }), /only meaningful for raid1/);
    await arr5.close();
    // clearing on re-add: the member left and comes back with --readwrite
    await arr.failMember(spare.name);
    await arr.removeMember(spare.name);
    const back = spare.reopen();
    assert.equal(await arr.addMember(back, { reAdd: true, deviceUuid: randomBytes(16), writeMostly: false }), 're-added');
    await arr.close();
    assert.equal((await sbOf(spare)).devFlags & DEV_FLAG_WRITEMOSTLY, 0);
  });
});

/** Data-area offset of a member (bytes), from its own superblock. */
async function dataOffsetOf(dev: MemoryBlockDevice): Promise<number> {
  return Number((await sbOf(dev)).dataOffset) * 512;
}

/** Writers that keep writing random blocks (recorded in `model`) and sample `degraded`. */
function writers(arr: MdArray, model: Uint8Array, seed: number, until: () => boolean, sample: (degraded: boolean) => void): Promise<void> {
  const rnd = prng(seed);
  return Promise.all(
    Array.from({ length: 3 }, async () => {
      while (!until()) {
        const sectors = 1 + Math.floor(rnd() * 256);
        const at = Math.floor(rnd() * (arr.sizeBytes / 512 - sectors));
        const buf = randomBytes(sectors * 512);
        await arr.write(buf, at * 512);
        model.set(buf, at * 512);
        sample(arr.degraded);
        await new Promise((r) => setImmediate(r));
      }
    }),
  ).then(() => {});
}

describe('--replace', () => {
  for (const level of [1, 5, 6, 10] as const) {
    test(`raid${level}: a spare becomes the copy of a working member under concurrent writes, never degraded; the old member ends faulty`, async () => {
      const n = level === 1 ? 2 : 4;
      const devs = await memoryArray({ level, sizesMiB: Array(n + 1).fill(8), raidDisks: n, chunkKiB: 64, assumeClean: true });
      const live = reopenAll(devs);
      // the sync's speed limit runs on a manual clock: the test moves time, no real timer
      const clock = new ManualClock();
      const arr = await MdArray.assemble(live, { clock, syncLimits: { minKiBs: 20_000, maxKiBs: 20_000 } });
      const model = randomBytes(arr.sizeBytes);
      await arr.write(model, 0);
      arr.startBackground();
      const victim = live[1]!;
      const spare = live[n]!;
      assert.equal(await arr.requestReplacement(victim.name, spare.name), 1);
      let done = false;
      let everDegraded = false;
      let sawReplacement = false;
      const w = writers(arr, model, 11, () => done, (d) => {
        everDegraded ||= d;
      });
      for (let i = 0; i < 2000 && !done; i++) {
        await clock.advanceAsync(10);
        const r = arr.members.find((m) => m.dev === spare);
        if (r?.replacement) sawReplacement = true;
        done = victim === arr.members.find((m) => m.faulty)?.dev && !arr.sync.busy;
      }
      done = true;
      await w;
      assert.ok(sawReplacement, 'the spare was a replacement while it was built');
      assert.equal(everDegraded, false, 'the array never ran degraded');
      const vm = arr.members.find((m) => m.dev === victim)!;
      const sm = arr.members.find((m) => m.dev === spare)!;
      assert.equal(vm.faulty, true);
      assert.equal(sm.slot, 1);
      assert.equal(sm.recoveryOffset, null);
      // no redundancy lost: the array reads back what was written, and with the old member
      // gone every slot is consistent
      assert.ok(Buffer.from(await readAll(arr)).equals(model));
      await arr.setSyncAction('check');
      while (arr.sync.busy) await clock.advanceAsync(10);
      assert.equal(arr.sync.mismatchCnt, 0);
      await arr.close();
      // on disk: the old member is recorded faulty, the spare holds slot 1 without REPLACEMENT
      const sb = await sbOf(spare);
      assert.equal(sb.devRoles[sb.devNumber], 1);
      assert.equal(sb.featureMap & 0x12, 0, 'neither REPLACEMENT nor RECOVERY_OFFSET');
      assert.equal(sb.devRoles[(await sbOf(victim)).devNumber], 0xfffe);
      // a replacement's data area equals what the old member held for unchanged regions:
      // raid1 copies are identical
      if (level === 1) {
        const a = new Uint8Array(arr.sizeBytes);
        const b = new Uint8Array(arr.sizeBytes);
        await live[0]!.reopen().read(a, await dataOffsetOf(live[0]!));
        await spare.reopen().read(b, await dataOffsetOf(spare));
        assert.ok(Buffer.from(a).equals(b));
      }
    });
  }

  test('a range the old member cannot read is rebuilt from the others; the old member is not failed for it', async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: [8, 8, 8, 8, 8], raidDisks: 4, chunkKiB: 64, assumeClean: true });
    const faulty = reopenAll(devs).map((d) => new FaultyBlockDevice(d));
    const logs: string[] = [];
    const arr = await MdArray.assemble(faulty, { clock: new SystemClock(), log: (m) => logs.push(m) });
    const model = randomBytes(arr.sizeBytes);
    await arr.write(model, 0);
    const off = await dataOffsetOf(devs[2]!);
    faulty[2]!.addFault({ op: 'read', startBytes: off + (2 << 20), endBytes: off + (3 << 20), count: 1 });
    await arr.requestReplacement(faulty[2]!.name);
    const failedBefore = faulty[2]!.stats.injectedReadErrors;
    await arr.syncNow();
    assert.equal(faulty[2]!.stats.injectedReadErrors, failedBefore + 1, 'the copy hit the bad range');
    assert.ok(!logs.some((l) => /too many read errors/.test(l)));
    const sm = arr.members.find((m) => m.dev === faulty[4])!;
    assert.equal(sm.slot, 2);
    assert.equal(sm.recoveryOffset, null);
    assert.equal(arr.members.find((m) => m.dev === faulty[2])!.faulty, true, 'replaced, then faulty');
    // the rebuilt range on the replacement equals what slot 2 must hold: check finds nothing
    assert.ok(Buffer.from(await readAll(arr)).equals(model));
    await arr.setSyncAction('check');
    await arr.sync.runUntilIdle();
    assert.equal(arr.sync.mismatchCnt, 0);
    await arr.close();
  });

  test('the old member fails mid-replacement: the replacement takes the slot and its recovery goes on', async () => {
    const devs = await memoryArray({ level: 6, sizesMiB: [8, 8, 8, 8, 8], raidDisks: 4, chunkKiB: 64, assumeClean: true });
    const live = reopenAll(devs);
    const logs: string[] = [];
    // the sync's speed limit runs on a manual clock: the test moves time, no real timer
    const clock = new ManualClock();
    const arr = await MdArray.assemble(live, { clock, log: (m) => logs.push(m), syncLimits: { minKiBs: 1000, maxKiBs: 8000 } });
    const model = randomBytes(arr.sizeBytes);
    await arr.write(model, 0);
    arr.startBackground();
    await arr.requestReplacement(live[0]!.name);
    const r = arr.members.find((m) => m.dev === live[4])!;
    while (!(r.replacement && (r.recoveryOffset ?? 0) > 2048)) await clock.advanceAsync(5);
    await arr.failMember(live[0]!.name);
    assert.equal(r.replacement, false, 'promoted');
    assert.equal(r.slot, 0);
    const model2 = randomBytes(1 << 20);
    await arr.write(model2, 3 << 20);
    model.set(model2, 3 << 20);
    while (r.recoveryOffset !== null) await clock.advanceAsync(10);
    assert.ok(logs.some((l) => /takes slot 0 over/.test(l)));
    assert.deepEqual(arr.workingSlots.sort(), [0, 1, 2, 3]);
    assert.ok(Buffer.from(await readAll(arr)).equals(model));
    await arr.setSyncAction('check');
    while (arr.sync.busy) await clock.advanceAsync(10);
    assert.equal(arr.sync.mismatchCnt, 0);
    await arr.close();
  });

  test('stopped mid-replacement: the superblock says REPLACEMENT, assembly pairs it with its original, the copy goes on', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [8, 8, 8], raidDisks: 2, assumeClean: true });
    // the sync's speed limit runs on a manual clock: the test moves time, no real timer
    const clock = new ManualClock();
    const arr = await MdArray.assemble(reopenAll(devs), { clock, syncLimits: { minKiBs: 1000, maxKiBs: 4000 } });
    const model = randomBytes(arr.sizeBytes);
    await arr.write(model, 0);
    arr.startBackground();
    await arr.requestReplacement(devs[0]!.name);
    const r = arr.members.find((m) => m.dev.name === devs[2]!.name)!;
    while (!(r.replacement && (r.recoveryOffset ?? 0) > 2048)) await clock.advanceAsync(5);
    await arr.close();
    const sb = await sbOf(devs[2]!);
    assert.equal(sb.featureMap & 0x10, 0x10, 'REPLACEMENT');
    assert.equal(sb.featureMap & 0x2, 0x2, 'RECOVERY_OFFSET');
    assert.ok(sb.recoveryOffset > 0n && sb.recoveryOffset < sb.dataSize);
    assert.equal(sb.devRoles[sb.devNumber], 0, 'the replacement carries the role of the member it replaces');
    const again = await MdArray.assemble(reopenAll(devs), { clock: new SystemClock() });
    const r2 = again.members.find((m) => m.dev.name === devs[2]!.name)!;
    assert.equal(r2.replacement, true);
    assert.equal(r2.recoveryOffset, Number(sb.recoveryOffset), 'clean stop: the copy resumes from its checkpoint');
    assert.equal(again.degraded, false);
    await again.syncNow();
    assert.equal(again.members.find((m) => m.dev.name === devs[0]!.name)!.faulty, true);
    assert.ok(Buffer.from(await readAll(again)).equals(model));
    await again.close();
  });
});

describe('reads while a resync is owed', () => {
  test('raid1: past the resync point every read comes from the first copy (the resync source), so repeated reads agree', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [8, 8, 8], noInitialSync: true });
    // the copies differ: the third member holds other bytes in its data area
    const off = await dataOffsetOf(devs[2]!);
    const raw = devs[2]!.reopen();
    await raw.write(new Uint8Array(1 << 20).fill(0x5a), off);
    await raw.close();
    const live = reopenAll(devs);
    const arr = await MdArray.assemble(live, { clock: new SystemClock() });
    assert.ok(arr.resyncPending, 'a resync is owed');
    const others0 = live[1]!.stats.reads + live[2]!.stats.reads;
    const first = new Uint8Array(1 << 20);
    await arr.read(first, 0);
    for (let i = 0; i < 12; i++) {
      const again = new Uint8Array(1 << 20);
      await arr.read(again, 0);
      assert.ok(Buffer.from(again).equals(Buffer.from(first)), `read ${i} agrees`);
      const small = new Uint8Array(4096);
      await arr.read(small, 4096 * i);
      assert.ok(Buffer.from(small).equals(Buffer.from(first.subarray(4096 * i, 4096 * (i + 1)))));
    }
    assert.equal(live[1]!.stats.reads + live[2]!.stats.reads, others0, 'no read from the other copies');
    await arr.syncNow();
    const after = new Uint8Array(1 << 20);
    await arr.read(after, 0);
    assert.ok(Buffer.from(after).equals(Buffer.from(first)), 'the resync kept what was read');
    await arr.close();
  });
});
