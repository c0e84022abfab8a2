/** Run a tsmd node daemon as a child process, as a user would (bin/tsmd daemon). */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { type ArrayState, controlCall } from '../../src/daemon/control.js';
import { run, tsmdBin, type RunResult } from './tools.js';

/** How long a daemon gets to stop cleanly before the test calls it hung. */
const STOP_TIMEOUT_MS = 60_000;

export interface DaemonInfo {
  pid: number;
  nbd: { host: string; port: number } | null;
  metrics: { host: string; port: number } | null;
}

export interface TestDaemon {
  proc: ChildProcess;
  runDir: string;
  info: DaemonInfo;
  /** accumulated stderr (pino JSON lines) */
  logs: () => string;
  /** run the CLI against this daemon */
  tsmd: (args: string[]) => RunResult;
  /** SIGTERM (or another signal) and wait for the exit code */
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
  /** SIGKILL (a crash: no clean stop, nothing flushed) and wait for the exit */
  kill9: () => Promise<number | null>;
  exited: Promise<number | null>;
}

/** Where and how the daemon process runs (test/helpers/hosts.ts runs it inside a host). */
export interface DaemonSpawnOptions {
  /**
   * Command prefix that runs the daemon and its CLI elsewhere, e.g. `nsenter -t PID -m -u -n
   * --`: it must exec the command (same pid), so that signals and daemon.json's pid are the
   * daemon's own.
   */
  wrap?: string[];
  /** NBD listener HOST:PORT (default 127.0.0.1:0, any free port) */
  listen?: string;
}

export async function startDaemon(
  runDir: string,
  extra: string[] = [],
  env: NodeJS.ProcessEnv = {},
  opts: DaemonSpawnOptions = {},
): Promise<TestDaemon> {
  // a daemon killed with SIGKILL leaves its daemon.json behind: wait for the new one's
  rmSync(join(runDir, 'daemon.json'), { force: true });
  // the daemon assembles mdadm.conf's arrays at start: a test daemon never reads the machine's
  // /etc/mdadm/mdadm.conf (its ARRAY lines are not the test's); a test that wants the boot
  // assembly names its own --config (or turns it off itself)
  const boot = extra.some((a) => a === '--no-assemble' || a === '--config' || a.startsWith('--config=')) ? [] : ['--no-assemble'];
  const wrap = opts.wrap ?? [];
  const argv = [process.execPath, tsmdBin, 'daemon', '--run-dir', runDir, '--listen', opts.listen ?? '127.0.0.1:0', ...boot, ...extra];
  const proc = spawn(wrap[0] ?? argv[0]!, [...wrap.slice(1), ...(wrap.length ? argv : argv.slice(1))], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, TZ: 'UTC', ...env },
  });
  let err = '';
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (c: string) => {
    err += c;
  });
  const exited = new Promise<number | null>((res) => proc.on('exit', (code) => res(code)));
  const infoPath = join(runDir, 'daemon.json');
  const t0 = Date.now();
  let info: DaemonInfo;
  try {
    while (!existsSync(infoPath)) {
      if (proc.exitCode !== null) throw new Error(`daemon exited early (${proc.exitCode}):\n${err}`);
      if (Date.now() - t0 > 15000) throw new Error(`daemon did not start within 15 s:\n${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    info = JSON.parse(readFileSync(infoPath, 'utf8')) as DaemonInfo;
  } catch (e) {
    // never leave a daemon behind: its pipe alone would keep the test file from ending
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
    throw e;
  }
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    // a daemon that does not stop fails the test with its log instead of hanging the suite
    let hung = false;
    const timer = setTimeout(() => {
      hung = true;
      proc.kill('SIGKILL');
    }, STOP_TIMEOUT_MS);
    const code = await exited;
    clearTimeout(timer);
    if (hung) throw new Error(`daemon (pid ${proc.pid}) did not exit within ${STOP_TIMEOUT_MS / 1000} s of ${signal}; killed. Log tail:\n${err.slice(-8000)}`);
    return code;
  };
  return {
    proc,
    runDir,
    info,
    logs: () => err,
    tsmd: (args) => {
      try {
        const cli = [process.execPath, tsmdBin, '--run-dir', runDir, ...args];
        return run(wrap[0] ?? cli[0]!, [...wrap.slice(1), ...(wrap.length ? cli : cli.slice(1))]);
      } catch (e) {
        // a hung command: what the daemon was doing is the useful part
        (e as Error).message += `\n--- daemon log tail:\n${err.slice(-8000)}`;
        throw e;
      }
    },
    stop,
    kill9: () => stop('SIGKILL'),
    exited,
  };
}

/** The daemon's state of one array (control op `arrays`), by md name (md0) or device path (/dev/md/x). */
export async function arrayStateOf(d: TestDaemon, which: string): Promise<ArrayState> {
  const rep = await controlCall(join(d.runDir, 'control.sock'), { op: 'arrays' }, 5000);
  const a = rep.arrays?.find((x) => x.mdName === which || x.devPath === which);
  assert.ok(a, `${which} is running`);
  return a;
}

/** Poll an asynchronous condition every 50 ms until it holds; fails after `timeoutMs`. */
export async function untilAsync(what: string, cond: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
