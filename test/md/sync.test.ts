/**
 * The write-intent bitmap at runtime and the sync engine, on in-memory members: bits on disk
 * before data, batching, the bitmap daemon, bitmap-guided resync after a crash, recovery onto
 * spares, re-add, check/repair, read-error correction, and resync racing normal writes.
 * The judges are the raw member bytes and the bitmap as decoded from disk.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { countDirty } from '../../src/format/bitmap.js';
import type { BlockDevice } from '../../src/io/block-device.js';
import { FaultyBlockDevice } from '../../src/io/fault-device.js';
import type { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { MdArray } from '../../src/md/array.js';
import { loadBitmaps, loadSuperblock } from '../../src/md/sb-io.js';
import { memoryArray } from '../helpers/arrays.js';
import { prng } from '../helpers/prng.js';
import { SystemClock } from '../../src/env/clock.js';

interface Op {
  dev: string;
  op: 'read' | 'write' | 'flush';
  off: number;
  len: number;
}

/** Records the order of member I/O. */
class Recorder implements BlockDevice {
  constructor(
    readonly inner: BlockDevice,
    readonly log: Op[],
  ) {}

  get name() {
    return this.inner.name;
  }

  get sizeBytes() {
    return this.inner.sizeBytes;
  }

  get readOnly() {
    return this.inner.readOnly;
  }

  read(buf: Uint8Array, off: number) {
    this.log.push({ dev: this.name, op: 'read', off, len: buf.length });
    return this.inner.read(buf, off);
  }

  write(buf: Uint8Array, off: number) {
    this.log.push({ dev: this.name, op: 'write', off, len: buf.length });
    return this.inner.write(buf, off);
  }

  flush() {
    this.log.push({ dev: this.name, op: 'flush', off: 0, len: 0 });
    return this.inner.flush();
  }

  close() {
    return this.inner.close();
  }
}

async function bitsOnDisk(devs: MemoryBlockDevice[]): Promise<{ dirty: number; chunkSectors: number; nbits: number; eventsCleared: bigint; bits: Uint8Array }> {
  const d = devs[0]!.reopen({ readOnly: true });
  const l = (await loadSuperblock(d))!;
  const [b] = await loadBitmaps(d, l);
  await d.close();
  return { dirty: countDirty(b!.bits, b!.nbits), chunkSectors: b!.sup.chunkSize / 512, nbits: b!.nbits, eventsCleared: b!.sup.eventsCleared, bits: b!.bits };
}

async function dataArea(dev: MemoryBlockDevice): Promise<{ off: number; bytes: number }> {
  const d = dev.reopen({ readOnly: true });
  const l = (await loadSuperblock(d))!;
  await d.close();
  return { off: Number(l.sb.dataOffset) * 512, bytes: Number(l.sb.size) * 512 };
}

async function readAll(arr: MdArray): Promise<Uint8Array> {
  const out = new Uint8Array(arr.sizeBytes);
  for (let off = 0; off < out.length; off += 1 << 20) await arr.read(out.subarray(off, Math.min(out.length, off + (1 << 20))), off);
  return out;
}

function reopenAll(devs: MemoryBlockDevice[]): MemoryBlockDevice[] {
  return devs.map((d) => d.reopen());
}

