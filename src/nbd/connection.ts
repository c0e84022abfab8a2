/**
 * One NBD client connection: the fixed newstyle handshake (options, STARTTLS), then the
 * transmission phase with requests served concurrently (bounded) and replies sent as they
 * complete, out of order, tied to requests by cookie.
 *
 * The input is parsed incrementally from the socket's chunks; nothing is allocated from a
 * length the client sent unless that length is within the configured limits. On a plain
 * socket adopted with `onread` (server.ts), the connection also chooses where the kernel puts
 * the next bytes (`readBuffer`): the rest of a pending WRITE payload's own buffer, so that a
 * payload is copied once, by the kernel, or else the free part of a receive slab. A protocol error
 * that leaves the stream impossible to follow (bad magic, unknown client flags) is a hard
 * disconnect of this connection only; anything else gets an error reply and the connection
 * goes on.
 */
import type { Socket } from 'node:net';
import { type SecureContext, TLSSocket } from 'node:tls';
import { assert, type AssertionError } from '../errors.js';
import type { BufferPool } from './buffer-pool.js';
import { ByteQueue } from './byte-queue.js';
import { isCrash, isUnexpected, nbdErrnoOf } from './errors.js';
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_ID,
  Cmd,
  CMD_NAMES,
  CmdFlag,
  decodeRequestHeader,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContext,
  encodeNoneChunk,
  encodeOffsetDataHeader,
  encodeOptionReply,
  encodeRepServer,
  encodeSimpleReply,
  errnoName,
  HS_FIXED_NEWSTYLE,
  HS_NO_ZEROES,
  IHAVEOPT_HI,
  IHAVEOPT_LO,
  Info,
  MAX_EXTENTS_PER_REPLY,
  MAX_STRING_BYTES,
  NbdErrno,
  Opt,
  OPTION_HEADER_BYTES,
  optName,
  Rep,
  REQUEST_HEADER_BYTES,
  REQUEST_MAGIC,
  type RequestHeader,
  StateFlag,
  TxFlag,
} from './protocol.js';
import { advertisedBlockSize, type BlockTarget, type ExportRegistry, type NbdExport } from './target.js';

