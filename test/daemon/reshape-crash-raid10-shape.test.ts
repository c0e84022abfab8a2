/**
 * raid10 near=2 -> offset=2 with the chunk 64K -> 128K in the daemon under kill -9
 * (src/md/reshape-raid10.ts): a reshape that keeps the number of devices, so every step is
 * bounded by the distance the data offset moved and the offset layout's stripes fill two rows.
 * The shared steps and what they judge are test/helpers/reshape-crash.ts (acknowledged durable
 * writes read back after every restart, the reshape resumes, check 0, the real mdadm --examine
 * prints what tsmd --examine prints, in the middle and at the end).
 * TSMD_RESHAPE_CRASH_ITERATIONS sets the kills (default: the kind's count in test/helpers/reshape-crash.ts).
 */
import { after, before, describe, test } from 'node:test';
import { kinds, reshapeCrashRun } from '../helpers/reshape-crash.js';
import { tempDir } from '../helpers/tools.js';

describe('raid10 layout and chunk change in the daemon: kill -9 at random moments', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('reshape-crash-r10-shape');
  });
  after(() => dir.cleanup());

  for (const k of kinds.filter((x) => x.name === 'raid10 near=2 -> offset=2, chunk 64K->128K')) test(k.name, () => reshapeCrashRun(k, dir.path));
});
