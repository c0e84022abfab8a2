/**
 * format/: byte-exact decode/encode of the v1.x superblock and the bitmap superblock.
 * Judges: superblocks written by the real kernel (fixtures), the spec's test vector, and
 * property-based round trips.
 */
import assert from 'node:assert/strict';
import { closeSync, openSync, readSync } from 'node:fs';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  bitmapAreaBytes,
  bitmapBits,
  countDirty,
  decodeBitmapSuper,
  encodeBitmapSuper,
} from '../../src/format/bitmap.js';
import {
  computeSbCsum,
  decodeSuperblock,
  encodeSuperblock,
  MAX_SECTOR,
  nameBytes,
  parseUuid,
  type Superblock1,
  sbBytes,
  uuidText,
  validateSuperblock,
} from '../../src/format/superblock.js';
import { fixtureMembers, fixtureNames } from '../helpers/fixtures.js';

function readAt(file: string, offset: number, len: number): Uint8Array {
  const fd = openSync(file, 'r');
  const b = new Uint8Array(len);
  readSync(fd, b, 0, len, offset);
  closeSync(fd);
  return b;
}

describe('superblock', () => {
  test('every kernel-written superblock round-trips byte for byte and validates', () => {
    let n = 0;
    for (const name of fixtureNames()) {
      for (const f of fixtureMembers(name)) {
        const raw = readAt(f, 4096, 4096);
        const sb = decodeSuperblock(raw);
        assert.deepEqual(
          validateSuperblock(sb, raw, { sbStartSector: 8, devSectors: 65536 }),
          [],
          `${name} ${f}`,
        );
        const enc = encodeSuperblock({ ...sb });
        const len = sbBytes(sb.maxDev);
        assert.deepEqual(
          enc.subarray(0, len),
          raw.subarray(0, len),
          `${name}/${f}: re-encoded bytes differ`,
        );
        assert.equal(computeSbCsum(raw, sb.maxDev), sb.sbCsum);
        n++;
      }
    }
    assert.equal(n, 38, 'every member listed in MANIFEST.txt');
  });

  test('every kernel-written bitmap superblock round-trips and counts dirty bits as mdadm', () => {
    const f = fixtureMembers('raid1-degraded-bitmap-chunk64k')[0]!;
    const head = readAt(f, 8192, 4096);
    const b = decodeBitmapSuper(head);
    assert.deepEqual(encodeBitmapSuper(b), head.subarray(0, 256));
    assert.equal(b.chunkSize, 65536);
    const nbits = bitmapBits(Number(b.syncSize), b.chunkSize);
    assert.equal(nbits, 496);
    // README: exactly 16 dirty (the first MiB written while degraded)
    assert.equal(countDirty(head.subarray(256), nbits), 16);
    assert.equal(bitmapAreaBytes(nbits), 4096);
  });

  test('spec test vector (image A): checksum 0x78428bdd and the documented bytes', () => {
    const sb: Superblock1 = {
      majorVersion: 1,
      featureMap: 1,
      pad0: 0,
      setUuid: parseUuid('01234567:89abcdef:fedcba98:76543210'),
      setName: nameBytes('testhost:mdtest', 32),
      ctime: 1700000000n,
      level: 1,
      layout: 0,
      size: 129024n,
      chunkSize: 0,
      raidDisks: 2,
      bitmapOffset: 8,
      newLevel: 0,
      reshapePosition: 0n,
      deltaDisks: 0,
      newLayout: 0,
      newChunk: 0,
      newOffset: 0,
      dataOffset: 2048n,
      dataSize: 129024n,
      superOffset: 8n,
      recoveryOffset: 0n,
      devNumber: 0,
      cntCorrectedRead: 0,
      deviceUuid: Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i),
      devFlags: 0,
      bblogShift: 0,
      bblogSize: 8,
      bblogOffset: 16,
      utime: 1700003600n,
      events: 20n,
      resyncOffset: MAX_SECTOR,
      sbCsum: 0,
      maxDev: 128,
      pad3: new Uint8Array(32),
      devRoles: [0, 1, ...new Array(126).fill(0xffff)],
    };
    const buf = encodeSuperblock(sb);
    assert.equal(sb.sbCsum, 0x78428bdd);
    const hex = (o: number, n: number) => Buffer.from(buf.subarray(o, o + n)).toString('hex');
    assert.equal(hex(0, 16), 'fc4e2ba9010000000100000000000000');
    assert.equal(hex(0xd0, 16), 'ffffffffffffffffdd8b427880000000');
    assert.equal(hex(0x100, 8), '00000100ffffffff');
  });

  test('odd max_dev: the trailing u16 is in the checksum', () => {
    const f = fixtureMembers('raid1-2disk-bitmap')[0]!;
    const sb = decodeSuperblock(readAt(f, 4096, 4096));
    sb.maxDev = 5;
    sb.devRoles = sb.devRoles.slice(0, 5);
    sb.devRoles[4] = 0x1234;
    const a = encodeSuperblock(sb);
    const csumA = sb.sbCsum;
    sb.devRoles[4] = 0x1235;
    encodeSuperblock(sb);
    assert.equal((sb.sbCsum - csumA) >>> 0, 1, 'last role entry counted as a u16');
    assert.equal(decodeSuperblock(a).devRoles[4], 0x1234);
  });

  test('checksum, padding and offset problems are reported', () => {
    const f = fixtureMembers('raid1-2disk-bitmap')[0]!;
    const raw = readAt(f, 4096, 4096);
    raw[200] ^= 1;
    const sb = decodeSuperblock(raw);
    assert.match(
      validateSuperblock(sb, raw, { sbStartSector: 8, devSectors: 65536 }).join(),
      /checksum/,
    );
    assert.match(
      validateSuperblock(sb, raw, { sbStartSector: 0, devSectors: 65536 }).join(),
      /super_offset/,
    );
    assert.match(
      validateSuperblock(sb, raw, { sbStartSector: 8, devSectors: 40000 }).join(),
      /too small/,
    );
    const bad = readAt(f, 4096, 4096);
    bad[0] = 0;
    assert.throws(() => decodeSuperblock(bad), /no md superblock/);
  });

  test('uuid text form', () => {
    const u = parseUuid('b235697a:0b005409:a1350d9e:9ebddcb0');
    assert.equal(uuidText(u), 'b235697a:0b005409:a1350d9e:9ebddcb0');
    assert.throws(() => parseUuid('xyz'), /invalid UUID/);
  });

  test('property: decode(encode(sb)) == sb for arbitrary field values', () => {
    const u64 = fc.bigInt({ min: 0n, max: MAX_SECTOR });
    const u32 = fc.integer({ min: 0, max: 0xffffffff });
    const s32 = fc.integer({ min: -0x80000000, max: 0x7fffffff });
    const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
    fc.assert(
      fc.property(
        fc.record({
          featureMap: u32,
          setUuid: bytes(16),
          setName: bytes(32),
          ctime: u64,
          level: s32,
          layout: u32,
          size: u64,
          chunkSize: u32,
          raidDisks: u32,
          bitmapOffset: s32,
          newLevel: s32,
          reshapePosition: u64,
          deltaDisks: s32,
          newOffset: s32,
          dataOffset: u64,
          events: u64,
          bblogOffset: s32,
          devFlags: fc.integer({ min: 0, max: 255 }),
          roles: fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 0, maxLength: 300 }),
        }),
        (r) => {
          const sb: Superblock1 = {
            majorVersion: 1,
            featureMap: r.featureMap,
            pad0: 0,
            setUuid: r.setUuid,
            setName: r.setName,
            ctime: r.ctime,
            level: r.level,
            layout: r.layout,
            size: r.size,
            chunkSize: r.chunkSize,
            raidDisks: r.raidDisks,
            bitmapOffset: r.bitmapOffset,
            newLevel: r.newLevel,
            reshapePosition: r.reshapePosition,
            deltaDisks: r.deltaDisks,
            newLayout: 7,
            newChunk: 9,
            newOffset: r.newOffset,
            dataOffset: r.dataOffset,
            dataSize: 1234n,
            superOffset: 8n,
            recoveryOffset: 5n,
            devNumber: 3,
            cntCorrectedRead: 2,
            deviceUuid: r.setUuid.slice().reverse(),
            devFlags: r.devFlags,
            bblogShift: 1,
            bblogSize: 8,
            bblogOffset: r.bblogOffset,
            utime: r.ctime,
            events: r.events,
            resyncOffset: MAX_SECTOR,
            sbCsum: 0,
            maxDev: r.roles.length,
            pad3: new Uint8Array(32),
            devRoles: r.roles,
          };
          const enc = encodeSuperblock(sb);
          const dec = decodeSuperblock(enc);
          assert.deepEqual(dec, sb);
          assert.deepEqual(encodeSuperblock(dec), enc);
        },
      ),
      { numRuns: 300 },
    );
  });
});
