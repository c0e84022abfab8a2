/**
 * Reshapes in the daemon under kill -9: raid6 grow 5->6; and bad --grow requests.
 * The shared steps and what they judge: test/helpers/reshape-crash.ts.
 * TSMD_RESHAPE_CRASH_ITERATIONS sets the kills per reshape (default: the kind's count in test/helpers/reshape-crash.ts).
 */
import { after, before, describe, test } from 'node:test';
import { badGrowRequests, kinds, reshapeCrashRun } from '../helpers/reshape-crash.js';
import { tempDir } from '../helpers/tools.js';

describe('reshape in the daemon: kill -9 at random moments', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('reshape-crash');
  });
  after(() => dir.cleanup());

  for (const k of kinds.filter((x) => ['raid6 grow 5->6'].includes(x.name))) test(k.name, () => reshapeCrashRun(k, dir.path));

  test("bad --grow requests: mdadm's messages, nothing written", () => badGrowRequests(dir.path));
});
