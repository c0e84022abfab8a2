/**
 * Assembly decisions as pure functions (src/md/assemble.ts; mdadm's Assemble.c and the
 * kernel's analyze_sbs): superblocks read once from members that tsmd created, then edited in
 * memory to make each case, with no device I/O in the decisions themselves.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isTsmdError } from '../../src/errors.js';
import { Role } from '../../src/format/superblock.js';
import { type Candidate, planAssembly, startDecision } from '../../src/md/assemble.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { memoryArray } from '../helpers/arrays.js';

/** The members' superblocks as assembly would read them; each call returns fresh copies. */
async function candidates(level: 1 | 5, n: number): Promise<Candidate[]> {
  const devs = await memoryArray({ level, sizesMiB: new Array<number>(n).fill(4), chunkKiB: 64, assumeClean: true });
  const out: Candidate[] = [];
  for (const d of devs) {
    const dev = d.reopen({ readOnly: true });
    const l = (await loadSuperblock(dev))!;
    out.push({ dev, l: { ...l, sb: { ...l.sb, devRoles: l.sb.devRoles.slice() } } });
  }
  return out;
}

describe('planAssembly', () => {
  test('the freshest superblock defines the array; a member two events behind is kicked, and taken with --force', async () => {
    const c = await candidates(5, 3);
    for (const x of c.slice(0, 2)) x.l.sb.events += 2n;
    const log: string[] = [];
    const plan = planAssembly(c, { log: (m) => log.push(m) });
    assert.equal(plan.fresh.events, c[0]!.l.sb.events);
    assert.deepEqual(plan.report.stale, ['mem2']);
    assert.deepEqual(plan.report.missingSlots, [2]);
    assert.ok(log.some((l) => /kicking non-fresh mem2/.test(l)));
    const forced = planAssembly(c, { force: true });
    assert.deepEqual(forced.report.stale, []);
    assert.equal(forced.members.length, 3);
  });

  test('one event behind is current (a crash between superblock writes): nothing is kicked', async () => {
    const c = await candidates(5, 3);
    c[0]!.l.sb.events += 1n;
    const plan = planAssembly(c, {});
    assert.deepEqual(plan.report.stale, []);
    assert.deepEqual(plan.members.map((m) => m.slot).sort(), [0, 1, 2]);
  });

  test('a member the freshest superblock records as faulty is left out', async () => {
    const c = await candidates(1, 2);
    c[0]!.l.sb.events += 2n;
    c[0]!.l.sb.devRoles[c[1]!.l.sb.devNumber] = Role.FAULTY;
    const plan = planAssembly(c, {});
    assert.deepEqual(plan.report.stale, ['mem1']);
    assert.deepEqual(plan.report.accepted, ['mem0']);
  });

  test('members of two arrays are refused, naming both', async () => {
    const a = await candidates(1, 2);
    const b = await candidates(1, 2);
    assert.throws(
      () => planAssembly([a[0]!, b[1]!], {}),
      (e) => isTsmdError(e, 'EINVAL') && /doesn't match others/.test(e.message),
    );
  });

  test('startDecision: a missing slot needs --run; with it the array starts degraded', async () => {
    const c = await candidates(5, 3);
    const plan = planAssembly(c.slice(0, 2), {});
    assert.deepEqual(plan.report.missingSlots, [2]);
    const canRun = (avail: readonly boolean[]) => avail.filter((x) => !x).length <= 1;
    assert.throws(() => startDecision(plan, canRun, false, () => {}), (e) => isTsmdError(e, 'EBUSY') && /use --run/.test(e.message));
    startDecision(plan, canRun, true, () => {});
    assert.equal(plan.report.degraded, true);
    // two of three missing: not even --run starts it
    const worse = planAssembly(c.slice(0, 1), {});
    assert.throws(() => startDecision(worse, canRun, true, () => {}), (e) => isTsmdError(e, 'EIO') && /not enough to start/.test(e.message));
  });
});
