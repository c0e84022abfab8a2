/**
 * Geometry tests: brute-force models (written independently of src/raid/geometry), the worked
 * examples of shared/spec/md-formats.md §4, numbers seen in the kernel-md fixtures, and a
 * cross-check against shared/reference/md_layouts.py run with python3.
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import {
  decodeRaid10Layout,
  defaultLayout,
  detailNewLayoutText,
  encodeRaid10Layout,
  layoutText,
  linearArraySectors,
  linearMap,
  mapArraySector,
  parseLayout,
  type Raid0Zone,
  type Raid10Geometry,
  type Raid456Geometry,
  raid0ArraySectors,
  raid0Map,
  raid0Zones,
  raid10ArraySectors,
  raid10DeviceToArray,
  raid10LayoutSuffix,
  raid10Map,
  raid10Validate,
  raid456ArraySectors,
  raid456DeviceToArray,
  stripeMap,
  validLayouts,
} from '../../src/raid/geometry/index.js';
import { sharedDir } from '../helpers/fixtures.js';

const RUNS = 60;

function throwsEinval(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof Error);
    assert.equal((e as { code?: string }).code, 'EINVAL');
    assert.match(e.message, pattern);
    return true;
  });
}

// ------------------------------------------------------------------------------------------
// RAID4/5/6
// ------------------------------------------------------------------------------------------

/** Independent model: P/Q position by rotation rule, then data by walking the remaining disks. */
function modelStripe(
  level: number,
  layout: number,
  n: number,
  s: number,
): { p: number; q: number; data: number[] } {
  const walk = (start: number, size: number, skip: number[]): number[] => {
    const out: number[] = [];
    for (let i = 0; i < size; i++) {
      const d = (start + i) % size;
      if (!skip.includes(d)) out.push(d);
    }
    return out;
  };
  const leftP = (m: number, k: number) => m - 1 - (k % m); // parity moves from last disk down
  const rightP = (m: number, k: number) => k % m; // parity moves from disk 0 up
  if (level === 4) return { p: n - 1, q: -1, data: walk(0, n, [n - 1]) };
  if (level === 5) {
    const p =
      layout === 0 || layout === 2
        ? leftP(n, s)
        : layout === 1 || layout === 3
          ? rightP(n, s)
          : layout === 4
            ? 0
            : n - 1;
    const symmetric = layout === 2 || layout === 3;
    return { p, q: -1, data: walk(symmetric ? p + 1 : 0, n, [p]) };
  }
  switch (layout) {
    case 0:
    case 1:
    case 8:
    case 9: {
      const p = layout === 0 ? leftP(n, s) : layout === 9 ? leftP(n, s + 1) : rightP(n, s);
      const q = (p + 1) % n; // Q right after P, wrapping to disk 0
      return { p, q, data: walk(0, n, [p, q]) };
    }
    case 2:
    case 3: {
      const p = layout === 2 ? leftP(n, s) : rightP(n, s);
      const q = (p + 1) % n;
      return { p, q, data: walk(q + 1, n, [p, q]) };
    }
    case 10: {
      const p = leftP(n, s);
      const q = (p + n - 1) % n; // Q just before P
      return { p, q, data: walk(p + 1, n, [p, q]) };
    }
    case 4:
      return { p: 0, q: 1, data: walk(0, n, [0, 1]) };
    case 5:
      return { p: n - 2, q: n - 1, data: walk(0, n, [n - 2, n - 1]) };
    case 16:
    case 17:
    case 18:
    case 19: {
      const m = n - 1;
      const p = layout === 16 || layout === 18 ? leftP(m, s) : rightP(m, s);
      const symmetric = layout === 18 || layout === 19;
      return { p, q: n - 1, data: walk(symmetric ? p + 1 : 0, m, [p]) };
    }
    case 20:
      return { p: 0, q: n - 1, data: walk(0, n, [0, n - 1]) };
  }
  throw new Error(`model: no layout ${layout}`);
}

/** Spec-style picture of stripes: 'D<k>' for array chunk k, 'P', 'Q'. */
function picture(g: Raid456Geometry, stripes: number): string[] {
  const rows: string[] = [];
  for (let s = 0; s < stripes; s++) {
    const m = stripeMap(g, s);
    const row = new Array<string>(g.raidDisks).fill('?');
    row[m.pDisk] = 'P';
    if (m.qDisk >= 0) row[m.qDisk] = 'Q';
    m.dataDisks.forEach((d, dd) => {
      row[d] = `D${s * m.dataDisks.length + dd}`;
    });
    rows.push(row.join(' '));
  }
  return rows;
}

const arbRaid456 = fc.constantFrom<4 | 5 | 6>(4, 5, 6).chain((level) =>
  fc.record({
    level: fc.constant(level),
    raidDisks: fc.integer({ min: level === 6 ? 4 : 2, max: 10 }),
    layout: fc.constantFrom(...validLayouts(level)),
    chunkSectors: fc.constantFrom(8, 16, 128),
  }),
);

