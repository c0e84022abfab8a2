/**
 * A minimal NBD client for tests that need to know exactly which writes were acknowledged
 * (crash tests): fixed newstyle, OPT_GO, simple replies, READ/WRITE(FUA)/FLUSH/DISC, requests
 * pipelined and matched by cookie.
 */
import { connect, type Socket } from 'node:net';

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const OPT_GO = 7;
const REQ_MAGIC = 0x25609513;
const SIMPLE_REPLY = 0x67446698;
const OPT_REPLY_MAGIC = 0x3e889045565a9n;

/** How long a request may wait for its reply before the test calls the server hung. */
const REPLY_TIMEOUT_MS = 120_000;

export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3 } as const;
export const FLAG_FUA = 1;

export class NbdTestClient {
  sizeBytes = 0;
  flags = 0;
  private sock!: Socket;
  private buf: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private pending = new Map<bigint, { resolve: (v: Buffer | null) => void; reject: (e: Error) => void; readLen: number }>();
  private cookie = 1n;
  private closed: Error | null = null;

  static async connect(port: number, exportName: string, host = '127.0.0.1'): Promise<NbdTestClient> {
    const c = new NbdTestClient();
    await c.open(port, exportName, host);
    return c;
  }

  private async need(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closed) throw this.closed;
      await new Promise<void>((r) => this.waiters.push(r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return Buffer.from(out);
  }

  private async open(port: number, name: string, host: string): Promise<void> {
    this.sock = connect(port, host);
    this.sock.setNoDelay(true);
    this.sock.on('data', (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
    const fail = (e: Error) => {
      this.closed = e;
      for (const f of this.waiters) f();
      this.waiters = [];
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    this.sock.on('error', fail);
    this.sock.on('close', () => fail(new Error('connection closed')));
    const hello = await this.need(18);
    if (hello.readBigUInt64BE(0) !== NBDMAGIC || hello.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('not an NBD newstyle server');
    const cflags = Buffer.alloc(4);
    cflags.writeUInt32BE(1 | 2); // fixed newstyle, no zeroes
    this.sock.write(cflags);
    const nameB = Buffer.from(name);
    const data = Buffer.alloc(4 + nameB.length + 2);
    data.writeUInt32BE(nameB.length, 0);
    nameB.copy(data, 4);
    data.writeUInt16BE(0, 4 + nameB.length);
    const opt = Buffer.alloc(16);
    opt.writeBigUInt64BE(IHAVEOPT, 0);
    opt.writeUInt32BE(OPT_GO, 8);
    opt.writeUInt32BE(data.length, 12);
    this.sock.write(Buffer.concat([opt, data]));
    for (;;) {
      const h = await this.need(20);
      if (h.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw new Error('bad option reply magic');
      const type = h.readUInt32BE(12);
      const len = h.readUInt32BE(16);
      const body = await this.need(len);
      if (type === 1) break; // ACK
      if (type === 3 && body.readUInt16BE(0) === 0) {
        this.sizeBytes = Number(body.readBigUInt64BE(2));
        this.flags = body.readUInt16BE(10);
      } else if (type & 0x80000000) {
        throw new Error(`OPT_GO refused: reply type 0x${type.toString(16)} ${body.toString()}`);
      }
    }
    void this.replyLoop();
  }

  private async replyLoop(): Promise<void> {
    try {
      for (;;) {
        const h = await this.need(16);
        if (h.readUInt32BE(0) !== SIMPLE_REPLY) throw new Error('bad reply magic');
        const err = h.readUInt32BE(4);
        const cookie = h.readBigUInt64BE(8);
        const p = this.pending.get(cookie);
        if (!p) throw new Error(`reply for unknown cookie ${cookie}`);
        this.pending.delete(cookie);
        if (err) {
          p.reject(Object.assign(new Error(`NBD error ${err}`), { nbdError: err }));
          continue;
        }
        p.resolve(p.readLen ? await this.need(p.readLen) : null);
      }
    } catch {
      // connection ended: pending requests were rejected
    }
  }

  private request(type: number, flags: number, offset: number, length: number, payload?: Uint8Array, readLen = 0): Promise<Buffer | null> {
    if (this.closed) return Promise.reject(this.closed);
    const cookie = this.cookie++;
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQ_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    const p = new Promise<Buffer | null>((resolve, reject) => this.pending.set(cookie, { resolve, reject, readLen }));
    // a server that never answers fails the test with what it did not answer, not a hung suite
    const timer = setTimeout(() => {
      const q = this.pending.get(cookie);
      if (!q) return;
      this.pending.delete(cookie);
      const what = ['READ', 'WRITE', 'DISC', 'FLUSH'][type] ?? `type ${type}`;
      q.reject(new Error(`no reply to NBD ${what} (offset ${offset}, length ${length}) within ${REPLY_TIMEOUT_MS / 1000} s`));
      // its reply can no longer be matched: the stream is unusable
      this.sock.destroy();
    }, REPLY_TIMEOUT_MS);
    this.sock.write(payload ? Buffer.concat([h, payload]) : h);
    return p.finally(() => clearTimeout(timer));
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.request(CMD.READ, 0, offset, length, undefined, length) as Promise<Buffer>;
  }

  async write(offset: number, data: Uint8Array, fua = false): Promise<void> {
    await this.request(CMD.WRITE, fua ? FLAG_FUA : 0, offset, data.length, data);
  }

  async flush(): Promise<void> {
    await this.request(CMD.FLUSH, 0, 0, 0);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQ_MAGIC, 0);
    h.writeUInt16BE(CMD.DISC, 6);
    this.sock.end(h);
    await new Promise<void>((r) => (this.sock.destroyed ? r() : this.sock.once('close', () => r())));
  }

  destroy(): void {
    this.sock.destroy();
  }
}

/** Read [0, upTo) of an export in 4 MiB requests. */
export async function readExport(c: NbdTestClient, upTo: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let off = 0; off < upTo; off += 4 << 20) parts.push(await c.read(off, Math.min(4 << 20, upTo - off)));
  return Buffer.concat(parts);
}
