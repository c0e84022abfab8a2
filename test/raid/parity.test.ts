import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  genP,
  genPQ,
  gfInv,
  gfMul,
  gfMulBlock,
  gfMulXorBlock,
  gfPow2,
  ParityKernels,
  parityArena,
  recoverOneDataFromP,
  recoverOneDataFromQ,
  recoverTwoData,
  WasmParityArena,
  xorBlocks,
  xorInto,
} from '../../src/raid/parity/index.js';

// ---------------------------------------------------------------------------------------------
// Slow, obviously correct reference, independent of the implementation: exp/log tables built
// from the polynomial by repeated doubling, cross-checked against shift-and-add multiplication.

const POLY = 0x11d;
const REF_EXP: number[] = [];
const REF_LOG: number[] = new Array(256).fill(-1);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    REF_EXP.push(x);
    REF_LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= POLY;
  }
}

/** Carry-less "peasant" multiplication modulo the polynomial. */
function peasantMul(a: number, b: number): number {
  let r = 0;
  while (b !== 0) {
    if (b & 1) r ^= a;
    a <<= 1;
    if (a & 0x100) a ^= POLY;
    b >>= 1;
  }
  return r;
}

function refMul(a: number, b: number): number {
  if (a === 0 || b === 0) return 0;
  return REF_EXP[(REF_LOG[a] + REF_LOG[b]) % 255];
}

function refPQ(
  data: ReadonlyArray<Uint8Array | null>,
  len: number,
): { p: Uint8Array; q: Uint8Array } {
  const p = new Uint8Array(len);
  const q = new Uint8Array(len);
  data.forEach((d, k) => {
    if (d === null) return;
    const g = REF_EXP[k % 255];
    for (let i = 0; i < len; i++) {
      p[i] ^= d[i];
      q[i] ^= refMul(g, d[i]);
    }
  });
  return { p, q };
}

// ---------------------------------------------------------------------------------------------
// Buffers: from the arena (fast path) or plain (copying path); arena ones are freed after use.

const arena = parityArena();

class Buffers {
  private readonly owned: Uint8Array[] = [];
  make(len: number, inArena: boolean): Uint8Array {
    if (!inArena) return new Uint8Array(len);
    const b = arena.alloc(len);
    this.owned.push(b);
    return b;
  }

  from(src: Uint8Array, inArena: boolean): Uint8Array {
    const b = this.make(src.length, inArena);
    b.set(src);
    return b;
  }

  release(): void {
    for (const b of this.owned) arena.free(b);
    this.owned.length = 0;
  }
}

function withBuffers<T>(fn: (bufs: Buffers) => T): T {
  const bufs = new Buffers();
  try {
    return fn(bufs);
  } finally {
    bufs.release();
  }
}

