/**
 * Issue 15: arrays come back after a daemon restart. The daemon takes mdadm's boot role
 * (`mdadm --assemble --scan` from mdadm.conf): at start it assembles the config's ARRAY lines
 * and logs one line per array; an array that cannot start is logged and left alone (nothing
 * written to it); --no-assemble / TSMD_AUTO_ASSEMBLE=0 turn it off.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { controlCall } from '../../src/daemon/control.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { sparseFile, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

let dir: ReturnType<typeof tempDir>;
before(() => {
  dir = tempDir('boot-assemble');
});
after(() => dir.cleanup());

async function running(d: TestDaemon): Promise<string[]> {
  const rep = await controlCall(join(d.runDir, 'control.sock'), { op: 'arrays' }, 5000);
  return (rep.arrays ?? []).map((a) => a.mdName).sort();
}

const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

function uuidOf(d: TestDaemon, md: string): string {
  const r = d.tsmd(['--detail', '--brief', md]);
  assert.equal(r.status, 0, r.stderr);
  const m = /UUID=(\S+)/.exec(r.stdout);
  assert.ok(m, r.stdout);
  return m[1]!;
}

test('a restarted daemon assembles the arrays its mdadm.conf names, and only those that can start', async () => {
  const a = [0, 1, 2].map((i) => sparseFile(join(dir.path, `a${i}.img`), 16 * MiB));
  const b = [0, 1, 2].map((i) => sparseFile(join(dir.path, `b${i}.img`), 16 * MiB));
  const runDir = join(dir.path, 'run');
  let d = await startDaemon(runDir);
  let r = d.tsmd(['--create', '/dev/md0', '-l5', '-n3', '-c64', '--run', '--assume-clean', ...a]);
  assert.equal(r.status, 0, r.stderr);
  r = d.tsmd(['--create', '/dev/md1', '-l5', '-n3', '-c64', '--run', '--assume-clean', ...b]);
  assert.equal(r.status, 0, r.stderr);
  const uuid0 = uuidOf(d, '/dev/md0');
  const uuid1 = uuidOf(d, '/dev/md1');
  const data = randomBytes(1 * MiB);
  const c = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
  await c.write(3 * MiB, data, true);
  await c.flush();
  await c.close();
  await d.stop('SIGKILL'); // a crash: nothing stopped cleanly
  const bBefore = b.map(sha);

  // md0 found through DEVICE globs; md1 listed with one member short (degraded: mdadm starts
  // it only with --run); md9's members are nowhere
  const conf = join(dir.path, 'mdadm.conf');
  writeFileSync(
    conf,
    [
      `DEVICE ${dir.path}/a*.img`,
      `ARRAY /dev/md0 metadata=1.2 UUID=${uuid0}`,
      `ARRAY /dev/md1 metadata=1.2 UUID=${uuid1} devices=${b[0]},${b[1]}`,
      'ARRAY /dev/md9 metadata=1.2 UUID=01234567:89abcdef:01234567:89abcdef',
      '',
    ].join('\n'),
  );
  d = await startDaemon(runDir, [`--config=${conf}`]);
  try {
    // no --assemble was given: the daemon did it at start, before it announced itself
    assert.deepEqual(await running(d), ['md0'], d.logs());
    const v = await NbdTestClient.connect(d.info.nbd!.port, 'md0');
    assert.ok((await v.read(3 * MiB, data.length)).equals(data), 'data written before the kill reads back');
    await v.close();
    const logs = d.logs();
    assert.match(logs, /boot assembly: \/dev\/md0 assembled from 3 device/);
    assert.match(logs, /boot assembly: \/dev\/md1 not assembled: [^"]*(--run|degraded|not enough)/i);
    assert.match(logs, /boot assembly: \/dev\/md9 not assembled: no member found/);
    assert.equal((logs.match(/boot assembly: /g) ?? []).length, 3, 'one log line per ARRAY line');
  } finally {
    assert.equal(await d.stop(), 0, d.logs().slice(-4000));
  }
  assert.deepEqual(b.map(sha), bBefore, 'the array that could not start was not written');

  // off: --no-assemble, and TSMD_AUTO_ASSEMBLE=0
  for (const [extra, env] of [[[`--config=${conf}`, '--no-assemble'], {}], [[`--config=${conf}`], { TSMD_AUTO_ASSEMBLE: '0' }]] as const) {
    d = await startDaemon(runDir, [...extra], env);
    try {
      assert.deepEqual(await running(d), [], d.logs());
      assert.doesNotMatch(d.logs(), /boot assembly/);
    } finally {
      assert.equal(await d.stop(), 0, d.logs().slice(-4000));
    }
  }
});

test('a config that cannot be read is logged and the daemon still starts', async () => {
  const runDir = join(dir.path, 'run-bad');
  const d = await startDaemon(runDir, [`--config=${join(dir.path, 'no-such.conf')}`]);
  try {
    assert.deepEqual(await running(d), []);
    assert.match(d.logs(), /boot assembly: cannot use .*no-such\.conf/);
  } finally {
    assert.equal(await d.stop(), 0, d.logs().slice(-4000));
  }
});
