/**
 * RAID4/5/6 writes keep parity correct with the cheapest strategy, counted at the members:
 * a full-stripe write reads nothing, a small write on a wide array uses read-modify-write
 * (reads the old data and parity only), a write covering most of a stripe reconstructs.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { MdArray } from '../../src/md/array.js';
import { memoryArray } from '../helpers/arrays.js';
import type { Level } from '../../src/md/create-plan.js';
import type { Raid456Personality } from '../../src/raid/raid456.js';
import { SystemClock } from '../../src/env/clock.js';

const KiB = 1024;

async function open(level: Level, disks: number) {
  const devs = await memoryArray({ level, sizesMiB: new Array(disks).fill(4), chunkKiB: 64, assumeClean: true });
  const handles = devs.map((d) => d.reopen());
  const arr = await MdArray.assemble(handles, { clock: new SystemClock() });
  await arr.write(new Uint8Array(4096), 0); // first write marks the array dirty (superblock I/O)
  const reads = () => handles.reduce((n, d) => n + d.stats.readBytes, 0);
  return { arr, reads, p: arr.personality as Raid456Personality };
}

describe('raid4/5/6 write strategy', () => {
  for (const [level, disks] of [
    [5, 4],
    [5, 6],
    [6, 6],
    [6, 8],
    [4, 5],
  ] as Array<[Level, number]>) {
    const data = disks - (level === 6 ? 2 : 1);
    const parity = level === 6 ? 2 : 1;
    const C = 64 * KiB;

    test(`raid${level} x${disks}: full stripe reads nothing`, async () => {
      const { arr, reads, p } = await open(level, disks);
      const r0 = reads();
      await arr.write(randomBytes(data * C), 2 * data * C); // all of stripe 2
      assert.equal(reads() - r0, 0, 'a full-stripe write must not read');
      assert.equal(p.stats.fullStripe, 1);
      await arr.close();
    });

    // md's rule: read-modify-write only when it reads strictly less than reconstruct-write
    const cases: Array<[string, number, number]> = [
      ['4 KiB inside one chunk', 4 * KiB, 3 * data * C + 8 * KiB],
      ['all chunks but one', (data - 1) * C, 5 * data * C],
      ['one whole chunk', C, 7 * data * C + C],
    ];
    for (const [what, len, off] of cases) {
      test(`raid${level} x${disks}: ${what} picks the cheaper of RMW and RCW`, async () => {
        const { arr, reads, p } = await open(level, disks);
        const chunks = len / Math.min(len, C) === 1 && len < C ? 1 : Math.ceil(len / C);
        const rows = Math.min(len, C); // every write here is chunk-aligned or inside one chunk
        const rmwCost = chunks * rows + parity * rows;
        const rcwCost = (data - chunks) * rows;
        const before = { rmw: p.stats.rmw, rcw: p.stats.rcw };
        const r0 = reads();
        await arr.write(randomBytes(len), off);
        assert.equal(reads() - r0, Math.min(rmwCost, rcwCost), 'bytes read from the members');
        if (rmwCost < rcwCost) assert.equal(p.stats.rmw - before.rmw, 1, 'read-modify-write');
        else assert.equal(p.stats.rcw - before.rcw, 1, 'reconstruct-write');
        await arr.close();
      });
    }
  }
});
