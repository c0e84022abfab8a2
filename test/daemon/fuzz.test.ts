/**
 * Hostile NBD clients against the real daemon (bin/tsmd daemon, a child process), driven by a
 * seeded PRNG (TSMD_DAEMON_FUZZ_SEED to replay, TSMD_DAEMON_FUZZ_ROUNDS for more rounds): the
 * attacks of the NBD server fuzzer (garbage and truncated handshakes, bad magics, unknown
 * options/commands/flags, lengths beyond the limit, beyond-end offsets, truncated payloads
 * with abrupt disconnects, floods of unread replies) over TCP and the Unix socket, against a
 * RAID5 array filled with a known pattern, a scratch array that takes anything, and a
 * read-only array. Meanwhile a well-behaved client keeps writing and verifying its own region
 * of the RAID5. Afterwards the daemon is still up and answers the CLI, the array is clean with
 * all its members, fresh clients are served, every byte outside the good client's region is
 * the pattern, the good client's region is what it last wrote, the logs hold no error, and
 * SIGTERM stops the daemon with exit 0.
 */
import assert from 'node:assert/strict';
import { createCipheriv, createHash } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { fields, sparseFile, tempDir, tsmdBin } from '../helpers/tools.js';
import { connectGo, type FuzzTarget, hostileClient, MiB, NBD, Prng, type RawClient, runAsync, sha256 } from '../nbd/helpers.js';

const ROUNDS = Number(process.env.TSMD_DAEMON_FUZZ_ROUNDS ?? 300);
const SEED = Number(process.env.TSMD_DAEMON_FUZZ_SEED ?? 0xda3e);
const FUZZERS = 4;
/** the good client's region at the start of md0; hostile clients never write md0 validly */
const GOOD_BYTES = 4 * MiB;
/** the daemon's NBD server default */
const MAX_PAYLOAD = 32 * MiB;

/** `n` bytes of a deterministic pattern (AES-128-CTR keystream keyed by the seed). */
function pattern(seed: number, tag: string, n: number): Buffer {
  const key = createHash('sha256').update(`tsmd-daemon-fuzz:${tag}:${seed}`).digest().subarray(0, 16);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n));
}

async function writeAll(c: RawClient, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length; off += MiB) {
    const chunk = data.subarray(off, Math.min(off + MiB, data.length));
    const r = await c.cmd(NBD.CMD.WRITE, 0, off, chunk.length, chunk);
    assert.equal(r.error, 0, `fill write at ${off}`);
  }
  assert.equal((await c.cmd(NBD.CMD.FLUSH, 0, 0, 0)).error, 0, 'flush');
}

async function readAll(c: RawClient, size: number): Promise<Buffer> {
  const out = Buffer.alloc(size);
  for (let off = 0; off < size; off += MiB) {
    const len = Math.min(MiB, size - off);
    const r = await c.cmd(NBD.CMD.READ, 0, off, len);
    assert.equal(r.error, 0, `read at ${off}`);
    r.data.copy(out, off);
  }
  return out;
}

/** The daemon's pino lines at level error (50) or above, and any line that is not JSON. */
function badLogLines(logs: string): string[] {
  const bad: string[] = [];
  for (const line of logs.split('\n')) {
    if (!line.trim()) continue;
    let rec: { level?: number };
    try {
      rec = JSON.parse(line) as { level?: number };
    } catch {
      bad.push(`not a log record: ${line}`);
      continue;
    }
    if ((rec.level ?? 0) >= 50 || /uncaught|unhandled/i.test(line)) bad.push(line);
  }
  return bad;
}

async function metric(port: number, re: RegExp): Promise<string | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return re.exec(text)?.[1];
}

