/**
 * etcd DLM backend (npm etcd3, etcd >= 3.4). See docs/dlm.md for the key schema and the fencing
 * argument. In short, under `<prefix>/<lockspace>/`:
 *
 * - `m/<slot>`   member key, bound to the node's lease; claimed with a create-revision == 0
 *                transaction. Its create revision is the node's *incarnation*.
 * - `n/<nodeId>` bound to the same lease, claimed in the same transaction: one incarnation per node.
 * - `r/<name>`   one resource: JSON of its grant/convert/wait queues and its LVB (grant.ts's
 *                ResourceState). Every lock, convert, unlock, cancel and recovery purge is one
 *                compare-and-swap transaction on this key's mod revision, guarded by
 *                `create(m/<our slot>) == our incarnation`: grants are decided inside etcd, a node
 *                whose lease expired can never write again, and the LVB is written in the same
 *                transaction as the down-conversion or unlock that writes it.
 *
 * Each node keeps a cache of every resource, fed by one watch on the lockspace prefix (processed in
 * revision order) and by its own transactions. An operation on a resource whose cached copy is
 * current costs exactly one etcd round trip; on a conflict the failed transaction returns the
 * current value and the operation is recomputed (bounded). Grants made by other nodes' transactions
 * and BASTs are recorded in the lock entries and reach the owner through the watch.
 *
 * A member key's deletion seen by the watch is a membership change: a clean leave (the key was
 * marked `leaving` first) or a failure (lease expiry). Survivors then run recoverPrep, purge the
 * dead incarnation's locks from every resource (marking the LVB not valid where it held PW/EX),
 * recoverSlot(slot), recoverDone(slots, ourSlot), and only then deliver completions and BASTs.
 *
 * Fencing: keep-alives are sent every keepAliveIntervalMs; after a success the server's lease
 * expires no earlier than (send time + TTL). If no keep-alive succeeds until that instant minus
 * fenceMarginMs, the node declares itself fenced — before the server can expire the lease, so
 * before any survivor can recover its slot — rejects everything and emits 'fenced'.
 *
 * The network edge: gRPC deadlines need wall-clock time (Date.now) — the only use of it here;
 * every timer of the DLM itself runs on the injected Clock.
 */
import { EventEmitter } from 'node:events';
import { Etcd3, type IKeyValue, type IOptions, type ITxnResponse, type Watcher } from 'etcd3';
import { type Clock, SystemClock, type Timer } from '../../env/clock.js';
import { assert, TsmdError } from '../../errors.js';
import { LockspaceCore, type LockspaceBackend } from './core.js';
import * as engine from './grant.js';
import type { ResourceState } from './grant.js';
import {
  DEFAULT_MAX_SLOTS,
  DEFAULT_TIMEOUT_MS,
  type Dlm,
  type JoinOptions,
  type Lockspace,
  type RecoveryOps,
  type SlotInfo,
  validateLockspaceName,
  validateLvbLength,
  validateTimeout,
} from './types.js';

export interface EtcdDlmOptions {
  /** This node's id (unique in the cluster; printable ASCII, no '/'). */
  nodeId: string;
  /** etcd client endpoints, e.g. ['http://127.0.0.1:2379'] (https:// with tls). */
  endpoints: string[];
  /** TLS: CA to verify the server, and a client certificate and key for mutual TLS. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  /** etcd authentication (user/password). */
  auth?: { username: string; password: string };
  /** Key prefix (default 'tsmd/dlm'). */
  prefix?: string;
  /** Lease TTL in seconds (default 10): a dead node is detected within this. */
  leaseTtlSec?: number;
  /** Keep-alive period (default min(1000, TTL/4)). */
  keepAliveIntervalMs?: number;
  /** Fence this long before the earliest possible lease expiry (default max(500, TTL/5)). */
  fenceMarginMs?: number;
  /** Deadline of one etcd call (default 5000). */
  callTimeoutMs?: number;
  /**
   * Complete conversions down (EX->NL, PW->CR...) at once and apply them in the background, in
   * order with this node's later operations on the resource, as Linux does with a remote master
   * (default true). Other nodes may see the old mode for one etcd round trip.
   */
  asyncDownConversions?: boolean;
  clock?: Clock;
}

/** Counters for benchmarks and tests. */
export interface EtcdDlmStats {
  /** every etcd unary call (txn, range, lease grant/revoke) */
  calls: number;
  txns: number;
  /** transactions whose compare failed (a concurrent writer) */
  conflicts: number;
  keepAlives: number;
}

/** Test and benchmark hooks of one etcd lockspace. */
export interface EtcdLockspaceInternals {
  readonly leaseId: string;
  readonly incarnation: string;
  /** Lamport clock of etcd round trips seen by this node (see ResourceState.rt). */
  readonly roundTrips: number;
  /**
   * Simulate a partition from etcd: no more keep-alives, and no lease revoke when the node fences
   * itself (it could not reach etcd), so the others recover only when the lease expires.
   */
  stopKeepAlive(): void;
  /** Die without leaving: stop everything, revoke the lease (others recover at once). */
  kill(): Promise<void>;
  /** This node's latest copy of a resource's state. */
  peek(resource: string): ResourceState | undefined;
  /** Resolves when every operation this node made so far is applied in etcd. */
  idle(): Promise<void>;
}

