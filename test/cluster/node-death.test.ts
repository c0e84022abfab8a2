/**
 * Node death (issue 16, "What must be shown"): three daemons on three hosts share a clustered
 * raid1 and write to it through NBD, all at once; one of them is killed with SIGKILL in the
 * middle of its writes, TSMD_CLUSTER_KILLS times (20 by default; the victim rotates). Each time:
 *  - the dead node's bitmap slot is read off the disks right after the kill (its dirty bits are
 *    what md-cluster's recover_slot must take over), and the real `mdadm -X` agrees on the first;
 *  - exactly one survivor takes the slot over and resyncs exactly those chunks (the bytes the
 *    sync engine reports worked == dirty bits x bitmap chunk), within the lease TTL plus a bound;
 *  - every write a client saw acknowledged and then flushed reads back through a survivor (the
 *    dead node's unflushed writes may land or not: those bytes are not judged);
 *  - the node restarts, assembles again, and the array is idle and [UUU]-clean on all nodes.
 * At the end `check` reports 0 mismatches: every resync left the mirrors equal.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { allIdle, logTimes, ok, REGION_BYTES, regionAt, slotDirtyUnion, state, until, Writer } from '../helpers/cluster-io.js';
import type { TestDaemon } from '../helpers/daemon.js';
import { Cluster, type Host, requireHosts } from '../helpers/hosts.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { prng } from '../helpers/prng.js';
import { requireTool, run, withLoop } from '../helpers/tools.js';

const KILLS = Number(process.env.TSMD_CLUSTER_KILLS ?? 20);
const SEED = Number(process.env.TSMD_CLUSTER_SEED ?? 1);
const LEASE_TTL_SEC = 2;
/**
 * Kill to takeover: the lease runs out (TTL), etcd's lessor notices (it checks every 500 ms),
 * the survivors' watch sees the dead node's keys go, one takes the slot's bitmap lock and reads
 * the slot. The bound on top of the TTL covers that chain on a loaded two-core machine.
 */
const TAKEOVER_BOUND_MS = 4000;
const MiB = 1024 * 1024;

interface TakeOver {
  host: Host;
  atMs: number;
}

/** The survivors' log lines that say they took `slot` over (md-cluster.ts recoverOne), from `since` on. */
function takeovers(hosts: Host[], daemons: Map<Host, TestDaemon>, slot: number, since: number): TakeOver[] {
  return hosts.flatMap((host) => logTimes(daemons.get(host)!, `slot ${slot}: dirty sectors`, since).map((atMs) => ({ host, atMs })));
}

