/**
 * Arrays made by the real Linux kernel (shared/fixtures/kernel-md) assemble in tsmd and read
 * back the documented data pattern over their whole size.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isTsmdError } from '../../src/errors.js';
import { openDevice } from '../../src/io/file-device.js';
import { MdArray } from '../../src/md/array.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { checkPattern, fillPattern, fixtureMembers } from '../helpers/fixtures.js';
import { SystemClock } from '../../src/env/clock.js';

const KEY2 = 0xa5a5a5a5a5a5a5a5n;

async function open(name: string, opts: { run?: boolean; members?: number[] } = {}) {
  let paths = fixtureMembers(name);
  if (opts.members) paths = opts.members.map((i) => paths[i]!);
  const devs = await Promise.all(paths.map((p) => openDevice(p, { readOnly: true })));
  const log: string[] = [];
  const arr = await MdArray.assemble(devs, { clock: new SystemClock(),
    readOnly: true,
    run: opts.run,
    log: (m) => log.push(m),
  });
  return { arr, log };
}

async function readAll(arr: MdArray, check: (buf: Uint8Array, off: number) => void): Promise<void> {
  const step = 1 << 20;
  for (let off = 0; off < arr.sizeBytes; off += step) {
    const n = Math.min(step, arr.sizeBytes - off);
    const buf = new Uint8Array(n);
    await arr.read(buf, off);
    check(buf, off);
  }
}

const clean: Array<[string, number]> = [
  ['raid0-3disk-chunk64', 97517568],
  ['raid1-2disk-bitmap', 32505856],
  ['raid5-4disk-ls-chunk64', 97517568],
  ['raid5-4disk-la-chunk128', 97517568],
  ['raid10-4disk-n2', 65011712],
  ['raid10-4disk-f2', 65011712],
  ['raid6-5disk', 97517568],
];

describe('kernel fixtures: assemble and read the pattern', () => {
  for (const [name, size] of clean) {
    test(name, async () => {
      const { arr } = await open(name);
      try {
        assert.equal(arr.sizeBytes, size, 'array size as the kernel exported it');
        assert.equal(arr.degraded, false);
        await readAll(arr, (buf, off) => {
          const bad = checkPattern(buf, off);
          assert.equal(bad, -1, `pattern mismatch at array byte ${bad}`);
        });
      } finally {
        await arr.close();
      }
    });
  }

  for (const name of [
    'raid5-4disk-ls-chunk64',
    'raid6-5disk',
    'raid10-4disk-n2',
    'raid10-4disk-f2',
    'raid1-2disk-bitmap',
  ]) {
    test(`${name}: degraded reads reconstruct the pattern`, async () => {
      const n = fixtureMembers(name).length;
      const combos: number[][] = [];
      for (let a = 0; a < n; a++) combos.push([a]);
      if (name.startsWith('raid6'))
        for (let a = 0; a < n; a++) for (let b = a + 1; b < n; b++) combos.push([a, b]);
      if (name === 'raid10-4disk-n2') combos.push([0, 2], [1, 3], [0, 3]);
      for (const gone of combos) {
        const keep = [...Array(n).keys()].filter((i) => !gone.includes(i));
        const { arr } = await open(name, { run: true, members: keep });
        try {
          assert.equal(arr.degraded, true);
          await readAll(arr, (buf, off) => {
            const bad = checkPattern(buf, off);
            assert.equal(bad, -1, `without members ${gone}: mismatch at array byte ${bad}`);
          });
        } finally {
          await arr.close();
        }
      }
    });
  }

  for (const name of ['raid1-degraded-bitmap', 'raid1-degraded-bitmap-chunk64k']) {
    test(`${name}: stale member left out, starts only with --run, second pattern reads back`, async () => {
      await assert.rejects(open(name), (e) => isTsmdError(e, 'EBUSY') && /--run/.test(e.message));
      const { arr, log } = await open(name, { run: true });
      try {
        assert.deepEqual(arr.report.stale.length, 1, 'one member is stale');
        assert.match(arr.report.stale[0]!, /d1\.img$/);
        assert.ok(
          log.some((l) => /non-fresh/.test(l)),
          log.join('\n'),
        );
        assert.equal(arr.degraded, true);
        await readAll(arr, (buf, off) => {
          // blocks 0..255 (first MiB) carry key 0xa5.., the rest 0x5a..
          const split = Math.max(0, Math.min(buf.length, (1 << 20) - off));
          assert.equal(checkPattern(buf.subarray(0, split), off, KEY2), -1, 'second pattern');
          assert.equal(checkPattern(buf.subarray(split), off + split), -1, 'first pattern');
        });
      } finally {
        await arr.close();
      }
    });
  }

  for (const name of ['raid5-grow-interrupted', 'raid5-grow-crashed']) {
    test(`${name}: recognised as a reshape in progress and reads back across the frontier`, async () => {
      const { arr } = await open(name);
      try {
        assert.equal(arr.reshapeActive, true);
        // before the reshape finishes the array keeps its pre-grow size
        assert.equal(arr.sizeBytes, 65011712);
        await readAll(arr, (buf, off) => {
          const bad = checkPattern(buf, off);
          assert.equal(bad, -1, `mismatch at array byte ${bad}`);
        });
        await assert.rejects(
          arr.write(new Uint8Array(512), 0),
          (e) => isTsmdError(e, 'EROFS') || isTsmdError(e, 'EBUSY'),
        );
      } finally {
        await arr.close();
      }
    });
  }
});

describe('finding members in a pool of devices', () => {
  test('--uuid picks one array out of members of several', async () => {
    const pool = [
      ...fixtureMembers('raid1-2disk-bitmap'),
      ...fixtureMembers('raid6-5disk'),
      ...fixtureMembers('raid0-3disk-chunk64'),
    ];
    const dev = await openDevice(fixtureMembers('raid6-5disk')[0]!, { readOnly: true });
    const uuid = (await loadSuperblock(dev))!.sb.setUuid;
    await dev.close();
    const log: string[] = [];
    const arr = await MdArray.assemble(
      await Promise.all(pool.map((p) => openDevice(p, { readOnly: true }))),
      { clock: new SystemClock(), readOnly: true, uuid, log: (m) => log.push(m) });
    try {
      assert.equal(arr.members.length, 5);
      assert.equal(arr.degraded, false);
      assert.equal(log.filter((l) => /wrong uuid/.test(l)).length, 5);
      const buf = new Uint8Array(1 << 20);
      await arr.read(buf, 0);
      assert.equal(checkPattern(buf, 0), -1);
    } finally {
      await arr.close();
    }
    await assert.rejects(
      MdArray.assemble(
        await Promise.all(pool.slice(0, 2).map((p) => openDevice(p, { readOnly: true }))),
        { clock: new SystemClock(), readOnly: true, uuid }),
      (e) => isTsmdError(e, 'ENODEV'),
    );
  });

  test('reads at any byte offset and length', async () => {
    const { arr } = await open('raid5-4disk-ls-chunk64');
    try {
      for (const [off, len] of [
        [1, 7],
        [511, 2],
        [4095, 70000],
        [65535, 1],
        [arr.sizeBytes - 3, 3],
      ] as const) {
        const buf = new Uint8Array(len);
        await arr.read(buf, off);
        const w0 = Math.floor(off / 8) * 8;
        const whole = new Uint8Array(Math.ceil((off + len - w0) / 8) * 8);
        fillPatternInto(whole, w0);
        assert.deepEqual(buf, whole.subarray(off - w0, off - w0 + len), `read ${off}+${len}`);
      }
      await assert.rejects(arr.read(new Uint8Array(2), arr.sizeBytes - 1), (e) =>
        isTsmdError(e, 'ENOSPC'),
      );
    } finally {
      await arr.close();
    }
  });
});

function fillPatternInto(buf: Uint8Array, off: number): void {
  fillPattern(buf, off);
}
