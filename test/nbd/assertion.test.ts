/**
 * A failed assert() is a bug, not an I/O error: it throws a TsmdAssertionError that no
 * TsmdError handler takes for one of its own, and the NBD server crashes on it instead of
 * answering the request with EIO (as the kernel's BUG_ON would take the nbd device down).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { exitCodeOf } from '../../src/mdadm/main.js';
import { AssertionError, assert as invariant, isTsmdError, TsmdError } from '../../src/errors.js';
import { isCrash, isUnexpected, nbdErrnoOf } from '../../src/nbd/errors.js';
import { tempDir } from '../helpers/tools.js';
import { connectGo, MiB, NBD, startServer, TestTarget, type TestServer } from './helpers.js';

/** the error a failed assert() throws */
function failedAssertion(what: string): AssertionError {
  try {
    invariant(false, what);
  } catch (e) {
    assert.ok(e instanceof AssertionError, `assert() threw ${String(e)}`);
    return e;
  }
  assert.fail('assert(false) did not throw');
}

describe('assert()', () => {
  test('throws a TsmdAssertionError, which is not a TsmdError', () => {
    assert.doesNotThrow(() => invariant(1, 'truthy holds'));
    const e = failedAssertion('stripe cache has a head');
    assert.equal(e.name, 'TsmdAssertionError');
    assert.equal(e.code, 'ERR_TSMD_ASSERTION');
    assert.equal(e.message, 'tsmd invariant violated: stripe cache has a head');
    assert.match(e.stack ?? '', /^TsmdAssertionError: tsmd invariant violated: stripe cache has a head\n/, 'the stack (what logs print) names it');
    assert.ok(e instanceof Error);
    assert.ok(!(e instanceof TsmdError));
    assert.equal(isTsmdError(e), false);
    assert.equal(exitCodeOf(e), null, 'the CLI rethrows it instead of exiting 1');
  });

  test('the NBD error path treats it as a crash, not an EIO reply', () => {
    const e = failedAssertion('member slot in range');
    assert.equal(isCrash(e), true);
    assert.equal(isUnexpected(e), true);
    assert.throws(() => nbdErrnoOf(e), (x) => x === e, 'it has no NBD errno: nbdErrnoOf rethrows it');
    // ordinary errors are no crash and keep their replies
    assert.equal(isCrash(new TsmdError('EIO', 'x')), false);
    assert.equal(isCrash(new TypeError('x')), false);
    assert.equal(nbdErrnoOf(new TypeError('x')), NBD.ERR.EIO);
  });
});

describe('NBD server on a failed assertion', () => {
  const dir = tempDir('nbd-assert');
  const disk = new TestTarget(MiB);
  let srv: TestServer;
  const bugs: AssertionError[] = [];

  before(async () => {
    srv = await startServer([{ name: 'disk', target: disk }], dir.path, { onBug: (e) => bugs.push(e) });
  });
  after(async () => {
    await srv.close();
    dir.cleanup();
  });

  for (const structured of [false, true]) {
    test(`the request gets no EIO reply: the client is cut off and onBug hears of it (structured ${structured})`, async () => {
      const before = bugs.length;
      const e = failedAssertion('raid5 stripe state');
      const { c } = await connectGo({ port: srv.port }, 'disk', { structured });
      try {
        disk.fault = { fromBytes: 0, toBytes: 4096, error: e };
        c.send(NBD.CMD.READ, 0, 1n, 0, 512);
        await assert.rejects(c.readReply(3000), 'no reply, the connection is closed');
        assert.ok(await c.waitClosed(), 'the server closed the connection');
        assert.deepEqual(bugs.slice(before), [e]);
        assert.ok(srv.logs.some((l) => l.level === 'error' && /invariant violated/.test(l.msg)), 'logged as an error');
      } finally {
        disk.fault = null;
        c.destroy();
      }
    });
  }

  test('an ordinary error still gets its NBD error reply and the connection stays up', async () => {
    const before = bugs.length;
    const { c } = await connectGo({ port: srv.port }, 'disk');
    try {
      disk.fault = { fromBytes: 0, toBytes: 4096, error: new TypeError('not a bug report') };
      assert.equal((await c.cmd(NBD.CMD.READ, 0, 0, 512)).error, NBD.ERR.EIO);
      disk.fault = null;
      assert.equal((await c.cmd(NBD.CMD.READ, 0, 0, 512)).error, 0);
      assert.equal(bugs.length, before);
    } finally {
      disk.fault = null;
      c.destroy();
    }
  });

  test('by default the process dies of it (uncaught exception), after cutting the client off', async () => {
    const sock = join(dir.path, 'crash.sock');
    const server = new URL('../../src/nbd/server.js', import.meta.url).href;
    const target = new URL('../../src/nbd/target.js', import.meta.url).href;
    const errors = new URL('../../src/errors.js', import.meta.url).href;
    // a server whose target fails an assertion on every read, with the default onBug
    const script = `
      import { NbdServer } from ${JSON.stringify(server)};
      import { MapExportRegistry } from ${JSON.stringify(target)};
      import { assert } from ${JSON.stringify(errors)};
      const t = { sizeBytes: 1 << 20, readOnly: false, read: async () => assert(false, 'read path'), write: async () => {}, flush: async () => {} };
      const s = new NbdServer({ exports: new MapExportRegistry([{ name: 'disk', target: t }]) });
      await s.listen({ path: ${JSON.stringify(sock)} });
      process.stdout.write('ready\\n');
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.setEncoding('utf8').on('data', (s: string) => s.includes('ready') && resolve());
        child.once('exit', () => reject(new Error(`the server exited before it was ready: ${stderr}`)));
      });
      const { c } = await connectGo({ path: sock }, 'disk');
      c.send(NBD.CMD.READ, 0, 1n, 0, 512);
      await assert.rejects(c.readReply(3000), 'no reply');
      c.destroy();
      const code = await exited;
      assert.notEqual(code, 0, 'the process exits non-zero');
      assert.match(stderr, /TsmdAssertionError\]?: tsmd invariant violated: read path/);
    } finally {
      child.kill();
    }
  });
});
