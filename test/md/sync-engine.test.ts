/**
 * The sync engine (src/md/sync.ts, md_do_sync's loop) alone, on a ManualClock and a hand-made
 * SyncHost over a fake personality: no real timers and no members, so speed limiting,
 * checkpoints and the frozen action are judged against exact simulated time. The personality
 * records each window it is asked to sync; the host records flushes and checkpoints.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ManualClock } from '../../src/env/clock.js';
import { SyncBarrier } from '../../src/md/barrier.js';
import { type SyncHost, type SyncPlan, SyncEngine } from '../../src/md/sync.js';
import type { Personality } from '../../src/raid/personality.js';

interface Window {
  start: number;
  sectors: number;
  atMs: number;
}

/** A mirror-like personality with no data: syncRegion only records the window. */
function fakePersonality(clock: ManualClock, sectors: number, windows: Window[]): Personality {
  return {
    level: 1,
    arraySectors: sectors,
    maxDegraded: 1,
    canRun: () => true,
    read: () => Promise.reject(new Error('no data path in this test')),
    write: () => Promise.reject(new Error('no data path in this test')),
    flush: () => Promise.resolve(),
    syncSectors: sectors,
    recoverySectors: sectors,
    syncRangeOf: (a, n) => [a, a + n],
    recoveryToSync: (_slot, a, n) => [[a, a + n]],
    syncRegion: (start, n) => {
      windows.push({ start, sectors: n, atMs: clock.nowMs() });
      return Promise.resolve();
    },
    checkRegion: () => Promise.resolve(0),
  };
}

interface Harness {
  clock: ManualClock;
  engine: SyncEngine;
  windows: Window[];
  /** 'flush' / 'checkpoint@<resync point>' / 'done', in order */
  events: string[];
  resyncPoint: () => number;
}

/** md's resync as the array plans it: from the resync point (recovery_cp) until it reaches the end. */
function harness(o: { sectors: number; maxKiBs: number; minKiBs?: number; windowSectors?: number; checkpointSectors?: number }): Harness {
  const clock = new ManualClock();
  const windows: Window[] = [];
  const events: string[] = [];
  let point = 0;
  let done = false;
  const host: SyncHost = {
    personality: fakePersonality(clock, o.sectors, windows),
    barrier: new SyncBarrier(128),
    bitmap: null,
    clock,
    log: () => {},
    planSync: (): Promise<SyncPlan | null> => Promise.resolve(done ? null : { kind: 'resync', start: point }),
    copyToReplacements: () => Promise.reject(new Error('no replacement here')),
    recoveryValid: () => true,
    setRecoveryFrontier: () => {},
    setResyncPoint: (pos) => {
      point = pos;
    },
    flushData: () => {
      events.push('flush');
      return Promise.resolve();
    },
    checkpoint: () => {
      events.push(`checkpoint@${point}`);
      return Promise.resolve();
    },
    recoveryDone: () => Promise.reject(new Error('no recovery here')),
    resyncDone: () => {
      done = true;
      events.push('done');
      return Promise.resolve();
    },
    ioCount: () => 0,
    canSync: () => true,
  };
  const limits = { minKiBs: o.minKiBs ?? 0, maxKiBs: o.maxKiBs };
  const engine = new SyncEngine(host, limits, { windowSectors: o.windowSectors, checkpointSectors: o.checkpointSectors });
  return { clock, engine, windows, events, resyncPoint: () => point };
}

function doneSectors(h: Harness): number {
  return h.windows.reduce((n, w) => n + w.sectors, 0);
}

test('speed limit: the sectors synced stay within maxKiBs over every second, and the sync keeps up with it', async () => {
  const maxKiBs = 1000; // md's speed_limit_min default: 2000 sectors/s
  const rate = maxKiBs * 2; // sectors per second
  const h = harness({ sectors: 1 << 20, maxKiBs });
  h.engine.kick();
  assert.ok(h.engine.busy);
  for (const t of [500, 1000, 2000, 4000, 8000]) {
    await h.clock.advanceAsync(t - h.clock.nowMs());
    const done = doneSectors(h);
    const window = h.windows[0]!.sectors;
    // the throttle judges the speed since a mark at most 1 s old and then lets one more window
    // go: the limit plus about one window per second, never more
    const bound = ((rate + window) * t) / 1000 + window;
    assert.ok(done <= bound, `at ${t} ms: ${done} sectors synced, above the limit's ${bound}`);
    assert.ok(done >= (rate * t) / 1000 / 2, `at ${t} ms: only ${done} sectors synced`);
    assert.equal(h.engine.current?.doneSectors, done);
  }
  // over any 1 s interval: the limit, plus the window in flight at each end
  const window = h.windows[0]!.sectors;
  for (let i = 0; i < h.windows.length; i++) {
    let n = 0;
    for (let j = i; j < h.windows.length && h.windows[j]!.atMs < h.windows[i]!.atMs + 1000; j++) n += h.windows[j]!.sectors;
    assert.ok(n <= rate + 2 * window, `${n} sectors in the second from ${h.windows[i]!.atMs} ms`);
  }
  // no window started twice, none skipped
  for (let i = 1; i < h.windows.length; i++) assert.equal(h.windows[i]!.start, h.windows[i - 1]!.start + h.windows[i - 1]!.sectors);
  // stop it so no timer is left behind
  const stopping = h.engine.stop();
  await h.clock.advanceAsync(100);
  await stopping;
  assert.equal(h.engine.busy, false);
  assert.equal(h.clock.pendingTimers, 0);
});