/** A lockspace of the etcd backend. */
export type EtcdLockspace = Lockspace;

const MAX_CAS_ATTEMPTS = 200;
const MAX_JOIN_ATTEMPTS = 64;

interface Cached {
  rev: number;
  json: string;
  state: ResourceState;
  /** derived from our own successful transaction on a current copy */
  own: boolean;
}

interface MemberInfo {
  nodeId: string;
  inc: string;
  leaving: boolean;
}

function prefixEnd(key: Buffer): Buffer {
  const end = Buffer.from(key);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

const TRANSIENT = new Set([
  'GRPCUnavailableError',
  'GRPCDeadlineExceededError',
  'GRPCCancelledError',
  'GRPCInternalError',
  'GRPCUnknownError',
  'GRPCGenericError',
  'GRPCAbortedError',
  'GRPCResourceExhastedError',
  'EtcdWatchStreamEnded',
  'ClientRuntimeError',
  'BrokenCircuitError',
]);

/** gRPC's report of a failed TLS handshake (certificate not verified, none offered, protocol). */
const TLS_FAILURE = /certificate|SSL|TLS|handshake|self[- ]signed|wrong version number|alert/i;

function isTransient(e: unknown): boolean {
  if (e instanceof TsmdError) return e.code === 'EIO' && (e.cause as { transient?: boolean } | undefined)?.transient === true;
  return e instanceof Error && (TRANSIENT.has(e.constructor.name) || /UNAVAILABLE|DEADLINE|ECONNREFUSED|ECONNRESET|No connection/i.test(e.message));
}

function etcdError(what: string, e: unknown): TsmdError {
  if (e instanceof TsmdError) return e;
  const name = e instanceof Error ? e.constructor.name : 'Error';
  const msg = e instanceof Error ? e.message : String(e);
  if (/Permission|Authenticat|InvalidAuth|Unauthenticated/i.test(name) || /permission denied|authentication failed/i.test(msg))
    return new TsmdError('EPERM', `DLM etcd: ${what} refused by etcd (${msg}); check the user/password and its role's permissions on the DLM prefix`, { cause: e });
  if (TLS_FAILURE.test(msg))
    return new TsmdError('EIO', `DLM etcd: ${what} failed: the TLS connection to etcd was refused (${msg}); check tls.ca (the CA that signed etcd's certificate), tls.cert/tls.key (a client certificate etcd trusts) and that the endpoints use https://`, { cause: e });
  const err = new TsmdError('EIO', `DLM etcd: ${what} failed: ${name}: ${msg}; is etcd reachable?`, { cause: e });
  if (isTransient(e)) (err as { cause?: unknown }).cause = Object.assign(e as object, { transient: true });
  return err;
}

/** One node's connection to etcd; `join` returns lockspaces. */
export class EtcdDlm implements Dlm {
  readonly nodeId: string;
  readonly client: Etcd3;
  readonly clock: Clock;
  readonly prefix: string;
  readonly leaseTtlSec: number;
  readonly keepAliveIntervalMs: number;
  readonly fenceMarginMs: number;
  readonly callTimeoutMs: number;
  readonly asyncDownConversions: boolean;
  readonly stats: EtcdDlmStats = { calls: 0, txns: 0, conflicts: 0, keepAlives: 0 };
  private readonly spaces = new Set<EtcdSpace>();
  private readonly internalsOf = new WeakMap<Lockspace, EtcdSpace>();
  private closed = false;

  constructor(o: EtcdDlmOptions) {
    if (!o || typeof o.nodeId !== 'string' || !/^[\x21-\x2e\x30-\x7e]{1,64}$/.test(o.nodeId))
      throw new TsmdError('EINVAL', `DLM etcd: node id ${JSON.stringify(o?.nodeId)} must be 1..64 printable ASCII characters without spaces or '/'`);
    if (!Array.isArray(o.endpoints) || o.endpoints.length === 0) throw new TsmdError('EINVAL', 'DLM etcd: endpoints must list at least one etcd client URL');
    this.nodeId = o.nodeId;
    this.clock = o.clock ?? new SystemClock();
    this.prefix = (o.prefix ?? 'tsmd/dlm').replace(/\/+$/, '');
    if (this.prefix.length === 0 || this.prefix.includes('\0')) throw new TsmdError('EINVAL', 'DLM etcd: prefix must be a non-empty key without NUL');
    this.leaseTtlSec = o.leaseTtlSec ?? 10;
    if (!Number.isInteger(this.leaseTtlSec) || this.leaseTtlSec < 2 || this.leaseTtlSec > 3600)
      throw new TsmdError('EINVAL', `DLM etcd: leaseTtlSec must be an integer 2..3600, got ${String(o.leaseTtlSec)}`);
    const ttlMs = this.leaseTtlSec * 1000;
    this.keepAliveIntervalMs = o.keepAliveIntervalMs ?? Math.min(1000, ttlMs / 4);
    this.fenceMarginMs = o.fenceMarginMs ?? Math.max(500, ttlMs / 5);
    this.callTimeoutMs = o.callTimeoutMs ?? 5000;
    this.asyncDownConversions = o.asyncDownConversions ?? true;
    if (!(this.keepAliveIntervalMs > 0) || this.keepAliveIntervalMs * 2 + this.fenceMarginMs >= ttlMs)
      throw new TsmdError('EINVAL', `DLM etcd: keep-alive every ${this.keepAliveIntervalMs} ms with a ${this.fenceMarginMs} ms fencing margin does not fit a ${ttlMs} ms lease`);
    if (!(this.fenceMarginMs > 0)) throw new TsmdError('EINVAL', 'DLM etcd: fenceMarginMs must be positive');
    // Fault handling is ours (bounded retries against the operation's deadline, fencing): the
    // client's circuit breaker would refuse calls for 5 s after etcd came back, and its retry
    // policy would hide ambiguous failures. Watches reconnect quickly and resume from the last
    // revision they delivered.
    const passthrough = {
      execute: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T) => Promise.resolve().then(() => fn({ signal: new AbortController().signal })),
      onSuccess: () => ({ dispose: () => undefined }),
      onFailure: () => ({ dispose: () => undefined }),
    };
    type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;
    type Backoff = NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']>;
    const backoff = { duration: 100, next: () => backoff } as unknown as Backoff;
    const opts: IOptions = {
      hosts: o.endpoints,
      dialTimeout: this.callTimeoutMs,
      faultHandling: { global: passthrough as unknown as Policy, host: () => passthrough as unknown as Policy, watchBackoff: backoff },
      grpcOptions: {
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 500,
        'grpc.use_local_subchannel_pool': 1,
        'grpc.keepalive_time_ms': 10_000,
      },
    };
    if (o.tls) opts.credentials = { rootCertificate: o.tls.ca, privateKey: o.tls.key, certChain: o.tls.cert };
    if (o.auth) opts.auth = { username: o.auth.username, password: o.auth.password };
    this.client = new Etcd3(opts);
  }

  /** gRPC call options with a deadline (wall clock: the network edge). */
  callOptions(): { deadline: number } {
    return { deadline: Date.now() + this.callTimeoutMs };
  }

  /** One unary etcd call, counted, its error mapped to a TsmdError. */
  async call<T>(what: string, fn: (opts: { deadline: number }) => Promise<T>): Promise<T> {
    if (this.closed) throw new TsmdError('ENODEV', `DLM etcd: ${what} after close()`);
    this.stats.calls++;
    try {
      return await fn(this.callOptions());
    } catch (e) {
      throw etcdError(what, e);
    }
  }

  async txn(what: string, req: Parameters<Etcd3['kv']['txn']>[0]): Promise<ITxnResponse> {
    this.stats.txns++;
    return this.call(what, (o) => this.client.kv.txn(req, o));
  }

  async join(opts: JoinOptions): Promise<Lockspace> {
    if (this.closed) throw new TsmdError('ENODEV', 'DLM etcd: join after close()');
    const name = validateLockspaceName(opts?.name);
    const lvbLength = validateLvbLength(opts.lvbLength);
    const timeoutMs = opts.timeoutMs === undefined ? DEFAULT_TIMEOUT_MS : validateTimeout(opts.timeoutMs, `DLM ${name}`);
    const maxSlots = opts.maxSlots ?? DEFAULT_MAX_SLOTS;
    if (!Number.isInteger(maxSlots) || maxSlots < 1 || maxSlots > 4096) throw new TsmdError('EINVAL', `DLM ${name}: maxSlots must be 1..4096`);
    for (const s of this.spaces) if (s.name === name && !s.done) throw new TsmdError('EEXIST', `DLM ${name}: node ${this.nodeId} already joined this lockspace`);
    const space = new EtcdSpace(this, name, lvbLength, maxSlots, timeoutMs, opts.ops ?? {});
    this.spaces.add(space);
    try {
      const core = await space.join();
      this.internalsOf.set(core, space);
      return core;
    } catch (e) {
      this.spaces.delete(space);
      throw e;
    }
  }

  /** Test and benchmark hooks of a lockspace joined through this object. */
  internals(ls: Lockspace): EtcdLockspaceInternals {
    const s = this.internalsOf.get(ls);
    if (!s) throw new TsmdError('EINVAL', 'DLM etcd: not a lockspace of this node');
    return s;
  }

  forget(space: EtcdSpace): void {
    this.spaces.delete(space);
  }

  /**
   * Close the connection. Lockspaces not left are abandoned: their leases expire after the TTL and
   * the other members recover them as failed.
   */
  close(): void {
    if (this.closed) return;
    for (const s of [...this.spaces]) s.abandon();
    this.closed = true;
    this.client.close();
  }
}

