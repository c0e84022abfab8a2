/**
 * raid10 offset=2 shrink 5 -> 4 in the daemon under kill -9 (src/md/reshape-raid10.ts): after
 * --array-size, backwards with the data offset moved up, the component size first reduced by
 * min_offset_change as mdadm does when there is no room after the data; the member that
 * leaves ends a spare.
 * The shared steps and what they judge are test/helpers/reshape-crash.ts (acknowledged durable
 * writes read back after every restart, the reshape resumes, check 0, the real mdadm --examine
 * prints what tsmd --examine prints, in the middle and at the end).
 * TSMD_RESHAPE_CRASH_ITERATIONS sets the kills (default: the kind's count in test/helpers/reshape-crash.ts).
 */
import { after, before, describe, test } from 'node:test';
import { kinds, reshapeCrashRun } from '../helpers/reshape-crash.js';
import { tempDir } from '../helpers/tools.js';

describe('raid10 shrink in the daemon: kill -9 at random moments', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('reshape-crash-r10-shrink');
  });
  after(() => dir.cleanup());

  for (const k of kinds.filter((x) => x.name === 'raid10 offset=2 shrink 5->4')) test(k.name, () => reshapeCrashRun(k, dir.path));
});
