/**
 * DLM benchmark.
 *
 * etcd backend (against its own etcd on loopback with a temporary data dir): p50/p99 of a raw etcd
 * put and a raw transaction (compare + put, the shape of one DLM operation) measured in the same
 * run, then an uncontended lock, conversion and unlock, with their ratio to the raw transaction
 * (target <= 1.2); then md-cluster's full 3-node message round (token EX, message EX, LVB,
 * message CW, ack EX with the receivers' CR->NL acks and PR barrier, re-arm) with the number of
 * sequential etcd round trips on its critical path, counted by the Lamport clock the etcd backend
 * keeps in every logged operation (each carries what its writer had seen plus one) (target <= 10),
 * and the operation keys left in etcd afterwards (checkpoints delete the applied ones).
 *
 * In-memory backend: uncontended lock/unlock pairs per second (target >= 200k).
 *
 * Run: node dist/bench/dlm.js [--quick]
 */
import { pathToFileURL } from 'node:url';
import { EtcdDlm, Flag, type LockHandle, type Lockspace, MemoryDlmCluster, Mode } from '../src/cluster/dlm/index.js';
import { SystemClock } from '../src/env/clock.js';
import { EtcdServer } from '../test/helpers/etcd.js';

const quick = process.argv.includes('--quick');
/** The benchmark measures real time: the system clock, injected (the DLM has no default). */
const clock = new SystemClock();

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

function fmt(ms: number): string {
  return `${ms.toFixed(2)} ms`;
}

