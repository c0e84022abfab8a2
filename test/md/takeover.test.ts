/**
 * md's instant takeovers (src/md/takeover.ts, mdadm --grow --level) on file members, in this
 * process: the data written before reads back after, and the data written after; check finds
 * 0 mismatches where the new level has redundancy (after the recovery onto added spares); the
 * superblocks are what the real mdadm --examine reads (tsmd --examine prints the same text)
 * with the level, devices, layout, chunk and roles md's takeover gives; the refusals are
 * mdadm's and write nothing.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isTsmdError } from '../../src/errors.js';
import { openDevice } from '../../src/io/file-device.js';
import { growRaid0, type LevelChangeRequest } from '../../src/md/takeover.js';
import { assembleFiles, checkMismatches, examineAgrees, type FileArrayOptions, fileArray, fill, type Model, takeover, verify, writeAll, writeSome } from '../helpers/takeover.js';
import { requireTool, sparseFile, tempDir } from '../helpers/tools.js';

const MiB = 1024 * 1024;

interface Case {
  name: string;
  from: FileArrayOptions;
  /** further takeovers after the first (a chain) */
  steps: Array<Omit<LevelChangeRequest, 'devName' | 'adding'> & { add?: number }>;
  /** what mdadm --examine says at the end */
  level: string;
  raidDisks: number;
  layout?: string;
  chunk?: string;
  /** per file: its role at the end ('gone': failed and removed by the takeover) */
  roles: Array<number | 'gone'>;
  arrayState: string;
  said: RegExp[];
}

