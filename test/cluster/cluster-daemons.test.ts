/**
 * A cluster of real daemons (issue 16, "What must be shown"): three hosts, each a mount
 * namespace seeing the shared disks through its own loop devices (own page cache), its own run
 * directory and NBD port; a real etcd. Node 1 creates a clustered raid1 without
 * --assume-clean and resyncs while the others, assembling it, show PENDING; writes through NBD on
 * one node read back on the others during and after the resync; concurrent writes from all
 * three nodes to disjoint ranges all survive, and check finds nothing.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { test } from 'node:test';
import { controlCall } from '../../src/daemon/control.js';
import type { TestDaemon } from '../helpers/daemon.js';
import { Cluster, type Host, requireHosts } from '../helpers/hosts.js';
import { NbdTestClient } from '../helpers/nbd-client.js';

interface ArrayInfo {
  mdName: string;
  mismatchCnt: number;
  syncBusy: boolean;
  sync: { kind: string } | null;
}

async function arrays(h: Host): Promise<ArrayInfo[]> {
  const rep = (await controlCall(join(h.runDir, 'control.sock'), { op: 'arrays' }, 10_000)) as { arrays?: ArrayInfo[] };
  return rep.arrays ?? [];
}

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function ok(h: Host, args: string[]): string {
  const r = h.tsmd(args);
  assert.equal(r.status, 0, `${h.name}: tsmd ${args.join(' ')}: ${r.stderr}`);
  return r.stdout + r.stderr;
}

export async function startClusterDaemons(c: Cluster, clusterName: string, extra: string[] = []): Promise<TestDaemon[]> {
  const out: TestDaemon[] = [];
  for (const h of c.hosts) out.push(await h.startDaemon(['--node-name', h.name, '--cluster-name', clusterName, `--etcd=${c.etcdUrl(h)}`, ...extra]));
  return out;
}

async function nbd(h: Host): Promise<NbdTestClient> {
  return NbdTestClient.connect(h.nbdPort, 'md0', h.address);
}

test('three daemons on three hosts share one clustered raid1', { timeout: 300_000 }, async (t) => {
  if (!requireHosts(t)) return;
  const c = await Cluster.start({ hosts: 3, disks: 2, diskSize: 32 << 20, etcd: true }, t);
  await startClusterDaemons(c, 'tsmdtest');
  const [h1, h2, h3] = c.hosts as [Host, Host, Host];
  // slow enough to watch the resync (as the mdadm tests lower speed_limit_max)
  for (const h of c.hosts) ok(h, ['--speed-limit-min=1000', '--speed-limit-max=2000']);
  ok(h1, ['--create', '/dev/md0', '--run', '--level=1', '--raid-devices=2', '--bitmap=clustered', '--nodes=4', h1.disk(0), h1.disk(1)]);
  ok(h2, ['--assemble', '/dev/md0', h2.disk(0), h2.disk(1)]);
  ok(h3, ['--assemble', '/dev/md0', h3.disk(0), h3.disk(1)]);
  await until('node1 resyncing, nodes 2 and 3 pending', () => /resync =/.test(h1.mdstat()) && /resync=PENDING/.test(h2.mdstat()) && /resync=PENDING/.test(h3.mdstat()));

  // writes on node 1 while the resync runs, read back through nodes 2 and 3
  const clients = [await nbd(h1), await nbd(h2), await nbd(h3)];
  t.after(() => clients.forEach((x) => x.destroy()));
  const during = randomBytes(1 << 20);
  await clients[0]!.write(4 << 20, during);
  await clients[0]!.flush();
  for (const k of [1, 2]) assert.ok((await clients[k]!.read(4 << 20, during.length)).equals(during), `node${k + 1} reads node1's write during the resync`);

  for (const h of c.hosts) ok(h, ['--speed-limit-max=200000']);
  await until('all idle and in sync', async () => {
    for (const h of c.hosts) if (!/\[UU\]/.test(h.mdstat()) || /resync|PENDING|REMOTE/.test(h.mdstat())) return false;
    return true;
  });
  // concurrent writes from all three nodes to disjoint ranges (as a cluster file system would)
  const pieces = clients.map((_, k) => Array.from({ length: 8 }, (_, i) => ({ at: (8 << 20) + (k * 8 + i) * (256 << 10), data: randomBytes(256 << 10) })));
  await Promise.all(clients.map(async (cl, k) => {
    await Promise.all(pieces[k]!.map((p) => cl.write(p.at, p.data)));
    await cl.flush();
  }));
  for (const [k, cl] of clients.entries())
    for (const p of pieces.flat()) assert.ok((await cl.read(p.at, p.data.length)).equals(p.data), `node${k + 1} reads every node's writes`);
  assert.ok((await clients[2]!.read(4 << 20, during.length)).equals(during), 'the write made during the resync survived it');

  ok(h1, ['--action=check', '/dev/md0']);
  await until('check done', async () => {
    const a = (await arrays(h1))[0];
    return !!a && !a.syncBusy;
  });
  assert.equal((await arrays(h1))[0]!.mismatchCnt, 0);
  for (const h of c.hosts) assert.doesNotMatch(h.daemon!.logs(), /"level":(50|60)/, `${h.name}: no error in the log`);
});
