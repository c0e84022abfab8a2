/**
 * The parity kernels as WebAssembly SIMD code, generated at run time by wasm-emit.ts.
 *
 * Every kernel streams over `len` bytes in three stages: an unrolled v128 loop (16*U bytes per
 * iteration), a single-v128 loop (16 bytes), and a scalar byte loop for the tail, so any length
 * is handled. Pointers are byte addresses into the module's (imported) memory. Buffers may be
 * unaligned (v128.load/store accept any address); buffers given to one call must not partially
 * overlap, but the same buffer may appear twice (each column is read before it is written).
 *
 * RAID-6 multiply-by-2 per byte is mul2(x) = (x << 1) ^ (0x1d if the top bit of x is set).
 * It is computed like Linux's SSE2 code: x + x (i8x16.add, the same bits as i8x16.shl by 1) and
 * a 0x00/0xff top-bit mask from i8x16.lt_s(x, 0) (the same as i8x16.shr_s by 7), which on x86
 * map to single paddb/pcmpgtb instructions, while i8x16.shl/shr_s have no byte-wide x86
 * instruction and get emulated with several.
 *
 * Multiplication by an arbitrary constant c uses two 16-byte nibble tables
 * (see gfNibbleTables): c*x = swizzle(lo, x & 15) ^ swizzle(hi, x >> 4).
 */

import { Wasm, type WasmMemory, type WasmModule } from './wasm-api.js';
import {
  type FunctionBuilder,
  I32,
  type Label,
  ModuleBuilder,
  V128,
  type ValType,
} from './wasm-emit.js';

/** The most sources one xor kernel takes; more are folded in several passes. */
export const XOR_MAX_SRCS = 8;

/** Typed view of the module's exports. Pointers and lengths are i32 (passed as numbers). */
export interface ParityWasm {
  /** xorK(dst, s0..s(K-1), len): dst = s0 ^ ... ^ s(K-1); index K-1 holds the K-source kernel. */
  readonly xor: ReadonlyArray<(...args: number[]) => void>;
  /**
   * pq(tbl, top, p, q, len): Horner over the slot pointer table tbl (u32 per slot, 0 = zero
   * block); slot `top` must be non-zero. p = XOR of slots, q = sum g^k * slot[k].
   */
  readonly pq: (tbl: number, top: number, p: number, q: number, len: number) => void;
  /** q(tbl, top, q, len): the Q half of pq only. */
  readonly q: (tbl: number, top: number, q: number, len: number) => void;
  /** mul(dst, src, len, tab): dst = c * src, tab = 32 bytes of nibble tables for c. */
  readonly mul: (dst: number, src: number, len: number, tab: number) => void;
  /** mulxor(dst, src, len, tab): dst ^= c * src. */
  readonly mulxor: (dst: number, src: number, len: number, tab: number) => void;
  /** recov1(dst, q, len, tab): dst = c * (dst ^ q). */
  readonly recov1: (dst: number, q: number, len: number, tab: number) => void;
  /**
   * recov2(da, db, p, q, len, tabA, tabB): with px = p ^ da, qx = q ^ db:
   * da = A*px ^ B*qx and db = px ^ da (tabA, tabB = nibble tables of A and of B).
   */
  readonly recov2: (
    da: number,
    db: number,
    p: number,
    q: number,
    len: number,
    tabA: number,
    tabB: number,
  ) => void;
}

/** Unroll factors (v128 per iteration of the main loop). */
const XOR_UNROLL = 4;
const PQ_UNROLL = 4;
const MUL_UNROLL = 4;
const RECOV2_UNROLL = 2;

/**
 * Emits `for (; i < lim; i += width) body()` where lim = len rounded down to a multiple of
 * width (a power of two). `i` keeps its value across stages, so stages chain.
 */
function stage(
  f: FunctionBuilder,
  len: number,
  i: number,
  lim: number,
  width: number,
  body: () => void,
): void {
  f.get(len)
    .i32Const(~(width - 1))
    .i32And()
    .set(lim);
  const out: Label = f.block();
  const top: Label = f.loop();
  f.get(i).get(lim).i32GeU().brIf(out);
  body();
  f.get(i).i32Const(width).i32Add().set(i);
  f.br(top);
  f.end();
  f.end();
}

