/**
 * O_DIRECT member I/O (io/file-device.ts `direct`, reopenDirect; io/aligned-pool.ts), for the
 * members of a clustered array shared by several hosts (issue 16 item 9). The judges are the
 * kernel (EINVAL for a misaligned O_DIRECT access, the fd's flags in /proc/self/fdinfo, ramfs
 * refusing O_DIRECT), the backing file read back through a separate buffered fd, and two loop
 * devices over one backing file standing for two hosts: each loop device has its own page
 * cache, as two hosts looking at one shared disk have.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { pathToFileURL } from 'node:url';
import fc from 'fast-check';
import { AssertionError, TsmdError } from '../../src/errors.js';
import { MAX_TAKE_BYTES, POOL_BYTES, pageAlignedArrayBuffer } from '../../src/io/aligned-pool.js';
import { directPool, FileBlockDevice, fileIoStats, openDevice, registerPageAlignedMemory } from '../../src/io/file-device.js';
import { SyncOffload } from '../../src/raid/offload/bulk.js';
import { repoRoot, requireRoot, requireTool, tempDir } from '../helpers/tools.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const O_DIRECT = constants.O_DIRECT;

const tmp = tempDir('direct');
after(() => tmp.cleanup());

/** The file system type of the test's temp dir: O_DIRECT tests need a disk file system. */
function fsType(path: string): string {
  return execFileSync('stat', ['-f', '-c', '%T', path], { encoding: 'utf8' }).trim();
}

/** Skips loudly (fails under CI=true) when the temp dir is not on a disk file system. */
function requireDiskFs(t: TestContext): boolean {
  const type = fsType(tmp.path);
  if (type !== 'tmpfs' && type !== 'ramfs') return true;
  const msg = `TEMP DIR ON ${type}: ${tmp.path} must be on a disk file system (ext4, xfs) for O_DIRECT tests; set TMPDIR`;
  if (process.env.CI) throw new Error(msg);
  console.warn(`\n!!!!! ${msg} — skipping ${t.name}\n`);
  t.skip(msg);
  return false;
}

/** The open flags of one of our fds, from the kernel (fdinfo's "flags:" is octal). */
function fdFlags(fd: number): number {
  const m = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  assert.ok(m, `fdinfo of fd ${fd}`);
  return Number.parseInt(m[1]!, 8);
}

/** The device's current fd, from directFd(), released at once. */
function currentFd(dev: FileBlockDevice): number {
  const h = dev.directFd();
  assert.ok(h);
  h.release();
  return h.fd;
}

function backingFile(name: string, bytes: number, content?: Uint8Array): string {
  const p = join(tmp.path, name);
  writeFileSync(p, content ?? Buffer.alloc(bytes));
  return p;
}

/** Loop devices over `file` for the duration of fn, always detached. */
async function withLoops<T>(file: string, count: number, fn: (devs: string[]) => Promise<T>): Promise<T> {
  const devs: string[] = [];
  try {
    for (let i = 0; i < count; i++) devs.push(execFileSync('losetup', ['-f', '--show', file], { encoding: 'utf8' }).trim());
    return await fn(devs);
  } finally {
    for (const d of devs) spawnSync('losetup', ['-d', d]);
  }
}

function canLoop(t: TestContext): boolean {
  return requireRoot(t, 'loop devices') && requireTool(t, 'losetup', 'two loop devices stand for two hosts') && requireDiskFs(t);
}

