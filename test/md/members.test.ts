/**
 * Member roles beyond plain in-sync / spare, on in-memory members: raid1 write-mostly members
 * (reads avoid them while another copy can serve) and --replace (a spare rebuilt as the
 * replacement of a working member, redundancy kept all along). Judges: per-member read and
 * write counters and the members' raw bytes and superblocks as decoded from disk.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { DEV_FLAG_WRITEMOSTLY, MdArray } from '../../src/md/array.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { memoryArray } from '../helpers/arrays.js';
import { prng } from '../helpers/prng.js';

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
    const arr = await MdArray.assemble(live);
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
    const arr = await MdArray.assemble(reopenAll(devs));
    const spare = new MemoryBlockDevice('spare', 8 << 20);
    assert.equal(await arr.addMember(spare, { deviceUuid: randomBytes(16), writeMostly: true }), 'spare');
    assert.equal((await sbOf(spare)).devFlags & DEV_FLAG_WRITEMOSTLY, DEV_FLAG_WRITEMOSTLY);
    await arr.failMember(arr.members[1]!.dev.name);
    await arr.removeMember(arr.members[1]!.dev.name);
    await arr.syncNow();
    assert.deepEqual(arr.workingSlots.sort(), [0, 1]);
    // a raid5 refuses the flag
    const r5 = await memoryArray({ level: 5, sizesMiB: [8, 8, 8], assumeClean: true });
    const arr5 = await MdArray.assemble(reopenAll(r5));
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
