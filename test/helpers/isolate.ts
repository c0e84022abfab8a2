/**
 * Keeps the test suite away from the user's own daemon (issue 15): `npm start` runs the demo
 * daemon on the default run directory (TSMD_RUN_DIR, else /run/tsmd for root), and any
 * `bin/tsmd` a test ran without `--run-dir` used to be forwarded to it — arrays were created in
 * the user's daemon and tests failed on its state.
 *
 * Loaded first in every test process (`node --import` in package.json's test script, and
 * imported by helpers/tools.ts so a test file run by hand gets it too): it points TSMD_RUN_DIR
 * at a fresh directory of this process, which every child (bin/tsmd, test daemons) inherits,
 * and sets TSMD_UNDER_TEST so that src/daemon/daemon.ts defaultRunDir() refuses, rather than
 * guessing the machine's default, if a child ever loses TSMD_RUN_DIR. TSMD_CONF points at an
 * empty mdadm.conf of its own for the same reason.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const MARK = 'TSMD_TEST_ISOLATED_PID';

// once per process: the --import and the import from tools.ts run this module once anyway (one
// module instance), but a child test process must not keep its parent's directory
if (process.env[MARK] !== String(process.pid)) {
  const dir = mkdtempSync(join(tmpdir(), 'tsmd-test-run-'));
  process.env.TSMD_RUN_DIR = dir;
  // the machine's /etc/mdadm/mdadm.conf is not the tests' either (Debian's says MAILADDR root,
  // which a --monitor would mail to): an empty one, unless a test run names its own
  if (process.env.TSMD_CONF === undefined) {
    process.env.TSMD_CONF = join(dir, 'mdadm.conf');
    writeFileSync(process.env.TSMD_CONF, '');
  }
  process.env.TSMD_UNDER_TEST = '1';
  process.env[MARK] = String(process.pid);
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
}

/** This process's run directory: what a bare `bin/tsmd` from a test talks to (no daemon there). */
export const isolatedRunDir: string = process.env.TSMD_RUN_DIR!;