describe('raid456', () => {
  test('spec §4.1: RAID5 4 disks, four rotating layouts', () => {
    const expected: Record<number, string[]> = {
      0: ['D0 D1 D2 P', 'D3 D4 P D5', 'D6 P D7 D8', 'P D9 D10 D11'],
      1: ['P D0 D1 D2', 'D3 P D4 D5', 'D6 D7 P D8', 'D9 D10 D11 P'],
      2: ['D0 D1 D2 P', 'D4 D5 P D3', 'D8 P D6 D7', 'P D9 D10 D11'],
      3: ['P D0 D1 D2', 'D5 P D3 D4', 'D7 D8 P D6', 'D9 D10 D11 P'],
    };
    for (const [layout, rows] of Object.entries(expected)) {
      const g: Raid456Geometry = {
        level: 5,
        raidDisks: 4,
        layout: Number(layout),
        chunkSectors: 8,
      };
      assert.deepEqual(picture(g, 4), rows, `layout ${layout}`);
    }
  });

  test('spec §4.1: RAID6 5 disks left-symmetric', () => {
    const g: Raid456Geometry = { level: 6, raidDisks: 5, layout: 2, chunkSectors: 8 };
    assert.deepEqual(picture(g, 5), [
      'Q D0 D1 D2 P',
      'D3 D4 D5 P Q',
      'D7 D8 P Q D6',
      'D11 P Q D9 D10',
      'P Q D12 D13 D14',
    ]);
    for (let s = 0; s < 10; s++) assert.deepEqual(stripeMap(g, s).qSlots, [0, 1, 2]);
  });

  test('spec §4.1: RAID6-LA n=5 stripe 2 Q coefficients disk4->g^0, disk0->g^1, disk1->g^2', () => {
    const m = stripeMap({ level: 6, raidDisks: 5, layout: 0, chunkSectors: 8 }, 2);
    assert.equal(m.pDisk, 2);
    assert.equal(m.qDisk, 3);
    assert.deepEqual(m.dataDisks, [0, 1, 4]);
    assert.deepEqual(m.qSlots, [1, 2, 0]);
    assert.equal(m.syndromeSlots, 3);
  });

  test('DDF layouts: Q slot = disk number, raidDisks slots', () => {
    for (const layout of [8, 9, 10]) {
      const g: Raid456Geometry = { level: 6, raidDisks: 6, layout, chunkSectors: 8 };
      for (let s = 0; s < 12; s++) {
        const m = stripeMap(g, s);
        assert.deepEqual(m.qSlots, m.dataDisks);
        assert.equal(m.syndromeSlots, 6);
      }
    }
    // ddf-N-restart starts "D D D P Q" (LA shifted by one stripe)
    assert.deepEqual(picture({ level: 6, raidDisks: 5, layout: 9, chunkSectors: 8 }, 2), [
      'D0 D1 D2 P Q',
      'D3 D4 P Q D5',
    ]);
  });

  test('RAID4 ignores layout: parity on the last disk', () => {
    for (const layout of [0, 5]) {
      const g: Raid456Geometry = { level: 4, raidDisks: 4, layout, chunkSectors: 8 };
      assert.deepEqual(picture(g, 2), ['D0 D1 D2 P', 'D3 D4 D5 P']);
      assert.deepEqual(stripeMap(g, 7).qSlots, []);
      assert.equal(stripeMap(g, 7).qDisk, -1);
    }
  });

  test('array size: fixtures raid5-4disk-*, raid6-5disk (97517568 bytes)', () => {
    for (const g of [
      { level: 5, raidDisks: 4, layout: 2, chunkSectors: 128 },
      { level: 5, raidDisks: 4, layout: 0, chunkSectors: 256 },
      { level: 6, raidDisks: 5, layout: 2, chunkSectors: 128 },
    ] as Raid456Geometry[]) {
      assert.equal(raid456ArraySectors(g, 63488) * 512, 97517568);
    }
    // rounded down to the chunk
    assert.equal(
      raid456ArraySectors({ level: 5, raidDisks: 3, layout: 2, chunkSectors: 8 }, 23),
      32,
    );
  });

  test('validLayouts', () => {
    assert.deepEqual(validLayouts(5), [0, 1, 2, 3, 4, 5]);
    assert.deepEqual(validLayouts(6), [0, 1, 2, 3, 4, 5, 8, 9, 10, 16, 17, 18, 19, 20]);
    assert.deepEqual(validLayouts(4), [0, 5]);
  });

  test('every stripe matches the walk model and partitions the disks', () => {
    fc.assert(
      fc.property(arbRaid456, (g) => {
        const n = g.raidDisks;
        const dCount = n - (g.level === 6 ? 2 : 1);
        for (let s = 0; s < 3 * n; s++) {
          const m = stripeMap(g, s);
          const model = modelStripe(g.level, g.layout, n, s);
          assert.equal(m.pDisk, model.p);
          assert.equal(m.qDisk, model.q);
          assert.deepEqual(m.dataDisks, model.data);
          const all = [m.pDisk, ...(m.qDisk >= 0 ? [m.qDisk] : []), ...m.dataDisks].sort(
            (a, b) => a - b,
          );
          assert.deepEqual(
            all,
            Array.from({ length: n }, (_, i) => i),
          );
          if (g.level === 6) {
            const ddf = g.layout >= 8 && g.layout <= 10;
            if (ddf) assert.deepEqual(m.qSlots, m.dataDisks);
            else {
              assert.deepEqual(
                [...m.qSlots].sort((a, b) => a - b),
                Array.from({ length: dCount }, (_, i) => i),
              );
              // walking from d0 (Q+1, or 0 when Q is last) meets data disks in slot order
              const d0 = m.qDisk === n - 1 ? 0 : m.qDisk + 1;
              const dist = (d: number) => (d - d0 + n) % n;
              const bySlot = [...m.dataDisks].sort((a, b) => dist(a) - dist(b));
              bySlot.forEach((d, slot) => {
                assert.equal(m.qSlots[m.dataDisks.indexOf(d)], slot);
              });
              if (g.layout === 2 || g.layout === 3) {
                assert.deepEqual(
                  m.qSlots,
                  Array.from({ length: dCount }, (_, i) => i),
                );
              }
            }
          }
        }
      }),
      { numRuns: RUNS },
    );
  });

  test('array -> (disk, row) is a bijection onto the data slots, contiguous in a chunk', () => {
    fc.assert(
      fc.property(arbRaid456, fc.integer({ min: 0, max: 30 }), fc.nat(), (g, rows, extra) => {
        const c = g.chunkSectors;
        const component = rows * c + (extra % c);
        const size = raid456ArraySectors(g, component);
        const dCount = g.raidDisks - (g.level === 6 ? 2 : 1);
        assert.equal(size, rows * c * dCount);
        const used = new Set<string>();
        for (let chunk = 0; chunk < size / c; chunk++) {
          const off = (chunk * 7) % c;
          const first = mapArraySector(g, chunk * c);
          const inside = mapArraySector(g, chunk * c + off);
          assert.equal(inside.disk, first.disk);
          assert.equal(inside.deviceSector, first.deviceSector + off);
          assert.equal(first.deviceSector % c, 0);
          const row = first.deviceSector / c;
          assert.ok(row < rows);
          assert.equal(row, first.stripe);
          assert.equal(first.stripe * dCount + first.dd, chunk);
          const m = stripeMap(g, row);
          assert.notEqual(first.disk, m.pDisk);
          assert.notEqual(first.disk, m.qDisk);
          const key = `${first.disk}:${row}`;
          assert.ok(!used.has(key), `slot ${key} used twice`);
          used.add(key);
          assert.deepEqual(raid456DeviceToArray(g, first.disk, first.deviceSector + off), {
            arraySector: chunk * c + off,
            stripe: row,
            dd: first.dd,
          });
          assert.equal(raid456DeviceToArray(g, m.pDisk, row * c + off), null);
        }
        assert.equal(used.size, rows * dCount);
      }),
      { numRuns: RUNS },
    );
  });

  test('bad arguments throw EINVAL', () => {
    const ok: Raid456Geometry = { level: 5, raidDisks: 4, layout: 2, chunkSectors: 8 };
    throwsEinval(() => stripeMap({ ...ok, layout: 8 }, 0), /layout 8 is not valid for RAID5/);
    throwsEinval(() => stripeMap({ ...ok, level: 7 as 5 }, 0), /level must be 4, 5 or 6/);
    throwsEinval(() => stripeMap({ ...ok, level: 6, raidDisks: 3 }, 0), /raidDisks must be >= 4/);
    throwsEinval(() => stripeMap({ ...ok, raidDisks: 1 }, 0), /raidDisks must be >= 2/);
    throwsEinval(() => stripeMap({ ...ok, chunkSectors: 12 }, 0), /power of two/);
    throwsEinval(() => stripeMap({ ...ok, chunkSectors: 4 }, 0), /at least 8 sectors/);
    throwsEinval(() => stripeMap(ok, -1), /stripe must be >= 0/);
    throwsEinval(() => mapArraySector(ok, 1.5), /arraySector must be an integer/);
    throwsEinval(() => stripeMap({ ...ok, level: 4, layout: 2 }, 0), /not valid for RAID4/);
    throwsEinval(() => raid456ArraySectors(ok, -8), /componentSectors/);
    throwsEinval(() => raid456DeviceToArray(ok, 4, 0), /disk must be <= 3/);
  });
});