function randomBytes(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  let x = (seed * 2654435761 + 0x9e3779b9) >>> 0;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** Block lengths: mostly multiples of 512 (what md uses), plus odd lengths for the tails. */
const lengthArb = fc.oneof(
  fc.integer({ min: 1, max: 16 }).map((n) => n * 512),
  fc.integer({ min: 0, max: 700 }),
);

/** A stripe: slot contents (null = zero block) and where each buffer lives. */
const stripeArb = (maxSlots: number, len: fc.Arbitrary<number>) =>
  fc
    .record({
      slots: fc.integer({ min: 1, max: maxSlots }),
      len,
      seed: fc.integer({ min: 1, max: 1 << 30 }),
      nullMask: fc.array(fc.boolean(), { minLength: 32, maxLength: 32 }),
      arenaMask: fc.array(fc.boolean(), { minLength: 34, maxLength: 34 }),
      nullRate: fc.integer({ min: 0, max: 3 }),
    })
    .map((r) => ({
      ...r,
      // nullRate 0: no nulls; otherwise use the mask.
      isNull: (k: number) => r.nullRate !== 0 && r.nullMask[k] === true,
      inArena: (k: number) => r.arenaMask[k] === true,
    }));

type Stripe = {
  slots: number;
  len: number;
  seed: number;
  isNull: (k: number) => boolean;
  inArena: (k: number) => boolean;
};

function makeData(s: Stripe, bufs: Buffers): Array<Uint8Array | null> {
  const data: Array<Uint8Array | null> = [];
  for (let k = 0; k < s.slots; k++) {
    data.push(s.isNull(k) ? null : bufs.from(randomBytes(s.len, s.seed + k), s.inArena(k)));
  }
  return data;
}

// ---------------------------------------------------------------------------------------------

describe('GF(2^8) arithmetic', () => {
  test('reference tables agree with shift-and-add multiplication', () => {
    for (let a = 0; a < 256; a++)
      for (let b = 0; b < 256; b++) assert.equal(refMul(a, b), peasantMul(a, b));
  });

  test('gfMul matches the reference on all 65536 pairs', () => {
    for (let a = 0; a < 256; a++) {
      for (let b = 0; b < 256; b++) {
        if (gfMul(a, b) !== refMul(a, b)) assert.fail(`gfMul(${a}, ${b})`);
      }
    }
  });

  test('gfPow2 known values and period', () => {
    // g = 2 is x; x^8 = x^4 + x^3 + x^2 + 1 modulo 0x11d, i.e. 0x1d.
    assert.equal(gfPow2(0), 0x01);
    assert.equal(gfPow2(1), 0x02);
    assert.equal(gfPow2(7), 0x80);
    assert.equal(gfPow2(8), 0x1d);
    assert.equal(gfPow2(9), 0x3a); // 0x1d << 1, no overflow
    assert.equal(gfPow2(12), 0xcd); // 0x1d * 16 = 0x1d0 -> 0x1d0 ^ 0x11d = 0xcd
    assert.equal(gfPow2(255), 1);
    assert.equal(gfPow2(-1), 0x8e); // 2 * 0x8e = 0x11c, ^ 0x11d = 1
    for (let k = 0; k < 600; k++) assert.equal(gfPow2(k), REF_EXP[k % 255]);
    const seen = new Set<number>();
    for (let k = 0; k < 255; k++) seen.add(gfPow2(k));
    assert.equal(seen.size, 255, 'g generates all 255 non-zero elements');
  });

  test('inverse: a * gfInv(a) = 1 for every non-zero a', () => {
    for (let a = 1; a < 256; a++) assert.equal(refMul(a, gfInv(a)), 1);
    assert.throws(() => gfInv(0));
  });

  test('field laws (property)', () => {
    const byte = fc.integer({ min: 0, max: 255 });
    fc.assert(
      fc.property(byte, byte, byte, (a, b, c) => {
        assert.equal(gfMul(a, b), gfMul(b, a));
        assert.equal(gfMul(gfMul(a, b), c), gfMul(a, gfMul(b, c)));
        assert.equal(gfMul(a, b ^ c), gfMul(a, b) ^ gfMul(a, c));
        assert.equal(gfMul(a, 1), a);
        assert.equal(gfMul(a, 0), 0);
      }),
    );
  });
});

describe('known-answer vector (derived by hand)', () => {
  // Three data slots, one byte each: D0 = 0x01, D1 = 0x80, D2 = 0x03.
  //   P = 0x01 ^ 0x80 ^ 0x03 = 0x82
  //   Q = g^0*D0 ^ g^1*D1 ^ g^2*D2
  //     g^0*0x01 = 0x01
  //     g^1*0x80 = 0x80 << 1 = 0x100, top bit carried out -> reduce by 0x11d: 0x100 ^ 0x11d = 0x1d
  //     g^2*0x03 = 4 * 0x03 = 0x0c (no overflow)
  //   Q = 0x01 ^ 0x1d ^ 0x0c = 0x10
  // Horner (how the kernel computes it): q = D2 = 0x03; q = 2q ^ D1 = 0x06 ^ 0x80 = 0x86;
  //   q = 2q ^ D0: 2*0x86 = 0x10c -> ^0x11d = 0x11, ^ 0x01 = 0x10. Same answer.
  // Second column, all 0xff: P = 0xff ^ 0xff ^ 0xff = 0xff;
  //   2*0xff = 0x1fe ^ 0x11d = 0xe3;  4*0xff = 2*0xe3 = 0x1c6 ^ 0x11d = 0xdb;
  //   Q = 0xff ^ 0xe3 ^ 0xdb = 0x1c ^ 0xdb = 0xc7.
  const cols = [
    { d: [0x01, 0x80, 0x03], p: 0x82, q: 0x10 },
    { d: [0xff, 0xff, 0xff], p: 0xff, q: 0xc7 },
  ];

  for (const [len, inArena] of [
    [1, false],
    [2, true],
    [512, false],
    [4096, true],
  ] as const) {
    test(`length ${len}, ${inArena ? 'arena' : 'plain'} buffers`, () => {
      withBuffers((bufs) => {
        const data = [0, 1, 2].map((k) => {
          const b = bufs.make(len, inArena);
          for (let i = 0; i < len; i++) b[i] = cols[i % 2].d[k];
          return b;
        });
        const p = bufs.make(len, inArena);
        const q = bufs.make(len, inArena);
        genPQ(data, p, q);
        for (let i = 0; i < len; i++) {
          assert.equal(p[i], cols[i % 2].p, `P byte ${i}`);
          assert.equal(q[i], cols[i % 2].q, `Q byte ${i}`);
        }
      });
    });
  }
});

describe('P and P+Q generation', () => {
  test('genP / genPQ equal the reference (random stripes, nulls, arena and plain buffers)', () => {
    fc.assert(
      fc.property(stripeArb(30, lengthArb), (s) =>
        withBuffers((bufs) => {
          const data = makeData(s, bufs);
          const ref = refPQ(data, s.len);
          const p = bufs.make(s.len, s.inArena(32));
          const q = bufs.make(s.len, s.inArena(33));
          p.fill(0xa5); // stale content must not leak into the result
          q.fill(0x5a);
          genPQ(data, p, q);
          assert.deepEqual(p, ref.p);
          assert.deepEqual(q, ref.q);
          const p2 = bufs.make(s.len, !s.inArena(32));
          p2.fill(0x33);
          genP(data, p2);
          assert.deepEqual(p2, ref.p);
        }),
      ),
      { numRuns: 150 },
    );
  });

  test('all-null stripe gives zero P and Q', () => {
    const p = new Uint8Array(1024).fill(7);
    const q = new Uint8Array(1024).fill(7);
    genPQ([null, null, null], p, q);
    assert.ok(p.every((x) => x === 0) && q.every((x) => x === 0));
    genP([null], p.fill(1));
    assert.ok(p.every((x) => x === 0));
  });

  test('arena and copying paths give identical results on large multi-chunk blocks', () => {
    withBuffers((bufs) => {
      const len = 300 * 1024 + 123; // several scratch chunks, odd tail
      const plain: Array<Uint8Array | null> = [];
      for (let k = 0; k < 12; k++) plain.push(k === 5 ? null : randomBytes(len, 1000 + k));
      const inArena = plain.map((d) => (d === null ? null : bufs.from(d, true)));
      const p1 = new Uint8Array(len);
      const q1 = new Uint8Array(len);
      const p2 = bufs.make(len, true);
      const q2 = bufs.make(len, true);
      genPQ(plain, p1, q1);
      genPQ(inArena, p2, q2);
      assert.deepEqual(p1, p2);
      assert.deepEqual(q1, q2);
      const ref = refPQ(plain, len);
      assert.deepEqual(p1, ref.p);
      assert.deepEqual(q1, ref.q);
    });
  });

  test('xorBlocks / xorInto with 1..30 sources', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 30 }),
        lengthArb,
        fc.integer({ min: 1, max: 1 << 30 }),
        fc.array(fc.boolean(), { minLength: 31, maxLength: 31 }),
        (n, len, seed, where) =>
          withBuffers((bufs) => {
            const srcs: Uint8Array[] = [];
            for (let k = 0; k < n; k++) srcs.push(bufs.from(randomBytes(len, seed + k), where[k]));
            const want = new Uint8Array(len);
            for (const s of srcs) for (let i = 0; i < len; i++) want[i] ^= s[i];
            const dst = bufs.make(len, where[30]);
            dst.fill(0xee);
            xorBlocks(dst, srcs);
            assert.deepEqual(dst, want);
            // xorInto: dst ^= src twice gives dst back; dst ^= dst gives zero.
            const src0 = srcs[0];
            xorInto(dst, src0);
            xorInto(dst, src0);
            assert.deepEqual(dst, want);
            xorInto(dst, dst);
            assert.ok(dst.every((x) => x === 0));
          }),
      ),
      { numRuns: 120 },
    );
  });
});