describe('write-intent bitmap at runtime', () => {
  test('a chunk bit is on every member (flushed) before the first data write to it; concurrent writes share one bitmap write', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [16, 16], bitmap: 'internal', bitmapChunkKiB: 64, assumeClean: true });
    const log: Op[] = [];
    const arr = await MdArray.assemble(reopenAll(devs).map((d) => new Recorder(d, log)), { clock: new SystemClock() });
    assert.ok(arr.bitmap, 'runtime bitmap');
    const bmStart = arr.members[0]!.bitmaps[0]!.startSector * 512;
    const dataOff = Number(arr.members[0]!.loaded.sb.dataOffset) * 512;
    // 64 concurrent writes, each to its own 64 KiB chunk
    log.length = 0;
    await Promise.all(Array.from({ length: 64 }, (_, i) => arr.write(randomBytes(4096), i * 65536 * 2)));
    assert.ok(arr.bitmap.stats.rounds <= 3, `64 writes needed ${arr.bitmap.stats.rounds} bitmap rounds`);
    for (const m of arr.members) {
      const mine = log.filter((o) => o.dev === m.dev.name);
      const firstData = mine.findIndex((o) => o.op === 'write' && o.off >= dataOff);
      const bitmapWrite = mine.findIndex((o) => o.op === 'write' && o.off >= bmStart && o.off < dataOff && o.off !== 0);
      assert.ok(bitmapWrite >= 0 && bitmapWrite < firstData, `${m.dev.name}: bitmap written before data`);
      const flushAfter = mine.findIndex((o, i) => i > bitmapWrite && o.op === 'flush');
      assert.ok(flushAfter > bitmapWrite && flushAfter < firstData, `${m.dev.name}: bitmap flushed before data`);
    }
    // a second write to an already dirty chunk costs no bitmap I/O
    const rounds = arr.bitmap.stats.rounds;
    await arr.write(randomBytes(4096), 4096);
    assert.equal(arr.bitmap.stats.rounds, rounds);
    const disk = await bitsOnDisk(devs);
    assert.equal(disk.dirty, 64);
    for (let i = 0; i < 64; i++) assert.ok(disk.bits[(i * 2) >>> 3]! & (1 << ((i * 2) & 7)), `bit ${i * 2} on disk`);
    await arr.close();
  });

  test('the bitmap daemon clears a bit only after a whole idle period, and events_cleared follows', async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: [16, 16, 16], bitmap: 'internal', bitmapChunkKiB: 64, assumeClean: true, chunkKiB: 64 });
    const arr = await MdArray.assemble(reopenAll(devs), { clock: new SystemClock() });
    await arr.write(randomBytes(65536), 0);
    await arr.write(randomBytes(65536), 1 << 20);
    const before = await bitsOnDisk(devs);
    assert.ok(before.dirty >= 2, `dirty bits after writes: ${before.dirty}`);
    assert.equal(await arr.bitmapDaemonPass(), 0, 'first pass only marks');
    // a chunk written between the passes keeps its bit
    await arr.write(randomBytes(4096), 1 << 20);
    const cleared = await arr.bitmapDaemonPass();
    assert.ok(cleared >= 1);
    const mid = await bitsOnDisk(devs);
    assert.ok(mid.dirty >= 1 && mid.dirty < before.dirty, `bits ${before.dirty} -> ${mid.dirty}`);
    assert.equal(mid.eventsCleared, arr.sb.events);
    await arr.bitmapDaemonPass();
    await arr.bitmapDaemonPass();
    assert.equal((await bitsOnDisk(devs)).dirty, 0);
    await arr.close();
  });

  test('a stop after a resync clears the synced bits on disk (md_bitmap_flush); the next assembly owes nothing', async () => {
    // created without --assume-clean: every bit set, the initial resync runs, then the stop
    const devs = await memoryArray({ level: 1, sizesMiB: [16, 16], bitmap: 'internal', bitmapChunkKiB: 1024 });
    const after = await bitsOnDisk(devs);
    assert.equal(after.dirty, 0, `bits left set on disk after the initial resync and stop: ${after.dirty} of ${after.nbits}`);
    const sb = (await loadSuperblock(devs[0]!.reopen()))!.sb;
    assert.equal(after.eventsCleared, sb.events);
    const arr = await MdArray.assemble(reopenAll(devs), { clock: new SystemClock() });
    try {
      assert.equal(arr.resyncPending, false);
      assert.deepEqual(await arr.syncNow(), { recovered: 0, resynced: 0 });
    } finally {
      await arr.close();
    }
  });

  test('after a crash only the dirty chunks are resynced (and what lies outside them is not touched)', async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: [16, 16, 16, 16], bitmap: 'internal', bitmapChunkKiB: 64, assumeClean: true, chunkKiB: 64 });
    const arr = await MdArray.assemble(reopenAll(devs), { clock: new SystemClock() });
    const rnd = prng(42);
    for (let i = 0; i < 40; i++) {
      const off = Math.floor(rnd() * (arr.sizeBytes / 4096 - 16)) * 4096;
      await arr.write(randomBytes(4096 * (1 + Math.floor(rnd() * 16))), off);
    }
    // crash: the array is abandoned while active; the members are opened again
    const disk = await bitsOnDisk(devs);
    assert.ok(disk.dirty > 0 && disk.dirty < disk.nbits / 2, `dirty ${disk.dirty} of ${disk.nbits}`);
    // scribble on parity in one dirty chunk and one clean chunk (a torn write, and silent damage)
    const area = await dataArea(devs[3]!);
    let dirtyChunk = -1;
    let cleanChunk = -1;
    for (let c = 0; c < disk.nbits; c++) {
      const set = (disk.bits[c >>> 3]! & (1 << (c & 7))) !== 0;
      if (set && dirtyChunk < 0) dirtyChunk = c;
      if (!set && cleanChunk < 0 && c > 2) cleanChunk = c;
    }
    for (const c of [dirtyChunk, cleanChunk]) await devs[3]!.reopen().write(randomBytes(4096), area.off + c * disk.chunkSectors * 512);
    const again = await MdArray.assemble(reopenAll(devs), { clock: new SystemClock() });
    assert.equal(again.resyncPending, true, 'unclean shutdown: resync owed');
    const r = await again.syncNow();
    // exactly the dirty chunks (the array ends on a chunk boundary here)
    assert.equal(r.resynced, disk.dirty * disk.chunkSectors);
    await again.setSyncAction('check');
    await again.sync.runUntilIdle();
    // the dirty chunk was made consistent; the clean one was (rightly) not visited
    assert.equal(again.sync.mismatchCnt, 8, 'one 4 KiB unit outside the dirty chunks');
    await again.setSyncAction('repair');
    await again.sync.runUntilIdle();
    await again.setSyncAction('check');
    await again.sync.runUntilIdle();
    assert.equal(again.sync.mismatchCnt, 0);
    await again.close();
    void arr;
  });
});

