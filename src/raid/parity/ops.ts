/**
 * The parity operations (P, Q, multiply-by-constant, recovery) on top of the wasm kernels.
 *
 * Every operation runs in one of two ways, with identical results:
 *  - fast path: all buffers are views into the arena heap; the kernel runs on them in place;
 *  - copying path: buffers outside the arena are copied through the arena's scratch area in
 *    chunks (inputs in before, outputs out after each chunk); arena buffers stay in place.
 *
 * RAID-6 math (GF(2^8), polynomial 0x11d, g = 2), with slots k = 0..n-1:
 *   P = XOR_k D_k,  Q = XOR_k g^k * D_k  (Horner: Q = (..((D_top)*g ^ D_top-1)*g ..)*g ^ D_0)
 * One data slot x lost, P present:  D_x = P ^ XOR_{k != x} D_k
 * One data slot x and P lost:       D_x = g^-x * (Q ^ Q'), Q' = Q of the slots without x
 * Two data slots a, b lost:         with Pxy = P ^ P', Qxy = Q ^ Q' (P', Q' without a and b),
 *   Pxy = D_a ^ D_b and Qxy = g^a D_a ^ g^b D_b, so
 *   D_a = (g^b * Pxy ^ Qxy) / (g^a ^ g^b) = A*Pxy ^ B*Qxy,  D_b = Pxy ^ D_a.
 */

import { assert } from '../../errors.js';
import {
  defaultParityArena,
  NIBBLE_TABLES_ADDR,
  SLOT_TABLE_ADDR,
  SLOT_TABLE_ENTRIES,
  type WasmParityArena,
} from './arena.js';
import { gfInv, gfMul, gfPow2 } from './gf.js';
import { type ParityWasm, XOR_MAX_SRCS } from './kernels.js';

const IN = 1;
const OUT = 2;
const INOUT = IN | OUT;

/** Upper bound of one chunk of the copying path (keeps a chunk's working set cache-sized). */
const MAX_COPY_CHUNK_BYTES = 64 * 1024;
/**
 * Page offset of the scratch chunks. Large user buffers usually start at page offset 0 or 16,
 * and memcpy between a source and a destination whose addresses are equal modulo 4096 (or
 * the destination just above) runs at a fraction of its speed on some CPUs (4K aliasing of
 * the forward `rep movsb` copy; measured here: 2 GB/s instead of 30). Half a page away avoids
 * that for the common cases.
 */
const SCRATCH_PAGE_SKEW_BYTES = 2048;
/** Strip size when more than XOR_MAX_SRCS sources are folded in several passes. */
const XOR_STRIP_BYTES = 16 * 1024;
/** RAID-6 slots must have distinct coefficients g^k, and g has order 255. */
export const RAID6_MAX_SLOTS = 255;

type Kernel = (ptrs: readonly number[], len: number) => void;

function nibbleTable(c: number): number {
  return NIBBLE_TABLES_ADDR + 32 * c;
}

function sameLength(bufs: ReadonlyArray<Uint8Array | null>, len: number, what: string): void {
  for (const b of bufs) {
    if (b !== null)
      assert(b.length === len, `${what}: all blocks must be ${len} bytes, got ${b.length}`);
  }
}

function checkSlot(data: ReadonlyArray<Uint8Array | null>, k: number, what: string): Uint8Array {
  assert(Number.isInteger(k) && k >= 0 && k < data.length, `${what}: slot ${k} out of range`);
  const buf = data[k];
  assert(buf !== null && buf !== undefined, `${what}: slot ${k} needs a buffer to fill`);
  return buf;
}

/** One xor kernel call of `k` sources with explicit arguments (no spread on the hot path). */
function callXor(
  w: ParityWasm,
  k: number,
  dst: number,
  s: readonly number[],
  o: number,
  len: number,
): void {
  const f = w.xor[k - 1];
  switch (k) {
    case 1:
      f(dst, s[o], len);
      return;
    case 2:
      f(dst, s[o], s[o + 1], len);
      return;
    case 3:
      f(dst, s[o], s[o + 1], s[o + 2], len);
      return;
    case 4:
      f(dst, s[o], s[o + 1], s[o + 2], s[o + 3], len);
      return;
    case 5:
      f(dst, s[o], s[o + 1], s[o + 2], s[o + 3], s[o + 4], len);
      return;
    case 6:
      f(dst, s[o], s[o + 1], s[o + 2], s[o + 3], s[o + 4], s[o + 5], len);
      return;
    case 7:
      f(dst, s[o], s[o + 1], s[o + 2], s[o + 3], s[o + 4], s[o + 5], s[o + 6], len);
      return;
    case 8:
      f(dst, s[o], s[o + 1], s[o + 2], s[o + 3], s[o + 4], s[o + 5], s[o + 6], s[o + 7], len);
      return;
    default:
      assert(false, `xor kernel arity ${k}`);
  }
}

