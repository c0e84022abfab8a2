/**
 * The NBD server of tsmd: fixed newstyle handshake, optional TLS (STARTTLS), any number of
 * listeners (TCP and Unix sockets), every connection served by an NbdConnection.
 */
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import { connect, createServer, type OnReadOpts, type Server, Socket } from 'node:net';
import { createSecureContext } from 'node:tls';
import { assert, type AssertionError, isTsmdError, TsmdError } from '../errors.js';
import { BufferPool } from './buffer-pool.js';
import { type ConnectionConfig, emptyStats, type LogFn, NbdConnection, type NbdServerStats } from './connection.js';
import type { ExportRegistry } from './target.js';

export type { CommandName, LogFn, NbdServerStats } from './connection.js';

export interface NbdServerOptions {
  exports: ExportRegistry;
  /**
   * x509, PEM strings. require = refuse plain clients (ERR_TLS_REQD); verifyPeer = clients
   * must present a certificate signed by `ca`. verifyPeer defaults to "a ca is given", as
   * nbd-server (cacertfile) and qemu-nbd (tls-creds-x509 verify-peer=on) do: a CA loaded and
   * then not asked would let any client certificate, or none, read and write the exports.
   */
  tls?: { key: string; cert: string; ca?: string; require: boolean; verifyPeer?: boolean };
  /** default 32 MiB; larger WRITE payloads are read, discarded and refused with EINVAL */
  maxPayloadBytes?: number;
  /** bound on concurrent requests per connection (default 64); back-pressure pauses the socket */
  maxInflightPerConnection?: number;
  /** bound on the READ/WRITE bytes in flight per connection (default 128 MiB; one request always fits) */
  maxInflightBytesPerConnection?: number;
  /**
   * Read plain sockets through `onread` into buffers the connection chooses, so that WRITE
   * payloads are copied once, by the kernel, into their own buffers (default true). false: the
   * socket's 'data' chunks, gathered. TLS connections always use the latter after STARTTLS.
   */
  directReads?: boolean;
  /** drop clients that stall during the handshake (default 30 s) */
  handshakeTimeoutMs?: number;
  /** at most this many client connections at a time (default 1024) */
  maxConnections?: number;
  log?: LogFn;
  /**
   * A request failed an assert() (a bug in tsmd or its target): the client has been cut off
   * without a reply; this decides what happens to the process. Default: the error is thrown
   * again from a fresh tick, i.e. an uncaughtException that ends the process (Node's answer to
   * a bug) and fails the test that provoked it. A handler that returns keeps the server up.
   */
  onBug?: (e: AssertionError) => void;
}

/** NbdServerOptions.onBug's default: crash with the bug, outside any promise chain that could swallow it. */
function rethrowBug(e: AssertionError): void {
  process.nextTick(() => {
    throw e;
  });
}

export interface ListenAddress {
  host?: string;
  port?: number;
  path?: string;
}

const MiB = 1024 * 1024;

export class NbdServer {
  private readonly cfg: ConnectionConfig;
  private readonly maxConnections: number;
  private readonly directReads: boolean;
  private readonly listeners: { server: Server; path?: string }[] = [];
  private readonly conns = new Set<NbdConnection>();
  private readonly st: NbdServerStats = emptyStats();
  private closing: Promise<void> | undefined;

  constructor(opts: NbdServerOptions) {
    const maxPayloadBytes = opts.maxPayloadBytes ?? 32 * MiB;
    if (!Number.isSafeInteger(maxPayloadBytes) || maxPayloadBytes < 4096 || maxPayloadBytes > 0xffffffff) {
      throw new TsmdError('EINVAL', `maxPayloadBytes ${maxPayloadBytes} must be an integer between 4096 and 2^32-1`);
    }
    const maxInflight = opts.maxInflightPerConnection ?? 64;
    if (!Number.isSafeInteger(maxInflight) || maxInflight < 1) {
      throw new TsmdError('EINVAL', `maxInflightPerConnection ${maxInflight} must be a positive integer`);
    }
    const maxInflightBytes = opts.maxInflightBytesPerConnection ?? 128 * MiB;
    const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 30_000;
    if (!(handshakeTimeoutMs > 0)) throw new TsmdError('EINVAL', 'handshakeTimeoutMs must be positive');
    let tls: ConnectionConfig['tls'];
    if (opts.tls) {
      let context;
      try {
        context = createSecureContext({ key: opts.tls.key, cert: opts.tls.cert, ca: opts.tls.ca });
      } catch (e) {
        throw new TsmdError('EINVAL', `NBD TLS key/certificate rejected: ${(e as Error).message}`, { cause: e });
      }
      tls = { context, require: opts.tls.require, verifyPeer: opts.tls.verifyPeer ?? opts.tls.ca !== undefined };
      if (tls.verifyPeer && !opts.tls.ca) {
        throw new TsmdError('EINVAL', 'NBD TLS verifyPeer needs a ca certificate to check clients against');
      }
    }
    this.maxConnections = opts.maxConnections ?? 1024;
    this.directReads = opts.directReads ?? true;
    this.cfg = {
      exports: opts.exports,
      tls,
      maxPayloadBytes,
      maxInflight,
      maxInflightBytes,
      handshakeTimeoutMs,
      log: opts.log ?? (() => {}),
      stats: this.st,
      pool: new BufferPool(64 * MiB),
      onBug: opts.onBug ?? rethrowBug,
    };
  }

