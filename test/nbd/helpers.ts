/**
 * Helpers for the NBD server tests: an in-memory target with the optional operations, a
 * server started on 127.0.0.1:0 and a Unix socket, async process runs (the server lives in
 * the test process, so the clients must not block its event loop), a raw protocol client,
 * and a seeded PRNG.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { type ConnectionOptions, connect as tlsConnect } from 'node:tls';
import { SeededRandom } from '../../src/env/random.js';
import { TsmdError } from '../../src/errors.js';
import { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { NbdServer, type NbdServerOptions } from '../../src/nbd/server.js';
import { type BlockExtent, type BlockTarget, MapExportRegistry, type NbdExport } from '../../src/nbd/target.js';
import type { RunResult } from '../helpers/tools.js';

export const MiB = 1024 * 1024;
/** allocation granularity of a TestTarget with holes */
export const HOLE_BLOCK = 64 * 1024;

/** Memory-backed BlockTarget with trim/writeZeroes/cache, fault and latency injection. */
export class TestTarget implements BlockTarget {
  readonly dev: MemoryBlockDevice;
  readonly sizeBytes: number;
  readOnly: boolean;
  blockSize?: { min: number; preferred: number; max: number };
  /** requests touching [failFrom, failTo) fail with this error */
  fault: { fromBytes: number; toBytes: number; error: Error } | null = null;
  delayMs = 0;
  /** per-request latency, overrides delayMs */
  delayFor: ((offsetBytes: number, lengthBytes: number) => number) | null = null;
  /** requests inside the target right now, and the most seen at once */
  active = 0;
  maxActive = 0;
  readonly calls = { trim: 0, writeZeroes: 0, cache: 0, flush: 0 };
  trim?: (offsetBytes: number, lengthBytes: number) => Promise<void>;
  writeZeroes?: (offsetBytes: number, lengthBytes: number, opts: { noHole: boolean }) => Promise<void>;
  /** with `holes`: which HOLE_BLOCK-sized blocks hold data (written, or zeroed with NO_HOLE) */
  readonly allocated: Uint8Array | null;
  blockStatus?: (offsetBytes: number, lengthBytes: number) => Promise<BlockExtent[]>;
  /** how often blockStatus was asked */
  blockStatusCalls = 0;

  constructor(
    sizeBytes: number,
    opts: { readOnly?: boolean; blockSize?: { min: number; preferred: number; max: number }; noTrim?: boolean; noZero?: boolean; holes?: boolean } = {},
  ) {
    this.dev = new MemoryBlockDevice('test', sizeBytes);
    this.sizeBytes = sizeBytes;
    this.readOnly = !!opts.readOnly;
    if (opts.blockSize) this.blockSize = opts.blockSize;
    this.allocated = opts.holes ? new Uint8Array(Math.ceil(sizeBytes / HOLE_BLOCK)) : null;
    if (!opts.noTrim) {
      this.trim = async (off, len) => {
        this.calls.trim++;
        await this.zero(off, len);
        this.punch(off, len);
      };
    }
    if (!opts.noZero) {
      this.writeZeroes = async (off, len, o) => {
        this.calls.writeZeroes++;
        await this.zero(off, len);
        if (o.noHole) this.mark(off, len);
        else this.punch(off, len);
      };
    }
    if (this.allocated) {
      // real holes: a block never written, or trimmed / zeroed whole, is a hole that reads as zeros
      const map = this.allocated;
      this.blockStatus = async (off, len) => {
        this.blockStatusCalls++;
        await this.gate(off, len);
        const out: BlockExtent[] = [];
        const end = off + len;
        let at = off;
        while (at < end) {
          const next = Math.min(end, (Math.floor(at / HOLE_BLOCK) + 1) * HOLE_BLOCK);
          const hole = map[Math.floor(at / HOLE_BLOCK)] === 0;
          const last = out[out.length - 1];
          if (last && last.hole === hole) last.lengthBytes += next - at;
          else out.push({ lengthBytes: next - at, hole, zero: hole });
          at = next;
        }
        return out;
      };
    }
  }