/** The parity operations bound to one arena (and its kernel instance). */
export class ParityKernels {
  private readonly w: ParityWasm;
  private readonly mem: Uint8Array;
  private readonly slotTable: Uint32Array;

  constructor(readonly arena: WasmParityArena) {
    this.w = arena.wasm;
    this.mem = arena.mem;
    this.slotTable = new Uint32Array(arena.memory.buffer, SLOT_TABLE_ADDR, SLOT_TABLE_ENTRIES);
  }

  /**
   * Runs `kernel` over buffers of `len` bytes: directly when all are arena buffers, else in
   * chunks with the non-arena ones staged in scratch. `ptrs[i]` is the address of bufs[i]'s
   * current chunk.
   */
  private run(
    bufs: readonly Uint8Array[],
    roles: readonly number[],
    len: number,
    kernel: Kernel,
  ): void {
    if (len === 0) return;
    const n = bufs.length;
    const base: number[] = new Array(n);
    let staged = 0;
    for (let i = 0; i < n; i++) {
      const a = this.arena.addressOf(bufs[i]);
      base[i] = a;
      if (a < 0) staged++;
    }
    if (staged === 0) {
      kernel(base, len);
      return;
    }
    const per = Math.floor((this.arena.scratchBytes - 4096) / staged);
    assert(per >= 64, `too many buffers (${staged}) for the parity scratch area`);
    // Multiples of 4096 keep every chunk at the same page offset (the skew); 64 at the least.
    const chunk = Math.min(
      per >= 4096 ? per - (per % 4096) : per - (per % 64),
      MAX_COPY_CHUNK_BYTES,
    );
    const slot: number[] = new Array(n);
    let next = this.arena.scratchAddr + SCRATCH_PAGE_SKEW_BYTES;
    for (let i = 0; i < n; i++) {
      if (base[i] < 0) {
        slot[i] = next;
        next += chunk;
      }
    }
    const cur: number[] = new Array(n);
    const mem = this.mem;
    for (let off = 0; off < len; off += chunk) {
      const m = Math.min(chunk, len - off);
      for (let i = 0; i < n; i++) {
        if (base[i] >= 0) {
          cur[i] = base[i] + off;
        } else {
          cur[i] = slot[i];
          if (roles[i] & IN) mem.set(bufs[i].subarray(off, off + m), slot[i]);
        }
      }
      kernel(cur, m);
      for (let i = 0; i < n; i++) {
        if (base[i] < 0 && roles[i] & OUT) bufs[i].set(mem.subarray(slot[i], slot[i] + m), off);
      }
    }
  }

  /** dst = XOR of the sources at ptrs[1..k] (k >= 1), in strips of passes of <= 8 sources. */
  private xorKernel(k: number): Kernel {
    const w = this.w;
    if (k <= XOR_MAX_SRCS) return (ptrs, len) => callXor(w, k, ptrs[0], ptrs, 1, len);
    return (ptrs, len) => {
      for (let off = 0; off < len; off += XOR_STRIP_BYTES) {
        const m = Math.min(XOR_STRIP_BYTES, len - off);
        const s: number[] = new Array(k + 1);
        for (let i = 0; i <= k; i++) s[i] = ptrs[i] + off;
        callXor(w, XOR_MAX_SRCS, s[0], s, 1, m);
        let done = XOR_MAX_SRCS;
        while (done < k) {
          // Fold the next <= 7 sources together with dst itself.
          const take = Math.min(XOR_MAX_SRCS - 1, k - done);
          s[done] = s[0]; // slot just before the group: reuse as the dst input
          callXor(w, take + 1, s[0], s, done, m);
          done += take;
        }
      }
    };
  }

  xorBlocks(dst: Uint8Array, srcs: ReadonlyArray<Uint8Array>): void {
    assert(srcs.length >= 1, 'xorBlocks needs at least one source');
    sameLength(srcs, dst.length, 'xorBlocks');
    const roles: number[] = [OUT];
    for (let i = 0; i < srcs.length; i++) roles.push(IN);
    this.run([dst, ...srcs], roles, dst.length, this.xorKernel(srcs.length));
  }

