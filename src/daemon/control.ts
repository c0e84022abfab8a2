/**
 * The control socket: newline-delimited JSON over a Unix socket (mode 0600), the way mdadm
 * talks to the kernel through ioctls and sysfs. One request per line, one reply per request.
 *
 *   → {"id":1,"op":"mdadm","argv":["--detail","/dev/md0"],"cwd":"/root","env":{...}}
 *   ← {"id":1,"code":0,"stdout":"...","stderr":""}
 *   → {"id":2,"op":"ping"}   ← {"id":2,"pid":123,"version":"0.1.0"}
 *   → {"id":4,"op":"speed-limits","speedLimits":{"maxKiBs":5000}}
 *   ← {"id":4,"code":0,"speedLimits":{"minKiBs":1000,"maxKiBs":5000}}
 *   → {"id":3,"op":"nope"}   ← {"id":3,"error":"unknown control operation nope","errorCode":"EINVAL"}
 *
 * A request the daemon could not handle is answered with `error` (the message) and, when the
 * handler threw a TsmdError, `errorCode` (its code, see ERROR_CODES in ../errors.ts), the way
 * an ioctl fails with an errno: the client (controlCall) rejects with a TsmdError of that code
 * and message, so `tsmd` exits as it would had the failure happened in-process. A reply
 * without `errorCode` (an older daemon, or an error that is no TsmdError) or with a code this
 * build does not know (a newer daemon) is EIO.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { type ErrorCode, isErrorCode, TsmdError } from '../errors.js';

export const MAX_REQUEST_BYTES = 1 << 20;

export interface ControlRequest {
  id: number;
  op: 'ping' | 'mdadm' | 'shutdown' | 'arrays' | 'fault' | 'speed-limits';
  /**
   * op 'speed-limits': the node-wide sync speed limits to set (KiB/s; either or both, none:
   * just read them), md's sysctl dev.raid.speed_limit_min/max. Answered at once, outside the
   * command queue, as a sysctl write is; every running array and every later one follows.
   */
  speedLimits?: { minKiBs?: number; maxKiBs?: number };
  /** op 'fault' (daemon started with --fault-injection): the member path and what to inject */
  fault?: { path: string; kind: 'read' | 'write' | 'any' | 'vanish' | 'clear'; startBytes?: number; endBytes?: number; count?: number | null };
  argv?: string[];
  cwd?: string;
  env?: Record<string, string>;
}

export interface ControlReply {
  id: number;
  code?: number;
  stdout?: string;
  stderr?: string;
  pid?: number;
  version?: string;
  /** the request failed: the message */
  error?: string;
  /** the request failed with a TsmdError: its code (absent for other errors) */
  errorCode?: string;
  /** op 'speed-limits': the node-wide limits after the change */
  speedLimits?: { minKiBs: number; maxKiBs: number };
  /** op 'arrays': the state --wait and --monitor poll */
  arrays?: ArrayState[];
}

/** One running array as --monitor and --wait see it. */
export interface ArrayState {
  mdName: string;
  devPath: string;
  uuid: string;
  level: number;
  raidDisks: number;
  degraded: boolean;
  /** redundant levels only: slots without a working in-sync member */
  missing: number;
  members: Array<{ path: string; slot: number | null; faulty: boolean; rebuilding: boolean }>;
  sync: { kind: string; doneSectors: number; totalSectors: number; speedKiBs: number } | null;
  syncBusy: boolean;
  /** a reshape recorded in the superblocks (null: none): checkpointed position, engine state */
  reshape: {
    positionSectors: number;
    running: boolean;
    frozen: boolean;
    stuck: string | null;
    /** progress as /proc/mdstat's reshape line counts it (per-member sectors); null while not running */
    doneSectors: number | null;
    totalSectors: number | null;
  } | null;
  /** the last reshape finished since the array was assembled: array sectors moved, time taken */
  lastReshape: { movedSectors: number; elapsedMs: number } | null;
  mismatchCnt: number;
  /** finished or interrupted sync jobs, oldest first (bounded) */
  syncHistory: Array<{ kind: string; completed: boolean; workedSectors: number; totalSectors: number; mismatches: number; dataMs: number; elapsedMs: number }>;
  /** resync-space sectors per bitmap bit, and the bits set now (null: no bitmap) */
  bitmap: { chunkSectors: number; dirty: number; nbits: number } | null;
  /**
   * a clustered array: this node's bitmap slot (0-based: md's slot_number - 1), another node's
   * sync seen (resync=REMOTE), waiting for the resync lock (PENDING), the fence reason; null:
   * not clustered
   */
  cluster: { slot: number; remoteSync: string | null; pending: boolean; fenced: string | null } | null;
}