/** One lockspace membership of one node: the backend under a LockspaceCore. */
class EtcdSpace implements LockspaceBackend, EtcdLockspaceInternals {
  readonly base: string;
  private readonly resPrefix: string;
  private readonly memberPrefix: string;
  core!: LockspaceCore;
  leaseId = '0';
  slot = 0;
  incarnation = '';
  roundTrips = 0;
  done = false;
  private leaving = false;
  private readonly memberMap = new Map<number, MemberInfo>();
  private readonly deadIncs = new Set<string>();
  private readonly cache = new Map<string, Cached>();
  private readonly queues = new Map<string, Promise<void>>();
  private watchRev = 0;
  private watchWaiters: Array<{ rev: number; wake: () => void }> = [];
  private watcher: Watcher | undefined;
  private chain: Promise<void> = Promise.resolve();
  private recovering = 0;
  private gateWaiters: Array<() => void> = [];
  private kaTimer: Timer | undefined;
  private kaInFlight = false;
  private kaStopped = false;
  private fenceTimer: Timer | undefined;
  private validUntilMs = 0;
  private partitioned = false;
  private readonly events = new EventEmitter();

  constructor(
    readonly dlm: EtcdDlm,
    readonly name: string,
    readonly lvbLength: number,
    readonly maxSlots: number,
    readonly timeoutMs: number,
    readonly ops: RecoveryOps,
  ) {
    this.base = `${dlm.prefix}/${name}/`;
    this.resPrefix = `${this.base}r/`;
    this.memberPrefix = `${this.base}m/`;
  }

