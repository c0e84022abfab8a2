/**
 * Reshapes in the daemon under kill -9: raid5 grow 4->5 (with an internal bitmap).
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

  for (const k of kinds.filter((x) => ['raid5 grow 4->5'].includes(x.name))) test(k.name, () => reshapeCrashRun(k, dir.path));
});
