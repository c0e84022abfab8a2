/**
 * The level registry (raid/registry.ts, SPDK's RAID_MODULE_REGISTER): every md level tsmd has
 * is found by number and by each of mdadm's names for it; a level tsmd does not have is a
 * clear error; and the descriptor's constraints agree with the personality it builds.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseLevel, UsageError } from '../../src/mdadm/args.js';
import { isTsmdError } from '../../src/errors.js';
import { findLevel, levelByName, levelByNumber, registeredLevels } from '../../src/raid/levels.js';
import type { MemberIo } from '../../src/raid/personality.js';
import { registerLevel } from '../../src/raid/registry.js';

/** mdadm's level names (maps.c `pers`), the judge of what --level accepts */
const MDADM_NAMES: Array<[string, number]> = [
  ['linear', -1],
  ['raid0', 0],
  ['0', 0],
  ['stripe', 0],
  ['raid1', 1],
  ['1', 1],
  ['mirror', 1],
  ['raid4', 4],
  ['4', 4],
  ['raid5', 5],
  ['5', 5],
  ['raid6', 6],
  ['6', 6],
  ['raid10', 10],
  ['10', 10],
];

/** A MemberIo with nothing behind it: building a personality does no I/O. */
function idleIo(slots: number): MemberIo {
  const no = () => Promise.reject(new Error('no I/O in this test'));
  return {
    slots,
    available: () => true,
    anyWriteMostly: false,
    resyncFrom: Infinity,
    writeMostly: () => false,
    read: no,
    write: no,
    flush: no,
    bulk: null,
    reportError: () => {},
  };
}

describe('level registry', () => {
  test('md has seven levels here: linear, 0, 1, 4, 5, 6, 10, ascending', () => {
    assert.deepEqual(
      registeredLevels().map((d) => d.level),
      [-1, 0, 1, 4, 5, 6, 10],
    );
  });

  for (const [name, level] of MDADM_NAMES) {
    test(`"${name}" (and "${name.toUpperCase()}") is level ${level}, and parseLevel agrees`, () => {
      assert.equal(levelByName(name)?.level, level);
      assert.equal(levelByName(` ${name.toUpperCase()} `)?.level, level);
      assert.equal(parseLevel(name), level);
      assert.equal(levelByNumber(level).level, level);
    });
  }

  test('an unknown level is a clear error, never a personality', () => {
    assert.equal(findLevel(7), undefined);
    assert.throws(
      () => levelByNumber(7),
      (e) => isTsmdError(e, 'ENOTSUP') && /raid level 7 is not supported/.test(e.message) && /raid5/.test(e.message),
    );
    for (const n of ['raid7', 'multipath', 'faulty', 'container', '', 'raid']) assert.equal(levelByName(n), undefined, n);
    assert.throws(() => parseLevel('raid7'), (e) => e instanceof UsageError && /invalid raid level: raid7/.test(e.message));
    assert.throws(() => parseLevel('multipath'), (e) => e instanceof UsageError && /not supported by tsmd/.test(e.message));
  });

  test('a level registers once: a second registration is a bug', () => {
    const d = levelByNumber(5);
    assert.throws(() => registerLevel(d), /registered twice/);
  });

  test('redundancy as data: none for linear/raid0, mirror for 1/10, parity for 4/5/6', () => {
    const r = Object.fromEntries(registeredLevels().map((d) => [d.name, d.redundancy]));
    assert.deepEqual(r, { linear: 'none', raid0: 'none', raid1: 'mirror', raid4: 'parity', raid5: 'parity', raid6: 'parity', raid10: 'mirror' });
  });

  // geometries a user can create: the descriptor's maxDegraded is the built personality's
  const geometries: Array<{ level: number; disks: number; layout: number }> = [
    { level: -1, disks: 3, layout: 0 },
    { level: 0, disks: 4, layout: 2 },
    { level: 1, disks: 2, layout: 0 },
    { level: 1, disks: 4, layout: 0 },
    { level: 4, disks: 3, layout: 5 },
    { level: 5, disks: 4, layout: 2 },
    { level: 6, disks: 5, layout: 2 },
    { level: 10, disks: 4, layout: 0x102 },
    { level: 10, disks: 6, layout: 0x103 },
    { level: 10, disks: 4, layout: 0x201 },
  ];
  for (const g of geometries) {
    test(`level ${g.level}, ${g.disks} disks, layout ${g.layout}: create() builds that level, maxDegraded agrees`, () => {
      const d = levelByNumber(g.level);
      assert.ok(g.disks >= d.minDevices);
      const memberSectors = new Array<number>(g.disks).fill(8192);
      const p = d.create({ io: idleIo(g.disks), layout: g.layout, chunkSectors: 128, raidDisks: g.disks, componentSectors: 8192, memberSectors });
      assert.equal(p.level, g.level);
      assert.equal(p.maxDegraded, d.maxDegraded(g.disks, g.layout));
      assert.equal(p.maxDegraded > 0, d.redundancy !== 'none');
      // the mirrors say which member may go (md's error_handler); the others need no hook
      assert.equal(typeof p.errorHandler === 'function', d.redundancy === 'mirror');
    });
  }
});
