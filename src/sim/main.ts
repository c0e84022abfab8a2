/**
 * `npm run sim -- --seed=N [--steps=K] [--seeds=A..B] [--verbose] [--follow] [--trace=N] [--mutation=late-fence]`
 *
 * Runs the md-cluster simulator (sim.ts) for one seed (or a range), prints the seed and the
 * shape it chose, and on failure the violation and the trace (its last --trace lines, default
 * 400; 0 = all), which replays exactly with the same seed and steps. Exit status 1 on failure.
 */
import { runSim, type SimResult } from './sim.js';

function arg(name: string): string | undefined {
  const p = `--${name}=`;
  const a = process.argv.slice(2).find((x) => x.startsWith(p) || x === `--${name}`);
  if (a === undefined) return undefined;
  return a.startsWith(p) ? a.slice(p.length) : '';
}

function num(name: string, dflt: number): number {
  const v = arg(name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) {
    console.error(`--${name} needs a non-negative integer, got ${JSON.stringify(v)}`);
    process.exit(2);
  }
  return n;
}

function summary(r: SimResult, ms: number): string {
  const c = r.config;
  const s = r.stats;
  return `seed ${r.seed}: ${r.ok ? 'ok' : 'FAILED'} — ${c.nodes} nodes, raid${c.level} x${c.raidDisks}; ${s.writes} writes, ${s.reads} reads, ${s.kills} kills, ${s.partitions} partitions, ${s.stops} stops, ${s.starts} assemblies, ${s.syncsRun} syncs; ${(r.simMs / 1000).toFixed(1)} s simulated in ${ms} ms`;
}

async function main(): Promise<void> {
  const steps = num('steps', 200);
  const verbose = arg('verbose') !== undefined;
  const follow = arg('follow') !== undefined;
  const traceLines = num('trace', 400);
  const mutation = arg('mutation');
  if (mutation !== undefined && mutation !== 'late-fence') {
    console.error('--mutation=late-fence (the one deliberate bug the simulator knows)');
    process.exit(2);
  }
  const range = arg('seeds');
  let seeds: number[];
  if (range !== undefined) {
    const m = /^(\d+)\.\.(\d+)$/.exec(range);
    if (!m) {
      console.error('--seeds=A..B');
      process.exit(2);
    }
    seeds = [];
    for (let s = Number(m[1]); s <= Number(m[2]); s++) seeds.push(s);
  } else {
    const seed = arg('seed') !== undefined ? num('seed', 0) : Math.floor(Math.random() * 2 ** 31);
    seeds = [seed];
  }
  let failed = 0;
  for (const seed of seeds) {
    const t0 = performance.now();
    const r = await runSim({ seed, steps, verbose, mutation, onTrace: follow ? (l) => console.log(l) : undefined });
    const ms = Math.round(performance.now() - t0);
    console.log(summary(r, ms));
    if (!r.ok) {
      failed++;
      if (!follow) {
        const t = traceLines === 0 ? r.trace : r.trace.slice(-traceLines);
        if (t.length < r.trace.length) console.log(`... (${r.trace.length - t.length} earlier trace lines; --trace=0 prints them all)`);
        console.log(t.join('\n'));
      }
      console.log(`VIOLATION: ${r.failure}`);
      console.log(`replay: npm run sim -- --seed=${seed} --steps=${steps}${mutation ? ` --mutation=${mutation}` : ''}${verbose ? ' --verbose' : ''}`);
    }
  }
  if (seeds.length > 1) console.log(`${seeds.length - failed}/${seeds.length} seeds passed`);
  process.exitCode = failed > 0 ? 1 : 0;
}

void main();
