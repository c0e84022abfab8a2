/**
 * One DLM conformance suite, run against every backend (dlm-memory.test.ts, dlm-etcd.test.ts).
 * Expected values are written out from spec/dlm.md here, not taken from src/, so that a wrong
 * table in src/ fails the suite.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isTsmdError } from '../../src/errors.js';
import { type Dlm, Flag, type LockHandle, type Lockspace, Mode, type RecoveryOps, type SlotInfo } from '../../src/cluster/dlm/index.js';
import { prng } from '../helpers/prng.js';

export interface DlmHarness {
  /** n fresh nodes */
  nodes(n: number): Promise<Dlm[]>;
  /** node failure of `dlm` (its lockspace `ls`): locks purged by the DLM, survivors recover */
  crash(dlm: Dlm, ls: Lockspace): Promise<void>;
  /** let pending deliveries (completions, BASTs) happen */
  settle(): Promise<void>;
  /** let `ms` of time pass (manual clock or real time) */
  sleep(ms: number): Promise<void>;
  /** until every operation `dlm` made in `ls` is applied (down-conversions complete before that) */
  sync(dlm: Dlm, ls: Lockspace): Promise<void>;
  /** locks on the convert and wait queues of `resource`, as `ls`'s node knows them */
  waiting(dlm: Dlm, ls: Lockspace, resource: string): number;
  close(): Promise<void>;
}

export interface SuiteOptions {
  name: string;
  make: () => Promise<DlmHarness>;
  /** rounds of the md-cluster message test */
  rounds: number;
  /** a short timeout for the timeout tests (ms) */
  shortTimeoutMs: number;
  /** how many settle() calls `until` may use before failing */
  maxSettles: number;
}

const M = Mode;
const ALL: Mode[] = [M.NL, M.CR, M.CW, M.PR, M.PW, M.EX];
const NAMES = ['NL', 'CR', 'CW', 'PR', 'PW', 'EX'];

/** spec/dlm.md compatibility table, rows = granted, columns = requested */
const SPEC_COMPAT = [
  [1, 1, 1, 1, 1, 1],
  [1, 1, 1, 1, 1, 0],
  [1, 1, 1, 0, 0, 0],
  [1, 1, 0, 1, 0, 0],
  [1, 1, 0, 0, 0, 0],
  [1, 0, 0, 0, 0, 0],
];

/** spec/dlm.md LVB rules: 'R' returned to the caller, 'W' written to the resource, '-' nothing; rows IV,NL..EX */
function specLvb(from: Mode | -1, to: Mode): 'R' | 'W' | '-' {
  if (from === -1 || from === M.NL) return 'R';
  if (from === M.EX) return 'W';
  if (from === M.PW) return to === M.EX ? 'R' : 'W';
  return to >= from ? 'R' : '-'; // up or sideways from CR/CW/PR reads; down does nothing
}

let lsSeq = 0;
function lsName(tag: string): string {
  return `t${process.pid}-${tag}-${++lsSeq}`;
}

function lvbOf(s: string, len = 8): Buffer {
  const b = Buffer.alloc(len);
  b.write(s);
  return b;
}