export type ControlHandler = (req: ControlRequest) => Promise<Omit<ControlReply, 'id'>>;

/** Serve the control protocol on a Unix socket. */
export function serveControl(path: string, handler: ControlHandler, onError: (e: unknown) => void): Server {
  const server = createServer((sock: Socket) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => sock.destroy());
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_REQUEST_BYTES) {
        sock.end(`${JSON.stringify({ id: 0, error: 'request too large' })}\n`);
        sock.destroy();
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let req: ControlRequest;
        try {
          req = JSON.parse(line) as ControlRequest;
          if (typeof req !== 'object' || req === null || typeof req.id !== 'number') throw new Error('bad request');
        } catch {
          sock.write(`${JSON.stringify({ id: 0, error: 'malformed request' })}\n`);
          continue;
        }
        handler(req).then(
          (rep) => {
            if (!sock.destroyed) sock.write(`${JSON.stringify({ id: req.id, ...rep })}\n`);
          },
          (e: unknown) => {
            onError(e);
            if (!sock.destroyed) sock.write(`${JSON.stringify({ id: req.id, ...errorReply(e) })}\n`);
          },
        );
      }
    });
  });
  return server;
}

/** The reply fields for a request whose handler threw `e`. */
export function errorReply(e: unknown): Pick<ControlReply, 'error' | 'errorCode'> {
  const error = e instanceof Error ? e.message : String(e);
  return e instanceof TsmdError ? { error, errorCode: e.code } : { error };
}

/** The error a failed reply stands for: a TsmdError with the daemon's code (EIO if none or unknown). */
export function replyError(rep: Pick<ControlReply, 'error' | 'errorCode'>): TsmdError {
  const code: ErrorCode = isErrorCode(rep.errorCode) ? rep.errorCode : 'EIO';
  return new TsmdError(code, rep.error ?? 'the node daemon failed without saying why');
}

/**
 * One request to a daemon. A failed request rejects with a TsmdError carrying the daemon's
 * code and message (replyError); ENODEV when nothing listens, ETIMEDOUT after timeoutMs.
 */
export function controlCall(path: string, req: Omit<ControlRequest, 'id'>, timeoutMs = 0): Promise<ControlReply> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    let timer: NodeJS.Timeout | null = null;
    if (timeoutMs > 0) {
      timer = setTimeout(() => {
        sock.destroy();
        reject(new TsmdError('ETIMEDOUT', `the node daemon at ${path} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
    }
    const done = (fn: () => void) => {
      if (timer) clearTimeout(timer);
      fn();
    };
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify({ id: 1, ...req })}\n`));
    sock.on('data', (c: string) => {
      buf += c;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      sock.end();
      try {
        const rep = JSON.parse(buf.slice(0, nl)) as ControlReply;
        done(() => (rep.error !== undefined || rep.errorCode !== undefined ? reject(replyError(rep)) : resolve(rep)));
      } catch (e) {
        done(() => reject(e));
      }
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      done(() =>
        reject(
          e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
            ? new TsmdError('ENODEV', `no node daemon listens on ${path}`)
            : new TsmdError('EIO', `control socket ${path}: ${e.message}`),
        ),
      );
    });
    sock.on('close', () => done(() => reject(new TsmdError('EIO', 'the node daemon closed the control socket without answering'))));
  });
}