// ------------------------------------------------------------------------------------------
// RAID10
// ------------------------------------------------------------------------------------------

/**
 * Independent model of the intended RAID10 placement (valid when the far set size divides
 * raidDisks and, for offset layouts, near copies never wrap a row): copy (j, k) of array chunk
 * a is virtual chunk v = a*near + j, on disk v mod n rotated by k*near inside its far set,
 * row v div n (times far for offset), plus k strides.
 */
function modelRaid10(
  g: Raid10Geometry,
  fss: number,
  strideSectors: number,
  arraySector: number,
): Array<{ disk: number; deviceSector: number }> {
  const l = decodeRaid10Layout(g.layout);
  const c = g.chunkSectors;
  const a = Math.floor(arraySector / c);
  const off = arraySector % c;
  const out: Array<{ disk: number; deviceSector: number }> = [];
  for (let j = 0; j < l.near; j++) {
    const v = a * l.near + j;
    const d0 = v % g.raidDisks;
    const row = Math.floor(v / g.raidDisks) * (l.offset ? l.far : 1);
    for (let k = 0; k < l.far; k++) {
      const setStart = Math.floor(d0 / fss) * fss;
      const disk = setStart + ((d0 - setStart + k * l.near) % fss);
      out.push({ disk, deviceSector: row * c + off + k * (l.offset ? c : strideSectors) });
    }
  }
  return out;
}