describe('aligned memory', () => {
  test('a WebAssembly memory starts where O_DIRECT accepts it; 256 bytes in, the kernel refuses (so the check is live)', async (t) => {
    if (!canLoop(t)) return;
    const file = backingFile('align.img', 1 * MiB, randomBytes(1 * MiB));
    await withLoops(file, 1, async ([loop]) => {
      const fd = openSync(loop!, constants.O_RDONLY | O_DIRECT);
      try {
        // several fresh memories (V8 maps each one), and the pool's own buffers
        for (let i = 0; i < 8; i++) {
          const ab = pageAlignedArrayBuffer(64 * KiB * (i + 1));
          assert.equal(readSync(fd, new Uint8Array(ab, 0, 4096), 0, 4096, 0), 4096);
          assert.equal(readSync(fd, new Uint8Array(ab, 4096, 512), 0, 512, 512), 512);
          assert.throws(() => readSync(fd, new Uint8Array(ab, 256, 4096), 0, 4096, 0), { code: 'EINVAL' });
        }
        // a malloc'd buffer 16 bytes into its mapping, as Node's large ArrayBuffers are: refused too
        const odd = Buffer.alloc(8192).subarray(1);
        assert.throws(() => readSync(fd, odd, 0, 4096, 0), { code: 'EINVAL' });
        const b = await directPool.take(8192);
        try {
          assert.equal(readSync(fd, b, 0, 8192, 0), 8192);
          assert.deepEqual(Buffer.from(b), readFileSync(file).subarray(0, 8192));
        } finally {
          directPool.give(b);
        }
      } finally {
        closeSync(fd);
      }
    });
  });

  test('the pool is bounded: a take that does not fit waits, in order, for a give', async () => {
    const held = [];
    const before = directPool.usedBytes;
    for (let i = 0; i < (POOL_BYTES - before) / MAX_TAKE_BYTES; i++) held.push(await directPool.take(MAX_TAKE_BYTES));
    let got: Uint8Array | null = null;
    const waiting = directPool.take(MAX_TAKE_BYTES).then((b) => (got = b));
    await new Promise((r) => setImmediate(r));
    assert.equal(got, null, 'a take beyond the pool waits');
    assert.equal(directPool.waiting, 1);
    assert.throws(() => void directPool.take(MAX_TAKE_BYTES + 1), AssertionError);
    directPool.give(held.pop()!);
    await waiting;
    assert.ok(got);
    assert.equal((got as Uint8Array).byteOffset % 4096, 0);
    directPool.give(got);
    for (const b of held) directPool.give(b);
    assert.equal(directPool.usedBytes, before);
  });
});