describe('sync engine', () => {
  test('raid6: a failed member is replaced by the hot spare, rebuilt, and the data survives two more failures', async () => {
    const devs = await memoryArray({ level: 6, sizesMiB: [8, 8, 8, 8, 8, 8], raidDisks: 5, chunkKiB: 64, assumeClean: true });
    const arr = await MdArray.assemble(reopenAll(devs), { clock: new SystemClock() });
    const model = randomBytes(arr.sizeBytes);
    await arr.write(model, 0);
    await arr.failMember('mem1');
    assert.equal(arr.degraded, true);
    const r = await arr.syncNow();
    assert.ok(r.recovered > 0);
    assert.equal(arr.degraded, false);
    const spare = arr.members.find((m) => m.dev.name === 'mem5')!;
    assert.equal(spare.slot, 1);
    assert.equal(spare.recoveryOffset, null);
    await arr.failMember('mem0');
    await arr.failMember('mem2');
    assert.ok(Buffer.from(await readAll(arr)).equals(Buffer.from(model)), 'data read through the rebuilt member');
    await arr.close();
  });

  test('raid10 (far 2): recovery by member sector rebuilds the far copies too', async () => {
    const devs = await memoryArray({ level: 10, sizesMiB: [8, 8, 8, 8, 8], raidDisks: 4, chunkKiB: 64, layout: 0x201, assumeClean: true });
    const arr = await MdArray.assemble(reopenAll(devs), { clock: new SystemClock() });
    const model = randomBytes(arr.sizeBytes);
    await arr.write(model, 0);
    await arr.failMember('mem2');
    await arr.syncNow();
    assert.equal(arr.degraded, false);
    // the rebuilt member alone must now hold its copies: fail its partners
    await arr.failMember('mem1');
    await arr.failMember('mem3');
    assert.ok(Buffer.from(await readAll(arr)).equals(Buffer.from(model)));
    await arr.close();
  });

  test('re-add after remove recovers only the chunks written meanwhile', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [16, 16, 16], bitmap: 'internal', bitmapChunkKiB: 64, assumeClean: true });
    const arr = await MdArray.assemble(reopenAll(devs), { clock: new SystemClock() });
    await arr.write(randomBytes(arr.sizeBytes), 0);
    // the bitmap daemon clears what every member has (two idle periods)
    await arr.bitmapDaemonPass();
    await arr.bitmapDaemonPass();
    assert.equal(arr.bitmap!.dirtyCount, 0);
    await arr.failMember('mem2');
    await arr.removeMember('mem2');
    for (const c of [3, 10, 11, 40, 100]) await arr.write(randomBytes(4096), c * 65536 + 512 * 3);
    const how = await arr.addMember(devs[2]!.reopen(), { reAdd: true, deviceUuid: randomBytes(16) });
    assert.equal(how, 're-added');
    const r = await arr.syncNow();
    assert.equal(r.recovered, 5 * 128, 'five 64 KiB chunks');
    await arr.close();
    const a0 = await dataArea(devs[0]!);
    const b0 = new Uint8Array(a0.bytes);
    const b2 = new Uint8Array(a0.bytes);
    await devs[0]!.reopen().read(b0, a0.off);
    await devs[2]!.reopen().read(b2, (await dataArea(devs[2]!)).off);
    assert.ok(Buffer.from(b0).equals(Buffer.from(b2)), 're-added mirror equals the others');
  });

  test('check counts mismatches per 4 KiB, repair rewrites them (raid1 and raid5)', async () => {
    for (const level of [1, 5] as const) {
      const devs = await memoryArray({ level, sizesMiB: [8, 8, 8], chunkKiB: 64, assumeClean: true });
      const arr = await MdArray.assemble(reopenAll(devs), { clock: new SystemClock() });
      await arr.write(randomBytes(arr.sizeBytes), 0);
      const area = await dataArea(devs[1]!);
      const raw = devs[1]!.reopen();
      await raw.write(randomBytes(4096), area.off + 4096 * 37);
      await raw.write(randomBytes(8192), area.off + 4096 * 300);
      await arr.setSyncAction('check');
      await arr.sync.runUntilIdle();
      assert.equal(arr.sync.mismatchCnt, 24, `raid${level} check`);
      await arr.setSyncAction('repair');
      await arr.sync.runUntilIdle();
      await arr.setSyncAction('check');
      await arr.sync.runUntilIdle();
      assert.equal(arr.sync.mismatchCnt, 0, `raid${level} after repair`);
      await arr.close();
    }
  });

  test('a read error is answered from redundancy and the range rewritten; a member that cannot be rewritten fails', async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: [8, 8, 8, 8], chunkKiB: 64, assumeClean: true });
    const faulty = reopenAll(devs).map((d) => new FaultyBlockDevice(d));
    const logs: string[] = [];
    const arr = await MdArray.assemble(faulty, { clock: new SystemClock(), log: (m) => logs.push(m) });
    const model = randomBytes(arr.sizeBytes);
    await arr.write(model, 0);
    const area = await dataArea(devs[1]!);
    faulty[1]!.addFault({ op: 'read', startBytes: area.off, endBytes: area.off + (1 << 20), count: 1 });
    assert.ok(Buffer.from(await readAll(arr)).equals(Buffer.from(model)));
    assert.equal(arr.members[1]!.faulty, false);
    assert.ok(logs.some((l) => /read error corrected/.test(l)), logs.join('\n'));
    assert.ok(arr.members[1]!.loaded.sb.cntCorrectedRead > 0);
    // now the sector can neither be read nor rewritten: the member goes
    faulty[2]!.addFault({ op: 'any', startBytes: area.off, endBytes: area.off + (1 << 20), count: Infinity });
    assert.ok(Buffer.from(await readAll(arr)).equals(Buffer.from(model)));
    assert.equal(arr.members[2]!.faulty, true);
    assert.ok(Buffer.from(await readAll(arr)).equals(Buffer.from(model)), 'degraded read');
    await arr.close();
  });

  test('resync racing normal writes leaves identical mirrors holding the last write', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [32, 32], noInitialSync: true });
    // make the mirrors differ everywhere, as after a crash with no bitmap
    const area = await dataArea(devs[1]!);
    await devs[0]!.reopen().write(randomBytes(area.bytes), (await dataArea(devs[0]!)).off);
    const arr = await MdArray.assemble(reopenAll(devs), { clock: new SystemClock() });
    assert.equal(arr.resyncPending, true);
    arr.sync.windowSectors = 512;
    // resync copies the first mirror over the others
    const model = new Uint8Array(arr.sizeBytes);
    await devs[0]!.reopen().read(model, (await dataArea(devs[0]!)).off);
    const rnd = prng(7);
    const sync = arr.syncNow();
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 300; i++) {
      const off = Math.floor(rnd() * (arr.sizeBytes / 4096 - 8)) * 4096;
      const data = randomBytes(4096 * (1 + Math.floor(rnd() * 8)));
      model.set(data, off);
      writes.push(arr.write(data, off));
      if (i % 20 === 0) await new Promise((r) => setImmediate(r));
    }
    await Promise.all(writes);
    await sync;
    await arr.close();
    const m0 = new Uint8Array(area.bytes);
    const m1 = new Uint8Array(area.bytes);
    await devs[0]!.reopen().read(m0, (await dataArea(devs[0]!)).off);
    await devs[1]!.reopen().read(m1, area.off);
    assert.ok(Buffer.from(m0).equals(Buffer.from(m1)), 'mirrors identical');
    assert.ok(Buffer.from(m0.subarray(0, model.length)).equals(Buffer.from(model)), 'the writes are there');
  });

  /**
   * md writes a superblock that records sync progress (recovery_offset, resync_offset, a member
   * in sync) only after the sync writes it covers are on the disk (REQ_PREFLUSH). The members
   * here are files with a page cache, which writes back in any order: a superblock recording
   * progress must come after a flush of the data written before it, or a power loss could keep
   * the superblock and lose the data it vouches for.
   */
  test('a superblock recording sync progress is written only after the sync data before it is flushed', async () => {
    const unflushedBeforeSb = (log: Op[], dev: string, dataOff: number): number => {
      let dirty = false;
      let bad = 0;
      for (const o of log) {
        if (o.dev !== dev) continue;
        if (o.op === 'flush') dirty = false;
        else if (o.op === 'write' && o.off >= dataOff) dirty = true;
        else if (o.op === 'write' && o.off === 4096 && dirty) bad++;
      }
      return bad;
    };
    // recovery onto the spare, checkpointed every 1 MiB
    {
      const devs = await memoryArray({ level: 1, sizesMiB: [8, 8, 8], raidDisks: 2, assumeClean: true });
      const log: Op[] = [];
      const arr = await MdArray.assemble(reopenAll(devs).map((d) => new Recorder(d, log)), { clock: new SystemClock() });
      await arr.write(randomBytes(arr.sizeBytes), 0);
      await arr.failMember('mem1');
      arr.sync.windowSectors = 256;
      log.length = 0;
      const r = await arr.syncNow({ checkpointSectors: 2048 });
      assert.ok(r.recovered > 0);
      const dataOff = Number(arr.members[0]!.loaded.sb.dataOffset) * 512;
      const sbWrites = log.filter((o) => o.dev === 'mem2' && o.op === 'write' && o.off === 4096).length;
      assert.ok(sbWrites >= 4, `checkpoints on the spare: ${sbWrites}`);
      assert.equal(unflushedBeforeSb(log, 'mem2', dataOff), 0, 'spare superblocks written over unflushed rebuilt data');
      await arr.close();
    }
    // resync after an unclean shutdown (the array clean while it runs: resync_offset moves)
    {
      const devs = await memoryArray({ level: 1, sizesMiB: [8, 8], noInitialSync: true });
      const log: Op[] = [];
      const arr = await MdArray.assemble(reopenAll(devs).map((d) => new Recorder(d, log)), { clock: new SystemClock() });
      assert.equal(arr.resyncPending, true);
      arr.sync.windowSectors = 256;
      log.length = 0;
      const r = await arr.syncNow({ checkpointSectors: 2048 });
      assert.ok(r.resynced > 0);
      const dataOff = Number(arr.members[0]!.loaded.sb.dataOffset) * 512;
      assert.ok(log.some((o) => o.dev === 'mem1' && o.op === 'write' && o.off >= dataOff), 'the resync wrote mem1');
      for (const dev of ['mem0', 'mem1']) assert.equal(unflushedBeforeSb(log, dev, dataOff), 0, `${dev}: superblock written over unflushed resync data`);
      await arr.close();
    }
  });
});
