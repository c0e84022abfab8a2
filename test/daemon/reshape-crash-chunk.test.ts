/**
 * Reshapes in the daemon under kill -9: a raid5 chunk change 64K->128K, which keeps the number
 * of data disks (where the kernel checkpoints late and a stop can lose data).
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

  for (const k of kinds.filter((x) => ['raid5 chunk 64K->128K'].includes(x.name))) test(k.name, () => reshapeCrashRun(k, dir.path));
});