  /** blocks touched by a write hold data */
  private mark(off: number, len: number): void {
    if (!this.allocated || len === 0) return;
    this.allocated.fill(1, Math.floor(off / HOLE_BLOCK), Math.ceil((off + len) / HOLE_BLOCK));
  }

  /** blocks wholly inside a trim / zeroing are holes again */
  private punch(off: number, len: number): void {
    if (!this.allocated) return;
    const first = Math.ceil(off / HOLE_BLOCK);
    const end = off + len === this.sizeBytes ? this.allocated.length : Math.floor((off + len) / HOLE_BLOCK);
    if (end > first) this.allocated.fill(0, first, end);
  }

  private async gate(off: number, len: number): Promise<void> {
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      const ms = this.delayFor ? this.delayFor(off, len) : this.delayMs;
      if (ms > 0) await new Promise((r) => setTimeout(r, ms));
    } finally {
      this.active--;
    }
    const f = this.fault;
    if (f && off < f.toBytes && off + len > f.fromBytes) throw f.error;
  }

  private async zero(off: number, len: number): Promise<void> {
    await this.gate(off, len);
    const z = new Uint8Array(Math.min(len, MiB));
    for (let done = 0; done < len; done += z.length) {
      this.dev.writeSync(z.subarray(0, Math.min(z.length, len - done)), off + done);
    }
  }

  async read(buf: Uint8Array, off: number): Promise<void> {
    await this.gate(off, buf.length);
    this.dev.readSync(buf, off);
  }

  async write(buf: Uint8Array, off: number): Promise<void> {
    await this.gate(off, buf.length);
    if (this.readOnly) throw new TsmdError('EROFS', 'read-only');
    this.dev.writeSync(buf, off);
    this.mark(off, buf.length);
  }

  async flush(): Promise<void> {
    this.calls.flush++;
  }

  async cache(): Promise<void> {
    this.calls.cache++;
  }
}

export interface TestServer {
  server: NbdServer;
  port: number;
  socketPath: string;
  uri: (name: string) => string;
  unixUri: (name: string) => string;
  logs: { level: string; msg: string; fields?: Record<string, unknown> }[];
  close: () => Promise<void>;
}

/** A server on 127.0.0.1:0 and on `dir`/nbd.sock. */
export async function startServer(
  exports: NbdExport[],
  dir: string,
  opts: Partial<NbdServerOptions> = {},
): Promise<TestServer> {
  const logs: TestServer['logs'] = [];
  const server = new NbdServer({
    exports: new MapExportRegistry(exports),
    log: (level, msg, fields) => {
      logs.push({ level, msg, fields });
      if (process.env.NBD_TEST_LOG) console.error(level, msg, fields ?? '');
    },
    ...opts,
  });
  const tcp = await server.listen({ host: '127.0.0.1', port: 0 });
  const socketPath = join(dir, 'nbd.sock');
  await server.listen({ path: socketPath });
  return {
    server,
    port: tcp.port!,
    socketPath,
    uri: (name) => `nbd://127.0.0.1:${tcp.port}/${name}`,
    unixUri: (name) => `nbd+unix:///${name}?socket=${socketPath}`,
    logs,
    close: () => server.close(),
  };
}