describe('daemon nbd fuzz', () => {
  let dir: ReturnType<typeof tempDir>;
  let d: TestDaemon;
  let socketPath: string;
  let size = 0;
  let fill: Buffer;
  let outsideSum = '';
  let roData: Buffer;

  before(async () => {
    dir = tempDir('daemon-fuzz');
    const runDir = join(dir.path, 'run');
    socketPath = join(dir.path, 'nbd.sock');
    d = await startDaemon(runDir, ['--unix', socketPath, '--metrics', '127.0.0.1:0']);
    const img = (name: string, n: number, mib: number) => Array.from({ length: n }, (_, k) => sparseFile(join(dir.path, `${name}${k}.img`), mib * MiB));
    let r = d.tsmd(['--create', '/dev/md0', '-l5', '-n4', '-c64', '--run', '--assume-clean', ...img('d', 4, 24)]);
    assert.equal(r.status, 0, r.stderr);
    // anything goes on the scratch array; the read-only one must refuse every write
    r = d.tsmd(['--create', '/dev/md1', '-l5', '-n3', '-c64', '--run', '--assume-clean', ...img('s', 3, 8)]);
    assert.equal(r.status, 0, r.stderr);
    r = d.tsmd(['--create', '/dev/md2', '-l1', '-n2', '--run', '--assume-clean', ...img('r', 2, 8)]);
    assert.equal(r.status, 0, r.stderr);

    const port = d.info.nbd!.port;
    const md0 = await connectGo({ port }, 'md0');
    size = md0.size;
    assert.ok(size > 48 * MiB, `md0 is ${size} bytes`);
    fill = pattern(SEED, 'md0', size);
    await writeAll(md0.c, fill);
    assert.equal(sha256(await readAll(md0.c, size)), sha256(fill), 'the pattern reads back before the fuzzing');
    outsideSum = sha256(fill.subarray(GOOD_BYTES));
    md0.c.destroy();

    const md2 = await connectGo({ port }, 'md2');
    roData = pattern(SEED, 'md2', md2.size);
    await writeAll(md2.c, roData);
    md2.c.destroy();
    r = d.tsmd(['--readonly', '/dev/md2']);
    assert.equal(r.status, 0, r.stderr);
  });
  after(async () => {
    await d?.stop('SIGKILL');
    dir?.cleanup();
  });

  test(`${ROUNDS} rounds of hostile clients (seed ${SEED}) while a good client reads and writes`, { timeout: 180_000 }, async () => {
    const port = d.info.nbd!.port;
    const metricsPort = d.info.metrics!.port;
    const target: FuzzTarget = {
      endpoints: [{ port }, { path: socketPath }],
      shared: 'md0',
      goodBytes: GOOD_BYTES,
      scratch: 'md1',
      readOnly: 'md2',
      maxPayloadBytes: MAX_PAYLOAD,
    };
    const t0 = Date.now();
    const model = Buffer.from(fill.subarray(0, GOOD_BYTES));
    let stop = false;
    let goodOps = 0;
    let worstMs = 0;
    const good = (async () => {
      const p = new Prng(SEED + 1);
      const { c } = await connectGo({ port }, 'md0', { structured: true });
      while (!stop) {
        const len = 512 * (1 + p.int(128));
        const off = p.int((GOOD_BYTES - len) / 512 + 1) * 512;
        const t1 = Date.now();
        if (p.int(2)) {
          const data = p.bytes(len);
          const r = await c.cmd(NBD.CMD.WRITE, p.int(8) === 0 ? NBD.FLAG.FUA : 0, off, len, data);
          assert.equal(r.error, 0, `good write at ${off}+${len}`);
          model.set(data, off);
        } else {
          const r = await c.cmd(NBD.CMD.READ, 0, off, len);
          assert.equal(r.error, 0, `good read at ${off}+${len}`);
          assert.ok(r.data.equals(model.subarray(off, off + len)), `good client read at ${off}+${len} differs`);
        }
        worstMs = Math.max(worstMs, Date.now() - t1);
        goodOps++;
      }
      c.send(NBD.CMD.DISC, 0, 0n, 0, 0);
      await c.waitClosed(2000);
      c.destroy();
    })();
    // the control socket keeps answering while the NBD port is under attack
    let probes = 0;
    const prober = (async () => {
      while (!stop) {
        const r = await runAsync(process.execPath, [tsmdBin, '--run-dir', d.runDir, '--detail', '/dev/md0'], { timeoutMs: 20_000 });
        assert.equal(r.status, 0, `tsmd --detail during the fuzzing: ${r.stderr}`);
        probes++;
        await new Promise((res) => setTimeout(res, 500));
      }
    })();

    const master = new Prng(SEED);
    let round = 0;
    const fuzzer = async (id: number) => {
      while (round < ROUNDS) {
        const r = round++;
        const p = new Prng(master.u32() ^ (r * 0x9e3779b1) ^ id);
        try {
          await hostileClient(p, target);
        } catch (e) {
          throw new Error(`fuzz round ${r} (seed ${SEED}): ${(e as Error).message}`, { cause: e });
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: FUZZERS }, (_, i) => fuzzer(i)));
    } finally {
      stop = true;
      await Promise.allSettled([good, prober]);
    }
    await good;
    await prober;
    const fuzzMs = Date.now() - t0;
    if (process.env.TSMD_TEST_LOG) {
      // what the daemon said about it, by message
      const byMsg: Record<string, number> = {};
      for (const line of d.logs().split('\n')) {
        const m = /"msg":"([^"]*)"/.exec(line);
        if (m) byMsg[m[1]!] = (byMsg[m[1]!] ?? 0) + 1;
      }
      console.log(JSON.stringify({ fuzzMs, goodOps, worstMs, probes, logs: byMsg }, null, 1));
    }

    // the daemon is the one that started, still running
    assert.equal(d.proc.exitCode, null, `daemon exited:\n${d.logs()}`);
    assert.equal(d.proc.signalCode, null);
    assert.doesNotThrow(() => process.kill(d.info.pid, 0), 'daemon pid alive');
    // (~100-200 operations per 300 rounds on 2 CPUs, ~400/s without the hostile clients)
    assert.ok(goodOps > 50, `the good client was served during the fuzzing (${goodOps} operations)`);
    assert.ok(worstMs < 5000, `the good client never waited long (worst ${worstMs} ms)`);
    assert.ok(probes >= 1, 'tsmd --detail answered during the fuzzing');

    // every hostile connection goes away (stalled handshakes were dropped by their clients)
    const deadline = Date.now() + 5000;
    let conns: string | undefined;
    while ((conns = await metric(metricsPort, /^tsmd_nbd_connections (\d+)$/m)) !== '0' && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 100));
    }
    assert.equal(conns, '0', 'no NBD connection left behind');
    // nothing that reached md0 failed (hostile requests are refused before the array)
    const errs = await metric(metricsPort, /^tsmd_io_errors_total\{array="md0"[^}]*\} ([1-9]\d*)$/m);
    assert.equal(errs, undefined, 'no failed I/O on md0');

    // the array is healthy and the CLI answers
    const r = d.tsmd(['--detail', '/dev/md0']);
    assert.equal(r.status, 0, r.stderr);
    const f = fields(r.stdout);
    assert.match(f.get('State') ?? '', /^(clean|active)$/, r.stdout);
    assert.equal(f.get('Active Devices'), '4', r.stdout);
    assert.equal(f.get('Failed Devices'), '0', r.stdout);

    // fresh clients are served on both endpoints; the data is what it must be
    const tcp = await connectGo({ port }, 'md0', { structured: true });
    const back = await readAll(tcp.c, size);
    tcp.c.destroy();
    assert.equal(sha256(back.subarray(GOOD_BYTES)), outsideSum, 'no hostile write reached md0 outside the good client region');
    assert.ok(back.subarray(0, GOOD_BYTES).equals(model), 'the good client region holds what it last wrote');
    const unix = await connectGo({ path: socketPath }, 'md2');
    assert.equal(sha256(await readAll(unix.c, unix.size)), sha256(roData), 'the read-only array is unchanged');
    unix.c.destroy();

    const bad = badLogLines(d.logs());
    assert.deepEqual(bad, [], `daemon log errors:\n${bad.join('\n')}`);
    const code = await d.stop('SIGTERM');
    assert.equal(code, 0, d.logs().split('\n').slice(-20).join('\n'));
    assert.deepEqual(badLogLines(d.logs()), [], 'no error while stopping');
  });
});
