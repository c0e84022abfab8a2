/**
 * A shrink in the daemon under kill -9: raid5 4->3 after --array-size, in place with a backup
 * file (found again at every restart through the run directory's backup_file-md0 link, as
 * mdadm's locate_backup finds it). The shared steps and what they judge:
 * test/helpers/reshape-crash.ts. TSMD_RESHAPE_CRASH_ITERATIONS sets the kills (default: the kind's count in test/helpers/reshape-crash.ts).
 */
import { after, before, describe, test } from 'node:test';
import { kinds, reshapeCrashRun } from '../helpers/reshape-crash.js';
import { tempDir } from '../helpers/tools.js';

describe('shrink in place in the daemon: kill -9 at random moments', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('reshape-crash-shrink');
  });
  after(() => dir.cleanup());

  for (const k of kinds.filter((x) => x.name === 'raid5 shrink 4->3 in place')) test(k.name, () => reshapeCrashRun(k, dir.path));
});