const cases: Case[] = [
  {
    name: 'raid1 of 2 -> raid5',
    from: { level: 1, raidDisks: 2, sizesMiB: [8, 8] },
    steps: [{ level: 5 }],
    level: 'raid5',
    raidDisks: 2,
    layout: 'left-symmetric',
    chunk: '64K',
    roles: [0, 1],
    arrayState: 'AA',
    said: [/^level of \/dev\/md0 changed to raid5$/],
  },
  {
    name: 'raid5 of 2 -> raid1',
    from: { level: 5, raidDisks: 2, sizesMiB: [8, 8], chunkKiB: 64 },
    steps: [{ level: 1 }],
    level: 'raid1',
    raidDisks: 2,
    roles: [0, 1],
    arrayState: 'AA',
    said: [/^level of \/dev\/md0 changed to raid1$/],
  },
  {
    name: 'raid0 -> raid10 near=2 with --add of 2 (the raid0 members become slots 0 and 2)',
    from: { level: 0, raidDisks: 2, sizesMiB: [8, 8], chunkKiB: 64 },
    steps: [{ level: 10, add: 2 }],
    level: 'raid10',
    raidDisks: 4,
    layout: 'near=2',
    chunk: '64K',
    // md's rdev list is newest first: the second device added takes slot 1, the first slot 3
    roles: [0, 2, 3, 1],
    arrayState: 'AAAA',
    said: [/^level of \/dev\/md0 changed to raid10$/, /^added .*-2\.img$/, /^added .*-3\.img$/],
  },
  {
    name: 'raid10 near=2 -> raid0 (one copy of each pair kept)',
    from: { level: 10, raidDisks: 4, sizesMiB: [8, 8, 8, 8], chunkKiB: 64, layout: 0x102 },
    steps: [{ level: 0 }],
    level: 'raid0',
    raidDisks: 2,
    chunk: '64K',
    roles: [0, 'gone', 1, 'gone'],
    arrayState: 'AA',
    said: [/^level of \/dev\/md0 changed to raid0$/],
  },
  {
    name: 'raid4 -> raid5 (parity-last)',
    from: { level: 4, raidDisks: 3, sizesMiB: [8, 8, 8], chunkKiB: 64 },
    steps: [{ level: 5 }],
    level: 'raid5',
    raidDisks: 3,
    layout: 'parity-last',
    chunk: '64K',
    roles: [0, 1, 2],
    arrayState: 'AAA',
    said: [/^level of \/dev\/md0 changed to raid5$/],
  },
  {
    name: 'raid5 parity-last -> raid4',
    from: { level: 5, raidDisks: 3, sizesMiB: [8, 8, 8], chunkKiB: 64, layout: 5 },
    steps: [{ level: 4 }],
    level: 'raid4',
    raidDisks: 3,
    chunk: '64K',
    roles: [0, 1, 2],
    arrayState: 'AAA',
    said: [/^level of \/dev\/md0 changed to raid4$/],
  },
  {
    name: 'raid0 -> raid5 --layout=parity-last with --add (the spare recovers the parity)',
    from: { level: 0, raidDisks: 3, sizesMiB: [8, 8, 8], chunkKiB: 64 },
    steps: [{ level: 5, layoutText: 'parity-last', add: 1 }],
    level: 'raid5',
    raidDisks: 4,
    layout: 'parity-last',
    chunk: '64K',
    roles: [0, 1, 2, 3],
    arrayState: 'AAAA',
    said: [/^level of \/dev\/md0 changed to raid5$/, /^added .*-3\.img$/],
  },
  {
    name: 'raid0 -> raid4 (degraded on the parity) -> raid0',
    from: { level: 0, raidDisks: 2, sizesMiB: [8, 8], chunkKiB: 64 },
    steps: [{ level: 4 }, { level: 0 }],
    level: 'raid0',
    raidDisks: 2,
    chunk: '64K',
    roles: [0, 1],
    arrayState: 'AA',
    said: [/^level of \/dev\/md0 changed to raid4$/, /^level of \/dev\/md0 changed to raid0$/],
  },
  {
    name: 'raid5 parity-last with a spare -> raid0 (spare and parity removed)',
    from: { level: 5, raidDisks: 3, sizesMiB: [8, 8, 8, 8], chunkKiB: 64, layout: 5, bitmap: 'internal' },
    steps: [{ level: 0 }],
    level: 'raid0',
    raidDisks: 2,
    chunk: '64K',
    roles: [0, 1, 'gone', 'gone'],
    arrayState: 'AA',
    said: [/^level of \/dev\/md0 changed to raid0$/],
  },
  {
    name: 'raid1 of 2 -> raid5 --raid-devices=3 --add (the takeover, then the reshape to 3 devices)',
    from: { level: 1, raidDisks: 2, sizesMiB: [8, 8] },
    steps: [{ level: 5, raidDisks: 3, add: 1 }],
    level: 'raid5',
    raidDisks: 3,
    layout: 'left-symmetric',
    chunk: '64K',
    roles: [0, 1, 2],
    arrayState: 'AAA',
    said: [/^level of \/dev\/md0 changed to raid5$/, /^added .*-2\.img$/],
  },
  {
    name: 'raid4 -> raid5 --layout=left-symmetric (the takeover, then the layout reshape)',
    from: { level: 4, raidDisks: 3, sizesMiB: [8, 8, 8], chunkKiB: 64 },
    steps: [{ level: 5, layoutText: 'left-symmetric' }],
    level: 'raid5',
    raidDisks: 3,
    layout: 'left-symmetric',
    chunk: '64K',
    roles: [0, 1, 2],
    arrayState: 'AAA',
    said: [/^level of \/dev\/md0 changed to raid5$/],
  },
  {
    name: 'raid1 -> raid0 (one mirror kept)',
    from: { level: 1, raidDisks: 2, sizesMiB: [8, 8] },
    steps: [{ level: 0 }],
    level: 'raid0',
    raidDisks: 1,
    chunk: '64K',
    roles: [0, 'gone'],
    arrayState: 'A',
    said: [/^level of \/dev\/md0 changed to raid0$/],
  },
];

