/**
 * The hand-made member images of shared/spec/md-formats.md §6 (mk_sb.py cases A–E and the
 * negative cases n1, n2, n4), rebuilt field by field with the project's encoder, and the mdadm
 * 4.2 outputs recorded for them in the spec.
 */
import { readFileSync } from 'node:fs';
import type { BitmapSlot } from '../../src/mdadm/report/examine-bitmap.js';
import {
  BITMAP_MAGIC,
  type BitmapSuper,
  bitmapAreaBytes,
  bitmapBits,
  decodeBitmapSuper,
  encodeBitmapSuper,
} from '../../src/format/bitmap.js';
import {
  decodeSuperblock,
  encodeSuperblock,
  Feature,
  MAX_SECTOR,
  nameBytes,
  parseUuid,
  Role,
  type Superblock1,
  sbLocation,
} from '../../src/format/superblock.js';

export const SPEC_PATH = '/work/shared/spec/md-formats.md';
export const DEV_SECTORS = 131072;
const UUID = parseUuid('0123456789abcdeffedcba9876543210');
const T0 = 1700000000n;

export interface SpecImage {
  name: string;
  raw: Uint8Array;
  sb: Superblock1;
  slots: BitmapSlot[];
  devSectors: number;
}

function baseSb(over: Partial<Superblock1>): Superblock1 {
  const maxDev = over.maxDev ?? 128;
  return {
    majorVersion: 1,
    featureMap: 0,
    pad0: 0,
    setUuid: UUID,
    setName: nameBytes('testhost:mdtest', 32),
    ctime: T0,
    level: 1,
    layout: 0,
    size: 0n,
    chunkSize: 0,
    raidDisks: 2,
    bitmapOffset: 0,
    newLevel: 0,
    reshapePosition: 0n,
    deltaDisks: 0,
    newLayout: 0,
    newChunk: 0,
    newOffset: 0,
    dataOffset: 0n,
    dataSize: 0n,
    superOffset: 0n,
    recoveryOffset: 0n,
    devNumber: 0,
    cntCorrectedRead: 0,
    deviceUuid: new Uint8Array(16),
    devFlags: 0,
    bblogShift: 0,
    bblogSize: 0,
    bblogOffset: 0,
    utime: T0 + 3600n,
    events: 0n,
    resyncOffset: MAX_SECTOR,
    sbCsum: 0,
    maxDev,
    pad3: new Uint8Array(32),
    devRoles: new Array<number>(maxDev).fill(Role.SPARE),
    ...over,
  };
}

function roles(maxDev: number, active: number[]): number[] {
  const r = new Array<number>(maxDev).fill(Role.SPARE);
  active.forEach((v, i) => {
    r[i] = v;
  });
  return r;
}

function devUuid(first: number): Uint8Array {
  return Uint8Array.from({ length: 16 }, (_, i) => first + i);
}

function bitmap(over: Partial<BitmapSuper>, dirty: number[]): BitmapSlot {
  const sup: BitmapSuper = {
    magic: BITMAP_MAGIC,
    version: 4,
    uuid: UUID,
    events: 0n,
    eventsCleared: 0n,
    syncSize: 0n,
    state: 0,
    chunkSize: 0,
    daemonSleep: 5,
    writeBehind: 0,
    sectorsReserved: 0,
    nodes: 0,
    clusterName: new Uint8Array(64),
    pad: new Uint8Array(120),
    ...over,
  };
  const nbits = bitmapBits(Number(sup.syncSize), sup.chunkSize);
  const bits = new Uint8Array(bitmapAreaBytes(nbits) - 256);
  for (const b of dirty) bits[b >> 3]! |= 1 << (b & 7);
  // round-trip through the codec so the test uses decoded structures only
  return { sup: decodeBitmapSuper(encodeBitmapSuper(sup)), bits };
}

function finish(
  name: string,
  sb: Superblock1,
  slots: BitmapSlot[],
  patch?: (raw: Uint8Array) => void,
): SpecImage {
  const raw = encodeSuperblock(sb);
  patch?.(raw);
  return { name, raw, sb: decodeSuperblock(raw), slots, devSectors: DEV_SECTORS };
}

function caseA(over: Partial<Superblock1> = {}): { sb: Superblock1; bm: BitmapSlot } {
  const size = 129024n;
  const sb = baseSb({
    featureMap: Feature.BITMAP_OFFSET,
    level: 1,
    size,
    raidDisks: 2,
    bitmapOffset: 8,
    dataOffset: 2048n,
    dataSize: BigInt(DEV_SECTORS - 2048),
    superOffset: BigInt(sbLocation(2, DEV_SECTORS)),
    devNumber: 0,
    deviceUuid: devUuid(0xa0),
    bblogSize: 8,
    bblogOffset: 16,
    events: 20n,
    devRoles: roles(128, [0, 1]),
    ...over,
  });
  const bm = bitmap(
    { events: 20n, eventsCleared: 20n, syncSize: 129024n, chunkSize: 1 << 20 },
    [0, 2, 62, 63],
  );
  return { sb, bm };
}

