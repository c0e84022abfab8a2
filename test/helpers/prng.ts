import { SeededRandom } from '../../src/env/random.js';

/**
 * A small seeded PRNG (mulberry32) so that a failing run can be replayed from its seed: the
 * core's SeededRandom (src/env/random.ts) as a bare function, the form the tests were written
 * against. Same seed, same floats as before the move.
 */
export function prng(seed: number): () => number {
  const r = new SeededRandom(seed);
  return () => r.float();
}
