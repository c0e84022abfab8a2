/**
 * Reshapes in the daemon under kill -9: a raid5 4->5 grow on superblock 1.0 at full size (no
 * room around the data), which runs in place after its critical section (mdadm's old way): the
 * steps have no offset shift to lean on, only the distance the new rows lag the old ones.
 * The shared steps and what they judge: test/helpers/reshape-crash.ts.
 * TSMD_RESHAPE_CRASH_ITERATIONS sets the kills per reshape (default: the kind's count in test/helpers/reshape-crash.ts).
 */
import { after, before, describe, test } from 'node:test';
import { kinds, reshapeCrashRun } from '../helpers/reshape-crash.js';
import { tempDir } from '../helpers/tools.js';

describe('reshape in the daemon: kill -9 at random moments', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('reshape-crash');
  });
  after(() => dir.cleanup());

  for (const k of kinds.filter((x) => x.metadata === '1.0')) test(k.name, () => reshapeCrashRun(k, dir.path));
});