describe('takeover: instant level changes', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => {
    dir = tempDir('takeover');
  });
  after(() => dir.cleanup());

  cases.forEach((c, ci) => {
    test(`${c.name}: data before and after, check 0, superblocks as mdadm reads them`, async (t) => {
      if (!requireTool(t, 'mdadm', 'the judge of the superblocks')) return;
      const tag = `c${ci}`;
      const paths = await fileArray(dir.path, tag, c.from);
      const model: Model = new Map();
      let arr = await assembleFiles(paths);
      const said: string[] = [];
      const sizeBefore = arr.sizeBytes;
      try {
        await writeAll(arr, model, 1);
        let added = paths.length;
        for (const step of c.steps) {
          const add = Array.from({ length: step.add ?? 0 }, () => sparseFile(join(dir.path, `${tag}-${added++}.img`), 8 * MiB));
          paths.push(...add);
          const r = await takeover(arr, step, add);
          assert.equal(r.done, true, 'an instant takeover');
          said.push(...r.said);
          if (arr.reshapeActive) {
            // the reshape the level change leads to
            arr.startBackground();
            await arr.reshape.wait();
            assert.equal(arr.reshape.lastError, null);
            assert.equal(arr.reshapeActive, false);
          }
          await verify(arr, model, sizeBefore);
        }
        assert.equal(said.length, c.said.length, said.join('\n'));
        c.said.forEach((re, i) => assert.match(said[i]!, re));
        assert.ok(arr.sizeBytes >= sizeBefore, `the array keeps its data (${arr.sizeBytes} >= ${sizeBefore})`);
        // the spares added recover the missing slots
        if (arr.redundant) await arr.syncNow();
        // the space a reshape added, then writes anywhere
        await writeAll(arr, model, 2, arr.sizeBytes, sizeBefore);
        await writeSome(arr, model, 100);
        await verify(arr, model, arr.sizeBytes);
        if (arr.redundant) assert.equal(await checkMismatches(arr), 0);
      } finally {
        await arr.close();
      }
      for (const [i, role] of c.roles.entries()) {
        const f = await examineAgrees(paths[i]!);
        if (role === 'gone') {
          assert.notEqual(f.get('Raid Level'), c.level, `${paths[i]} was removed before the takeover`);
          continue;
        }
        assert.equal(f.get('Raid Level'), c.level);
        assert.equal(f.get('Raid Devices'), String(c.raidDisks));
        assert.equal(f.get('Layout'), c.layout);
        assert.equal(f.get('Chunk Size'), c.chunk);
        assert.equal(f.get('Device Role'), `Active device ${role}`);
        assert.match(f.get('Array State') ?? '', new RegExp(`^${c.arrayState} `));
        assert.equal(f.get('Feature Map'), '0x0');
        assert.equal(f.get('State'), 'clean');
      }
      // assembled again: the same data
      arr = await assembleFiles(paths.filter((_, i) => c.roles[i] !== 'gone'));
      try {
        await verify(arr, model, arr.sizeBytes);
        if (arr.redundant) assert.equal(await checkMismatches(arr), 0);
      } finally {
        await arr.close();
      }
    });
  });

  for (const c of [cases[0]!, cases[2]!, cases[8]!, cases[10]!]) {
    test(`${c.name} while writers run: every write before, during and after reads back`, async () => {
      const tag = `w${cases.indexOf(c)}`;
      const paths = await fileArray(dir.path, tag, c.from);
      const arr = await assembleFiles(paths);
      const model: Model = new Map();
      const size = arr.sizeBytes;
      try {
        await writeAll(arr, model, 1);
        let gen = 10;
        let stop = false;
        // each writer its own 16 KiB groups (g % 3): the model knows which write is the last
        const writer = async (k: number) => {
          const b = new Uint8Array(16 * 1024);
          const groups = Math.floor(size / b.length);
          for (let i = 0; !stop; i++) {
            const blk = (Math.floor((((i * 7919 + k * 104729) % groups) / 3)) * 3 + k) * 4;
            if (blk * 4096 + b.length > size) continue;
            const g = gen++;
            for (let j = 0; j < 4; j++) fill(b.subarray(j * 4096, (j + 1) * 4096), (blk + j) * 4096, g);
            await arr.write(b, blk * 4096);
            for (let j = 0; j < 4; j++) model.set(blk + j, g);
            if (g % 5 === 0) await arr.flush();
            await new Promise((r) => setImmediate(r));
          }
        };
        const writers = [writer(0), writer(1), writer(2)];
        await new Promise((r) => setTimeout(r, 50));
        const before = gen;
        const add = Array.from({ length: c.steps[0]!.add ?? 0 }, (_, k) => sparseFile(join(dir.path, `${tag}-${paths.length + k}.img`), 8 * MiB));
        for (const step of c.steps) assert.equal((await takeover(arr, step, add)).done, true);
        const during = gen;
        // writes after it too (a recovery onto the added spares runs meanwhile)
        const t0 = Date.now();
        while (gen < during + 30 && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 10));
        stop = true;
        await Promise.all(writers);
        assert.ok(during > before && gen > during, `writes before (${before - 10}), across (${during - before}) and after (${gen - during}) the takeover`);
        if (arr.reshapeActive) {
          arr.startBackground();
          await arr.reshape.wait();
          assert.equal(arr.reshape.lastError, null);
        }
        await verify(arr, model, size);
        if (arr.redundant) {
          await arr.syncNow();
          assert.equal(await checkMismatches(arr), 0);
        }
        await verify(arr, model, size);
      } finally {
        await arr.close();
      }
    });
  }

  test('raid0 --raid-devices=4 --add of 2: through raid4 and back (the reshape in between), data before, during and after', async (t) => {
    if (!requireTool(t, 'mdadm', 'the judge of the superblocks')) return;
    const paths = await fileArray(dir.path, 'grow0', { level: 0, raidDisks: 2, sizesMiB: [8, 8], chunkKiB: 64 });
    const add = [2, 3].map((k) => sparseFile(join(dir.path, `grow0-${k}.img`), 8 * MiB));
    const model: Model = new Map();
    let arr = await assembleFiles(paths);
    const before = arr.sizeBytes;
    try {
      await writeAll(arr, model, 1);
      const said: string[] = [];
      const io = (adding: string[]) => ({
        add: adding.map((p) => ({ path: p, shown: p })),
        open: (p: string) => openDevice(p, { exclusive: true }),
        deviceUuid: () => randomBytes(16),
        say: (m: string) => said.push(m),
      });
      await assert.rejects(growRaid0(arr, { devName: '/dev/md0', raidDisks: 4 }, io(add.slice(1))), /^TsmdError: Need 2 spares to create working array, and only have 1\.$/);
      assert.equal(await growRaid0(arr, { devName: '/dev/md0', raidDisks: 4 }, io(add)), true);
      assert.deepEqual(said, ['level of /dev/md0 changed to raid4', `added ${add[0]}`, `added ${add[1]}`]);
      assert.equal(arr.level, 4);
      assert.equal(arr.reshapeActive, true);
      arr.startBackground();
      // during: some writes while it moves
      await writeSome(arr, model, 50, 8);
      await arr.reshape.wait();
      assert.equal(arr.reshape.lastError, null);
      assert.equal(arr.level, 0);
      assert.equal(arr.raidDisks, 4);
      assert.equal(arr.sizeBytes, 2 * before);
      await verify(arr, model, before);
      await writeAll(arr, model, 2, arr.sizeBytes, before);
      await writeSome(arr, model, 100);
      await verify(arr, model, arr.sizeBytes);
    } finally {
      await arr.close();
    }
    const all = [...paths, ...add];
    for (const [i, p] of all.entries()) {
      const f = await examineAgrees(p);
      assert.equal(f.get('Raid Level'), 'raid0');
      assert.equal(f.get('Raid Devices'), '4');
      assert.equal(f.get('Device Role'), `Active device ${i}`);
      assert.equal(f.get('Feature Map'), '0x0');
    }
    arr = await assembleFiles(all);
    try {
      await verify(arr, model, arr.sizeBytes);
    } finally {
      await arr.close();
    }
  });

  test('refusals: mdadm 4.2\'s message, nothing written; a change that needs a reshape is left to the caller', async () => {
    type Refused = { from: FileArrayOptions; req: Omit<LevelChangeRequest, 'devName' | 'adding'>; add?: number; refused: RegExp | null };
    const r5x4: FileArrayOptions = { level: 5, raidDisks: 4, sizesMiB: [8, 8, 8, 8], chunkKiB: 64 };
    const r0x2: FileArrayOptions = { level: 0, raidDisks: 2, sizesMiB: [8, 8], chunkKiB: 64 };
    const r10x4: FileArrayOptions = { level: 10, raidDisks: 4, sizesMiB: [8, 8, 8, 8], chunkKiB: 64, layout: 0x102 };
    const zones = /^\/dev\/md0: could not set level to raid10 \(md: cannot takeover raid0 with more than one zone\)$/;
    const arrays: Refused[] = [
      { from: { level: 6, raidDisks: 4, sizesMiB: [8, 8, 8, 8], chunkKiB: 64 }, req: { level: 0 }, refused: /^Impossible level change requested$/ },
      { from: r5x4, req: { level: 1 }, refused: /^Can only convert a 2-device array to RAID1$/ },
      { from: { level: 1, raidDisks: 3, sizesMiB: [8, 8, 8] }, req: { level: 5 }, refused: /^Can only convert a 2-device array to RAID5$/ },
      { from: { level: 1, raidDisks: 2, sizesMiB: [8, 8] }, req: { level: 6 }, refused: /^Impossibly level change request for RAID1$/ },
      { from: r0x2, req: { level: 10 }, refused: /^Need 2 spares to create working array, and only have 0\.$/ },
      { from: { level: 0, raidDisks: 2, sizesMiB: [8, 12], chunkKiB: 64 }, req: { level: 10 }, add: 2, refused: zones },
      { from: r0x2, req: { level: 1 }, refused: /^Impossible level change requested$/ },
      { from: r10x4, req: { level: 5 }, refused: /^RAID10 can only be changed to RAID0$/ },
      { from: { ...r10x4, layout: 0x201 }, req: { level: 0 }, refused: /^Cannot Grow RAID10 with far\/offset layout$/ },
      { from: { level: 5, raidDisks: 3, sizesMiB: [8, 8, 8], chunkKiB: 64, layout: 5 }, req: { level: 0, layoutText: 'left-symmetric' }, refused: /^layout not meaningful with this level$/ },
      { from: { level: 4, raidDisks: 3, sizesMiB: [8, 8, 8], chunkKiB: 64 }, req: { level: 1 }, refused: /^Can only convert a 2-device array to RAID1$/ },
      { from: { level: -1, raidDisks: 2, sizesMiB: [8, 8] }, req: { level: 0 }, refused: /^Only --add is supported for LINEAR, other --grow options are not/ },
      // data moves: the reshape paths' business (raid5 -> raid6, raid0 -> raid5 left-symmetric, raid5 -> raid0)
      { from: r5x4, req: { level: 6 }, refused: null },
      { from: r0x2, req: { level: 5 }, refused: null },
      { from: { level: 5, raidDisks: 3, sizesMiB: [8, 8, 8], chunkKiB: 64 }, req: { level: 0 }, refused: null },
    ];
    for (const [i, x] of arrays.entries()) {
      const paths = await fileArray(dir.path, `bad${i}`, x.from);
      const add = Array.from({ length: x.add ?? 0 }, (_, k) => sparseFile(join(dir.path, `bad${i}-add${k}.img`), 8 * MiB));
      const arr = await assembleFiles(paths);
      const files = [...paths, ...add];
      const hash = () => files.map((p) => createHash('sha256').update(readFileSync(p)).digest('hex'));
      const before = hash();
      try {
        const refused = x.refused;
        if (refused) await assert.rejects(takeover(arr, x.req, add), (e) => isTsmdError(e, 'EINVAL') && refused.test(e.message), `case ${i}`);
        else assert.equal((await takeover(arr, x.req, add)).done, false, `case ${i}: not an instant takeover`);
        assert.deepEqual(hash(), before, `case ${i}: nothing written`);
      } finally {
        await arr.close();
      }
    }
  });

  test('raid4 degraded on a data slot -> raid0 is refused before the parity is failed', async () => {
    const paths = await fileArray(dir.path, 'deg', { level: 4, raidDisks: 3, sizesMiB: [8, 8, 8], chunkKiB: 64 });
    // assembled without its first member: degraded on slot 0
    const arr = await assembleFiles(paths.slice(1), undefined, true);
    const hash = () => paths.map((p) => createHash('sha256').update(readFileSync(p)).digest('hex'));
    const before = hash();
    try {
      await assert.rejects(takeover(arr, { level: 0 }), (e) => isTsmdError(e, 'EINVAL') && /could not set level to raid0 \(md: raid4 must have missing parity disk!/.test(e.message));
      assert.equal(arr.level, 4);
      assert.deepEqual(hash(), before, 'nothing written');
    } finally {
      await arr.close();
    }
  });
});