describe('direct device on a file', () => {
  test('O_DIRECT fd, no inline I/O, data round trip at unaligned and aligned buffers, 512 B .. 4 MiB, concurrent', async (t) => {
    if (!requireDiskFs(t)) return;
    const size = 16 * MiB;
    const init = randomBytes(size);
    const file = backingFile('roundtrip.img', size, init);
    const dev = await openDevice(file, { direct: true });
    try {
      assert.equal(dev.direct, true);
      assert.equal(dev.directRefusal, null);
      assert.equal(dev.logicalBlockBytes, 512); // ext4 on a 512-byte-sector disk (vda here)
      assert.ok(fdFlags(currentFd(dev)) & O_DIRECT, 'the fd is O_DIRECT');
      const model = Uint8Array.from(init);
      const arena = pageAlignedArrayBuffer(8 * MiB);
      registerPageAlignedMemory(arena);
      const stats0 = { ...fileIoStats };
      // four 4 MiB slots: the operations of one batch each take a different slot (concurrent
      // operations never overlap, as md never overlaps its member I/O)
      const slot = 4 * MiB;
      const op = fc.record({
        write: fc.boolean(),
        startSector: fc.nat({ max: slot / 512 - 1 }),
        sectors: fc.integer({ min: 1, max: slot / 512 }),
        // where the caller's buffer lies: a Buffer at an odd offset, at byteOffset 0 of a malloc'd
        // ArrayBuffer (16 bytes into a page), or aligned in a registered page-aligned memory
        kind: fc.constantFrom('odd', 'plain', 'aligned'),
        skew: fc.integer({ min: 1, max: 4095 }),
      });
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 4 }), async (ops) => {
          let arenaAt = 0;
          const jobs = ops.map(async (o, i) => {
            const start = o.startSector * 512;
            const len = Math.min(o.sectors * 512, slot - start);
            const at = i * slot + start;
            let buf: Uint8Array;
            if (o.kind === 'odd') buf = Buffer.alloc(len + o.skew).subarray(o.skew, o.skew + len);
            else if (o.kind === 'plain') buf = new Uint8Array(len);
            else {
              buf = new Uint8Array(arena, arenaAt, len);
              arenaAt += Math.ceil(len / 4096) * 4096;
              if (arenaAt > arena.byteLength) buf = new Uint8Array(len);
            }
            if (o.write) {
              buf.set(randomBytes(len));
              const copy = Uint8Array.from(buf);
              await dev.write(buf, at);
              model.set(copy, at);
            } else {
              await dev.read(buf, at);
              assert.deepEqual(Buffer.from(buf), Buffer.from(model.subarray(at, at + len)), `read of ${len} at ${at} (${o.kind})`);
            }
          });
          // every operation settles before the run ends: one that failed must not leave the
          // others in flight over the next run's buffers and model (a failure would cascade
          // through the shrinking and hide the first)
          const failed = (await Promise.allSettled(jobs)).find((r) => r.status === 'rejected');
          if (failed) throw failed.reason;
        }),
        { numRuns: 60, includeErrorInReport: true },
      );
      await dev.flush();
      // both direct paths ran, and nothing ran inline or through the buffered paths
      assert.ok(fileIoStats.directOps > stats0.directOps, 'aligned buffers were used as they are');
      assert.ok(fileIoStats.directBounced > stats0.directBounced, 'unaligned buffers went through the pool');
      assert.equal(fileIoStats.inlineOps, stats0.inlineOps, 'no inline I/O on a direct device');
      assert.equal(fileIoStats.poolOps, stats0.poolOps);
      assert.equal(directPool.usedBytes, 0, 'every bounce buffer came back');
      // the independent judge: the file through another, buffered fd
      assert.ok(Buffer.from(model).equals(readFileSync(file)), 'the file holds what was written');
    } finally {
      await dev.close();
    }
  });

  test('I/O not in whole 512-byte blocks is a bug above: an assertion failure, nothing transferred', async (t) => {
    if (!requireDiskFs(t)) return;
    const file = backingFile('misaligned.img', 1 * MiB, randomBytes(1 * MiB));
    const dev = await openDevice(file, { direct: true });
    try {
      const before = readFileSync(file);
      await assert.rejects(dev.write(new Uint8Array(512).fill(7), 100), AssertionError);
      await assert.rejects(dev.write(new Uint8Array(700).fill(7), 0), AssertionError);
      await assert.rejects(dev.read(new Uint8Array(1000), 0), AssertionError);
      assert.ok(readFileSync(file).equals(before), 'nothing written');
      // whole sectors still work on the same device
      await dev.write(new Uint8Array(1024).fill(7), 512);
      assert.ok(readFileSync(file).subarray(512, 1536).every((b) => b === 7));
    } finally {
      await dev.close();
    }
  });

  test('reopenDirect switches in place while I/O runs: every operation completes, data intact, the new fd is O_DIRECT', async (t) => {
    if (!requireDiskFs(t)) return;
    const size = 8 * MiB;
    const file = backingFile('reopen.img', size, randomBytes(size));
    const dev = await openDevice(file);
    try {
      assert.equal(dev.direct, false);
      const oldFd = currentFd(dev);
      assert.equal(fdFlags(oldFd) & O_DIRECT, 0);
      const model = Uint8Array.from(readFileSync(file));
      // buffered writes (2 MiB: on the thread pool, not inline), the switch while they run, then
      // writes and reads of the direct fd, all at once
      const jobs: Promise<void>[] = [];
      for (let i = 0; i < 4; i++) {
        const data = randomBytes(1 * MiB + 512 * i);
        model.set(data, i * 2 * MiB);
        jobs.push(dev.write(data, i * 2 * MiB));
      }
      const switched = dev.reopenDirect(true);
      for (let i = 0; i < 4; i++) {
        const data = randomBytes(64 * KiB);
        model.set(data, i * 2 * MiB + 1536 * KiB);
        jobs.push(dev.write(data, i * 2 * MiB + 1536 * KiB));
      }
      await Promise.all(jobs);
      assert.equal(await switched, true);
      assert.equal(dev.direct, true);
      assert.ok(fdFlags(currentFd(dev)) & O_DIRECT);
      assert.equal(await dev.reopenDirect(true), true, 'a second switch is a no-op');
      const back = new Uint8Array(size);
      await dev.read(back, 0);
      assert.ok(Buffer.from(back).equals(Buffer.from(model)));
      assert.ok(readFileSync(file).equals(Buffer.from(model)));
    } finally {
      await dev.close();
    }
    await assert.rejects(dev.reopenDirect(true), (e: unknown) => e instanceof TsmdError && e.code === 'ENODEV');
  });

  test('the sync helper threads work on a direct device’s O_DIRECT fd', async (t) => {
    if (!requireDiskFs(t)) return;
    const size = 8 * MiB;
    const a = await openDevice(backingFile('offload-a.img', size, randomBytes(size)), { direct: true });
    const bFile = backingFile('offload-b.img', size);
    const b = await openDevice(bFile, { direct: true });
    const offload = new SyncOffload(2);
    try {
      const fa = a.directFd()!;
      const fb = b.directFd()!;
      try {
        assert.ok(fdFlags(fa.fd) & O_DIRECT && fdFlags(fb.fd) & O_DIRECT);
        // whole sectors at sector offsets, as md gives them
        const flagged = await offload.run('copy', [{ tag: 0, srcs: [[fa.fd, 512]], dsts: [[fb.fd, 3 * 512]], bytes: 5 * MiB + 512 }]);
        assert.equal(flagged.size, 0);
        const cmp = await offload.run('compare', [{ tag: 0, srcs: [[fa.fd, 512], [fb.fd, 3 * 512]], dsts: [], bytes: 5 * MiB + 512 }]);
        assert.equal(cmp.size, 0);
      } finally {
        fa.release();
        fb.release();
      }
      assert.ok(readFileSync(bFile).subarray(1536, 1536 + 5 * MiB + 512).equals(readFileSync(a.name).subarray(512, 512 + 5 * MiB + 512)));
    } finally {
      await offload.close();
      await a.close();
      await b.close();
    }
  });
});

