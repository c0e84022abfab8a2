/**
 * md_error, the one way a member fails, and the personality's error handler behind it
 * (md's raid1_error / raid10_error): a mirror never fails its last in-sync copy of a range.
 * The write that meets the error returns EIO; the member stays in the array, reads go on, and
 * the superblocks on disk never record it as faulty. Judges: the members' own superblocks as
 * decoded from disk and the data read back.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { AssertionError, isTsmdError } from '../../src/errors.js';
import { Role } from '../../src/format/superblock.js';
import { FaultyBlockDevice } from '../../src/io/fault-device.js';
import type { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { MdArray } from '../../src/md/array.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { memoryArray } from '../helpers/arrays.js';
import { SystemClock } from '../../src/env/clock.js';

const MiB = 1024 * 1024;

async function rolesOnDisk(dev: MemoryBlockDevice): Promise<number[]> {
  const d = dev.reopen({ readOnly: true });
  const l = (await loadSuperblock(d))!;
  await d.close();
  return l.sb.devRoles;
}

async function open(devs: MemoryBlockDevice[]) {
  const faulty = devs.map((d) => new FaultyBlockDevice(d.reopen()));
  const log: string[] = [];
  const arr = await MdArray.assemble(faulty, { clock: new SystemClock(), run: true, log: (m) => log.push(m) });
  return { arr, faulty, log };
}

describe('md_error and the last copy', () => {
  test('raid1: a write error on the last working member does not fail it; the write gets EIO and reads still work', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [4, 4], assumeClean: true });
    const { arr, faulty, log } = await open(devs);
    const data = randomBytes(arr.sizeBytes);
    await arr.write(data, 0);
    // member 0 fails on a write error: member 1 still holds every range
    faulty[0]!.addFault({ op: 'write', startBytes: 0, endBytes: 4 * MiB, count: Number.POSITIVE_INFINITY });
    await arr.write(data.subarray(0, 4096), 0);
    assert.equal(arr.members[0]!.faulty, true, 'the first member to fail goes');
    assert.deepEqual(arr.workingSlots, [1]);
    // now member 1 is the last copy: its write error fails the write, not the member
    // (fault ranges are device bytes: the data area starts at data_offset)
    const dataOff = Number(arr.members[1]!.loaded.sb.dataOffset) * 512;
    faulty[1]!.addFault({ op: 'write', startBytes: dataOff + 1 * MiB, endBytes: dataOff + 2 * MiB, count: Number.POSITIVE_INFINITY });
    const events = arr.events;
    await assert.rejects(arr.write(randomBytes(8192), 1 * MiB + 4096), (e) => isTsmdError(e, 'EIO'));
    assert.equal(arr.members[1]!.faulty, false, 'the last in-sync member stays');
    assert.deepEqual(arr.workingSlots, [1]);
    assert.equal(arr.events, events, 'no superblock change for a refused failure');
    assert.ok(log.some((l) => /last working copy/.test(l)), log.join('\n'));
    // reads of everything, the range that failed to write included (its old data is intact)
    const back = new Uint8Array(arr.sizeBytes);
    await arr.read(back, 0);
    assert.ok(Buffer.from(back).equals(data));
    // writes elsewhere are still acknowledged
    const fresh = randomBytes(64 * 1024);
    await arr.write(fresh, 2 * MiB);
    const back2 = new Uint8Array(fresh.length);
    await arr.read(back2, 2 * MiB);
    assert.ok(Buffer.from(back2).equals(fresh));
    await arr.close();
    // on disk: member 1's superblock records member 0 faulty and itself in slot 1
    const roles = await rolesOnDisk(devs[1]!);
    assert.equal(roles[arr.members[0]!.devNumber], Role.FAULTY);
    assert.equal(roles[arr.members[1]!.devNumber], 1);
  });

  test('raid1: mdadm --fail of the last working member is refused, EBUSY', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [4, 4], assumeClean: true });
    const { arr } = await open(devs);
    await arr.failMember('mem0');
    await assert.rejects(arr.failMember('mem1'), (e) => isTsmdError(e, 'EBUSY'));
    assert.equal(arr.members[1]!.faulty, false);
    await arr.close();
  });

  test('raid10 near=2: a write error on the last copy of a pair keeps the member; the other pair goes on', async () => {
    const devs = await memoryArray({ level: 10, sizesMiB: [4, 4, 4, 4], chunkKiB: 16, layout: 0x102, assumeClean: true });
    const { arr, faulty } = await open(devs);
    const data = randomBytes(arr.sizeBytes);
    await arr.write(data, 0);
    await arr.failMember('mem0');
    // slots 0 and 1 mirror each other: slot 1 is now the last copy of their chunks
    faulty[1]!.addFault({ op: 'write', startBytes: 0, endBytes: 4 * MiB, count: Number.POSITIVE_INFINITY });
    // array chunk 0 (16 KiB) lives on slots 0/1; chunk 1 on slots 2/3
    await assert.rejects(arr.write(randomBytes(16 * 1024), 0), (e) => isTsmdError(e, 'EIO'));
    assert.equal(arr.members[1]!.faulty, false);
    const other = randomBytes(16 * 1024);
    await arr.write(other, 16 * 1024);
    data.set(other, 16 * 1024);
    const back = new Uint8Array(arr.sizeBytes);
    await arr.read(back, 0);
    assert.ok(Buffer.from(back).equals(data));
    await arr.close();
  });

  test('raid5: md_error fails the member (raid5_error has no last-copy rule), the array runs degraded', async () => {
    const devs = await memoryArray({ level: 5, sizesMiB: [4, 4, 4], chunkKiB: 16, assumeClean: true });
    const { arr, faulty, log } = await open(devs);
    const data = randomBytes(arr.sizeBytes);
    await arr.write(data, 0);
    faulty[2]!.addFault({ op: 'write', startBytes: 0, endBytes: 4 * MiB, count: Number.POSITIVE_INFINITY });
    await arr.write(data, 0);
    assert.equal(arr.members[2]!.faulty, true);
    assert.ok(log.some((l) => /write error on mem2.*marking it faulty/.test(l)), log.join('\n'));
    const back = new Uint8Array(arr.sizeBytes);
    await arr.read(back, 0);
    assert.ok(Buffer.from(back).equals(data));
    await arr.close();
  });
});

describe('a new personality on a quiesced array', () => {
  test('raid1 of two taken over as raid5 of two (md raid5_takeover_raid1): same data, superblocks say raid5, check finds nothing', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [8, 8], assumeClean: true });
    const { arr } = await open(devs);
    const data = randomBytes(arr.sizeBytes);
    await arr.write(data, 0);
    const events = arr.events;
    // a raid5 of two disks keeps each chunk's data where a mirror has it (parity = the copy)
    await arr.installPersonality({ level: 5, layout: 2, chunkSectors: 128, raidDisks: 2 });
    assert.equal(arr.level, 5);
    assert.equal(arr.personality.level, 5);
    assert.equal(arr.events, events + 1n, 'one metadata transaction');
    const size = arr.sizeBytes;
    assert.ok(size > 0 && size <= data.length && size % (64 * 1024) === 0);
    const back = new Uint8Array(size);
    await arr.read(back, 0);
    assert.ok(Buffer.from(back).equals(data.subarray(0, size)), 'data reads the same through raid5');
    const more = randomBytes(128 * 1024);
    await arr.write(more, 64 * 1024);
    await arr.close();
    // assembled again from the superblocks alone: raid5, consistent parity, the data
    const again = await MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock() });
    assert.equal(again.level, 5);
    assert.equal(again.sb.layout, 2);
    assert.equal(again.sb.chunkSize, 128);
    const back2 = new Uint8Array(again.sizeBytes);
    await again.read(back2, 0);
    const want = Buffer.from(data.subarray(0, size));
    want.set(more, 64 * 1024);
    assert.ok(Buffer.from(back2).equals(want));
    await again.setSyncAction('check');
    await again.syncNow();
    assert.equal(again.sync.mismatchCnt, 0);
    await again.close();
  });

  test('an unknown level is refused before anything changes', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [4, 4], assumeClean: true });
    const { arr } = await open(devs);
    const events = arr.events;
    await assert.rejects(arr.installPersonality({ level: 7, layout: 0, chunkSectors: 128, raidDisks: 2 }), (e) => isTsmdError(e, 'ENOTSUP'));
    assert.equal(arr.level, 1);
    assert.equal(arr.events, events);
    await arr.close();
  });
});

describe('a bug is not a member failure', () => {
  test('an assertion thrown by a member device reaches the caller; no member is failed for it', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [4, 4], assumeClean: true });
    const { arr, faulty } = await open(devs);
    // a device whose read trips an invariant (as a bug in an io/ layer would)
    const dev = faulty[0]!;
    const read = dev.read.bind(dev);
    dev.read = (buf, off) => (off >= 1024 * 1024 ? Promise.reject(new AssertionError('invariant of the device layer')) : read(buf, off));
    await assert.rejects(arr.read(new Uint8Array(arr.sizeBytes), 0), (e) => e instanceof AssertionError);
    assert.equal(arr.members.some((m) => m.faulty), false, 'no member failed for a bug');
    await arr.close();
  });
});