  private memberKey(slot: number): Buffer {
    return Buffer.from(`${this.memberPrefix}${slot}`);
  }

  private nodeKey(): Buffer {
    return Buffer.from(`${this.base}n/${this.dlm.nodeId}`);
  }

  private get clock(): Clock {
    return this.dlm.clock;
  }

  private get fenced(): boolean {
    return this.core?.fenced ?? false;
  }

  // --- join -----------------------------------------------------------------------------------

  async join(): Promise<LockspaceCore> {
    const d = this.dlm;
    const sent = this.clock.nowMs();
    const lease = await d.call(`lease grant for ${this.name}`, (o) => d.client.leaseClient.leaseGrant({ TTL: d.leaseTtlSec }, o));
    this.leaseId = lease.ID;
    this.validUntilMs = sent + Number(lease.TTL) * 1000;
    this.scheduleKeepAlive();
    try {
      await this.claimSlot();
      await this.snapshot();
    } catch (e) {
      this.stopTimers();
      await d.call('lease revoke', (o) => d.client.leaseClient.leaseRevoke({ ID: this.leaseId }, o)).catch(() => undefined);
      throw e;
    }
    this.armFenceTimer();
    this.startWatch();
    if (this.deadIncs.size > 0) await this.purgeDead(); // locks of nodes that died before we joined
    this.ops.recoverDone?.(this.members(), this.slot);
    return this.core;
  }

  private async claimSlot(): Promise<void> {
    const d = this.dlm;
    const mStart = Buffer.from(this.memberPrefix);
    for (let attempt = 0; attempt < MAX_JOIN_ATTEMPTS; attempt++) {
      const look = await d.txn(`read members of ${this.name}`, {
        success: [
          { request_range: { key: mStart, range_end: prefixEnd(mStart) } },
          { request_range: { key: this.nodeKey() } },
        ],
      });
      const nodeKv = look.responses[1]!.response_range.kvs[0];
      if (nodeKv) {
        const v = JSON.parse(nodeKv.value.toString()) as { slot: number };
        throw new TsmdError('EEXIST', `DLM ${this.name}: node ${d.nodeId} is still a member (slot ${v.slot}, lease ${nodeKv.lease}); if it died, wait for its lease to expire (${d.leaseTtlSec} s) and retry`);
      }
      const taken = new Set<number>();
      for (const kv of look.responses[0]!.response_range.kvs) {
        const slot = Number(kv.key.toString().slice(this.memberPrefix.length));
        taken.add(slot);
        const v = JSON.parse(kv.value.toString()) as { lvb: number };
        if (v.lvb !== this.lvbLength) throw new TsmdError('EINVAL', `DLM ${this.name}: LVB length ${this.lvbLength} differs from the members' ${v.lvb}`);
      }
      let slot = 0;
      for (let i = 1; i <= this.maxSlots; i++) {
        if (!taken.has(i)) {
          slot = i;
          break;
        }
      }
      if (slot === 0) throw new TsmdError('ENOSPC', `DLM ${this.name}: all ${this.maxSlots} slots are taken; node ${d.nodeId} cannot join`);
      const value = Buffer.from(JSON.stringify({ node: d.nodeId, lvb: this.lvbLength }));
      const r = await d.txn(`claim slot ${slot} of ${this.name}`, {
        compare: [
          { key: this.memberKey(slot), target: 'Create', result: 'Equal', create_revision: '0' },
          { key: this.nodeKey(), target: 'Create', result: 'Equal', create_revision: '0' },
        ],
        success: [
          { request_put: { key: this.memberKey(slot), value, lease: this.leaseId } },
          { request_put: { key: this.nodeKey(), value: Buffer.from(JSON.stringify({ slot })), lease: this.leaseId } },
        ],
      });
      if (r.succeeded) {
        this.slot = slot;
        this.incarnation = r.header.revision;
        return;
      }
    }
    throw new TsmdError('EBUSY', `DLM ${this.name}: could not claim a slot after ${MAX_JOIN_ATTEMPTS} attempts (too many nodes joining at once); retry`);
  }

