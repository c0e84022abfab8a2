/**
 * In-memory DLM: one process, many nodes (each node is a `Dlm` handle), deterministic given the
 * injected clock. Used by unit tests and the simulator.
 *
 * Operations (engine.Op) apply the grant engine synchronously to the shared resource state; completions and
 * BASTs reach the nodes through promise resolution and the microtask queue, in a fixed order (slot
 * order). `crash(nodeId)` is a node failure: the node is fenced, its locks are purged (LVB flagged
 * not valid where it held PW/EX), the survivors run recoverPrep, recoverSlot(slot) and
 * recoverDone(slots, ourSlot) in slot order, and only then learn of the grants the purge made.
 */
import type { Clock } from '../../env/clock.js';
import { assert, TsmdError } from '../../errors.js';
import { LockspaceCore, type LockspaceBackend } from './core.js';
import * as engine from './grant.js';
import type { ResourceState } from './grant.js';
import {
  type Dlm,
  type JoinOptions,
  type Lockspace,
  type RecoveryOps,
  type SlotInfo,
  validateJoinOptions,
} from './types.js';

export interface MemoryDlmOptions {
  /**
   * Required, no SystemClock fallback: the cluster's timers (lock timeouts) must run on the
   * simulator's clock when there is one, and a default would let a caller forget it silently.
   */
  clock: Clock;
  /** Check the resource invariants after every operation (default true; the benchmark turns it off). */
  checkInvariants?: boolean;
}

interface Member {
  nodeId: string;
  slot: number;
  inc: string;
  core: LockspaceCore;
  ops: RecoveryOps;
  /** cut off from the lock manager (partition(): its requests are lost, it hears nothing) */
  cutOff: boolean;
}

interface Space {
  name: string;
  lvbLength: number;
  maxSlots: number;
  members: Map<number, Member>;
  resources: Map<string, ResourceState>;
}

/** The shared "cluster": lockspaces, their resources and members. */
export class MemoryDlmCluster {
  readonly clock: Clock;
  private readonly check: boolean;
  private readonly spaces = new Map<string, Space>();
  private incSeq = 0;

  constructor(opts: MemoryDlmOptions) {
    assert(opts?.clock, 'MemoryDlmCluster needs an injected clock');
    this.clock = opts.clock;
    this.check = opts.checkInvariants ?? true;
  }

  /** A node of this cluster (a node id may be used again after it crashed or left). */
  node(nodeId: string): Dlm {
    if (typeof nodeId !== 'string' || nodeId.length === 0) throw new TsmdError('EINVAL', 'DLM node id must be a non-empty string');
    return { nodeId, join: (opts: JoinOptions) => this.join(nodeId, opts) };
  }

  /** The state of a resource (tests). */
  resourceState(lockspace: string, resource: string): ResourceState | undefined {
    return this.spaces.get(lockspace)?.resources.get(resource);
  }

  private slots(s: Space): SlotInfo[] {
    return [...s.members.values()].sort((a, b) => a.slot - b.slot).map((m) => ({ nodeId: m.nodeId, slot: m.slot }));
  }

  /** The members that hear the lock manager (not cut off), in slot order. */
  private sorted(s: Space): Member[] {
    return [...s.members.values()].filter((m) => !m.cutOff).sort((a, b) => a.slot - b.slot);
  }

  private async join(nodeId: string, opts: JoinOptions): Promise<Lockspace> {
    const { name, lvbLength, timeoutMs, maxSlots } = validateJoinOptions(opts);
    let s = this.spaces.get(name);
    if (!s) {
      s = { name, lvbLength, maxSlots, members: new Map(), resources: new Map() };
      this.spaces.set(name, s);
    }
    if (s.members.size === 0) {
      s.lvbLength = lvbLength;
      s.maxSlots = maxSlots;
    }
    if (s.lvbLength !== lvbLength) throw new TsmdError('EINVAL', `DLM ${name}: LVB length ${lvbLength} differs from the members' ${s.lvbLength}`);
    for (const m of s.members.values()) if (m.nodeId === nodeId) throw new TsmdError('EEXIST', `DLM ${name}: node ${nodeId} is already a member (slot ${m.slot})`);
    let slot = 0;
    for (let i = 1; i <= s.maxSlots; i++) {
      if (!s.members.has(i)) {
        slot = i;
        break;
      }
    }
    if (slot === 0) throw new TsmdError('ENOSPC', `DLM ${name}: all ${s.maxSlots} slots are taken; node ${nodeId} cannot join`);
    const inc = `m${++this.incSeq}`;
    const core = new LockspaceCore({ name, nodeId, slot, inc, lvbLength, timeoutMs, clock: this.clock });
    const member: Member = { nodeId, slot, inc, core, ops: opts.ops ?? {}, cutOff: false };
    const space = s;
    const backend: LockspaceBackend = {
      submit: (resource, op, deadlineMs) => this.submit(space, member, resource, op, deadlineMs),
      peek: (resource) => space.resources.get(resource),
      members: () => this.slots(space),
      leave: () => this.leave(space, member),
    };
    core.backend = backend;
    // membership change: the others run a recovery without a failed slot
    const others = this.sorted(s);
    for (const m of others) m.ops.recoverPrep?.();
    s.members.set(slot, member);
    const slots = this.slots(s);
    for (const m of others) m.ops.recoverDone?.(slots, m.slot);
    member.ops.recoverDone?.(slots, slot);
    return core;
  }