async function time(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

function row(name: string, xs: number[], base?: number): string {
  const p50 = pct(xs, 50);
  const ratio = base ? `  ${(p50 / base).toFixed(2)}x raw txn` : '';
  return `${name.padEnd(34)} p50 ${fmt(p50).padStart(10)}  p99 ${fmt(pct(xs, 99)).padStart(10)}${ratio}`;
}

/** md-cluster's send and receive sequences (spec/md-cluster-protocol.md §3.3, §3.4). */
class MdNode {
  token!: LockHandle;
  message!: LockHandle;
  ack!: LockHandle;
  received = 0;
  private chain: Promise<void> = Promise.resolve();
  busy = 0;

  constructor(readonly ls: Lockspace) {}

  async join(): Promise<void> {
    this.message = await this.ls.lock('message', Mode.NL, { flags: Flag.VALBLK | Flag.EXPEDITE });
    this.token = await this.ls.lock('token', Mode.NL, { flags: Flag.EXPEDITE });
    await this.token.convert(Mode.EX);
    this.ack = await this.ls.lock('ack', Mode.CR, {
      bast: (m) => {
        if (m !== Mode.EX) return;
        this.busy++;
        this.chain = this.chain.then(() => this.receive()).finally(() => this.busy--);
      },
    });
    await this.token.convert(Mode.NL);
  }

  async send(seq: number): Promise<void> {
    await this.token.convert(Mode.EX);
    await this.message.convert(Mode.EX, { flags: Flag.VALBLK });
    this.message.lvb!.writeUInt32LE(seq, 0);
    await this.message.convert(Mode.CW, { flags: Flag.VALBLK });
    await this.ack.convert(Mode.EX);
    await this.ack.convert(Mode.CR);
    await this.message.convert(Mode.NL);
    await this.token.convert(Mode.NL);
  }

  private async receive(): Promise<void> {
    await this.message.convert(Mode.CR, { flags: Flag.VALBLK });
    this.received++;
    await this.ack.convert(Mode.NL);
    await this.message.convert(Mode.PR);
    await this.ack.convert(Mode.CR);
    await this.message.convert(Mode.NL);
  }
}

async function benchEtcd(): Promise<string[]> {
  const out: string[] = [];
  const server = await EtcdServer.start();
  const n = quick ? 60 : 300;
  const prefix = `bench/${process.pid}`;
  const dlms: EtcdDlm[] = [];
  try {
    const mk = (id: string): EtcdDlm => {
      const d = new EtcdDlm({ clock, nodeId: id, endpoints: [server.clientUrl], prefix, leaseTtlSec: 10 });
      dlms.push(d);
      return d;
    };
    const a = mk('a');
    const kv = a.client.kv;
    const key = Buffer.from(`${prefix}/raw`);
    await kv.put({ key, value: Buffer.from('x') });
    const put: number[] = [];
    const txn: number[] = [];
    const txn2: number[] = [];
    const guard = Buffer.from(`${prefix}/guard`);
    const guardRev = (await kv.put({ key: guard, value: Buffer.from('g') })).header.revision;
    const big = Buffer.alloc(400, 'x'); // about the size of a resource record with three locks and an LVB
    for (let i = 0; i < 30; i++) await kv.put({ key, value: Buffer.from(String(i)) }); // warm-up
    let rev = (await kv.range({ key })).kvs[0]!.mod_revision;
    for (let i = 0; i < n; i++) {
      put.push(await time(() => kv.put({ key, value: Buffer.from(`v${i}`) })));
      rev = (await kv.range({ key })).kvs[0]!.mod_revision;
      txn.push(await time(async () => {
        const r = await kv.txn({
          compare: [{ key, target: 'Mod', result: 'Equal', mod_revision: rev }],
          success: [{ request_put: { key, value: Buffer.from(`t${i}`) } }],
          failure: [{ request_range: { key } }],
        });
        rev = r.header.revision;
      }));
      // the DLM's shape: compare the resource's mod revision and our member key's create revision
      txn2.push(await time(async () => {
        const r = await kv.txn({
          compare: [
            { key, target: 'Mod', result: 'Equal', mod_revision: rev },
            { key: guard, target: 'Create', result: 'Equal', create_revision: guardRev },
          ],
          success: [{ request_put: { key, value: big } }],
          failure: [{ request_range: { key } }, { request_range: { key: guard } }],
        });
        rev = r.header.revision;
      }));
    }
    const txnP50 = pct(txn, 50);
    out.push(`etcd ${server.clientUrl}, ${n} samples each; ratios are p50 / p50 of the raw txn`);
    out.push(row('raw etcd put', put));
    out.push(row('raw etcd txn (compare + put)', txn, txnP50));
    out.push(row('raw etcd txn, DLM shape (2 cmp, 400 B)', txn2, txnP50));

    const ls = await a.join({ name: 'bench', lvbLength: 64 });
    const lock: number[] = [];
    const up: number[] = [];
    const downDone: number[] = [];
    const downApplied: number[] = [];
    const unlock: number[] = [];
    const internals = a.internals(ls);
    let callsPerOp = 0;
    const fast0 = a.stats.fastReplays;
    const txns0 = a.stats.txns;
    for (let i = 0; i < n + 20; i++) {
      const before = a.stats.calls;
      let lk!: LockHandle;
      const tl = await time(async () => (lk = await ls.lock('r', Mode.PR, { flags: Flag.VALBLK })));
      const tu1 = await time(() => lk.convert(Mode.EX, { flags: Flag.VALBLK }));
      const t0 = performance.now();
      await lk.convert(Mode.NL, { flags: Flag.VALBLK });
      const td = performance.now() - t0;
      await internals.idle();
      const ta = performance.now() - t0;
      const tu = await time(() => lk.unlock());
      if (i < 20) continue; // warm-up
      lock.push(tl);
      up.push(tu1);
      downDone.push(td);
      downApplied.push(ta);
      unlock.push(tu);
      callsPerOp = Math.max(callsPerOp, (a.stats.calls - before) / 4);
    }
    out.push(row('DLM uncontended lock (PR)', lock, txnP50));
    out.push(row('DLM conversion up (PR->EX)', up, txnP50));
    out.push(row('DLM conversion down (EX->NL) returns', downDone));
    out.push(row('  ... applied in etcd', downApplied, txnP50));
    out.push(row('DLM unlock', unlock, txnP50));
    out.push(`  etcd calls per operation (max over samples): ${callsPerOp}; results replayed from the operation's own transaction: ${a.stats.fastReplays - fast0} of ${a.stats.txns - txns0}`);
    const worst = Math.max(pct(lock, 50), pct(up, 50), pct(downApplied, 50)) / txnP50;
    out.push(`  target: lock/conversion p50 <= 1.2x raw txn p50: ${worst <= 1.2 ? 'MET' : 'NOT MET'} (worst ${worst.toFixed(2)}x)`);
    await ls.leave();

    // 3-node message round
    const nodes: MdNode[] = [];
    const spaces: Lockspace[] = [];
    const ds = [mk('n1'), mk('n2'), mk('n3')];
    for (const d of ds) spaces.push(await d.join({ name: 'round', lvbLength: 64 }));
    for (const s of spaces) nodes.push(new MdNode(s));
    for (const m of nodes) await m.join();
    const rounds = quick ? 10 : 40;
    const lat: number[] = [];
    const rts: number[] = [];
    const txns: number[] = [];
    const conflicts: number[] = [];
    const checkpoints: number[] = [];
    let seed = 12345;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000);
    const idle = async (): Promise<void> => {
      while (nodes.some((m) => m.busy > 0)) await new Promise((r) => setTimeout(r, 1));
    };
    for (let r = 0; r < rounds + 3; r++) {
      await idle();
      await new Promise((res) => setTimeout(res, 20)); // let every watch deliver
      const rt0 = Math.max(...spaces.map((s, i) => ds[i]!.internals(s).roundTrips));
      const tx0 = ds.reduce((acc, d) => acc + d.stats.txns, 0);
      const cf0 = ds.reduce((acc, d) => acc + d.stats.conflicts, 0);
      const ck0 = ds.reduce((acc, d) => acc + d.stats.checkpoints, 0);
      const sender = nodes[Math.floor(rnd() * 3)]!;
      const t = await time(async () => {
        await sender.send(r);
        await idle();
      });
      await new Promise((res) => setTimeout(res, 20));
      const rt1 = Math.max(...spaces.map((s, i) => ds[i]!.internals(s).roundTrips));
      if (r < 3) continue;
      lat.push(t);
      rts.push(rt1 - rt0);
      txns.push(ds.reduce((acc, d) => acc + d.stats.txns, 0) - tx0);
      conflicts.push(ds.reduce((acc, d) => acc + d.stats.conflicts, 0) - cf0);
      checkpoints.push(ds.reduce((acc, d) => acc + d.stats.checkpoints, 0) - ck0);
    }
    const mean = (xs: number[]): number => xs.reduce((x, y) => x + y, 0) / xs.length;
    out.push(row(`3-node message round (${rounds} rounds)`, lat, txnP50));
    out.push(`  sequential etcd round trips per round (critical path): median ${pct(rts, 50)}, max ${Math.max(...rts)}; `
      + `transactions per round (all nodes): mean ${mean(txns).toFixed(1)}, of which failed compares ${mean(conflicts).toFixed(1)}, carrying a checkpoint ${mean(checkpoints).toFixed(1)}`);
    out.push(`  target: <= 10 sequential round trips: ${pct(rts, 50) <= 10 ? 'MET' : 'NOT MET'} (median ${pct(rts, 50)}, max ${Math.max(...rts)})`);
    const opKeys = (await kv.range({ key: Buffer.from(`${prefix}/round/o/`), range_end: Buffer.from(`${prefix}/round/o0`), count_only: true })).count;
    const ops = rounds + 3 + 1; // rounds, warm-up, join
    out.push(`  operation keys left in etcd after ${ops} rounds (3 resources): ${opKeys}`);
    for (const s of spaces) await s.leave();
  } finally {
    for (const d of dlms) d.close();
    await server.cleanup();
  }
  return out;
}