/** Run a program without blocking the event loop (the server under test is in this process). */
export function runAsync(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, TZ: 'UTC', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < 16 * MiB) stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 16 * MiB) stderr += d;
    });
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${opts.timeoutMs ?? 60000} ms]`;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 60000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ status: code ?? (signal ? 128 : -1), stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** nbdsh must run with the system python (python3-libnbd), not a pyenv shim earlier in PATH. */
export const systemPythonEnv = { PATH: `/usr/bin:/bin:${process.env.PATH ?? ''}` };

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Deterministic PRNG for fuzzing from a seed: env/random.ts's SeededRandom, with the fuzzers' helpers. */
export class Prng {
  private readonly r: SeededRandom;

  constructor(seed: number) {
    this.r = new SeededRandom(seed);
  }

  u32(): number {
    return this.r.u32();
  }

  /** integer in [0, n) */
  int(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

// ------------------------------------------------------------------ raw protocol client

export const NBD = {
  IHAVEOPT: Buffer.from('IHAVEOPT'),
  NBDMAGIC: Buffer.from('NBDMAGIC'),
  OPT_REPLY_MAGIC: 0x0003e889045565a9n,
  REQUEST_MAGIC: 0x25609513,
  SIMPLE_REPLY_MAGIC: 0x67446698,
  STRUCTURED_REPLY_MAGIC: 0x668e33ef,
  OPT: {
    EXPORT_NAME: 1,
    ABORT: 2,
    LIST: 3,
    STARTTLS: 5,
    INFO: 6,
    GO: 7,
    STRUCTURED_REPLY: 8,
    LIST_META_CONTEXT: 9,
    SET_META_CONTEXT: 10,
    EXTENDED_HEADERS: 11,
  },
  REP: {
    ACK: 1,
    SERVER: 2,
    INFO: 3,
    META_CONTEXT: 4,
    ERR_UNSUP: 0x80000001,
    ERR_POLICY: 0x80000002,
    ERR_INVALID: 0x80000003,
    ERR_TLS_REQD: 0x80000005,
    ERR_UNKNOWN: 0x80000006,
    ERR_SHUTDOWN: 0x80000007,
    ERR_TOO_BIG: 0x80000009,
  },
  CMD: { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 },
  FLAG: { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 },
  TX: {
    HAS_FLAGS: 1,
    READ_ONLY: 2,
    SEND_FLUSH: 4,
    SEND_FUA: 8,
    SEND_TRIM: 32,
    SEND_WRITE_ZEROES: 64,
    SEND_DF: 128,
    CAN_MULTI_CONN: 256,
    SEND_CACHE: 1024,
    SEND_FAST_ZERO: 2048,
  },
  ERR: { EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 },
} as const;

export interface OptReply {
  opt: number;
  type: number;
  data: Buffer;
}

export interface CmdReply {
  cookie: bigint;
  error: number;
  data: Buffer;
  /** structured chunk types seen, in order */
  chunks: number[];
  /** BLOCK_STATUS chunks: context id and (length, flags) descriptors */
  status?: { id: number; extents: [number, number][] }[];
  message?: string;
}

/** A byte-level client: exact control of what is sent, strict parsing of what comes back. */
export class RawClient {
  private buf: Buffer = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  private closedErr: Error | null = null;
  readonly closed: Promise<void>;
  structured = false;
  /** cookie → length of a READ in flight (simple replies carry data only for reads) */
  private readLens = new Map<bigint, number>();

  private readonly onData = (d: Buffer): void => {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    this.wake();
  };

  private constructor(readonly sock: Socket) {
    sock.setNoDelay?.(true);
    sock.on('data', this.onData);
    this.closed = new Promise((resolve) => {
      sock.on('close', () => {
        this.closedErr ??= new Error('connection closed');
        this.wake();
        resolve();
      });
    });
    sock.on('error', (e) => {
      this.closedErr = e;
      this.wake();
    });
  }

  /**
   * STARTTLS, then a TLS client handshake over the same socket; returns the client to use from
   * then on (this one must not be used any more).
   */
  async startTls(opts: ConnectionOptions): Promise<RawClient> {
    const r = await this.option(NBD.OPT.STARTTLS);
    if (r[0].type !== NBD.REP.ACK) throw new Error(`STARTTLS refused: 0x${r[0].type.toString(16)}`);
    if (this.buf.length) throw new Error('data after the STARTTLS ACK');
    this.sock.off('data', this.onData);
    const secure = tlsConnect({ ...opts, socket: this.sock });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    return new RawClient(secure);
  }

  static connect(where: { port: number } | { path: string }): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = 'path' in where ? connect(where.path) : connect(where.port, '127.0.0.1');
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  get isClosed(): boolean {
    return this.closedErr !== null;
  }

  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.closedErr) throw this.closedErr;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (have ${this.buf.length})`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    const out = Buffer.from(this.buf.subarray(0, n));
    this.buf = this.buf.subarray(n);
    return out;
  }

  write(b: Uint8Array): void {
    if (!this.sock.destroyed) this.sock.write(b);
  }

  /** Resolves true when the server closes the connection within timeoutMs. */
  async waitClosed(timeoutMs = 3000): Promise<boolean> {
    let t: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.closed.then(() => true),
      new Promise<boolean>((res) => {
        t = setTimeout(() => res(false), timeoutMs);
      }),
    ]);
    clearTimeout(t);
    return r;
  }

  destroy(): void {
    this.sock.destroy();
  }

  /** Greeting + client flags. Returns the server's handshake flags. */
  async handshake(clientFlags = 3): Promise<number> {
    const g = await this.read(18);
    if (!g.subarray(0, 8).equals(NBD.NBDMAGIC) || !g.subarray(8, 16).equals(NBD.IHAVEOPT)) {
      throw new Error('bad greeting');
    }
    const b = Buffer.alloc(4);
    b.writeUInt32BE(clientFlags >>> 0);
    this.write(b);
    return g.readUInt16BE(16);
  }

  sendOption(opt: number, data: Uint8Array = Buffer.alloc(0), lengthOverride?: number): void {
    const h = Buffer.alloc(16);
    NBD.IHAVEOPT.copy(h, 0);
    h.writeUInt32BE(opt >>> 0, 8);
    h.writeUInt32BE((lengthOverride ?? data.length) >>> 0, 12);
    this.write(Buffer.concat([h, data]));
  }

  async readOptReply(): Promise<OptReply> {
    const h = await this.read(20);
    if (h.readBigUInt64BE(0) !== NBD.OPT_REPLY_MAGIC) throw new Error(`bad option reply magic ${h.toString('hex')}`);
    const len = h.readUInt32BE(16);
    if (len > 1 << 20) throw new Error(`option reply too long: ${len}`);
    return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(len) };
  }

  /** Sends an option and collects replies up to the final one (ACK or an error). */
  async option(opt: number, data?: Uint8Array): Promise<OptReply[]> {
    this.sendOption(opt, data);
    const out: OptReply[] = [];
    for (;;) {
      const r = await this.readOptReply();
      if (r.opt !== opt) throw new Error(`reply for option ${r.opt}, expected ${opt}`);
      out.push(r);
      if (r.type === NBD.REP.ACK || r.type & 0x80000000) return out;
    }
  }

  static goData(name: string, infos: number[] = []): Buffer {
    const n = Buffer.from(name, 'utf8');
    const b = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
    b.writeUInt32BE(n.length, 0);
    n.copy(b, 4);
    b.writeUInt16BE(infos.length, 4 + n.length);
    infos.forEach((x, i) => b.writeUInt16BE(x, 6 + n.length + 2 * i));
    return b;
  }

  /** Full handshake to transmission with GO; returns size, flags and block sizes. */
  async go(
    name: string,
    opts: { structured?: boolean; infos?: number[] } = {},
  ): Promise<{ size: number; flags: number; min?: number; preferred?: number; max?: number }> {
    await this.handshake();
    if (opts.structured) {
      const r = await this.option(NBD.OPT.STRUCTURED_REPLY);
      if (r[0].type !== NBD.REP.ACK) throw new Error('structured replies refused');
      this.structured = true;
    }
    const replies = await this.option(NBD.OPT.GO, RawClient.goData(name, opts.infos ?? [3]));
    const last = replies[replies.length - 1];
    if (last.type !== NBD.REP.ACK) throw new Error(`GO refused: 0x${last.type.toString(16)} ${last.data.toString()}`);
    const out: { size: number; flags: number; min?: number; preferred?: number; max?: number } = { size: -1, flags: 0 };
    for (const r of replies) {
      if (r.type !== NBD.REP.INFO) continue;
      const t = r.data.readUInt16BE(0);
      if (t === 0) {
        out.size = Number(r.data.readBigUInt64BE(2));
        out.flags = r.data.readUInt16BE(10);
      } else if (t === 3) {
        out.min = r.data.readUInt32BE(2);
        out.preferred = r.data.readUInt32BE(6);
        out.max = r.data.readUInt32BE(10);
      }
    }
    return out;
  }

  static request(type: number, flags: number, cookie: bigint, offset: bigint | number, length: number): Buffer {
    const b = Buffer.alloc(28);
    b.writeUInt32BE(NBD.REQUEST_MAGIC, 0);
    b.writeUInt16BE(flags, 4);
    b.writeUInt16BE(type, 6);
    b.writeBigUInt64BE(cookie, 8);
    b.writeBigUInt64BE(BigInt(offset), 16);
    b.writeUInt32BE(length >>> 0, 24);
    return b;
  }

  /** A READ sent by hand (write()): its simple reply carries `length` bytes of data. */
  expectRead(cookie: bigint, length: number): void {
    this.readLens.set(cookie, length);
  }

  send(type: number, flags: number, cookie: bigint, offset: bigint | number, length: number, payload?: Uint8Array): void {
    if (type === NBD.CMD.READ) this.readLens.set(cookie, length);
    const h = RawClient.request(type, flags, cookie, offset, length);
    this.write(payload ? Buffer.concat([h, payload]) : h);
  }

  /** Reads one complete reply (simple, or all chunks of a structured one). */
  async readReply(timeoutMs = 5000): Promise<CmdReply> {
    const first = await this.read(4, timeoutMs);
    const magic = first.readUInt32BE(0);
    if (magic === NBD.SIMPLE_REPLY_MAGIC) {
      const h = await this.read(12, timeoutMs);
      const error = h.readUInt32BE(0);
      const cookie = h.readBigUInt64BE(4);
      const rl = this.readLens.get(cookie);
      this.readLens.delete(cookie);
      if (rl !== undefined && this.structured) throw new Error('simple reply to a READ with structured replies on');
      const data = error === 0 && rl ? await this.read(rl, timeoutMs) : Buffer.alloc(0);
      return { cookie, error, data, chunks: [] };
    }
    if (magic !== NBD.STRUCTURED_REPLY_MAGIC) throw new Error(`bad reply magic ${magic.toString(16)}`);
    if (!this.structured) throw new Error('structured reply without negotiation');
    const reply: CmdReply = { cookie: 0n, error: 0, data: Buffer.alloc(0), chunks: [] };
    let hdr: Buffer = Buffer.concat([first, await this.read(16, timeoutMs)]);
    for (;;) {
      const flags = hdr.readUInt16BE(4);
      const type = hdr.readUInt16BE(6);
      reply.cookie = hdr.readBigUInt64BE(8);
      const len = hdr.readUInt32BE(16);
      const payload = await this.read(len, timeoutMs);
      reply.chunks.push(type);
      if (type === 1) {
        const off = Number(payload.readBigUInt64BE(0));
        reply.data = Buffer.concat([reply.data, payload.subarray(8)]);
        void off;
      } else if (type === 0x8001 || type === 0x8002) {
        reply.error = payload.readUInt32BE(0);
        const ml = payload.readUInt16BE(4);
        reply.message = payload.toString('utf8', 6, 6 + ml);
      } else if (type === 5) {
        if (len < 12 || (len - 4) % 8 !== 0) throw new Error(`BLOCK_STATUS chunk of ${len} bytes`);
        const extents: [number, number][] = [];
        for (let at = 4; at < len; at += 8) extents.push([payload.readUInt32BE(at), payload.readUInt32BE(at + 4)]);
        (reply.status ??= []).push({ id: payload.readUInt32BE(0), extents });
      } else if (type !== 0) {
        throw new Error(`unexpected chunk type ${type}`);
      }
      if (flags & 1) break;
      hdr = await this.read(20, timeoutMs);
      if (hdr.readUInt32BE(0) !== NBD.STRUCTURED_REPLY_MAGIC) throw new Error('bad chunk magic');
    }
    this.readLens.delete(reply.cookie);
    return reply;
  }

  /** One request, one reply (no other request outstanding). */
  async cmd(type: number, flags: number, offset: number, length: number, payload?: Uint8Array): Promise<CmdReply> {
    const cookie = BigInt(Math.floor(Math.random() * 2 ** 48));
    this.send(type, flags, cookie, offset, length, payload);
    const r = await this.readReply();
    if (r.cookie !== cookie) throw new Error(`reply cookie ${r.cookie} for request ${cookie}`);
    return r;
  }
}

