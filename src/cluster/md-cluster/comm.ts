/**
 * md-cluster's communication channel: the token / message / ack locks
 * (shared/spec/md-cluster-protocol.md §3; Linux md-cluster.c lock_comm, __sendmsg, recv_daemon).
 *
 * A round: the sender takes `token` EX (one sender cluster-wide), `message` EX, writes the
 * message into its LVB and converts EX→CW (publishing it), then converts `ack` CR→EX: every
 * other node holds ack CR, so that request blocks and the DLM sends each of them a BAST(EX).
 * A receiver reads the message with message NL→CR, processes it, drops ack CR→NL (the
 * acknowledgement), waits with message CR→PR until the sender is done (PR is incompatible with
 * the sender's CW, compatible with the other receivers' PR), re-arms ack NL→CR while still
 * holding PR (so the next sender, who needs message EX, cannot start before every receiver is
 * re-armed: no broadcast can be missed) and drops message to NL.
 *
 * The historical 3-node deadlock (spec §5 #1: CR→EX receivers deadlock each other) is why
 * receivers wait with PR and the sender holds CW; `receiverBarrier` keeps the broken variant
 * only so that a regression test (test/cluster/md-cluster.test.ts) can show it deadlocking.
 *
 * Locally: one sender at a time (SEND_LOCK, a FIFO mutex), and never receiving while this node
 * holds the token (recv_mutex, taken by a sender right after the token). Every DLM wait is
 * bounded by the lockspace's timeout (30 s by default): a round that cannot complete fails with
 * ETIMEDOUT rather than hanging the cluster (Linux since 2024).
 */
import { assert, TsmdError } from '../../errors.js';
import { KeyedLocks } from '../../util/async.js';
import { Flag, type LockHandle, type Lockspace, Mode } from '../dlm/types.js';
import { type ClusterMsg, decodeMsg, encodeMsg, msgTypeName } from './message.js';

export interface CommOptions {
  /** this node's 0-based md slot (known after the join) */
  slot: () => number;
  /** process a received message; a rejection withholds the ack (the sender then times out) */
  receive: (msg: ClusterMsg) => Promise<void>;
  log: (msg: string, level?: 'info' | 'warn' | 'error') => void;
  /**
   * How receivers wait for the sender to finish: 'PR' (Linux since 2016) or 'EX', the
   * original protocol that deadlocks with two or more receivers (regression test only).
   */
  receiverBarrier?: 'PR' | 'EX';
}

/** Counters for tests and benchmarks. */
export interface CommStats {
  sent: number;
  received: number;
  /** receive rounds that failed (no ack given) */
  receiveErrors: number;
}

export class CommChannel {
  private token: LockHandle | null = null;
  private message: LockHandle | null = null;
  private ack: LockHandle | null = null;
  /** SEND_LOCK: one local sender */
  private readonly sendLock = new KeyedLocks();
  /** recv_mutex: one receive at a time, none while this node sends */
  private readonly recvLock = new KeyedLocks();
  private sendRelease: (() => void) | null = null;
  private recvRelease: (() => void) | null = null;
  /** ALREADY_IN_CLUSTER: bitmaps loaded, receiving enabled */
  private ready = false;
  /** PENDING_RECV_EVENT: a BAST came before `ready` */
  private pendingRecv = 0;
  private receiving: Promise<void> | null = null;
  private closed = false;
  readonly stats: CommStats = { sent: 0, received: 0, receiveErrors: 0 };

  constructor(
    private readonly ls: Lockspace,
    private readonly opts: CommOptions,
  ) {}

  /**
   * join() steps 4–6: the wrappers at NL, then ack CR taken under token EX, so that no
   * broadcast is in flight while this node starts to take part (spec §5 #2).
   */
  async start(): Promise<void> {
    this.message = await this.ls.lock('message', Mode.NL, { flags: Flag.VALBLK | Flag.EXPEDITE });
    this.token = await this.ls.lock('token', Mode.NL, { flags: Flag.EXPEDITE });
    try {
      await this.token.convert(Mode.EX);
    } catch (e) {
      throw new TsmdError('EAGAIN', `md-cluster: cannot join the cluster to avoid a lock issue: token: ${(e as Error).message}`);
    }
    try {
      this.ack = await this.ls.lock('ack', Mode.CR, { bast: (m) => this.onAckBast(m) });
    } finally {
      await this.token.convert(Mode.NL);
    }
  }

  /** load_bitmaps' last step: receive from now on, and replay a BAST that came early. */
  enableReceive(): void {
    this.ready = true;
    if (this.pendingRecv > 0) this.kickReceive();
  }

  /** ack_bast: only a request for EX means a message is waiting. */
  private onAckBast(mode: Mode): void {
    if (mode !== Mode.EX || this.closed) return;
    this.pendingRecv++;
    if (this.ready) this.kickReceive();
  }

