/**
 * etcd DLM backend (npm etcd3, etcd >= 3.4). See docs/dlm.md for the key schema and the fencing
 * argument. In short, under `<prefix>/<lockspace>/`:
 *
 * - `m/<slot>`   member key, bound to the node's lease; claimed with a create-revision == 0
 *                transaction. Its create revision is the node's *incarnation*.
 * - `n/<nodeId>` bound to the same lease, claimed in the same transaction: one incarnation per node.
 * - `o/<name>/<inc>.<seq>` one operation on resource `name` (grant.ts's Op as JSON): lock, convert,
 *                unlock, cancel or recovery purge. Appended with one transaction guarded only by
 *                `create(m/<our slot>) == our incarnation` (and the key being new), so concurrent
 *                operations never conflict and a node whose lease expired can never write again.
 * - `r/<name>`   checkpoint: the resource's state (grant/convert/wait queues, LVB) after every
 *                operation up to a revision; the operation keys up to it are deleted with it.
 *
 * The resource's state is a replicated state machine over etcd's log: every node applies the
 * operations in revision order (one watch on the lockspace prefix) through the same pure grant
 * engine, so all nodes go through the same states and an operation's result (granted, queued,
 * EAGAIN...) is known to its writer when its replay reaches it. The LVB is part of the state, so
 * it changes in the very operation that writes it. Grants of queued requests and BASTs appear in
 * the lock entries and reach the owner through its own replay.
 *
 * A member key's deletion seen by the watch is a membership change: a clean leave (the key was
 * marked `leaving` first) or a failure (lease expiry). Survivors then run recoverPrep, purge the
 * dead incarnation's locks from every resource (marking the LVB not valid where it held PW/EX),
 * recoverSlot(slot), recoverDone(slots, ourSlot), and only then deliver completions and BASTs. The
 * purge is an operation in the resource's log: every replica drops the dead locks at the same
 * point, after the member key's deletion.
 *
 * Fencing: keep-alives are sent every keepAliveIntervalMs; after a success the server's lease
 * expires no earlier than (send time + TTL). If no keep-alive succeeds until that instant minus
 * fenceMarginMs, the node declares itself fenced — before the server can expire the lease, so
 * before any survivor can recover its slot — rejects everything and emits 'fenced'.
 *
 * The network edge: gRPC deadlines are absolute wall-clock times, taken from the injected
 * Clock's wallMs (so the clock given here must keep real wall time); every timer of the DLM
 * itself runs on the same Clock's monotonic time.
 */
import { EventEmitter } from 'node:events';
import { Etcd3, type IKeyValue, type IOptions, type IRequestOp as RequestOp, type ITxnResponse, type Watcher } from 'etcd3';
import type { Clock, Timer } from '../../env/clock.js';
import { assert, TsmdError } from '../../errors.js';
import { LockspaceCore, type LockspaceBackend } from './core.js';
import * as engine from './grant.js';
import type { Op, OpResult, ResourceState } from './grant.js';
import {
  type Dlm,
  type JoinOptions,
  type Lockspace,
  type RecoveryOps,
  type SlotInfo,
  validateJoinOptions,
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
  /**
   * Required, no SystemClock fallback (the core never picks its own time source): timers,
   * keep-alives and fencing run on it, and gRPC deadlines on its wall time.
   */
  clock: Clock;
}