/** Pushes ptr + i. */
function addr(f: FunctionBuilder, ptr: number, i: number): void {
  f.get(ptr).get(i).i32Add();
}

function emitXor(m: ModuleBuilder, k: number): void {
  const params: ValType[] = [I32];
  for (let s = 0; s < k; s++) params.push(I32);
  params.push(I32);
  m.func(`xor${k}`, params, [], (f) => {
    const dst = 0;
    const len = k + 1;
    const i = f.local(I32);
    const lim = f.local(I32);
    const vecBody = (units: number) => () => {
      for (let u = 0; u < units; u++) {
        addr(f, dst, i);
        for (let s = 0; s < k; s++) {
          addr(f, 1 + s, i);
          f.v128Load(u * 16);
          if (s > 0) f.v128Xor();
        }
        f.v128Store(u * 16);
      }
    };
    stage(f, len, i, lim, 16 * XOR_UNROLL, vecBody(XOR_UNROLL));
    stage(f, len, i, lim, 16, vecBody(1));
    stage(f, len, i, lim, 1, () => {
      addr(f, dst, i);
      for (let s = 0; s < k; s++) {
        addr(f, 1 + s, i);
        f.i32Load8U();
        if (s > 0) f.i32Xor();
      }
      f.i32Store8();
    });
  });
}

/** v = mul2(v) for a v128 local, with `zero` and `c1d` locals holding 0 and splat(0x1d). */
function mul2Vec(f: FunctionBuilder, v: number, zero: number, c1d: number): void {
  f.get(v).get(v).i8x16Add();
  f.get(v).get(zero).i8x16LtS().get(c1d).v128And();
  f.v128Xor().set(v);
}

/** v = mul2(v) for an i32 local holding a byte. */
function mul2Byte(f: FunctionBuilder, v: number): void {
  f.get(v).i32Const(1).i32Shl().i32Const(0xff).i32And();
  f.get(v).i32Const(24).i32Shl().i32Const(31).i32ShrS().i32Const(0x1d).i32And();
  f.i32Xor().set(v);
}

/**
 * The Horner loop shared by pq and q: for each column, start from the top slot, then for each
 * lower slot z: q = mul2(q) ^ D_z (and p ^= D_z), skipping the load for zero (null) slots.
 */
function emitSyndrome(m: ModuleBuilder, withP: boolean): void {
  const params: ValType[] = withP ? [I32, I32, I32, I32, I32] : [I32, I32, I32, I32];
  m.func(withP ? 'pq' : 'q', params, [], (f) => {
    const tbl = 0;
    const top = 1;
    const p = withP ? 2 : -1;
    const q = withP ? 3 : 2;
    const len = withP ? 4 : 3;
    const i = f.local(I32);
    const lim = f.local(I32);
    const z = f.local(I32);
    const ptr = f.local(I32);
    const topPtr = f.local(I32);
    const zero = f.local(V128); // locals start zeroed
    const c1d = f.local(V128);
    const pv: number[] = [];
    const qv: number[] = [];
    for (let u = 0; u < PQ_UNROLL; u++) {
      pv.push(f.local(V128));
      qv.push(f.local(V128));
    }
    const d = f.local(V128);
    const pb = f.local(I32);
    const qb = f.local(I32);
    const db = f.local(I32);

    f.v128ConstSplat8(0x1d).set(c1d);
    f.get(tbl).get(top).i32Const(2).i32Shl().i32Add().i32Load().set(topPtr);

    const vecBody = (units: number) => () => {
      for (let u = 0; u < units; u++) {
        addr(f, topPtr, i);
        f.v128Load(u * 16).tee(qv[u]);
        if (withP) f.set(pv[u]);
        else f.drop();
      }
      f.get(top).set(z);
      const out = f.block();
      const lp = f.loop();
      f.get(z).i32Eqz().brIf(out);
      f.get(z).i32Const(1).i32Sub().set(z);
      for (let u = 0; u < units; u++) mul2Vec(f, qv[u], zero, c1d);
      f.get(tbl).get(z).i32Const(2).i32Shl().i32Add().i32Load().tee(ptr);
      f.if_();
      for (let u = 0; u < units; u++) {
        addr(f, ptr, i);
        f.v128Load(u * 16).set(d);
        if (withP) f.get(pv[u]).get(d).v128Xor().set(pv[u]);
        f.get(qv[u]).get(d).v128Xor().set(qv[u]);
      }
      f.end();
      f.br(lp);
      f.end();
      f.end();
      for (let u = 0; u < units; u++) {
        if (withP) {
          addr(f, p, i);
          f.get(pv[u]).v128Store(u * 16);
        }
        addr(f, q, i);
        f.get(qv[u]).v128Store(u * 16);
      }
    };
    stage(f, len, i, lim, 16 * PQ_UNROLL, vecBody(PQ_UNROLL));
    stage(f, len, i, lim, 16, vecBody(1));
    stage(f, len, i, lim, 1, () => {
      addr(f, topPtr, i);
      f.i32Load8U().tee(qb);
      if (withP) f.set(pb);
      else f.drop();
      f.get(top).set(z);
      const out = f.block();
      const lp = f.loop();
      f.get(z).i32Eqz().brIf(out);
      f.get(z).i32Const(1).i32Sub().set(z);
      mul2Byte(f, qb);
      f.get(tbl).get(z).i32Const(2).i32Shl().i32Add().i32Load().tee(ptr);
      f.if_();
      addr(f, ptr, i);
      f.i32Load8U().set(db);
      if (withP) f.get(pb).get(db).i32Xor().set(pb);
      f.get(qb).get(db).i32Xor().set(qb);
      f.end();
      f.br(lp);
      f.end();
      f.end();
      if (withP) {
        addr(f, p, i);
        f.get(pb).i32Store8();
      }
      addr(f, q, i);
      f.get(qb).i32Store8();
    });
  });
}