async function rejectsCode(p: Promise<unknown>, code: string, re?: RegExp): Promise<Error> {
  try {
    await p;
  } catch (e) {
    assert.ok(isTsmdError(e), `expected a TsmdError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return e;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

export interface Msg {
  from: number;
  seq: number;
}

/** One md-cluster node's token/message/ack locks and its send and receive sequences. */
export class MdNode {
  token!: LockHandle;
  message!: LockHandle;
  ack!: LockHandle;
  received: Msg[] = [];
  errors: unknown[] = [];
  private recvChain: Promise<void> = Promise.resolve();
  /** recv_mutex: one receive at a time, none while this node sends */
  private mutex: Promise<void> = Promise.resolve();

  constructor(
    readonly ls: Lockspace,
    readonly idx: number,
    readonly oldProtocol: { on: boolean; flags: number },
  ) {}

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.mutex.then(fn);
    this.mutex = run.then(() => undefined, () => undefined);
    return run;
  }

  async join(): Promise<void> {
    const V = Flag.VALBLK;
    this.message = await this.ls.lock('message', M.NL, { flags: V | Flag.EXPEDITE });
    this.token = await this.ls.lock('token', M.NL, { flags: Flag.EXPEDITE });
    await this.token.convert(M.EX);
    this.ack = await this.ls.lock('ack', M.CR, {
      bast: (mode) => {
        if (mode === M.EX) this.recvChain = this.recvChain.then(() => this.locked(() => this.receive())).catch((e: unknown) => void this.errors.push(e));
      },
    });
    await this.token.convert(M.NL);
  }

  async send(seq: number): Promise<void> {
    const V = Flag.VALBLK;
    await this.token.convert(M.EX);
    await this.locked(async () => {
      await this.message.convert(M.EX, { flags: V });
      this.message.lvb!.fill(0);
      this.message.lvb!.writeUInt32LE(this.idx, 0);
      this.message.lvb!.writeUInt32LE(seq, 4);
      // publish: EX->CW (the old protocol used EX->CR)
      await this.message.convert(this.oldProtocol.on ? M.CR : M.CW, { flags: V });
      await this.ack.convert(M.EX); // granted once every receiver dropped its CR
      await this.ack.convert(M.CR);
      await this.message.convert(M.NL);
    });
    await this.token.convert(M.NL);
  }

  /** Wait until no receive is running or queued (md-cluster stops its recv thread before leaving). */
  async quiesce(): Promise<void> {
    for (;;) {
      const c = this.recvChain;
      await c;
      await this.mutex;
      if (c === this.recvChain) return;
    }
  }

  private async receive(): Promise<void> {
    const V = Flag.VALBLK;
    await this.message.convert(M.CR, { flags: V });
    const m = { from: this.message.lvb!.readUInt32LE(0), seq: this.message.lvb!.readUInt32LE(4) };
    this.received.push(m);
    await this.ack.convert(M.NL); // the acknowledgement
    // barrier: wait until the sender is done (PR vs its CW; the old protocol asked for EX and,
    // like the kernel code of the time, only logged a failure and went on)
    if (this.oldProtocol.on) {
      await this.message.convert(M.EX, { flags: this.oldProtocol.flags }).catch((e: unknown) => void this.errors.push(e));
    } else {
      await this.message.convert(M.PR);
    }
    await this.ack.convert(M.CR); // re-arm while still holding message
    await this.message.convert(M.NL);
  }
}

export function dlmConformance(o: SuiteOptions): void {
  const { name } = o;

  async function withNodes(n: number, fn: (h: DlmHarness, dlms: Dlm[]) => Promise<void>): Promise<void> {
    const h = await o.make();
    try {
      await fn(h, await h.nodes(n));
    } finally {
      await h.close();
    }
  }

  async function until(h: DlmHarness, cond: () => boolean, what: string): Promise<void> {
    for (let i = 0; i < o.maxSettles; i++) {
      if (cond()) return;
      await h.settle();
    }
    assert.ok(cond(), `timed out waiting: ${what}`);
  }

  async function joinAll(dlms: Dlm[], ls: string, lvbLength = 8, ops?: (i: number) => RecoveryOps, maxSlots?: number): Promise<Lockspace[]> {
    const out: Lockspace[] = [];
    for (let i = 0; i < dlms.length; i++) out.push(await dlms[i]!.join({ name: ls, lvbLength, ops: ops?.(i), maxSlots }));
    return out;
  }

  test(`${name}: compatibility matrix (every granted x requested pair)`, async () => {
    await withNodes(2, async (_h, dlms) => {
      const [a, b] = await joinAll(dlms, lsName('compat'));
      for (const g of ALL) {
        for (const r of ALL) {
          const res = `c${g}${r}`;
          const lg = await a!.lock(res, g);
          let granted = true;
          try {
            const lr = await b!.lock(res, r, { flags: Flag.NOQUEUE });
            await lr.unlock();
          } catch (e) {
            assert.ok(isTsmdError(e, 'EAGAIN'), String(e));
            granted = false;
          }
          assert.equal(granted, SPEC_COMPAT[g]![r] === 1, `granted ${NAMES[g]} vs requested ${NAMES[r]}`);
          await lg.unlock();
        }
      }
    });
  });

  test(`${name}: grant order — convert queue before wait queue, FIFO in each, in-place conversions`, async () => {
    await withNodes(3, async (h, dlms) => {
      const [a, b, c] = await joinAll(dlms, lsName('order'));
      const order: string[] = [];
      // A and B hold PR; A converts up to EX (blocked by B) -> convert queue
      const la = await a!.lock('r', M.PR);
      const lb = await b!.lock('r', M.PR);
      const pa = la.convert(M.EX).then(() => order.push('A:EX'));
      await until(h, () => h.waiting(dlms[0]!, a!, 'r') === 1, 'A on the convert queue');
      // a new compatible CR request must wait: the convert queue is not empty (rule 5)
      const pc = c!.lock('r', M.CR).then((lk) => (order.push('C:CR'), lk));
      // a new NL request too (FIFO behind C: the same node's requests are applied in order)
      const pd = c!.lock('r', M.NL).then((lk) => (order.push('D:NL'), lk));
      await until(h, () => h.waiting(dlms[0]!, a!, 'r') === 3, 'C and D queued');
      assert.deepEqual(order, []);
      // a compatible conversion of B (PR->CR) is granted in place, ahead of the convert queue
      await lb.convert(M.CR);
      assert.equal(lb.mode, M.CR);
      await h.settle();
      assert.deepEqual(order, [], 'A still blocked by B\'s CR');
      // B unlocks: A's conversion (convert queue) goes first, then C and D are still blocked by EX?
      await lb.unlock();
      await until(h, () => order.length >= 1, 'A granted EX');
      assert.deepEqual(order.slice(0, 1), ['A:EX']);
      await pa;
      assert.equal(la.mode, M.EX);
      // C (CR) is incompatible with EX; D (NL) is compatible but FIFO behind C
      await h.settle();
      assert.deepEqual(order, ['A:EX']);
      await la.convert(M.NL);
      const lc = await pc;
      const ld = await pd;
      assert.deepEqual(order, ['A:EX', 'C:CR', 'D:NL']);
      await Promise.all([la.unlock(), lc.unlock(), ld.unlock()]);
    });
  });

  test(`${name}: FIFO wait queue and QUECVT`, async () => {
    await withNodes(4, async (h, dlms) => {
      const [a, b, c, d] = await joinAll(dlms, lsName('fifo'));
      const order: string[] = [];
      const la = await a!.lock('r', M.EX);
      const queued = (k: number) => until(h, () => h.waiting(dlms[0]!, a!, 'r') === k, `${k} queued`);
      const pb = b!.lock('r', M.EX).then((lk) => (order.push('B'), lk));
      await queued(1);
      const pc = c!.lock('r', M.CR).then((lk) => (order.push('C'), lk));
      await queued(2);
      const pd = d!.lock('r', M.CR).then((lk) => (order.push('D'), lk));
      await queued(3);
      await la.unlock();
      const lb = await pb;
      await h.settle();
      assert.deepEqual(order, ['B'], 'C and D wait behind B');
      await lb.unlock();
      const [lc, ld] = await Promise.all([pc, pd]);
      // C and D are granted by the same pass; on different nodes, either may hear of it first
      assert.deepEqual([order[0], ...order.slice(1).sort()], ['B', 'C', 'D']);
      // QUECVT: C holds CR, A converts NL->... ; set up a convert queue, then a compatible QUECVT waits
      const la2 = await a!.lock('q', M.PR);
      const lx = await b!.lock('q', M.PR);
      const ly = await c!.lock('q', M.NL);
      const px = lx.convert(M.EX); // blocked by A's PR: convert queue
      await until(h, () => h.waiting(dlms[0]!, a!, 'q') === 1, 'B on the convert queue');
      const got: string[] = [];
      const py = ly.convert(M.CR, { flags: Flag.QUECVT }).then(() => got.push('Y'));
      await until(h, () => h.waiting(dlms[0]!, a!, 'q') === 2, 'C on the convert queue');
      assert.deepEqual(got, [], 'QUECVT queues behind the convert queue even though CR is compatible');
      await la2.unlock();
      await px;
      await lx.convert(M.NL);
      await py;
      assert.equal(ly.mode, M.CR);
      await Promise.all([lc.unlock(), ld.unlock(), lx.unlock(), ly.unlock()]);
    });
  });

  test(`${name}: NOQUEUE fails with EAGAIN at once (request and conversion)`, async () => {
    await withNodes(2, async (_h, dlms) => {
      const [a, b] = await joinAll(dlms, lsName('noq'));
      const la = await a!.lock('r', M.PW);
      await rejectsCode(b!.lock('r', M.PR, { flags: Flag.NOQUEUE }), 'EAGAIN', /PR/);
      const lb = await b!.lock('r', M.CR);
      await rejectsCode(lb.convert(M.EX, { flags: Flag.NOQUEUE }), 'EAGAIN');
      assert.equal(lb.mode, M.CR, 'a refused conversion keeps the granted mode');
      await la.unlock();
      await lb.convert(M.EX, { flags: Flag.NOQUEUE });
      assert.equal(lb.mode, M.EX);
      await lb.unlock();
    });
  });

  test(`${name}: conversions up and down (every pair, uncontended, granted in place)`, async () => {
    await withNodes(1, async (_h, dlms) => {
      const [a] = await joinAll(dlms, lsName('conv'));
      for (const from of ALL) {
        for (const to of ALL) {
          const lk = await a!.lock('r', from);
          await lk.convert(to);
          assert.equal(lk.mode, to, `${NAMES[from]}->${NAMES[to]}`);
          await lk.unlock();
          assert.equal(lk.mode, null);
        }
      }
    });
  });

  test(`${name}: LVB read/write for every transition, unlock writes only from PW/EX`, async () => {
    await withNodes(2, async (h, dlms) => {
      const [a, b] = await joinAll(dlms, lsName('lvb'));
      const V = Flag.VALBLK;
      let n = 0;
      const resourceLvb = async (res: string): Promise<string> => {
        const lk = await b!.lock(res, M.NL, { flags: V });
        const s = lk.lvb!.toString().replace(/\0+$/, '');
        await lk.unlock();
        return s;
      };
      for (const from of [-1, ...ALL] as Array<Mode | -1>) {
        for (const to of ALL) {
          const res = `l${++n}`;
          // the resource LVB starts as "old"
          const w = await b!.lock(res, M.EX, { flags: V });
          await w.convert(M.NL, { flags: V, lvb: lvbOf('old') });
          await w.unlock(); // applied after the conversion (a node's operations on a resource keep their order)
          let lk: LockHandle;
          if (from === -1) {
            lk = await a!.lock(res, to, { flags: V });
            assert.equal(lk.lvb!.toString().replace(/\0+$/, ''), 'old', `new ${NAMES[to]} reads`);
            await lk.unlock();
            continue;
          }
          lk = await a!.lock(res, from); // no VALBLK: our buffer stays as we set it
          lk.lvb!.set(lvbOf('mine'));
          await lk.convert(to, { flags: V });
          await h.sync(dlms[0]!, a!); // a conversion down completes before it is applied
          const ours = lk.lvb!.toString().replace(/\0+$/, '');
          const theirs = await resourceLvb(res); // an NL lock is compatible with anything
          const expect = specLvb(from, to);
          assert.equal(ours, expect === 'R' ? 'old' : 'mine', `${NAMES[from]}->${NAMES[to]}: our LVB buffer`);
          assert.equal(theirs, expect === 'W' ? 'mine' : 'old', `${NAMES[from]}->${NAMES[to]}: the resource LVB`);
          await lk.unlock();
        }
      }
      // unlock from PW/EX writes (with VALBLK), from PR does not
      for (const [mode, writes] of [[M.PR, false], [M.PW, true], [M.EX, true]] as const) {
        const res = `u${mode}`;
        const lk = await a!.lock(res, mode, { flags: V });
        await lk.unlock({ lvb: lvbOf(`by${mode}`) });
        assert.equal(await resourceLvb(res), writes ? `by${mode}` : '', `unlock from ${NAMES[mode]}`);
      }
    });
  });

  test(`${name}: IVVALBLK and VALNOTVALID; a later write clears it`, async () => {
    await withNodes(2, async (h, dlms) => {
      const [a, b] = await joinAll(dlms, lsName('vnv'));
      const V = Flag.VALBLK;
      const la = await a!.lock('r', M.EX, { flags: V });
      await la.convert(M.NL, { flags: V | Flag.IVVALBLK });
      await h.sync(dlms[0]!, a!);
      const lb = await b!.lock('r', M.CR, { flags: V });
      assert.equal(lb.valNotValid, true);
      await lb.unlock();
      await la.convert(M.EX, { flags: V });
      assert.equal(la.valNotValid, true);
      await la.convert(M.NL, { flags: V, lvb: lvbOf('fresh') });
      await h.sync(dlms[0]!, a!);
      const lc = await b!.lock('r', M.CR, { flags: V });
      assert.equal(lc.valNotValid, false);
      assert.equal(lc.lvb!.toString().replace(/\0+$/, ''), 'fresh');
      await Promise.all([la.unlock(), lc.unlock()]);
    });
  });

  test(`${name}: BAST delivery with the blocked mode, once per escalation, PR/CW special case`, async () => {
    await withNodes(3, async (h, dlms) => {
      const [a, b, c] = await joinAll(dlms, lsName('bast'));
      const basts: string[] = [];
      const la = await a!.lock('r', M.PR, { bast: (m) => basts.push(`A:${NAMES[m]}`) });
      const pb = b!.lock('r', M.PW);
      await until(h, () => basts.length >= 1, 'BAST for PW');
      assert.deepEqual(basts, ['A:PW']);
      // a CW request: CW is lower than the PW already signalled, but PR vs CW always BASTs (until EX)
      const pc = c!.lock('r', M.CW);
      await until(h, () => basts.length >= 2, 'BAST for CW');
      assert.deepEqual(basts, ['A:PW', 'A:CW']);
      // an EX request escalates again
      const ctl = new AbortController();
      const pe = c!.lock('r', M.EX, { signal: ctl.signal });
      await until(h, () => basts.length >= 3, 'BAST for EX');
      assert.deepEqual(basts, ['A:PW', 'A:CW', 'A:EX']);
      // a second EX request does not BAST again (lkb_highbast)
      const ctl2 = new AbortController();
      const pe2 = b!.lock('r', M.EX, { signal: ctl2.signal });
      await h.settle();
      await h.settle();
      assert.equal(basts.length, 3);
      ctl.abort();
      ctl2.abort();
      await Promise.all([rejectsCode(pe, 'ECANCELED'), rejectsCode(pe2, 'ECANCELED')]);
      await la.unlock();
      const lb = await pb;
      // CW holder, PR request: BAST(PR) to the CW holder
      const cw: string[] = [];
      await lb.unlock();
      const lcw = await pc;
      const lcw2 = await a!.lock('s', M.CW, { bast: (m) => cw.push(NAMES[m]!) });
      const ppr = b!.lock('s', M.PR);
      await until(h, () => cw.length >= 1, 'BAST PR to CW');
      assert.deepEqual(cw, ['PR']);
      await lcw2.unlock();
      await (await ppr).unlock();
      await lcw.unlock();
    });
  });

  test(`${name}: CANCEL of a pending request and of a pending conversion`, async () => {
    await withNodes(3, async (h, dlms) => {
      const [a, b, c] = await joinAll(dlms, lsName('cancel'));
      const la = await a!.lock('r', M.EX);
      const ctl = new AbortController();
      const pb = b!.lock('r', M.EX, { signal: ctl.signal });
      await until(h, () => h.waiting(dlms[0]!, a!, 'r') === 1, 'B queued');
      let cGot = false;
      const pc = c!.lock('r', M.NL).then((lk) => ((cGot = true), lk)); // NL waits FIFO behind B
      await until(h, () => h.waiting(dlms[0]!, a!, 'r') === 2, 'C queued');
      assert.equal(cGot, false);
      ctl.abort();
      await rejectsCode(pb, 'ECANCELED', /cancel/);
      const lc = await pc; // B gone from the queue: C's NL is granted
      assert.equal(lc.mode, M.NL);
      // pending conversion: cancel puts it back to its granted mode
      const pconv = lc.convert(M.EX);
      await h.settle();
      assert.equal(lc.pendingMode, M.EX);
      assert.equal(await lc.cancel(), true);
      await rejectsCode(pconv, 'ECANCELED');
      assert.equal(lc.mode, M.NL);
      assert.equal(await lc.cancel(), false, 'nothing to cancel on a granted lock');
      await Promise.all([la.unlock(), lc.unlock()]);
    });
  });

  test(`${name}: every wait times out with ETIMEDOUT naming lockspace, resource and mode`, async () => {
    await withNodes(2, async (h, dlms) => {
      const ls = lsName('tmo');
      const [a, b] = await joinAll(dlms, ls);
      const la = await a!.lock('r', M.PR);
      const pb = b!.lock('r', M.EX, { timeoutMs: o.shortTimeoutMs });
      const caught = pb.catch((e: unknown) => e);
      await h.sleep(o.shortTimeoutMs + 50);
      const e = await caught;
      assert.ok(isTsmdError(e, 'ETIMEDOUT'), String(e));
      assert.ok(e.message.includes(ls) && e.message.includes('/r') && e.message.includes('EX'), e.message);
      // the timed-out request is gone: a NOQUEUE CR is granted (no waiter ahead)
      const lb = await b!.lock('r', M.CR, { flags: Flag.NOQUEUE });
      // a timed-out conversion keeps the granted mode
      const pconv = lb.convert(M.EX, { timeoutMs: o.shortTimeoutMs }).catch((x: unknown) => x);
      await h.sleep(o.shortTimeoutMs + 50);
      assert.ok(isTsmdError(await pconv, 'ETIMEDOUT'));
      assert.equal(lb.mode, M.CR);
      await Promise.all([la.unlock(), lb.unlock()]);
    });
  });

  test(`${name}: FORCEUNLOCK of a pending lock; plain unlock of a pending lock is EBUSY`, async () => {
    await withNodes(2, async (h, dlms) => {
      const [a, b] = await joinAll(dlms, lsName('force'));
      const la = await a!.lock('r', M.EX);
      const lb = await b!.lock('r', M.NL);
      const pconv = lb.convert(M.PW).catch((e: unknown) => e);
      await h.settle();
      await rejectsCode(lb.unlock(), 'EBUSY', /FORCEUNLOCK/);
      await lb.unlock({ flags: Flag.FORCEUNLOCK });
      assert.ok(isTsmdError(await pconv, 'ECANCELED'));
      assert.equal(lb.mode, null);
      await la.unlock();
    });
  });

  test(`${name}: while an unlock is in progress, a conversion (down or up) or a second unlock is EBUSY and nothing else happens`, async () => {
    await withNodes(2, async (_h, dlms) => {
      const [a, b] = await joinAll(dlms, lsName('unlk'), 8);
      let fenced = 0;
      a!.on('fenced', () => fenced++);
      const V = Flag.VALBLK;
      const la = await a!.lock('r', M.PW, { flags: V, lvb: lvbOf('before') });
      const u = la.unlock({ flags: V, lvb: lvbOf('unlocked') });
      // a down-conversion completes at once on some backends; issued after the unlock it would be
      // ordered behind it and find no lock: refused here instead
      const tries = [la.convert(M.NL, { flags: V }), la.convert(M.EX), la.unlock()]; // before any await
      await rejectsCode(tries[0]!, 'EBUSY', /unlock is in progress/);
      await rejectsCode(tries[1]!, 'EBUSY', /unlock is in progress/);
      await rejectsCode(tries[2]!, 'EBUSY', /already being unlocked/);
      await u;
      assert.equal(la.mode, null);
      await rejectsCode(la.convert(M.NL), 'ENOENT', /not held/);
      const lb = await b!.lock('r', M.EX, { flags: V });
      assert.equal(lb.lvb!.toString().replace(/\0+$/, ''), 'unlocked', 'the unlock wrote the LVB, nothing after it');
      await lb.unlock();
      assert.equal(fenced, 0);
      // leave() while the caller's own unlock is still under way waits for it
      const lc = await a!.lock('s', M.EX);
      const uc = lc.unlock();
      await a!.leave();
      await uc;
      assert.equal(fenced, 0);
    });
  });

  test(`${name}: conversion deadlock: EDEADLK at once, or demotion with CONVDEADLK`, async () => {
    await withNodes(2, async (h, dlms) => {
      const [a, b] = await joinAll(dlms, lsName('dlk'));
      const la = await a!.lock('r', M.CR);
      const lb = await b!.lock('r', M.CR);
      const pa = la.convert(M.EX);
      await until(h, () => h.waiting(dlms[0]!, a!, 'r') === 1, 'A on the convert queue');
      await rejectsCode(lb.convert(M.EX), 'EDEADLK');
      assert.equal(lb.mode, M.CR);
      // CONVDEADLK: B's granted mode is demoted to NL, which lets A go; B waits behind it
      const pb = lb.convert(M.EX, { flags: Flag.CONVDEADLK });
      await pa;
      assert.equal(la.mode, M.EX);
      await la.unlock();
      await pb;
      assert.equal(lb.mode, M.EX);
      await lb.unlock();
    });
  });

  test(`${name}: slots are 1-based, reused after a leave, bounded by maxSlots`, async () => {
    await withNodes(4, async (_h, dlms) => {
      const ls = lsName('slots');
      const spaces = await joinAll(dlms.slice(0, 3), ls, 8, undefined, 3);
      assert.deepEqual(spaces.map((s) => s.slot), [1, 2, 3]);
      await rejectsCode(dlms[3]!.join({ name: ls, lvbLength: 8, maxSlots: 3 }), 'ENOSPC', /3 slots/);
      await spaces[1]!.leave();
      const d = await dlms[3]!.join({ name: ls, lvbLength: 8, maxSlots: 3 });
      assert.equal(d.slot, 2, 'the freed slot is reused');
      assert.deepEqual(d.members().map((m) => m.slot), [1, 2, 3]);
      await rejectsCode(dlms[0]!.join({ name: ls, lvbLength: 8 }), 'EEXIST');
      await rejectsCode(dlms[1]!.join({ name: ls, lvbLength: 16, maxSlots: 3 }), 'EINVAL', /LVB length/);
      await Promise.all([spaces[0]!.leave(), spaces[2]!.leave(), d.leave()]);
    });
  });

  test(`${name}: crash of a holder: recovery callbacks on survivors, its locks gone, LVB not valid`, async () => {
    await withNodes(3, async (h, dlms) => {
      const ls = lsName('crash');
      const log: string[] = [];
      const ops = (i: number): RecoveryOps => ({
        recoverPrep: () => log.push(`${i}:prep`),
        recoverSlot: (s) => log.push(`${i}:slot${s}`),
        recoverDone: (slots: readonly SlotInfo[], our) => log.push(`${i}:done${our}:${slots.map((x) => x.slot).join(',')}`),
      });
      const [a, b, c] = await joinAll(dlms, ls, 8, ops);
      await until(h, () => [a, b, c].every((s) => s!.members().length === 3) && log.filter((l) => l.includes('done')).length === 6, 'everyone saw every join');
      log.length = 0;
      const V = Flag.VALBLK;
      const la = await a!.lock('r', M.PW, { flags: V });
      const la2 = await a!.lock('q', M.CR);
      const pb = b!.lock('r', M.EX, { flags: V }).then((lk) => (log.push('1:granted'), lk));
      const lc = await c!.lock('q', M.CR);
      let fenced = false;
      a!.on('fenced', () => (fenced = true));
      await until(h, () => h.waiting(dlms[0]!, a!, 'r') === 1, 'B queued');
      await h.crash(dlms[0]!, a!);
      const lb = await pb;
      await until(h, () => log.includes('2:done3:2,3'), 'recovery on node 2');
      assert.equal(lb.mode, M.EX);
      assert.equal(lb.valNotValid, true, 'the dead node held PW: LVB not valid');
      assert.equal(fenced, true);
      assert.equal(la.mode, null);
      assert.equal(la2.mode, null);
      const mine = (i: number) => log.filter((l) => l.startsWith(`${i}:`));
      assert.deepEqual(mine(1), ['1:prep', '1:slot1', '1:done2:2,3', '1:granted'], 'prep, slot, done, then the grant');
      assert.deepEqual(mine(2), ['2:prep', '2:slot1', '2:done3:2,3']);
      await rejectsCode(a!.lock('z', M.NL), 'EFENCED');
      // the dead node's CR is gone: EX on q needs only C's CR to go
      await lc.unlock();
      const lq = await b!.lock('q', M.EX, { flags: Flag.NOQUEUE });
      await Promise.all([lq.unlock(), lb.unlock()]);
      // the slot is free again
      assert.deepEqual(b!.members().map((m) => m.slot), [2, 3]);
    });
  });

  test(`${name}: bad input gets clear errors`, async () => {
    await withNodes(1, async (_h, dlms) => {
      const d = dlms[0]!;
      for (const bad of ['', 'a/b', 'a\0b', 'x'.repeat(65), 'a b', 'é']) await rejectsCode(d.join({ name: bad, lvbLength: 8 }), 'EINVAL', /lockspace name/);
      await rejectsCode(d.join({ name: lsName('bad'), lvbLength: 12 }), 'EINVAL', /multiple of 8/);
      const ls = await d.join({ name: lsName('bad'), lvbLength: 8 });
      await rejectsCode(ls.lock('r', 7 as Mode), 'EINVAL', /unknown lock mode/);
      await rejectsCode(ls.lock('r', 'EX' as unknown as Mode), 'EINVAL', /unknown lock mode/);
      await rejectsCode(ls.lock('r', -1 as Mode), 'EINVAL', /unknown lock mode/);
      await rejectsCode(ls.lock('a/b', M.NL), 'EINVAL', /resource name/);
      await rejectsCode(ls.lock('r', M.EX, { flags: Flag.VALBLK, lvb: Buffer.alloc(7) }), 'EINVAL', /7 bytes.*8/);
      await rejectsCode(ls.lock('r', M.EX, { flags: Flag.PERSISTENT }), 'EINVAL', /not supported/);
      await rejectsCode(ls.lock('r', M.PR, { flags: Flag.EXPEDITE }), 'EINVAL', /EXPEDITE/);
      await rejectsCode(ls.lock('r', M.EX, { timeoutMs: -5 }), 'EINVAL', /timeoutMs/);
      const lk = await ls.lock('r', M.EX);
      await rejectsCode(lk.convert(M.NL, { flags: Flag.QUECVT }), 'EINVAL', /illegal conversion EX->NL/);
      await rejectsCode(lk.convert(9 as Mode), 'EINVAL', /unknown lock mode/);
      await rejectsCode(lk.unlock({ lvb: Buffer.alloc(16) }), 'EINVAL', /16 bytes/);
      await rejectsCode(lk.unlock({ flags: Flag.CANCEL }), 'EINVAL', /cancel/);
      await lk.unlock();
      await rejectsCode(lk.unlock(), 'ENOENT', /not held/);
      await rejectsCode(lk.convert(M.PR), 'ENOENT', /not held/);
      const noLvb = await d.join({ name: lsName('nolvb'), lvbLength: 0 });
      await rejectsCode(noLvb.lock('r', M.EX, { flags: Flag.VALBLK }), 'EINVAL', /without LVBs/);
      await noLvb.leave();
      await ls.leave();
      await rejectsCode(ls.lock('r', M.NL), 'ENODEV', /left/);
    });
  });

  // --- md-cluster's message round (spec/md-cluster-protocol.md §3.3, §3.4) ---------------------

  test(`${name}: md-cluster message round, 3 nodes, random senders: every receiver gets every message once`, async () => {
    await withNodes(3, async (h, dlms) => {
      const spaces = await joinAll(dlms, lsName('msg'), 64);
      const nodes = spaces.map((ls, i) => new MdNode(ls, i, { on: false, flags: 0 }));
      for (const n of nodes) await n.join();
      const rnd = prng(0x5eed + o.rounds);
      const sent: Msg[] = [];
      for (let round = 0; round < o.rounds; round++) {
        // one or two senders at once: the token serialises them
        const k = rnd() < 0.3 ? 2 : 1;
        const senders = new Set<number>();
        while (senders.size < k) senders.add(Math.floor(rnd() * 3));
        await Promise.all([...senders].map((s) => {
          const seq = round * 10 + s;
          sent.push({ from: s, seq });
          return nodes[s]!.send(seq);
        }));
      }
      await until(h, () => nodes.every((n, i) => n.received.length === sent.filter((m) => m.from !== i).length), 'all messages received');
      for (const n of nodes) await n.quiesce(); // a receiver acknowledges after it recorded the message
      for (const [i, n] of nodes.entries()) {
        assert.deepEqual(n.errors, []);
        const want = sent.filter((m) => m.from !== i).map((m) => `${m.from}:${m.seq}`).sort();
        assert.deepEqual(n.received.map((m) => `${m.from}:${m.seq}`).sort(), want, `node ${i} got every message exactly once`);
      }
      for (const ls of spaces) await ls.leave();
    });
  });

  for (const variant of ['EDEADLK', 'ETIMEDOUT'] as const) {
    test(`${name}: the historical 3-node deadlock: receivers converting message CR->EX (${variant === 'EDEADLK' ? 'DLM detects the conversion deadlock' : 'NODLCKWT: detected by timeout'})`, async () => {
      await withNodes(3, async (h, dlms) => {
        const ls = lsName(`dead${variant}`);
        const spaces: Lockspace[] = [];
        for (const d of dlms) spaces.push(await d.join({ name: ls, lvbLength: 64, timeoutMs: o.shortTimeoutMs }));
        const flags = variant === 'ETIMEDOUT' ? Flag.NODLCKWT : 0;
        const nodes = spaces.map((s, i) => new MdNode(s, i, { on: true, flags }));
        for (const n of nodes) await n.join();
        const send = nodes[0]!.send(1).catch((e: unknown) => e);
        await until(h, () => nodes[1]!.received.length === 1 && nodes[2]!.received.length === 1, 'both receivers read the message');
        await h.sleep(o.shortTimeoutMs + 100);
        // EDEADLK: the second converter is refused at once (the first then gets through after it).
        // NODLCKWT: both wait for each other until a timeout breaks the cycle (the one that times
        // out first releases its CR afterwards, which may let the other through).
        await until(h, () => nodes[1]!.errors.length + nodes[2]!.errors.length >= 1, 'receivers fail');
        await h.settle();
        const errs = [...nodes[1]!.errors, ...nodes[2]!.errors];
        if (variant === 'EDEADLK') assert.equal(errs.length, 1, errs.map(String).join('\n'));
        assert.ok(errs.every((e) => isTsmdError(e, variant)), errs.map(String).join('\n'));
        assert.equal(await send, undefined, 'the sender itself completes: both receivers acked before their barrier');
        for (const s of spaces) if (!s.fenced) await s.leave().catch(() => undefined);
      });
    });
  }
}
