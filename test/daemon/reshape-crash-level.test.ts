/**
 * A level change that moves data in the daemon under kill -9: raid5 -> raid6 (mdadm --grow
 * --level=6 --raid-devices=5: takeover to left-symmetric-6, Q rebuilt along with the reshape
 * to left-symmetric). The shared steps and what they judge: test/helpers/reshape-crash.ts.
 * TSMD_RESHAPE_CRASH_ITERATIONS sets the kills (default: the kind's count in test/helpers/reshape-crash.ts). The other level changes that
 * move data through the command line: grow-level.test.ts.
 */
import { after, before, describe, test } from 'node:test';
import { kinds, reshapeCrashRun } from '../helpers/reshape-crash.js';
import { tempDir } from '../helpers/tools.js';

describe('level change in the daemon: kill -9 at random moments', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('reshape-crash-level');
  });
  after(() => dir.cleanup());

  for (const k of kinds.filter((x) => x.name === 'raid5 -> raid6')) test(k.name, () => reshapeCrashRun(k, dir.path));
});
