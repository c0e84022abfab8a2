/**
 * External tools the interop tests use as independent judges (mdadm, losetup, NBD clients...).
 * A missing tool skips the test loudly when run by hand and fails it under CI (CI=true).
 */
import './isolate.js'; // first: TSMD_RUN_DIR of this process, never the user's daemon
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** repository root (dist/test/helpers → ../../..) */
export const repoRoot = resolve(here, '../../..');
export const tsmdBin = join(repoRoot, 'bin', 'tsmd');

export function haveTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** Returns false (after skipping t loudly) when the tool is missing; throws under CI. */
export function requireTool(t: TestContext, name: string, why = ''): boolean {
  if (haveTool(name)) return true;
  const msg = `MISSING TOOL: ${name} is not installed${why ? ` (${why})` : ''}; install it (see .ci/run)`;
  if (process.env.CI) throw new Error(msg);
  console.warn(`\n!!!!! ${msg} — skipping ${t.name}\n`);
  t.skip(msg);
  return false;
}

/** Loop devices need root; same policy as a missing tool. */
export function requireRoot(t: TestContext, why: string): boolean {
  if (process.getuid?.() === 0) return true;
  const msg = `NOT ROOT: ${why} needs root`;
  if (process.env.CI) throw new Error(msg);
  console.warn(`\n!!!!! ${msg} — skipping ${t.name}\n`);
  t.skip(msg);
  return false;
}

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

/**
 * Run a command to completion. A command that hangs is killed after timeoutMs (default 5
 * minutes) and the test fails with what it printed, instead of the suite waiting forever.
 */
export function run(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): RunResult {
  const timeoutMs = opts.timeoutMs ?? 300_000;
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    env: { ...process.env, TZ: 'UTC', ...opts.env },
    input: opts.input ?? '',
    maxBuffer: 64 * 1024 * 1024,
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
  });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT') {
    throw new Error(
      `${cmd} ${args.join(' ')}: no exit within ${timeoutMs / 1000} s (killed)\n--- stdout:\n${String(r.stdout ?? '').slice(-4000)}\n--- stderr:\n${String(r.stderr ?? '').slice(-4000)}`,
    );
  }
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Run the tsmd CLI (bin/tsmd) as a user would. */
export function tsmd(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string } = {},
): RunResult {
  return run(process.execPath, [tsmdBin, ...args], opts);
}

export function tempDir(prefix: string): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), `tsmd-${prefix}-`));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** Attach a file read-only to a loop device for the duration of fn. */
export async function withLoop<T>(file: string, fn: (dev: string) => Promise<T> | T): Promise<T> {
  const dev = execFileSync('losetup', ['-r', '-f', '--show', file], { encoding: 'utf8' }).trim();
  try {
    return await fn(dev);
  } finally {
    execFileSync('losetup', ['-d', dev]);
  }
}

/** "  Key : value" lines of mdadm output → map (first occurrence wins, keys trimmed). */
export function fields(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(' : ');
    if (i < 0) continue;
    const k = line.slice(0, i).trim();
    if (!m.has(k)) m.set(k, line.slice(i + 3).trim());
  }
  return m;
}

export function diffLines(a: string, b: string): string {
  const x = a.split('\n');
  const y = b.split('\n');
  const out: string[] = [];
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if (x[i] !== y[i])
      out.push(`line ${i + 1}:\n  - ${JSON.stringify(x[i])}\n  + ${JSON.stringify(y[i])}`);
  }
  return out.join('\n');
}

/** Create (or resize) a sparse file of the given size. */
export function sparseFile(path: string, bytes: number): string {
  writeFileSync(path, '', { flag: 'a' });
  truncateSync(path, bytes);
  return path;
}

/**
 * An alert program for tsmd --monitor --program (mdadm's: called as `program EVENT MD-DEVICE
 * [COMPONENT]`) that appends "EVENT MD-DEVICE COMPONENT" to a file; `events()` reads it back,
 * `clear()` empties it.
 */
export function alertProgram(dir: string, name: string): { program: string; events: () => string; clear: () => void } {
  const file = join(dir, `${name}.events`);
  const program = join(dir, `${name}.sh`);
  writeFileSync(program, `#!/bin/sh\necho "$1 $2 $3" >> ${file}\n`);
  chmodSync(program, 0o755);
  writeFileSync(file, '');
  return { program, events: () => readFileSync(file, 'utf8'), clear: () => writeFileSync(file, '') };
}
