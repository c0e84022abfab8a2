/**
 * A node daemon refuses to assemble a clustered array it cannot join, with the reason and
 * without writing a byte (issue 16 item 2): etcd does not answer; the bitmap names another
 * cluster; the node has no DLM at all. Each time the members are byte-identical afterwards, the
 * command fails within the DLM's bounded wait, and the daemon goes on serving.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { freePort } from '../helpers/etcd.js';
import { sparseFile, tempDir, tsmd } from '../helpers/tools.js';

const MiB = 1024 * 1024;

function hashes(files: string[]): string[] {
  return files.map((f) => createHash('sha256').update(readFileSync(f)).digest('hex'));
}

describe('assembling a clustered array the node cannot join', () => {
  let dir: ReturnType<typeof tempDir>;
  let files: string[];
  const daemons: TestDaemon[] = [];
  before(() => {
    dir = tempDir('clrefuse');
    files = [0, 1].map((k) => sparseFile(join(dir.path, `d${k}`), 32 * MiB));
    const r = tsmd(['--create', '/dev/md5', '--run', '--assume-clean', '-l1', '-n2', '--bitmap=clustered', '--cluster-name=ours', ...files], { env: { TSMD_RUN_DIR: join(dir.path, 'oneshot') } });
    assert.equal(r.status, 0, r.stderr);
  });
  after(async () => {
    for (const d of daemons) await d.stop();
    dir.cleanup();
  });

  async function refused(t: TestContext, name: string, flags: string[], message: RegExp, withinMs: number): Promise<void> {
    const d = await startDaemon(join(dir.path, name), ['--no-nbd', '--node-name=n1', ...flags]);
    daemons.push(d);
    const h0 = hashes(files);
    const t0 = Date.now();
    const r = d.tsmd(['--assemble', '/dev/md5', ...files]);
    const ms = Date.now() - t0;
    assert.notEqual(r.status, 0, `${name}: assembled: ${r.stdout}`);
    assert.match(r.stderr, message, name);
    assert.ok(ms < withinMs, `${name}: refused after ${ms} ms (bound ${withinMs} ms)`);
    t.diagnostic(`${name}: refused after ${ms} ms: ${r.stderr.trim()}`);
    assert.deepEqual(hashes(files), h0, `${name}: a refused assembly wrote to a member`);
    // the daemon is fine, and has no array
    assert.equal(d.tsmd(['--detail', '/dev/md5']).status, 1);
    assert.doesNotMatch(readFileSync(join(d.runDir, 'mdstat'), 'utf8'), /md5/);
  }

  test('etcd does not answer: refused within the DLM wait, naming etcd, nothing written', async (t) => {
    // a loopback port nothing listens on: connections are refused at once, the DLM retries
    // within its bounded wait and then says so
    const port = await freePort();
    await refused(t, 'no-etcd', ['--cluster-name=ours', `--etcd=http://127.0.0.1:${port}`, '--etcd-lease-ttl=2'], /etcd/i, 45_000);
  });

  test('the bitmap names another cluster: refused, nothing written', async (t) => {
    const port = await freePort();
    await refused(t, 'other-cluster', ['--cluster-name=theirs', `--etcd=http://127.0.0.1:${port}`], /the array belongs to cluster "ours", this node is in cluster "theirs"/, 10_000);
  });

  test('a node with no DLM configured: refused, naming the cure, nothing written', async (t) => {
    await refused(t, 'no-dlm', ['--cluster-name=ours'], /this node has no DLM configured: a clustered array needs tsmd daemon --etcd=URL/, 10_000);
  });
});
