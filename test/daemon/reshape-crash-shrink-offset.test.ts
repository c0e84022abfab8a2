/**
 * A shrink in the daemon under kill -9: raid5 4->3 after --array-size with the data offset
 * moved up (the array made with --size leaves room after the data) and an internal bitmap.
 * The shared steps and what they judge: test/helpers/reshape-crash.ts.
 * TSMD_RESHAPE_CRASH_ITERATIONS sets the kills (default: the kind's count in test/helpers/reshape-crash.ts).
 */
import { after, before, describe, test } from 'node:test';
import { kinds, reshapeCrashRun } from '../helpers/reshape-crash.js';
import { tempDir } from '../helpers/tools.js';

describe('shrink with the data offset moved up in the daemon: kill -9 at random moments', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('reshape-crash-shrink-offset');
  });
  after(() => dir.cleanup());

  for (const k of kinds.filter((x) => x.name === 'raid5 shrink 4->3 offset up')) test(k.name, () => reshapeCrashRun(k, dir.path));
});
