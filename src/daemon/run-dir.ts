/**
 * Where a daemon keeps its control socket, pid file and state (its run directory): light
 * enough for the CLI, which only talks to a daemon, to import without the daemon itself.
 */
import { join, resolve } from 'node:path';
import { TsmdError } from '../errors.js';

export function defaultRunDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TSMD_RUN_DIR) return resolve(env.TSMD_RUN_DIR);
  if (env.TSMD_UNDER_TEST) throw new TsmdError('EINVAL', 'under test (TSMD_UNDER_TEST) the default run directory is refused: give --run-dir or TSMD_RUN_DIR');
  if (process.getuid?.() === 0) return '/run/tsmd';
  return join(env.XDG_RUNTIME_DIR ?? '/tmp', `tsmd-${process.getuid?.() ?? 'user'}`);
}

export function controlPath(runDir: string): string {
  return join(runDir, 'control.sock');
}