describe('two hosts on one shared disk (two loop devices over one backing file)', () => {
  const size = 4 * MiB;

  test('buffered: host B reads stale data after A writes (the test can fail); direct on both: B always reads A’s latest write', async (t) => {
    if (!canLoop(t)) return;
    const file = backingFile('shared.img', size, randomBytes(size));
    await withLoops(file, 2, async ([loopA, loopB]) => {
      const at = 1 * MiB + 4096;
      const len = 64 * KiB;
      // buffered on both hosts: B's page cache answers B's second read
      {
        const a = await openDevice(loopA!);
        const b = await openDevice(loopB!);
        try {
          const primed = new Uint8Array(len);
          await b.read(primed, at);
          const fresh = randomBytes(len);
          await a.write(fresh, at);
          await a.flush();
          const again = new Uint8Array(len);
          await b.read(again, at);
          assert.ok(Buffer.from(again).equals(Buffer.from(primed)), 'B served the read from its own cache');
          assert.ok(!Buffer.from(again).equals(fresh), 'and so missed A’s write: the stale read this test exists to catch');
        } finally {
          await a.close();
          await b.close();
        }
      }
      // direct on both: every read of B sees the last write of A, even with B's cache primed
      {
        const a = await openDevice(loopA!, { direct: true });
        const b = await openDevice(loopB!, { direct: true });
        try {
          assert.equal(a.direct && b.direct, true);
          assert.equal(a.logicalBlockBytes, 512);
          for (let i = 0; i < 200; i++) {
            const off = (i * 7919 * 512) % (size - len);
            const n = 512 * (1 + ((i * 31) % 128));
            const before = new Uint8Array(n);
            await b.read(before, off);
            const data = randomBytes(n);
            await a.write(data, off);
            const seen = i % 2 === 0 ? new Uint8Array(n) : Buffer.alloc(n + 3).subarray(3);
            await b.read(seen, off);
            assert.ok(Buffer.from(seen).equals(data), `iteration ${i}: B reads A's write of ${n} bytes at ${off}`);
          }
        } finally {
          await a.close();
          await b.close();
        }
      }
    });
  });

  test('members opened buffered, switched with reopenDirect: A’s unflushed buffered writes reach B, B’s primed cache is bypassed, O_EXCL is kept', async (t) => {
    if (!canLoop(t)) return;
    const file = backingFile('switch.img', size, randomBytes(size));
    await withLoops(file, 2, async ([loopA, loopB]) => {
      const a = await openDevice(loopA!, { exclusive: true });
      const b = await openDevice(loopB!, { exclusive: true });
      try {
        const at = 512 * KiB;
        const len = 128 * KiB;
        const primed = new Uint8Array(len);
        await b.read(primed, at);
        // A writes buffered and does not flush: only the switch's writeback can carry it to the disk
        const early = randomBytes(len);
        await a.write(early, at);
        assert.equal(await a.reopenDirect(true), true);
        assert.equal(await b.reopenDirect('try'), true);
        const seen = new Uint8Array(len);
        await b.read(seen, at);
        assert.ok(Buffer.from(seen).equals(early), 'B sees A’s write made before the switch');
        const late = randomBytes(len);
        await a.write(late, at);
        await b.read(seen, at);
        assert.ok(Buffer.from(seen).equals(late), 'and A’s direct write after it');
        // the O_EXCL claim outlives the switch: another exclusive opener is still refused
        assert.throws(() => openSync(loopA!, constants.O_RDONLY | constants.O_EXCL), { code: 'EBUSY' });
      } finally {
        await a.close();
        await b.close();
      }
      // and is released by close()
      closeSync(openSync(loopA!, constants.O_RDONLY | constants.O_EXCL));
    });
  });
});

