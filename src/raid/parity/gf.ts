/**
 * Arithmetic in GF(2^8) as used by Linux md RAID-6: field polynomial x^8+x^4+x^3+x^2+1 (0x11d),
 * generator g = 2 (the polynomial "x"). Addition is XOR; multiplication goes through log/exp
 * tables built once from the polynomial.
 */

import { assert } from '../../errors.js';

/** The field polynomial; 0x1d is what remains after dropping x^8 (the reduction constant). */
export const GF_POLY = 0x11d;

/** EXP[i] = g^i for i in 0..509 (doubled so that EXP[LOG[a] + LOG[b]] needs no modulo). */
const EXP = new Uint8Array(510);
/** LOG[a] = i with g^i = a, for a in 1..255 (LOG[0] is unused). */
const LOG = new Uint8Array(256);

{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    EXP[i + 255] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= GF_POLY;
  }
  assert(x === 1, 'g = 2 must have order 255 under 0x11d');
}

function checkByte(a: number, what: string): void {
  assert(Number.isInteger(a) && a >= 0 && a <= 255, `${what} must be a byte, got ${a}`);
}

/** a * b in GF(2^8). */
export function gfMul(a: number, b: number): number {
  checkByte(a, 'gfMul a');
  checkByte(b, 'gfMul b');
  if (a === 0 || b === 0) return 0;
  return EXP[LOG[a] + LOG[b]];
}

/** g^k for any integer k (negative k gives the inverse powers; the order of g is 255). */
export function gfPow2(k: number): number {
  assert(Number.isInteger(k), `gfPow2 exponent must be an integer, got ${k}`);
  return EXP[((k % 255) + 255) % 255];
}

/** The multiplicative inverse of a (a != 0). */
export function gfInv(a: number): number {
  checkByte(a, 'gfInv a');
  assert(a !== 0, 'gfInv(0): zero has no inverse');
  return EXP[(255 - LOG[a]) % 255];
}

/** log_g(a) for a != 0. */
export function gfLog(a: number): number {
  checkByte(a, 'gfLog a');
  assert(a !== 0, 'gfLog(0) is undefined');
  return LOG[a];
}

/**
 * The two 16-entry nibble tables for multiplication by the constant c:
 * c*x = lo[x & 15] ^ hi[x >> 4]  (bytes 0..15 = lo, 16..31 = hi), because multiplication by c
 * distributes over the XOR x = (x & 0x0f) ^ (x & 0xf0).
 */
export function gfNibbleTables(c: number, out: Uint8Array = new Uint8Array(32)): Uint8Array {
  checkByte(c, 'gfNibbleTables c');
  assert(out.length >= 32, 'nibble table output needs 32 bytes');
  for (let i = 0; i < 16; i++) {
    out[i] = gfMul(c, i);
    out[16 + i] = gfMul(c, i << 4);
  }
  return out;
}

/** A full 256-entry multiplication table for the constant c (for the pure-JS paths). */
export function gfMulTable(c: number): Uint8Array {
  checkByte(c, 'gfMulTable c');
  const t = new Uint8Array(256);
  if (c === 0) return t;
  const lc = LOG[c];
  for (let x = 1; x < 256; x++) t[x] = EXP[lc + LOG[x]];
  return t;
}
