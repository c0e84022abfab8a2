/**
 * A real etcd for tests: `/usr/bin/etcd` (Debian etcd-server) on free loopback ports with a
 * temporary data directory; stop (SIGTERM) / kill (SIGKILL) / start again on the same data and
 * ports (etcd outages); cleanup removes everything. With `{ tls: true }` the client port speaks
 * mutual TLS only: a fresh CA, server and client certificate are made with `openssl` in the data
 * directory's parent for this server alone. With `{ listen: [addresses] }` the client port also
 * listens on those local addresses (the host side of test/helpers/hosts.ts's network
 * namespaces), as a real etcd listens on the address its cluster's nodes reach it by.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { haveTool, requireTool } from './tools.js';

export const ETCD_BIN = 'etcd';
export const OPENSSL_BIN = 'openssl';

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

/** PEM files of a test PKI: a CA, a server certificate for 127.0.0.1, a client certificate. */
export interface TestPki {
  dir: string;
  caFile: string;
  serverCert: string;
  serverKey: string;
  /** what a client passes as EtcdDlmOptions.tls */
  client: { ca: Buffer; cert: Buffer; key: Buffer };
}

/**
 * Make a throw-away PKI with openssl in `dir` (EC P-256 keys, valid one day); the server
 * certificate names 127.0.0.1, localhost and `ips`.
 */
