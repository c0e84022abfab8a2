/**
 * `--create --bitmap=clustered`: the limits of md-cluster (spec md-cluster-protocol.md §4.12),
 * each refused in mdadm 4.2's words and with its exit code, in its order, before anything is
 * written (every member byte-identical afterwards); the cluster name taken from the node
 * daemon's --cluster-name when the command gives none (mdadm asks corosync), and "The md can't
 * get cluster name" when neither has one. The texts and codes are the ones the installed
 * mdadm 4.2 prints for the same commands where it gets that far without a DLM (no
 * libdlm: its clustered creates stop at "Something wrong with dlm library" after the name).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { EtcdServer, haveEtcd, requireEtcd } from '../helpers/etcd.js';
import { noDlmMessage } from '../../src/mdadm/cluster-config.js';
import { clusterNameMismatch } from '../../src/md/cluster-ops.js';
import { haveTool, run, sparseFile, tempDir, tsmd, withLoop } from '../helpers/tools.js';

const MiB = 1024 * 1024;

function hashOf(files: string[]): string[] {
  return files.map((f) => createHash('sha256').update(readFileSync(f)).digest('hex'));
}

describe('create --bitmap=clustered', () => {
  let dir: { path: string; cleanup: () => void };
  let files: string[];
  const noDaemon = (args: string[]) => tsmd(args, { env: { TSMD_RUN_DIR: join(dir.path, 'no-daemon') } });

  before(() => {
    dir = tempDir('clcreate');
    files = ['d0', 'd1', 'd2', 'd3'].map((n) => sparseFile(join(dir.path, n), 16 * MiB));
  });
  after(() => dir.cleanup());

  /** A create that must be refused: exit code, exact message, no member changed. */
  function refused(exec: (args: string[]) => { status: number; stderr: string }, args: string[], code: number, message: string): void {
    const before = hashOf(files);
    const r = exec(['--create', '/dev/md9', '--run', ...args]);
    assert.equal(r.status, code, `exit code of ${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr, `tsmd: ${message}\n`, args.join(' '));
    assert.deepEqual(hashOf(files), before, `${args.join(' ')}: a refused create wrote to a member`);
  }

  test("mdadm's refusals, in its order and with its exit codes; nothing written", () => {
    const [a, b, c] = files as [string, string, string];
    const two = [a, b];
    // mdadm.c's option parser: exit 2
    refused(noDaemon, ['-l1', '-n2', '--bitmap=clustered', '--home-cluster=c', '--nodes=1', ...two], 2, 'clustered array needs two nodes at least: 1');
    refused(noDaemon, ['-l1', '-n2', '--bitmap=clustered', '--home-cluster=c', '--nodes=x', ...two], 2, 'clustered array needs two nodes at least: x');
    refused(noDaemon, ['-l1', '-n2', '--bitmap=clustered', '--home-cluster=c', '--nodes=99999999999', ...two], 2, 'clustered array needs two nodes at least: 99999999999');
    refused(noDaemon, ['-l1', '-n2', '--bitmap=clustered', `--home-cluster=${'x'.repeat(65)}`, ...two], 2, 'Cluster name too big.');
    refused(noDaemon, ['-l1', '-n2', '--bitmap=clustered', `--cluster-name=${'x'.repeat(65)}`, ...two], 2, 'Cluster name too big.');
    // no name from the command and no daemon (corosync) to ask: exit 1, before the level is looked at
    refused(noDaemon, ['-l1', '-n2', '--bitmap=clustered', ...two], 1, "The md can't get cluster name");
    refused(noDaemon, ['-l5', '-n3', '--bitmap=clustered', a, b, c], 1, "The md can't get cluster name");
    refused(noDaemon, ['-l1', '-n2', '--nodes=3', '--bitmap=internal', ...two], 1, "The md can't get cluster name");
    // mdadm.c's CREATE case: exit 1
    refused(noDaemon, ['-l1', '-n2', '--nodes=3', '--bitmap=internal', '--home-cluster=c', ...two], 1, '--nodes argument only compatible with --bitmap=clustered');
    refused(noDaemon, ['-l1', '-n2', '--nodes=3', '--home-cluster=c', ...two], 1, '--nodes argument only compatible with --bitmap=clustered');
    refused(noDaemon, ['-l5', '-n3', '--bitmap=clustered', '--home-cluster=c', a, b, c], 1, '--bitmap=clustered is currently supported with raid1/10 only');
    refused(noDaemon, ['-l6', '-n4', '--bitmap=clustered', '--cluster-name=c', ...files], 1, '--bitmap=clustered is currently supported with raid1/10 only');
    refused(noDaemon, ['-n2', '--bitmap=clustered', '--home-cluster=c', ...two], 1, '--bitmap=clustered is currently supported with raid1/10 only');
    refused(noDaemon, ['-l10', '-n2', '-pf2', '--bitmap=clustered', '--home-cluster=c', ...two], 1, 'only near layout is supported with clustered raid10');
    refused(noDaemon, ['-l10', '-n2', '--layout=o2', '--bitmap=clustered', '--home-cluster=c', ...two], 1, 'only near layout is supported with clustered raid10');
    refused(noDaemon, ['-l10', '-n4', '--layout=n2', '--bitmap=clustered', '--home-cluster=c', '-e1.0', ...files], 1, 'Warning: cluster md only works with superblock 1.2');
    // super1.c: superblock 1.2 only; Create.c: no write-mostly member (named as given)
    refused(noDaemon, ['-l1', '-n2', '--bitmap=clustered', '--home-cluster=c', '-e1.0', ...two], 1, 'Warning: cluster md only works with superblock 1.2');
    refused(noDaemon, ['-l1', '-n2', '--bitmap=clustered', '--home-cluster=c', '--metadata=1.1', ...two], 1, 'Warning: cluster md only works with superblock 1.2');
    refused(noDaemon, ['-l1', '-n2', '--bitmap=clustered', '--home-cluster=c', a, '-W', b], 1, `Can not set ${b} --write-mostly with a clustered bitmap`);
    // super1.c write_bitmap1: every node's bitmap must fit before the data (254 4K slots here)
    refused(noDaemon, ['-l1', '-n2', '--bitmap=clustered', '--home-cluster=c', '--nodes=255', ...two], 1, "Warning: The max num of nodes can't exceed 254");
  });

  test('what the refusals allow is created: raid1 and raid10 n2 with 2..254 nodes; a 64-byte name is cut to 63 as mdadm does', async () => {
    const [a, b, c, d] = files as [string, string, string, string];
    let r = noDaemon(['--create', '/dev/md9', '--run', '-l1', '-n2', '--bitmap=clustered', '--home-cluster=c1', '--nodes=254', a, b]);
    assert.equal(r.status, 0, r.stderr);
    let x = noDaemon(['-X', a]).stdout;
    assert.match(x, /Cluster nodes : 254\n/);
    assert.match(x, /Cluster name : c1 *\n/);
    const long = 'L'.repeat(64);
    r = noDaemon(['--create', '/dev/md9', '--run', '-l10', '-n4', '--layout=n2', '--bitmap=clustered', `--cluster-name=${long}`, '--delay=17', a, b, c, d]);
    assert.equal(r.status, 0, r.stderr);
    x = noDaemon(['-X', a]).stdout;
    assert.match(x, /Cluster nodes : 4\n/, 'the default is 4 nodes');
    assert.match(x, /Daemon : 17s flush period\n/, '--delay is the bitmap daemon period');
    assert.match(x, new RegExp(`Cluster name : ${'L'.repeat(63)} *\\n`));
    // the bitmap's 64-byte name field at bitmap offset 72: 63 bytes, then NUL (super1.c add_internal_bitmap1)
    const sbBitmapAt = 4096 + 4096; // 1.2: superblock at 4K, bitmap 4K after it
    const field = readFileSync(a).subarray(sbBitmapAt + 72, sbBitmapAt + 136);
    assert.equal(field.toString('latin1'), `${'L'.repeat(63)}\0`);
    // and mdadm reads the same name (its -X wants a block device: a read-only loop device)
    if (haveTool('mdadm') && haveTool('losetup') && process.getuid?.() === 0) {
      const out = await withLoop(a, (dev) => run('mdadm', ['-X', dev]).stdout);
      assert.match(out, new RegExp(`Cluster name : ${'L'.repeat(63)} *\n`));
      assert.match(out, /Cluster nodes : 4\n/);
      assert.match(out, /Daemon : 17s flush period\n/);
    }
  });

  describe('with a node daemon', () => {
    let withName: TestDaemon | undefined;
    let without: TestDaemon | undefined;
    let noDlm: TestDaemon | undefined;
    let etcd: EtcdServer | undefined;
    before(async () => {
      without = await startDaemon(join(dir.path, 'run-b'), ['--no-nbd']);
      noDlm = await startDaemon(join(dir.path, 'run-c'), ['--no-nbd', '--node-name=n1', '--cluster-name=daemonclu']);
      if (!haveEtcd()) return;
      etcd = await EtcdServer.start();
      withName = await startDaemon(join(dir.path, 'run-a'), ['--no-nbd', '--node-name=n1', '--cluster-name=daemonclu', `--etcd=${etcd.clientUrl}`]);
    });
    after(async () => {
      await withName?.stop();
      await without?.stop();
      await noDlm?.stop();
      await etcd?.cleanup();
    });

    test('a node with a cluster name but no DLM refuses the create before writing anything', () => {
      const [a, b] = files as [string, string];
      refused(noDlm!.tsmd, ['-l1', '-n2', '--assume-clean', '--bitmap=clustered', a, b], 1, noDlmMessage('daemonclu'));
      refused(noDlm!.tsmd, ['-l1', '-n2', '--assume-clean', '--bitmap=clustered', '--cluster-name=other', a, b], 1, noDlmMessage('other'));
    });

    test("the daemon's --cluster-name is the default, as mdadm's corosync totem.cluster_name; none: mdadm's refusal", (t) => {
      if (!requireEtcd(t)) return;
      const [a, b] = files as [string, string];
      refused(without!.tsmd, ['-l1', '-n2', '--bitmap=clustered', a, b], 1, "The md can't get cluster name");
      // the limits are the same through the daemon
      refused(withName!.tsmd, ['-l5', '-n3', '--bitmap=clustered', ...files.slice(0, 3)], 1, '--bitmap=clustered is currently supported with raid1/10 only');
      refused(withName!.tsmd, ['-l1', '-n2', '--bitmap=clustered', '-e1.0', a, b], 1, 'Warning: cluster md only works with superblock 1.2');
      const r = withName!.tsmd(['--create', '/dev/md7', '--run', '--assume-clean', '-l1', '-n2', '--bitmap=clustered', a, b]);
      assert.equal(r.status, 0, r.stderr);
      const x = withName!.tsmd(['-X', a]).stdout;
      assert.match(x, /Cluster name : daemonclu *\n/);
      assert.match(x, /Cluster nodes : 4\n/);
      assert.match(withName!.tsmd(['--detail', '/dev/md7']).stdout, /Cluster Name : daemonclu/);
      assert.equal(withName!.tsmd(['--stop', '/dev/md7']).status, 0);
      // another cluster's name: the node could never run it, so nothing is written (the kernel's
      // DLM refuses the lockspace only after mdadm has written the superblocks)
      refused(withName!.tsmd, ['-l1', '-n2', '--assume-clean', '--bitmap=clustered', '--cluster-name=other', a, b], 1, clusterNameMismatch('other', 'daemonclu'));
    });
  });
});
