/**
 * raid10 near=2 grow 4->5 with an internal bitmap (resized to the new array size at the start,
 * as md_bitmap_resize does) in the daemon under kill -9 (src/md/reshape-raid10.ts): the shared
 * steps and what they judge are test/helpers/reshape-crash.ts (acknowledged durable writes
 * read back after every restart, the reshape resumes, new size, check 0, the real mdadm
 * --examine prints what tsmd --examine prints, in the middle and at the end).
 * TSMD_RESHAPE_CRASH_ITERATIONS sets the kills (default: the kind's count in test/helpers/reshape-crash.ts).
 */
import { after, before, describe, test } from 'node:test';
import { kinds, reshapeCrashRun } from '../helpers/reshape-crash.js';
import { tempDir } from '../helpers/tools.js';

describe('raid10 reshape in the daemon: kill -9 at random moments', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('reshape-crash-r10');
  });
  after(() => dir.cleanup());

  for (const k of kinds.filter((x) => x.name === 'raid10 near=2 grow 4->5')) test(k.name, () => reshapeCrashRun(k, dir.path));
});