export function makeTestPki(dir: string, ips: string[] = []): TestPki {
  mkdirSync(dir, { recursive: true });
  const f = (n: string): string => join(dir, n);
  const ssl = (...args: string[]): void => {
    execFileSync(OPENSSL_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  };
  const key = (n: string): void => ssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f(n));
  key('ca.key');
  ssl('req', '-x509', '-new', '-key', f('ca.key'), '-subj', '/CN=tsmd test CA', '-days', '1', '-out', f('ca.pem'),
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  const leaf = (name: string, cn: string, ext: string): void => {
    key(`${name}.key`);
    ssl('req', '-new', '-key', f(`${name}.key`), '-subj', `/CN=${cn}`, '-out', f(`${name}.csr`));
    writeFileSync(f(`${name}.ext`), ext);
    ssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
      '-days', '1', '-extfile', f(`${name}.ext`), '-out', f(`${name}.pem`));
  };
  const san = ['IP:127.0.0.1', 'DNS:localhost', ...ips.map((ip) => `IP:${ip}`)].join(',');
  leaf('server', '127.0.0.1', `subjectAltName=${san}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n`);
  leaf('client', 'tsmd-dlm', 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n');
  return {
    dir,
    caFile: f('ca.pem'),
    serverCert: f('server.pem'),
    serverKey: f('server.key'),
    client: { ca: readFileSync(f('ca.pem')), cert: readFileSync(f('client.pem')), key: readFileSync(f('client.key')) },
  };
}

function healthyTls(url: string, pki: TestPki): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpsRequest(`${url}/health`, { ...pki.client, servername: 'localhost', timeout: 500 }, (res) => {
      let body = '';
      res.on('data', (b: Buffer) => (body += b.toString()));
      res.on('end', () => {
        try {
          resolve(res.statusCode === 200 && (JSON.parse(body) as { health?: string }).health === 'true');
        } catch {
          resolve(false);
        }
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

async function healthy(url: string, pki?: TestPki): Promise<boolean> {
  if (pki) return healthyTls(url, pki);
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
  /** the loopback client URL */
  readonly clientUrl: string;
  /** every client URL etcd listens on: loopback first, then one per `listen` address */
  readonly clientUrls: string[];
  /** with `tls`: the PKI; the client port then requires a certificate signed by its CA */
  readonly pki: TestPki | undefined;
  private readonly root: string;
  private proc: ChildProcess | undefined;
  private log = '';

  private constructor(
    readonly clientPort: number,
    readonly peerPort: number,
    tls: boolean,
    listen: string[],
  ) {
    this.root = mkdtempSync(join(tmpdir(), 'tsmd-etcd-'));
    this.dataDir = join(this.root, 'data');
    this.pki = tls ? makeTestPki(join(this.root, 'pki'), listen) : undefined;
    this.clientUrls = ['127.0.0.1', ...listen].map((h) => `${tls ? 'https' : 'http'}://${h}:${clientPort}`);
    this.clientUrl = this.clientUrls[0]!;
  }

  /**
   * Start etcd on two free loopback ports (the client port also on each `listen` address, which
   * must be local) and wait until it answers /health.
   */
  static async start(opts: { tls?: boolean; listen?: string[] } = {}): Promise<EtcdServer> {
    const s = new EtcdServer(await freePort(), await freePort(), opts.tls === true, opts.listen ?? []);
    try {
      await s.startAgain();
    } catch (e) {
      await s.cleanup();
      throw e;
    }
    return s;
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** The client URL on local address `host` (one of the `listen` addresses, or 127.0.0.1). */
  urlOn(host: string): string {
    const u = this.clientUrls.find((x) => new URL(x).hostname === host);
    if (!u) throw new Error(`etcd does not listen on ${host} (it listens on ${this.clientUrls.join(', ')})`);
    return u;
  }

  /** (Re)start on the same data directory and ports. */
  async startAgain(timeoutMs = 15_000): Promise<void> {
    if (this.running) return;
    const peer = `http://127.0.0.1:${this.peerPort}`;
    this.log = '';
    // PR_SET_PDEATHSIG (setpriv, util-linux): etcd dies with this test process even if it is
    // SIGKILLed, instead of running on forever with its ports and data directory
    const [cmd, ...pre] = haveTool('setpriv') ? ['setpriv', '--pdeathsig', 'KILL', '--', ETCD_BIN] : [ETCD_BIN];
    const p = spawn(cmd!, [
      ...pre,
      '--name', 'tsmd-test',
      '--data-dir', this.dataDir,
      '--listen-client-urls', this.clientUrls.join(','),
      '--advertise-client-urls', this.clientUrls.join(','),
      '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `tsmd-test=${peer}`,
      '--initial-cluster-state', 'new',
      '--log-level', 'error',
      '--logger', 'zap',
      ...(this.pki
        ? ['--cert-file', this.pki.serverCert, '--key-file', this.pki.serverKey, '--trusted-ca-file', this.pki.caFile, '--client-cert-auth']
        : []),
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    p.stderr!.on('data', (b: Buffer) => {
      this.log = (this.log + b.toString()).slice(-8000);
    });
    this.proc = p;
    const t0 = Date.now();
    while (Date.now() - t0 < timeoutMs) {
      if (!this.running) throw new Error(`etcd exited at start (code ${p.exitCode}, signal ${p.signalCode}):\n${this.log}`);
      if (await healthy(this.clientUrl, this.pki)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    // not left running: its pipe would keep the test file's process alive
    await this.stop(true);
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

  /** Freeze etcd (SIGSTOP) for `ms`, then let it go on (SIGCONT): a stall, not an outage. */
  async pause(ms: number): Promise<void> {
    const p = this.proc;
    if (!p || !this.running) return;
    p.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, ms));
    p.kill('SIGCONT');
  }

  async cleanup(): Promise<void> {
    await this.stop(true);
    rmSync(this.root, { recursive: true, force: true });
  }

  /** cleanup() for a process that is exiting: SIGKILL without waiting, remove what can be. */
  cleanupSync(): void {
    if (this.running) this.proc!.kill('SIGKILL');
    rmSync(this.root, { recursive: true, force: true, maxRetries: 3 });
  }
}

/** requireTool for etcd: skips loudly by hand, fails under CI=true. */
export function requireEtcd(t: TestContext): boolean {
  return requireTool(t, ETCD_BIN, 'the etcd DLM backend tests run against a real etcd (Debian etcd-server)');
}

export function haveEtcd(): boolean {
  return haveTool(ETCD_BIN);
}

/** requireTool for openssl (the TLS test makes its certificates with it). */
export function requireOpenssl(t: TestContext): boolean {
  return requireTool(t, OPENSSL_BIN, 'the etcd TLS test makes its CA and certificates with openssl');
}