/** Pushes c*x for the v128 local x, given table locals lo/hi and the 0x0f mask local. */
function mulVec(f: FunctionBuilder, x: number, lo: number, hi: number, m0f: number): void {
  f.get(lo).get(x).get(m0f).v128And().i8x16Swizzle();
  f.get(hi).get(x).i32Const(4).i8x16ShrU().i8x16Swizzle();
  f.v128Xor();
}

/** Pushes c*x for the i32 local x (a byte), with the nibble tables at address `tab`. */
function mulByte(f: FunctionBuilder, x: number, tab: number): void {
  f.get(tab).get(x).i32Const(15).i32And().i32Add().i32Load8U(0);
  f.get(tab).get(x).i32Const(4).i32ShrU().i32Add().i32Load8U(16);
  f.i32Xor();
}

/** mul / mulxor / recov1: dst = c*src, dst ^= c*src, dst = c*(dst ^ src). */
function emitMulFamily(m: ModuleBuilder, kind: 'mul' | 'mulxor' | 'recov1'): void {
  m.func(kind, [I32, I32, I32, I32], [], (f) => {
    const dst = 0;
    const src = 1;
    const len = 2;
    const tab = 3;
    const i = f.local(I32);
    const lim = f.local(I32);
    const lo = f.local(V128);
    const hi = f.local(V128);
    const m0f = f.local(V128);
    const x = f.local(V128);
    const xb = f.local(I32);
    f.get(tab).v128Load(0).set(lo);
    f.get(tab).v128Load(16).set(hi);
    f.v128ConstSplat8(0x0f).set(m0f);
    const vecBody = (units: number) => () => {
      for (let u = 0; u < units; u++) {
        addr(f, dst, i);
        addr(f, src, i);
        f.v128Load(u * 16);
        if (kind === 'recov1') {
          addr(f, dst, i);
          f.v128Load(u * 16).v128Xor();
        }
        f.set(x);
        mulVec(f, x, lo, hi, m0f);
        if (kind === 'mulxor') {
          addr(f, dst, i);
          f.v128Load(u * 16).v128Xor();
        }
        f.v128Store(u * 16);
      }
    };
    stage(f, len, i, lim, 16 * MUL_UNROLL, vecBody(MUL_UNROLL));
    stage(f, len, i, lim, 16, vecBody(1));
    stage(f, len, i, lim, 1, () => {
      addr(f, dst, i);
      addr(f, src, i);
      f.i32Load8U();
      if (kind === 'recov1') {
        addr(f, dst, i);
        f.i32Load8U().i32Xor();
      }
      f.set(xb);
      mulByte(f, xb, tab);
      if (kind === 'mulxor') {
        addr(f, dst, i);
        f.i32Load8U().i32Xor();
      }
      f.i32Store8();
    });
  });
}

