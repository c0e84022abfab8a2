/**
 * The DLM conformance suite against the in-memory backend (manual clock: deterministic), plus
 * the grant engine's invariants under random operation sequences.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ManualClock } from '../../src/env/clock.js';
import { isTsmdError } from '../../src/errors.js';
import * as engine from '../../src/cluster/dlm/grant.js';
import { Flag, MemoryDlmCluster, Mode } from '../../src/cluster/dlm/index.js';
import { prng } from '../helpers/prng.js';
import { type DlmHarness, dlmConformance } from './dlm-conformance.js';

async function flush(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
}

function harness(): Promise<DlmHarness> {
  const clock = new ManualClock();
  const cluster = new MemoryDlmCluster({ clock });
  let n = 0;
  return Promise.resolve({
    nodes: (k) => Promise.resolve(Array.from({ length: k }, () => cluster.node(`node${++n}`))),
    crash: (dlm) => {
      cluster.crash(dlm.nodeId);
      return Promise.resolve();
    },
    settle: flush,
    sleep: (ms) => clock.advanceAsync(ms, 5),
    sync: () => Promise.resolve(),
    waiting: (_dlm, ls, res) => {
      const r = cluster.resourceState(ls.name, res);
      return r ? r.convert.length + r.wait.length : 0;
    },
    close: () => Promise.resolve(),
  });
}

dlmConformance({ name: 'memory', make: harness, rounds: 300, shortTimeoutMs: 1000, maxSettles: 50 });

test('memory: deterministic — the same seed gives the same grant order', async () => {
  async function run(seed: number): Promise<string> {
    const cluster = new MemoryDlmCluster({ clock: new ManualClock() });
    const rnd = prng(seed);
    const spaces = [];
    for (let i = 0; i < 4; i++) spaces.push(await cluster.node(`n${i}`).join({ name: 'det', lvbLength: 8 }));
    const log: string[] = [];
    const held: Array<Promise<void>> = [];
    for (let i = 0; i < 60; i++) {
      const s = spaces[Math.floor(rnd() * 4)]!;
      const mode = Math.floor(rnd() * 6) as Mode;
      const res = `r${Math.floor(rnd() * 3)}`;
      held.push(s.lock(res, mode, { bast: (m) => log.push(`bast ${s.slot} ${m}`) }).then(async (lk) => {
        log.push(`grant ${s.slot} ${res} ${mode}`);
        await flush();
        await lk.unlock();
      }));
      if (rnd() < 0.5) await flush();
    }
    await Promise.all(held);
    return log.join('\n');
  }
  const a = await run(7);
  assert.equal(a, await run(7));
  assert.notEqual(a, await run(8));
});

test('grant engine: random operations keep the invariants (no incompatible holders, queues consistent)', () => {
  const rnd = prng(42);
  for (let trial = 0; trial < 200; trial++) {
    const r = engine.newResource();
    const ids: string[] = [];
    const ops = new Map<string, number>();
    for (let step = 0; step < 60; step++) {
      const x = rnd();
      const mode = Math.floor(rnd() * 6) as Mode;
      try {
        if (x < 0.35 || ids.length === 0) {
          const id = `l${trial}.${step}`;
          const fl = (rnd() < 0.2 ? Flag.NOQUEUE : 0) | (rnd() < 0.3 ? Flag.VALBLK : 0);
          const out = engine.request(r, { id, node: 'n', slot: 1, inc: String(trial % 3), gr: -1, rq: mode, fl, hb: -1, bs: 0, bm: -1, cb: true, op: 1, ga: 0, sb: 0 });
          if (out.kind !== 'error') {
            ids.push(id);
            ops.set(id, 1);
          }
        } else {
          const id = ids[Math.floor(rnd() * ids.length)]!;
          const f = engine.findLock(r, id)!;
          if (x < 0.65 && f.where === 'grant') {
            const op = ops.get(id)! + 1;
            ops.set(id, op);
            const fl = (rnd() < 0.2 ? Flag.NOQUEUE : 0) | (rnd() < 0.2 ? Flag.CONVDEADLK : 0) | Flag.VALBLK;
            engine.convert(r, id, mode, fl, op, true, Buffer.alloc(8, step).toString('base64'));
          } else if (x < 0.75 && f.where !== 'grant') {
            if (engine.cancel(r, id, ops.get(id)!) === 'removed') ids.splice(ids.indexOf(id), 1);
          } else if (x < 0.95) {
            engine.unlock(r, id, Flag.FORCEUNLOCK, undefined);
            ids.splice(ids.indexOf(id), 1);
          } else {
            const inc = String(Math.floor(rnd() * 3));
            engine.purge(r, (e) => e.inc === inc);
            for (const i of [...ids]) if (!engine.findLock(r, i)) ids.splice(ids.indexOf(i), 1);
          }
        }
      } catch (e) {
        assert.ok(isTsmdError(e), String(e));
      }
      engine.checkInvariants(r);
      // nothing grantable is left waiting: the head of the convert queue (or, with it empty, of
      // the wait queue) conflicts with a holder
      const head = r.convert[0] ?? (r.convert.length === 0 ? r.wait[0] : undefined);
      if (head && !(head.fl & Flag.CONVDEADLK)) {
        const holders = [...r.grant, ...r.convert].filter((e) => e !== head);
        assert.ok(holders.some((h) => !engineCompat(h.gr, head.rq)), `head ${head.id} wants ${head.rq} and nothing blocks it`);
      }
    }
  }
});

function engineCompat(g: number, q: number): boolean {
  const t = [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 0, 0], [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]];
  return g < 0 || t[g]![q] === 1;
}
