/**
 * mdadm's clustermd_tests scenarios (shared/spec/md-cluster-protocol.md §6), written here from
 * the spec's table, against two tsmd daemons on two hosts (test/helpers/hosts.ts): commands that
 * mdadm runs on node 2 run against node 2's daemon, /proc/mdstat is each node's mdstat file, the
 * speed-limit writes are `tsmd --speed-limit-min/max`, and the dmesg check is "no error line in
 * the node's log". The mdstat and --detail words are the kernel's (fixture
 * kernel-md-cluster/raid1-clustered-2node-crashed/mdadm-info.txt shows node 2's "resync=PENDING"
 * and "State : active, resyncing (PENDING)").
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { Cluster, type Host, requireHosts } from '../helpers/hosts.js';

const CLUSTER = 'mdtests';

async function until(what: string, cond: () => boolean, timeoutMs = 120_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function ok(h: Host, args: string[]): string {
  const r = h.tsmd(args);
  assert.equal(r.status, 0, `${h.name}: tsmd ${args.join(' ')}: ${r.stderr}`);
  return r.stdout + r.stderr;
}

/** func.sh's checks, on one node's mdstat. */
const check = {
  resync: (h: Host) => /resync =/.test(h.mdstat()),
  recovery: (h: Host) => /recovery =/.test(h.mdstat()),
  pending: (h: Host) => /resync=PENDING/.test(h.mdstat()),
  recoveryOrRemote: (h: Host) => /recovery =|recover=REMOTE|resync=REMOTE/.test(h.mdstat()),
  idle: (h: Host) => !/resync|recovery|recover=|PENDING|REMOTE|reshape/.test(h.mdstat()),
  state: (h: Host, s: string) => h.mdstat().includes(`[${s}]`),
  spares: (h: Host) => (h.mdstat().match(/\(S\)/g) ?? []).length,
};

function noErrors(c: Cluster): void {
  for (const h of c.hosts) {
    const lines = (h.daemon?.logs() ?? '').split('\n').filter((l) => /"level":(50|60)/.test(l) && !/marking it faulty|failed on another node/.test(l));
    assert.deepEqual(lines, [], `${h.name}: no error in the log (dmesg check)`);
  }
}

async function twoNodes(t: TestContext, disks: number): Promise<Cluster> {
  const c = await Cluster.start({ hosts: 2, disks, diskSize: 32 << 20, etcd: true }, t);
  for (const h of c.hosts) await h.startDaemon(['--node-name', h.name, '--cluster-name', CLUSTER, `--etcd=${c.etcdUrl(h)}`]);
  return c;
}

function slow(c: Cluster, kib = 1000): void {
  for (const h of c.hosts) ok(h, [`--speed-limit-min=${Math.min(kib, 1000)}`, `--speed-limit-max=${kib}`]);
}

function fast(c: Cluster): void {
  for (const h of c.hosts) ok(h, ['--speed-limit-max=200000']);
}

interface Level {
  name: 'raid1' | 'raid10';
  create: string[];
  disks: number;
  state: string;
}

const LEVELS: Level[] = [
  { name: 'raid1', create: ['--level=1', '--raid-devices=2'], disks: 2, state: 'UU' },
  { name: 'raid10', create: ['--level=10', '--layout=n2', '--raid-devices=4'], disks: 4, state: 'UUUU' },
];

function members(h: Host, n: number, from = 0): string[] {
  return Array.from({ length: n }, (_, i) => h.disk(from + i));
}

