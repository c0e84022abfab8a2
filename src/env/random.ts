/**
 * Randomness, injected (like the Clock): the core (md/, raid/, cluster/) never calls
 * Math.random or node:crypto itself. Production passes a SystemRandom; tests and the simulator
 * pass a SeededRandom, so a failing run is replayed from its seed (TigerBeetle's VOPR does the
 * same). The kernel's counterparts are get_random_bytes / get_random_u32 (md.c's set_array_info
 * draws a new array's UUID with get_random_bytes); mdadm reads /dev/urandom.
 */
import { randomFillSync } from 'node:crypto';
import { assert } from '../errors.js';

export interface Random {
  /** A uniform unsigned 32-bit integer. */
  u32(): number;
  /** A uniform float in [0, 1). */
  float(): number;
  /** A uniform integer in [lo, hi) (safe integers, hi - lo between 1 and 2^53 - 1). */
  int(lo: number, hi: number): number;
  /** Fill `buf` with uniform random bytes. */
  fill(buf: Uint8Array): void;
}

const TWO32 = 0x1_0000_0000;
const TWO53 = 2 ** 53;

/** int/float/fill on top of u32, shared by both sources. */
abstract class RandomBase implements Random {
  abstract u32(): number;

  /**
   * u32 / 2^32: 32 bits of resolution, enough for choosing among cases, and the formula the
   * tests' prng() has always used, so their seeds replay the same runs.
   */
  float(): number {
    return this.u32() / TWO32;
  }

  int(lo: number, hi: number): number {
    const span = hi - lo;
    // (a span of safe integers that is itself safe was computed exactly)
    assert(Number.isSafeInteger(lo) && Number.isSafeInteger(hi) && span >= 1 && span <= Number.MAX_SAFE_INTEGER, `random int range [${lo}, ${hi})`);
    // rejection sampling: x % span is uniform only below the largest multiple of span
    if (span <= TWO32) {
      const limit = TWO32 - (TWO32 % span);
      let x = this.u32();
      while (x >= limit) x = this.u32();
      return lo + (x % span);
    }
    const limit = TWO53 - (TWO53 % span);
    let x: number;
    do x = (this.u32() & 0x1f_ffff) * TWO32 + this.u32();
    while (x >= limit);
    return lo + (x % span);
  }

  fill(buf: Uint8Array): void {
    const n = buf.length;
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const x = this.u32();
      buf[i] = x & 0xff;
      buf[i + 1] = (x >>> 8) & 0xff;
      buf[i + 2] = (x >>> 16) & 0xff;
      buf[i + 3] = x >>> 24;
    }
    if (i < n) {
      let x = this.u32();
      for (; i < n; i++, x >>>= 8) buf[i] = x & 0xff;
    }
  }
}

/**
 * A seeded, fast PRNG: mulberry32 (one 32-bit state word, a few multiplies per output). Its
 * period (2^32) and quality are plenty for choosing simulator events and test data; it is not
 * for anything an adversary may see (use SystemRandom).
 */
export class SeededRandom extends RandomBase {
  /** The seed this source started from: what a failing run prints so it can be replayed. */
  readonly seed: number;
  private state: number;

  constructor(seed: number) {
    super();
    assert(Number.isFinite(seed), 'random seed must be a finite number');
    this.seed = seed >>> 0;
    this.state = this.seed;
  }

  u32(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
}

/**
 * The production source: node:crypto (the OS CSPRNG, like the kernel's get_random_bytes).
 * u32 draws from a pooled buffer so that small draws do not each cost a system call.
 */
export class SystemRandom extends RandomBase {
  private readonly pool = new Uint32Array(256);
  private next = this.pool.length;

  u32(): number {
    if (this.next === this.pool.length) {
      randomFillSync(this.pool);
      this.next = 0;
    }
    return this.pool[this.next++]!;
  }

  override fill(buf: Uint8Array): void {
    randomFillSync(buf);
  }
}
