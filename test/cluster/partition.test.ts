/**
 * Partition (issue 16, "What must be shown"): three daemons on three hosts, each host in its
 * own network namespace; all three write to a clustered raid1 through NBD when node 3's link to
 * etcd goes down (packets dropped, as a real partition; its NBD clients still reach it). Shown:
 *  - node 3 fences itself (its log, its clients' EIO) before any survivor starts taking its slot
 *    over (their log): fencing runs on the node's own clock at last keep-alive + TTL − margin,
 *    the takeover waits for etcd to expire the lease at last keep-alive + TTL;
 *  - no member write from node 3 after that: the kernel's own write counters of node 3's loop
 *    devices (/sys/block/loopN/stat), sampled every few ms, stop moving before the takeover
 *    starts and never move again while node 3's clients keep trying to write;
 *  - every write acknowledged and flushed, by any node, reads back; node 3, healed, stops the
 *    array (writing nothing) and assembles it again; check reports 0.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { test } from 'node:test';
import { allIdle, logTimes, ok, REGION_BYTES, regionAt, state, until, Writer } from '../helpers/cluster-io.js';
import { Cluster, type Host, requireHosts } from '../helpers/hosts.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { prng } from '../helpers/prng.js';

const LEASE_TTL_SEC = 2;
const MiB = 1024 * 1024;
/** NBD's EIO */
const NBD_EIO = 5;

/** Sectors written and writes in flight, as the kernel counts them for a host's loop devices. */
function loopWrites(h: Host): { sectors: number; inFlight: number } {
  let sectors = 0;
  let inFlight = 0;
  for (const dev of h.loops) {
    const f = readFileSync(`/sys/block/${basename(dev)}/stat`, 'utf8').trim().split(/\s+/).map(Number);
    sectors += f[6]!;
    inFlight += f[8]!;
  }
  return { sectors, inFlight };
}

test('partition: a node cut off etcd fences itself before a survivor takes over, and writes nothing after', { timeout: 300_000 }, async (t) => {
  if (!requireHosts(t)) return;
  const c = await Cluster.start({ hosts: 3, disks: 2, diskSize: 32 * MiB, etcd: true, net: true }, t);
  const hosts = c.hosts;
  const [h1, , h3] = hosts as [Host, Host, Host];
  const flags = (h: Host): string[] => ['--node-name', h.name, '--cluster-name', 'parttest', `--etcd=${c.etcdUrl(h)}`, `--etcd-lease-ttl=${LEASE_TTL_SEC}`];
  for (const h of hosts) await h.startDaemon(flags(h));
  const disks = (h: Host): string[] => [h.disk(0), h.disk(1)];
  ok(h1, ['--create', '/dev/md0', '--run', '--assume-clean', '--level=1', '--raid-devices=2', '--bitmap=clustered', '--nodes=4', '--bitmap-chunk=64K', ...disks(h1)]);
  for (const h of hosts.slice(1)) ok(h, ['--assemble', '/dev/md0', ...disks(h)]);
  await until('all three idle', () => allIdle(hosts));
  const slot3 = (await state(h3)).cluster!.slot;

  const clients = await Promise.all(hosts.map((h) => NbdTestClient.connect(h.nbdPort, 'md0', h.address)));
  t.after(() => clients.forEach((x) => x.destroy()));
  const writers = hosts.map((_, k) => new Writer(k, prng(100 + k)));
  writers[2]!.tolerant = true;
  writers.forEach((w, k) => w.start(clients[k]!));

  // node 3's loop devices, sampled from now until well after the takeover
  const samples: Array<{ atMs: number; sectors: number; inFlight: number }> = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      samples.push({ atMs: Date.now(), ...loopWrites(h3) });
      await new Promise((r) => setTimeout(r, 5));
    }
  })();

  await new Promise((r) => setTimeout(r, 800));
  const cutAt = Date.now();
  h3.partition();
  // the survivors write on; node 3's clients keep trying (tolerant writer)
  await until('node 3 fenced', () => logTimes(h3.daemon!, 'lost its cluster membership').length > 0, LEASE_TTL_SEC * 1000 + 10_000);
  await until('a survivor starts taking slot over', () => hosts.slice(0, 2).some((h) => logTimes(h.daemon!, `node in slot ${slot3} is down or gone`, cutAt).length > 0), LEASE_TTL_SEC * 1000 + 15_000);
  await until('node 3 clients see EIO', () => writers[2]!.errors.length > 0, 10_000);
  // node 3 keeps being asked to write for a while after the takeover
  await new Promise((r) => setTimeout(r, 1500));
  await writers[2]!.abandon();
  for (const w of writers.slice(0, 2)) await w.stop();
  sampling = false;
  await sampler;

  const fencedAt = logTimes(h3.daemon!, 'lost its cluster membership')[0]!;
  const takeoverAt = Math.min(...hosts.slice(0, 2).flatMap((h) => logTimes(h.daemon!, `node in slot ${slot3} is down or gone`, cutAt)));
  t.diagnostic(`cut at 0 ms; node 3 fenced at ${fencedAt - cutAt} ms; first EIO at its client ${writers[2]!.firstErrorAtMs! - cutAt} ms; takeover started at ${takeoverAt - cutAt} ms`);
  assert.ok(fencedAt < takeoverAt, `node 3 fenced (${fencedAt - cutAt} ms) before the takeover (${takeoverAt - cutAt} ms)`);
  assert.ok(writers[2]!.firstErrorAtMs! >= fencedAt - 50, 'its clients fail only once it is fenced');
  assert.ok(writers[2]!.errors.every((e) => e === NBD_EIO), `node 3's clients get EIO: ${writers[2]!.errors.join(',')}`);
  // the kernel's counters of node 3's loop devices: the last write done before the takeover began
  const last = samples.at(-1)!;
  const settledAt = samples.find((s) => s.sectors === last.sectors)!.atMs;
  t.diagnostic(`node 3's member writes: last seen at ${settledAt - cutAt} ms, ${samples.length} samples`);
  assert.equal(last.inFlight, 0, 'nothing in flight on node 3');
  assert.ok(settledAt <= takeoverAt, `node 3's last member write (seen at ${settledAt - cutAt} ms) came before the takeover (${takeoverAt - cutAt} ms)`);
  assert.ok(samples.some((s) => s.atMs < fencedAt && s.sectors < last.sectors), 'node 3 was writing until shortly before its fence');

  // the survivors finish the dead slot's resync; every flushed write reads back through them
  await until('survivors idle', () => allIdle(hosts.slice(0, 2)));
  for (const [k, w] of writers.entries()) w.judge(await clients[0]!.read(regionAt(k), REGION_BYTES), 'through node 1');

  // node 3 heals, stops the array without writing, and assembles it again
  h3.heal();
  const before = loopWrites(h3).sectors;
  ok(h3, ['--stop', '/dev/md0']);
  assert.equal(loopWrites(h3).sectors, before, 'a fenced node stops its array without writing');
  ok(h3, ['--assemble', '/dev/md0', ...disks(h3)]);
  await until('all three idle again', () => allIdle(hosts));
  const c3 = await NbdTestClient.connect(h3.nbdPort, 'md0', h3.address);
  t.after(() => c3.destroy());
  for (const [k, w] of writers.entries()) w.judge(await c3.read(regionAt(k), REGION_BYTES), 'through node 3, rejoined');
  ok(h1, ['--action=check', '/dev/md0']);
  await until('check done', async () => !(await state(h1)).syncBusy);
  assert.equal((await state(h1)).mismatchCnt, 0);
});
