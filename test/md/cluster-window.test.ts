/**
 * The clustered resync window's size (src/md/cluster-window.ts windowSize): md's window first
 * and as a floor, then WINDOW_ROUNDS round times of copy at the sync's pace, under the time,
 * factor and doubling caps, in whole sync windows. The announcement protocol around it is
 * judged in test/cluster/md-cluster.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { WINDOW_MAX_FACTOR, WINDOW_MAX_MS, WINDOW_ROUNDS, windowSize } from '../../src/md/cluster-window.js';

const MD = 65536; // raid1: 32 MiB
const STEP = 16384; // the clustered sync window: a quarter of md's

test('cluster window size: md window first, then the measured rounds of copy under every cap', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 40 * MD }),
      fc.double({ min: 0, max: 500, noNaN: true }),
      fc.double({ min: 0, max: 20_000, noNaN: true }),
      (prev, roundMs, pace) => {
        const w = windowSize({ mdSectors: MD, stepSectors: STEP, prevSectors: prev, roundMs, sectorsPerMs: pace });
        assert.ok(w >= MD && w <= MD * WINDOW_MAX_FACTOR, `${w} between md's window and its cap`);
        assert.equal(w % STEP, 0, 'whole sync windows');
        if (prev === 0 || roundMs === 0 || pace === 0) assert.equal(w, MD, "nothing measured: md's window");
        if (w > MD) {
          assert.ok(w <= 2 * prev, 'at most twice the previous window');
          // the copy of the window: WINDOW_ROUNDS rounds, and never over WINDOW_MAX_MS
          assert.ok(w / pace <= Math.min(WINDOW_ROUNDS * roundMs, WINDOW_MAX_MS) + 1e-6, `${w / pace} ms of copy`);
          // not smaller than the rule asks, unless a cap holds it
          const want = Math.floor((pace * Math.min(WINDOW_ROUNDS * roundMs, WINDOW_MAX_MS)) / STEP) * STEP;
          const doubled = Math.floor((2 * prev) / STEP) * STEP;
          assert.ok(w === want || w === doubled || w === MD * WINDOW_MAX_FACTOR, `${w}: the rule's ${want} or a cap`);
        }
      },
    ),
    { numRuns: 2000 },
  );
});

test("cluster window size: what this machine's resync sees (45 ms rounds, ~580 MB/s): grows by doubling to 250 ms of copy", () => {
  const pace = (580e6 / 512) / 1000; // sectors per ms
  let prev = 0;
  const sizes: number[] = [];
  for (let i = 0; i < 5; i++) {
    prev = windowSize({ mdSectors: MD, stepSectors: STEP, prevSectors: prev, roundMs: 45, sectorsPerMs: pace });
    sizes.push(prev);
  }
  const full = Math.floor((pace * WINDOW_MAX_MS) / STEP) * STEP;
  assert.deepEqual(sizes, [MD, 2 * MD, 4 * MD, full, full]);
  // a slow disk (100 MB/s) keeps md's window: 250 ms of its copy is less than 32 MiB
  assert.equal(windowSize({ mdSectors: MD, stepSectors: STEP, prevSectors: MD, roundMs: 45, sectorsPerMs: 100e6 / 512 / 1000 }), MD);
});
