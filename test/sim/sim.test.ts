/**
 * The md-cluster simulator in CI: a sweep of seeds (each a whole randomized run: nodes crashing,
 * partitioned, stopped and rejoining under client I/O, then a quiescence, check = 0 and every
 * written sector read back), the replay guarantee (one seed, one trace), and a deliberate
 * fencing bug it must catch. TSMD_SIM_SEEDS widens the sweep (10000 for the long mode);
 * a failure prints the trace tail and the command that replays it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runSim, type SimResult } from '../../src/sim/sim.js';

const SEEDS = Number(process.env.TSMD_SIM_SEEDS ?? 500);
const STEPS = 60;
const CHUNK = 30;

function report(r: SimResult, steps: number): string {
  return `seed ${r.seed} failed: ${r.failure}\n${r.trace.slice(-60).join('\n')}\nreplay: npm run sim -- --seed=${r.seed} --steps=${steps} --verbose`;
}

for (let from = 1; from <= SEEDS; from += CHUNK) {
  const to = Math.min(SEEDS, from + CHUNK - 1);
  test(`sim: seeds ${from}..${to} (${STEPS} steps each) keep every invariant`, async () => {
    for (let seed = from; seed <= to; seed++) {
      const r = await runSim({ seed, steps: STEPS });
      if (!r.ok) assert.fail(report(r, STEPS));
    }
  });
}

test('sim: a seed replays exactly (same trace, same simulated time)', async () => {
  const a = await runSim({ seed: 4242, steps: 120, verbose: true });
  const b = await runSim({ seed: 4242, steps: 120, verbose: true });
  assert.ok(a.trace.length > 50, 'a real run');
  assert.equal(a.simMs, b.simMs);
  assert.deepEqual(a.trace, b.trace);
});

test('sim: a node that fences itself only after its lease expired is caught writing', async () => {
  // the mutation breaks docs/dlm.md's fencing argument on purpose: the invariant must see it
  const caught: SimResult[] = [];
  for (let seed = 1; seed <= 12 && caught.length === 0; seed++) {
    const r = await runSim({ seed, steps: 150, mutation: 'late-fence' });
    if (!r.ok && /after its lease expired/.test(r.failure!)) caught.push(r);
  }
  assert.equal(caught.length, 1, 'some seed shows the partitioned node writing after its expiry');
  // and the same seed without the mutation keeps the invariants
  const clean = await runSim({ seed: caught[0]!.seed, steps: 150 });
  assert.ok(clean.ok, clean.failure ?? '');
});
