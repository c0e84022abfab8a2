/**
 * Member failures through the fault-injecting device (io/fault-device.ts, md's "faulty"): reads
 * are answered from redundancy, the failing member is marked faulty on the others'
 * superblocks (events bumped), writes are acknowledged only while redundancy holds them, and
 * a vanished member degrades the array without losing data.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { isTsmdError } from '../../src/errors.js';
import { Role } from '../../src/format/superblock.js';
import { FaultyBlockDevice } from '../../src/io/fault-device.js';
import { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { MdArray } from '../../src/md/array.js';
import type { Level } from '../../src/md/create-plan.js';
import { memoryArray } from '../helpers/arrays.js';
import { SystemClock } from '../../src/env/clock.js';

const MiB = 1024 * 1024;

function make(level: Level, n: number, layout?: number): Promise<MemoryBlockDevice[]> {
  return memoryArray({ level, sizesMiB: new Array(n).fill(4), chunkKiB: 16, layout, assumeClean: true });
}

async function withFaults(devs: MemoryBlockDevice[], run = false) {
  const faulty = devs.map((d) => new FaultyBlockDevice(d.reopen()));
  const log: string[] = [];
  const arr = await MdArray.assemble(faulty, { clock: new SystemClock(), run, log: (m) => log.push(m) });
  return { arr, faulty, log };
}

const cases: Array<[string, Level, number, number | undefined]> = [
  ['raid1', 1, 2, undefined],
  ['raid5', 5, 4, 2],
  ['raid6', 6, 5, 2],
  ['raid10', 10, 4, 0x102],
];

describe('member failure', () => {
  for (const [name, level, n, layout] of cases) {
    test(`${name}: read error answered from redundancy, member failed and recorded`, async () => {
      const devs = await make(level, n, layout);
      const { arr, faulty, log } = await withFaults(devs);
      const data = randomBytes(arr.sizeBytes);
      await arr.write(data, 0);
      const eventsBefore = arr.events;
      // every read of member 1's data area fails from now on
      faulty[1]!.addFault({
        op: 'read',
        startBytes: 0,
        endBytes: 4 * MiB,
        count: Number.POSITIVE_INFINITY,
      });
      // mirrors balance reads: two passes make sure member 1 is asked at least once
      for (let pass = 0; pass < 2; pass++) {
        const back = new Uint8Array(arr.sizeBytes);
        await arr.read(back, 0);
        assert.ok(Buffer.from(back).equals(data), 'data comes back through redundancy');
      }
      assert.equal(arr.degraded, true);
      assert.ok(arr.events > eventsBefore, 'events bumped by the failure');
      assert.ok(
        log.some((l) => /marking it faulty/.test(l)),
        log.join('\n'),
      );
      await arr.close();
      // the others' superblocks say member 1 is faulty; assembly without --run refuses
      const again = await MdArray.assemble(
        devs.map((d) => d.reopen()),
        { clock: new SystemClock(), run: true });
      assert.equal(again.sb.devRoles[again.members.find((m) => m.dev.name === 'mem0')!.devNumber], 0);
      assert.equal(again.report.stale.length, 1, 'the failed member is not used again');
      const back2 = new Uint8Array(again.sizeBytes);
      await again.read(back2, 0);
      assert.ok(Buffer.from(back2).equals(data));
      assert.ok(again.sb.devRoles.includes(Role.FAULTY));
      await again.close();
    });

    test(`${name}: a vanished member during writes loses nothing`, async () => {
      const devs = await make(level, n, layout);
      const { arr, faulty } = await withFaults(devs);
      const data = randomBytes(arr.sizeBytes);
      const half = Math.floor(arr.sizeBytes / 2 / 4096) * 4096;
      await arr.write(data.subarray(0, half), 0);
      faulty[0]!.vanish();
      await arr.write(data.subarray(half), half); // acknowledged: redundancy still holds it
      await arr.flush();
      const back = new Uint8Array(arr.sizeBytes);
      await arr.read(back, 0);
      assert.ok(Buffer.from(back).equals(data));
      await arr.close();
      const again = await MdArray.assemble(
        devs.slice(1).map((d) => d.reopen()),
        { clock: new SystemClock(), run: true });
      const back2 = new Uint8Array(again.sizeBytes);
      await again.read(back2, 0);
      assert.ok(Buffer.from(back2).equals(data), 'after reassembly without the vanished member');
      await again.close();
    });
  }

  for (const [name, level, n, layout] of cases) {
    test(`${name}: a member whose flush fails before any write noticed it is failed; the flush holds`, async () => {
      const devs = await make(level, n, layout);
      const { arr, faulty } = await withFaults(devs);
      const data = randomBytes(arr.sizeBytes);
      await arr.write(data, 0);
      // the member vanishes between the writes and the client's FLUSH: the flush is the first
      // I/O to meet it (md's md_end_flush: the request does not fail for one member)
      faulty[1]!.vanish();
      await arr.flush();
      assert.equal(arr.members.find((m) => m.dev.name === devs[1]!.name)!.faulty, true, 'the member went through md_error');
      assert.equal(arr.degraded, true);
      const back = new Uint8Array(arr.sizeBytes);
      await arr.read(back, 0);
      assert.ok(Buffer.from(back).equals(data));
      await arr.close();
    });
  }

  test('raid0: a flush a member cannot do is an error (nothing holds its data)', async () => {
    const devs = await make(0, 2);
    const { arr, faulty } = await withFaults(devs, true);
    await arr.write(randomBytes(65536), 0);
    faulty[0]!.vanish();
    await assert.rejects(arr.flush(), (e) => isTsmdError(e, 'ENODEV'));
    await arr.close().catch(() => {});
  });

  test('raid0: a write error is not acknowledged', async () => {
    const devs = await make(0, 2);
    const { arr, faulty } = await withFaults(devs);
    faulty[1]!.addFault({
      op: 'write',
      startBytes: 0,
      endBytes: 4 * MiB,
      count: Number.POSITIVE_INFINITY,
    });
    await assert.rejects(arr.write(randomBytes(64 * 1024), 0), (e) => isTsmdError(e, 'EIO'));
    await arr.close();
  });

  test('raid5: a second failure is an error, not silent corruption', async () => {
    const devs = await make(5, 4, 2);
    const { arr, faulty } = await withFaults(devs);
    await arr.write(randomBytes(arr.sizeBytes), 0);
    faulty[0]!.vanish();
    faulty[2]!.vanish();
    await assert.rejects(arr.read(new Uint8Array(arr.sizeBytes), 0), (e) => isTsmdError(e, 'EIO'));
    await assert.rejects(arr.write(randomBytes(arr.sizeBytes), 0), (e) => isTsmdError(e, 'EIO'));
    await arr.close();
  });

  test('transient read error: only the faulting range fails once', async () => {
    const d = new FaultyBlockDevice(new MemoryBlockDevice('x', MiB));
    d.addFault({ op: 'read', startBytes: 4096, endBytes: 8192, count: 1 });
    await d.read(new Uint8Array(4096), 0);
    await assert.rejects(d.read(new Uint8Array(512), 4096), /injected read error/);
    await d.read(new Uint8Array(512), 4096);
    assert.equal(d.stats.injectedReadErrors, 1);
  });
});
