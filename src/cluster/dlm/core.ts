/**
 * The node side of a lockspace, shared by both backends: argument checks, lock handles, pending
 * requests with their timeouts and cancellation, completion and BAST delivery, fencing.
 *
 * A backend supplies two things: `submit` (apply a grant-engine operation, given as data, to a
 * resource's state atomically and in one order seen by every node: in place in memory, appended to
 * the resource's operation log in etcd) and a stream of resource states (`onState`), from which
 * this node learns what others' operations did to its locks: a queued request granted, a BAST, all
 * recorded in its lock entries by the engine.
 */
import { EventEmitter } from 'node:events';
import type { Clock, Timer } from '../../env/clock.js';
import { assert, TsmdError } from '../../errors.js';
import * as engine from './grant.js';
import type { CancelResult, LockEntry, Op, OpResult, Outcome, ResourceState } from './grant.js';
import {
  Flag,
  type LockHandle,
  type LockOptions,
  type Lockspace,
  Mode,
  type ModeOrIV,
  modeName,
  SbFlag,
  type SlotInfo,
  UNLOCK_FLAGS,
  type UnlockOptions,
  validateLvb,
  validateMode,
  validateRequestFlags,
  validateResourceName,
  validateTimeout,
} from './types.js';

/** Backend operations the core needs. */
export interface LockspaceBackend {
  /**
   * Apply `op` to `resource` exactly once (engine.applyOp), in the order this node submitted its
   * operations on that resource, and resolve with its result once this node's copy of the state
   * includes it. `deadlineMs` (clock time) bounds the retries of getting it accepted. After a change
   * the backend calls `core.onState(resource)` for every affected node.
   */
  submit(resource: string, op: Op, deadlineMs: number): Promise<OpResult>;
  /** Latest state of a resource known to this node. */
  peek(resource: string): ResourceState | undefined;
  /** Current members as known to this node. */
  members(): SlotInfo[];
  /** Leave the lockspace after every lock was released. */
  leave(): Promise<void>;
  /**
   * Complete down-conversions at once, before the backend has applied them (Linux does this for a
   * remote master: "down conversions go without a reply"). The backend must apply a node's
   * operations on one resource in order.
   */
  readonly asyncDownConversions?: boolean;
  /** A down-conversion already reported done could not be applied: this node must stop. */
  lost?(reason: string): void;
}

/** A conversion down (not PR<->CW, which is "middle"): always grantable at once. */
export function isDownConversion(from: Mode, to: Mode): boolean {
  const middle = (from === Mode.PR && to === Mode.CW) || (from === Mode.CW && to === Mode.PR);
  return !middle && to < from;
}

export interface CoreOptions {
  name: string;
  nodeId: string;
  slot: number;
  /** owner incarnation written in lock entries */
  inc: string;
  lvbLength: number;
  timeoutMs: number;
  clock: Clock;
}

interface Pending {
  op: number;
  mode: Mode;
  isNew: boolean;
  resolve: () => void;
  reject: (e: unknown) => void;
  timer?: Timer;
  /** a cancel (timeout, abort, cancel()) is under way */
  cancelling?: 'ETIMEDOUT' | 'ECANCELED';
  abort?: { signal: AbortSignal; fn: () => void };
  timeoutMs: number;
  /** the request's own transaction, settled once its outcome is handled */
  inflight?: Promise<void>;
}

function b64(buf: Uint8Array): string {
  return Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('base64');
}

export class LockImpl implements LockHandle {
  mode: Mode | null = null;
  sbFlags = 0;
  readonly lvb: Buffer | null;
  pending: Pending | null = null;
  opSeq = 0;
  bastFn: ((mode: Mode) => void) | undefined;
  lastBs = 0;
  /** flags of the last request (VALBLK is remembered for unlock, as exflags are in Linux) */
  lastFlags = 0;
  /** an unlock of this lock under way: further requests on it are EBUSY, as in Linux */
  unlocking: Promise<void> | null = null;

  constructor(
    readonly core: LockspaceCore,
    readonly id: string,
    readonly resource: string,
  ) {
    this.lvb = core.lvbLength > 0 ? Buffer.alloc(core.lvbLength) : null;
  }

  get pendingMode(): Mode | null {
    return this.pending ? this.pending.mode : null;
  }

  get valNotValid(): boolean {
    return (this.sbFlags & SbFlag.VALNOTVALID) !== 0;
  }

  convert(mode: Mode, opts: LockOptions = {}): Promise<void> {
    return this.core.request(this, mode, opts, false);
  }