/** Configurations whose copies never collide in the kernel's placement (see report). */
const arbSafeRaid10 = fc
  .record({
    n: fc.integer({ min: 2, max: 10 }),
    near: fc.integer({ min: 1, max: 5 }),
    far: fc.integer({ min: 1, max: 5 }),
    offset: fc.boolean(),
    farSetMode: fc.constantFrom<0 | 2>(0, 2),
    chunkSectors: fc.constantFrom(8, 16),
    rows: fc.integer({ min: 0, max: 24 }),
    extra: fc.nat(),
  })
  .filter(
    (x) =>
      x.near * x.far >= 2 &&
      x.near * x.far <= x.n &&
      (!x.offset || x.n % x.near === 0) &&
      x.n % (x.farSetMode === 0 ? x.n : x.near * x.far) === 0,
  );

describe('raid10', () => {
  const g4 = (layout: number): Raid10Geometry => ({
    raidDisks: 4,
    layout,
    chunkSectors: 8,
    componentSectors: 64,
  });
  const at = (g: Raid10Geometry, chunk: number) =>
    raid10Map(g, chunk * 8).map((x) => [x.disk, x.deviceSector]);

  test('spec §4.3 examples: 4 disks, chunk 8, size 64 (n2, f2, o2)', () => {
    const n2 = g4(0x102);
    assert.deepEqual(at(n2, 0), [
      [0, 0],
      [1, 0],
    ]);
    assert.deepEqual(at(n2, 1), [
      [2, 0],
      [3, 0],
    ]);
    assert.deepEqual(at(n2, 2), [
      [0, 8],
      [1, 8],
    ]);
    const f2 = g4(0x201);
    assert.deepEqual(at(f2, 0), [
      [0, 0],
      [1, 32],
    ]);
    assert.deepEqual(at(f2, 3), [
      [3, 0],
      [0, 32],
    ]);
    const o2 = g4(0x10201);
    assert.deepEqual(at(o2, 0), [
      [0, 0],
      [1, 8],
    ]);
    assert.deepEqual(at(o2, 4), [
      [0, 16],
      [1, 24],
    ]);
    for (const g of [n2, f2, o2]) assert.equal(raid10ArraySectors(g), 128);
    // a sector inside a chunk keeps its offset on every copy
    assert.deepEqual(
      raid10Map(f2, 3 * 8 + 5).map((x) => [x.disk, x.deviceSector]),
      [
        [3, 5],
        [0, 37],
      ],
    );
  });

  test('array size: fixtures raid10-4disk-n2/f2 (65011712 bytes), spec formula', () => {
    for (const layout of [0x102, 0x201]) {
      const g = { raidDisks: 4, layout, chunkSectors: 128, componentSectors: 63488 };
      assert.equal(raid10ArraySectors(g) * 512, 65011712);
    }
    // 3 disks n2, chunk 8, 10 chunks per member: floor(10*3/2) = 15 chunks
    assert.equal(
      raid10ArraySectors({ raidDisks: 3, layout: 0x102, chunkSectors: 8, componentSectors: 87 }),
      120,
    );
    // n2 f2 on 5 disks: floor(floor(13/2)*5/2) = 15 chunks
    assert.equal(
      raid10ArraySectors({ raidDisks: 5, layout: 0x202, chunkSectors: 8, componentSectors: 104 }),
      120,
    );
  });

  test('layout encode/decode', () => {
    assert.deepEqual(decodeRaid10Layout(0x102), { near: 2, far: 1, offset: false, farSetMode: 0 });
    assert.deepEqual(decodeRaid10Layout(0x10201), { near: 1, far: 2, offset: true, farSetMode: 0 });
    assert.deepEqual(decodeRaid10Layout(0x40301), {
      near: 1,
      far: 3,
      offset: false,
      farSetMode: 2,
    });
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 255 }),
        fc.integer({ min: 1, max: 255 }),
        fc.boolean(),
        fc.constantFrom<0 | 1 | 2>(0, 1, 2),
        (near, far, offset, farSetMode) => {
          const l = { near, far, offset, farSetMode };
          const v = encodeRaid10Layout(l);
          assert.ok(v < 2 ** 19);
          assert.deepEqual(decodeRaid10Layout(v), l);
        },
      ),
    );
    throwsEinval(() => decodeRaid10Layout(0x80102), /bits >= 19/);
    throwsEinval(() => decodeRaid10Layout(0x60102), /far-set mode 3/);
    throwsEinval(() => decodeRaid10Layout(0x100), /0 near and 1 far/);
    throwsEinval(() => decodeRaid10Layout(0x002), /2 near and 0 far/);
    throwsEinval(() => decodeRaid10Layout(-1), /must be >= 0/);
    throwsEinval(
      () => encodeRaid10Layout({ near: 0, far: 1, offset: false, farSetMode: 0 }),
      /near/,
    );
    throwsEinval(
      () => encodeRaid10Layout({ near: 1, far: 2, offset: false, farSetMode: 3 as 0 }),
      /far-set mode/,
    );
  });

  test('raid10Validate: kernel rules', () => {
    const ok = { raidDisks: 4, layout: 0x102, chunkSectors: 8, componentSectors: 64 };
    raid10Validate(ok);
    raid10Validate({ ...ok, layout: 0x104 });
    throwsEinval(() => raid10Validate({ ...ok, layout: 0x105 }), /at most raidDisks \(4\)/);
    throwsEinval(() => raid10Validate({ ...ok, layout: 0x101 }), /at least 2/);
    throwsEinval(() => raid10Validate({ ...ok, layout: 0x203 }), /6 copies/);
    throwsEinval(() => raid10Validate({ ...ok, chunkSectors: 24 }), /power of two/);
    throwsEinval(() => raid10Validate({ ...ok, chunkSectors: 4 }), /at least 8/);
    throwsEinval(() => raid10Validate({ ...ok, raidDisks: 1 }), /raidDisks must be >= 2/);
    throwsEinval(() => raid10Validate({ ...ok, componentSectors: -1 }), /componentSectors/);
    throwsEinval(() => raid10Map(ok, 128), /beyond the end of the array \(128 sectors\)/);
  });

  test('copies: near*far on distinct disks, no collisions, inside dev size, model agrees', () => {
    fc.assert(
      fc.property(arbSafeRaid10, (x) => {
        const layout = encodeRaid10Layout({
          near: x.near,
          far: x.far,
          offset: x.offset,
          farSetMode: x.farSetMode,
        });
        const c = x.chunkSectors;
        const g: Raid10Geometry = {
          raidDisks: x.n,
          layout,
          chunkSectors: c,
          componentSectors: x.rows * c + (x.extra % c),
        };
        const size = raid10ArraySectors(g);
        const chunks = size / c;
        assert.equal(chunks, Math.floor((Math.floor(x.rows / x.far) * x.n) / x.near));
        const devChunks = Math.ceil((chunks * x.near * x.far) / x.n);
        const stride = x.offset ? c : Math.floor(devChunks / x.far) * c;
        const fss = x.farSetMode === 0 ? x.n : x.near * x.far;
        const used = new Map<string, number>();
        for (let a = 0; a < chunks; a++) {
          const off = (a * 5) % c;
          const copies = raid10Map(g, a * c + off);
          assert.equal(copies.length, x.near * x.far);
          assert.equal(new Set(copies.map((cp) => cp.disk)).size, copies.length);
          assert.deepEqual(copies, modelRaid10(g, fss, stride, a * c + off));
          for (const cp of copies) {
            assert.ok(cp.deviceSector < devChunks * c, 'copy beyond the used device size');
            assert.ok(cp.deviceSector < g.componentSectors, 'copy beyond the member');
            assert.equal(cp.deviceSector % c, off);
            const key = `${cp.disk}:${cp.deviceSector - off}`;
            assert.ok(!used.has(key), `device chunk ${key} used twice`);
            used.set(key, a);
            assert.equal(raid10DeviceToArray(g, cp.disk, cp.deviceSector), a * c + off);
          }
        }
        assert.equal(used.size, chunks * x.near * x.far);
        // every other device chunk inside the used area is free
        for (let d = 0; d < x.n; d++) {
          for (let r = 0; r < devChunks; r++) {
            if (!used.has(`${d}:${r * c}`)) assert.equal(raid10DeviceToArray(g, d, r * c), null);
          }
        }
      }),
      { numRuns: RUNS * 2 },
    );
  });
});

