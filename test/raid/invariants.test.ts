/**
 * The personalities' invariant checks (assert, src/errors.ts): a request or sync window that
 * the array could never pass them (past the end, not whole sectors, empty, a slot out of
 * range) is a bug and fails loudly as one, while the same mistake made by a user at the array
 * is still a TsmdError with an errno (md: bio_check_eod answers the user, BUG_ON the rest).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isTsmdError } from '../../src/errors.js';
import { MdArray } from '../../src/md/array.js';
import type { Level } from '../../src/md/create-plan.js';
import { memoryArray } from '../helpers/arrays.js';
import { SystemClock } from '../../src/env/clock.js';

const invariant = /tsmd invariant violated/;

describe('personality invariants', () => {
  for (const [level, disks] of [
    [1, 2],
    [10, 4],
    [5, 4],
    [6, 5],
  ] as Array<[Level, number]>) {
    test(`raid${level}: out-of-range internal requests are bugs; the user's are errors`, async () => {
      const devs = await memoryArray({ level, sizesMiB: new Array(disks).fill(4), chunkKiB: 64, assumeClean: true });
      const arr = await MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock() });
      try {
        const p = arr.personality;
        const end = p.arraySectors;
        // the user's request past the end: an errno, from the array
        await assert.rejects(arr.read(new Uint8Array(1024), end * 512 - 512), (e) => isTsmdError(e, 'ENOSPC'));
        // the same reaching the personality: a bug
        await assert.rejects(p.read(new Uint8Array(1024), end - 1), invariant);
        await assert.rejects(p.write(new Uint8Array(512), end), invariant);
        await assert.rejects(p.read(new Uint8Array(512), -1), invariant);
        await assert.rejects(p.write(new Uint8Array(100), 0), invariant);
        // sync windows: empty, or past the end of their space, or a slot that is not there
        await assert.rejects(p.syncRegion(0, 0, new Set()), invariant);
        await assert.rejects(p.syncRegion(p.syncSectors - 8, 16, new Set()), invariant);
        await assert.rejects(p.checkRegion(p.syncSectors, 8, false), invariant);
        await assert.rejects(p.syncRegion(0, 8, new Set([disks])), invariant);
        // and in range, all is well
        await p.write(new Uint8Array(512).fill(7), end - 1);
        const back = new Uint8Array(512);
        await p.read(back, end - 1);
        assert.deepEqual(back, new Uint8Array(512).fill(7));
        assert.equal(await p.checkRegion(0, 8, false), 0);
      } finally {
        await arr.close();
      }
    });
  }
});
