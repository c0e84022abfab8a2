/**
 * Shrinks in the daemon under kill -9: raid5 4->3 after --array-size, in place with a backup
 * file (found again at every restart through the run directory's backup_file-md0 link, as
 * mdadm's locate_backup finds it) and with the data offset moved up (room after the data,
 * an internal bitmap). The shared steps and what they judge: test/helpers/reshape-crash.ts.
 * TSMD_RESHAPE_CRASH_ITERATIONS sets the kills per reshape (default 10).
 */
import { after, before, describe, test } from 'node:test';
import { kinds, reshapeCrashRun } from '../helpers/reshape-crash.js';
import { tempDir } from '../helpers/tools.js';

describe('shrink in the daemon: kill -9 at random moments', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('reshape-crash-shrink');
  });
  after(() => dir.cleanup());

  for (const k of kinds.filter((x) => x.shrink)) test(k.name, () => reshapeCrashRun(k, dir.path));
});