  xorInto(dst: Uint8Array, src: Uint8Array): void {
    assert(src.length === dst.length, `xorInto: lengths differ (${dst.length} vs ${src.length})`);
    const w = this.w;
    this.run([dst, src], [INOUT, IN], dst.length, (p, len) => w.xor[1](p[0], p[0], p[1], len));
  }

  genP(data: ReadonlyArray<Uint8Array | null>, p: Uint8Array): void {
    sameLength(data, p.length, 'genP');
    const srcs: Uint8Array[] = [];
    for (const d of data) if (d !== null) srcs.push(d);
    if (srcs.length === 0) p.fill(0);
    else this.xorBlocks(p, srcs);
  }

  /**
   * Runs the syndrome kernel (pq when p is given, else q) over the slots of `data` with the
   * slots in `skip` treated as zero blocks. Outputs first in bufs, then the live data slots.
   */
  private syndrome(
    data: ReadonlyArray<Uint8Array | null>,
    skip: number,
    skip2: number,
    extra: readonly Uint8Array[],
    extraRoles: readonly number[],
    after: (ptrs: readonly number[], len: number, top: number) => void,
  ): void {
    assert(data.length <= SLOT_TABLE_ENTRIES, `too many slots (${data.length})`);
    const bufs: Uint8Array[] = [...extra];
    const roles: number[] = [...extraRoles];
    const slotIndex: number[] = new Array(data.length).fill(-1);
    let top = -1;
    for (let k = 0; k < data.length; k++) {
      const d = data[k];
      if (d === null || k === skip || k === skip2) continue;
      slotIndex[k] = bufs.length;
      bufs.push(d);
      roles.push(IN);
      top = k;
    }
    const len = extra[0].length;
    const table = this.slotTable;
    this.run(bufs, roles, len, (ptrs, m) => {
      for (let k = 0; k <= top; k++) table[k] = slotIndex[k] >= 0 ? ptrs[slotIndex[k]] : 0;
      after(ptrs, m, top);
    });
  }

  genPQ(data: ReadonlyArray<Uint8Array | null>, p: Uint8Array, q: Uint8Array): void {
    assert(p.length === q.length, 'genPQ: P and Q must have the same length');
    sameLength(data, p.length, 'genPQ');
    const w = this.w;
    const mem = this.mem;
    this.syndrome(data, -1, -1, [p, q], [OUT, OUT], (ptrs, len, top) => {
      if (top < 0) mem.fill(0, ptrs[0], ptrs[0] + len).fill(0, ptrs[1], ptrs[1] + len);
      else w.pq(SLOT_TABLE_ADDR, top, ptrs[0], ptrs[1], len);
    });
  }

  gfMulBlock(dst: Uint8Array, src: Uint8Array, c: number): void {
    assert(src.length === dst.length, 'gfMulBlock: lengths differ');
    assert(Number.isInteger(c) && c >= 0 && c <= 255, `gfMulBlock: constant ${c} is not a byte`);
    const w = this.w;
    const tab = nibbleTable(c);
    this.run([dst, src], [OUT, IN], dst.length, (p, len) => w.mul(p[0], p[1], len, tab));
  }

  gfMulXorBlock(dst: Uint8Array, src: Uint8Array, c: number): void {
    assert(src.length === dst.length, 'gfMulXorBlock: lengths differ');
    assert(Number.isInteger(c) && c >= 0 && c <= 255, `gfMulXorBlock: constant ${c} is not a byte`);
    if (c === 0) return;
    const w = this.w;
    const tab = nibbleTable(c);
    this.run([dst, src], [INOUT, IN], dst.length, (p, len) => w.mulxor(p[0], p[1], len, tab));
  }

  recoverOneDataFromP(
    data: ReadonlyArray<Uint8Array | null>,
    missing: number,
    p: Uint8Array,
  ): void {
    const x = checkSlot(data, missing, 'recoverOneDataFromP');
    sameLength(data, p.length, 'recoverOneDataFromP');
    const srcs: Uint8Array[] = [p];
    for (let k = 0; k < data.length; k++) {
      const d = data[k];
      if (d !== null && k !== missing) srcs.push(d);
    }
    this.xorBlocks(x, srcs);
  }

  recoverOneDataFromQ(
    data: ReadonlyArray<Uint8Array | null>,
    missing: number,
    q: Uint8Array,
  ): void {
    const x = checkSlot(data, missing, 'recoverOneDataFromQ');
    sameLength(data, q.length, 'recoverOneDataFromQ');
    assert(
      missing < RAID6_MAX_SLOTS,
      `recoverOneDataFromQ: slot ${missing} has no unique coefficient`,
    );
    const w = this.w;
    const tab = nibbleTable(gfPow2(-missing));
    // x := Q' (Q without slot `missing`), then x := g^-missing * (x ^ Q).
    this.syndrome(data, missing, -1, [x, q], [OUT, IN], (ptrs, len, top) => {
      if (top < 0) {
        w.mul(ptrs[0], ptrs[1], len, tab);
      } else {
        w.q(SLOT_TABLE_ADDR, top, ptrs[0], len);
        w.recov1(ptrs[0], ptrs[1], len, tab);
      }
    });
  }