describe('file systems without O_DIRECT', () => {
  /**
   * In a private mount namespace (nothing visible outside, gone with the process): ramfs, which
   * refuses O_DIRECT at open (the kernel, asked by a raw O_DIRECT open, is the judge), and tmpfs,
   * which refused it before Linux 6.6 and takes it since.
   */
  test('direct: true refuses with ENOTSUP naming the path and why; "try" falls back with direct === false', async (t) => {
    if (!requireRoot(t, 'a mount namespace') || !requireTool(t, 'unshare', 'a private mount namespace')) return;
    const mnt = join(tmp.path, 'mnt');
    const script = join(tmp.path, 'nodirect.mjs');
    const lib = pathToFileURL(join(repoRoot, 'dist/src/io/file-device.js')).href;
    writeFileSync(
      script,
      `import { openSync, closeSync, constants, writeFileSync, mkdirSync } from 'node:fs';
import { openDevice } from ${JSON.stringify(lib)};
const out = {};
for (const fs of ['ramfs', 'tmpfs']) {
  const p = process.argv[2] + '/' + fs + '/member.img';
  writeFileSync(p, Buffer.alloc(1 << 20, 1));
  const r = {};
  try { closeSync(openSync(p, constants.O_RDWR | constants.O_DIRECT)); r.kernel = 'ok'; } catch (e) { r.kernel = e.code; }
  try { const d = await openDevice(p, { direct: true }); r.strict = { direct: d.direct }; await d.close(); }
  catch (e) { r.strict = { code: e.code, name: e.name, message: e.message }; }
  const d = await openDevice(p, { direct: 'try' });
  r.tryDirect = d.direct; r.refusal = d.directRefusal;
  const w = Buffer.alloc(4096, 9); await d.write(w, 8192); const back = Buffer.alloc(4096); await d.read(back, 8192);
  r.roundTrip = back.equals(w);
  const b = await openDevice(p);
  try { await b.reopenDirect(true); r.reopenStrict = 'ok'; } catch (e) { r.reopenStrict = e.code; }
  r.reopenTry = await b.reopenDirect('try'); r.afterReopenTry = b.direct;
  await b.read(back, 8192); r.stillWorks = back.equals(w);
  await b.close(); await d.close();
  out[fs] = r;
}
console.log(JSON.stringify(out));
`,
    );
    execFileSync('mkdir', ['-p', join(mnt, 'ramfs'), join(mnt, 'tmpfs')]);
    const r = spawnSync(
      'unshare',
      [
        '-m',
        '--propagation',
        'private',
        'sh',
        '-ec',
        'mount -t ramfs ramfs "$1/ramfs"; mount -t tmpfs -o size=8m tmpfs "$1/tmpfs"; exec "$2" "$3" "$1"',
        'sh',
        mnt,
        process.execPath,
        script,
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, Record<string, unknown>>;
    const ramfs = out.ramfs!;
    assert.equal(ramfs.kernel, 'EINVAL', 'ramfs refuses O_DIRECT at open (the judge)');
    const strict = ramfs.strict as { code: string; name: string; message: string };
    assert.equal(strict.code, 'ENOTSUP');
    assert.equal(strict.name, 'TsmdError');
    assert.match(strict.message, /ramfs\/member\.img: cannot open with O_DIRECT: the file system or device refuses O_DIRECT/);
    assert.match(strict.message, /A clustered array needs O_DIRECT on members shared by several hosts/);
    assert.equal(ramfs.tryDirect, false);
    assert.equal(ramfs.refusal, strict.message, 'the fallback says why, for the caller’s warning');
    assert.equal(ramfs.roundTrip, true, 'the fallback does buffered I/O');
    assert.equal(ramfs.reopenStrict, 'ENOTSUP');
    assert.equal(ramfs.reopenTry, false);
    assert.equal(ramfs.afterReopenTry, false);
    assert.equal(ramfs.stillWorks, true, 'a refused switch leaves the device working as before');
    // tmpfs takes O_DIRECT since Linux 6.6 (the judge says which), but it is memory that only
    // this host sees, and it has no block device to align to: refused either way, saying why
    const tmpfs = out.tmpfs!;
    const tStrict = tmpfs.strict as { code: string; message: string };
    assert.equal(tStrict.code, 'ENOTSUP');
    assert.match(
      tStrict.message,
      tmpfs.kernel === 'ok'
        ? /tmpfs\/member\.img: cannot open with O_DIRECT: it is on tmpfs, whose st_dev \d+:\d+ is no block device in sysfs/
        : /tmpfs\/member\.img: cannot open with O_DIRECT: the file system or device refuses O_DIRECT/,
    );
    assert.equal(tmpfs.tryDirect, false);
    assert.equal(tmpfs.refusal, tStrict.message);
    assert.equal(tmpfs.roundTrip, true);
  });

  test('a device of 4096-byte logical blocks is refused (tsmd writes 512-byte sectors); "try" falls back', async (t) => {
    if (!requireRoot(t, 'loop devices') || !requireTool(t, 'losetup') || !requireDiskFs(t)) return;
    const file = backingFile('4kn.img', 1 * MiB, randomBytes(1 * MiB));
    const loop = execFileSync('losetup', ['-f', '--show', '--sector-size', '4096', file], { encoding: 'utf8' }).trim();
    try {
      assert.equal(readFileSync(`/sys/block/${loop.slice(5)}/queue/logical_block_size`, 'utf8').trim(), '4096');
      await assert.rejects(
        openDevice(loop, { direct: true }),
        (e: unknown) =>
          e instanceof TsmdError &&
          e.code === 'ENOTSUP' &&
          e.message.includes(`${loop}: cannot open with O_DIRECT: its logical block size is 4096 bytes`),
      );
      const dev = await openDevice(loop, { direct: 'try' });
      try {
        assert.equal(dev.direct, false);
        assert.equal(dev.logicalBlockBytes, 4096);
        assert.match(dev.directRefusal!, /logical block size is 4096 bytes/);
        assert.equal(fdFlags(currentFd(dev)) & O_DIRECT, 0);
      } finally {
        await dev.close();
      }
    } finally {
      spawnSync('losetup', ['-d', loop]);
    }
  });
});
