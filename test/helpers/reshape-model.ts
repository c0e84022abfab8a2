/**
 * The block model of the in-process reshape tests: every 4 KiB block of the array holds its
 * array offset and a generation (so a stale or misplaced block is told apart), and a test keeps
 * block -> generation for what it wrote; the whole array is then read back against it. Also
 * the crash-image tools of the in-process crash tests (image, tap) and the --examine judge.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BlockDevice } from '../../src/io/block-device.js';
import { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { SystemClock } from '../../src/env/clock.js';
import { MdArray } from '../../src/md/array.js';
import { prng } from './prng.js';
import { run, tempDir, tsmdBin } from './tools.js';

const BLOCK = 4096;
const READ = 1024 * 1024;

/** The content of the blocks at array byte `off` written as generation `gen` (0: the base fill). */
export function fillBlocks(buf: Uint8Array, off: number, gen: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  for (let i = 0; i < buf.length; i += 4) dv.setUint32(i, ((off + i) / 4 + gen * 0x9e3779b1) >>> 0, true);
}

/** Reads [0, upTo) of the array and checks every block against the model (block -> generation). */
export async function verifyModel(arr: MdArray, model: ReadonlyMap<number, number>, upTo: number, why = ''): Promise<void> {
  const buf = new Uint8Array(READ);
  const want = new Uint8Array(BLOCK);
  for (let off = 0; off < upTo; off += READ) {
    const n = Math.min(READ, upTo - off);
    await arr.read(buf.subarray(0, n), off);
    for (let b = 0; b < n; b += BLOCK) {
      fillBlocks(want, off + b, model.get((off + b) / BLOCK) ?? 0);
      assert.ok(Buffer.from(buf.buffer, buf.byteOffset + b, BLOCK).equals(want), `${why ? `${why}: ` : ''}block at ${off + b}`);
    }
  }
}

/** md's check after any resync the array owes (a raid10 grow resyncs its new region): mismatch_cnt. */
export async function checkMismatches(arr: MdArray): Promise<number> {
  await arr.sync.runUntilIdle();
  await arr.setSyncAction('check');
  await arr.sync.runUntilIdle();
  return arr.sync.mismatchCnt;
}