export function specImages(): SpecImage[] {
  const out: SpecImage[] = [];
  {
    const { sb, bm } = caseA();
    out.push(finish('a-r12-raid1-bitmap', sb, [bm]));
  }
  {
    const cn = nameBytes('mycluster', 64);
    const odd: number[] = [];
    for (let i = 0; i < 63; i += 2) odd.push(i);
    const common = { version: 5, syncSize: 129024n, chunkSize: 1 << 20, nodes: 2, clusterName: cn };
    const bm0 = bitmap({ ...common, events: 30n, eventsCleared: 30n }, odd);
    const bm1 = bitmap({ ...common, events: 28n, eventsCleared: 27n }, []);
    const sb = baseSb({
      featureMap: Feature.BITMAP_OFFSET | Feature.CLUSTERED,
      level: 1,
      size: 129024n,
      raidDisks: 2,
      bitmapOffset: 8,
      dataOffset: 2048n,
      dataSize: BigInt(DEV_SECTORS - 2048),
      superOffset: 8n,
      devNumber: 1,
      deviceUuid: devUuid(0xb0),
      events: 30n,
      devRoles: roles(128, [0, 1]),
    });
    out.push(finish('b-r12-raid1-clustered', sb, [bm0, bm1]));
  }
  {
    const sb = baseSb({
      featureMap: Feature.RESHAPE_ACTIVE | Feature.NEW_OFFSET | Feature.BAD_BLOCKS,
      level: 5,
      layout: 2,
      size: 126976n,
      chunkSize: 1024,
      raidDisks: 4,
      newLevel: 5,
      newLayout: 2,
      newChunk: 1024,
      deltaDisks: 1,
      reshapePosition: 6144n,
      newOffset: -1024,
      dataOffset: 4096n,
      dataSize: BigInt(DEV_SECTORS - 4096),
      superOffset: 8n,
      devNumber: 3,
      deviceUuid: devUuid(0xc0),
      bblogSize: 8,
      bblogOffset: 16,
      events: 1234n,
      maxDev: 5,
      devRoles: [0, 1, 2, 3, Role.SPARE],
    });
    out.push(finish('c-r12-raid5-reshape', sb, []));
  }
  {
    const so = sbLocation(0, DEV_SECTORS);
    const bm = bitmap(
      { events: 7n, eventsCleared: 7n, syncSize: 130944n, chunkSize: 64 << 20 },
      [],
    );
    const sb = baseSb({
      featureMap: Feature.BITMAP_OFFSET,
      level: 1,
      size: 130944n,
      raidDisks: 2,
      bitmapOffset: -16,
      dataOffset: 0n,
      dataSize: BigInt(so - 8 - 8),
      superOffset: BigInt(so),
      devNumber: 0,
      deviceUuid: devUuid(0xd0),
      bblogSize: 8,
      bblogOffset: -8,
      events: 7n,
      devRoles: roles(128, [0, 1]),
    });
    out.push(finish('d-r10-raid1-bitmap', sb, [bm]));
  }
  {
    const sb = baseSb({
      featureMap: Feature.RAID0_LAYOUT,
      level: 0,
      layout: 2,
      size: 0n,
      chunkSize: 1024,
      raidDisks: 3,
      dataOffset: 4096n,
      dataSize: BigInt(DEV_SECTORS - 4096),
      superOffset: 0n,
      devNumber: 2,
      deviceUuid: devUuid(0xe0),
      bblogSize: 8,
      bblogOffset: 8,
      events: 3n,
      devRoles: roles(128, [0, 1, 2]),
    });
    out.push(finish('e-r11-raid0-alt', sb, []));
  }
  {
    // n1: events 20 -> 21 after the checksum was computed
    const { sb, bm } = caseA();
    out.push(
      finish('n1-bad-csum', sb, [bm], (raw) => {
        new DataView(raw.buffer, raw.byteOffset).setBigUint64(200, 21n, true);
      }),
    );
  }
  {
    // n2: the bitmap superblock's uuid differs from set_uuid
    const { sb, bm } = caseA();
    const uuid = bm.sup.uuid.slice();
    uuid[0]! ^= 0xff;
    out.push(finish('n2-bitmap-uuid', sb, [{ sup: { ...bm.sup, uuid }, bits: bm.bits }]));
  }
  {
    // n4: size larger than the device minus data_offset
    const { sb, bm } = caseA({ size: 129024n + 8n });
    out.push(finish('n4-too-small', sb, [bm]));
  }
  return out;
}

/**
 * mdadm's recorded outputs in spec §6 ("Full output of mk_sb.py ..."): for image `name`, the
 * `mdadm --examine` block and (if any) the `mdadm --examine-bitmap` block, indentation removed.
 */
export function specOutputs(): Map<string, { examine?: string[]; examineBitmap?: string[] }> {
  const text = readFileSync(SPEC_PATH, 'utf8');
  const start = text.indexOf('### Full output of `python3 mk_sb.py');
  if (start < 0) throw new Error('spec §6 output block not found');
  const lines = text.slice(start).split('\n');
  const res = new Map<string, { examine?: string[]; examineBitmap?: string[] }>();
  let name = '';
  let cur: string[] | null = null;
  for (const l of lines) {
    if (l === '```' && name) break;
    const head = /^== ([A-Za-z0-9-]+):/.exec(l);
    if (head) {
      name = head[1]!;
      res.set(name, {});
      cur = null;
      continue;
    }
    if (!name) continue;
    if (l.startsWith('   $ mdadm --examine-bitmap ')) {
      cur = [];
      res.get(name)!.examineBitmap = cur;
      continue;
    }
    if (l.startsWith('   $ mdadm --examine ')) {
      cur = [];
      res.get(name)!.examine = cur;
      continue;
    }
    if (l.startsWith('   $ ')) {
      cur = null;
      continue;
    }
    if (cur && l.startsWith('   ')) cur.push(l.slice(3));
    else if (cur && l === '') cur.push('');
  }
  return res;
}
