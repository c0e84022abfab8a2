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
import { requireTool, tempDir } from '../helpers/tools.js';
import { MiB, NBD, RawClient, runAsync, sha256, sha256File, startServer, TestTarget, type TestServer } from './helpers.js';

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

  async function serve(name: string, tls: { require: boolean; verifyPeer?: boolean }, target = new TestTarget(16 * MiB)) {
    const d = join(dir.path, name);
    mkdirSync(d);
    const s = await startServer([{ name: 'disk', description: 'secret', target }], d, {
      tls: { key, cert, ca: cert, ...tls },
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
    const s = await serve('mtls', { require: true, verifyPeer: true });
    const noCert = await runAsync('nbdinfo', ['--size', tlsUri(s, pki)]);
    assert.notEqual(noCert.status, 0, 'no client certificate: refused');
    const withCert = await runAsync('nbdinfo', ['--size', tlsUri(s, pkiClient)]);
    assert.equal(withCert.status, 0, withCert.stderr);
    assert.equal(withCert.stdout.trim(), String(16 * MiB));
  });
});
