/**
 * The hosts harness (test/helpers/hosts.ts) is what the md-cluster tests stand on: this file
 * proves it models separate hosts. Judges outside the harness: the kernel (stat of the device
 * nodes, /proc/<pid>/ns, `losetup -j`, `ip`), the page cache's own behaviour under dd, the
 * real mdadm reading what a host's daemon wrote, nbdinfo and a real etcd over the network.
 *
 * Three hosts over seven 8 MiB shared disks: node1 and node2 in network namespaces, node3 on
 * the root's network (both kinds are what cluster tests use). The tests run in order on one
 * cluster; the last one closes it.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { after, before, describe, test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { haveEtcd, requireEtcd } from '../helpers/etcd.js';
import { backingFile, Cluster, haveHosts, type Host, requireHosts } from '../helpers/hosts.js';
import { fields, requireTool, run, withLoop } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const BLOCK = 4096;

/** Every tool this file needs, checked per test: a loud skip by hand, a failure under CI. */
function ready(t: TestContext, ...tools: string[]): boolean {
  if (!requireHosts(t) || !requireEtcd(t)) return false;
  return tools.every((x) => requireTool(t, x, 'the hosts harness self-test'));
}

/** `losetup -j FILE`: the loop devices over FILE, by the kernel's own account. */
function loopsOver(file: string): string[] {
  const r = run('losetup', ['-j', file]);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split('\n').filter(Boolean).map((l) => l.slice(0, l.indexOf(':')));
}

/** major:minor as `stat` prints it in hex (%t:%T), of a device node in the root namespace. */
function hexDev(dev: string): string {
  const rdev = statSync(dev).rdev;
  return `${(Math.floor(rdev / 256) & 0xfff).toString(16)}:${((rdev & 0xff) | (Math.floor(rdev / 4096) & ~0xff)).toString(16)}`;
}

/** 4 KiB of one recognisable text. */
function block(tag: string): string {
  return tag.repeat(Math.ceil(BLOCK / tag.length)).slice(0, BLOCK);
}

/** Run inside a host: GET etcd's /health with a short timeout; exit 0 only when healthy. */
async function etcdHealthFrom(h: Host, url: string): Promise<{ ok: boolean; out: string }> {
  const script = `fetch(process.argv[1] + '/health', { signal: AbortSignal.timeout(1500) })
    .then(async (r) => { const b = await r.json(); console.log(JSON.stringify(b)); process.exit(b.health === 'true' ? 0 : 2); },
          (e) => { console.log(String(e && e.cause || e)); process.exit(1); });`;
  const r = await h.execAsync([process.execPath, '-e', script, url], { timeoutMs: 20_000 });
  return { ok: r.status === 0, out: r.stdout + r.stderr };
}