// ------------------------------------------------------------------------------------------
// RAID0 and linear
// ------------------------------------------------------------------------------------------

describe('raid0', () => {
  test('spec §4.4 example: members 1000/488/1000, chunk 8', () => {
    const zones = raid0Zones([1000, 488, 1000], 8);
    assert.deepEqual(zones, [
      { zoneEndSectors: 1464, devStartSectors: 0, members: [0, 1, 2] },
      { zoneEndSectors: 2488, devStartSectors: 488, members: [0, 2] },
    ]);
    assert.equal(raid0ArraySectors(zones), 2488);
    assert.deepEqual(raid0Map(zones, 8, 1, 1464), { disk: 2, deviceSector: 488 });
    assert.deepEqual(raid0Map(zones, 8, 2, 1464), { disk: 0, deviceSector: 488 });
    assert.deepEqual(raid0Map(zones, 8, 0, 1464), { disk: 2, deviceSector: 488 });
    assert.deepEqual(raid0Map(zones, 8, 1, 1472 + 3), { disk: 0, deviceSector: 491 });
    assert.deepEqual(raid0Map(zones, 8, 2, 1472 + 3), { disk: 2, deviceSector: 491 });
    assert.deepEqual(raid0Map(zones, 8, 1, 1463), { disk: 2, deviceSector: 487 });
  });

  test('fixture raid0-3disk-chunk64: single zone, 97517568 bytes', () => {
    const zones = raid0Zones([63488, 63488, 63488], 128);
    assert.equal(zones.length, 1);
    assert.equal(raid0ArraySectors(zones) * 512, 97517568);
    // array chunk 4 -> member 1, second chunk row
    assert.deepEqual(raid0Map(zones, 128, 1, 4 * 128 + 1), { disk: 1, deviceSector: 129 });
  });

  test('rounding to the chunk; non power-of-two chunks; zone 1 with one member', () => {
    const zones = raid0Zones([100, 47, 61], 12); // -> 96, 36, 60
    assert.deepEqual(zones, [
      { zoneEndSectors: 108, devStartSectors: 0, members: [0, 1, 2] },
      { zoneEndSectors: 156, devStartSectors: 36, members: [0, 2] },
      { zoneEndSectors: 192, devStartSectors: 60, members: [0] },
    ]);
    const single = raid0Zones([32, 16], 8);
    for (let l = 0; l < 48; l++) {
      assert.deepEqual(raid0Map(single, 8, 2, l), raid0Map(single, 8, 1, l));
    }
  });

  test('bijection onto the union of member chunk ranges (both layouts), contiguous chunks', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 24 }),
        fc.array(fc.integer({ min: 1, max: 30 }), { minLength: 1, maxLength: 6 }),
        fc.array(fc.nat(), { minLength: 6, maxLength: 6 }),
        fc.constantFrom(0, 1, 2),
        (chunk, rows, extras, layout) => {
          const members = rows.map((r, i) => r * chunk + (extras[i] % chunk));
          const zones = raid0Zones(members, chunk);
          const size = raid0ArraySectors(zones);
          assert.equal(size, rows.reduce((a, b) => a + b, 0) * chunk);
          assert.equal(zones.length, new Set(rows).size);
          const used = new Set<string>();
          for (let a = 0; a < size / chunk; a++) {
            const first = raid0Map(zones, chunk, layout, a * chunk);
            const off = (a * 3) % chunk;
            const inside = raid0Map(zones, chunk, layout, a * chunk + off);
            assert.deepEqual(inside, { disk: first.disk, deviceSector: first.deviceSector + off });
            assert.equal(first.deviceSector % chunk, 0);
            assert.ok(first.deviceSector < rows[first.disk] * chunk);
            const key = `${first.disk}:${first.deviceSector}`;
            assert.ok(!used.has(key), `member chunk ${key} used twice`);
            used.add(key);
          }
          assert.equal(used.size, size / chunk);
          // zone 0 is plain round robin over all members in role order
          for (let a = 0; a < zones[0].zoneEndSectors / chunk; a++) {
            assert.deepEqual(raid0Map(zones, chunk, layout, a * chunk), {
              disk: a % members.length,
              deviceSector: Math.floor(a / members.length) * chunk,
            });
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  test('bad arguments throw EINVAL', () => {
    const zones = raid0Zones([16, 16], 8);
    throwsEinval(() => raid0Zones([], 8), /non-empty/);
    throwsEinval(() => raid0Zones([16, 7], 8), /role 1 .* smaller than one chunk/);
    throwsEinval(() => raid0Zones([16], 0), /chunkSectors must be >= 1/);
    throwsEinval(() => raid0Map(zones, 8, 3, 0), /layout must be 0, 1/);
    throwsEinval(() => raid0Map(zones, 8, 1, 32), /beyond the end/);
    throwsEinval(() => raid0Map([] as Raid0Zone[], 8, 1, 0), /non-empty/);
  });
});

describe('linear', () => {
  test('concatenation in role order', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 6 }),
        (m) => {
          const flat: Array<[number, number]> = [];
          m.forEach((size, disk) => {
            for (let s = 0; s < size; s++) flat.push([disk, s]);
          });
          assert.equal(linearArraySectors(m), flat.length);
          flat.forEach(([disk, deviceSector], l) => {
            assert.deepEqual(linearMap(m, l), { disk, deviceSector });
          });
          throwsEinval(() => linearMap(m, flat.length), /beyond the end/);
        },
      ),
      { numRuns: RUNS },
    );
    throwsEinval(() => linearArraySectors([]), /non-empty/);
    throwsEinval(() => linearMap([8, -1], 0), /memberSectors\[1\]/);
  });
});