describe('GF multiply-by-constant blocks', () => {
  test('gfMulBlock / gfMulXorBlock equal the reference (also in place)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 255 }),
        lengthArb,
        fc.integer({ min: 1, max: 1 << 30 }),
        fc.boolean(),
        fc.boolean(),
        (c, len, seed, srcArena, dstArena) =>
          withBuffers((bufs) => {
            const src = bufs.from(randomBytes(len, seed), srcArena);
            const base = randomBytes(len, seed + 1);
            const mulRef = src.map((x) => refMul(c, x));
            const dst = bufs.make(len, dstArena);
            gfMulBlock(dst, src, c);
            assert.deepEqual(dst, mulRef);
            dst.set(base);
            gfMulXorBlock(dst, src, c);
            assert.deepEqual(
              dst,
              base.map((x, i) => x ^ mulRef[i]),
            );
            const inPlace = bufs.from(src, dstArena);
            gfMulBlock(inPlace, inPlace, c);
            assert.deepEqual(inPlace, mulRef);
          }),
      ),
      { numRuns: 150 },
    );
  });
});

describe('recovery', () => {
  /**
   * Every erasure of one or two blocks among the live data slots, P and Q is rebuilt exactly,
   * starting from garbage in the lost buffers.
   */
  test('every 1- and 2-erasure combination is recovered exactly', () => {
    fc.assert(
      fc.property(
        stripeArb(30, fc.oneof(fc.constantFrom(512, 1024), fc.integer({ min: 1, max: 200 }))),
        (s) =>
          withBuffers((bufs) => {
            const data = makeData(s, bufs);
            const p = bufs.make(s.len, s.inArena(32));
            const q = bufs.make(s.len, s.inArena(33));
            genPQ(data, p, q);
            const orig = data.map((d) => (d === null ? null : Uint8Array.from(d)));
            const origP = Uint8Array.from(p);
            const origQ = Uint8Array.from(q);
            const live = data.flatMap((d, k) => (d === null ? [] : [k]));
            const P = -1;
            const Q = -2;
            const blocks = [...live, P, Q];
            const trash = (k: number, fillByte: number): void => {
              if (k === P) p.fill(fillByte);
              else if (k === Q) q.fill(fillByte);
              else data[k]!.fill(fillByte);
            };
            const check = (what: string): void => {
              for (const k of live) assert.deepEqual(data[k], orig[k], `${what}: slot ${k}`);
              assert.deepEqual(p, origP, `${what}: P`);
              assert.deepEqual(q, origQ, `${what}: Q`);
            };
            const scratchP = new Uint8Array(s.len);
            for (let i = 0; i < blocks.length; i++) {
              for (let j = i; j < blocks.length; j++) {
                const x = blocks[i];
                const y = blocks[j];
                trash(x, 0xde);
                if (y !== x) trash(y, 0xad);
                const what = `lost ${x}${y !== x ? ` and ${y}` : ''} of ${s.slots} slots, len ${s.len}`;
                if (x >= 0 && y === x) {
                  recoverOneDataFromP(data, x, p);
                } else if (x >= 0 && y >= 0) {
                  recoverTwoData(data, y, x, p, q); // order of a and b must not matter
                } else if (x >= 0 && y === P) {
                  recoverOneDataFromQ(data, x, q);
                  genP(data, p);
                } else if (x >= 0 && y === Q) {
                  recoverOneDataFromP(data, x, p);
                  genPQ(data, scratchP, q);
                } else if (x === P && y === P) {
                  genP(data, p);
                } else {
                  // Q alone, or P and Q
                  genPQ(data, x === P ? p : scratchP, q);
                }
                check(what);
              }
            }
          }),
      ),
      { numRuns: 40 },
    );
  });

  test('one data block from Q alone (P intact) matches', () => {
    withBuffers((bufs) => {
      const len = 4096 + 7;
      const data: Array<Uint8Array | null> = [];
      for (let k = 0; k < 20; k++)
        data.push(k % 7 === 3 ? null : bufs.from(randomBytes(len, 50 + k), k % 2 === 0));
      const p = bufs.make(len, true);
      const q = new Uint8Array(len);
      genPQ(data, p, q);
      for (const x of [0, 1, 19]) {
        const want = Uint8Array.from(data[x]!);
        data[x]!.fill(0x77);
        recoverOneDataFromQ(data, x, q);
        assert.deepEqual(data[x], want);
      }
    });
  });

  test('only the lost slots are live (all others null)', () => {
    const len = 1536;
    const a = randomBytes(len, 1);
    const b = randomBytes(len, 2);
    const data: Array<Uint8Array | null> = [null, Uint8Array.from(a), null, Uint8Array.from(b)];
    const p = new Uint8Array(len);
    const q = new Uint8Array(len);
    genPQ(data, p, q);
    data[1]!.fill(0);
    data[3]!.fill(0);
    recoverTwoData(data, 1, 3, p, q);
    assert.deepEqual(data[1], a);
    assert.deepEqual(data[3], b);
    data[3]!.fill(9);
    const data1 = [null, null, null, data[3]];
    const q1 = new Uint8Array(len);
    genPQ([null, null, null, b], new Uint8Array(len), q1);
    recoverOneDataFromQ(data1, 3, q1);
    assert.deepEqual(data1[3], b);
  });

  test('argument checks', () => {
    const z = new Uint8Array(512);
    assert.throws(() => recoverTwoData([z, z], 0, 0, z, z), /differ/);
    assert.throws(() => recoverOneDataFromP([null, z], 0, z), /needs a buffer/);
    assert.throws(() => genPQ([new Uint8Array(1024)], z, z), /512 bytes/);
    assert.throws(() => xorBlocks(z, []), /at least one/);
  });
});