/** A TCP connect from this (root) namespace, bounded: true when it connects. */
function tcpReach(host: string, port: number, ms = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(ms, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

describe('hosts harness: several hosts on one machine', { concurrency: false }, () => {
  let c: Cluster | undefined;

  before(async () => {
    if (haveHosts() && haveEtcd()) c = await Cluster.start({ hosts: 3, disks: 7, diskSize: 8 * MiB, net: [true, true, false], etcd: true });
  });
  after(async () => {
    await c?.close();
  });

  test('the shared path is a different loop device in each host, and nothing in the root namespace', (t) => {
    if (!ready(t)) return;
    const { hosts, disks } = c!;
    const seen = new Set<string>();
    for (const h of hosts) {
      assert.equal(h.exec(['hostname']).stdout.trim(), h.name, 'each host has its own host name');
      assert.notEqual(readlinkSync(`/proc/${h.pid}/ns/mnt`), readlinkSync('/proc/self/ns/mnt'));
      const r = h.exec(['stat', '-c', '%n: %F %t:%T', ...disks.paths]);
      assert.equal(r.status, 0, r.stderr);
      const lines = r.stdout.trim().split('\n');
      assert.equal(lines.length, disks.paths.length);
      for (const [i, p] of disks.paths.entries()) {
        // the node is this host's own loop device, and that device is over the shared file
        assert.equal(lines[i], `${p}: block special file ${hexDev(h.loops[i]!)}`, h.name);
        assert.equal(backingFile(h.loops[i]!), disks.files[i]);
        seen.add(lines[i]!.slice(p.length));
      }
    }
    assert.equal(seen.size, hosts.length * disks.paths.length, 'no two hosts (or disks) share a device');
    // the kernel agrees: exactly the hosts' devices over each file, nothing else
    for (const [i, f] of disks.files.entries()) assert.deepEqual(loopsOver(f).sort(), hosts.map((h) => h.loops[i]!).sort());
    // the root namespace does not see the disks under the shared path
    assert.ok(existsSync(disks.sharedDir));
    for (const p of disks.paths) assert.equal(existsSync(p), false, `${p} must not exist outside the hosts`);
    assert.notEqual(run('stat', ['-L', disks.paths[0]!]).status, 0);
  });

  test('two hosts share a disk but not a page cache', async (t) => {
    if (!ready(t)) return;
    const [h1, h2] = c!.hosts;
    const disk = 6; // no array below uses it
    const path = c!.disks.paths[disk]!;
    const at = ['bs=4096', 'count=1', 'status=none'];
    const readBuffered = (h: Host) => h.exec(['dd', `if=${path}`, 'skip=100', ...at]);
    const readDirect = (h: Host) => h.exec(['dd', `if=${path}`, 'skip=100', 'iflag=direct', ...at]);
    const writeDirect = (h: Host, data: string) => h.exec(['dd', `of=${path}`, 'seek=100', 'oflag=direct', 'iflag=fullblock', 'conv=notrunc', ...at], { input: data });
    const gen1 = block('generation 1 by node2 ');
    const gen2 = block('generation 2 by node2 ');
    let r = writeDirect(h2!, gen1);
    assert.equal(r.status, 0, r.stderr);
    // the kernel drops a block device's page cache at its last close: node1 keeps its device
    // open, as a daemon does, so that what it reads stays cached
    const holder = h1!.spawn(['sh', '-c', 'exec sleep 600 <"$0"', path], { stdio: 'ignore' });
    try {
      for (const t0 = Date.now(); ;) {
        try {
          if (readlinkSync(`/proc/${holder.pid}/fd/0`) === path && readlinkSync(`/proc/${holder.pid}/exe`).endsWith('/sleep')) break;
        } catch {
          // not exec'd yet
        }
        assert.ok(Date.now() - t0 < 5000, 'the holder opened the disk in node1');
        await sleep(20);
      }
      r = readBuffered(h1!);
      assert.equal(r.stdout, gen1, 'node1 reads (and caches) generation 1');
      r = writeDirect(h2!, gen2);
      assert.equal(r.status, 0, r.stderr);
      // the disk has generation 2 (the root reads the backing file itself)...
      const onDisk = readFileSync(c!.disks.files[disk]!).subarray(100 * BLOCK, 101 * BLOCK).toString();
      assert.equal(onDisk, gen2, 'node2 wrote through to the shared file');
      // ...node1's cache still has generation 1: its own page cache, not node2's
      assert.equal(readBuffered(h1!).stdout, gen1, 'node1 buffered read: its stale cache');
      assert.equal(readDirect(h1!).stdout, gen2, 'node1 O_DIRECT read: the disk');
      assert.equal(readBuffered(h2!).stdout, gen2, 'node2 sees its own write');
    } finally {
      holder.kill('SIGKILL');
    }
  });

  test('each host runs its own tsmd daemon on its own run dir and NBD port, reachable from the root', async (t) => {
    if (!ready(t, 'nbdinfo', 'mdadm')) return;
    const { hosts } = c!;
    const uuids: string[] = [];
    const daemons = await Promise.all(hosts.map((h) => h.startDaemon()));
    for (const [i, h] of hosts.entries()) {
      const d = daemons[i]!;
      assert.equal(h.daemon, d);
      assert.equal(d.info.pid, d.proc.pid, 'the daemon is the process the harness started');
      assert.equal(d.runDir, h.runDir);
      for (const ns of ['mnt', 'uts', 'net']) {
        assert.equal(readlinkSync(`/proc/${d.info.pid}/ns/${ns}`), readlinkSync(`/proc/${h.pid}/ns/${ns}`), `${h.name}'s daemon runs in its ${ns} namespace`);
      }
      assert.deepEqual(d.info.nbd, { host: h.address, port: h.nbdPort });
      // a raid1 of two shared disks this host alone uses, a size of its own: (4 + i) MiB
      const r = h.tsmd(['--create', '/dev/md0', '-l1', '-n2', '--run', '--assume-clean', `--size=${(4 + i) * 1024}`, h.disk(2 * i), h.disk(2 * i + 1)]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(h.mdstat(), new RegExp(`^md0 : active raid1 d${2 * i + 1}\\[1\\] d${2 * i}\\[0\\]$`, 'm'), h.mdstat());
      const scan = h.tsmd(['--detail', '--scan']);
      assert.equal(scan.status, 0, scan.stderr);
      const lines = scan.stdout.split('\n').filter(Boolean);
      assert.equal(lines.length, 1, `only ${h.name}'s own array: ${scan.stdout}`);
      uuids.push(/UUID=(\S+)/.exec(lines[0]!)![1]!);
    }
    assert.equal(new Set(uuids).size, 3, 'three arrays, three daemons');
    assert.equal(new Set(hosts.map((h) => h.runDir)).size, 3);
    assert.equal(new Set(hosts.map((h) => h.nbdPort)).size, 3);
    // from the root namespace, each host's export is that host's array (its size says whose)
    for (const [i, h] of hosts.entries()) {
      const r = run('nbdinfo', ['--size', h.nbdUri()], { timeoutMs: 20_000 });
      assert.equal(r.status, 0, `${h.nbdUri()}: ${r.stderr}`);
      assert.equal(Number(r.stdout.trim()), (4 + i) * MiB, h.nbdUri());
    }
    // what node3's daemon wrote through its own loop devices is on the shared files: the real
    // mdadm reads the superblock there after a clean stop
    const h3 = hosts[2]!;
    const r = h3.tsmd(['--stop', '/dev/md0']);
    assert.equal(r.status, 0, r.stderr);
    for (const f of [c!.disks.files[4]!, c!.disks.files[5]!]) {
      const ex = await withLoop(f, (dev) => run('mdadm', ['--examine', dev]));
      assert.equal(ex.status, 0, ex.stderr);
      assert.equal(fields(ex.stdout).get('Array UUID'), uuids[2]);
      assert.equal(fields(ex.stdout).get('Raid Level'), 'raid1');
    }
    assert.doesNotMatch(h3.mdstat(), /^md0 :/m, 'node3 stopped its array; the others still run theirs');
    assert.match(hosts[0]!.mdstat(), /^md0 : active raid1/m);
  });

  test('a host in a network namespace reaches etcd until partitioned, and again after heal', async (t) => {
    if (!ready(t, 'nbdinfo')) return;
    const [h1, h2, h3] = c!.hosts as [Host, Host, Host];
    const etcd = c!.etcd!;
    assert.equal(etcd.server.running, true);
    const all = await Promise.all([h1, h2, h3].map((h) => etcdHealthFrom(h, c!.etcdUrl(h))));
    for (const [i, e] of all.entries()) assert.ok(e.ok, `node${i + 1} reaches etcd at ${c!.etcdUrl(c!.hosts[i]!)}: ${e.out}`);
    assert.equal(c!.etcdUrl(h3), etcd.server.clientUrl, 'a host without netns uses loopback');
    assert.notEqual(c!.etcdUrl(h1), c!.etcdUrl(h2), 'each netns host has its own way to etcd');
    // a netns host's loopback is its own: the root's etcd is not there
    assert.equal((await etcdHealthFrom(h1, etcd.server.clientUrl)).ok, false, 'node1 cannot use the root loopback');

    h1.partition();
    try {
      const e = await etcdHealthFrom(h1, c!.etcdUrl(h1));
      assert.equal(e.ok, false, `partitioned node1 must not reach etcd: ${e.out}`);
      assert.ok((await etcdHealthFrom(h2, c!.etcdUrl(h2))).ok, 'node2 is not partitioned');
      // the partition is of the cluster network: node1's NBD clients still reach it
      const r = run('nbdinfo', ['--size', h1.nbdUri()], { timeoutMs: 20_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(await tcpReach(h1.address, h1.nbdPort), true);
      h1.partition({ clients: true });
      assert.equal(await tcpReach(h1.address, h1.nbdPort), false, 'clients cut off too');
      assert.equal(await tcpReach(h2.address, h2.nbdPort), true, 'node2 untouched');
    } finally {
      h1.heal();
    }
    let e = await etcdHealthFrom(h1, c!.etcdUrl(h1));
    for (let k = 0; !e.ok && k < 20; k++) {
      await sleep(100);
      e = await etcdHealthFrom(h1, c!.etcdUrl(h1));
    }
    assert.ok(e.ok, `healed node1 reaches etcd again: ${e.out}`);
    assert.equal(await tcpReach(h1.address, h1.nbdPort), true, 'and its clients reach it');
    assert.throws(() => h3.partition(), /no network namespace/);
  });

  test('close leaves no process, loop device, netns or link behind, even after partial failures', async (t) => {
    if (!ready(t)) return;
    const cl = c!;
    const { hosts, disks } = cl;
    const pids = [...hosts.map((h) => h.pid), ...hosts.flatMap((h) => (h.daemon ? [h.daemon.proc.pid!] : []))];
    const netns = hosts.flatMap((h) => (h.net ? [h.net.netns] : []));
    const links = hosts.flatMap((h) => (h.net ? [h.net.clusterLink, h.net.clientLink] : []));
    assert.equal(netns.length, 2);
    for (const n of netns) assert.ok(existsSync(`/run/netns/${n}`), n);
    for (const l of links) assert.equal(run('ip', ['link', 'show', l]).status, 0, l);
    // things already half gone: one of node2's loop devices detached, node1's holder dead
    assert.equal(run('losetup', ['-d', hosts[1]!.loops[0]!]).status, 0);
    process.kill(hosts[0]!.pid, 'SIGKILL');

    c = undefined;
    await cl.close();
    await cl.close(); // idempotent

    for (const f of disks.files) assert.deepEqual(loopsOver(f), [], `no loop device over ${f}`);
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `pid ${pid} is gone`);
    const list = run('ip', ['netns', 'list']).stdout;
    for (const n of netns) assert.ok(!new RegExp(`^${n}( |$)`, 'm').test(list), `netns ${n} is gone`);
    for (const l of links) assert.notEqual(run('ip', ['link', 'show', l]).status, 0, `link ${l} is gone`);
    assert.equal(existsSync(disks.dir), false, 'the disks directory is removed');
    assert.equal(cl.etcd!.server.running, false);
  });
});
