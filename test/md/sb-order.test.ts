/**
 * Superblock writes are one at a time. A clean transition (md's safe mode) does not wait for the
 * write barrier that --grow --bitmap holds, so without ordering its superblock, encoded before
 * the bitmap existed, could land on a member after the grown one and hide the bitmap (seen once
 * in CI as mdadm -X "doesn't have bitmap" on one member). Here the clean write to one member is
 * held at the device while the bitmap is added; the members' superblocks are then judged as
 * decoded from disk, and by assembling again.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { decodeSuperblock, Feature } from '../../src/format/superblock.js';
import { FaultyBlockDevice } from '../../src/io/fault-device.js';
import type { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { MdArray } from '../../src/md/array.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { memoryArray } from '../helpers/arrays.js';
import { SystemClock } from '../../src/env/clock.js';

const SB_OFFSET = 4096; // metadata 1.2

/**
 * A member (the fault wrapper, with no faults armed, does the delegation) whose next write at
 * the held offset (the superblock unless told) waits until released. Records the event count
 * of every superblock written.
 */
class HeldSuperblock extends FaultyBlockDevice {
  private gate: Promise<void> | null = null;
  private open: (() => void) | null = null;
  private heldAt = SB_OFFSET;
  reached = false;
  readonly events: bigint[] = [];

  holdNextSuperblock(at = SB_OFFSET): void {
    this.heldAt = at;
    this.reached = false;
    this.gate = new Promise((r) => (this.open = r));
  }

  release(): void {
    this.open?.();
  }

  override async write(buf: Uint8Array, off: number): Promise<void> {
    if (off === SB_OFFSET) this.events.push(decodeSuperblock(buf).events);
    if (off === this.heldAt && this.gate) {
      const g = this.gate;
      this.gate = null;
      this.reached = true;
      await g;
    }
    return super.write(buf, off);
  }
}

async function sbOf(dev: MemoryBlockDevice) {
  const d = dev.reopen({ readOnly: true });
  const l = (await loadSuperblock(d))!;
  await d.close();
  return l.sb;
}

const ticks = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

describe('superblock write ordering', () => {
  for (const kind of ['internal', 'none'] as const) {
    test(`a clean transition racing --grow --bitmap=${kind} never lands over the grown superblock`, async () => {
      const devs = await memoryArray({ level: 1, sizesMiB: [8, 8], assumeClean: true, bitmap: kind === 'none' ? 'internal' : 'none' });
      const live = devs.map((d) => new HeldSuperblock(d.reopen()));
      const arr = await MdArray.assemble(live, { clock: new SystemClock() });
      const data = randomBytes(1 << 20);
      await arr.write(data, 0);
      assert.ok(arr.isDirty);
      // the clean transition's superblock reaches member 0 and is held at member 1
      live[1]!.holdNextSuperblock();
      const clean = arr.markClean();
      await ticks(50);
      assert.ok(live[1]!.reached, 'the clean superblock write is held at member 1');
      const grow = arr.setBitmap(kind);
      await ticks(50);
      live[1]!.release();
      await Promise.all([clean, grow]);
      const sbs = await Promise.all(devs.map((d) => sbOf(d)));
      for (const [i, sb] of sbs.entries()) {
        assert.equal((sb.featureMap & Feature.BITMAP_OFFSET) !== 0, kind === 'internal', `member ${i} feature map ${sb.featureMap}`);
        assert.equal(sb.events, sbs[0]!.events, `member ${i} events`);
      }
      // the array goes on with the new state, written again over the same fields
      await arr.write(data, 1 << 20);
      await arr.close();
      const again = await MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock() });
      assert.equal(again.bitmap !== null, kind === 'internal');
      const back = new Uint8Array(2 << 20);
      await again.read(back, 0);
      assert.ok(Buffer.from(back).equals(Buffer.concat([data, data])));
      await again.close();
    });
  }

  test('state changes racing a superblock write go to disk one event at a time', async () => {
    // a crash during a superblock write leaves members one event apart at most, which assembly
    // accepts; two apart is a stale member (CI once saw a crash test kick one)
    const devs = await memoryArray({ level: 1, sizesMiB: [8, 8, 8], bitmap: 'internal', assumeClean: true });
    const live = devs.map((d) => new HeldSuperblock(d.reopen()));
    const arr = await MdArray.assemble(live, { clock: new SystemClock() });
    await arr.write(randomBytes(1 << 20), 0);
    // the clean transition's bitmap header write (before its superblocks) is held at member 0
    live[0]!.holdNextSuperblock(arr.members[0]!.bitmaps[0]!.startSector * 512);
    const clean = arr.markClean();
    await ticks(50);
    assert.ok(live[0]!.reached, 'the clean transition is held in its bitmap write');
    // a member fails meanwhile: its own superblock write comes after, one event later
    const fail = arr.failMember('mem2');
    await ticks(50);
    live[0]!.release();
    await Promise.all([clean, fail]);
    for (const [i, d] of live.slice(0, 2).entries()) {
      assert.ok(d.events.length >= 3, `member ${i}: ${d.events.length} superblock writes`);
      for (let k = 1; k < d.events.length; k++) assert.equal(d.events[k]! - d.events[k - 1]!, 1n, `member ${i}: events ${d.events.join(', ')}`);
    }
    await arr.close();
    const again = await MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock(), run: true });
    assert.equal(again.degraded, true, 'mem2 stays failed');
    await again.close();
  });
});