  /** Starts one more listener (port 0 = ephemeral). Resolves with the bound address. */
  async listen(where: { host: string; port: number } | { path: string }): Promise<ListenAddress> {
    if (this.closing) throw new TsmdError('EINVAL', 'NBD server is closed; create a new one to listen again');
    // paused: a socket that is adopted (adoptWithOnread) must not have read anything yet
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => this.onConnection(sock));
    server.maxConnections = this.maxConnections;
    try {
      await listenOnce(server, where);
    } catch (e) {
      // a Unix socket left behind by a process that died: nobody answers on it, so replace it
      if ('path' in where && isTsmdError(e, 'EBUSY') && (await isStaleSocket(where.path))) {
        this.cfg.log('warn', 'nbd: removing a stale Unix socket', { path: where.path });
        unlinkSync(where.path);
        await listenOnce(server, where);
      } else {
        throw e;
      }
    }
    server.on('error', (e) => this.cfg.log('error', 'nbd: listener error', { err: e.message }));
    const path = 'path' in where ? where.path : undefined;
    this.listeners.push({ server, path });
    const addr = server.address();
    if (path !== undefined) {
      this.cfg.log('info', 'nbd: listening', { path });
      return { path };
    }
    assert(addr !== null && typeof addr === 'object', 'TCP listener has an address');
    this.cfg.log('info', 'nbd: listening', { host: addr.address, port: addr.port });
    return { host: addr.address, port: addr.port };
  }

  /** Stop accepting; in-flight requests complete; idle clients are disconnected. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const stopped = this.listeners.map(
      (l) =>
        new Promise<void>((resolve) => {
          l.server.close(() => resolve());
        }),
    );
    for (const c of this.conns) c.shutdown();
    await Promise.all([...stopped, ...[...this.conns].map((c) => c.done)]);
    for (const l of this.listeners) {
      // Node removes its Unix socket on close; be sure, without touching anything else
      if (l.path !== undefined && existsSync(l.path) && lstatSync(l.path).isSocket()) {
        try {
          unlinkSync(l.path);
        } catch {
          // already gone
        }
      }
    }
    this.cfg.log('info', 'nbd: server closed', {});
  }

  /** Client connections open right now. */
  get connections(): number {
    return this.conns.size;
  }

  /** A snapshot of the counters (for the daemon's metrics). */
  get stats(): NbdServerStats {
    const s = this.st;
    return {
      ...s,
      connectionsCurrent: this.conns.size,
      requests: { ...s.requests },
      errors: { ...s.errors },
    };
  }

  private onConnection(sock: Socket): void {
    if (this.closing) {
      sock.destroy();
      return;
    }
    this.st.connectionsTotal++;
    // the socket asks for its first read buffer before the connection exists
    const ref: { conn?: NbdConnection } = {};
    const adopted = this.directReads
      ? adoptWithOnread(sock, {
          buffer: () => ref.conn?.readBuffer() ?? Buffer.allocUnsafe(4096),
          callback: (n, buf) => {
            ref.conn?.onRead(n, buf);
            return true;
          },
        })
      : null;
    if (adopted) sock = adopted;
    else sock.resume();
    const conn = new NbdConnection(sock, this.cfg);
    ref.conn = conn;
    this.conns.add(conn);
    this.cfg.log('debug', 'nbd: client connected', { peer: sock.remoteAddress ?? 'unix', connections: this.conns.size });
    void conn.done.then(() => {
      this.conns.delete(conn);
    });
  }
}

/**
 * A socket the server accepted (paused, nothing read yet) moved onto a new net.Socket created
 * with `onread`, which Node offers for client sockets only: the new socket takes the libuv
 * handle over, the accepted one is closed without it. Uses Node internals (`_handle`, the
 * `handle` constructor option, `_server` for the server's connection count) that are stable
 * since Node 12; when they are missing, null, and the accepted socket is used as it is.
 */
function adoptWithOnread(accepted: Socket, onread: OnReadOpts): Socket | null {
  const a = accepted as Socket & { _handle?: { useUserBuffer?: unknown } | null; _server?: Server | null; server?: Server | null };
  const handle = a._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function' || accepted.readableFlowing) return null;
  const s = new Socket({ handle, allowHalfOpen: true, readable: true, writable: true, onread } as ConstructorParameters<typeof Socket>[0]) as typeof a;
  // the server counts its connections down when a socket with `_server` is destroyed: move it
  s._server = a._server;
  s.server = a.server;
  a._server = null;
  a._handle = null;
  accepted.destroy();
  return s;
}

function listenOnce(server: Server, where: { host: string; port: number } | { path: string }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      const at = 'path' in where ? where.path : `${where.host}:${where.port}`;
      reject(new TsmdError(e.code === 'EADDRINUSE' ? 'EBUSY' : 'EIO', `NBD server cannot listen on ${at}: ${e.message}`, { cause: e }));
    };
    server.once('error', onError);
    const done = () => {
      server.off('error', onError);
      resolve();
    };
    if ('path' in where) server.listen(where.path, done);
    else server.listen(where.port, where.host, done);
  });
}

/** A Unix socket file nobody listens on (connection refused). */
function isStaleSocket(path: string): Promise<boolean> {
  try {
    if (!lstatSync(path).isSocket()) return Promise.resolve(false);
  } catch {
    return Promise.resolve(false);
  }
  return new Promise((resolve) => {
    const c = connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(false);
    });
    c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}
