/**
 * Arrays on sparse member files for the takeover tests (src/md/takeover.ts): created as tsmd
 * --create would, assembled in this process, and the data model the tests check them against.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { SystemClock } from '../../src/env/clock.js';
import { openDevice } from '../../src/io/file-device.js';
import { MdArray } from '../../src/md/array.js';
import { createArray } from '../../src/md/create.js';
import type { Level } from '../../src/md/create-plan.js';
import { growTakeover, type LevelChangeRequest } from '../../src/md/takeover.js';
import { tsmdExamine } from './examine.js';
import { run, sparseFile } from './tools.js';

const MiB = 1024 * 1024;

export interface FileArrayOptions {
  level: Level;
  raidDisks: number;
  /** member sizes in MiB, one per file (the first raidDisks active) */
  sizesMiB: number[];
  chunkKiB?: number;
  layout?: number;
  bitmap?: 'internal' | 'none';
}

/** Sparse member files in dir with a new array on them (clean: the initial sync done). */
export async function fileArray(dir: string, tag: string, o: FileArrayOptions): Promise<string[]> {
  const paths = o.sizesMiB.map((m, i) => sparseFile(join(dir, `${tag}-${i}.img`), m * MiB));
  const devs = await Promise.all(paths.map((p) => openDevice(p)));
  await createArray(
    devs,
    {
      level: o.level,
      raidDisks: o.raidDisks,
      metadata: '1.2',
      chunkKiB: o.level === 1 ? undefined : o.chunkKiB,
      layout: o.layout,
      setName: 'test:takeover',
      uuid: randomBytes(16),
      deviceUuids: devs.map(() => randomBytes(16)),
      bitmap: o.bitmap ?? 'none',
      nowSeconds: 1_700_000_000,
      members: devs.map((d) => ({ sizeSectors: Math.floor(d.sizeBytes / 512) })),
    },
    { confirmOverwrite: async () => false, initialSync: true, clock: new SystemClock() },
  );
  await Promise.all(devs.map((d) => d.close().catch(() => {})));
  return paths;
}

export async function assembleFiles(paths: string[], log?: string[], run = false): Promise<MdArray> {
  const devs = await Promise.all(paths.map((p) => openDevice(p)));
  return MdArray.assemble(devs, { clock: new SystemClock(), log: log ? (m) => log.push(m) : undefined, run });
}

/** growTakeover with the --add devices opened from files; returns the messages mdadm would print. */
export async function takeover(arr: MdArray, req: Omit<LevelChangeRequest, 'devName' | 'adding'>, add: string[] = []): Promise<{ done: boolean; said: string[] }> {
  const said: string[] = [];
  const done = await growTakeover(
    arr,
    { ...req, devName: '/dev/md0', adding: add.length },
    {
      add: add.map((p) => ({ path: p, shown: p })),
      open: (p) => openDevice(p, { exclusive: true }),
      deviceUuid: () => randomBytes(16),
      say: (m) => said.push(m),
    },
  );
  return { done, said };
}

/** 4 KiB blocks: the array offset and a generation, so a stale block is told apart. */
export function fill(buf: Uint8Array, off: number, gen: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let i = 0; i < buf.length; i += 4) dv.setUint32(i, ((off + i) / 4 + gen * 0x9e3779b1) >>> 0, true);
}

/** Block (4 KiB) -> generation written there last. */
export type Model = Map<number, number>;

export async function writeAll(arr: MdArray, model: Model, gen: number, upTo = arr.sizeBytes, from = 0): Promise<void> {
  const buf = new Uint8Array(MiB);
  for (let off = from; off < upTo; off += MiB) {
    const n = Math.min(MiB, upTo - off);
    fill(buf.subarray(0, n), off, gen);
    await arr.write(buf.subarray(0, n), off);
    for (let b = 0; b < n; b += 4096) model.set((off + b) / 4096, gen);
  }
}

/** Some scattered 16 KiB writes (deterministic places). */
export async function writeSome(arr: MdArray, model: Model, gen: number, count = 24): Promise<void> {
  const buf = new Uint8Array(16 * 1024);
  const blocks = Math.floor(arr.sizeBytes / 4096) - 4;
  for (let k = 0; k < count; k++) {
    const blk = Math.floor(((k * 7919 + gen * 104729) % blocks) / 4) * 4;
    fill(buf, blk * 4096, gen + k);
    await arr.write(buf, blk * 4096);
    for (let i = 0; i < 4; i++) model.set(blk + i, gen + k);
  }
}

export async function verify(arr: MdArray, model: Model, upTo: number): Promise<void> {
  const buf = new Uint8Array(MiB);
  const want = new Uint8Array(4096);
  for (let off = 0; off < upTo; off += MiB) {
    const n = Math.min(MiB, upTo - off);
    await arr.read(buf.subarray(0, n), off);
    for (let b = 0; b < n; b += 4096) {
      fill(want, off + b, model.get((off + b) / 4096) ?? 0);
      assert.deepEqual(buf.subarray(b, b + 4096), want, `block at ${off + b}`);
    }
  }
}

export async function checkMismatches(arr: MdArray): Promise<number> {
  await arr.setSyncAction('check');
  await arr.sync.runUntilIdle();
  return arr.sync.mismatchCnt;
}

/** `mdadm --examine` of a member file: the text, and its "Key : value" fields. */
export function mdadmExamine(path: string): { text: string; fields: Map<string, string> } {
  const r = run('mdadm', ['--examine', path]);
  assert.equal(r.status, 0, `mdadm --examine ${path}: ${r.stderr}`);
  const fields = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const i = line.indexOf(' : ');
    if (i >= 0) fields.set(line.slice(0, i).trim(), line.slice(i + 3).trim());
  }
  return { text: r.stdout, fields };
}

/** tsmd --examine (run in this process, as bin/tsmd runs it) prints exactly what the real mdadm --examine prints. */
export async function examineAgrees(path: string): Promise<Map<string, string>> {
  const theirs = mdadmExamine(path);
  const out = await tsmdExamine(path);
  assert.equal(out, theirs.text, `tsmd --examine ${path} differs from mdadm --examine`);
  return theirs.fields;
}