  /** Read the whole lockspace at one revision: members and resources. */
  private async snapshot(): Promise<void> {
    const d = this.dlm;
    const start = Buffer.from(this.base);
    const r = await d.call(`read lockspace ${this.name}`, (o) => d.client.kv.range({ key: start, range_end: prefixEnd(start) }, o));
    const rev = Number(r.header.revision);
    assert(!r.more, 'a lockspace snapshot is read whole');
    const res: IKeyValue[] = [];
    for (const kv of r.kvs) {
      const key = kv.key.toString();
      if (key.startsWith(this.memberPrefix)) {
        const v = JSON.parse(kv.value.toString()) as { node: string; leaving?: boolean };
        this.memberMap.set(Number(key.slice(this.memberPrefix.length)), { nodeId: v.node, inc: kv.create_revision, leaving: v.leaving === true });
      } else if (key.startsWith(this.resPrefix)) {
        res.push(kv);
      }
    }
    const live = new Set([...this.memberMap.values()].map((m) => m.inc));
    assert(live.has(this.incarnation), 'our member key is in the snapshot taken after claiming it');
    this.core = new LockspaceCore({
      name: this.name,
      nodeId: d.nodeId,
      slot: this.slot,
      inc: this.incarnation,
      lvbLength: this.lvbLength,
      timeoutMs: this.timeoutMs,
      clock: this.clock,
    });
    this.core.backend = this;
    for (const kv of res) {
      const json = kv.value.toString();
      const state = JSON.parse(json) as ResourceState;
      this.learnRt(state);
      this.cache.set(kv.key.toString().slice(this.resPrefix.length), { rev: Number(kv.mod_revision), json, state, own: false });
      for (const q of [state.grant, state.convert, state.wait]) for (const e of q) if (!live.has(e.inc)) this.deadIncs.add(e.inc);
    }
    this.watchRev = rev;
  }

  // --- watch ----------------------------------------------------------------------------------

  private startWatch(): void {
    const d = this.dlm;
    const w = d.client.watch().prefix(this.base).startRevision(String(this.watchRev + 1)).withPreviousKV().watcher();
    this.watcher = w;
    w.on('data', (res) => {
      const events = res.events;
      if (events.length === 0) return;
      this.chain = this.chain.then(() => this.processEvents(events)).catch((e: unknown) => {
        this.fence(`internal error processing etcd events: ${e instanceof Error ? e.stack : String(e)}`);
      });
    });
    w.on('error', (e: unknown) => {
      // cancelled by etcd (e.g. compacted past our revision): we cannot know what we missed
      this.fence(`the lockspace watch failed (${e instanceof Error ? e.message : String(e)})`);
    });
  }

  private async processEvents(events: ReadonlyArray<{ type: string; kv: IKeyValue; prev_kv?: IKeyValue }>): Promise<void> {
    for (const ev of events) {
      if (this.fenced || this.done) return;
      const key = ev.kv.key.toString();
      const rev = Number(ev.kv.mod_revision);
      if (key.startsWith(this.resPrefix)) {
        const name = key.slice(this.resPrefix.length);
        if (ev.type === 'Put') {
          const cur = this.cache.get(name);
          if (!cur || rev > cur.rev) {
            const json = ev.kv.value.toString();
            const state = JSON.parse(json) as ResourceState;
            this.learnRt(state);
            this.cache.set(name, { rev, json, state, own: false });
          }
          // Deliver from the watch once it has reached our copy (which a failed transaction may
          // have brought in earlier): never act on a state whose history we have not seen.
          if (!cur || rev >= cur.rev) {
            this.advance(rev);
            this.core.onState(name);
          }
        }
      } else if (key.startsWith(this.memberPrefix)) {
        const slot = Number(key.slice(this.memberPrefix.length));
        if (ev.type === 'Put') {
          const v = JSON.parse(ev.kv.value.toString()) as { node: string; leaving?: boolean };
          const inc = ev.kv.create_revision;
          const old = this.memberMap.get(slot);
          this.memberMap.set(slot, { nodeId: v.node, inc, leaving: v.leaving === true });
          if ((!old || old.inc !== inc) && inc !== this.incarnation) {
            this.advance(rev);
            this.ops.recoverPrep?.();
            this.ops.recoverDone?.(this.members(), this.slot);
          }
        } else {
          const prev = ev.prev_kv;
          const known = this.memberMap.get(slot);
          const inc = prev ? prev.create_revision : known?.inc;
          const leaving = prev ? (JSON.parse(prev.value.toString()) as { leaving?: boolean }).leaving === true : known?.leaving === true;
          if (inc === this.incarnation) {
            if (!this.leaving) this.fence('our member key was deleted: the lease expired or was revoked');
            return;
          }
          if (known && known.inc === inc) this.memberMap.delete(slot);
          if (inc !== undefined) {
            this.advance(rev);
            await this.recoverMember(slot, inc, leaving);
          }
        }
      }
      this.advance(rev);
    }
  }

