/**
 * TLS (STARTTLS, x509): libnbd clients over nbds:// with a throwaway self-signed certificate in
 * the libnbd directory layout (ca-cert.pem, server-cert.pem, server-key.pem; client-cert.pem and
 * client-key.pem for client authentication), --tls require refusing plain clients, and the
 * protocol rules around STARTTLS checked with a raw client.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { makeTestPki, type TestPki } from '../helpers/etcd.js';
import { requireTool, sparseFile, tempDir } from '../helpers/tools.js';
import { MiB, NBD, RawClient, runAsync, sha256, sha256File, startServer, systemPythonEnv, TestTarget, type TestServer } from './helpers.js';

describe('nbd over TLS', () => {
  const dir = tempDir('nbd-tls');
  const pki = join(dir.path, 'pki');
  /** the same CA, plus a client certificate */
  const pkiClient = join(dir.path, 'pki-client');
  let key = '';
  let cert = '';
  let haveOpenssl = true;
  const servers: TestServer[] = [];

  before(async () => {
    mkdirSync(pki);
    mkdirSync(pkiClient);
    try {
      const r = await runAsync('openssl', [
        'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
        '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout', join(pki, 'server-key.pem'), '-out', join(pki, 'server-cert.pem'),
      ]);
      assert.equal(r.status, 0, r.stderr);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      haveOpenssl = false;
      return;
    }
    copyFileSync(join(pki, 'server-cert.pem'), join(pki, 'ca-cert.pem'));
    copyFileSync(join(pki, 'server-cert.pem'), join(pkiClient, 'ca-cert.pem'));
    // a self-signed certificate is its own CA: good enough as a client certificate too
    copyFileSync(join(pki, 'server-cert.pem'), join(pkiClient, 'client-cert.pem'));
    copyFileSync(join(pki, 'server-key.pem'), join(pkiClient, 'client-key.pem'));
    key = readFileSync(join(pki, 'server-key.pem'), 'utf8');
    cert = readFileSync(join(pki, 'server-cert.pem'), 'utf8');
  });
  after(async () => {
    for (const s of servers) await s.close();
    dir.cleanup();
  });

  /** with `ca`, the server checks client certificates (verifyPeer follows it unless given) */
  async function serve(name: string, tls: { require: boolean; ca?: boolean; verifyPeer?: boolean }, target = new TestTarget(16 * MiB)) {
    const d = join(dir.path, name);
    mkdirSync(d);
    const { ca, ...rest } = tls;
    const s = await startServer([{ name: 'disk', description: 'secret', target }], d, {
      tls: { key, cert, ...(ca ? { ca: cert } : {}), ...rest },
    });
    servers.push(s);
    return s;
  }

  const tlsUri = (s: TestServer, certDir = pki) => `nbds://localhost:${s.port}/disk?tls-certificates=${certDir}`;

  function ready(t: Parameters<typeof requireTool>[0], tool: string): boolean {
    if (!requireTool(t, 'openssl', 'to make a throwaway certificate')) return false;
    assert.ok(haveOpenssl);
    return requireTool(t, tool);
  }

  test('--tls require: nbds:// works (TCP and Unix socket), plain clients are refused', async (t) => {
    if (!ready(t, 'nbdinfo')) return;
    const s = await serve('req', { require: true });
    const r = await runAsync('nbdinfo', ['--json', tlsUri(s)], { timeoutMs: 15000 });
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { TLS: boolean; exports: { 'export-size': number; description: string }[] };
    assert.equal(j.TLS, true);
    assert.equal(j.exports[0]['export-size'], 16 * MiB);
    assert.equal(j.exports[0].description, 'secret');
    const u = await runAsync('nbdinfo', ['--json', `nbds+unix:///disk?socket=${s.socketPath}&tls-certificates=${pki}&tls-hostname=localhost`]);
    assert.equal(u.status, 0, u.stderr);
    assert.equal((JSON.parse(u.stdout) as { TLS: boolean }).TLS, true);
    const plain = await runAsync('nbdinfo', [s.uri('disk')]);
    assert.notEqual(plain.status, 0, 'a plain client gets nothing');
    const list = await runAsync('nbdinfo', ['--list', s.uri('')]);
    assert.notEqual(list.status, 0);
    assert.doesNotMatch(list.stdout, /secret/);
    assert.equal((await runAsync('nbdinfo', ['--size', tlsUri(s)])).stdout.trim(), String(16 * MiB), 'server still fine');
  });

  test('--tls require: raw client gets ERR_TLS_REQD, EXPORT_NAME is a hard disconnect', async (t) => {
    if (!requireTool(t, 'openssl', 'to make a throwaway certificate')) return;
    const s = await serve('raw', { require: true });
    const c = await RawClient.connect({ port: s.port });
    await c.handshake();
    for (const opt of [NBD.OPT.LIST, NBD.OPT.STRUCTURED_REPLY, NBD.OPT.INFO, 99]) {
      const data = opt === NBD.OPT.INFO ? RawClient.goData('disk', []) : undefined;
      assert.equal((await c.option(opt, data))[0].type, NBD.REP.ERR_TLS_REQD, `option ${opt}`);
    }
    assert.equal((await c.option(NBD.OPT.GO, RawClient.goData('disk', [])))[0].type, NBD.REP.ERR_TLS_REQD);
    assert.equal((await c.option(NBD.OPT.STARTTLS, Buffer.alloc(1)))[0].type, NBD.REP.ERR_INVALID, 'STARTTLS with data');
    c.sendOption(NBD.OPT.EXPORT_NAME, Buffer.from('disk'));
    assert.ok(await c.waitClosed());

    // STARTTLS, then the same options work; STARTTLS again is invalid
    const d = await RawClient.connect({ port: s.port });
    await d.handshake();
    const sec = await d.startTls({ ca: cert, servername: 'localhost' });
    assert.equal((await sec.option(NBD.OPT.STARTTLS))[0].type, NBD.REP.ERR_INVALID);
    assert.equal((await sec.option(NBD.OPT.LIST)).at(-1)!.type, NBD.REP.ACK);
    assert.equal((await sec.option(NBD.OPT.STRUCTURED_REPLY))[0].type, NBD.REP.ACK);
    sec.structured = true;
    assert.equal((await sec.option(NBD.OPT.GO, RawClient.goData('disk', [3]))).at(-1)!.type, NBD.REP.ACK);
    const data = randomBytes(8192);
    assert.equal((await sec.cmd(NBD.CMD.WRITE, NBD.FLAG.FUA, 4096, 8192, data)).error, 0);
    assert.ok((await sec.cmd(NBD.CMD.READ, 0, 4096, 8192)).data.equals(data));
    sec.destroy();

    // garbage instead of a TLS ClientHello: only that connection goes
    const g = await RawClient.connect({ port: s.port });
    await g.handshake();
    assert.equal((await g.option(NBD.OPT.STARTTLS))[0].type, NBD.REP.ACK);
    g.write(randomBytes(300));
    assert.ok(await g.waitClosed());
  });

  test('STARTTLS forgets what was negotiated before it', async (t) => {
    if (!requireTool(t, 'openssl', 'to make a throwaway certificate')) return;
    const s = await serve('forget', { require: false });
    const c = await RawClient.connect({ port: s.port });
    await c.handshake();
    assert.equal((await c.option(NBD.OPT.STRUCTURED_REPLY))[0].type, NBD.REP.ACK);
    const sec = await c.startTls({ ca: cert, servername: 'localhost' });
    const go = await sec.option(NBD.OPT.GO, RawClient.goData('disk', []));
    const flags = go.find((r) => r.type === NBD.REP.INFO && r.data.readUInt16BE(0) === 0)!.data.readUInt16BE(10);
    assert.equal(flags & NBD.TX.SEND_DF, 0, 'structured replies not carried over');
    const r = await sec.cmd(NBD.CMD.READ, 0, 0, 512);
    assert.deepEqual(r.chunks, [], 'simple reply');
    sec.destroy();
  });

  test('TLS optional: plain and TLS clients both served; nbdcopy over TLS', async (t) => {
    if (!ready(t, 'nbdcopy')) return;
    const target = new TestTarget(16 * MiB);
    const s = await serve('opt', { require: false }, target);
    const plain = await runAsync('nbdinfo', ['--json', s.uri('disk')]);
    assert.equal(plain.status, 0, plain.stderr);
    assert.equal((JSON.parse(plain.stdout) as { TLS: boolean }).TLS, false);
    const input = join(dir.path, 'in.img');
    const data = randomBytes(16 * MiB);
    writeFileSync(input, data);
    const w = await runAsync('nbdcopy', ['--connections=2', input, tlsUri(s)], { timeoutMs: 30000 });
    assert.equal(w.status, 0, w.stderr);
    const b = new Uint8Array(16 * MiB);
    target.dev.readSync(b, 0);
    assert.equal(sha256(b), sha256(data));
    const out = join(dir.path, 'out.img');
    const r = await runAsync('nbdcopy', [tlsUri(s), out], { timeoutMs: 30000 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(await sha256File(out), sha256(data));
  });

  test('verifyPeer: clients must present a certificate signed by the CA', async (t) => {
    if (!ready(t, 'nbdinfo')) return;
    const s = await serve('mtls', { require: true, ca: true, verifyPeer: true });
    const noCert = await runAsync('nbdinfo', ['--size', tlsUri(s, pki)]);
    assert.notEqual(noCert.status, 0, 'no client certificate: refused');
    const withCert = await runAsync('nbdinfo', ['--size', tlsUri(s, pkiClient)]);
    assert.equal(withCert.status, 0, withCert.stderr);
    assert.equal(withCert.stdout.trim(), String(16 * MiB));
  });
});