// ------------------------------------------------------------------------------------------
// mdadm layout names
// ------------------------------------------------------------------------------------------

describe('names', () => {
  test('parseLayout: raid5/6 names and aliases as mdadm 4.2', () => {
    const r5: Record<string, number> = {
      'left-asymmetric': 0,
      'right-asymmetric': 1,
      'left-symmetric': 2,
      'right-symmetric': 3,
      default: 2,
      la: 0,
      ra: 1,
      ls: 2,
      rs: 3,
      'parity-first': 4,
      'parity-last': 5,
      'ddf-zero-restart': 1,
      'ddf-N-restart': 0,
      'ddf-N-continue': 2,
    };
    for (const [name, v] of Object.entries(r5)) assert.equal(parseLayout(5, name), v, name);
    const r6: Record<string, number> = {
      ...r5,
      'ddf-zero-restart': 8,
      'ddf-N-restart': 9,
      'ddf-N-continue': 10,
      'left-asymmetric-6': 16,
      'right-asymmetric-6': 17,
      'left-symmetric-6': 18,
      'right-symmetric-6': 19,
      'parity-first-6': 20,
    };
    for (const [name, v] of Object.entries(r6)) assert.equal(parseLayout(6, name), v, name);
    throwsEinval(() => parseLayout(5, 'left-symmetric-6'), /not understood for raid5.*parity-last/);
    throwsEinval(() => parseLayout(5, 'LS'), /not understood for raid5/);
    throwsEinval(() => parseLayout(6, ''), /not understood for raid6/);
  });

  test('parseLayout: raid0 and raid10', () => {
    assert.equal(parseLayout(0, 'original'), 1);
    assert.equal(parseLayout(0, 'alternate'), 2);
    assert.equal(parseLayout(0, '1'), 1);
    assert.equal(parseLayout(0, '2'), 2);
    assert.equal(parseLayout(0, 'dangerous'), 0);
    throwsEinval(() => parseLayout(0, 'orig'), /not understood for raid0; valid layouts: original/);
    assert.equal(parseLayout(10, 'n2'), 0x102);
    assert.equal(parseLayout(10, 'f2'), 0x201);
    assert.equal(parseLayout(10, 'o2'), 0x10201);
    assert.equal(parseLayout(10, 'n3'), 0x103);
    assert.equal(parseLayout(10, 'f3', 3), 0x301);
    assert.equal(parseLayout(10, 'o200'), 0x1c801);
    for (const bad of ['n0', 'n201', 'x2', 'n2x', 'n', 'N2', 'n-1', '']) {
      throwsEinval(() => parseLayout(10, bad), /must be 'nNN', 'oNN' or 'fNN'/);
    }
    throwsEinval(() => parseLayout(10, 'n3', 2), /that layout requires at least 3 devices/);
    throwsEinval(() => parseLayout(1, 'n2'), /layout not meaningful for raid1 arrays/);
    throwsEinval(() => parseLayout(4, 'parity-last'), /not meaningful for raid4/);
    throwsEinval(() => parseLayout(-1, 'x'), /not meaningful for linear/);
  });

  test('layoutText as mdadm -E / -D print it (fixtures: left-symmetric, near=2, far=2)', () => {
    assert.equal(layoutText(5, 2), 'left-symmetric');
    assert.equal(layoutText(5, 0), 'left-asymmetric');
    assert.equal(layoutText(6, 2), 'left-symmetric');
    assert.equal(layoutText(5, 8), '-unknown-');
    assert.equal(layoutText(6, 8), 'ddf-zero-restart');
    assert.equal(layoutText(6, 20), 'parity-first-6');
    assert.equal(layoutText(6, 7), '-unknown-');
    assert.equal(layoutText(10, 0x102), 'near=2');
    assert.equal(layoutText(10, 0x201), 'far=2');
    assert.equal(layoutText(10, 0x10201), 'offset=2');
    assert.equal(layoutText(10, 0x202), 'near=2, far=2');
    assert.equal(layoutText(10, 0x10302), 'near=2, offset=3');
    assert.equal(layoutText(10, 0x101), 'NO REDUNDANCY');
    assert.equal(raid10LayoutSuffix(0x102), ' near=2');
    assert.equal(raid10LayoutSuffix(0x202), ' near=2, far=2');
    assert.equal(raid10LayoutSuffix(0x101), 'NO REDUNDANCY');
    assert.equal(detailNewLayoutText(10, 0x102), 'near=2, far=1');
    assert.equal(detailNewLayoutText(10, 0x10201), 'near=1, offset=2');
    assert.equal(detailNewLayoutText(5, 3), 'right-symmetric');
    assert.equal(layoutText(0, 1), 'original');
    assert.equal(layoutText(0, 2), 'alternate');
    assert.equal(layoutText(0, 0), 'dangerous');
    assert.equal(layoutText(0, -1), '-unknown-');
    assert.equal(layoutText(1, 0), '-unknown-');
    // parse(text(x)) == x for every valid RAID5/6 layout
    for (const level of [5, 6] as const) {
      for (const v of validLayouts(level))
        assert.equal(parseLayout(level, layoutText(level, v)), v);
    }
  });

  test('defaultLayout (mdadm 4.2 Create.c)', () => {
    assert.equal(defaultLayout(5), 2);
    assert.equal(defaultLayout(6), 2);
    assert.equal(defaultLayout(10), 0x102);
    assert.equal(defaultLayout(0), 1);
    assert.equal(defaultLayout(1), 0);
    assert.equal(defaultLayout(4), 0);
    assert.equal(defaultLayout(-1), 0);
  });
});