test(`node death: kill -9 of a node during writes on all nodes, ${KILLS} times`, { timeout: 1_800_000 }, async (t) => {
  if (!requireHosts(t)) return;
  const withMdadm = requireTool(t, 'mdadm');
  const c = await Cluster.start({ hosts: 3, disks: 2, diskSize: 32 * MiB, etcd: true }, t);
  const hosts = c.hosts;
  const daemons = new Map<Host, TestDaemon>();
  const flags = (h: Host): string[] => ['--node-name', h.name, '--cluster-name', 'deathtest', `--etcd=${c.etcdUrl(h)}`, `--etcd-lease-ttl=${LEASE_TTL_SEC}`];
  for (const h of hosts) daemons.set(h, await h.startDaemon(flags(h)));
  const disks = (h: Host): string[] => [h.disk(0), h.disk(1)];
  const [h1] = hosts as [Host];
  ok(h1, ['--create', '/dev/md0', '--run', '--assume-clean', '--level=1', '--raid-devices=2', '--bitmap=clustered', '--nodes=4', '--bitmap-chunk=64K', ...disks(h1)]);
  for (const h of hosts.slice(1)) ok(h, ['--assemble', '/dev/md0', ...disks(h)]);
  const idle = (hs: Host[]): Promise<boolean> => allIdle(hs);
  await until('all three idle', () => idle(hosts));
  const chunkSectors = (await state(h1)).bitmap!.chunkSectors;

  const rnd = prng(SEED);
  const writers = hosts.map((_, k) => new Writer(k, prng(SEED * 1000 + k)));
  const clients = new Map<Host, NbdTestClient>();
  const connect = async (h: Host): Promise<NbdTestClient> => {
    const cl = await NbdTestClient.connect(h.nbdPort, 'md0', h.address);
    clients.set(h, cl);
    return cl;
  };
  for (const h of hosts) await connect(h);
  t.after(() => [...clients.values()].forEach((x) => x.destroy()));
  const takeoverMs: number[] = [];

  for (let i = 0; i < KILLS; i++) {
    const vi = i % hosts.length;
    const victim = hosts[vi]!;
    const survivors = hosts.filter((h) => h !== victim);
    const slot = (await state(victim)).cluster!.slot;
    const historyBefore = new Map<Host, number>();
    for (const h of survivors) historyBefore.set(h, (await state(h)).syncHistory.length);
    hosts.forEach((h, k) => writers[k]!.start(clients.get(h)!));
    await new Promise((r) => setTimeout(r, 300 + Math.floor(rnd() * 700)));
    const killedAt = Date.now();
    await daemons.get(victim)!.kill9();
    // the dead node's slot, before any survivor can have it (the lease has TTL seconds to run)
    const { union: dirty, perMember } = await slotDirtyUnion(c.disks.files, slot);
    // a bitmap write reaches the members one by one: a kill between them leaves them differing by what was in flight
    assert.ok(perMember.every((n) => Math.abs(n - dirty) <= 16), `kill ${i}: the members' copies of slot ${slot} agree but for writes in flight: ${perMember.join(', ')} (union ${dirty})`);
    assert.ok(Date.now() - killedAt < LEASE_TTL_SEC * 1000, `kill ${i}: the slot was read within the TTL`);
    if (i === 0 && withMdadm) {
      const x = await withLoop(c.disks.files[0]!, (dev) => run('mdadm', ['-X', dev]).stdout);
      const bySlot = [...x.matchAll(/Bitmap : \d+ bits \(chunks\), (\d+) dirty/g)].map((m) => Number(m[1]));
      assert.equal(bySlot[slot], perMember[0], `mdadm -X: slot ${slot}'s dirty bits\n${x}`);
    }
    await writers[vi]!.abandon();
    clients.get(victim)!.destroy();
    for (const h of survivors) await writers[hosts.indexOf(h)]!.stop();

    // exactly one survivor takes the slot over and resyncs exactly its dirty chunks
    if (dirty > 0) await until(`kill ${i}: a survivor takes slot ${slot} over`, () => takeovers(survivors, daemons, slot, killedAt).length > 0, (LEASE_TTL_SEC * 1000 + TAKEOVER_BOUND_MS) * 3);
    await until(`kill ${i}: survivors idle`, () => idle(survivors));
    const took = takeovers(survivors, daemons, slot, killedAt);
    const worked = new Map<Host, number>();
    for (const h of survivors) {
      const hist = (await state(h)).syncHistory.slice(historyBefore.get(h)!);
      worked.set(h, hist.filter((x) => x.kind === 'resync').reduce((s, x) => s + x.workedSectors, 0));
    }
    const resyncers = survivors.filter((h) => worked.get(h)! > 0);
    if (dirty === 0) {
      assert.deepEqual(resyncers, [], `kill ${i}: nothing dirty, nothing resynced`);
    } else {
      assert.equal(took.length, 1, `kill ${i}: exactly one survivor takes slot ${slot} over: ${took.map((x) => x.host.name).join(', ')}`);
      assert.deepEqual(resyncers.map((h) => h.name), [took[0]!.host.name], `kill ${i}: the survivor that took the slot over, and only it, resyncs`);
      assert.equal(worked.get(took[0]!.host), dirty * chunkSectors, `kill ${i}: resynced sectors == ${dirty} dirty chunks x ${chunkSectors}`);
      const ms = took[0]!.atMs - killedAt;
      takeoverMs.push(ms);
      assert.ok(ms <= LEASE_TTL_SEC * 1000 + TAKEOVER_BOUND_MS, `kill ${i}: taken over ${ms} ms after the kill (TTL ${LEASE_TTL_SEC} s + ${TAKEOVER_BOUND_MS} ms)`);
    }
    // every acknowledged and flushed write reads back through a survivor
    const reader = clients.get(survivors[0]!)!;
    for (const [k, w] of writers.entries()) w.judge(await reader.read(regionAt(k), REGION_BYTES), `kill ${i} (node${vi + 1})`);

    // the node comes back
    daemons.set(victim, await victim.startDaemon(flags(victim)));
    ok(victim, ['--assemble', '/dev/md0', ...disks(victim)]);
    await until(`kill ${i}: node${vi + 1} back, all idle`, () => idle(hosts));
    await connect(victim);
  }

  // the restarted nodes read what everyone wrote; check finds nothing
  for (const h of hosts) for (const [k, w] of writers.entries()) w.judge(await clients.get(h)!.read(regionAt(k), REGION_BYTES), `the end, on ${h.name}`);
  ok(h1, ['--action=check', '/dev/md0']);
  await until('check done', async () => !(await state(h1)).syncBusy);
  const a = await state(h1);
  assert.equal(a.syncHistory.at(-1)!.kind, 'check');
  assert.equal(a.mismatchCnt, 0);
  takeoverMs.sort((x, y) => x - y);
  t.diagnostic(`kill -9 to takeover (TTL ${LEASE_TTL_SEC} s), ${takeoverMs.length} takeovers: min ${takeoverMs[0]} ms, median ${takeoverMs[Math.floor(takeoverMs.length / 2)]} ms, max ${takeoverMs.at(-1)} ms`);
  t.diagnostic(`writes: ${writers.map((w) => w.writes).join(' / ')}`);
});
