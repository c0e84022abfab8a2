/**
 * The DLM conformance suite against the etcd backend and a real etcd (started here on loopback
 * with a temporary data directory), plus what only a real distributed engine can show: a member
 * killed with SIGKILL, an etcd outage shorter than the lease TTL, a partitioned member fencing
 * itself before anyone gets its locks, one transaction per uncontended operation, etcd auth.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { SystemClock } from '../../src/env/clock.js';
import { isTsmdError } from '../../src/errors.js';
import { type Dlm, EtcdDlm, type EtcdDlmOptions, Flag, type Lockspace, Mode, type SlotInfo } from '../../src/cluster/dlm/index.js';
import { EtcdServer, haveEtcd, requireEtcd, requireOpenssl } from '../helpers/etcd.js';
import { prng } from '../helpers/prng.js';
import { repoRoot } from '../helpers/tools.js';
import { type DlmHarness, dlmConformance, MdNode, type Msg } from './dlm-conformance.js';

/** A real etcd runs on real time: the system clock, injected like any other. */
const clock = new SystemClock();
let server: EtcdServer | undefined;
let prefixSeq = 0;

function newPrefix(): string {
  return `tsmdtest/${process.pid}/${++prefixSeq}`;
}

function node(id: string, prefix: string, extra: Partial<EtcdDlmOptions> = {}): EtcdDlm {
  return new EtcdDlm({ clock, nodeId: id, endpoints: [server!.clientUrl], prefix, leaseTtlSec: 3, ...extra });
}

function harness(): Promise<DlmHarness> {
  const prefix = newPrefix();
  const all: EtcdDlm[] = [];
  let n = 0;
  return Promise.resolve({
    nodes: (k) => {
      const out: Dlm[] = [];
      for (let i = 0; i < k; i++) {
        const d = node(`node${++n}`, prefix);
        all.push(d);
        out.push(d);
      }
      return Promise.resolve(out);
    },
    crash: (dlm, ls) => (dlm as EtcdDlm).internals(ls).kill(),
    settle: () => sleep(15),
    sleep: (ms) => sleep(ms),
    sync: (dlm, ls) => (dlm as EtcdDlm).internals(ls).idle(),
    waiting: (dlm, ls, res) => {
      const r = (dlm as EtcdDlm).internals(ls).peek(res);
      return r ? r.convert.length + r.wait.length : 0;
    },
    close: () => {
      for (const d of all) d.close();
      return Promise.resolve();
    },
  });
}