// ------------------------------------------------------------------------------------------
// Cross-check against shared/reference/md_layouts.py
// ------------------------------------------------------------------------------------------

const here = dirname(fileURLToPath(import.meta.url));
/** dist/test/raid -> repository root; the helper stays in the source tree */
const helper = resolve(here, '..', '..', '..', 'test', 'raid', 'geometry_xcheck.py');
const referenceDir = process.env.TSMD_REFERENCE_DIR ?? join(sharedDir(), 'reference');

function skipOrFail(t: { skip: (msg: string) => void }, why: string): void {
  const msg = `geometry cross-check NOT RUN: ${why}`;
  if (process.env.CI) assert.fail(`${msg} (CI is set, so this is an error)`);
  console.warn(`\n!!! ${msg} !!!\n`);
  t.skip(msg);
}

interface PyReply {
  r456: Array<Array<[number, number, number[], number[]]>>;
  r10: Array<{ array: number; dev: number; stride: number; maps: number[][][] }>;
  r0: Array<{ zones: Array<[number, number, number[]]>; maps: number[][] }>;
}

test('cross-check with md_layouts.py (python3)', (t) => {
  if (!existsSync(join(referenceDir, 'md_layouts.py'))) {
    return skipOrFail(t, `md_layouts.py not found in ${referenceDir} (set TSMD_REFERENCE_DIR)`);
  }
  assert.ok(existsSync(helper), `helper ${helper} missing`);

  const r456Cases: Array<{ level: 4 | 5 | 6; layout: number; n: number; stripes: number }> = [];
  for (const level of [4, 5, 6] as const) {
    for (const layout of validLayouts(level)) {
      for (let n = level === 6 ? 4 : 2; n <= 9; n++)
        r456Cases.push({ level, layout, n, stripes: 3 * n });
    }
  }

  const r10Cases: Array<{
    layout: number;
    n: number;
    chunk: number;
    size: number;
    lbas: number[];
  }> = [];
  for (let n = 2; n <= 9; n++) {
    for (let near = 1; near <= n; near++) {
      for (let far = 1; near * far <= n; far++) {
        if (near * far < 2) continue;
        for (const offset of [false, true]) {
          for (const farSetMode of [0, 1, 2] as const) {
            const layout = encodeRaid10Layout({ near, far, offset, farSetMode });
            const size = 8 * (3 + ((n * 7 + near * 3 + far) % 11)) + (n % 8);
            const g = { raidDisks: n, layout, chunkSectors: 8, componentSectors: size };
            const chunks = raid10ArraySectors(g) / 8;
            // every chunk of small arrays, an even spread (with the last chunk) of larger ones
            const step = Math.max(1, Math.floor(chunks / 12));
            const picked = Array.from({ length: chunks }, (_, a) => a).filter(
              (a) => a % step === 0 || a === chunks - 1,
            );
            const lbas = picked.map((a) => a * 8 + (a % 8));
            r10Cases.push({ layout, n, chunk: 8, size, lbas });
          }
        }
      }
    }
  }

  const r0Cases: Array<{ devs: number[]; chunk: number; layout: number; lbas: number[] }> = [];
  const rnd = fc.sample(
    fc.record({
      chunk: fc.integer({ min: 1, max: 16 }),
      devs: fc.array(fc.integer({ min: 16, max: 400 }), { minLength: 1, maxLength: 5 }),
    }),
    { numRuns: 60, seed: 42 },
  );
  for (const { chunk, devs } of rnd) {
    const size = raid0ArraySectors(raid0Zones(devs, chunk));
    const step = Math.max(1, Math.floor(size / chunk / 40));
    const lbas: number[] = [];
    for (let a = 0; a < size / chunk; a += step) lbas.push(a * chunk + (a % chunk));
    lbas.push(size - 1);
    for (const layout of [1, 2]) r0Cases.push({ devs, chunk, layout, lbas });
  }

  const run = spawnSync('python3', [helper, referenceDir], {
    input: JSON.stringify({ r456: r456Cases, r10: r10Cases, r0: r0Cases }),
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  if ((run.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    return skipOrFail(t, 'python3 is not installed');
  }
  assert.equal(run.status, 0, `python helper failed: ${run.stderr}`);
  const py = JSON.parse(run.stdout) as PyReply;

  r456Cases.forEach((cs, i) => {
    const g: Raid456Geometry = {
      level: cs.level,
      raidDisks: cs.n,
      layout: cs.layout,
      chunkSectors: 8,
    };
    for (let s = 0; s < cs.stripes; s++) {
      const m = stripeMap(g, s);
      assert.deepEqual(
        [m.pDisk, m.qDisk, m.dataDisks, m.qSlots],
        py.r456[i][s],
        `RAID${cs.level} layout ${cs.layout} n=${cs.n} stripe ${s}`,
      );
    }
  });

  r10Cases.forEach((cs, i) => {
    const g = {
      raidDisks: cs.n,
      layout: cs.layout,
      chunkSectors: cs.chunk,
      componentSectors: cs.size,
    };
    const ctx = `RAID10 layout 0x${cs.layout.toString(16)} n=${cs.n} size ${cs.size}`;
    assert.equal(raid10ArraySectors(g), py.r10[i].array, ctx);
    cs.lbas.forEach((l, j) => {
      const mine = raid10Map(g, l).map((x) => [x.disk, x.deviceSector]);
      assert.deepEqual(mine, py.r10[i].maps[j], `${ctx} sector ${l}`);
    });
  });

  r0Cases.forEach((cs, i) => {
    const zones = raid0Zones(cs.devs, cs.chunk);
    assert.deepEqual(
      zones.map((z) => [z.zoneEndSectors, z.devStartSectors, z.members]),
      py.r0[i].zones,
    );
    cs.lbas.forEach((l, j) => {
      const m = raid0Map(zones, cs.chunk, cs.layout, l);
      assert.deepEqual([m.disk, m.deviceSector], py.r0[i].maps[j], `RAID0 ${cs.devs} sector ${l}`);
    });
  });
});
