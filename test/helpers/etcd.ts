/**
 * A real etcd for tests: `/usr/bin/etcd` (Debian etcd-server) on free loopback ports with a
 * temporary data directory; stop (SIGTERM) / kill (SIGKILL) / start again on the same data and
 * ports (etcd outages); cleanup removes everything.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { haveTool, requireTool } from './tools.js';

export const ETCD_BIN = 'etcd';

/** A free TCP port on 127.0.0.1 (bound then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function healthy(url: string): Promise<boolean> {
  try {
    const ctl = new AbortController();
    const t = setTimeout(() => ctl.abort(), 500);
    const r = await fetch(`${url}/health`, { signal: ctl.signal });
    clearTimeout(t);
    if (!r.ok) return false;
    const body = (await r.json()) as { health?: string };
    return body.health === 'true';
  } catch {
    return false;
  }
}

export class EtcdServer {
  readonly dataDir: string;
  readonly clientUrl: string;
  private proc: ChildProcess | undefined;
  private log = '';

  private constructor(
    readonly clientPort: number,
    readonly peerPort: number,
  ) {
    this.dataDir = mkdtempSync(join(tmpdir(), 'tsmd-etcd-'));
    this.clientUrl = `http://127.0.0.1:${clientPort}`;
  }

  /** Start etcd on two free loopback ports and wait until it answers /health. */
  static async start(): Promise<EtcdServer> {
    const s = new EtcdServer(await freePort(), await freePort());
    await s.startAgain();
    return s;
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** (Re)start on the same data directory and ports. */
  async startAgain(timeoutMs = 15_000): Promise<void> {
    if (this.running) return;
    const peer = `http://127.0.0.1:${this.peerPort}`;
    this.log = '';
    const p = spawn(ETCD_BIN, [
      '--name', 'tsmd-test',
      '--data-dir', this.dataDir,
      '--listen-client-urls', this.clientUrl,
      '--advertise-client-urls', this.clientUrl,
      '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `tsmd-test=${peer}`,
      '--initial-cluster-state', 'new',
      '--log-level', 'error',
      '--logger', 'zap',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    p.stderr!.on('data', (b: Buffer) => {
      this.log = (this.log + b.toString()).slice(-8000);
    });
    this.proc = p;
    const t0 = Date.now();
    while (Date.now() - t0 < timeoutMs) {
      if (!this.running) throw new Error(`etcd exited at start (code ${p.exitCode}, signal ${p.signalCode}):\n${this.log}`);
      if (await healthy(this.clientUrl)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`etcd did not become healthy within ${timeoutMs} ms:\n${this.log}`);
  }

  /** Stop etcd (SIGTERM, or SIGKILL with kill = true) and wait for it to exit. */
  async stop(kill = false): Promise<void> {
    const p = this.proc;
    if (!p || !this.running) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill(kill ? 'SIGKILL' : 'SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }

  async cleanup(): Promise<void> {
    await this.stop(true);
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** requireTool for etcd: skips loudly by hand, fails under CI=true. */
export function requireEtcd(t: TestContext): boolean {
  return requireTool(t, ETCD_BIN, 'the etcd DLM backend tests run against a real etcd (Debian etcd-server)');
}

export function haveEtcd(): boolean {
  return haveTool(ETCD_BIN);
}