test('a higher limit goes proportionally faster on the same clock', async () => {
  const slow = harness({ sectors: 1 << 22, maxKiBs: 1000 });
  const fast = harness({ sectors: 1 << 22, maxKiBs: 4000 });
  slow.engine.kick();
  fast.engine.kick();
  await slow.clock.advanceAsync(3000);
  await fast.clock.advanceAsync(3000);
  const ratio = doneSectors(fast) / doneSectors(slow);
  assert.ok(ratio > 3 && ratio < 5, `4x the limit gave ${ratio.toFixed(2)}x the progress`);
  for (const h of [slow, fast]) {
    const p = h.engine.stop();
    await h.clock.advanceAsync(100);
    await p;
  }
});

test('checkpoint: one per checkpointSectors of progress, each after a flush of the data it covers', async () => {
  // fast enough that the throttle never sleeps: the whole resync runs without the clock moving
  const h = harness({ sectors: 8192, maxKiBs: 200_000, windowSectors: 128, checkpointSectors: 1024 });
  const results = await h.engine.runUntilIdle();
  assert.equal(h.clock.nowMs(), 0);
  assert.equal(results.length, 1);
  assert.equal(results[0]!.completed, true);
  assert.equal(results[0]!.workedSectors, 8192);
  assert.equal(doneSectors(h), 8192);
  // every 1024 sectors, except in the last quarter interval before the end (the completion
  // writes the superblocks anyway); then the final flush and the resync's end
  const want: string[] = [];
  for (let p = 1024; p <= 7168; p += 1024) want.push('flush', `checkpoint@${p}`);
  want.push('flush', 'done');
  assert.deepEqual(h.events, want);
});

test("setAction('frozen') stops the sync at a checkpoint and holds it; 'idle' resumes from there", async () => {
  const h = harness({ sectors: 1 << 20, maxKiBs: 1000, checkpointSectors: 1 << 30 });
  h.engine.kick();
  await h.clock.advanceAsync(1000);
  const before = doneSectors(h);
  assert.ok(before > 0);
  // the engine sleeps in its throttle: the freeze completes once the clock lets it wake
  const freezing = h.engine.setAction('frozen');
  await h.clock.advanceAsync(50);
  await freezing;
  assert.equal(h.engine.action, 'frozen');
  assert.equal(h.engine.busy, false);
  assert.equal(h.engine.lastResult?.completed, false);
  const stoppedAt = doneSectors(h);
  assert.ok(stoppedAt - before <= h.windows[0]!.sectors, 'at most the window in progress finished');
  // interrupted: the data is flushed and the progress checkpointed
  assert.deepEqual(h.events, ['flush', `checkpoint@${stoppedAt}`]);
  assert.equal(h.resyncPoint(), stoppedAt);
  // frozen: time passes, kicks come, nothing runs and no timer is armed
  h.engine.kick();
  await h.clock.advanceAsync(5000);
  assert.equal(doneSectors(h), stoppedAt);
  assert.equal(h.engine.busy, false);
  assert.equal(h.clock.pendingTimers, 0);
  // idle: the resync restarts on its own, from the checkpoint
  const count = h.windows.length;
  await h.engine.setAction('idle');
  await h.clock.advanceAsync(500);
  assert.ok(h.windows.length > count, 'resumed');
  assert.equal(h.windows[count]!.start, stoppedAt);
  const p = h.engine.stop();
  await h.clock.advanceAsync(100);
  await p;
});

test('an interrupt wakes a throttled sync at once: stop() returns with the clock standing still', async () => {
  const h = harness({ sectors: 1 << 20, maxKiBs: 1000 });
  h.engine.kick();
  // run until the engine is over its limit and asleep in the throttle
  await h.clock.advanceAsync(300);
  assert.ok(h.engine.busy && doneSectors(h) > 0);
  const at = h.clock.nowMs();
  let stopped = false;
  const stopping = h.engine.stop().then(() => {
    stopped = true;
  });
  // no time passes: only promise callbacks and I/O turns run
  for (let i = 0; i < 50 && !stopped; i++) await new Promise<void>((r) => setImmediate(r));
  assert.ok(stopped, 'stop() waited for the throttle sleep to end');
  await stopping;
  assert.equal(h.clock.nowMs(), at);
  assert.equal(h.engine.busy, false);
  // the stopped resync left a checkpoint to resume from
  assert.match(h.events.at(-1) ?? '', /^checkpoint@\d+$/);
});
