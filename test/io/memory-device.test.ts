/**
 * MemoryBlockDevice's volatile write cache (src/io/memory-device.ts): read-your-writes, flush
 * makes writes durable, a crash loses exactly the unflushed ones (or a seeded random subset of
 * them), and without the option nothing changes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SeededRandom } from '../../src/env/random.js';
import { MemoryBlockDevice } from '../../src/io/memory-device.js';

const KiB = 1024;

function filled(len: number, v: number): Uint8Array {
  return new Uint8Array(len).fill(v);
}

async function readAt(d: MemoryBlockDevice, off: number, len: number): Promise<Uint8Array> {
  const b = new Uint8Array(len);
  await d.read(b, off);
  return b;
}

test('a crash drops the unflushed writes and keeps the flushed ones; reads see the cache before', async () => {
  const d = new MemoryBlockDevice('wc', 1024 * KiB, { writeCache: true });
  assert.ok(d.hasWriteCache);
  await d.write(filled(4 * KiB, 1), 0);
  await d.write(filled(4 * KiB, 2), 64 * KiB - 2 * KiB); // straddles a 64 KiB page
  await d.flush();
  assert.equal(d.unflushedSectors, 0);
  await d.write(filled(4 * KiB, 3), 8 * KiB);
  await d.write(filled(512, 4), 0); // overwrites a flushed sector
  assert.equal(d.unflushedSectors, 9);
  // read-your-writes, through this handle and another one on the same disk
  assert.deepEqual(await readAt(d, 8 * KiB, 4 * KiB), filled(4 * KiB, 3));
  const other = d.reopen({ readOnly: true });
  const head = await readAt(other, 0, 4 * KiB);
  assert.deepEqual(head.subarray(0, 512), filled(512, 4));
  assert.deepEqual(head.subarray(512), filled(4 * KiB - 512, 1));

  const r = d.crash();
  assert.deepEqual(r, { keptSectors: 0, lostSectors: 9 });
  assert.equal(d.unflushedSectors, 0);
  assert.deepEqual(await readAt(d, 0, 4 * KiB), filled(4 * KiB, 1), 'the flushed data, not the unflushed overwrite');
  assert.deepEqual(await readAt(d, 8 * KiB, 4 * KiB), filled(4 * KiB, 0), 'the unflushed write is gone');
  assert.deepEqual(await readAt(other, 64 * KiB - 2 * KiB, 4 * KiB), filled(4 * KiB, 2));
});

test('unaligned writes merge with the cached and the durable bytes of their sectors', async () => {
  const d = new MemoryBlockDevice('wc', 64 * KiB, { writeCache: true });
  await d.write(filled(1024, 7), 0);
  await d.flush();
  await d.write(filled(100, 8), 300); // inside sector 0
  await d.write(filled(10, 9), 1020); // across sectors 1 and 2
  const b = await readAt(d, 0, 1536);
  const want = filled(1536, 0);
  want.fill(7, 0, 1024);
  want.fill(8, 300, 400);
  want.fill(9, 1020, 1030);
  assert.deepEqual(b, want);
  await d.flush();
  d.crash();
  assert.deepEqual(await readAt(d, 0, 1536), want, 'flushed, so a crash keeps it');
});

test('a seeded crash keeps a random subset of the unflushed sector writes, the same for the same seed', async () => {
  async function run(seed: number): Promise<{ kept: number; image: Uint8Array }> {
    const d = new MemoryBlockDevice('wc', 256 * KiB, { writeCache: { random: new SeededRandom(seed), keepFraction: 0.5 } });
    await d.write(filled(64 * KiB, 1), 0);
    await d.flush();
    // 128 unflushed sector writes: the first 64 over flushed data, then 64 over fresh space
    await d.write(filled(32 * KiB, 2), 0);
    await d.write(filled(32 * KiB, 3), 128 * KiB);
    const r = d.crash();
    assert.equal(r.keptSectors + r.lostSectors, 128);
    const image = await readAt(d, 0, 256 * KiB);
    // every sector holds either its durable content or the unflushed write, whole
    let kept = 0;
    for (let s = 0; s < 512; s++) {
      const sec = image.subarray(s * 512, (s + 1) * 512);
      const v = sec[0]!;
      assert.ok(sec.every((x) => x === v), `sector ${s} is not torn`);
      const durable = s < 128 ? 1 : 0;
      const cached = s < 64 ? 2 : s >= 256 && s < 320 ? 3 : durable;
      assert.ok(v === durable || v === cached, `sector ${s}: ${v}`);
      if (v !== durable) kept++;
    }
    assert.equal(kept, r.keptSectors);
    return { kept, image };
  }
  const a = await run(11);
  const b = await run(11);
  assert.deepEqual(a.image, b.image, 'the same seed replays the same crash');
  assert.ok(a.kept > 20 && a.kept < 108, `about half kept (${a.kept} of 128)`);
  const c = await run(12);
  assert.notDeepEqual(a.image, c.image, 'another seed, another crash');
});

test('a seeded crash may keep an older unflushed version of a sector and lose the newer one', async () => {
  // sector 0 written twice since the flush: versions 5 then 6; over many seeds each of the
  // four outcomes (neither, first only, second only, both -> newest) shows up
  const seen = new Set<number>();
  for (let seed = 0; seed < 64; seed++) {
    const d = new MemoryBlockDevice('wc', 4 * KiB, { writeCache: { random: new SeededRandom(seed) } });
    await d.write(filled(512, 5), 0);
    await d.write(filled(512, 6), 0);
    d.crash();
    seen.add((await readAt(d, 0, 1))[0]!);
  }
  assert.deepEqual([...seen].sort(), [0, 5, 6]);
});

test('without the option a device has no cache: writes are durable at once, crash changes nothing', async () => {
  const d = new MemoryBlockDevice('plain', 64 * KiB);
  assert.equal(d.hasWriteCache, false);
  await d.write(filled(4 * KiB, 9), 4 * KiB);
  assert.equal(d.unflushedSectors, 0);
  assert.deepEqual(d.crash(), { keptSectors: 0, lostSectors: 0 });
  assert.deepEqual(await readAt(d.reopen(), 4 * KiB, 4 * KiB), filled(4 * KiB, 9));
  assert.equal(d.stats.writes, 1);
});

test('the cache copies what it is given: the caller may reuse its buffer at once', async () => {
  const d = new MemoryBlockDevice('wc', 64 * KiB, { writeCache: true });
  const buf = filled(4 * KiB, 1);
  await d.write(buf, 0);
  buf.fill(2);
  assert.deepEqual(await readAt(d, 0, 4 * KiB), filled(4 * KiB, 1));
  await d.flush();
  assert.deepEqual(await readAt(d, 0, 4 * KiB), filled(4 * KiB, 1));
});
