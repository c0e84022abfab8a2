/**
 * A node's cluster configuration: `tsmd daemon --node-name --cluster-name --etcd ...`. Every bad
 * value is refused before the daemon takes its run directory (exit 2 for a bad value or
 * combination, 1 for a file it cannot read); a password is never taken from the command line;
 * a daemon whose etcd does not answer starts anyway, says so, and runs local arrays; against a
 * real etcd with authentication it says etcd answers, and shows node, cluster and endpoints
 * (never the password) in its log and daemon.json.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { EtcdDlm } from '../../src/cluster/dlm/etcd.js';
import { clusterConfigFromFlags, type ClusterFlags, localNodeConfig, PASSWORD_ON_ARGV } from '../../src/daemon/cluster-options.js';
import { ManualClock, SystemClock } from '../../src/env/clock.js';
import { isTsmdError } from '../../src/errors.js';
import { UsageError } from '../../src/mdadm/args.js';
import { startDaemon } from '../helpers/daemon.js';
import { EtcdServer, freePort, haveEtcd, makeTestPki, requireEtcd, requireOpenssl } from '../helpers/etcd.js';
import { sparseFile, tempDir, tsmd } from '../helpers/tools.js';

const clock = new ManualClock();
const build = (f: ClusterFlags, env: NodeJS.ProcessEnv = {}, files: Record<string, string> = {}) =>
  clusterConfigFromFlags(f, {
    env,
    clock,
    hostname: () => 'host-a',
    readFile: (p) => {
      if (!(p in files)) throw Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
      return Buffer.from(files[p]!);
    },
  });

function usage(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof UsageError && re.test(e.message));
}

describe('cluster flags → ClusterConfig', () => {
  test('defaults: the host name, no cluster, no DLM, the DLM lease TTL of EtcdDlm (10 s)', () => {
    assert.deepEqual(build({}), { nodeName: 'host-a', clusterName: null, dlm: null, leaseTtlSec: 10, etcd: null });
    assert.deepEqual(build({ nodeName: 'n1', clusterName: 'c1' }), { nodeName: 'n1', clusterName: 'c1', dlm: null, leaseTtlSec: 10, etcd: null });
  });

  test('--etcd builds an EtcdDlm whose node id is the node name, with the lease TTL given', () => {
    const c = build({ nodeName: 'n1', clusterName: 'c1', etcd: 'http://127.0.0.1:2379,http://[::1]:2380', etcdLeaseTtl: '4' });
    try {
      assert.ok(c.dlm instanceof EtcdDlm);
      assert.equal(c.dlm.nodeId, 'n1');
      assert.equal((c.dlm as EtcdDlm).leaseTtlSec, 4);
      assert.equal(c.leaseTtlSec, 4);
      assert.deepEqual(c.etcd, { endpoints: ['http://127.0.0.1:2379', 'http://[::1]:2380'], user: null, tls: false });
    } finally {
      c.dlm?.close?.();
    }
  });

  test('names: printable ASCII without space or /, node ≤ 64 bytes, cluster ≤ 63 (the bitmap field and its NUL)', () => {
    usage(() => build({ nodeName: 'a/b' }), /--node-name "a\/b": use printable ASCII/);
    usage(() => build({ nodeName: 'a b' }), /--node-name/);
    usage(() => build({ nodeName: '' }), /--node-name must not be empty/);
    usage(() => build({ nodeName: 'n'.repeat(65) }), /longer than 64 bytes/);
    assert.equal(build({ nodeName: 'n'.repeat(64) }).nodeName, 'n'.repeat(64));
    usage(() => build({ clusterName: 'c'.repeat(64) }), /longer than 63 bytes: the clustered bitmap's cluster name field/);
    assert.equal(build({ clusterName: 'c'.repeat(63) }).clusterName, 'c'.repeat(63));
    usage(() => build({ clusterName: 'clu\u00e9' }), /--cluster-name/);
  });

  test('a host name that is no valid node name: fine without a cluster, refused with one', () => {
    const f = (x: ClusterFlags) => clusterConfigFromFlags(x, { env: {}, clock, hostname: () => 'my host' });
    assert.equal(f({}).nodeName, 'my host');
    assert.equal(f({}).clusterName, null);
    assert.throws(() => f({ clusterName: 'c1' }), (e: unknown) => e instanceof UsageError && /give --node-name/.test(e.message));
    assert.equal(localNodeConfig(() => 'h').nodeName, 'h');
  });

  test('etcd URLs: http(s)://host:port only, all of one scheme', () => {
    const e = (etcd: string) => build({ clusterName: 'c', etcd });
    usage(() => e('127.0.0.1:2379'), /scheme must be http or https|is not a URL/);
    usage(() => e('ftp://h:1'), /scheme must be http or https/);
    usage(() => e('http://h'), /give the port/);
    usage(() => e('https://h:443'.replace(':443', '')), /give the port/);
    usage(() => e('http://u:p@h:1'), /no credentials in the URL/);
    usage(() => e('http://h:1/v3'), /no path or query/);
    usage(() => e('http://h:1,'), /an empty URL/);
    usage(() => e('http://h:1,https://g:2'), /all http:\/\/ or all https:\/\//);
  });

  test('combinations: --etcd needs --cluster-name; etcd-only flags need --etcd; TLS files only with https; cert and key together', () => {
    usage(() => build({ etcd: 'http://h:1' }), /--etcd needs --cluster-name/);
    for (const [k, flag] of [['etcdCa', '--etcd-ca'], ['etcdUser', '--etcd-user'], ['etcdPasswordFile', '--etcd-password-file'], ['etcdLeaseTtl', '--etcd-lease-ttl']] as const)
      usage(() => build({ clusterName: 'c', [k]: 'x' }), new RegExp(`^${flag} needs --etcd`));
    usage(() => build({ clusterName: 'c', etcd: 'http://h:1', etcdCa: '/ca' }), /are for https:\/\/ endpoints/);
    usage(() => build({ clusterName: 'c', etcd: 'https://h:1' }), /need --etcd-ca/);
    usage(() => build({ clusterName: 'c', etcd: 'https://h:1', etcdCa: '/ca', etcdCert: '/c' }, {}, { '/ca': 'x', '/c': 'y' }), /--etcd-cert and --etcd-key go together/);
    for (const ttl of ['1', '3601', '2.5', 'ten', '-3'])
      usage(() => build({ clusterName: 'c', etcd: 'http://h:1', etcdLeaseTtl: ttl }), /--etcd-lease-ttl wants whole seconds, 2..3600/);
  });

  test('files: read at start; one that cannot be read is a clear error (exit 1), not a usage error', () => {
    assert.throws(
      () => build({ clusterName: 'c', etcd: 'https://h:1', etcdCa: '/no/ca.pem' }),
      (e: unknown) => isTsmdError(e, 'ENOENT') && e.message === '--etcd-ca=/no/ca.pem: cannot read it (no such file)',
    );
    // a file that is there but no PEM: named, before the etcd client fails on it somewhere inside
    assert.throws(
      () => build({ clusterName: 'c', etcd: 'https://h:1', etcdCa: '/ca' }, {}, { '/ca': 'not a certificate' }),
      (e: unknown) => isTsmdError(e, 'EINVAL') && /^--etcd-ca=\/ca: not a PEM certificate/.test(e.message),
    );
  });

  test('TLS files: a real CA, client certificate and key make an https DLM; a key given as the certificate is refused', (t) => {
    if (!requireOpenssl(t)) return;
    const dir = tempDir('clpki');
    try {
      const pki = makeTestPki(dir.path);
      const real = { clusterName: 'c', etcd: 'https://127.0.0.1:2379', etcdCa: pki.caFile, etcdCert: join(dir.path, 'client.pem'), etcdKey: join(dir.path, 'client.key') };
      const f = (x: ClusterFlags) => clusterConfigFromFlags(x, { env: {}, clock });
      const c = f(real);
      assert.deepEqual(c.etcd, { endpoints: ['https://127.0.0.1:2379'], user: null, tls: true });
      c.dlm?.close?.();
      assert.throws(() => f({ ...real, etcdCert: real.etcdKey }), (e: unknown) => isTsmdError(e, 'EINVAL') && /--etcd-cert=.*client\.key: not a PEM certificate/.test(e.message));
      assert.throws(() => f({ ...real, etcdKey: real.etcdCert }), (e: unknown) => isTsmdError(e, 'EINVAL') && /--etcd-key=.*client\.pem: not a PEM private key/.test(e.message));
    } finally {
      dir.cleanup();
    }
  });

  test('password: from --etcd-password-file (its trailing newline dropped) or TSMD_ETCD_PASSWORD; never absent or empty', () => {
    const base = { clusterName: 'c', etcd: 'http://h:1', etcdUser: 'root' };
    usage(() => build(base), /--etcd-user needs a password: --etcd-password-file=FILE or the TSMD_ETCD_PASSWORD/);
    usage(() => build({ ...base, etcdPasswordFile: '/pw' }, {}, { '/pw': '\n' }), /password \(--etcd-password-file=\/pw\) is empty/);
    usage(() => build({ clusterName: 'c', etcd: 'http://h:1', etcdPasswordFile: '/pw' }, {}, { '/pw': 'x' }), /--etcd-password-file needs --etcd-user/);
    assert.throws(() => build({ ...base, etcdPasswordFile: '/none' }), (e: unknown) => isTsmdError(e, 'ENOENT'));
    // what reaches etcd3 is visible on the client's options only; the config shows the user alone
    const viaFile = build({ ...base, etcdPasswordFile: '/pw' }, { TSMD_ETCD_PASSWORD: 'env-pw' }, { '/pw': 'file-pw\n' });
    const viaEnv = build(base, { TSMD_ETCD_PASSWORD: 'env-pw' });
    try {
      const auth = (c: typeof viaFile) => (c.dlm as EtcdDlm).client as unknown as { options: { auth?: { username: string; password: string } } };
      assert.deepEqual(auth(viaFile).options.auth, { username: 'root', password: 'file-pw' }, 'the file wins over the environment');
      assert.deepEqual(auth(viaEnv).options.auth, { username: 'root', password: 'env-pw' });
      assert.deepEqual(viaFile.etcd, { endpoints: ['http://h:1'], user: 'root', tls: false });
      assert.ok(!JSON.stringify(viaFile.etcd).includes('pw'));
    } finally {
      viaFile.dlm?.close?.();
      viaEnv.dlm?.close?.();
    }
  });
});

describe('tsmd daemon cluster flags', () => {
  let server: EtcdServer | undefined;
  before(async () => {
    if (haveEtcd()) server = await EtcdServer.start();
  });
  after(async () => {
    await server?.cleanup();
  });

  test('bad flags: refused before the daemon starts (no pid file, no socket), exit 2 or 1, never echoing a password', () => {
    const dir = tempDir('clflags');
    try {
      const runDir = join(dir.path, 'run');
      const cases: Array<[string[], number, RegExp]> = [
        [['--etcd-password=hunter2'], 2, /--etcd-password is refused: a password on the command line can be read by every user/],
        [['--etcd-password', 'hunter2'], 2, /--etcd-password is refused/],
        [['--etcd=http://127.0.0.1:2379'], 2, /--etcd needs --cluster-name/],
        [['--cluster-name=c1', '--etcd=http://127.0.0.1'], 2, /give the port/],
        [['--node-name=a/b'], 2, /--node-name "a\/b"/],
        [['--cluster-name', 'c'.repeat(64)], 2, /longer than 63 bytes/],
        [['--cluster-name=c1', '--etcd=https://127.0.0.1:2379', `--etcd-ca=${join(dir.path, 'none.pem')}`], 1, /--etcd-ca=.*none\.pem: cannot read it \(no such file\)/],
        [['--cluster-name=c1', '--etcd=http://127.0.0.1:2379', '--etcd-lease-ttl=1'], 2, /2..3600/],
      ];
      for (const [flags, code, re] of cases) {
        const r = tsmd(['daemon', '--run-dir', runDir, '--no-nbd', '--no-assemble', ...flags], { env: { TSMD_ETCD_PASSWORD: '' } });
        assert.equal(r.status, code, `${flags.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, re);
        assert.ok(!r.stderr.includes('hunter2'), 'the password is not echoed');
        assert.ok(!existsSync(join(runDir, 'tsmd.pid')) && !existsSync(join(runDir, 'control.sock')), 'the daemon did not start');
      }
      assert.equal(PASSWORD_ON_ARGV.includes('--etcd-password-file'), true);
    } finally {
      dir.cleanup();
    }
  });

  test('etcd down: the daemon starts, warns once, shows its cluster, and runs a local array', async () => {
    const dir = tempDir('cldown');
    const port = await freePort(); // nothing listens there
    const d = await startDaemon(join(dir.path, 'run'), ['--no-nbd', '--node-name=n1', '--cluster-name=c1', `--etcd=http://127.0.0.1:${port}`, '--etcd-lease-ttl=5']);
    try {
      const info = JSON.parse(readFileSync(join(d.runDir, 'daemon.json'), 'utf8')) as { cluster: unknown };
      assert.deepEqual(info.cluster, { nodeName: 'n1', clusterName: 'c1', dlm: { kind: 'etcd', endpoints: [`http://127.0.0.1:${port}`], user: null, tls: false, leaseTtlSec: 5 } });
      const deadline = Date.now() + 15_000;
      while (!/etcd does not answer/.test(d.logs()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const warn = d.logs().split('\n').filter((l) => l.includes('etcd does not answer'));
      assert.equal(warn.length, 1, d.logs());
      assert.equal((JSON.parse(warn[0]!) as { level: number }).level, 40, 'a warning');
      assert.match(warn[0]!, /local arrays run, clustered arrays cannot be assembled until it does/);
      const started = d.logs().split('\n').find((l) => l.includes('tsmd daemon started'))!;
      assert.deepEqual((JSON.parse(started) as { cluster: unknown }).cluster, info.cluster);
      // non-clustered arrays keep working
      const a = sparseFile(join(dir.path, 'a.img'), 8 << 20);
      const b = sparseFile(join(dir.path, 'b.img'), 8 << 20);
      const r = d.tsmd(['--create', '/dev/md0', '--level=1', '--raid-devices=2', '--assume-clean', '--run', a, b]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(d.tsmd(['--detail', '/dev/md0']).stdout, /State : clean/);
    } finally {
      assert.equal(await d.stop(), 0);
      dir.cleanup();
    }
  });

  test('a real etcd with authentication: the password from a file reaches etcd, the daemon says etcd answers, and nowhere shows the password', async (t) => {
    if (!requireEtcd(t)) return;
    const dir = tempDir('clauth');
    const authServer = await EtcdServer.start();
    try {
      const admin = new EtcdDlm({ clock: new SystemClock(), nodeId: 'admin', endpoints: [authServer.clientUrl] }).client;
      await admin.user('root').create('s3cret-pw');
      await admin.user('root').addRole('root');
      await admin.auth.authEnable({});
      admin.close();
      const pw = join(dir.path, 'pw');
      writeFileSync(pw, 's3cret-pw\n');
      chmodSync(pw, 0o600);
      const flags = ['--no-nbd', '--node-name=n1', '--cluster-name=c1', `--etcd=${authServer.clientUrl}`, '--etcd-user=root'];
      const good = await startDaemon(join(dir.path, 'run1'), [...flags, `--etcd-password-file=${pw}`]);
      try {
        const deadline = Date.now() + 15_000;
        while (!/etcd (does not )?answer/.test(good.logs()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        assert.match(good.logs(), /"msg":"etcd answers: clustered arrays can be assembled"/);
        const info = readFileSync(join(good.runDir, 'daemon.json'), 'utf8');
        assert.match(info, /"user":"root"/);
        for (const text of [info, good.logs()]) assert.ok(!text.includes('s3cret-pw'));
      } finally {
        assert.equal(await good.stop(), 0);
      }
      // the environment variable, and a wrong password: the daemon runs and warns with etcd's reason
      const bad = await startDaemon(join(dir.path, 'run2'), flags, { TSMD_ETCD_PASSWORD: 'wrong' });
      try {
        const deadline = Date.now() + 15_000;
        while (!/etcd (does not )?answer/.test(bad.logs()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        assert.match(bad.logs(), /etcd does not answer.*user\/password|user\/password.*etcd does not answer/);
        assert.ok(!bad.logs().includes('wrong'));
      } finally {
        assert.equal(await bad.stop(), 0);
      }
    } finally {
      await authServer.cleanup();
      dir.cleanup();
    }
  });

  test('etcd up: a daemon with --etcd probes it and says so', async (t) => {
    if (!requireEtcd(t)) return;
    const dir = tempDir('clup');
    const d = await startDaemon(join(dir.path, 'run'), ['--no-nbd', '--cluster-name=c1', `--etcd=${server!.clientUrl}`]);
    try {
      const deadline = Date.now() + 15_000;
      while (!/etcd (does not )?answer/.test(d.logs()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.match(d.logs(), /etcd answers/);
      assert.doesNotMatch(d.logs(), /etcd does not answer/);
    } finally {
      assert.equal(await d.stop(), 0);
      dir.cleanup();
    }
  });
});