  recoverTwoData(
    data: ReadonlyArray<Uint8Array | null>,
    a: number,
    b: number,
    p: Uint8Array,
    q: Uint8Array,
  ): void {
    assert(a !== b, 'recoverTwoData: the two lost slots must differ');
    if (a > b) [a, b] = [b, a];
    const da = checkSlot(data, a, 'recoverTwoData');
    const db = checkSlot(data, b, 'recoverTwoData');
    assert(b < RAID6_MAX_SLOTS, `recoverTwoData: slot ${b} has no unique coefficient`);
    assert(p.length === q.length, 'recoverTwoData: P and Q lengths differ');
    sameLength(data, p.length, 'recoverTwoData');
    const ga = gfPow2(a);
    const gb = gfPow2(b);
    const denomInv = gfInv(ga ^ gb);
    const tabA = nibbleTable(gfMul(gb, denomInv));
    const tabB = nibbleTable(denomInv);
    const w = this.w;
    const mem = this.mem;
    // da, db := P', Q' (syndromes without a and b), then the 2x2 solve in place.
    this.syndrome(data, a, b, [da, db, p, q], [OUT, OUT, IN, IN], (ptrs, len, top) => {
      if (top < 0) mem.fill(0, ptrs[0], ptrs[0] + len).fill(0, ptrs[1], ptrs[1] + len);
      else w.pq(SLOT_TABLE_ADDR, top, ptrs[0], ptrs[1], len);
      w.recov2(ptrs[0], ptrs[1], ptrs[2], ptrs[3], len, tabA, tabB);
    });
  }
}

let defaultKernels: ParityKernels | null = null;

/** The operations on the process-wide arena. */
export function parityKernels(): ParityKernels {
  if (defaultKernels === null) defaultKernels = new ParityKernels(defaultParityArena());
  return defaultKernels;
}

/** dst = srcs[0] ^ srcs[1] ^ ... (dst aliases none of srcs; srcs.length >= 1). */
export function xorBlocks(dst: Uint8Array, srcs: ReadonlyArray<Uint8Array>): void {
  parityKernels().xorBlocks(dst, srcs);
}

/** dst ^= src. */
export function xorInto(dst: Uint8Array, src: Uint8Array): void {
  parityKernels().xorInto(dst, src);
}

/** p = XOR of the data slots (null = zero block). */
export function genP(data: ReadonlyArray<Uint8Array | null>, p: Uint8Array): void {
  parityKernels().genP(data, p);
}

/** p = XOR of the slots, q = sum of g^k * data[k] (null = zero block). */
export function genPQ(data: ReadonlyArray<Uint8Array | null>, p: Uint8Array, q: Uint8Array): void {
  parityKernels().genPQ(data, p, q);
}

/** dst = c * src, bytewise in GF(2^8). */
export function gfMulBlock(dst: Uint8Array, src: Uint8Array, c: number): void {
  parityKernels().gfMulBlock(dst, src, c);
}

/** dst ^= c * src, bytewise in GF(2^8). */
export function gfMulXorBlock(dst: Uint8Array, src: Uint8Array, c: number): void {
  parityKernels().gfMulXorBlock(dst, src, c);
}

/** Rebuilds data[missing] from P and the other slots. */
export function recoverOneDataFromP(
  data: ReadonlyArray<Uint8Array | null>,
  missing: number,
  p: Uint8Array,
): void {
  parityKernels().recoverOneDataFromP(data, missing, p);
}

/** Rebuilds data[missing] from Q and the other slots (for when P is lost too). */
export function recoverOneDataFromQ(
  data: ReadonlyArray<Uint8Array | null>,
  missing: number,
  q: Uint8Array,
): void {
  parityKernels().recoverOneDataFromQ(data, missing, q);
}

/** Rebuilds data[a] and data[b] from P, Q and the other slots. */
export function recoverTwoData(
  data: ReadonlyArray<Uint8Array | null>,
  a: number,
  b: number,
  p: Uint8Array,
  q: Uint8Array,
): void {
  parityKernels().recoverTwoData(data, a, b, p, q);
}
