/**
 * The control socket carries a failed request's error code: the client rebuilds a TsmdError
 * with the daemon's code and message, so `tsmd` exits (and reports) as if the command had run
 * in-process. Unknown or absent codes (older or newer daemons, plain Errors) come back as EIO.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { controlCall, serveControl } from '../../src/daemon/control.js';
import { type ErrorCode, TsmdError } from '../../src/errors.js';
import { tempDir } from '../helpers/tools.js';

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** controlCall's rejection, which must be a TsmdError */
async function failure(path: string): Promise<TsmdError> {
  try {
    await controlCall(path, { op: 'mdadm', argv: ['--detail', '/dev/md0'] }, 5000);
  } catch (e) {
    assert.ok(e instanceof TsmdError, `a TsmdError, got ${String(e)}`);
    return e;
  }
  assert.fail('the request succeeded');
}

describe('control socket errors', () => {
  const dir = tempDir('control');
  const path = join(dir.path, 'control.sock');
  let server: Server;
  /** what the handler throws next */
  let toThrow: unknown;
  const seen: unknown[] = [];

  before(async () => {
    server = serveControl(
      path,
      async (req) => {
        if (req.op === 'ping') return { pid: process.pid };
        throw toThrow;
      },
      (e) => seen.push(e),
    );
    await listen(server, path);
  });
  after(async () => {
    await close(server);
    dir.cleanup();
  });

  test('a TsmdError keeps its code and message across the socket', async () => {
    toThrow = new TsmdError('EBUSY', '/dev/sdb is in use by the running array /dev/md1');
    const e = await failure(path);
    assert.equal(e.code, 'EBUSY');
    assert.equal(e.message, '/dev/sdb is in use by the running array /dev/md1');
    assert.equal(seen.at(-1), toThrow, 'the daemon side hears of the error too');
  });

  test('every other code keeps its code as well', async () => {
    for (const code of ['ENODEV', 'EEXIST', 'EROFS', 'EFENCED'] as const) {
      toThrow = new TsmdError(code, `failed with ${code}`);
      const e = await failure(path);
      assert.equal(e.code, code);
      assert.equal(e.message, `failed with ${code}`);
    }
  });

  test('a code this build does not know (a newer daemon) comes back as EIO, message kept', async () => {
    toThrow = new TsmdError('ENEWFANGLED' as ErrorCode, 'something from the future');
    const e = await failure(path);
    assert.equal(e.code, 'EIO');
    assert.equal(e.message, 'something from the future');
  });

  test('a plain Error (no code) comes back as EIO, message kept', async () => {
    toThrow = new TypeError('cannot read properties of undefined');
    const e = await failure(path);
    assert.equal(e.code, 'EIO');
    assert.equal(e.message, 'cannot read properties of undefined');
  });

  test('successful requests are unchanged', async () => {
    const rep = await controlCall(path, { op: 'ping' }, 5000);
    assert.equal(rep.pid, process.pid);
    assert.equal(rep.error, undefined);
  });
});

describe('control socket errors from an older daemon', () => {
  test('a reply with only "error" (no errorCode) still fails, as EIO with its message', async () => {
    const dir = tempDir('control-old');
    const path = join(dir.path, 'control.sock');
    // the reply of the daemon before error codes: {"id":1,"error":"..."}
    const server = createServer((sock) => {
      sock.setEncoding('utf8');
      sock.once('data', () => sock.end(`${JSON.stringify({ id: 1, error: 'unknown control operation mdadm' })}\n`));
    });
    try {
      await listen(server, path);
      const e = await failure(path);
      assert.equal(e.code, 'EIO');
      assert.equal(e.message, 'unknown control operation mdadm');
    } finally {
      await close(server);
      dir.cleanup();
    }
  });
});