  private submit(s: Space, m: Member, resource: string, op: engine.Op, deadlineMs: number): Promise<engine.OpResult> {
    if (s.members.get(m.slot) !== m) return Promise.reject(new TsmdError('EFENCED', `DLM ${s.name}: node ${m.nodeId} is no longer a member`));
    // a request from a node cut off from the lock manager never arrives: no answer until its
    // deadline, when the call fails as etcd's gRPC deadline would (the op was not applied)
    if (m.cutOff) {
      return new Promise<engine.OpResult>((_resolve, reject) => {
        this.clock.setTimer(Math.max(0, deadlineMs - this.clock.nowMs()), () =>
          reject(new TsmdError('ETIMEDOUT', `DLM ${s.name}: node ${m.nodeId} cannot reach the lock manager (request to ${resource} lost)`)));
      });
    }
    let r = s.resources.get(resource);
    const fresh = !r;
    if (!r) r = engine.newResource();
    let out: engine.OpResult;
    try {
      out = engine.applyOp(r, op);
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.check) engine.checkInvariants(r);
    if (fresh && !engine.isEmpty(r)) s.resources.set(resource, r);
    this.notify(s, resource);
    return Promise.resolve(out);
  }

  private notify(s: Space, resource: string): void {
    for (const m of s.members.values()) if (!m.cutOff) m.core.onState(resource);
  }

  private leave(s: Space, m: Member): Promise<void> {
    assert(s.members.get(m.slot) === m, 'a leaving node is a member');
    s.members.delete(m.slot);
    this.purgeNode(s, m.inc);
    const rest = this.sorted(s);
    for (const x of rest) x.ops.recoverPrep?.();
    const slots = this.slots(s);
    for (const x of rest) x.ops.recoverDone?.(slots, x.slot);
    return Promise.resolve();
  }

  private purgeNode(s: Space, inc: string): string[] {
    const touched: string[] = [];
    for (const [name, r] of s.resources) {
      if (engine.purge(r, (e) => e.inc === inc) > 0) {
        if (this.check) engine.checkInvariants(r);
        touched.push(name);
      }
    }
    return touched;
  }

  /**
   * A network partition between `nodeId` and the lock manager (the simulator's lease model): from
   * now on its requests are lost and it hears no completion, BAST or recovery; its locks stay
   * granted, blocking the others, until crash() (the lease expiry) purges them. The node itself
   * learns nothing until fence() (its own fencing, before the expiry, as docs/dlm.md's fencing
   * argument has it).
   */
  partition(nodeId: string): void {
    for (const m of this.membersOf(nodeId)) m.cutOff = true;
  }

  /** The node's own fencing: its lockspaces fail everything from now on (its locks stay until crash()). */
  fence(nodeId: string, why = 'lease about to expire'): void {
    const late = this.unaware.filter((m) => m.nodeId === nodeId);
    this.unaware.splice(0, this.unaware.length, ...this.unaware.filter((m) => m.nodeId !== nodeId));
    for (const m of [...this.membersOf(nodeId), ...late]) m.core.fence(new TsmdError('EFENCED', `DLM: node ${nodeId} fenced itself: ${why}`));
  }

  private membersOf(nodeId: string): Member[] {
    const out: Member[] = [];
    for (const s of this.spaces.values()) for (const m of s.members.values()) if (m.nodeId === nodeId) out.push(m);
    return out;
  }

  /** Cut-off members crashed (expired) before they fenced themselves: fence() still reaches them. */
  private readonly unaware: Member[] = [];

  /** Is `nodeId` a member of some lockspace (crashed and left nodes are not)? */
  isMember(nodeId: string): boolean {
    return this.membersOf(nodeId).length > 0;
  }

  /**
   * Node failure: `nodeId` is fenced in every lockspace it is a member of, its locks purged, and
   * the survivors recover (recoverPrep, recoverSlot, recoverDone) before they see any grant.
   */
  crash(nodeId: string): void {
    let found = false;
    for (const s of this.spaces.values()) {
      const m = [...s.members.values()].find((x) => x.nodeId === nodeId);
      if (!m) continue;
      found = true;
      s.members.delete(m.slot);
      // (a node cut off from the lock manager does not hear of it: only its own fence stops it)
      if (!m.cutOff) m.core.fence(new TsmdError('EFENCED', `DLM ${s.name}: node ${nodeId} crashed`));
      else this.unaware.push(m);
      const survivors = this.sorted(s);
      for (const x of survivors) x.core.hold();
      for (const x of survivors) x.ops.recoverPrep?.();
      const touched = this.purgeNode(s, m.inc);
      for (const x of survivors) x.ops.recoverSlot?.(m.slot);
      const slots = this.slots(s);
      for (const x of survivors) x.ops.recoverDone?.(slots, x.slot);
      for (const res of touched) this.notify(s, res);
      for (const x of survivors) x.core.release();
    }
    if (!found) throw new TsmdError('ENOENT', `DLM: node ${nodeId} is not a member of any lockspace`);
  }
}