export type LogFn = (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

export type CommandName = 'read' | 'write' | 'flush' | 'trim' | 'cache' | 'writeZeroes' | 'disc' | 'blockStatus' | 'other';

/** Counters shared by all connections of a server (the server hands out copies). */
export interface NbdServerStats {
  connectionsCurrent: number;
  connectionsTotal: number;
  /** connections that reached the transmission phase */
  handshakesCompleted: number;
  /** connections dropped during the handshake (timeout, garbage, TLS failure, unknown export) */
  handshakeFailures: number;
  /** hard disconnects for protocol violations (bad magic, unknown client flags...) */
  protocolErrors: number;
  requests: Record<CommandName, number>;
  /** error replies by NBD errno name */
  errors: Record<string, number>;
  bytesRead: number;
  bytesWritten: number;
  /**
   * WRITE payload bytes by how they reached the target: read by the kernel straight into the
   * payload's buffer (user-buffer reads), handed on as a view of the socket chunk they came
   * in, or gathered (copied) from several chunks
   */
  payloadBytesDirect: number;
  payloadBytesInPlace: number;
  payloadBytesCopied: number;
  /** requests being served right now, all connections */
  inflight: number;
}

export function emptyStats(): NbdServerStats {
  return {
    connectionsCurrent: 0,
    connectionsTotal: 0,
    handshakesCompleted: 0,
    handshakeFailures: 0,
    protocolErrors: 0,
    requests: { read: 0, write: 0, flush: 0, trim: 0, cache: 0, writeZeroes: 0, disc: 0, blockStatus: 0, other: 0 },
    errors: {},
    bytesRead: 0,
    bytesWritten: 0,
    payloadBytesDirect: 0,
    payloadBytesInPlace: 0,
    payloadBytesCopied: 0,
    inflight: 0,
  };
}

export interface ConnectionConfig {
  exports: ExportRegistry;
  tls?: { context: SecureContext; require: boolean; verifyPeer: boolean };
  maxPayloadBytes: number;
  maxInflight: number;
  maxInflightBytes: number;
  handshakeTimeoutMs: number;
  log: LogFn;
  stats: NbdServerStats;
  pool: BufferPool;
  /** a request failed an assert(): called after the client is disconnected (see NbdServerOptions.onBug) */
  onBug: (e: AssertionError) => void;
}

/** Largest option payload parsed; longer ones are read, discarded and refused (ERR_TOO_BIG). */
export const MAX_OPTION_BYTES = 16 * 1024;
/** Reply bytes queued on the socket above which no new request is read. */
const OUTPUT_HIGH_WATER_BYTES = 4 * 1024 * 1024;
/** After the server ended a connection, the client has this long to close its side. */
const LINGER_MS = 2000;
/** Receive slabs for user-buffer reads; a new one once less than MIN_READ_BYTES is left. */
const READ_SLAB_BYTES = 64 * 1024;
const MIN_READ_BYTES = 8 * 1024;
/**
 * The rest of a WRITE payload is read straight into its buffer when at least this large; a
 * smaller rest goes into the slab with whatever follows it and is copied: a read of its own
 * would cost more than the copy (raid5 rand write 4K qd32 fell from 0.50x to 0.34x nbdkit when
 * every payload cut by a read boundary got its own read). After a payload read straight in,
 * the next read asks for one request header only: the next request is likely another large
 * WRITE, whose payload then goes straight to its buffer too instead of landing partly in the
 * slab. One extra read per large WRITE, one copy less.
 */
const DIRECT_MIN_BYTES = 64 * 1024;
/** WRITE_ZEROES fallback (target without writeZeroes): writes of this many zero bytes. */
const ZERO_CHUNK_BYTES = 1024 * 1024;
let zeroChunk: Buffer | undefined;

/** Command flags each command accepts (anything else: EINVAL). */
const ALLOWED_FLAGS: Record<number, number> = {
  [Cmd.READ]: CmdFlag.DF,
  [Cmd.WRITE]: CmdFlag.FUA,
  [Cmd.FLUSH]: 0,
  [Cmd.TRIM]: CmdFlag.FUA,
  [Cmd.CACHE]: 0,
  [Cmd.WRITE_ZEROES]: CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO,
  [Cmd.BLOCK_STATUS]: CmdFlag.REQ_ONE,
};

interface PayloadState {
  k: 'reqPayload';
  req: RequestHeader;
  /** where the payload is gathered (from the pool) when it does not sit in one socket chunk */
  buf: Buffer | null;
  backing: Buffer | null;
  got: number;
}

type ParseState =
  | { k: 'clientFlags' }
  | { k: 'optHeader' }
  | { k: 'optData'; opt: number; len: number }
  | { k: 'optDiscard'; opt: number; remaining: number }
  | { k: 'reqHeader' }
  | PayloadState
  | { k: 'reqDiscard'; req: RequestHeader; remaining: number; errno: number; msg: string }
  /** nothing more is read: TLS handshake under way, DISC received, or closing */
  | { k: 'stopped' };

interface Failure {
  errno: number;
  msg: string;
}

export class NbdConnection {
  /** resolves when the socket is closed and no request is in flight */
  readonly done: Promise<void>;
  private resolveDone!: () => void;
  private sock: Socket;
  private readonly raw: Socket;
  private readonly cfg: ConnectionConfig;
  private readonly queue = new ByteQueue();
  private readonly peer: string;
  private state: ParseState = { k: 'clientFlags' };
  private phase: 'handshake' | 'transmission' = 'handshake';
  private closed = false;
  private pumping = false;
  private corked = false;
  private paused = false;
  private shuttingDown = false;
  private ended = false;
  /** DISC or client EOF: close our side once nothing is in flight */
  private finishWhenIdle = false;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private lingerTimer: NodeJS.Timeout | undefined;
  // negotiation state
  private fixedNewstyle = false;
  private noZeroes = false;
  private tlsActive = false;
  private structured = false;
  /** SET_META_CONTEXT's outcome: for which export, and whether base:allocation was selected */
  private meta: { exportName: string; baseAllocation: boolean } | null = null;
  // transmission state
  private exp: NbdExport | undefined;
  private target: BlockTarget | undefined;
  private minBlock = 1;
  private enforceAlignment = false;
  private inflight = 0;
  private inflightBytes = 0;
  // user-buffer reads (readBuffer / onRead)
  private slab: Buffer = Buffer.alloc(0);
  private slabPos = 0;
  /** the payload whose buffer the socket's next read goes into */
  private direct: PayloadState | null = null;
  private headerOnly = false;

  constructor(sock: Socket, cfg: ConnectionConfig) {
    this.raw = sock;
    this.sock = sock;
    this.cfg = cfg;
    this.peer = sock.remoteAddress ? `${sock.remoteAddress}:${sock.remotePort}` : 'unix';
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
    if (typeof sock.setNoDelay === 'function') sock.setNoDelay(true);
    this.attach(sock);
    this.handshakeTimer = setTimeout(() => {
      this.cfg.log('warn', 'nbd: handshake timed out', { peer: this.peer, timeoutMs: cfg.handshakeTimeoutMs });
      this.cfg.stats.handshakeFailures++;
      this.destroy();
    }, cfg.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    this.send(encodeGreeting(HS_FIXED_NEWSTYLE | HS_NO_ZEROES));
  }

  /** Server shutdown: no new requests (ESHUTDOWN); close once in-flight requests are answered. */
  shutdown(): void {
    this.shuttingDown = true;
    if (this.phase === 'handshake') {
      this.endSocket();
      return;
    }
    this.maybeFinish();
  }

  /** Hard close now (in-flight target I/O still completes; its replies are dropped). */
  destroy(): void {
    this.stopParsing();
    this.sock.destroy();
    if (this.sock !== this.raw) this.raw.destroy();
  }

  // ---------------------------------------------------------------- socket plumbing

  /**
   * Where the next read of a socket adopted with `onread` goes (called by Node after every
   * read): the unfilled rest of the pending WRITE payload's buffer when the payload is all that
   * comes next, else the free part of the receive slab. Views of the slab are handed on
   * (headers, whole payloads), so its bytes are never overwritten: a full slab is replaced.
   */
  readBuffer(): Uint8Array {
    const s = this.state;
    if (s.k === 'reqPayload' && this.queue.length === 0 && s.req.length - s.got >= DIRECT_MIN_BYTES && !this.closed) {
      if (!s.buf) ({ buf: s.buf, backing: s.backing } = this.cfg.pool.get(s.req.length));
      this.direct = s;
      return s.buf.subarray(s.got);
    }
    this.direct = null;
    if (this.slab.length - this.slabPos < MIN_READ_BYTES) {
      this.slab = Buffer.allocUnsafeSlow(READ_SLAB_BYTES);
      this.slabPos = 0;
    }
    const end = this.headerOnly ? this.slabPos + REQUEST_HEADER_BYTES : this.slab.length;
    return this.slab.subarray(this.slabPos, end);
  }

  /** n bytes were read into `buf`, the buffer readBuffer returned last (or Node's first). */
  onRead(n: number, buf: Uint8Array): void {
    // after STARTTLS the TLS layer reads the raw socket, not this
    if (this.sock !== this.raw) return;
    const d = this.direct;
    if (d) {
      this.direct = null;
      // the state cannot change between readBuffer and the read, but be sure
      if (this.state !== d) return;
      d.got += n;
      this.cfg.stats.payloadBytesDirect += n;
      if (d.got === d.req.length) {
        this.state = { k: 'reqHeader' };
        this.headerOnly = true;
        this.run(d.req, d.buf!, d.backing);
      }
      this.pump();
      return;
    }
    this.headerOnly = false;
    let chunk: Buffer;
    if (buf.buffer === this.slab.buffer && buf.byteOffset === this.slab.byteOffset + this.slabPos) {
      chunk = this.slab.subarray(this.slabPos, this.slabPos + n);
      this.slabPos += n;
    } else {
      // Node's own first buffer: not ours to reuse, and never handed out again
      chunk = Buffer.from(buf.buffer, buf.byteOffset, n);
    }
    this.onData(chunk);
  }

  private readonly onData = (chunk: Buffer): void => {
    // after DISC, EOF or a refusal nothing more is parsed, but the socket is still drained
    // so that the client's close is seen
    if (this.state.k === 'stopped') return;
    this.queue.push(chunk);
    this.pump();
  };

  private readonly onDrain = (): void => this.pump();

  private readonly onEnd = (): void => {
    // the client will send nothing more: finish what is in flight, then close our side
    if (this.state.k !== 'stopped' && this.phase === 'transmission' && this.state.k !== 'reqHeader') {
      this.cfg.log('debug', 'nbd: client closed in the middle of a request', { peer: this.peer });
    }
    if (this.phase === 'handshake' && (this.state.k === 'optData' || this.state.k === 'optDiscard')) {
      this.cfg.stats.handshakeFailures++;
    }
    this.stopParsing();
    this.finishWhenIdle = true;
    this.maybeFinish();
  };

  private readonly onError = (e: Error): void => {
    this.cfg.log('debug', 'nbd: socket error', { peer: this.peer, err: e.message });
    this.destroy();
  };

  private readonly onClose = (): void => {
    if (this.closed) return;
    this.closed = true;
    this.stopParsing();
    clearTimeout(this.handshakeTimer);
    clearTimeout(this.lingerTimer);
    if (this.sock !== this.raw) this.raw.destroy();
    this.cfg.log('debug', 'nbd: connection closed', { peer: this.peer, export: this.exp?.name });
    this.settle();
  };

  private attach(s: Socket): void {
    s.on('data', this.onData);
    s.on('drain', this.onDrain);
    s.on('end', this.onEnd);
    s.on('error', this.onError);
    s.on('close', this.onClose);
  }

  private detach(s: Socket): void {
    s.off('data', this.onData);
    s.off('drain', this.onDrain);
    s.off('end', this.onEnd);
    s.off('close', this.onClose);
    // keep an error listener: an error on a socket without one would crash the process
  }

  /**
   * Replies are written corked and the socket uncorked once the event loop has run what is
   * ready, so that replies completing together leave in one writev (header and data without
   * copying them together).
   */
  private send(a: Buffer, b?: Uint8Array, onWritten?: () => void): boolean {
    if (this.closed || this.ended || this.sock.destroyed) return false;
    if (!this.corked) {
      this.corked = true;
      this.sock.cork();
      process.nextTick(this.uncork);
    }
    this.sock.write(a);
    if (b) this.sock.write(b, onWritten);
    return true;
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.sock.uncork();
  };

  private endSocket(): void {
    if (this.ended || this.closed) return;
    this.ended = true;
    this.stopParsing();
    this.sock.end();
    this.lingerTimer = setTimeout(() => this.destroy(), LINGER_MS);
    this.lingerTimer.unref();
  }

  /** No more input is parsed; a WRITE whose payload was still arriving is abandoned. */
  private stopParsing(): void {
    const s = this.state;
    if (s.k === 'reqPayload') {
      // not to the pool while a socket read may still be pointed at it
      if (this.direct !== s) this.cfg.pool.release(s.backing);
      this.inflight--;
      this.cfg.stats.inflight--;
      this.inflightBytes -= s.req.length;
    }
    this.state = { k: 'stopped' };
    this.queue.clear();
    this.settle();
  }

  private settle(): void {
    if (this.closed && this.inflight === 0) this.resolveDone();
  }

  /** A violation that makes the stream impossible to follow: hard disconnect. */
  private fatal(msg: string, fields: Record<string, unknown> = {}): void {
    this.cfg.log('warn', `nbd: ${msg}; disconnecting the client`, { peer: this.peer, ...fields });
    this.cfg.stats.protocolErrors++;
    if (this.phase === 'handshake') this.cfg.stats.handshakeFailures++;
    this.destroy();
  }

  /**
   * Stop reading at a message boundary while the limits are reached: requests in flight, their
   * bytes, or replies the client is not reading (in the handshake too: a client could ask for
   * LIST forever without reading the answers).
   */
  private blocked(): boolean {
    const k = this.state.k;
    if (k !== 'reqHeader' && k !== 'optHeader') return false;
    if (this.sock.writableLength >= OUTPUT_HIGH_WATER_BYTES) return true;
    return (
      k === 'reqHeader' &&
      (this.inflight >= this.cfg.maxInflight || (this.inflight > 0 && this.inflightBytes >= this.cfg.maxInflightBytes))
    );
  }

  /** Parse as much queued input as the limits allow; pause the socket when they are reached. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (!this.closed && this.state.k !== 'stopped') {
        if (this.blocked()) break;
        if (!this.step()) break;
      }
    } catch (e) {
      // a bug in the parser must not take the process down: this connection goes, loudly
      this.cfg.log('error', 'nbd: internal error while parsing; disconnecting the client', {
        peer: this.peer,
        err: e instanceof Error ? e.stack : String(e),
      });
      this.destroy();
    } finally {
      this.pumping = false;
    }
    const wantPause = this.blocked();
    if (wantPause !== this.paused && !this.closed) {
      this.paused = wantPause;
      if (wantPause) this.sock.pause();
      else this.sock.resume();
    }
  }

  /** One parse step; false when more input is needed. */
  private step(): boolean {
    const s = this.state;
    switch (s.k) {
      case 'clientFlags': {
        if (this.queue.length < 4) return false;
        const flags = this.queue.take(4).readUInt32BE(0);
        if (flags & ~(HS_FIXED_NEWSTYLE | HS_NO_ZEROES)) {
          this.fatal('unknown client flags', { flags });
          return false;
        }
        this.fixedNewstyle = (flags & HS_FIXED_NEWSTYLE) !== 0;
        this.noZeroes = (flags & HS_NO_ZEROES) !== 0;
        this.state = { k: 'optHeader' };
        return true;
      }
      case 'optHeader': {
        if (this.queue.length < OPTION_HEADER_BYTES) return false;
        const h = this.queue.take(OPTION_HEADER_BYTES);
        if (h.readUInt32BE(0) !== IHAVEOPT_HI || h.readUInt32BE(4) !== IHAVEOPT_LO) {
          this.fatal('bad option magic');
          return false;
        }
        const opt = h.readUInt32BE(8);
        const len = h.readUInt32BE(12);
        if (!this.fixedNewstyle && opt !== Opt.EXPORT_NAME) {
          this.fatal('option other than EXPORT_NAME from a client without fixed newstyle', { opt });
          return false;
        }
        if (len > MAX_OPTION_BYTES) {
          if (opt === Opt.EXPORT_NAME) {
            this.fatal('EXPORT_NAME with an over-long name', { len });
            return false;
          }
          this.state = { k: 'optDiscard', opt, remaining: len };
          return true;
        }
        this.state = { k: 'optData', opt, len };
        return true;
      }
      case 'optData': {
        if (this.queue.length < s.len) return false;
        const data = this.queue.take(s.len);
        this.state = { k: 'optHeader' };
        this.handleOption(s.opt, data);
        return true;
      }
      case 'optDiscard': {
        s.remaining -= this.queue.skip(s.remaining);
        if (s.remaining > 0) return false;
        this.state = { k: 'optHeader' };
        this.optError(s.opt, Rep.ERR_TOO_BIG, `option data longer than ${MAX_OPTION_BYTES} bytes`);
        return true;
      }
      case 'reqHeader': {
        if (this.queue.length < REQUEST_HEADER_BYTES) return false;
        const req = decodeRequestHeader(this.queue.take(REQUEST_HEADER_BYTES));
        if (req.magic !== REQUEST_MAGIC) {
          this.fatal('bad request magic', { magic: req.magic.toString(16) });
          return false;
        }
        this.onRequest(req);
        return true;
      }
      case 'reqPayload': {
        if (this.queue.length === 0) return false;
        const len = s.req.length;
        const piece = this.queue.takeSome(len - s.got);
        if (s.got === 0 && piece.length === len) {
          // the whole payload sits in one socket chunk: handed on as a view, no copy
          this.cfg.stats.payloadBytesInPlace += len;
          this.state = { k: 'reqHeader' };
          this.run(s.req, piece, null);
          return true;
        }
        if (!s.buf) ({ buf: s.buf, backing: s.backing } = this.cfg.pool.get(len));
        piece.copy(s.buf, s.got);
        s.got += piece.length;
        this.cfg.stats.payloadBytesCopied += piece.length;
        if (s.got < len) return false;
        this.state = { k: 'reqHeader' };
        this.run(s.req, s.buf, s.backing);
        return true;
      }
      case 'reqDiscard': {
        s.remaining -= this.queue.skip(s.remaining);
        if (s.remaining > 0) return false;
        this.state = { k: 'reqHeader' };
        this.replyError(s.req, { errno: s.errno, msg: s.msg });
        return true;
      }
      case 'stopped':
        return false;
    }
  }

  // ---------------------------------------------------------------- handshake

  private optReply(opt: number, type: number, data?: Uint8Array): void {
    this.send(encodeOptionReply(opt, type, data));
  }

  private optError(opt: number, type: number, msg: string): void {
    this.cfg.log('debug', 'nbd: option refused', { peer: this.peer, opt: optName(opt), reply: type.toString(16), msg });
    this.optReply(opt, type, Buffer.from(msg, 'utf8').subarray(0, MAX_STRING_BYTES));
  }

  private resolveExport(name: string): NbdExport | undefined {
    const e = this.cfg.exports.get(name);
    if (e || name !== '') return e;
    const all = this.cfg.exports.list();
    return all.length === 1 ? all[0] : undefined;
  }

  private handleOption(opt: number, data: Buffer): void {
    if (this.shuttingDown) {
      this.optError(opt, Rep.ERR_SHUTDOWN, 'server is shutting down');
      return;
    }
    const tls = this.cfg.tls;
    if (tls?.require && !this.tlsActive && opt !== Opt.STARTTLS && opt !== Opt.ABORT) {
      if (opt === Opt.EXPORT_NAME) {
        this.fatal('EXPORT_NAME before STARTTLS on a server that requires TLS');
        return;
      }
      this.optError(opt, Rep.ERR_TLS_REQD, 'this server requires TLS: use STARTTLS first (nbds:// URIs)');
      return;
    }
    switch (opt) {
      case Opt.EXPORT_NAME: {
        const name = data.toString('utf8');
        const exp = this.resolveExport(name);
        if (!exp) {
          this.cfg.log('info', 'nbd: EXPORT_NAME for an unknown export', { peer: this.peer, name });
          this.cfg.stats.handshakeFailures++;
          this.destroy();
          return;
        }
        let flags: number;
        try {
          flags = this.txFlags(exp.target);
          this.setBlockSize(exp.target, false);
        } catch (e) {
          this.cfg.log('error', 'nbd: export cannot be served', { name, err: String(e) });
          this.destroy();
          return;
        }
        this.send(encodeExportNameReply(exp.target.sizeBytes, flags, this.noZeroes));
        this.enterTransmission(exp);
        return;
      }
      case Opt.ABORT:
        this.optReply(opt, Rep.ACK);
        this.endSocket();
        return;
      case Opt.LIST: {
        if (data.length !== 0) {
          this.optError(opt, Rep.ERR_INVALID, 'LIST takes no data');
          return;
        }
        for (const e of this.cfg.exports.list()) {
          const name = Buffer.from(e.name, 'utf8');
          if (name.length > MAX_STRING_BYTES) continue;
          const desc = Buffer.from(e.description ?? '', 'utf8').subarray(0, MAX_STRING_BYTES);
          this.optReply(opt, Rep.SERVER, encodeRepServer(name, desc));
        }
        this.optReply(opt, Rep.ACK);
        return;
      }
      case Opt.STARTTLS: {
        if (!tls) {
          this.optError(opt, Rep.ERR_UNSUP, 'TLS is not configured on this server');
          return;
        }
        if (this.tlsActive) {
          this.optError(opt, Rep.ERR_INVALID, 'TLS is already active');
          return;
        }
        if (data.length !== 0) {
          this.optError(opt, Rep.ERR_INVALID, 'STARTTLS takes no data');
          return;
        }
        this.optReply(opt, Rep.ACK);
        this.startTls(tls);
        return;
      }
      case Opt.INFO:
      case Opt.GO:
        this.infoOrGo(opt, data);
        return;
      case Opt.LIST_META_CONTEXT:
      case Opt.SET_META_CONTEXT:
        this.metaContext(opt, data);
        return;
      case Opt.STRUCTURED_REPLY:
        if (data.length !== 0) {
          this.optError(opt, Rep.ERR_INVALID, 'STRUCTURED_REPLY takes no data');
          return;
        }
        if (this.structured) {
          this.optError(opt, Rep.ERR_INVALID, 'structured replies already negotiated');
          return;
        }
        this.structured = true;
        this.optReply(opt, Rep.ACK);
        return;
      default:
        this.optError(opt, Rep.ERR_UNSUP, `option ${optName(opt)} is not supported`);
    }
  }

  private infoOrGo(opt: number, data: Buffer): void {
    if (data.length < 6) {
      this.optError(opt, Rep.ERR_INVALID, 'option data too short');
      return;
    }
    const nameLen = data.readUInt32BE(0);
    if (nameLen > data.length - 6 || nameLen > MAX_STRING_BYTES) {
      this.optError(opt, Rep.ERR_INVALID, 'bad export name length');
      return;
    }
    const count = data.readUInt16BE(4 + nameLen);
    if (data.length !== 6 + nameLen + 2 * count) {
      this.optError(opt, Rep.ERR_INVALID, 'option length does not match the information requests');
      return;
    }
    const requested = new Set<number>();
    for (let i = 0; i < count; i++) requested.add(data.readUInt16BE(6 + nameLen + 2 * i));
    const name = data.toString('utf8', 4, 4 + nameLen);
    const exp = this.resolveExport(name);
    if (!exp) {
      this.optError(opt, Rep.ERR_UNKNOWN, `export '${name}' not found`);
      return;
    }
    let flags: number;
    let bs: { min: number; preferred: number; max: number };
    try {
      flags = this.txFlags(exp.target);
      bs = advertisedBlockSize(exp.target, this.cfg.maxPayloadBytes);
    } catch (e) {
      this.cfg.log('error', 'nbd: export cannot be served', { name: exp.name, err: String(e) });
      this.optError(opt, Rep.ERR_PLATFORM, `export '${exp.name}' is misconfigured: ${String(e)}`);
      return;
    }
    this.optReply(opt, Rep.INFO, encodeInfoExport(exp.target.sizeBytes, flags));
    if (requested.has(Info.NAME)) {
      this.optReply(opt, Rep.INFO, encodeInfoString(Info.NAME, Buffer.from(exp.name, 'utf8')));
    }
    if (requested.has(Info.DESCRIPTION) && exp.description) {
      const d = Buffer.from(exp.description, 'utf8').subarray(0, MAX_STRING_BYTES);
      this.optReply(opt, Rep.INFO, encodeInfoString(Info.DESCRIPTION, d));
    }
    this.optReply(opt, Rep.INFO, encodeInfoBlockSize(bs.min, bs.preferred, bs.max));
    this.optReply(opt, Rep.ACK);
    if (opt === Opt.GO) {
      this.setBlockSize(exp.target, requested.has(Info.BLOCK_SIZE));
      this.enterTransmission(exp);
    }
  }

  /**
   * LIST_META_CONTEXT / SET_META_CONTEXT: u32 export name length, name, u32 query count, then
   * (u32 length, query) each. One context exists, base:allocation. LIST with no query, or the
   * query "base:", lists it (context id 0, as the spec reserves for LIST); SET selects it when
   * asked by its full name only (an empty leaf selects nothing in SET, as in qemu-nbd), needs
   * structured replies (ERR_INVALID otherwise, as qemu-nbd answers), and replaces whatever an
   * earlier SET selected. Queries for other namespaces are ignored, not refused (the spec).
   */
  private metaContext(opt: number, data: Buffer): void {
    const what = optName(opt);
    if (data.length < 8) {
      this.optError(opt, Rep.ERR_INVALID, `${what}: option data too short`);
      return;
    }
    const nameLen = data.readUInt32BE(0);
    if (nameLen > data.length - 8 || nameLen > MAX_STRING_BYTES) {
      this.optError(opt, Rep.ERR_INVALID, `${what}: bad export name length`);
      return;
    }
    const name = data.toString('utf8', 4, 4 + nameLen);
    const count = data.readUInt32BE(4 + nameLen);
    const queries: string[] = [];
    let at = 8 + nameLen;
    for (let i = 0; i < count; i++) {
      if (data.length - at < 4) break;
      const len = data.readUInt32BE(at);
      if (len > data.length - at - 4 || len > MAX_STRING_BYTES) break;
      queries.push(data.toString('utf8', at + 4, at + 4 + len));
      at += 4 + len;
    }
    if (queries.length !== count || at !== data.length) {
      this.optError(opt, Rep.ERR_INVALID, `${what}: option length does not match the queries`);
      return;
    }
    if (opt === Opt.SET_META_CONTEXT && !this.structured) {
      this.optError(opt, Rep.ERR_INVALID, 'SET_META_CONTEXT needs structured replies (STRUCTURED_REPLY first)');
      return;
    }
    const exp = this.resolveExport(name);
    if (!exp) {
      this.optError(opt, Rep.ERR_UNKNOWN, `export '${name}' not found`);
      return;
    }
    const list = opt === Opt.LIST_META_CONTEXT;
    const base = (list && count === 0) || queries.some((q) => q === BASE_ALLOCATION || (list && q === 'base:'));
    if (base) this.optReply(opt, Rep.META_CONTEXT, encodeMetaContext(list ? 0 : BASE_ALLOCATION_ID, BASE_ALLOCATION));
    if (!list) this.meta = { exportName: exp.name, baseAllocation: base };
    this.optReply(opt, Rep.ACK);
  }

  private txFlags(t: BlockTarget): number {
    let f = TxFlag.HAS_FLAGS | TxFlag.SEND_FLUSH | TxFlag.SEND_CACHE;
    if (t.readOnly) f |= TxFlag.READ_ONLY;
    else {
      f |= TxFlag.SEND_FUA | TxFlag.SEND_WRITE_ZEROES | TxFlag.SEND_FAST_ZERO;
      if (t.trim) f |= TxFlag.SEND_TRIM;
    }
    if (t.multiConn !== false) f |= TxFlag.CAN_MULTI_CONN;
    if (this.structured) f |= TxFlag.SEND_DF;
    return f;
  }

  private setBlockSize(t: BlockTarget, negotiated: boolean): void {
    const bs = advertisedBlockSize(t, this.cfg.maxPayloadBytes);
    this.minBlock = bs.min;
    // a client that asked for the sizes in GO must keep to them; others may send any
    // alignment, which the target then handles (or refuses with EINVAL)
    this.enforceAlignment = negotiated && bs.min > 1;
  }

  private enterTransmission(exp: NbdExport): void {
    // contexts selected for another export do not carry over (qemu-nbd, nbd-server alike)
    if (this.meta && this.meta.exportName !== exp.name) this.meta = null;
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    this.phase = 'transmission';
    this.exp = exp;
    this.target = exp.target;
    this.state = { k: 'reqHeader' };
    this.cfg.stats.handshakesCompleted++;
    this.cfg.log('debug', 'nbd: transmission phase', {
      peer: this.peer,
      export: exp.name,
      tls: this.tlsActive,
      structured: this.structured,
    });
  }

  private startTls(tls: NonNullable<ConnectionConfig['tls']>): void {
    if (this.queue.length > 0) {
      // the client must wait for our ACK before it starts the TLS handshake
      this.fatal('data after STARTTLS before the TLS handshake');
      return;
    }
    this.stopParsing();
    const raw = this.sock;
    // the ACK must be on the wire, in clear, before TLS takes the socket over
    if (this.corked) this.uncork();
    this.detach(raw);
    const secure = new TLSSocket(raw, {
      isServer: true,
      secureContext: tls.context,
      requestCert: tls.verifyPeer,
      rejectUnauthorized: tls.verifyPeer,
    });
    this.sock = secure;
    this.paused = false;
    this.attach(secure);
    secure.once('secure', () => {
      if (this.closed) return;
      if (tls.verifyPeer) {
        const refused = peerRefusal(secure);
        if (refused) {
          this.fatal('client certificate refused', { reason: refused });
          return;
        }
      }
      this.tlsActive = true;
      // STARTTLS forgets everything negotiated before it
      this.structured = false;
      this.meta = null;
      this.state = { k: 'optHeader' };
      this.cfg.log('debug', 'nbd: TLS established', { peer: this.peer, protocol: secure.getProtocol() });
      this.pump();
    });
  }

  // ---------------------------------------------------------------- transmission

  private onRequest(req: RequestHeader): void {
    const name = (CMD_NAMES[req.type] ?? 'other') as CommandName;
    this.cfg.stats.requests[name]++;
    if (req.type === Cmd.DISC) {
      this.cfg.log('debug', 'nbd: client disconnects', { peer: this.peer, inflight: this.inflight });
      this.stopParsing();
      this.finishWhenIdle = true;
      this.maybeFinish();
      return;
    }
    const failure = this.validate(req);
    if (failure) {
      if (req.type === Cmd.WRITE && req.length > 0) {
        // the payload follows on the wire: read it and throw it away, then refuse
        this.state = { k: 'reqDiscard', req, remaining: req.length, errno: failure.errno, msg: failure.msg };
      } else {
        this.replyError(req, failure);
      }
      return;
    }
    this.inflight++;
    this.cfg.stats.inflight++;
    if (req.type === Cmd.READ || req.type === Cmd.WRITE) this.inflightBytes += req.length;
    if (req.type === Cmd.WRITE && req.length > 0) {
      this.state = { k: 'reqPayload', req, buf: null, backing: null, got: 0 };
      return;
    }
    this.run(req, undefined);
  }

  private run(req: RequestHeader, payload: Buffer | undefined, payloadBacking: Buffer | null = null): void {
    this.execute(req, payload, payloadBacking).catch((e: unknown) => {
      this.cfg.log('error', 'nbd: internal error while serving a request; disconnecting the client', {
        peer: this.peer,
        err: e instanceof Error ? e.stack : String(e),
      });
      this.destroy();
    });
  }

  private validate(req: RequestHeader): Failure | null {
    const t = this.target!;
    const type = req.type;
    const allowed = ALLOWED_FLAGS[type];
    if (allowed === undefined) {
      return { errno: NbdErrno.EINVAL, msg: `unknown or unnegotiated command ${type}` };
    }
    if (this.shuttingDown) return { errno: NbdErrno.ESHUTDOWN, msg: 'server is shutting down' };
    if (req.flags & ~allowed) {
      return { errno: NbdErrno.EINVAL, msg: `flags 0x${req.flags.toString(16)} not valid for ${CMD_NAMES[type]}` };
    }
    if (req.flags & CmdFlag.DF && !this.structured) {
      return { errno: NbdErrno.EINVAL, msg: 'DF needs structured replies' };
    }
    const writes = type === Cmd.WRITE || type === Cmd.TRIM || type === Cmd.WRITE_ZEROES;
    if (writes && t.readOnly) return { errno: NbdErrno.EPERM, msg: 'export is read-only' };
    if ((type === Cmd.READ || type === Cmd.WRITE) && req.length > this.cfg.maxPayloadBytes) {
      return {
        errno: NbdErrno.EINVAL,
        msg: `payload of ${req.length} bytes exceeds the maximum of ${this.cfg.maxPayloadBytes}`,
      };
    }
    if (type === Cmd.FLUSH) return null;
    if (type === Cmd.BLOCK_STATUS) {
      if (!this.meta?.baseAllocation) return { errno: NbdErrno.EINVAL, msg: 'BLOCK_STATUS without a metadata context (SET_META_CONTEXT base:allocation)' };
      if (req.length === 0) return { errno: NbdErrno.EINVAL, msg: 'BLOCK_STATUS of length 0' };
    }
    if (req.offset + req.length > t.sizeBytes) {
      const errno = type === Cmd.WRITE || type === Cmd.WRITE_ZEROES ? NbdErrno.ENOSPC : NbdErrno.EINVAL;
      return { errno, msg: `request of ${req.length} bytes at ${req.offset} is beyond the end of the export (${t.sizeBytes} bytes)` };
    }
    if (this.enforceAlignment && (req.offset % this.minBlock !== 0 || req.length % this.minBlock !== 0)) {
      return { errno: NbdErrno.EINVAL, msg: `request not aligned to the minimum block size ${this.minBlock}` };
    }
    if (type === Cmd.WRITE_ZEROES && req.flags & CmdFlag.FAST_ZERO && !t.writeZeroes) {
      return { errno: NbdErrno.ENOTSUP, msg: 'fast zeroing is not supported by this export' };
    }
    return null;
  }

  private async execute(req: RequestHeader, payload: Buffer | undefined, payloadBacking: Buffer | null): Promise<void> {
    const t = this.target!;
    const bytes = req.type === Cmd.READ || req.type === Cmd.WRITE ? req.length : 0;
    let data: Buffer | undefined;
    let backing: Buffer | null = null;
    let extents: { length: number; flags: number }[] | undefined;
    let failure: Failure | undefined;
    let bug: AssertionError | undefined;
    try {
      const fua = (req.flags & CmdFlag.FUA) !== 0;
      switch (req.type) {
        case Cmd.READ:
          ({ buf: data, backing } = this.cfg.pool.get(req.length));
          if (req.length > 0) await t.read(data, req.offset);
          this.cfg.stats.bytesRead += req.length;
          break;
        case Cmd.WRITE:
          if (payload && payload.length > 0) await t.write(payload, req.offset);
          if (fua) await t.flush();
          this.cfg.stats.bytesWritten += req.length;
          break;
        case Cmd.FLUSH:
          await t.flush();
          break;
        case Cmd.TRIM:
          if (t.trim && req.length > 0) await t.trim(req.offset, req.length);
          if (fua) await t.flush();
          break;
        case Cmd.WRITE_ZEROES:
          if (req.length > 0) {
            const noHole = (req.flags & CmdFlag.NO_HOLE) !== 0;
            if (t.writeZeroes) await t.writeZeroes(req.offset, req.length, { noHole });
            else await writeZeroesByWriting(t, req.offset, req.length);
          }
          if (fua) await t.flush();
          break;
        case Cmd.CACHE:
          if (t.cache && req.length > 0) await t.cache(req.offset, req.length);
          break;
        case Cmd.BLOCK_STATUS:
          extents = await blockStatusExtents(t, req.offset, req.length, (req.flags & CmdFlag.REQ_ONE) !== 0);
          break;
        default:
          assert(false, `NBD command ${req.type} passed validation`);
      }
    } catch (e) {
      if (isCrash(e)) {
        // a failed assert() is a bug, not a failed request: no NBD reply (an EIO would let
        // the client carry on as after a bad sector, and hide the bug); crash below
        bug = e;
      } else {
        const errno = nbdErrnoOf(e);
        const msg = e instanceof Error ? e.message : String(e);
        failure = { errno, msg };
        this.cfg.log(isUnexpected(e) ? 'error' : 'warn', 'nbd: request failed', {
          peer: this.peer,
          export: this.exp?.name,
          cmd: CMD_NAMES[req.type],
          offset: req.offset,
          length: req.length,
          errno: errnoName(errno),
          err: isUnexpected(e) && e instanceof Error ? e.stack : msg,
        });
      }
    }
    // the target is done with the payload (BlockTarget.write contract): its buffer is reused.
    // Not after a failure: a target that failed early may still have I/O reading the buffer
    // (a Promise.all that rejected while other members were writing), so it is left to the GC.
    if (!failure && !bug) this.cfg.pool.release(payloadBacking);
    this.inflight--;
    this.cfg.stats.inflight--;
    this.inflightBytes -= bytes;
    if (bug) {
      this.crash(req, bug);
      this.settle();
      return;
    }
    if (failure) {
      // same caution as above for a read buffer the target may still be filling
      this.replyError(req, failure);
    } else {
      const pool = this.cfg.pool;
      // the read buffer goes back to the pool once the socket has sent it
      if (extents) this.send(encodeBlockStatusChunk(req.cookieHi, req.cookieLo, BASE_ALLOCATION_ID, extents));
      else if (!this.replyOk(req, data, backing ? () => pool.release(backing) : undefined)) pool.release(backing);
    }
    this.settle();
    this.pump();
    this.maybeFinish();
  }

  /**
   * A request hit a broken invariant (assert() in the target or here): the array's state can no
   * longer be trusted, so the client is cut off without a reply, as a kernel BUG() takes the
   * nbd device with it, and the server's onBug crashes the process (by default).
   */
  private crash(req: RequestHeader, e: AssertionError): void {
    this.cfg.log('error', 'nbd: tsmd invariant violated while serving a request; disconnecting the client', {
      peer: this.peer,
      export: this.exp?.name,
      cmd: CMD_NAMES[req.type],
      offset: req.offset,
      length: req.length,
      err: e.stack,
    });
    this.destroy();
    this.cfg.onBug(e);
  }

  /** false when nothing was sent (connection gone), or no data went with the reply */
  private replyOk(req: RequestHeader, data: Buffer | undefined, onWritten?: () => void): boolean {
    if (req.type === Cmd.READ && req.length > 0) {
      const h = this.structured
        ? encodeOffsetDataHeader(req.cookieHi, req.cookieLo, req.offset, req.length, true)
        : encodeSimpleReply(0, req.cookieHi, req.cookieLo);
      return this.send(h, data!, onWritten);
    }
    if (req.type === Cmd.READ && this.structured) this.send(encodeNoneChunk(req.cookieHi, req.cookieLo));
    else this.send(encodeSimpleReply(0, req.cookieHi, req.cookieLo));
    return false;
  }

  private replyError(req: RequestHeader, f: Failure): void {
    const name = errnoName(f.errno);
    this.cfg.stats.errors[name] = (this.cfg.stats.errors[name] ?? 0) + 1;
    if (this.structured) this.send(encodeErrorChunk(req.cookieHi, req.cookieLo, f.errno, f.msg));
    else this.send(encodeSimpleReply(f.errno, req.cookieHi, req.cookieLo));
  }

  /** After DISC, client EOF or shutdown: close our side once nothing is in flight. */
  private maybeFinish(): void {
    if (this.closed || this.ended || this.inflight > 0) return;
    if (this.finishWhenIdle) {
      this.endSocket();
      return;
    }
    if (this.shuttingDown && this.state.k === 'reqHeader') this.endSocket();
  }
}

/** WRITE_ZEROES for a target without writeZeroes: plain writes of a shared zero buffer. */
async function writeZeroesByWriting(t: BlockTarget, offsetBytes: number, lengthBytes: number): Promise<void> {
  zeroChunk ??= Buffer.alloc(ZERO_CHUNK_BYTES);
  let done = 0;
  while (done < lengthBytes) {
    const n = Math.min(ZERO_CHUNK_BYTES, lengthBytes - done);
    await t.write(zeroChunk.subarray(0, n), offsetBytes + done);
    done += n;
  }
}

/**
 * Why a TLS client's certificate is not acceptable, or null when it is. OpenSSL, as Node sets it
 * up, refuses a client that sends no certificate (SSL_VERIFY_FAIL_IF_NO_PEER_CERT) but accepts
 * any certificate and leaves the verdict for later: tls.Server checks it when the handshake
 * completes (onServerSocketSecure), a TLSSocket made by hand - as STARTTLS needs - never does.
 * So this asks the handle for the same verdict tls.Server reads (verifyError: chain to the CA,
 * dates, purpose). nbd-server and qemu-nbd refuse such clients through GnuTLS; so does this.
 * Without that internal (a Node that renamed it), every client is refused: failing closed.
 */
function peerRefusal(secure: TLSSocket): string | null {
  const handle = (secure as TLSSocket & { _handle?: { verifyError?: () => (Error & { code?: string }) | null } | null })._handle;
  if (typeof handle?.verifyError !== 'function') return 'this Node cannot report the certificate check';
  const err = handle.verifyError();
  if (err) return err.code ?? err.message;
  return secure.getPeerX509Certificate() ? null : 'no client certificate';
}

/**
 * base:allocation extents for [offset, offset+length), as NBD_REPLY_TYPE_BLOCK_STATUS carries
 * them. Without the target's blockStatus, one data extent for the whole request: always true,
 * what nbd-server answers for a file whose holes it cannot see. With it: the target's extents,
 * clipped so that together they never pass the request (every length then fits the u32 of the
 * descriptor, the request's own length being a u32), neighbours with the same flags merged,
 * at most MAX_EXTENTS_PER_REPLY of them, a single one under REQ_ONE; a target that says
 * nothing useful gets the data answer.
 */
async function blockStatusExtents(t: BlockTarget, offset: number, length: number, reqOne: boolean): Promise<{ length: number; flags: number }[]> {
  const data = [{ length, flags: 0 }];
  if (!t.blockStatus) return data;
  const out: { length: number; flags: number }[] = [];
  let covered = 0;
  for (const e of await t.blockStatus(offset, length)) {
    const len = Math.min(e.lengthBytes, length - covered);
    if (!Number.isSafeInteger(len) || len <= 0) break;
    const flags = (e.hole ? StateFlag.HOLE : 0) | (e.zero ? StateFlag.ZERO : 0);
    const last = out[out.length - 1];
    if (last && last.flags === flags) last.length += len;
    else if (out.length >= (reqOne ? 1 : MAX_EXTENTS_PER_REPLY)) break;
    else out.push({ length: len, flags });
    covered += len;
    if (covered >= length) break;
  }
  return out.length > 0 ? out : data;
}