/** Simple connection of the well-behaved test client: handshake + GO on `name`. */
export async function connectGo(
  where: { port: number } | { path: string },
  name: string,
  opts: { structured?: boolean; infos?: number[] } = {},
): Promise<{ c: RawClient; size: number; flags: number; min?: number; preferred?: number; max?: number }> {
  const c = await RawClient.connect(where);
  const info = await c.go(name, opts);
  return { c, ...info };
}

// ------------------------------------------------------------------ hostile clients

/**
 * What the hostile clients of `hostileClient` attack: a server (in this process or a daemon),
 * its endpoints and exports. Writes to `shared` are never valid and complete (bad flags, beyond
 * the end, oversize, read-only, or a truncated payload followed by a disconnect), so its data
 * must come out unchanged; anything goes on `scratch`.
 */
export interface FuzzTarget {
  endpoints: ReadonlyArray<{ port: number } | { path: string }>;
  /** the export whose data must not change */
  shared: string;
  /** the first goodBytes of `shared` belong to a well-behaved client: truncated writes aim past them */
  goodBytes: number;
  /** an export that takes any valid request */
  scratch: string;
  /** a read-only export, if the server has one */
  readOnly?: string;
  /** the server's maximum payload (READ/WRITE lengths above it are refused) */
  maxPayloadBytes: number;
}