describe('etcd DLM', () => {
  before(async () => {
    if (haveEtcd()) server = await EtcdServer.start();
  });
  after(async () => {
    await server?.cleanup();
  });

  // with etcd absent, the whole suite reports one loud skip (a failure under CI)
  test('etcd is installed', (t) => {
    requireEtcd(t);
  });

  if (haveEtcd()) dlmConformance({ name: 'etcd', make: harness, rounds: 12, shortTimeoutMs: 400, maxSettles: 400 });

  test('etcd: an uncontended lock, conversion and unlock cost exactly one transaction each', async (t) => {
    if (!requireEtcd(t)) return;
    const d = node('one', newPrefix());
    try {
      const ls = await d.join({ name: 'onetxn', lvbLength: 8 });
      const warm = await ls.lock('r', Mode.NL);
      await warm.unlock();
      const count = async (fn: () => Promise<unknown>): Promise<number> => {
        const before = d.stats.calls;
        await fn();
        return d.stats.calls - before;
      };
      const internals = d.internals(ls);
      const lk = await ls.lock('r', Mode.EX, { flags: Flag.VALBLK });
      assert.equal(await count(() => ls.lock('s', Mode.PR)), 1, 'lock');
      // a conversion down completes at once (Linux: no reply awaited) and is applied in one txn
      let applied = false;
      assert.equal(await count(async () => {
        await lk.convert(Mode.CW, { flags: Flag.VALBLK });
        applied = internals.peek('r')!.grant[0]!.gr === Mode.CW;
        await internals.idle();
      }), 1, 'convert down');
      assert.equal(applied, false, 'a conversion down returns before etcd has it');
      assert.equal(await count(() => lk.convert(Mode.EX, { flags: Flag.VALBLK })), 1, 'convert up');
      assert.equal(await count(() => lk.unlock()), 1, 'unlock');
      assert.equal(d.stats.conflicts, 0, 'no conflicts');
      await ls.leave();
    } finally {
      d.close();
    }
  });

  test('etcd: operation logs are checkpointed and their keys deleted; a later joiner starts from the checkpoint with the same state', async (t) => {
    if (!requireEtcd(t)) return;
    const prefix = newPrefix();
    const a = node('gcA', prefix);
    const b = node('gcB', prefix);
    const c = node('gcC', prefix);
    try {
      const la = await a.join({ name: 'gc', lvbLength: 8 });
      const lb = await b.join({ name: 'gc', lvbLength: 8 });
      const held = await lb.lock('r', Mode.CR, { flags: Flag.VALBLK });
      const lk = await la.lock('r', Mode.NL, { flags: Flag.VALBLK });
      const opKeys = async (): Promise<number> => (await a.client.getAll().prefix(`${prefix}/gc/o/`).keys()).length;
      let maxKeys = 0;
      for (let i = 0; i < 150; i++) {
        await lk.convert(Mode.PW, { flags: Flag.VALBLK });
        await lk.convert(Mode.NL, { flags: Flag.VALBLK, lvb: lvbBuf(`v${i}`) });
        if (i % 10 === 9) {
          await a.internals(la).idle();
          maxKeys = Math.max(maxKeys, await opKeys());
        }
      }
      await a.internals(la).idle();
      assert.ok(maxKeys <= 40, `at most ~32 operations stay in etcd per resource (saw ${maxKeys}) after 300 conversions`);
      const ck = await a.client.get(`${prefix}/gc/r/r`).string();
      assert.ok(ck !== null && JSON.parse(ck).at > 0, 'the resource has a checkpoint');
      const lc = await c.join({ name: 'gc', lvbLength: 8 });
      // the joiner replays checkpoint + remaining log to exactly the state the others replayed
      await waitFor(() => JSON.stringify(c.internals(lc).peek('r')) === JSON.stringify(a.internals(la).peek('r')), 5000);
      assert.deepEqual(c.internals(lc).peek('r'), b.internals(lb).peek('r'));
      await rejectsEagain(lc.lock('r', Mode.EX, { flags: Flag.NOQUEUE }));
      const rd = await lc.lock('r', Mode.PR, { flags: Flag.VALBLK });
      assert.equal(rd.lvb!.toString().replace(/\0+$/, ''), 'v149', 'the last LVB written reaches the joiner');
      for (const l of [rd, lk, held]) await l.unlock();
      for (const l of [la, lb, lc]) await l.leave();
    } finally {
      for (const d of [a, b, c]) d.close();
    }
  });

  test('etcd: a member killed with SIGKILL while holding EX: survivors recover within TTL + bound, then get the lock', async (t) => {
    if (!requireEtcd(t)) return;
    const prefix = newPrefix();
    const ttlSec = 2;
    const boundMs = 2500; // etcd checks lease expiry every 500 ms; watch delivery; 2-core slack
    const log: Array<{ who: string; what: string; at: number }> = [];
    const ops = (who: string) => ({
      recoverPrep: () => log.push({ who, what: 'prep', at: performance.now() }),
      recoverSlot: (s: number) => log.push({ who, what: `slot${s}`, at: performance.now() }),
      recoverDone: (_s: readonly SlotInfo[], our: number) => log.push({ who, what: `done${our}`, at: performance.now() }),
    });
    const a = node('survA', prefix, { leaseTtlSec: ttlSec });
    const b = node('survB', prefix, { leaseTtlSec: ttlSec });
    const child = spawn(process.execPath, [join(repoRoot, 'dist/test/cluster/dlm-node-proc.js'), '--dlm-node', server!.clientUrl, prefix, 'kill9', 'res', String(ttlSec)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const la = await a.join({ name: 'kill9', lvbLength: 8, ops: ops('A') });
      const lb = await b.join({ name: 'kill9', lvbLength: 8, ops: ops('B') });
      const victimSlot = await new Promise<number>((resolve, reject) => {
        let out = '';
        child.stdout!.on('data', (buf: Buffer) => {
          out += buf.toString();
          const m = /HELD (\d+)/.exec(out);
          if (m) resolve(Number(m[1]));
        });
        child.on('exit', (code) => reject(new Error(`victim exited early (${code})`)));
        setTimeout(() => reject(new Error('victim did not take its lock')), 15_000).unref();
      });
      await rejectsEagain(la.lock('res', Mode.NL, { flags: Flag.NOQUEUE }).then((l) => l.unlock()).then(() => lb.lock('res', Mode.CR, { flags: Flag.NOQUEUE })));
      let grantedAt = 0;
      const waiter = lb.lock('res', Mode.EX, { flags: Flag.VALBLK, timeoutMs: 20_000 }).then((lk) => {
        grantedAt = performance.now();
        return lk;
      });
      await sleep(100);
      log.length = 0;
      const killedAt = performance.now();
      child.kill('SIGKILL');
      const lk = await waiter;
      await waitFor(() => log.some((l) => l.who === 'A' && l.what.startsWith('done')), 5000);
      for (const who of ['A', 'B']) {
        const mine = log.filter((l) => l.who === who);
        assert.deepEqual(mine.map((l) => l.what), ['prep', `slot${victimSlot}`, `done${who === 'A' ? la.slot : lb.slot}`], `${who}'s recovery callbacks`);
        const slotAt = mine[1]!.at - killedAt;
        assert.ok(slotAt <= ttlSec * 1000 + boundMs, `${who} recovered ${Math.round(slotAt)} ms after the kill (TTL ${ttlSec} s + ${boundMs} ms)`);
        if (who === 'B') {
          assert.ok(grantedAt >= mine[2]!.at, 'the lock is granted after recoverDone');
          assert.ok(grantedAt - killedAt <= ttlSec * 1000 + boundMs, `granted ${Math.round(grantedAt - killedAt)} ms after the kill`);
        }
      }
      assert.equal(lk.valNotValid, true, 'the dead EX holder\'s LVB is flagged not valid');
      await lk.unlock();
      await la.leave();
      await lb.leave();
    } finally {
      child.kill('SIGKILL');
      a.close();
      b.close();
    }
  });

  test('etcd: an etcd outage shorter than the TTL loses no lock', async (t) => {
    if (!requireEtcd(t)) return;
    const prefix = newPrefix();
    const opts = { leaseTtlSec: 6, keepAliveIntervalMs: 400, fenceMarginMs: 1200 };
    const a = node('outA', prefix, opts);
    const b = node('outB', prefix, opts);
    try {
      const la = await a.join({ name: 'outage', lvbLength: 8 });
      const lb = await b.join({ name: 'outage', lvbLength: 8 });
      let fenced = 0;
      la.on('fenced', () => fenced++);
      lb.on('fenced', () => fenced++);
      const ex = await la.lock('r', Mode.EX, { flags: Flag.VALBLK });
      const pr = await lb.lock('p', Mode.PR);
      const kaBefore = a.stats.keepAlives;
      await server!.stop(true); // SIGKILL: the hardest stop
      const during = lb.lock('q', Mode.EX, { timeoutMs: 20_000 }); // issued while etcd is down
      await sleep(1500);
      await server!.startAgain();
      const lq = await during;
      // both locks survived: conflicting requests are refused, the holders still hold
      await rejectsEagain(lb.lock('r', Mode.CR, { flags: Flag.NOQUEUE }));
      await rejectsEagain(la.lock('p', Mode.EX, { flags: Flag.NOQUEUE }));
      await ex.convert(Mode.NL, { flags: Flag.VALBLK, lvb: Buffer.from('survived') });
      const rd = await lb.lock('r', Mode.PR, { flags: Flag.VALBLK });
      assert.equal(rd.lvb!.toString(), 'survived');
      await sleep(2500); // keep-alives resumed: nobody is fenced well past the outage
      assert.equal(fenced, 0);
      assert.ok(a.stats.keepAlives > kaBefore + 2, 'keep-alives resumed');
      for (const l of [ex, pr, lq, rd]) await l.unlock();
      await la.leave();
      await lb.leave();
    } finally {
      a.close();
      b.close();
      if (!server!.running) await server!.startAgain();
    }
  });

  test('etcd: md-cluster message rounds while etcd stalls and restarts: every message once, nobody fenced, replicas identical', async (t) => {
    if (!requireEtcd(t)) return;
    const prefix = newPrefix();
    // a short call deadline turns each stall into ambiguous failures (retried appends)
    const opts = { leaseTtlSec: 8, keepAliveIntervalMs: 500, fenceMarginMs: 1600, callTimeoutMs: 300 };
    const dlms = [0, 1, 2].map((i) => node(`chaos${i}`, prefix, opts));
    try {
      const spaces: Lockspace[] = [];
      for (const d of dlms) spaces.push(await d.join({ name: 'chaos', lvbLength: 64 }));
      let fenced = 0;
      for (const ls of spaces) ls.on('fenced', () => fenced++);
      const nodes = spaces.map((ls, i) => new MdNode(ls, i, { on: false, flags: 0 }));
      for (const n of nodes) await n.join();
      let chaosDone = false;
      const chaos = (async () => {
        // stalls (SIGSTOP) and outages (SIGKILL, restart) between message rounds, all shorter
        // than the lease TTL minus the fencing margin
        for (const step of ['stall 900', 'kill 400', 'stall 600', 'kill 700', 'stall 1200']) {
          await sleep(700);
          const [what, ms] = step.split(' ') as [string, string];
          if (what === 'stall') await server!.pause(Number(ms));
          else {
            await server!.stop(true);
            await sleep(Number(ms));
            await server!.startAgain();
          }
        }
        chaosDone = true;
      })();
      const sent: Msg[] = [];
      let round = 0;
      const rnd = prng(7);
      while (!chaosDone || round < 40) {
        const s = Math.floor(rnd() * 3);
        const seq = round++ * 10 + s;
        sent.push({ from: s, seq });
        await nodes[s]!.send(seq);
      }
      await chaos;
      const deadline = Date.now() + 30_000;
      while (!nodes.every((n, i) => n.received.length >= sent.filter((m) => m.from !== i).length) && Date.now() < deadline) await sleep(20);
      for (const n of nodes) await n.quiesce();
      for (const [i, n] of nodes.entries()) {
        assert.deepEqual(n.errors, []);
        const want = sent.filter((m) => m.from !== i).map((m) => `${m.from}:${m.seq}`).sort();
        assert.deepEqual(n.received.map((m) => `${m.from}:${m.seq}`).sort(), want, `node ${i} got every message exactly once`);
      }
      assert.equal(fenced, 0, 'nobody was fenced');
      assert.ok(dlms.reduce((a, d) => a + d.stats.retries, 0) > 0, 'the stalls made appends retry');
      // every node replayed the same log to the same state
      for (const d of dlms) await d.internals(spaces[dlms.indexOf(d)]!).idle();
      await sleep(200);
      for (const res of ['token', 'message', 'ack']) {
        const states = dlms.map((d, i) => JSON.stringify(d.internals(spaces[i]!).peek(res)));
        assert.equal(states[1], states[0], `${res}: node 1's replica equals node 0's`);
        assert.equal(states[2], states[0], `${res}: node 2's replica equals node 0's`);
      }
      for (const ls of spaces) await ls.leave();
    } finally {
      for (const d of dlms) d.close();
      if (!server!.running) await server!.startAgain();
    }
  });

  test('etcd: a partitioned member is told it is fenced before anyone is granted its locks', async (t) => {
    if (!requireEtcd(t)) return;
    const prefix = newPrefix();
    const p = node('part', prefix, { leaseTtlSec: 2 });
    const q = node('other', prefix, { leaseTtlSec: 2 });
    try {
      const lp = await p.join({ name: 'partition', lvbLength: 8 });
      const lq = await q.join({ name: 'partition', lvbLength: 8 });
      const held = await lp.lock('r', Mode.EX);
      let fencedAt = 0;
      let fenceErr: unknown;
      lp.on('fenced', (e) => {
        fencedAt = performance.now();
        fenceErr = e;
      });
      let grantedAt = 0;
      const waiter = lq.lock('r', Mode.EX, { timeoutMs: 15_000 }).then((lk) => {
        grantedAt = performance.now();
        return lk;
      });
      await sleep(50);
      const cutAt = performance.now();
      p.internals(lp).stopKeepAlive();
      const lk = await waiter;
      assert.ok(fencedAt > 0, 'the partitioned node was told');
      assert.ok(fencedAt < grantedAt, `fenced at +${Math.round(fencedAt - cutAt)} ms, its lock granted to another at +${Math.round(grantedAt - cutAt)} ms`);
      assert.ok(isTsmdError(fenceErr, 'EFENCED'), String(fenceErr));
      assert.equal(lp.fenced, true);
      assert.equal(held.mode, null, 'it no longer believes it holds the lock');
      await assert.rejects(held.convert(Mode.NL), (e: unknown) => isTsmdError(e, 'EFENCED'));
      await assert.rejects(lp.lock('x', Mode.NL), (e: unknown) => isTsmdError(e, 'EFENCED'));
      await lk.unlock();
      await lq.leave();
    } finally {
      p.close();
      q.close();
    }
  });

  test('etcd: a second node with the node id of a live member is refused (EEXIST, naming it) and changes nothing; it joins once the first left', async (t) => {
    if (!requireEtcd(t)) return;
    // two connections, as two daemons started with the same --node-name would have
    const prefix = newPrefix();
    const first = node('twin', prefix);
    const second = node('twin', prefix);
    const other = node('other', prefix);
    try {
      const a = await first.join({ name: 'dup', lvbLength: 8 });
      const lk = await a.lock('r', Mode.EX);
      await assert.rejects(second.join({ name: 'dup', lvbLength: 8 }), (e: unknown) => isTsmdError(e, 'EEXIST') && /node twin is still a member \(slot 1/.test(e.message));
      // the refused join took no slot and disturbed nothing: a third node gets slot 2, the
      // first still holds its lock
      const c = await other.join({ name: 'dup', lvbLength: 8 });
      assert.equal(c.slot, 2);
      assert.deepEqual(c.members().map((m) => [m.nodeId, m.slot]), [['twin', 1], ['other', 2]]);
      assert.equal(lk.mode, Mode.EX);
      await lk.unlock();
      await a.leave();
      const b = await second.join({ name: 'dup', lvbLength: 8 });
      assert.equal(b.slot, 1, 'the name is free again after a clean leave');
      await Promise.all([b.leave(), c.leave()]);
    } finally {
      first.close();
      second.close();
      other.close();
    }
  });

  test('etcd: authentication with etcd\'s user/password; a wrong password is refused clearly', async (t) => {
    if (!requireEtcd(t)) return;
    const authServer = await EtcdServer.start();
    try {
      const admin = new EtcdDlm({ clock, nodeId: 'admin', endpoints: [authServer.clientUrl] }).client;
      await admin.user('root').create('rootpw');
      await admin.user('root').addRole('root');
      await admin.auth.authEnable({});
      admin.close();
      const good = new EtcdDlm({ clock, nodeId: 'authed', endpoints: [authServer.clientUrl], auth: { username: 'root', password: 'rootpw' }, leaseTtlSec: 3 });
      const ls = await good.join({ name: 'auth', lvbLength: 0 });
      const lk = await ls.lock('r', Mode.EX);
      await lk.unlock();
      await ls.leave();
      good.close();
      const bad = new EtcdDlm({ clock, nodeId: 'intruder', endpoints: [authServer.clientUrl], auth: { username: 'root', password: 'wrong' }, leaseTtlSec: 3 });
      await assert.rejects(bad.join({ name: 'auth', lvbLength: 0 }), (e: unknown) => isTsmdError(e, 'EPERM') && /user\/password/.test(e.message));
      bad.close();
    } finally {
      await authServer.cleanup();
    }
  });

  test('etcd: mutual TLS: the DLM works over https (lock, BAST, conversion with LVB, unlock); a client without the CA is refused clearly', async (t) => {
    if (!requireEtcd(t) || !requireOpenssl(t)) return;
    const tlsServer = await EtcdServer.start({ tls: true });
    const dlms: EtcdDlm[] = [];
    try {
      assert.match(tlsServer.clientUrl, /^https:\/\/127\.0\.0\.1:\d+$/);
      const pki = tlsServer.pki!;
      const mk = (id: string, tls?: EtcdDlmOptions['tls']): EtcdDlm => {
        const d = new EtcdDlm({ clock, nodeId: id, endpoints: [tlsServer.clientUrl], prefix: newPrefix(), leaseTtlSec: 3, callTimeoutMs: 3000, tls });
        dlms.push(d);
        return d;
      };
      const prefix = newPrefix();
      const a = new EtcdDlm({ clock, nodeId: 'tlsA', endpoints: [tlsServer.clientUrl], prefix, leaseTtlSec: 3, tls: pki.client });
      const b = new EtcdDlm({ clock, nodeId: 'tlsB', endpoints: [tlsServer.clientUrl], prefix, leaseTtlSec: 3, tls: pki.client });
      dlms.push(a, b);
      const la = await a.join({ name: 'tls', lvbLength: 8 });
      const lb = await b.join({ name: 'tls', lvbLength: 8 });
      const basts: Mode[] = [];
      const ex = await la.lock('r', Mode.EX, { flags: Flag.VALBLK, bast: (m) => basts.push(m) });
      const waiter = lb.lock('r', Mode.PR, { flags: Flag.VALBLK, timeoutMs: 10_000 });
      await waitFor(() => basts.length > 0, 5000);
      assert.deepEqual(basts, [Mode.PR], 'the EX holder is told a PR request is blocked');
      await ex.convert(Mode.NL, { flags: Flag.VALBLK, lvb: lvbBuf('over-tls') });
      const pr = await waiter;
      assert.equal(pr.mode, Mode.PR);
      assert.equal(pr.lvb!.toString(), 'over-tls', 'the LVB written by the down-conversion is read by the grant');
      await pr.unlock();
      await ex.convert(Mode.EX);
      await ex.unlock();
      await la.leave();
      await lb.leave();
      assert.ok(a.stats.txns > 0 && b.stats.txns > 0);

      // no CA: the server's certificate cannot be verified (system roots only)
      const noCa = mk('tlsNoCa');
      await assert.rejects(noCa.join({ name: 'tls', lvbLength: 8 }), (e: unknown) => {
        assert.ok(isTsmdError(e, 'EIO'), String(e));
        assert.match(e.message, /TLS/);
        assert.match(e.message, /certificate/i);
        return true;
      });
      // the CA but no client certificate: etcd (--client-cert-auth) refuses the handshake
      const noCert = mk('tlsNoCert', { ca: pki.client.ca });
      await assert.rejects(noCert.join({ name: 'tls', lvbLength: 8 }), (e: unknown) => {
        assert.ok(isTsmdError(e, 'EIO'), String(e));
        assert.match(e.message, /TLS/);
        return true;
      });
      // plain http to a TLS port fails too
      const plain = new EtcdDlm({ clock, nodeId: 'plain', endpoints: [tlsServer.clientUrl.replace('https', 'http')], prefix: newPrefix(), leaseTtlSec: 3, callTimeoutMs: 3000 });
      dlms.push(plain);
      await assert.rejects(plain.join({ name: 'tls', lvbLength: 8 }), (e: unknown) => isTsmdError(e, 'EIO'));
    } finally {
      for (const d of dlms) d.close();
      await tlsServer.cleanup();
    }
  });

  test('etcd: options are checked', () => {
    assert.throws(() => new EtcdDlm({ clock, nodeId: 'a/b', endpoints: ['x'] }), /node id/);
    assert.throws(() => new EtcdDlm({ clock, nodeId: 'a', endpoints: [] }), /endpoints/);
    assert.throws(() => new EtcdDlm({ clock, nodeId: 'a', endpoints: ['x'], leaseTtlSec: 1 }), /leaseTtlSec/);
    assert.throws(() => new EtcdDlm({ clock, nodeId: 'a', endpoints: ['x'], leaseTtlSec: 2, keepAliveIntervalMs: 900 }), /does not fit/);
  });
});

async function rejectsEagain(p: Promise<unknown>): Promise<void> {
  await assert.rejects(p, (e: unknown) => isTsmdError(e, 'EAGAIN'));
}

function lvbBuf(s: string): Buffer {
  const b = Buffer.alloc(8);
  b.write(s);
  return b;
}

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > ms) assert.fail('condition not reached in time');
    await sleep(20);
  }
}

export type { Lockspace };
