/**
 * The injected clock's wall time (src/env/clock.ts): ManualClock's wall time starts where it is
 * told and moves with manual time; a wall step leaves monotonic time and timers alone.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ManualClock, SystemClock } from '../../src/env/clock.js';

test('ManualClock: wall time is the wall start plus the manual time elapsed', async () => {
  const c = new ManualClock(500, { wallStartMs: 1_000_000 });
  assert.equal(c.nowMs(), 500);
  assert.equal(c.wallMs(), 1_000_000);
  c.advance(250);
  assert.equal(c.nowMs(), 750);
  assert.equal(c.wallMs(), 1_000_250);
  await c.advanceAsync(10);
  assert.equal(c.wallMs(), 1_000_260);
});

test('ManualClock: a fixed default wall start, so replayed runs write the same timestamps', () => {
  assert.equal(new ManualClock().wallMs(), new ManualClock().wallMs());
  assert.ok(new ManualClock().wallMs() > Date.UTC(2020, 0, 1), 'a plausible date, not 1970');
});

test('ManualClock: stepping the wall clock back moves neither monotonic time nor timers', () => {
  const c = new ManualClock(0, { wallStartMs: 10_000 });
  let fired = 0;
  c.setTimer(100, () => fired++);
  c.setWallMs(5_000);
  assert.equal(c.wallMs(), 5_000);
  assert.equal(c.nowMs(), 0);
  c.advance(99);
  assert.equal(fired, 0);
  assert.equal(c.wallMs(), 5_099);
  c.advance(1);
  assert.equal(fired, 1);
});

test('SystemClock: wallMs is the epoch clock, nowMs is monotonic', () => {
  const c = new SystemClock();
  const before = Date.now();
  const w = c.wallMs();
  const after = Date.now();
  assert.ok(w >= before && w <= after);
  const a = c.nowMs();
  const b = c.nowMs();
  assert.ok(b >= a);
});
