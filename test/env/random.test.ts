/**
 * The injected random source (src/env/random.ts): a seeded run replays exactly, different seeds
 * give different runs, ranges hold, and the production source works through the same interface.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Random, SeededRandom, SystemRandom } from '../../src/env/random.js';
import { prng } from '../helpers/prng.js';

function draw(r: Random, n: number): number[] {
  return Array.from({ length: n }, () => r.u32());
}

test('the same seed gives the same sequence, through every method', () => {
  const a = new SeededRandom(42);
  const b = new SeededRandom(42);
  assert.deepEqual(draw(a, 1000), draw(b, 1000));
  const fa = Array.from({ length: 100 }, () => a.float());
  const fb = Array.from({ length: 100 }, () => b.float());
  assert.deepEqual(fa, fb);
  const ia = Array.from({ length: 100 }, () => a.int(-5, 17));
  const ib = Array.from({ length: 100 }, () => b.int(-5, 17));
  assert.deepEqual(ia, ib);
  const ba = new Uint8Array(37);
  const bb = new Uint8Array(37);
  a.fill(ba);
  b.fill(bb);
  assert.deepEqual(ba, bb);
  assert.equal(a.seed, 42);
});

test('different seeds give different sequences', () => {
  const seqs = [0, 1, 2, 42, 0xffff_ffff].map((s) => draw(new SeededRandom(s), 64).join(','));
  assert.equal(new Set(seqs).size, seqs.length);
});

test('mulberry32, bit for bit: the tests\' seeds replay the runs they replayed before the move', () => {
  // golden values of the mulberry32 the tests used (test/helpers/prng.ts before it moved)
  assert.deepEqual(draw(new SeededRandom(0), 5), [1144304738, 1416247, 958946056, 627933444, 2007157716]);
  assert.deepEqual(draw(new SeededRandom(1), 5), [2693262067, 11749833, 2265367787, 4213581821, 4159151403]);
  assert.deepEqual(draw(new SeededRandom(0x5eed), 5), [3049564378, 1229806541, 4088390650, 437054851, 1625275450]);
  const f = prng(1);
  assert.equal(f(), 2693262067 / 2 ** 32);
  assert.equal(f(), 11749833 / 2 ** 32);
});

test('float is in [0, 1); int stays in [lo, hi) and reaches both ends', () => {
  const r = new SeededRandom(7);
  for (let i = 0; i < 10_000; i++) {
    const f = r.float();
    assert.ok(f >= 0 && f < 1, `float ${f}`);
  }
  const seen = new Set<number>();
  for (let i = 0; i < 10_000; i++) {
    const x = r.int(-3, 4);
    assert.ok(Number.isInteger(x) && x >= -3 && x < 4, `int ${x}`);
    seen.add(x);
  }
  assert.deepEqual([...seen].sort((p, q) => p - q), [-3, -2, -1, 0, 1, 2, 3]);
  for (let i = 0; i < 100; i++) assert.equal(r.int(9, 10), 9);
  // spans wider than 32 bits
  const big = 2 ** 40;
  let above32 = false;
  for (let i = 0; i < 1000; i++) {
    const x = r.int(0, big);
    assert.ok(Number.isInteger(x) && x >= 0 && x < big, `int ${x}`);
    if (x >= 2 ** 32) above32 = true;
  }
  assert.ok(above32, 'a 40-bit range yields values above 2^32');
  for (let i = 0; i < 1000; i++) {
    const x = r.int(0, Number.MAX_SAFE_INTEGER);
    assert.ok(Number.isSafeInteger(x) && x >= 0);
    const y = r.int(-Number.MAX_SAFE_INTEGER, 0);
    assert.ok(Number.isSafeInteger(y) && y < 0);
  }
});

test('int rejects empty, inverted and non-integer ranges (a caller bug)', () => {
  const r = new SeededRandom(1);
  assert.throws(() => r.int(5, 5), /invariant/);
  assert.throws(() => r.int(5, 4), /invariant/);
  assert.throws(() => r.int(0, 1.5), /invariant/);
  assert.throws(() => r.int(0, 2 ** 53), /invariant/);
  // a span of 2^53 that does not fit, though both ends do
  assert.throws(() => r.int(-1, Number.MAX_SAFE_INTEGER), /invariant/);
});

test('fill covers every byte, odd lengths included, with values spread over 0..255', () => {
  const r = new SeededRandom(3);
  for (const n of [0, 1, 3, 4, 5, 4099]) {
    const b = new Uint8Array(n).fill(0xaa);
    r.fill(b);
    if (n >= 1024) {
      assert.ok(new Set(b).size > 200, 'many distinct byte values');
      assert.ok(b.filter((x) => x === 0xaa).length < n / 64, 'the old contents are overwritten');
    }
  }
  // the tail of an odd-length fill is random too, not left as it was
  let changed = 0;
  for (let i = 0; i < 64; i++) {
    const b = new Uint8Array(3).fill(0xaa);
    r.fill(b);
    if (b[2] !== 0xaa) changed++;
  }
  assert.ok(changed > 50);
});

test('SystemRandom: the same interface on node:crypto, different every time', () => {
  const a = new SystemRandom();
  const b = new SystemRandom();
  assert.notDeepEqual(draw(a, 16), draw(b, 16));
  // more draws than one pooled refill
  for (let i = 0; i < 1000; i++) {
    const x = a.u32();
    assert.ok(Number.isInteger(x) && x >= 0 && x < 2 ** 32);
    const f = a.float();
    assert.ok(f >= 0 && f < 1);
    const k = a.int(10, 20);
    assert.ok(k >= 10 && k < 20);
  }
  const buf = new Uint8Array(4096);
  a.fill(buf);
  assert.ok(new Set(buf).size > 200);
});
