/**
 * MonitorState (src/cli/monitor.ts) against mdadm's Monitor.c check_array for progress events:
 * RebuildNN carries the percentage read (not the step boundary crossed), once per --increment
 * step, for a resync and for a reshape alike.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MonitorState } from '../../src/cli/monitor.js';
import type { ArrayState } from '../../src/daemon/control.js';

function state(sync: { done: number; total: number } | null, reshape: { done: number; total: number } | null = null): ArrayState {
  return {
    mdName: 'md0',
    devPath: '/dev/md0',
    uuid: 'u',
    level: 5,
    raidDisks: 4,
    degraded: false,
    missing: 0,
    members: [],
    sync: sync ? { kind: 'resync', doneSectors: sync.done, totalSectors: sync.total, speedKiBs: 0 } : null,
    syncBusy: sync !== null,
    reshape: reshape ? { positionSectors: 0, running: true, frozen: false, stuck: null, doneSectors: reshape.done, totalSectors: reshape.total } : null,
    lastReshape: null,
    mismatchCnt: 0,
    syncHistory: [],
    bitmap: null,
    cluster: null,
  } as unknown as ArrayState;
}

test('RebuildNN names the percentage read, once per increment (Monitor.c "Rebuild%02d")', () => {
  const m = new MonitorState({ increment: 20 });
  assert.deepEqual(m.update([state(null)]), []);
  assert.deepEqual(m.update([state({ done: 5, total: 100 })]).map((e) => e.event), ['RebuildStarted']);
  assert.deepEqual(m.update([state({ done: 23, total: 100 })]).map((e) => e.event), ['Rebuild23']);
  assert.deepEqual(m.update([state({ done: 39, total: 100 })]).map((e) => e.event), []);
  assert.deepEqual(m.update([state({ done: 81, total: 100 })]).map((e) => e.event), ['Rebuild81']);
  assert.deepEqual(m.update([state(null)]).map((e) => e.event), ['RebuildFinished']);
});

test('a running reshape is watched like a resync', () => {
  const m = new MonitorState({ increment: 50 });
  m.update([state(null)]);
  assert.deepEqual(m.update([state(null, { done: 10, total: 100 })]).map((e) => e.event), ['RebuildStarted']);
  assert.deepEqual(m.update([state(null, { done: 60, total: 100 })]).map((e) => e.event), ['Rebuild60']);
  assert.deepEqual(m.update([state(null)]).map((e) => e.event), ['RebuildFinished']);
});