  private advance(rev: number): void {
    if (rev <= this.watchRev) return;
    this.watchRev = rev;
    if (this.watchWaiters.length === 0) return;
    const ready = this.watchWaiters.filter((w) => w.rev <= rev);
    this.watchWaiters = this.watchWaiters.filter((w) => w.rev > rev);
    for (const w of ready) w.wake();
  }

  private learnRt(state: ResourceState): void {
    if (state.rt !== undefined && state.rt > this.roundTrips) this.roundTrips = state.rt;
  }

  /** A member left (cleanly) or failed: Linux-style recovery on this survivor. */
  private async recoverMember(slot: number, inc: string, leaving: boolean): Promise<void> {
    this.recovering++;
    this.core.hold();
    try {
      this.ops.recoverPrep?.();
      this.deadIncs.add(inc);
      await this.purgeDead();
      if (this.fenced) return;
      if (!leaving) this.ops.recoverSlot?.(slot);
      this.ops.recoverDone?.(this.members(), this.slot);
    } finally {
      this.recovering--;
      if (!this.fenced) this.core.release();
      if (this.recovering === 0) {
        const w = this.gateWaiters;
        this.gateWaiters = [];
        for (const f of w) f();
      }
    }
  }

  /** Remove every lock of a dead incarnation from every resource; retried until done or fenced. */
  private async purgeDead(): Promise<void> {
    const dead = (e: engine.LockEntry): boolean => this.deadIncs.has(e.inc);
    for (;;) {
      const todo = [...this.cache.entries()].filter(([, c]) => [c.state.grant, c.state.convert, c.state.wait].some((q) => q.some(dead))).map(([n]) => n);
      if (todo.length === 0 || this.fenced) return;
      try {
        for (const name of todo) await this.mutate(name, (r) => engine.purge(r, dead), this.clock.nowMs() + this.timeoutMs, true);
      } catch (e) {
        if (this.fenced) return;
        if (!(e instanceof TsmdError && e.code === 'EIO')) throw e;
        await this.clock.sleep(200);
      }
    }
  }

  // --- LockspaceBackend -----------------------------------------------------------------------

  peek(resource: string): ResourceState | undefined {
    return this.cache.get(resource)?.state;
  }

  /** Down-conversions complete without waiting for etcd, as in Linux (send_convert). */
  get asyncDownConversions(): boolean {
    return this.dlm.asyncDownConversions;
  }

  lost(reason: string): void {
    this.fence(reason);
  }

  members(): SlotInfo[] {
    return [...this.memberMap.entries()].sort((a, b) => a[0] - b[0]).map(([slot, m]) => ({ nodeId: m.nodeId, slot }));
  }

  private fenceError(): TsmdError {
    return new TsmdError('EFENCED', `DLM ${this.name}: node ${this.dlm.nodeId} is fenced; stop I/O and re-join`);
  }

  /** Wait until no recovery is in progress (operations do not run during recovery, as in Linux). */
  private async gate(deadlineMs: number, what: string): Promise<void> {
    while (this.recovering > 0) {
      await this.waitFor((wake) => this.gateWaiters.push(wake), deadlineMs, `${what}: lockspace recovery still running`);
      if (this.fenced) throw this.fenceError();
    }
  }

  private async waitWatch(rev: number, deadlineMs: number, what: string): Promise<void> {
    while (this.watchRev < rev) {
      await this.waitFor((wake) => this.watchWaiters.push({ rev, wake }), deadlineMs, `${what}: the etcd watch has not caught up with revision ${rev}`);
      if (this.fenced) throw this.fenceError();
    }
  }