  unlock(opts: UnlockOptions = {}): Promise<void> {
    return this.core.unlock(this, opts);
  }

  cancel(): Promise<boolean> {
    return this.core.cancel(this, 'ECANCELED');
  }

  toString(): string {
    return `lock ${this.id} on ${this.core.name}/${this.resource}`;
  }
}

export class LockspaceCore extends EventEmitter implements Lockspace {
  readonly name: string;
  readonly nodeId: string;
  readonly slot: number;
  readonly inc: string;
  readonly lvbLength: number;
  readonly timeoutMs: number;
  readonly clock: Clock;
  backend!: LockspaceBackend;
  fenced = false;
  left = false;
  private fenceError: TsmdError | undefined;
  private lockSeq = 0;
  /** this node's live locks by resource */
  private readonly byResource = new Map<string, Set<LockImpl>>();
  /** while > 0, completions and BASTs wait (recovery in progress) */
  private holds = 0;
  private heldResources = new Set<string>();
  private heldCalls: Array<() => void> = [];

  constructor(o: CoreOptions) {
    super();
    this.name = o.name;
    this.nodeId = o.nodeId;
    this.slot = o.slot;
    this.inc = o.inc;
    this.lvbLength = o.lvbLength;
    this.timeoutMs = o.timeoutMs;
    this.clock = o.clock;
  }

  members(): SlotInfo[] {
    return this.backend.members();
  }

  /** Number of live lock handles (for tests and leak checks). */
  get lockCount(): number {
    let n = 0;
    for (const s of this.byResource.values()) n += s.size;
    return n;
  }

  private usable(what: string): void {
    if (this.fenced) throw new TsmdError('EFENCED', `DLM ${this.name}: ${what} refused: node ${this.nodeId} is fenced (${this.fenceError?.message ?? 'membership lost'}); stop I/O and re-join`);
    if (this.left) throw new TsmdError('ENODEV', `DLM ${this.name}: ${what} refused: node ${this.nodeId} has left the lockspace`);
  }

  // --- lock / convert -------------------------------------------------------------------------

  async lock(resource: string, mode: Mode, opts: LockOptions = {}): Promise<LockHandle> {
    this.usable('lock');
    validateResourceName(this.name, resource);
    const lk = new LockImpl(this, `${this.slot}.${this.inc}.${++this.lockSeq}`, resource);
    await this.request(lk, mode, opts, true);
    return lk;
  }

