/**
 * Scripted edge cases through libnbd's Python binding (nbdsh), with libnbd's own client-side
 * checks off (strict mode 0) so that the server is the one that answers: reads and writes
 * beyond the end, read-only exports, bad flags, misalignment, FUA/DF/NO_HOLE/FAST_ZERO,
 * structured replies on and off, and the option haggling of opt mode.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requireTool, tempDir } from '../helpers/tools.js';
import { MiB, runAsync, startServer, systemPythonEnv, TestTarget, type TestServer } from './helpers.js';

const SCRIPT = String.raw`
import json, os
import nbd

def err(f):
    try:
        f()
        return 0
    except nbd.Error as e:
        return e.errnum

out = {}
uri, ro_uri, plain_uri = os.environ['URI'], os.environ['RO_URI'], os.environ['PLAIN_URI']

for sr in (True, False):
    h = nbd.NBD()
    h.set_request_structured_replies(sr)
    h.set_strict_mode(0)
    h.connect_uri(uri)
    size = h.get_size()
    r = {'structured': h.get_structured_replies_negotiated(), 'can_df': h.can_df()}
    r['read_beyond'] = err(lambda: h.pread(1024, size - 512))
    r['read_far'] = err(lambda: h.pread(512, 1 << 60))
    r['write_beyond'] = err(lambda: h.pwrite(b'x' * 1024, size - 512))
    r['zero_beyond'] = err(lambda: h.zero(1024, size - 512))
    r['trim_beyond'] = err(lambda: h.trim(1024, size - 512))
    r['bad_flag'] = err(lambda: h.pread(512, 0, nbd.CMD_FLAG_FUA))
    r['misaligned'] = err(lambda: h.pread(100, 1))
    r['oversize'] = err(lambda: h.pread(64 * 1024 * 1024, 0))
    h.pwrite(b'\xab' * 4096, 8192, nbd.CMD_FLAG_FUA)
    r['readback'] = h.pread(4096, 8192) == b'\xab' * 4096
    if sr:
        chunks = []
        h.pread_structured(65536, 0, lambda buf, off, status, error: chunks.append([len(buf), off, status]) or 0, nbd.CMD_FLAG_DF)
        r['df_chunks'] = chunks
    h.zero(4096, 8192, nbd.CMD_FLAG_NO_HOLE)
    r['zeroed'] = h.pread(4096, 8192) == bytes(4096)
    h.pwrite(b'\xcd' * 4096, 8192)
    h.trim(4096, 8192, nbd.CMD_FLAG_FUA)
    r['trimmed'] = h.pread(4096, 8192) == bytes(4096)
    h.cache(65536, 0)
    h.flush()
    # many requests in flight at once on one connection, answered by cookie
    cookies = [h.aio_pwrite(bytes([i]) * 4096, 1048576 + i * 4096) for i in range(64)]
    for c in cookies:
        while not h.aio_command_completed(c):
            h.poll(-1)
    r['pipelined'] = all(h.pread(4096, 1048576 + i * 4096) == bytes([i]) * 4096 for i in range(64))
    h.shutdown()
    out['sr' if sr else 'simple'] = r

h = nbd.NBD()
h.set_strict_mode(0)
h.connect_uri(ro_uri)
out['ro'] = {
    'read_only': h.is_read_only(),
    'write': err(lambda: h.pwrite(b'x' * 512, 0)),
    'trim': err(lambda: h.trim(512, 0)),
    'zero': err(lambda: h.zero(512, 0)),
    'read': len(h.pread(512, 0)),
}
h.shutdown()

h = nbd.NBD()
h.set_strict_mode(0)
h.connect_uri(plain_uri)
out['plain'] = {
    'can_fast_zero': h.can_fast_zero(),
    'can_zero': h.can_zero(),
    'fast_zero': err(lambda: h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO)),
    'slow_zero': err(lambda: h.zero(3 * 1024 * 1024, 0)),
}
h.shutdown()

h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(uri)
names = []
h.opt_list(lambda name, desc: names.append([name, desc]) or 0)
out['list'] = names
h.set_export_name('nope')
out['info_unknown'] = err(lambda: h.opt_info())
h.set_export_name('disk')
h.opt_info()
out['info_size'] = h.get_size()
metas = []
out['meta'] = err(lambda: h.opt_list_meta_context(lambda name: metas.append(name) or 0))
out['metas'] = metas
h.opt_go()
out['go_size'] = h.get_size()
out['go_read'] = len(h.pread(4096, 0))
h.shutdown()

h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(uri)
h.opt_abort()
out['aborted'] = h.aio_is_closed()

print(json.dumps(out))
`;

describe('nbd with nbdsh (libnbd python)', () => {
  const dir = tempDir('nbd-sh');
  let srv: TestServer;

  before(async () => {
    srv = await startServer(
      [
        { name: 'disk', description: 'main', target: new TestTarget(16 * MiB) },
        { name: 'ro', target: new TestTarget(MiB, { readOnly: true }) },
        { name: 'plain', target: new TestTarget(8 * MiB, { noTrim: true, noZero: true }) },
      ],
      dir.path,
    );
  });
  after(async () => {
    await srv.close();
    dir.cleanup();
  });

  test('edge cases answered by the server', async (t) => {
    if (!requireTool(t, 'nbdsh', 'Debian package python3-libnbd')) return;
    const script = join(dir.path, 'edge.py');
    writeFileSync(script, SCRIPT);
    const r = await runAsync('nbdsh', ['-n', '-c', `exec(open(${JSON.stringify(script)}).read())`], {
      env: { ...systemPythonEnv, URI: srv.uri('disk'), RO_URI: srv.unixUri('ro'), PLAIN_URI: srv.uri('plain') },
      timeoutMs: 30000,
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    if (process.env.NBD_TEST_LOG) console.log(r.stdout);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, Record<string, unknown>> & {
      list: [string, string][];
    };
    const EPERM = 1;
    const EINVAL = 22;
    const ENOSPC = 28;
    const ENOTSUP = 95;
    for (const mode of ['sr', 'simple']) {
      const m = out[mode];
      assert.equal(m.structured, mode === 'sr');
      assert.equal(m.can_df, mode === 'sr');
      assert.equal(m.read_beyond, EINVAL, `${mode}: read beyond the end`);
      assert.equal(m.read_far, EINVAL, `${mode}: read at 2^60`);
      assert.equal(m.write_beyond, ENOSPC, `${mode}: write beyond the end`);
      assert.equal(m.zero_beyond, ENOSPC, `${mode}: zero beyond the end`);
      assert.equal(m.trim_beyond, EINVAL, `${mode}: trim beyond the end`);
      assert.equal(m.bad_flag, EINVAL, `${mode}: FUA on a read`);
      assert.equal(m.misaligned, EINVAL, `${mode}: misaligned after block sizes were negotiated`);
      assert.equal(m.oversize, EINVAL, `${mode}: read larger than the maximum payload`);
      assert.equal(m.readback, true);
      assert.equal(m.zeroed, true);
      assert.equal(m.trimmed, true);
      assert.equal(m.pipelined, true);
    }
    assert.deepEqual(out.sr.df_chunks, [[65536, 0, 1]], 'DF: one OFFSET_DATA chunk (status 1 = data)');
    assert.deepEqual(out.ro, { read_only: true, write: EPERM, trim: EPERM, zero: EPERM, read: 512 });
    assert.deepEqual(out.plain, { can_fast_zero: true, can_zero: true, fast_zero: ENOTSUP, slow_zero: 0 });
    assert.deepEqual(out.list, [
      ['disk', 'main'],
      ['ro', ''],
      ['plain', ''],
    ]);
    assert.equal(out.info_unknown, 2, 'ERR_UNKNOWN: libnbd says ENOENT');
    assert.equal(out.info_size, 16 * MiB);
    assert.equal(out.meta, 0, 'LIST_META_CONTEXT answered, and haggling goes on');
    assert.deepEqual(out.metas, ['base:allocation'], 'the one context offered');
    assert.equal(out.go_size, 16 * MiB);
    assert.equal(out.go_read, 4096);
    assert.equal(out.aborted, true);
  });
});