  private waitFor(register: (wake: () => void) => void, deadlineMs: number, what: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let done = false;
      const timer = this.clock.setTimer(Math.max(0, deadlineMs - this.clock.nowMs()), () => {
        if (done) return;
        done = true;
        reject(new TsmdError('ETIMEDOUT', `DLM ${this.name}: ${what}`));
      });
      const wake = (): void => {
        if (done) return;
        done = true;
        timer.cancel();
        resolve();
      };
      register(wake);
      this.events.once('fenced', wake);
    });
  }

  /**
   * Operations of this node on one resource are applied in the order they were made (as the
   * Linux DLM sends a node's requests to the master in order): each waits for the previous one.
   * Recovery purges do not queue (an operation may be waiting for the recovery to end).
   */
  mutate<T>(resource: string, fn: (r: ResourceState, retry: boolean) => T, deadlineMs: number, recovery = false): Promise<T> {
    if (recovery) return this.mutateNow(resource, fn, deadlineMs, true);
    const prev = this.queues.get(resource) ?? Promise.resolve();
    const run = prev.then(() => this.mutateNow(resource, fn, deadlineMs, false));
    const tail = run.then(() => undefined, () => undefined);
    this.queues.set(resource, tail);
    void tail.then(() => {
      if (this.queues.get(resource) === tail) this.queues.delete(resource);
    });
    return run;
  }

  private async mutateNow<T>(resource: string, fn: (r: ResourceState, retry: boolean) => T, deadlineMs: number, recovery: boolean): Promise<T> {
    const d = this.dlm;
    const key = Buffer.from(this.resPrefix + resource);
    const memberCmp = { key: this.memberKey(this.slot), target: 'Create' as const, result: 'Equal' as const, create_revision: this.incarnation };
    let retry = false;
    let backoffMs = 20;
    for (let attempt = 0; ; attempt++) {
      if (this.fenced) throw this.fenceError();
      if (attempt >= MAX_CAS_ATTEMPTS) throw new TsmdError('EBUSY', `DLM ${this.name}/${resource}: ${MAX_CAS_ATTEMPTS} conflicting updates in a row; giving up`);
      const what = `${this.name}/${resource}`;
      if (!recovery) await this.gate(deadlineMs, what);
      let c = this.cache.get(resource);
      if (c && !c.own && c.rev > this.watchRev && !recovery) {
        await this.waitWatch(c.rev, deadlineMs, what);
        c = this.cache.get(resource);
      }
      const state: ResourceState = c ? (JSON.parse(c.json) as ResourceState) : engine.newResource();
      const baseRt = state.rt ?? 0;
      delete state.rt;
      const before = JSON.stringify(state);
      const out = fn(state, retry);
      if (JSON.stringify(state) === before) {
        // nothing to write (NOQUEUE refused, cancel of a granted lock...): the answer holds only if
        // our copy is current, which etcd confirms in one read-only transaction
        try {
          if (await this.confirm(resource, key, c, memberCmp)) return out;
        } catch (e) {
          if (this.fenced) throw this.fenceError();
          if (!isTransient(e) || this.clock.nowMs() >= deadlineMs) throw e;
          await this.clock.sleep(backoffMs);
          backoffMs = Math.min(backoffMs * 2, 500);
        }
        retry = true;
        continue;
      }
      engine.checkInvariants(state);
      // causal depth in round trips: what this node had learnt when it issued this, plus one
      const myRt = Math.max(this.roundTrips, baseRt) + 1;
      state.rt = myRt;
      const json = JSON.stringify(state);
      let r: ITxnResponse;
      try {
        r = await d.txn(`update ${what}`, {
          compare: [
            c ? { key, target: 'Mod', result: 'Equal', mod_revision: String(c.rev) } : { key, target: 'Version', result: 'Equal', version: '0' },
            memberCmp,
          ],
          success: [{ request_put: { key, value: Buffer.from(json) } }],
          failure: [{ request_range: { key } }, { request_range: { key: memberCmp.key } }],
        });
      } catch (e) {
        if (this.fenced) throw this.fenceError();
        if (!isTransient(e) || this.clock.nowMs() >= deadlineMs) throw e;
        retry = true; // it may have been applied: the next run checks the state for our own effect
        this.roundTrips = Math.max(this.roundTrips, myRt);
        await this.clock.sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, 500);
        continue;
      }
      this.roundTrips = Math.max(this.roundTrips, myRt);
      if (r.succeeded) {
        const rev = Number(r.header.revision);
        const cur = this.cache.get(resource);
        const own = !c || c.own || c.rev <= this.watchRev; // written on a copy the watch had confirmed
        if (!cur || rev > cur.rev) this.cache.set(resource, { rev, json, state: JSON.parse(json) as ResourceState, own });
        this.core.onState(resource);
        return out;
      }
      this.afterConflict(resource, r);
      retry = true;
    }
  }

  /** Is our copy `c` of the resource current? If not, the cache is refreshed from etcd's answer. */
  private async confirm(resource: string, key: Buffer, c: Cached | undefined, memberCmp: { key: Buffer; target: 'Create'; result: 'Equal'; create_revision: string }): Promise<boolean> {
    const r = await this.dlm.txn(`read ${this.name}/${resource}`, {
      compare: [
        c ? { key, target: 'Mod', result: 'Equal', mod_revision: String(c.rev) } : { key, target: 'Version', result: 'Equal', version: '0' },
        memberCmp,
      ],
      failure: [{ request_range: { key } }, { request_range: { key: memberCmp.key } }],
    });
    if (r.succeeded) return true;
    this.afterConflict(resource, r);
    return false;
  }

  /** A failed compare: fence if our membership is gone, else take the current value. */
  private afterConflict(resource: string, r: ITxnResponse): void {
    this.dlm.stats.conflicts++;
    const mem = r.responses[1]!.response_range.kvs[0];
    if (!mem || mem.create_revision !== this.incarnation) {
      this.fence('our member key is gone: the lease expired');
      throw this.fenceError();
    }
    const kv = r.responses[0]!.response_range.kvs[0];
    if (kv) {
      const rev = Number(kv.mod_revision);
      const cur = this.cache.get(resource);
      if (!cur || rev > cur.rev) {
        const j = kv.value.toString();
        const st = JSON.parse(j) as ResourceState;
        this.learnRt(st);
        this.cache.set(resource, { rev, json: j, state: st, own: false });
      }
    }
  }

  // --- keep-alive and fencing -------------------------------------------------------------------

  private scheduleKeepAlive(): void {
    if (this.kaStopped || this.done) return;
    this.kaTimer = this.clock.setTimer(this.dlm.keepAliveIntervalMs, () => {
      void this.keepAliveOnce().finally(() => this.scheduleKeepAlive());
    });
  }

  private async keepAliveOnce(): Promise<void> {
    if (this.kaInFlight || this.kaStopped || this.done || this.fenced) return;
    this.kaInFlight = true;
    const d = this.dlm;
    const sent = this.clock.nowMs();
    try {
      const ttl = await new Promise<number>((resolve, reject) => {
        let end = (): void => undefined;
        const timer = this.clock.setTimer(d.keepAliveIntervalMs * 2, () => {
          end();
          reject(new Error('keep-alive timed out'));
        });
        d.client.leaseClient.leaseKeepAlive().then((stream) => {
          end = () => stream.end();
          stream.on('data', (res: { TTL: string }) => {
            timer.cancel();
            stream.end();
            resolve(Number(res.TTL));
          });
          stream.on('error', (e: Error) => {
            timer.cancel();
            reject(e);
          });
          stream.write({ ID: this.leaseId });
        }, reject);
      });
      d.stats.keepAlives++;
      if (this.kaStopped || this.done) return;
      if (ttl <= 0) {
        this.fence('etcd says our lease has expired');
        return;
      }
      this.validUntilMs = Math.max(this.validUntilMs, sent + ttl * 1000);
      this.armFenceTimer();
    } catch {
      // the fencing timer decides; the next tick retries
    } finally {
      this.kaInFlight = false;
    }
  }

  private armFenceTimer(): void {
    if (this.done || this.fenced) return;
    this.fenceTimer?.cancel();
    const at = this.validUntilMs - this.dlm.fenceMarginMs;
    this.fenceTimer = this.clock.setTimer(Math.max(0, at - this.clock.nowMs()), () => {
      if (this.clock.nowMs() >= this.validUntilMs - this.dlm.fenceMarginMs)
        this.fence(`no keep-alive acknowledged by etcd in time: the lease may expire in ${Math.round(this.validUntilMs - this.clock.nowMs())} ms`);
      else this.armFenceTimer();
    });
  }

  private stopTimers(): void {
    this.kaStopped = true;
    this.kaTimer?.cancel();
    this.fenceTimer?.cancel();
  }

  private fence(reason: string): void {
    if (this.fenced || this.done) return;
    this.stopTimers();
    if (!this.core) {
      this.done = true; // still joining: join() fails on its own
      return;
    }
    const err = new TsmdError('EFENCED', `DLM ${this.name}: node ${this.dlm.nodeId} (slot ${this.slot}) is fenced: ${reason}; stop I/O and re-join`);
    this.core.fence(err);
    this.events.emit('fenced');
    this.done = true;
    this.dlm.forget(this);
    void this.watcher?.cancel().catch(() => undefined);
    // We no longer act on any lock, so ending the lease early is safe and lets the others recover
    // sooner; if etcd is unreachable the lease simply expires.
    if (!this.partitioned) void this.dlm.call('lease revoke', (o) => this.dlm.client.leaseClient.leaseRevoke({ ID: this.leaseId }, o)).catch(() => undefined);
  }

  async leave(): Promise<void> {
    const d = this.dlm;
    this.leaving = true;
    // mark the member key so that the others see a clean leave (no recoverSlot), then end the lease
    const value = Buffer.from(JSON.stringify({ node: d.nodeId, lvb: this.lvbLength, leaving: true }));
    const r = await d.txn(`leave ${this.name}`, {
      compare: [{ key: this.memberKey(this.slot), target: 'Create', result: 'Equal', create_revision: this.incarnation }],
      success: [{ request_put: { key: this.memberKey(this.slot), value, lease: this.leaseId } }],
    });
    this.stopTimers();
    this.done = true;
    d.forget(this);
    await this.watcher?.cancel().catch(() => undefined);
    if (r.succeeded) await d.call('lease revoke', (o) => d.client.leaseClient.leaseRevoke({ ID: this.leaseId }, o));
  }

  /** The client is closing without leaving: stop quietly; the lease expires on the server. */
  abandon(): void {
    if (this.done) return;
    this.stopTimers();
    this.done = true;
    this.core?.fence(new TsmdError('EFENCED', `DLM ${this.name}: node ${this.dlm.nodeId} closed its etcd connection without leaving`));
    void this.watcher?.cancel().catch(() => undefined);
  }

  // --- EtcdLockspaceInternals -----------------------------------------------------------------

  async idle(): Promise<void> {
    while (this.queues.size > 0) await Promise.all([...this.queues.values()]);
  }

  stopKeepAlive(): void {
    this.partitioned = true;
    this.kaStopped = true;
    this.kaTimer?.cancel();
  }

  async kill(): Promise<void> {
    this.stopTimers();
    this.done = true;
    this.core.fence(new TsmdError('EFENCED', `DLM ${this.name}: node ${this.dlm.nodeId} was killed`));
    this.dlm.forget(this);
    await this.watcher?.cancel().catch(() => undefined);
    await this.dlm.call('lease revoke', (o) => this.dlm.client.leaseClient.leaseRevoke({ ID: this.leaseId }, o));
  }
}