describe('arena', () => {
  test('alloc is zeroed, 64-byte aligned, owned; free makes room again', () => {
    const a = new WasmParityArena({ capacityBytes: 1024 * 1024, scratchBytes: 128 * 1024 });
    const heap = a.capacityBytes - a.heapStart;
    const x = a.alloc(1000);
    const y = a.alloc(512);
    assert.equal(x.byteOffset % 64, 0);
    assert.equal(y.byteOffset % 64, 0);
    assert.equal(x.length, 1000);
    assert.ok(x.every((v) => v === 0));
    assert.ok(a.owns(x) && a.owns(y));
    assert.ok(!a.owns(new Uint8Array(512)));
    assert.ok(!parityArena().owns(x), 'another arena does not own it');
    x.fill(0xff);
    a.free(x);
    assert.throws(() => a.free(x), /double free/);
    const x2 = a.alloc(1000);
    assert.ok(
      x2.every((v) => v === 0),
      'reused memory is zeroed',
    );
    a.free(x2);
    a.free(y);
    assert.equal(a.allocatedBytes, 0);
    // After everything is freed the free blocks coalesce back into one: the whole heap fits.
    const all = a.alloc(heap);
    assert.equal(all.length, heap);
    assert.throws(
      () => a.alloc(64),
      (e: unknown) => (e as { code?: string }).code === 'ENOSPC',
    );
    a.free(all);
  });

  test('random alloc/free sequences never overlap and coalesce fully', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 40000 })), { maxLength: 80 }),
        (ops) => {
          const a = new WasmParityArena({ capacityBytes: 1024 * 1024, scratchBytes: 128 * 1024 });
          const live: Uint8Array[] = [];
          for (const [doAlloc, n] of ops) {
            if (doAlloc || live.length === 0) {
              try {
                live.push(a.alloc(n));
              } catch {
                // full: fine
              }
            } else {
              a.free(live.splice(n % live.length, 1)[0]);
            }
            const spans = live
              .map((b) => [b.byteOffset, b.byteOffset + b.length] as const)
              .sort((u, v) => u[0] - v[0]);
            for (let i = 1; i < spans.length; i++)
              assert.ok(spans[i - 1][1] <= spans[i][0], 'overlap');
          }
          for (const b of live) a.free(b);
          assert.equal(a.allocatedBytes, 0);
          a.free(a.alloc(a.capacityBytes - a.heapStart));
        },
      ),
      { numRuns: 60 },
    );
  });

  test('a separate small arena runs the same kernels (small scratch, many chunks)', () => {
    const a = new WasmParityArena({ capacityBytes: 4 * 1024 * 1024, scratchBytes: 128 * 1024 });
    const k = new ParityKernels(a);
    const len = 200 * 1024 + 512;
    const data: Array<Uint8Array | null> = [];
    for (let i = 0; i < 6; i++) {
      const d = randomBytes(len, 70 + i);
      if (i % 2 === 0) {
        const b = a.alloc(len);
        b.set(d);
        data.push(b);
      } else {
        data.push(d);
      }
    }
    const p = new Uint8Array(len);
    const q = a.alloc(len);
    k.genPQ(data, p, q);
    const ref = refPQ(data, len);
    assert.deepEqual(p, ref.p);
    assert.deepEqual(q, ref.q);
    const lost0 = Uint8Array.from(data[0]!);
    const lost3 = Uint8Array.from(data[3]!);
    data[0]!.fill(1);
    data[3]!.fill(2);
    k.recoverTwoData(data, 0, 3, p, q);
    assert.deepEqual(data[0], lost0);
    assert.deepEqual(data[3], lost3);
  });
});