  request(lk: LockImpl, mode: Mode, opts: LockOptions, isNew: boolean): Promise<void> {
    try {
      this.usable(isNew ? 'lock' : 'convert');
      validateMode(this.name, mode);
      const flags = validateRequestFlags(this.name, lk.resource, opts.flags ?? 0, mode, this.lvbLength, isNew ? -1 : (lk.mode ?? -1));
      const lvb = validateLvb(this.name, lk.resource, opts.lvb, this.lvbLength);
      const timeoutMs = opts.timeoutMs === undefined ? this.timeoutMs : validateTimeout(opts.timeoutMs, `DLM ${this.name}/${lk.resource}`);
      if (opts.bast !== undefined && typeof opts.bast !== 'function') throw new TsmdError('EINVAL', `DLM ${this.name}/${lk.resource}: bast must be a function`);
      if (opts.signal?.aborted) throw new TsmdError('ECANCELED', `DLM ${this.name}/${lk.resource}: ${modeName(mode)} request aborted before it was made`);
      if (!isNew) {
        if (lk.mode === null && !lk.pending) throw new TsmdError('ENOENT', `DLM ${this.name}/${lk.resource}: convert of lock ${lk.id} which is not held`);
        if (lk.unlocking) throw new TsmdError('EBUSY', `DLM ${this.name}/${lk.resource}: convert of lock ${lk.id} while its unlock is in progress`);
        if (lk.pending) throw new TsmdError('EBUSY', `DLM ${this.name}/${lk.resource}: lock ${lk.id} already has a ${modeName(lk.pending.mode)} request in progress`);
      }
      if (lvb && lk.lvb) lk.lvb.set(lvb);
      if (opts.bast !== undefined || isNew) lk.bastFn = opts.bast; // new ASTs replace the old ones
      lk.lastFlags = flags;
      if (!isNew && this.backend.asyncDownConversions && isDownConversion(lk.mode!, mode)) return this.downConvert(lk, mode, flags);
      const op = ++lk.opSeq;
      const p = new Promise<void>((resolve, reject) => {
        lk.pending = { op, mode, isNew, resolve, reject, timeoutMs };
      });
      const pending = lk.pending!;
      this.track(lk);
      const lvbIn = flags & Flag.VALBLK && lk.lvb ? b64(lk.lvb) : undefined;
      const cb = lk.bastFn !== undefined;
      const deadline = this.clock.nowMs() + timeoutMs;
      const req: Op = isNew
        ? { k: 'rq', e: { id: lk.id, node: this.nodeId, slot: this.slot, inc: this.inc, gr: -1, rq: mode, fl: flags, hb: -1, bs: 0, bm: -1, cb, op, ga: 0, sb: 0 } satisfies LockEntry }
        : convertOp(lk.id, mode, flags, op, cb, lvbIn);
      if (opts.signal) {
        const signal = opts.signal;
        const abortFn = (): void => {
          void this.cancel(lk, 'ECANCELED').catch(() => undefined);
        };
        signal.addEventListener('abort', abortFn, { once: true });
        pending.abort = { signal, fn: abortFn };
      }
      pending.inflight = this.backend.submit(lk.resource, req, deadline).then(outcome).then(
        (out) => this.afterRequest(lk, pending, out),
        (err: unknown) => this.settle(lk, pending, err),
      );
      return p;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** A down-conversion completes now; the backend applies it in order behind our earlier operations. */
  private downConvert(lk: LockImpl, mode: Mode, flags: number): Promise<void> {
    const op = ++lk.opSeq;
    const lvbIn = flags & Flag.VALBLK && lk.lvb ? b64(lk.lvb) : undefined;
    const cb = lk.bastFn !== undefined;
    lk.mode = mode;
    lk.sbFlags = 0;
    // bounded by fencing: if etcd stays unreachable, the lease is lost and the node fenced anyway
    this.backend.submit(lk.resource, convertOp(lk.id, mode, flags, op, cb, lvbIn), this.clock.nowMs() + Math.max(this.timeoutMs, 60_000)).then(outcome).then(
      (out) => {
        if (out.kind === 'granted') {
          if (lk.opSeq === op) lk.sbFlags = out.sb;
        } else {
          this.backend.lost?.(`down-conversion of ${lk} to ${modeName(mode)} was refused (${out.kind === 'error' ? out.code : out.kind})`);
        }
      },
      (err: unknown) => {
        if (!this.fenced && !this.left) this.backend.lost?.(`down-conversion of ${lk} to ${modeName(mode)} could not be applied: ${err instanceof Error ? err.message : String(err)}`);
      },
    );
    return Promise.resolve();
  }

  private afterRequest(lk: LockImpl, p: Pending, out: Outcome): void {
    if (lk.pending !== p) return; // settled already (grant seen in a state, fencing)
    if (out.kind === 'granted') {
      this.deliver(() => this.grant(lk, p, out.mode, out.sb, out.lvb));
    } else if (out.kind === 'queued') {
      if (!p.cancelling) p.timer = this.clock.setTimer(p.timeoutMs, () => void this.cancel(lk, 'ETIMEDOUT').catch(() => undefined));
      // the grant may already be in a newer state than the one our request was applied to
      this.onState(lk.resource);
    } else {
      this.settle(lk, p, new TsmdError(out.code, `DLM ${this.name}/${lk.resource}: ${out.message}`));
    }
  }

  /** Completion of a grant for `p`. */
  private grant(lk: LockImpl, p: Pending, mode: Mode, sb: number, lvb: string | null | undefined): void {
    if (lk.pending !== p) return;
    lk.mode = mode;
    lk.sbFlags = sb;
    if (lvb !== undefined && lk.lvb) {
      if (lvb === null) lk.lvb.fill(0);
      else lk.lvb.set(Buffer.from(lvb, 'base64').subarray(0, lk.lvb.length));
    }
    this.settle(lk, p, null);
  }

  /** Ends pending request `p` with success (err null) or an error. */
  private settle(lk: LockImpl, p: Pending, err: unknown): void {
    if (lk.pending !== p) return;
    lk.pending = null;
    p.timer?.cancel();
    if (p.abort) p.abort.signal.removeEventListener('abort', p.abort.fn);
    if (err === null) {
      p.resolve();
    } else {
      if (p.isNew && (err instanceof TsmdError ? err.code !== 'EFENCED' : true)) lk.mode = null;
      if (lk.mode === null) this.untrack(lk);
      p.reject(err);
    }
  }

  // --- cancel / timeout -----------------------------------------------------------------------

  /** Cancel lk's pending request; `why` is the error the request then rejects with. */
  async cancel(lk: LockImpl, why: 'ETIMEDOUT' | 'ECANCELED'): Promise<boolean> {
    this.usable('cancel');
    const p = lk.pending;
    if (!p || p.cancelling) return false;
    p.cancelling = why;
    p.timer?.cancel();
    await p.inflight; // our request must be in the state (or answered) before it can be cancelled
    if (lk.pending !== p) return false;
    let res: CancelResult;
    try {
      const out = await this.backend.submit(lk.resource, { k: 'cx', id: lk.id, op: p.op, isNew: p.isNew }, this.clock.nowMs() + Math.max(p.timeoutMs, 1000));
      assert(out.kind === 'cancel', 'a cancel has a cancel result');
      res = out;
    } catch (err) {
      this.settle(lk, p, err);
      throw err;
    }
    if (lk.pending !== p) return false; // granted or fenced meanwhile
    if (res.res === 'none') {
      if (res.e) {
        // the grant won the race: the lock is held
        const e = res.e;
        this.deliver(() => this.grant(lk, p, e.gr as Mode, e.sb, e.lv));
        return false;
      }
      // our request is not in the state yet: it cannot be granted, so it is safe to drop
    }
    const what = why === 'ETIMEDOUT'
      ? `timed out after ${p.timeoutMs} ms waiting for ${modeName(p.mode)} on ${this.name}/${lk.resource} (node ${this.nodeId}, lock ${lk.id}${lk.mode !== null ? `, still holding ${modeName(lk.mode)}` : ''}); the request was cancelled`
      : `${modeName(p.mode)} request on ${this.name}/${lk.resource} was cancelled (lock ${lk.id})`;
    if (res.res === 'removed' || res.res === 'gone') lk.mode = null;
    this.settle(lk, p, new TsmdError(why, `DLM ${what}`));
    return true;
  }

  // --- unlock ---------------------------------------------------------------------------------

  async unlock(lk: LockImpl, opts: UnlockOptions): Promise<void> {
    this.usable('unlock');
    const flags = opts.flags ?? 0;
    if (typeof flags !== 'number' || !Number.isInteger(flags) || flags < 0 || flags & ~UNLOCK_FLAGS)
      throw new TsmdError('EINVAL', `DLM ${this.name}/${lk.resource}: unlock flags 0x${Number(flags).toString(16)} refused: only VALBLK, IVVALBLK and FORCEUNLOCK apply (use cancel() for CANCEL)`);
    if (flags & (Flag.VALBLK | Flag.IVVALBLK) && this.lvbLength === 0)
      throw new TsmdError('EINVAL', `DLM ${this.name}/${lk.resource}: VALBLK/IVVALBLK in a lockspace without LVBs`);
    const lvb = validateLvb(this.name, lk.resource, opts.lvb, this.lvbLength);
    if (lk.mode === null && !lk.pending) throw new TsmdError('ENOENT', `DLM ${this.name}/${lk.resource}: unlock of lock ${lk.id} which is not held`);
    if (lk.unlocking) throw new TsmdError('EBUSY', `DLM ${this.name}/${lk.resource}: lock ${lk.id} is already being unlocked`);
    if (lk.pending && !(flags & Flag.FORCEUNLOCK))
      throw new TsmdError('EBUSY', `DLM ${this.name}/${lk.resource}: lock ${lk.id} has a ${modeName(lk.pending.mode)} request in progress; cancel it first or unlock with FORCEUNLOCK`);
    if (lvb && lk.lvb) lk.lvb.set(lvb);
    const lvbIn = lk.lvb && (flags | lk.lastFlags) & Flag.VALBLK ? b64(lk.lvb) : undefined;
    const p = lk.pending;
    // From here on a conversion of this lock would be ordered after the unlock and find no lock
    // (a down-conversion, already reported done, would then cost this node its membership).
    const run = (async () => {
      if (p) {
        p.cancelling = 'ECANCELED';
        p.timer?.cancel();
        await p.inflight;
      }
      await this.unlockOp(lk, p, flags, lvbIn);
    })();
    lk.unlocking = run;
    try {
      await run;
    } finally {
      lk.unlocking = null;
    }
  }

  private async unlockOp(lk: LockImpl, p: Pending | null, flags: number, lvbIn: string | undefined): Promise<void> {
    const opFlags = flags | (lk.lastFlags & Flag.VALBLK);
    try {
      const out = await this.backend.submit(lk.resource, { k: 'ul', id: lk.id, fl: opFlags, lvb: lvbIn }, this.clock.nowMs() + this.timeoutMs);
      if (out.kind === 'fail') throw new TsmdError(out.code, out.message);
    } catch (err) {
      if (p) p.cancelling = undefined;
      throw err;
    }
    lk.mode = null;
    if (p) this.settle(lk, p, new TsmdError('ECANCELED', `DLM ${modeName(p.mode)} request on ${this.name}/${lk.resource} ended by FORCEUNLOCK (lock ${lk.id})`));
    this.untrack(lk);
  }

  // --- notifications --------------------------------------------------------------------------

  private track(lk: LockImpl): void {
    let s = this.byResource.get(lk.resource);
    if (!s) this.byResource.set(lk.resource, (s = new Set()));
    s.add(lk);
  }

  private untrack(lk: LockImpl): void {
    const s = this.byResource.get(lk.resource);
    if (!s) return;
    s.delete(lk);
    if (s.size === 0) this.byResource.delete(lk.resource);
  }

  /** Whether this node has locks on `resource` (backends skip notifications otherwise). */
  interested(resource: string): boolean {
    return this.byResource.has(resource);
  }

  /** A newer state of `resource` is known: deliver grants of queued requests and BASTs. */
  onState(resource: string): void {
    if (this.fenced || !this.byResource.has(resource)) return;
    if (this.holds > 0) {
      this.heldResources.add(resource);
      return;
    }
    const r = this.backend.peek(resource);
    const locks = this.byResource.get(resource);
    if (!r || !locks) return;
    for (const lk of locks) {
      const f = engine.findLock(r, lk.id);
      if (!f) continue; // not written yet (our request is in flight) or removed by ourselves
      const e = f.e;
      const p = lk.pending;
      if (p && e.ga === p.op && f.where === 'grant') this.grant(lk, p, e.gr as Mode, e.sb, e.lv);
      if (e.bs > lk.lastBs) {
        lk.lastBs = e.bs;
        const fn = lk.bastFn;
        const mode = e.bm as Mode;
        if (fn && (lk.mode !== null || lk.pending)) queueMicrotask(() => {
          if (!this.fenced) fn(mode);
        });
      }
    }
  }

  /** Run `fn` now, or after the current recovery when one is in progress. */
  deliver(fn: () => void): void {
    if (this.holds > 0) this.heldCalls.push(fn);
    else fn();
  }

  /** Hold completions and BASTs (recovery in progress) until `release()`. */
  hold(): void {
    this.holds++;
  }

  release(): void {
    assert(this.holds > 0, 'release() matches a hold()');
    if (--this.holds > 0) return;
    const calls = this.heldCalls;
    const res = this.heldResources;
    this.heldCalls = [];
    this.heldResources = new Set();
    for (const fn of calls) fn();
    for (const r of res) this.onState(r);
  }

  /** This node lost its membership: reject everything, forget every lock, tell the listeners. */
  fence(err: TsmdError): void {
    if (this.fenced || this.left) return;
    this.fenced = true;
    this.fenceError = err;
    this.heldCalls = [];
    this.heldResources.clear();
    for (const set of this.byResource.values()) {
      for (const lk of set) {
        const p = lk.pending;
        lk.mode = null;
        if (p) this.settle(lk, p, err);
      }
    }
    this.byResource.clear();
    this.emit('fenced', err);
  }

  // --- leave ----------------------------------------------------------------------------------

  async leave(): Promise<void> {
    this.usable('leave');
    const all = [...this.byResource.values()].flatMap((s) => [...s]);
    for (const lk of all) {
      if (lk.unlocking) await lk.unlocking.catch(() => undefined); // the caller's own unlock first
      if (lk.mode === null && !lk.pending) continue;
      try {
        await this.unlock(lk, { flags: Flag.FORCEUNLOCK });
      } catch (e) {
        if (!(e instanceof TsmdError) || e.code !== 'ENOENT') throw e;
      }
    }
    await this.backend.leave();
    this.left = true;
  }
}

function convertOp(id: string, mode: Mode, fl: number, op: number, cb: boolean, lvb: string | undefined): Op {
  return lvb === undefined ? { k: 'cv', id, mode, fl, op, cb } : { k: 'cv', id, mode, fl, op, cb, lvb };
}

/** The outcome of a request or conversion; a failed precondition becomes its error. */
function outcome(out: OpResult): Outcome {
  if (out.kind === 'fail') throw new TsmdError(out.code, out.message);
  assert(out.kind === 'granted' || out.kind === 'queued' || out.kind === 'error', 'a request has an outcome');
  return out;
}

export type { ModeOrIV };