function emitRecov2(m: ModuleBuilder): void {
  m.func('recov2', [I32, I32, I32, I32, I32, I32, I32], [], (f) => {
    const da = 0;
    const db = 1;
    const p = 2;
    const q = 3;
    const len = 4;
    const tabA = 5;
    const tabB = 6;
    const i = f.local(I32);
    const lim = f.local(I32);
    const aLo = f.local(V128);
    const aHi = f.local(V128);
    const bLo = f.local(V128);
    const bHi = f.local(V128);
    const m0f = f.local(V128);
    const px = f.local(V128);
    const qx = f.local(V128);
    const r = f.local(V128);
    const pb = f.local(I32);
    const qb = f.local(I32);
    const rb = f.local(I32);
    f.get(tabA).v128Load(0).set(aLo);
    f.get(tabA).v128Load(16).set(aHi);
    f.get(tabB).v128Load(0).set(bLo);
    f.get(tabB).v128Load(16).set(bHi);
    f.v128ConstSplat8(0x0f).set(m0f);
    const vecBody = (units: number) => () => {
      for (let u = 0; u < units; u++) {
        addr(f, p, i);
        f.v128Load(u * 16);
        addr(f, da, i);
        f.v128Load(u * 16)
          .v128Xor()
          .set(px);
        addr(f, q, i);
        f.v128Load(u * 16);
        addr(f, db, i);
        f.v128Load(u * 16)
          .v128Xor()
          .set(qx);
        mulVec(f, px, aLo, aHi, m0f);
        mulVec(f, qx, bLo, bHi, m0f);
        f.v128Xor().set(r);
        addr(f, da, i);
        f.get(r).v128Store(u * 16);
        addr(f, db, i);
        f.get(r)
          .get(px)
          .v128Xor()
          .v128Store(u * 16);
      }
    };
    stage(f, len, i, lim, 16 * RECOV2_UNROLL, vecBody(RECOV2_UNROLL));
    stage(f, len, i, lim, 16, vecBody(1));
    stage(f, len, i, lim, 1, () => {
      addr(f, p, i);
      f.i32Load8U();
      addr(f, da, i);
      f.i32Load8U().i32Xor().set(pb);
      addr(f, q, i);
      f.i32Load8U();
      addr(f, db, i);
      f.i32Load8U().i32Xor().set(qb);
      mulByte(f, pb, tabA);
      mulByte(f, qb, tabB);
      f.i32Xor().set(rb);
      addr(f, da, i);
      f.get(rb).i32Store8();
      addr(f, db, i);
      f.get(rb).get(pb).i32Xor().i32Store8();
    });
  });
}

/** The module bytes (imports `env.memory`). */
export function buildParityModuleBytes(): Uint8Array {
  const m = new ModuleBuilder();
  m.importMemory('env', 'memory', 1);
  for (let k = 1; k <= XOR_MAX_SRCS; k++) emitXor(m, k);
  emitSyndrome(m, true);
  emitSyndrome(m, false);
  emitMulFamily(m, 'mul');
  emitMulFamily(m, 'mulxor');
  emitMulFamily(m, 'recov1');
  emitRecov2(m);
  return m.toBytes();
}

let compiled: WasmModule | null = null;

/** The compiled module (compiled once per process, instantiated once per arena). */
export function parityModule(): WasmModule {
  if (compiled === null) compiled = new Wasm.Module(buildParityModuleBytes());
  return compiled;
}

/** Instantiates the kernels against `memory`. */
export function instantiateParity(memory: WasmMemory): ParityWasm {
  const inst = new Wasm.Instance(parityModule(), { env: { memory } });
  const e = inst.exports as Record<string, (...args: number[]) => void>;
  const xor: Array<(...args: number[]) => void> = [];
  for (let k = 1; k <= XOR_MAX_SRCS; k++) xor.push(e[`xor${k}`]);
  return {
    xor,
    pq: e.pq,
    q: e.q,
    mul: e.mul,
    mulxor: e.mulxor,
    recov1: e.recov1,
    recov2: e.recov2,
  };
}