/**
 * A CA given means client certificates are checked, as nbd-server (cacertfile) and qemu-nbd
 * (tls-creds-x509, verify-peer=on) do: a client certificate signed by that CA is served, one
 * signed by another CA is refused, and so is a client with none. Certificates: a CA with a
 * server and a client certificate, and a second CA with its own client certificate, all made
 * by openssl here. libnbd reads them from a directory (tls-certificates=DIR: ca-cert.pem,
 * client-cert.pem, client-key.pem).
 */
describe('nbd over TLS: client certificates checked against --tls-ca', () => {
  const dir = tempDir('nbd-mtls');
  let ours: TestPki;
  let dirs: { signed: string; foreign: string; none: string };
  const servers: TestServer[] = [];
  let daemon: TestDaemon | null = null;

  before(() => {
    try {
      ours = makeTestPki(join(dir.path, 'ca'));
      const theirs = makeTestPki(join(dir.path, 'other-ca'));
      const clientDir = (name: string, client?: TestPki) => {
        const d = join(dir.path, name);
        mkdirSync(d);
        copyFileSync(ours.caFile, join(d, 'ca-cert.pem'));
        if (client) {
          writeFileSync(join(d, 'client-cert.pem'), client.client.cert);
          writeFileSync(join(d, 'client-key.pem'), client.client.key, { mode: 0o600 });
        }
        return d;
      };
      dirs = { signed: clientDir('signed', ours), foreign: clientDir('foreign', theirs), none: clientDir('none') };
    } catch (e) {
      // no openssl: each test says so through requireTool
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  });
  after(async () => {
    for (const s of servers) await s.close();
    if (daemon) await daemon.stop('SIGKILL');
    dir.cleanup();
  });

  const uri = (port: number, exportName: string, certDir: string) => `nbds://localhost:${port}/${exportName}?tls-certificates=${certDir}`;

  /** nbdsh connected to `u` (libnbd reads the certificate directory only when allowed to), then `script` */
  function nbdsh(u: string, script: string) {
    const connect = `h.set_uri_allow_local_file(True)\nh.connect_uri(${JSON.stringify(u)})\n`;
    return runAsync('nbdsh', ['-c', connect + script], { env: systemPythonEnv, timeoutMs: 15000 });
  }

  /** nbdinfo with no client certificate and with another CA's is refused; the signed one reads and writes */
  async function judge(port: number, exportName: string, size: number | null) {
    for (const [what, d] of [['no client certificate', dirs.none], ['a client certificate signed by another CA', dirs.foreign]] as const) {
      const r = await runAsync('nbdinfo', ['--size', uri(port, exportName, d)], { timeoutMs: 15000 });
      assert.notEqual(r.status, 0, `${what}: refused, yet nbdinfo said ${r.stdout}`);
      const w = await nbdsh(uri(port, exportName, d), 'h.pwrite(b"\\xee" * 4096, 0)');
      assert.notEqual(w.status, 0, `${what}: no write either`);
      if (process.env.NBD_TEST_LOG) console.error(w.stderr);
      assert.match(w.stderr, /nbd_connect_uri|handshake|TLS|certificate/i, 'refused at the connection, not for another reason');
    }
    const info = await runAsync('nbdinfo', ['--size', uri(port, exportName, dirs.signed)], { timeoutMs: 15000 });
    assert.equal(info.status, 0, info.stderr);
    if (size !== null) assert.equal(info.stdout.trim(), String(size));
    else assert.ok(Number(info.stdout.trim()) > 0, info.stdout);
    const rw = await nbdsh(
      uri(port, exportName, dirs.signed),
      'h.pwrite(b"\\xa5" * 65536, 4096)\nassert h.pread(65536, 4096) == b"\\xa5" * 65536\nassert h.pread(4096, 0) != b"\\xee" * 4096\nprint("ok")',
    );
    assert.equal(rw.status, 0, rw.stderr);
    assert.equal(rw.stdout.trim(), 'ok');
  }

  function ready(t: Parameters<typeof requireTool>[0]): boolean {
    return requireTool(t, 'openssl', 'to make the CAs and certificates') && requireTool(t, 'nbdinfo') && requireTool(t, 'nbdsh', 'Debian package python3-libnbd');
  }

  test('NbdServer with a ca: the CA decides who is served', async (t) => {
    if (!ready(t)) return;
    const d = join(dir.path, 'srv');
    mkdirSync(d);
    const target = new TestTarget(16 * MiB);
    const s = await startServer([{ name: 'disk', target }], d, {
      tls: { key: readFileSync(ours.serverKey, 'utf8'), cert: readFileSync(ours.serverCert, 'utf8'), ca: readFileSync(ours.caFile, 'utf8'), require: true },
    });
    servers.push(s);
    await judge(s.port, 'disk', 16 * MiB);
    const b = new Uint8Array(4096);
    target.dev.readSync(b, 0);
    assert.ok(b.every((x) => x === 0), 'the refused clients wrote nothing');
  });

  test('tsmd daemon --tls-ca: the CA decides who is served', async (t) => {
    if (!ready(t)) return;
    daemon = await startDaemon(join(dir.path, 'run'), ['--tls-cert', ours.serverCert, '--tls-key', ours.serverKey, '--tls-ca', ours.caFile, '--tls=require']);
    const files = [0, 1].map((i) => sparseFile(join(dir.path, `m${i}.img`), 16 * MiB));
    const c = daemon.tsmd(['--create', '/dev/md0', '-l1', '-n2', '--assume-clean', '--run', ...files]);
    assert.equal(c.status, 0, c.stderr);
    await judge(daemon.info.nbd!.port, 'md0', null);
  });
});