  private kickReceive(): void {
    if (this.receiving) return;
    this.receiving = (async () => {
      while (this.pendingRecv > 0 && !this.closed && !this.ls.fenced) {
        this.pendingRecv--;
        await this.receiveOne().catch((e: unknown) => {
          this.stats.receiveErrors++;
          if (!this.closed) this.opts.log(`md-cluster: receive failed: ${(e as Error).message}`, 'error');
        });
      }
    })().finally(() => {
      this.receiving = null;
      if (this.pendingRecv > 0 && this.ready && !this.closed) this.kickReceive();
    });
  }

  /** recv_daemon: one message, spec §3.4. */
  private async receiveOne(): Promise<void> {
    const msgLk = this.message!;
    const ack = this.ack!;
    const release = await this.recvLock.acquire([0]);
    this.recvRelease = release;
    try {
      await msgLk.convert(Mode.CR, { flags: Flag.VALBLK });
      const msg = decodeMsg(msgLk.lvb!);
      let ok = true;
      try {
        await this.process(msg);
        this.stats.received++;
      } catch (e) {
        ok = false;
        this.stats.receiveErrors++;
        this.opts.log(`md-cluster: ${msgTypeName(msg.type)} from slot ${msg.slot} not processed, not acknowledged: ${(e as Error).message}`, 'error');
      }
      if (ok) {
        await ack.convert(Mode.NL);
        const barrier = this.opts.receiverBarrier === 'EX' ? Mode.EX : Mode.PR;
        await msgLk.convert(barrier);
        await ack.convert(Mode.CR);
      }
    } finally {
      await msgLk.convert(Mode.NL).catch(() => {});
      this.recvRelease = null;
      release();
    }
  }

  private async process(msg: ClusterMsg): Promise<void> {
    // a node never receives its own message (md: WARN and reject)
    if (msg.slot === this.opts.slot()) throw new TsmdError('EINVAL', `md-cluster: received our own message (slot ${msg.slot})`);
    await this.opts.receive(msg);
  }

  /**
   * lock_comm: the local send lock, then token EX and the receive mutex. The returned function
   * is unlock_comm. Rejects (releasing what it took) if the token cannot be had in time.
   */
  async lockComm(): Promise<() => Promise<void>> {
    assert(this.token !== null, 'lock_comm before join');
    const sendRelease = await this.sendLock.acquire([0]);
    try {
      await this.token.convert(Mode.EX);
    } catch (e) {
      sendRelease();
      throw new TsmdError((e as TsmdError).code === 'EFENCED' ? 'EFENCED' : 'ETIMEDOUT', `md-cluster: cannot take the token: ${(e as Error).message}`);
    }
    const recvRelease = await this.recvLock.acquire([0]);
    this.sendRelease = sendRelease;
    let done = false;
    return async () => {
      assert(!done, 'unlock_comm once per lock_comm');
      done = true;
      recvRelease();
      try {
        await this.token!.convert(Mode.NL);
      } finally {
        this.sendRelease = null;
        sendRelease();
      }
    };
  }

  /** Is the token held by this node (a sender is between lock_comm and unlock_comm)? */
  get holdsToken(): boolean {
    return this.token?.mode === Mode.EX;
  }

  /** __sendmsg: one round with the token held (spec §3.3). Resolves when every node acked. */
  async sendLocked(msg: ClusterMsg): Promise<void> {
    assert(this.token?.mode === Mode.EX, '__sendmsg with the token held');
    const msgLk = this.message!;
    const ack = this.ack!;
    msg.slot = this.opts.slot();
    await msgLk.convert(Mode.EX);
    let err: unknown = null;
    try {
      msgLk.lvb!.set(encodeMsg(msg));
      await msgLk.convert(Mode.CW, { flags: Flag.VALBLK });
      // blocks until every other node dropped its ack CR: they all processed the message
      await ack.convert(Mode.EX);
      await ack.convert(Mode.CR);
      this.stats.sent++;
    } catch (e) {
      err = e;
    }
    // the message is released whatever happened (md retries until it succeeds)
    for (let i = 0; i < 3; i++) {
      try {
        await msgLk.convert(Mode.NL);
        break;
      } catch (e) {
        if (this.ls.fenced || (e as TsmdError).code === 'EFENCED') break;
      }
    }
    if (err) {
      const code = (err as TsmdError).code === 'EFENCED' ? 'EFENCED' : 'ETIMEDOUT';
      throw new TsmdError(code, `md-cluster: ${msgTypeName(msg.type)} not acknowledged by every node: ${(err as Error).message}`);
    }
  }

  /** sendmsg: lock_comm + __sendmsg + unlock_comm. */
  async send(msg: ClusterMsg): Promise<void> {
    const unlock = await this.lockComm();
    try {
      await this.sendLocked(msg);
    } finally {
      await unlock().catch(() => {});
    }
  }

  /** Stop receiving (leave); the DLM lockspace release frees the locks. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.receiving) await this.receiving.catch(() => {});
  }
}