/** Counters for benchmarks and tests. */
export interface EtcdDlmStats {
  /** every etcd unary call (txn, range, lease grant/revoke) */
  calls: number;
  txns: number;
  /** transactions whose compare failed (our member key gone, or an operation retried after an ambiguous failure was already in etcd) */
  conflicts: number;
  /** checkpoints written (each deletes up to MAX_DELETES_PER_TXN operation keys) */
  checkpoints: number;
  /** appends retried after a transient failure (etcd unreachable, a deadline passed) */
  retries: number;
  /** appends whose transaction's read let this node replay the log at once (see fastReplay) */
  fastReplays: number;
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

const MAX_JOIN_ATTEMPTS = 64;
/** a resource's log is checkpointed once it holds this many operations */
const COMPACT_AFTER_OPS = 32;
/** etcd's default --max-txn-ops is 128 */
const MAX_DELETES_PER_TXN = 100;

/** One resource as this node has replayed it. */
interface Replica {
  state: ResourceState;
  /** revision of the last operation applied (or the checkpoint's) */
  rev: number;
  /** operation keys of this resource still in etcd, in revision order */
  keys: Array<{ key: string; rev: number }>;
  /** mod revision of the checkpoint key (0: none), and the revision its state is at */
  ckRev: number;
  ckAt: number;
}

/** Value of an operation key `o/<resource>/<inc>.<seq>`. */
interface OpRecord {
  o: Op;
  /** writer's incarnation and its sequence number (per node and lockspace, increasing) */
  i: string;
  s: number;
  /** Lamport clock of etcd round trips: what the writer had seen, plus one (benchmark) */
  rt: number;
}

/** Value of a checkpoint key `r/<resource>`: the state after every operation up to revision `at`. */
interface Checkpoint {
  at: number;
  rt: number;
  s: ResourceState;
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
  readonly stats: EtcdDlmStats = { calls: 0, txns: 0, conflicts: 0, checkpoints: 0, retries: 0, fastReplays: 0, keepAlives: 0 };
  private readonly spaces = new Set<EtcdSpace>();
  private readonly internalsOf = new WeakMap<Lockspace, EtcdSpace>();
  private closed = false;