/** tsmd --examine prints what mdadm --examine prints for every member (written to files). */
export async function examineLikeMdadm(devs: MemoryBlockDevice[], when: string): Promise<void> {
  const dir = tempDir('reshape-examine');
  try {
    const files = devs.map((d, i) => {
      const f = join(dir.path, `m${i}.img`);
      writeFileSync(f, dump(d));
      return f;
    });
    const ours = run(process.execPath, [tsmdBin, '--examine', ...files]);
    const theirs = run('mdadm', ['--examine', ...files]);
    assert.equal(theirs.status, 0, theirs.stderr);
    assert.equal(ours.stdout, theirs.stdout, `${when}: --examine`);
    if (when === 'during') assert.match(theirs.stdout, /Reshape pos'n/);
  } finally {
    dir.cleanup();
  }
}

/** Every byte of a memory device. */
export function dump(d: MemoryBlockDevice): Uint8Array {
  const out = new Uint8Array(d.sizeBytes);
  d.reopen({ readOnly: true }).readSync(out, 0);
  return out;
}

/** A copy of a memory device's contents now (a crash image). */
export function image(d: MemoryBlockDevice): MemoryBlockDevice {
  const src = d.reopen({ readOnly: true });
  const out = new MemoryBlockDevice(d.name, d.sizeBytes);
  const buf = new Uint8Array(READ);
  for (let off = 0; off < d.sizeBytes; off += READ) {
    const n = Math.min(READ, d.sizeBytes - off);
    src.readSync(buf.subarray(0, n), off);
    if (buf.subarray(0, n).some((x) => x !== 0)) out.writeSync(buf.subarray(0, n), off);
  }
  return out;
}

/** Delegates to a memory device; `onWrite` runs before each write is done, `onFlush` before a flush. */
export function tap(d: MemoryBlockDevice, onWrite: (buf: Uint8Array, off: number) => void, onFlush: () => void = () => {}): BlockDevice {
  return {
    name: d.name,
    sizeBytes: d.sizeBytes,
    readOnly: false,
    read: (b, o) => d.read(b, o),
    write: (b, o) => {
      onWrite(b, o);
      return d.write(b, o);
    },
    flush: () => {
      onFlush();
      return d.flush();
    },
    close: () => d.close(),
  };
}

/** The array's [0, bytes) written as generation 1 (1 MiB writes), recorded in the model. */
export async function fillModel(arr: MdArray, model: Map<number, number>, bytes = arr.sizeBytes): Promise<void> {
  const buf = new Uint8Array(READ);
  for (let off = 0; off < bytes; off += READ) {
    const n = Math.min(READ, bytes - off);
    fillBlocks(buf.subarray(0, n), off, 1);
    await arr.write(buf.subarray(0, n), off);
    for (let b = 0; b < n; b += BLOCK) model.set((off + b) / BLOCK, 1);
  }
}

/**
 * Three writers at random 16 KiB groups of [0, bytes) (each its own third of the groups) while
 * `busy()`, a FLUSH every `flushEvery` writes; the model follows. Returns the writes done.
 */
export async function writersDuring(
  arr: MdArray,
  model: Map<number, number>,
  bytes: number,
  busy: () => boolean,
  o: { seed?: number; flushEvery?: number } = {},
): Promise<number> {
  const rnd = prng(o.seed ?? 7);
  const flushEvery = o.flushEvery ?? 7;
  let gen = 2;
  const writer = async (k: number) => {
    const b = new Uint8Array(4 * BLOCK);
    const groups = Math.floor(bytes / b.length);
    while (busy()) {
      const blk = (Math.floor((rnd() * groups) / 3) * 3 + k) * 4;
      if (blk * BLOCK + b.length > bytes) continue;
      const g = gen++;
      for (let i = 0; i < 4; i++) fillBlocks(b.subarray(i * BLOCK, (i + 1) * BLOCK), (blk + i) * BLOCK, g);
      await arr.write(b, blk * BLOCK);
      for (let i = 0; i < 4; i++) model.set(blk + i, g);
      if (g % flushEvery === 0) await arr.flush();
      await new Promise((r) => setImmediate(r));
    }
  };
  await Promise.all([writer(0), writer(1), writer(2)]);
  return gen - 2;
}

/** 4 KiB blocks of [0, bytes) that do not hold the base fill (generation 1): a control's damage count. */
export async function damagedBlocks(arr: MdArray, bytes: number): Promise<number> {
  let bad = 0;
  const r = new Uint8Array(BLOCK);
  const want = new Uint8Array(BLOCK);
  for (let off = 0; off < bytes; off += BLOCK) {
    await arr.read(r, off);
    fillBlocks(want, off, 1);
    if (Buffer.compare(Buffer.from(r), Buffer.from(want)) !== 0) bad++;
  }
  return bad;
}

/** A reshape assembled again after a crash: let it run to the end; every block reads back, check 0. */
export async function resumeToEnd(arr: MdArray, model: ReadonlyMap<number, number>, bytes: number): Promise<void> {
  arr.startBackground();
  await arr.reshape.wait();
  assert.equal(arr.reshape.lastError, null);
  assert.equal(arr.reshapeActive, false);
  await verifyModel(arr, model, bytes, 'finished');
  assert.equal(await checkMismatches(arr), 0);
}

/**
 * A crash image inside a critical section, assembled again (with the backup file, when the
 * backup is not on a member): mdadm's "restoring critical section" is logged, reshape_position
 * moved past the section (`moved` says which way), every block reads back, and the reshape
 * finishes with check 0.
 */
export async function restoreAndFinish(
  members: MemoryBlockDevice[],
  model: ReadonlyMap<number, number>,
  bytes: number,
  o: { backupFile?: MemoryBlockDevice; moved: (position: number) => boolean },
): Promise<void> {
  const log: string[] = [];
  const again = await MdArray.assemble(members.map((d) => d.reopen()), {
    clock: new SystemClock(),
    log: (m) => log.push(m),
    ...(o.backupFile ? { backupFile: { dev: o.backupFile.reopen() } } : {}),
  });
  try {
    assert.ok(log.some((l) => /restoring critical section/.test(l)), log.join('\n'));
    assert.ok(o.moved(Number(again.sb.reshapePosition)), `reshape_position (${again.sb.reshapePosition}) moved past the restored section`);
    await verifyModel(again, model, bytes, 'restored');
    await resumeToEnd(again, model, bytes);
  } finally {
    await again.close();
  }
}