async function benchMemory(): Promise<string[]> {
  const out: string[] = [];
  for (const check of [false, true]) {
    const cluster = new MemoryDlmCluster({ clock, checkInvariants: check });
    const ls = await cluster.node('m').join({ name: 'mem', lvbLength: 0 });
    const run = async (ms: number): Promise<number> => {
      let pairs = 0;
      const t0 = performance.now();
      while (performance.now() - t0 < ms) {
        for (let i = 0; i < 1000; i++) {
          const lk = await ls.lock('r', Mode.EX);
          await lk.unlock();
        }
        pairs += 1000;
      }
      return (pairs * 1000) / (performance.now() - t0);
    };
    await run(300); // warm-up
    const rate = await run(quick ? 500 : 2000);
    out.push(`in-memory uncontended lock/unlock pairs/s${check ? ' (invariant checks on)' : ''}: ${Math.round(rate).toLocaleString('en')}`
      + (check ? '' : `  target >= 200,000: ${rate >= 200_000 ? 'MET' : 'NOT MET'}`));
  }
  return out;
}

/** The DLM benchmarks (npm run bench runs them after the array ones; --quick reads argv). */
export async function runDlmBench(): Promise<void> {
  console.log('\ndistributed lock manager (in-memory; etcd on loopback against raw put/txn)');
  const lines = [...(await benchMemory()), ...(await benchEtcd())];
  console.log(lines.join('\n'));
}

async function main(): Promise<void> {
  await runDlmBench();
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