function fuzzOptBytes(opt: number, data: Buffer): Buffer {
  const h = Buffer.alloc(16);
  NBD.IHAVEOPT.copy(h);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

/** Read whatever comes back for a moment, then drop the connection. */
async function fuzzDrain(c: RawClient, ms: number): Promise<void> {
  await c.waitClosed(ms);
  c.destroy();
}

/**
 * One hostile client in the handshake phase: garbage, unknown client flags, option headers with
 * random (huge) lengths, GO/INFO with lying lengths, sequences cut at a random byte, unknown
 * options then a good GO, bad option magic, stalls.
 */
export async function handshakeAttack(p: Prng, t: FuzzTarget): Promise<void> {
  const c = await RawClient.connect(p.pick(t.endpoints));
  const kind = p.int(8);
  try {
    if (kind === 0) {
      // garbage instead of client flags and options
      await c.read(18);
      c.write(p.bytes(p.int(300)));
      await fuzzDrain(c, 30);
      return;
    }
    if (kind === 1) {
      // unknown client flags
      await c.handshake(p.u32() | 4);
      assert.ok(await c.waitClosed(2000), 'unknown client flags: disconnected');
      return;
    }
    await c.handshake(p.int(4) === 0 ? 1 : 3);
    if (kind === 2) {
      // an option header with a random option and a random (maybe huge) length, partly sent
      const h = Buffer.alloc(16);
      NBD.IHAVEOPT.copy(h);
      h.writeUInt32BE(p.u32(), 8);
      h.writeUInt32BE(p.int(2) ? p.u32() : p.int(70000), 12);
      c.write(Buffer.concat([h, p.bytes(p.int(2000))]));
      await fuzzDrain(c, 20);
    } else if (kind === 3) {
      // GO/INFO with lying lengths and random info requests
      const name = p.pick([t.shared, t.scratch, t.readOnly ?? 'nope', 'nope', '', 'x'.repeat(5000)]);
      const data = RawClient.goData(name, Array.from({ length: p.int(6) }, () => p.int(70000) & 0xffff));
      if (p.int(2)) data.writeUInt32BE(p.u32(), 0);
      if (p.int(3) === 0) data.writeUInt16BE(p.int(65536), 4 + Math.min(Buffer.byteLength(name), data.length - 6));
      const opt = p.pick([NBD.OPT.INFO, NBD.OPT.GO]);
      const replies = await c.option(opt, data);
      const last = replies.at(-1)!;
      assert.ok(last.type === NBD.REP.ACK || last.type & 0x80000000, 'final reply');
    } else if (kind === 4) {
      // a correct option sequence cut at a random byte
      const seq = Buffer.concat([
        fuzzOptBytes(NBD.OPT.STRUCTURED_REPLY, Buffer.alloc(0)),
        fuzzOptBytes(NBD.OPT.LIST, Buffer.alloc(0)),
        fuzzOptBytes(NBD.OPT.GO, RawClient.goData(t.shared, [3])),
      ]);
      c.write(seq.subarray(0, p.int(seq.length)));
    } else if (kind === 5) {
      // unknown/unsupported options, then a good GO on the same connection
      for (let i = 0; i < 1 + p.int(4); i++) {
        const opt = p.pick([0, 4, 9, 10, 11, 12, 77, p.u32()]);
        if (opt === NBD.OPT.EXPORT_NAME || opt === NBD.OPT.ABORT || opt === NBD.OPT.GO || opt === NBD.OPT.STARTTLS) continue;
        const r = await c.option(opt, p.bytes(p.int(100)));
        assert.ok(r.at(-1)!.type & 0x80000000 || r.at(-1)!.type === NBD.REP.ACK);
      }
      const go = await c.option(NBD.OPT.GO, RawClient.goData(t.scratch, []));
      assert.equal(go.at(-1)!.type, NBD.REP.ACK);
    } else if (kind === 6) {
      // bad option magic
      const h = fuzzOptBytes(NBD.OPT.LIST, Buffer.alloc(0));
      h[p.int(8)] ^= 1 + p.int(255);
      c.write(h);
      assert.ok(await c.waitClosed(2000), 'bad option magic: disconnected');
    } else {
      // stall: the handshake timeout ends it (not waited for)
      await fuzzDrain(c, 10);
    }
  } finally {
    c.destroy();
  }
}

/**
 * One hostile client in the transmission phase: bad request magic, unknown commands and flags,
 * reads and writes beyond the end or above the maximum payload, truncated write payloads with
 * an abrupt disconnect, floods of unread replies, DISC with requests in flight; anything goes
 * on the scratch export. None of it may change `shared`.
 */
export async function transmissionAttack(p: Prng, t: FuzzTarget): Promise<void> {
  const names = t.readOnly === undefined ? [t.shared, t.shared, t.scratch] : [t.shared, t.shared, t.scratch, t.readOnly];
  const name = p.pick(names);
  const ro = name === t.readOnly;
  const { c, size } = await connectGo(p.pick(t.endpoints), name, { structured: p.int(2) === 1, infos: p.int(2) ? [3] : [] });
  const onShared = name === t.shared;
  const max = t.maxPayloadBytes;
  try {
    for (let i = 0; i < 1 + p.int(6); i++) {
      const kind = p.int(10);
      const cookie = BigInt(p.u32());
      if (kind === 0) {
        // garbage where a request header belongs (never the request magic)
        const g = p.bytes(28 + p.int(100));
        g[0] = 0x26;
        c.write(g);
        assert.ok(await c.waitClosed(2000), 'bad request magic: disconnected');
        return;
      }
      if (kind === 1) {
        // unknown commands with random flags, offsets, lengths (no payload)
        const type = p.pick([8, 9, 42, 255, 0xffff, NBD.CMD.BLOCK_STATUS]);
        c.send(type, p.int(65536), cookie, BigInt(p.u32()) * BigInt(p.u32()), p.u32());
        const r = await c.readReply();
        assert.equal(r.error, NBD.ERR.EINVAL);
      } else if (kind === 2) {
        // reads: beyond the end, huge lengths, odd flags
        const off = p.pick([size, size - 512, p.u32() * 4096, 2 ** 60]);
        const len = p.pick([512, 4096, max + 512, 0xffffffff]);
        c.send(NBD.CMD.READ, p.pick([0, NBD.FLAG.FUA, 0x40]), cookie, BigInt(off), len);
        const r = await c.readReply();
        assert.ok(r.error === NBD.ERR.EINVAL || (r.error === 0 && off + len <= size), `read ${off}+${len}: ${r.error}`);
      } else if (kind === 3) {
        // writes beyond the end, with their payload: refused, payload skipped, connection kept
        const len = 512 * (2 + p.int(64));
        c.send(NBD.CMD.WRITE, 0, cookie, size - p.int(2) * 512, len, p.bytes(len));
        const r = await c.readReply();
        assert.equal(r.error, ro ? NBD.ERR.EPERM : NBD.ERR.ENOSPC);
      } else if (kind === 4) {
        // writes with unknown flags, or larger than the maximum payload
        const len = p.int(2) ? max + 512 * (1 + p.int(1000)) : 4096;
        const flags = len > max ? 0 : 0x80 << p.int(8);
        const off = onShared ? p.int(size / 512) * 512 : 0;
        if (len > 4 * MiB && p.int(4) !== 0) {
          // a big server limit: mostly send only part of the oversize payload, then vanish
          c.send(NBD.CMD.WRITE, flags, cookie, off, len, Buffer.alloc(p.int(MiB), 0xee));
          return;
        }
        c.send(NBD.CMD.WRITE, flags, cookie, off, len, Buffer.alloc(len, 0xee));
        const r = await c.readReply(15_000);
        // unknown flags are refused first, then read-only, then the size
        assert.equal(r.error, ro && flags === 0 ? NBD.ERR.EPERM : NBD.ERR.EINVAL);
      } else if (kind === 5) {
        // a valid write header with a truncated payload, then an abrupt disconnect
        const big = p.int(8) === 0;
        let len = big ? 512 * (1 + p.int(Math.min(max, 16 * MiB) / 512)) : 4096 * (1 + p.int(64));
        if (onShared) len = Math.min(len, size - t.goodBytes);
        else len = Math.min(len, size);
        const off = onShared ? t.goodBytes + p.int((size - t.goodBytes - len) / 512 + 1) * 512 : 0;
        c.send(NBD.CMD.WRITE, 0, cookie, off, len, Buffer.alloc(p.int(len), 0xdd));
        return;
      } else if (kind === 6) {
        // trims and zeroes beyond the end
        const cmd = p.pick([NBD.CMD.TRIM, NBD.CMD.WRITE_ZEROES]);
        c.send(cmd, 0, cookie, size, 512);
        const r = await c.readReply();
        assert.ok(r.error === NBD.ERR.EINVAL || r.error === NBD.ERR.ENOSPC || r.error === NBD.ERR.EPERM, `${cmd}: ${r.error}`);
      } else if (kind === 7) {
        // a flood of reads whose replies are never read, then gone
        for (let k = 0; k < 50 + p.int(200); k++) c.send(NBD.CMD.READ, 0, BigInt(k), 0, 65536);
        return;
      } else if (kind === 8) {
        // DISC with requests in flight, then more bytes the server must ignore
        c.send(NBD.CMD.READ, 0, cookie, 0, 4096);
        c.send(NBD.CMD.DISC, 0, cookie + 1n, 0, 0);
        c.write(p.bytes(p.int(64)));
        await c.readReply().catch(() => undefined);
        assert.ok(await c.waitClosed(2000), 'closed after DISC');
        return;
      } else if (name === t.scratch) {
        // anything goes on the scratch export
        const len = 512 * p.int(64);
        const off = p.int(2) ? p.int(Math.max(1, (size - len) / 512)) * 512 : p.int(size);
        const cmd = p.pick([NBD.CMD.WRITE, NBD.CMD.TRIM, NBD.CMD.WRITE_ZEROES, NBD.CMD.CACHE, NBD.CMD.FLUSH]);
        c.send(cmd, p.pick([0, NBD.FLAG.FUA]), cookie, off, len, cmd === NBD.CMD.WRITE ? p.bytes(len) : undefined);
        await c.readReply();
      }
    }
  } finally {
    c.destroy();
  }
}

/** One hostile client: a handshake or a transmission attack, chosen by the PRNG. */
export async function hostileClient(p: Prng, t: FuzzTarget): Promise<void> {
  if (p.int(2)) await handshakeAttack(p, t);
  else await transmissionAttack(p, t);
}
