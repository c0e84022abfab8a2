/**
 * Issue 15: `npm test` must not drive the daemon the user started with `npm start` (the demo on
 * the default run directory and on 127.0.0.1:10809). Every test process has its own
 * TSMD_RUN_DIR (test/helpers/isolate.ts), the default run directory is refused under test, and
 * no test names the demo's port. .ci/run runs the whole suite beside a live demo daemon.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { defaultRunDir } from '../../src/daemon/daemon.js';
import { isolatedRunDir } from '../helpers/isolate.js';
import { startDaemon } from '../helpers/daemon.js';
import { repoRoot, sparseFile, tempDir, tsmd } from '../helpers/tools.js';

test('every test process has its own run directory, inherited by bin/tsmd', async () => {
  assert.ok(process.env.TSMD_RUN_DIR, 'TSMD_RUN_DIR is set for the test process');
  assert.equal(process.env.TSMD_RUN_DIR, isolatedRunDir);
  assert.ok(isolatedRunDir.startsWith(tmpdir()), `${isolatedRunDir} is a temp dir`);
  assert.notEqual(isolatedRunDir, '/run/tsmd');
  assert.equal(process.env.TSMD_UNDER_TEST, '1');
  // a bare `tsmd` (no --run-dir) reaches the daemon of this process's run directory only
  const tmp = tempDir('isolation');
  const d = await startDaemon(isolatedRunDir, ['--no-nbd']);
  try {
    const files = [0, 1].map((i) => sparseFile(join(tmp.path, `m${i}.img`), 8 << 20));
    let r = tsmd(['--create', '/dev/md7', '-l1', '-n2', '--run', '--assume-clean', ...files]);
    assert.equal(r.status, 0, r.stderr);
    r = d.tsmd(['--detail', '--scan']);
    assert.match(r.stdout, /^ARRAY \/dev\/md7 /m, 'the bare command went to this process\'s daemon');
    r = tsmd(['--stop', '/dev/md7']);
    assert.equal(r.status, 0, r.stderr);
  } finally {
    assert.equal(await d.stop(), 0, d.logs().slice(-4000));
    tmp.cleanup();
  }
});

test('under test the default run directory is refused, never guessed', () => {
  assert.throws(() => defaultRunDir({ TSMD_UNDER_TEST: '1' }), /default run directory is refused/);
  assert.equal(defaultRunDir({ TSMD_RUN_DIR: '/tmp/x', TSMD_UNDER_TEST: '1' }), '/tmp/x');
  // a child that lost TSMD_RUN_DIR fails instead of talking to /run/tsmd
  const r = tsmd(['--detail', '--scan'], { env: { TSMD_RUN_DIR: '' } });
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /default run directory is refused/);
  const dmn = tsmd(['daemon', '--no-nbd'], { env: { TSMD_RUN_DIR: '' } });
  assert.equal(dmn.status, 1, dmn.stdout + dmn.stderr);
});

test('no test names the demo daemon\'s port 10809 or the default run directory', () => {
  const offenders: string[] = [];
  const walk = (dir: string) => {
    for (const n of readdirSync(dir)) {
      const p = join(dir, n);
      if (statSync(p).isDirectory()) walk(p);
      else if (/\.(ts|py|sh)$/.test(n) && !n.startsWith('isolation.test.') && n !== 'isolate.ts') {
        const text = readFileSync(p, 'utf8');
        if (/\b10809\b|\/run\/tsmd\b/.test(text)) offenders.push(relative(repoRoot, p));
      }
    }
  };
  walk(join(repoRoot, 'test'));
  assert.deepEqual(offenders, []);
});