for (const L of LEVELS) {
  const id = L.name === 'raid1' ? 'r1' : 'r10';

  test(`00${id}_Create: create on node1 without --assume-clean, assemble on node2`, { timeout: 300_000 }, async (t) => {
    if (!requireHosts(t)) return;
    const c = await twoNodes(t, L.disks);
    const [n1, n2] = c.hosts as [Host, Host];
    slow(c);
    ok(n1, ['--create', '/dev/md0', '--run', ...L.create, '--bitmap=clustered', ...members(n1, L.disks)]);
    ok(n2, ['--assemble', '/dev/md0', ...members(n2, L.disks)]);
    await until('node1 resyncs, node2 PENDING', () => check.resync(n1) && check.pending(n2));
    assert.match(ok(n2, ['--detail', '/dev/md0']), /State : active, resyncing \(PENDING\)/);
    fast(c);
    await until('both idle', () => check.idle(n1) && check.idle(n2));
    for (const h of c.hosts) {
      const m = h.mdstat();
      assert.match(m, new RegExp(`active ${L.name} `));
      assert.match(m, /bitmap: /);
      assert.ok(check.state(h, L.state), `${h.name}: [${L.state}] in\n${m}`);
      assert.match(ok(h, ['--detail', '/dev/md0']), /Intent Bitmap : Internal\(Clustered\)/);
    }
    noErrors(c);
  });

  test(`00${id}_Create: --assume-clean, a spare, --name`, { timeout: 300_000 }, async (t) => {
    if (!requireHosts(t)) return;
    const c = await twoNodes(t, L.disks + 1);
    const [n1, n2] = c.hosts as [Host, Host];
    slow(c);
    const spare = ['--spare-devices=1'];
    ok(n1, ['--create', '/dev/md0', '--run', '--assume-clean', '--name=tsmdtest', ...L.create, ...spare, '--bitmap=clustered', ...members(n1, L.disks + 1)]);
    ok(n2, ['--assemble', '/dev/md0', ...members(n2, L.disks + 1)]);
    // --assume-clean: no sync on either node (nosync)
    await new Promise((r) => setTimeout(r, 1500));
    for (const h of c.hosts) {
      assert.ok(check.idle(h), `${h.name}: no sync\n${h.mdstat()}`);
      assert.equal(check.spares(h), 1, `${h.name}: one spare`);
      assert.ok(check.state(h, L.state));
      assert.match(ok(h, ['--detail', '/dev/md0']), /Name : \S*tsmdtest/);
    }
    noErrors(c);
  });

  test(`03${id}_switch-resync: stopping the resyncing node hands the resync to node2`, { timeout: 300_000 }, async (t) => {
    if (!requireHosts(t)) return;
    const c = await twoNodes(t, L.disks);
    const [n1, n2] = c.hosts as [Host, Host];
    slow(c);
    ok(n1, ['--create', '/dev/md0', '--run', ...L.create, '--bitmap=clustered', ...members(n1, L.disks)]);
    ok(n2, ['--assemble', '/dev/md0', ...members(n2, L.disks)]);
    await until('node1 resyncs, node2 PENDING', () => check.resync(n1) && check.pending(n2));
    ok(n1, ['--stop', '/dev/md0']);
    await until('node2 takes the resync over', () => check.resync(n2));
    fast(c);
    await until('node2 idle', () => check.idle(n2));
    ok(n1, ['--assemble', '/dev/md0', ...members(n1, L.disks)]);
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(check.idle(n1), `node1 re-assembles with no sync\n${n1.mdstat()}`);
    for (const h of c.hosts) assert.ok(check.state(h, L.state), `${h.name}\n${h.mdstat()}`);
    noErrors(c);
  });

  test(`03${id}_switch-recovery: stopping the recovering node hands the recovery to node2`, { timeout: 300_000 }, async (t) => {
    if (!requireHosts(t)) return;
    const c = await twoNodes(t, L.disks + 1);
    const [n1, n2] = c.hosts as [Host, Host];
    ok(n1, ['--create', '/dev/md0', '--run', '--assume-clean', ...L.create, '--spare-devices=1', '--bitmap=clustered', ...members(n1, L.disks + 1)]);
    ok(n2, ['--assemble', '/dev/md0', ...members(n2, L.disks + 1)]);
    slow(c);
    ok(n1, ['/dev/md0', '--fail', n1.disk(0)]);
    // either node may win the recovery (md 6.7+); the test stops the one that runs it
    await until('a recovery runs', () => check.recovery(n1) || check.recovery(n2));
    const [busy, other] = check.recovery(n1) ? [n1, n2] : [n2, n1];
    assert.ok(check.recoveryOrRemote(other) || check.pending(other) || /\[/.test(other.mdstat()), `${other.name} shows the recovery`);
    ok(busy, ['--stop', '/dev/md0']);
    await until(`${other.name} takes the recovery over`, () => check.recovery(other));
    fast(c);
    await until(`${other.name} idle`, () => check.idle(other));
    assert.ok(check.state(other, L.state), other.mdstat());
    noErrors(c);
  });
}