  constructor(o: EtcdDlmOptions) {
    if (!o || typeof o.nodeId !== 'string' || !/^[\x21-\x2e\x30-\x7e]{1,64}$/.test(o.nodeId))
      throw new TsmdError('EINVAL', `DLM etcd: node id ${JSON.stringify(o?.nodeId)} must be 1..64 printable ASCII characters without spaces or '/'`);
    if (!Array.isArray(o.endpoints) || o.endpoints.length === 0) throw new TsmdError('EINVAL', 'DLM etcd: endpoints must list at least one etcd client URL');
    this.nodeId = o.nodeId;
    assert(o.clock, 'EtcdDlm needs an injected clock');
    this.clock = o.clock;
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

  /** gRPC call options with a deadline (wall clock: grpc-js compares it with its own Date.now). */
  callOptions(): { deadline: number } {
    return { deadline: this.clock.wallMs() + this.callTimeoutMs };
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
    const { name, lvbLength, timeoutMs, maxSlots } = validateJoinOptions(opts);
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

  /**
   * One cheap read under the key prefix (one round trip, within callTimeoutMs): does an endpoint
   * answer and accept our TLS and credentials? The daemon asks it once at start and only warns
   * on failure (a node whose cluster stack is down still runs its local arrays, as an md node
   * without dlm_controld does); the DLM itself never needs it, join reports the same failures.
   */
  async probe(): Promise<void> {
    const key = Buffer.from(`${this.prefix}/`);
    await this.call('probe', (o) => this.client.kv.range({ key, range_end: prefixEnd(key), limit: '1', keys_only: true }, o));
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
  private readonly opPrefix: string;
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
  private readonly replicas = new Map<string, Replica>();
  private readonly queues = new Map<string, Promise<void>>();
  /** our appended operations not yet applied by our replay, by sequence number */
  private readonly waiting = new Map<number, { resolve: (r: OpResult) => void; reject: (e: unknown) => void; done: Promise<unknown> }>();
  private opSeq = 0;
  private watchRev = 0;
  private snapshotRev = 0;
  private watcher: Watcher | undefined;
  private recoveryChain: Promise<void> = Promise.resolve();
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
    this.opPrefix = `${this.base}o/`;
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

  /**
   * Read the whole lockspace at one revision: members, checkpoints and operation logs; every
   * resource's state is its checkpoint with the later operations replayed in revision order.
   */
  private async snapshot(): Promise<void> {
    const d = this.dlm;
    const start = Buffer.from(this.base);
    const r = await d.call(`read lockspace ${this.name}`, (o) => d.client.kv.range({ key: start, range_end: prefixEnd(start) }, o));
    const rev = Number(r.header.revision);
    assert(!r.more, 'a lockspace snapshot is read whole');
    const checkpoints: IKeyValue[] = [];
    const opKvs: IKeyValue[] = [];
    for (const kv of r.kvs) {
      const key = kv.key.toString();
      if (key.startsWith(this.memberPrefix)) {
        const v = JSON.parse(kv.value.toString()) as { node: string; leaving?: boolean };
        this.memberMap.set(Number(key.slice(this.memberPrefix.length)), { nodeId: v.node, inc: kv.create_revision, leaving: v.leaving === true });
      } else if (key.startsWith(this.resPrefix)) {
        checkpoints.push(kv);
      } else if (key.startsWith(this.opPrefix)) {
        opKvs.push(kv);
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
    for (const kv of checkpoints) {
      const ck = JSON.parse(kv.value.toString()) as Checkpoint;
      const rp = this.replica(kv.key.toString().slice(this.resPrefix.length));
      rp.state = ck.s;
      rp.rev = ck.at;
      rp.ckRev = Number(kv.mod_revision);
      rp.ckAt = ck.at;
      if (ck.rt > this.roundTrips) this.roundTrips = ck.rt;
    }
    opKvs.sort((a, b) => Number(a.mod_revision) - Number(b.mod_revision));
    for (const kv of opKvs) this.applyOpKv(kv);
    for (const rp of this.replicas.values()) {
      for (const q of [rp.state.grant, rp.state.convert, rp.state.wait]) for (const e of q) if (!live.has(e.inc)) this.deadIncs.add(e.inc);
      this.forgetDead(rp, (inc) => !live.has(inc));
    }
    this.watchRev = rev;
    this.snapshotRev = rev;
  }

  /**
   * Drop the duplicate-check entries of dead incarnations (they can append nothing more). Watching
   * nodes do it at the member key's deletion, a joiner for every incarnation dead at its snapshot:
   * both give the same state.
   */
  private forgetDead(rp: Replica, dead: (inc: string) => boolean): void {
    const ap = rp.state.ap;
    if (ap) for (const inc of Object.keys(ap)) if (dead(inc)) delete ap[inc];
  }

  private replica(name: string): Replica {
    let rp = this.replicas.get(name);
    if (!rp) this.replicas.set(name, (rp = { state: engine.newResource(), rev: 0, keys: [], ckRev: 0, ckAt: 0 }));
    return rp;
  }

  // --- the operation log ------------------------------------------------------------------------

  /**
   * Apply one logged operation (a put of `o/<resource>/<inc>.<seq>`) to our replica of its
   * resource. Every node applies the same operations in the same (revision) order through the same
   * engine, so every replica goes through the same states.
   */
  private applyOpKv(kv: IKeyValue): void {
    const key = kv.key.toString();
    const rest = key.slice(this.opPrefix.length);
    const name = rest.slice(0, rest.lastIndexOf('/'));
    const rev = Number(kv.mod_revision);
    const rp = this.replica(name);
    if (rev <= rp.rev) return; // already in the checkpoint
    rp.rev = rev;
    rp.keys.push({ key, rev });
    const rec = JSON.parse(kv.value.toString()) as OpRecord;
    if (rec.rt > this.roundTrips) this.roundTrips = rec.rt;
    let out: OpResult | undefined;
    if (rec.o.k === 'pg') {
      // idempotent and not ordered with its writer's other operations: no duplicate check
      out = engine.applyOp(rp.state, rec.o);
      if (rp.state.ap) for (const inc of rec.o.incs) delete rp.state.ap[inc];
    } else {
      const ap = (rp.state.ap ??= {});
      if ((ap[rec.i] ?? 0) < rec.s) {
        ap[rec.i] = rec.s;
        out = engine.applyOp(rp.state, rec.o);
      } // else: a second copy of an operation appended twice (retry after an ambiguous failure)
    }
    engine.checkInvariants(rp.state);
    if (rec.i === this.incarnation) {
      const w = this.waiting.get(rec.s);
      if (w && out) {
        this.waiting.delete(rec.s);
        w.resolve(out);
      }
    }
    this.core.onState(name);
  }

  /**
   * Append `op` to the resource's log: one transaction, `create(m/<our slot>) == incarnation &&
   * create(<op key>) == 0` → put. It compares nothing that another node writes, so it never
   * conflicts. Resolves once etcd has it, with the promise of its result (known when our replay
   * reaches it).
   */
  private async append(resource: string, op: Op, deadlineMs: number, recovery: boolean): Promise<{ result: Promise<OpResult> }> {
    const d = this.dlm;
    const what = `${this.name}/${resource}`;
    if (!recovery) await this.gate(deadlineMs, what);
    if (this.fenced) throw this.fenceError();
    const seq = ++this.opSeq;
    const key = Buffer.from(`${this.opPrefix}${resource}/${this.incarnation}.${seq}`);
    // causal depth in round trips: what this node had learnt when it issued this, plus one
    const rt = this.roundTrips + 1;
    const rec: OpRecord = { o: op, i: this.incarnation, s: seq, rt };
    const value = Buffer.from(JSON.stringify(rec));
    const memberKey = this.memberKey(this.slot);
    const checkpoint = this.checkpointOp(resource);
    let resolve!: (r: OpResult) => void;
    let reject!: (e: unknown) => void;
    const result = new Promise<OpResult>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const done = result.then(() => undefined, () => undefined);
    this.waiting.set(seq, { resolve, reject, done }); // our replay may see it before the reply
    let backoffMs = 20;
    const logStart = Buffer.from(`${this.opPrefix}${resource}/`);
    const ckKey = Buffer.from(this.resPrefix + resource);
    for (;;) {
      let r: ITxnResponse;
      // what our replica of this resource has applied when the transaction is sent: the
      // transaction also reads the resource's operations after it (see fastReplay)
      const fromRev = this.replica(resource).rev;
      try {
        r = await d.txn(`update ${what}`, {
          compare: [
            { key: memberKey, target: 'Create', result: 'Equal', create_revision: this.incarnation },
            { key, target: 'Create', result: 'Equal', create_revision: '0' },
          ],
          success: [
            { request_put: { key, value } },
            ...(checkpoint ? [checkpoint.op] : []),
            { request_range: { key: logStart, range_end: prefixEnd(logStart), min_mod_revision: String(fromRev + 1), keys_only: true } },
            { request_range: { key: ckKey, keys_only: true } },
          ],
          failure: [{ request_range: { key: memberKey } }],
        });
      } catch (e) {
        if (this.fenced) throw this.fenceError();
        if (!isTransient(e) || this.clock.nowMs() >= deadlineMs) {
          this.waiting.delete(seq);
          throw e;
        }
        // it may have been applied: the retry's create(key) == 0 tells, and a copy appended after
        // a checkpoint removed the first is skipped by every replay (sequence numbers)
        this.roundTrips = Math.max(this.roundTrips, rt);
        d.stats.retries++;
        await this.clock.sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, 500);
        continue;
      }
      this.roundTrips = Math.max(this.roundTrips, rt);
      if (!r.succeeded) {
        d.stats.conflicts++;
        const mem = r.responses[0]!.response_range.kvs[0];
        if (!mem || mem.create_revision !== this.incarnation) {
          this.fence('our member key is gone: the lease expired');
          throw this.fenceError();
        }
        // else our key exists: an earlier attempt was applied
      } else {
        const rev = Number(r.header.revision);
        const rp = this.replica(resource);
        if (checkpoint && r.responses[1]?.response_txn?.succeeded) {
          d.stats.checkpoints++;
          rp.ckRev = Math.max(rp.ckRev, rev);
          rp.ckAt = Math.max(rp.ckAt, checkpoint.at);
        }
        const base = checkpoint ? 2 : 1;
        const listed = r.responses[base]?.response_range?.kvs ?? [];
        if (!recovery) this.fastReplay(resource, fromRev, rev, key, value, listed, r.responses[base + 1]?.response_range?.kvs[0]);
      }
      return { result };
    }
  }

  /**
   * The append's own transaction listed (keys only) the resource's operations newer than
   * `fromRev`, what our replica had applied when it was sent, and the checkpoint key. When that
   * list is our operation alone and no checkpoint was written since `fromRev`, our operation
   * directly follows what we have applied: replay it now (its value is ours) instead of waiting
   * for the watch, so an uncontended operation costs one round trip. Otherwise (others'
   * operations in between, a checkpoint that may have deleted some, recovery under way) the
   * watch delivers them as before; either way every operation is applied once, in revision
   * order. A recovery purge is never replayed this way (it is not this node's own queue, and a
   * grant caused by a membership change waits for the watch to show the change).
   */
  private fastReplay(resource: string, fromRev: number, rev: number, key: Buffer, value: Buffer, kvs: readonly IKeyValue[], ckKv: IKeyValue | undefined): void {
    if (this.fenced || this.done || this.recovering > 0 || kvs.length !== 1) return;
    if (ckKv && Number(ckKv.mod_revision) > fromRev) return;
    const only = kvs[0]!;
    if (!only.key.equals(key) || Number(only.mod_revision) !== rev) return;
    const rp = this.replica(resource);
    if (rp.rev !== fromRev) return; // the watch moved the replica on meanwhile: it delivers ours too
    this.dlm.stats.fastReplays++;
    this.applyOpKv({ ...only, value, mod_revision: String(rev) });
  }

  /**
   * When a resource's log has grown past COMPACT_AFTER_OPS operations since its checkpoint, the
   * next operation this node appends to it carries a nested transaction: if the checkpoint key is
   * still the one we know (`mod(r/<name>)`), put our replica's state at its last applied revision
   * there and delete the operation keys up to that revision. Its compare failing (another node
   * checkpointed first) does not fail the operation, so this costs no extra call and no conflict.
   * Nodes already watching have every operation from their watch; only joiners start from the
   * checkpoint.
   */
  private checkpointOp(name: string): { op: RequestOp; at: number } | undefined {
    const rp = this.replicas.get(name);
    if (!rp) return undefined;
    const old = rp.keys.filter((k) => k.rev > rp.ckAt).length;
    if (old < COMPACT_AFTER_OPS) return undefined;
    const at = rp.rev;
    const ck: Checkpoint = { at, rt: this.roundTrips, s: rp.state };
    const ckKey = Buffer.from(this.resPrefix + name);
    const dels = rp.keys.filter((k) => k.rev <= at).slice(0, MAX_DELETES_PER_TXN);
    return {
      at,
      op: {
        request_txn: {
          compare: [rp.ckRev > 0 ? { key: ckKey, target: 'Mod', result: 'Equal', mod_revision: String(rp.ckRev) } : { key: ckKey, target: 'Version', result: 'Equal', version: '0' }],
          success: [
            { request_put: { key: ckKey, value: Buffer.from(JSON.stringify(ck)) } },
            ...dels.map((k) => ({ request_delete_range: { key: Buffer.from(k.key) } })),
          ],
        },
      },
    };
  }

  // --- watch ----------------------------------------------------------------------------------

  private startWatch(): void {
    const d = this.dlm;
    const w = d.client.watch().prefix(this.base).startRevision(String(this.watchRev + 1)).withPreviousKV().watcher();
    this.watcher = w;
    // The replicas are only as good as the watch is gapless. etcd3 resumes a broken watch from the
    // revision after the last response header it saw, and takes the header of the re-created
    // watch (the store's current revision, sent *before* the catch-up events) as seen: a second
    // break during a catch-up would skip operations for good. So the resume point is ours: the
    // last revision we applied, delivered again (every event is applied idempotently).
    const resumeFromOurs = (): void => {
      w.request.start_revision = String(Math.max(this.watchRev, this.snapshotRev + 1));
    };
    w.on('connected', resumeFromOurs);
    w.on('disconnected', resumeFromOurs);
    w.on('data', (res) => {
      try {
        if (res.events.length > 0) this.processEvents(res.events);
      } catch (e) {
        this.fence(`internal error processing etcd events: ${e instanceof Error ? e.stack : String(e)}`);
      }
      resumeFromOurs();
    });
    w.on('error', (e: unknown) => {
      // cancelled by etcd (e.g. compacted past our revision): we cannot know what we missed
      this.fence(`the lockspace watch failed (${e instanceof Error ? e.message : String(e)})`);
    });
  }

  private processEvents(events: ReadonlyArray<{ type: string; kv: IKeyValue; prev_kv?: IKeyValue }>): void {
    for (const ev of events) {
      if (this.fenced || this.done) return;
      const key = ev.kv.key.toString();
      const rev = Number(ev.kv.mod_revision);
      if (rev <= this.snapshotRev) continue; // in our snapshot already
      // A resumed watch delivers the last revision seen again: every branch below is idempotent.
      if (key.startsWith(this.opPrefix)) {
        if (ev.type === 'Put') {
          this.applyOpKv(ev.kv);
        } else {
          const rest = key.slice(this.opPrefix.length);
          const rp = this.replicas.get(rest.slice(0, rest.lastIndexOf('/')));
          if (rp) rp.keys = rp.keys.filter((k) => k.key !== key);
        }
      } else if (key.startsWith(this.resPrefix)) {
        if (ev.type === 'Put') {
          const rp = this.replica(key.slice(this.resPrefix.length));
          rp.ckRev = Math.max(rp.ckRev, rev);
          rp.ckAt = Math.max(rp.ckAt, (JSON.parse(ev.kv.value.toString()) as Checkpoint).at);
        }
      } else if (key.startsWith(this.memberPrefix)) {
        const slot = Number(key.slice(this.memberPrefix.length));
        if (ev.type === 'Put') {
          const v = JSON.parse(ev.kv.value.toString()) as { node: string; leaving?: boolean };
          const inc = ev.kv.create_revision;
          const old = this.memberMap.get(slot);
          this.memberMap.set(slot, { nodeId: v.node, inc, leaving: v.leaving === true });
          if ((!old || old.inc !== inc) && inc !== this.incarnation) {
            this.recoveryChain = this.recoveryChain.then(() => {
              if (this.fenced || this.done) return;
              this.ops.recoverPrep?.();
              this.ops.recoverDone?.(this.members(), this.slot);
            });
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
          if (inc !== undefined && !this.deadIncs.has(inc)) {
            for (const rp of this.replicas.values()) this.forgetDead(rp, (x) => x === inc);
            this.recoverMember(slot, inc, leaving);
          }
        }
      }
      this.watchRev = rev;
    }
  }

  /**
   * A member left (cleanly) or failed: Linux-style recovery on this survivor. Completions and BASTs
   * are held from this point of the log on (so nothing the recovery grants is acted on before
   * recoverDone), and new operations wait; the purge itself is appended to the logs.
   */
  private recoverMember(slot: number, inc: string, leaving: boolean): void {
    this.recovering++;
    this.core.hold();
    this.deadIncs.add(inc);
    this.recoveryChain = this.recoveryChain.then(async () => {
      try {
        if (this.fenced || this.done) return;
        this.ops.recoverPrep?.();
        await this.purgeDead();
        if (this.fenced || this.done) return;
        if (!leaving) this.ops.recoverSlot?.(slot);
        this.ops.recoverDone?.(this.members(), this.slot);
      } catch (e) {
        this.fence(`recovery of slot ${slot} failed: ${e instanceof Error ? e.message : String(e)}`);
      } finally {
        this.recovering--;
        if (!this.fenced) this.core.release();
        if (this.recovering === 0) {
          const w = this.gateWaiters;
          this.gateWaiters = [];
          for (const f of w) f();
        }
      }
    });
  }

  /** Purge every lock of a dead incarnation from every resource; retried until done or fenced. */
  private async purgeDead(): Promise<void> {
    for (;;) {
      const todo: Array<[string, string[]]> = [];
      for (const [name, rp] of this.replicas) {
        const incs = new Set<string>();
        for (const q of [rp.state.grant, rp.state.convert, rp.state.wait]) for (const e of q) if (this.deadIncs.has(e.inc)) incs.add(e.inc);
        if (incs.size > 0) todo.push([name, [...incs].sort()]);
      }
      if (todo.length === 0 || this.fenced || this.done) return;
      try {
        const deadline = this.clock.nowMs() + this.timeoutMs;
        const appended = await Promise.all(todo.map(([name, incs]) => this.append(name, { k: 'pg', incs }, deadline, true)));
        await Promise.all(appended.map((a) => a.result));
      } catch (e) {
        if (this.fenced || this.done) return;
        if (!(e instanceof TsmdError && e.code === 'EIO')) throw e;
        await this.clock.sleep(200);
      }
    }
  }

  // --- LockspaceBackend -----------------------------------------------------------------------

  peek(resource: string): ResourceState | undefined {
    return this.replicas.get(resource)?.state;
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
   * Operations of this node on one resource are appended in the order they were made (as the
   * Linux DLM sends a node's requests to the master in order): each is sent once the previous one
   * is in etcd. The result is the operation's effect in the replayed log.
   */
  submit(resource: string, op: Op, deadlineMs: number): Promise<OpResult> {
    const prev = this.queues.get(resource) ?? Promise.resolve();
    const run = prev.then(() => this.append(resource, op, deadlineMs, false));
    const tail = run.then(() => undefined, () => undefined);
    this.queues.set(resource, tail);
    void tail.then(() => {
      if (this.queues.get(resource) === tail) this.queues.delete(resource);
    });
    return run.then((a) => a.result);
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
    this.failWaiting(err);
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
    const err = new TsmdError('EFENCED', `DLM ${this.name}: node ${this.dlm.nodeId} closed its etcd connection without leaving`);
    this.core?.fence(err);
    this.failWaiting(err);
    void this.watcher?.cancel().catch(() => undefined);
  }

  // --- EtcdLockspaceInternals -----------------------------------------------------------------

  async idle(): Promise<void> {
    while (this.queues.size > 0 || this.waiting.size > 0) {
      await Promise.all([...this.queues.values()]);
      await Promise.all([...this.waiting.values()].map((w) => w.done));
    }
  }

  /** Our operations appended but not yet replayed are answered with the fencing error. */
  private failWaiting(err: TsmdError): void {
    const w = [...this.waiting.values()];
    this.waiting.clear();
    for (const x of w) x.reject(err);
  }

  stopKeepAlive(): void {
    this.partitioned = true;
    this.kaStopped = true;
    this.kaTimer?.cancel();
  }

  async kill(): Promise<void> {
    this.stopTimers();
    this.done = true;
    const err = new TsmdError('EFENCED', `DLM ${this.name}: node ${this.dlm.nodeId} was killed`);
    this.core.fence(err);
    this.failWaiting(err);
    this.dlm.forget(this);
    await this.watcher?.cancel().catch(() => undefined);
    await this.dlm.call('lease revoke', (o) => this.dlm.client.leaseClient.leaseRevoke({ ID: this.leaseId }, o));
  }
}
