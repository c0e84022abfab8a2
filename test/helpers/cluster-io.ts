/**
 * What the md-cluster daemon tests share: a node's array state over its control socket, the
 * bitmap slots read off a member's backing file, log lines with their times, and a client
 * writer that keeps a model of what must read back (acknowledged, then flushed).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { controlCall } from '../../src/daemon/control.js';
import type { ArrayState } from '../../src/daemon/control.js';
import { countDirty } from '../../src/format/bitmap.js';
import { openDevice } from '../../src/io/file-device.js';
import { loadBitmaps, loadSuperblock } from '../../src/md/sb-io.js';
import type { TestDaemon } from './daemon.js';
import type { Host } from './hosts.js';
import type { NbdTestClient } from './nbd-client.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/** each node writes into its own region (as a cluster file system's nodes would) */
export const REGION_BYTES = 4 * MiB;
/** writes in flight together use distinct slots of the region, so they never overlap */
const SLOT_BYTES = 64 * KiB;
/** node k's region: 2 MiB + k x 8 MiB */
export const regionAt = (k: number): number => 2 * MiB + k * 8 * MiB;

/** The first array of a node's daemon (`arrays` control call). */
export async function state(h: Host): Promise<ArrayState> {
  const rep = (await controlCall(join(h.runDir, 'control.sock'), { op: 'arrays' }, 10_000)) as { arrays?: ArrayState[] };
  const a = rep.arrays?.[0];
  if (!a) throw new Error(`${h.name}: no array`);
  return a;
}

export async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** tsmd in the host; exit 0 or the test fails with its stderr. */
export function ok(h: Host, args: string[]): string {
  const r = h.tsmd(args);
  assert.equal(r.status, 0, `${h.name}: tsmd ${args.join(' ')}: ${r.stderr}`);
  return r.stdout + r.stderr;
}

/** Every node idle: no sync here or elsewhere, not waiting for the resync lock, all mirrors in. */
export async function allIdle(hosts: Host[], state_ = '[UU]'): Promise<boolean> {
  for (const h of hosts) {
    const a = await state(h);
    if (a.syncBusy || a.cluster?.remoteSync || a.cluster?.pending || !h.mdstat().includes(state_)) return false;
  }
  return true;
}

/** Dirty bits of every bitmap slot of one member, read off its backing file. */
export async function slotDirty(file: string): Promise<number[]> {
  return (await slotBits(file)).map((b) => countDirty(b.bits, b.nbits));
}

/** The bits of every bitmap slot of one member, read off its backing file. */
export async function slotBits(file: string): Promise<Array<{ bits: Uint8Array; nbits: number }>> {
  const d = await openDevice(file, { readOnly: true });
  try {
    const l = (await loadSuperblock(d))!;
    return (await loadBitmaps(d, l)).map((b) => ({ bits: b.bits.slice(), nbits: b.nbits }));
  } finally {
    await d.close();
  }
}

/**
 * Dirty chunks of `slot` on any of the members: what md-cluster's takeover merges (the kernel
 * reads one member's copy; a node killed between its bitmap writes to two members leaves them
 * different, and tsmd ORs them so no dirty chunk is missed).
 */
export async function slotDirtyUnion(files: string[], slot: number): Promise<{ union: number; perMember: number[] }> {
  const all = await Promise.all(files.map(slotBits));
  const first = all[0]![slot]!;
  const union = new Uint8Array(first.bits.length);
  for (const m of all) m[slot]!.bits.forEach((v, i) => (union[i]! |= v));
  return { union: countDirty(union, first.nbits), perMember: all.map((m) => countDirty(m[slot]!.bits, m[slot]!.nbits)) };
}

/** Times (pino's epoch ms) of a daemon's log lines that contain `text`, from `sinceMs` on. */
export function logTimes(d: TestDaemon, text: string, sinceMs = 0): number[] {
  const out: number[] = [];
  for (const line of d.logs().split('\n')) {
    if (!line.includes(text)) continue;
    const atMs = (JSON.parse(line) as { time: number }).time;
    if (atMs >= sinceMs) out.push(atMs);
  }
  return out;
}

/**
 * One node's client: writes of 4..64 KiB at random 4 KiB-aligned places of its region, a FLUSH
 * after some batches. `durable` holds what acknowledged-then-flushed writes put there; `unsure`
 * marks bytes whose last write was not flushed (or failed): not judged after a crash.
 * With `tolerant`, failed requests are recorded (`errors`, `firstErrorAtMs`) and writing goes on.
 */
export class Writer {
  readonly durable = Buffer.alloc(REGION_BYTES);
  readonly unsure = new Uint8Array(REGION_BYTES);
  private readonly acked: Array<[number, Buffer]> = [];
  /** spans of failed writes: never settled by a later flush (a fenced node's writes may be half done) */
  private readonly failedSpans: Array<[number, number]> = [];
  private stopping = false;
  private done: Promise<void> | null = null;
  failed: Error | null = null;
  writes = 0;
  /** NBD error numbers of failed requests (tolerant writers) */
  readonly errors: number[] = [];
  firstErrorAtMs: number | null = null;
  tolerant = false;

  constructor(
    readonly k: number,
    private readonly rnd: () => number,
  ) {}

  start(c: NbdTestClient): void {
    this.stopping = false;
    this.done = this.loop(c).catch((e: unknown) => {
      this.failed = e as Error;
    });
  }

  private async loop(c: NbdTestClient): Promise<void> {
    while (!this.stopping) {
      const slots = new Set(Array.from({ length: 1 + Math.floor(this.rnd() * 6) }, () => Math.floor(this.rnd() * (REGION_BYTES / SLOT_BYTES))));
      await Promise.all([...slots].map((slot) => this.guard(this.writeOne(c, slot))));
      if (this.rnd() < 0.5) await this.guard(this.flush(c));
      if (this.errors.length > 0) await new Promise((r) => setTimeout(r, 20));
    }
    await this.guard(this.flush(c));
  }

  private async guard(p: Promise<void>): Promise<void> {
    try {
      await p;
    } catch (e) {
      if (!this.tolerant) throw e;
      this.firstErrorAtMs ??= Date.now();
      this.errors.push((e as { nbdError?: number }).nbdError ?? -1);
    }
  }

  private async writeOne(c: NbdTestClient, slot: number): Promise<void> {
    const len = (1 + Math.floor(this.rnd() * 16)) * 4 * KiB;
    const at = slot * SLOT_BYTES + Math.floor(this.rnd() * ((SLOT_BYTES - len) / (4 * KiB) + 1)) * 4 * KiB;
    const data = randomBytes(len);
    this.unsure.fill(1, at, at + len);
    try {
      await c.write(regionAt(this.k) + at, data);
    } catch (e) {
      this.failedSpans.push([at, len]);
      throw e;
    }
    this.writes++;
    this.acked.push([at, data]);
  }

  private async flush(c: NbdTestClient): Promise<void> {
    const these = this.acked.splice(0);
    try {
      await c.flush();
    } catch (e) {
      this.acked.unshift(...these);
      throw e;
    }
    for (const [at, data] of these) data.copy(this.durable, at);
    // settled, unless written again since (still in acked) or a failed write left it unsure
    this.unsure.fill(0);
    for (const [at, data] of this.acked) this.unsure.fill(1, at, at + data.length);
    for (const [at, len] of this.failedSpans) this.unsure.fill(1, at, at + len);
  }

  /** Stop after the writes in flight and a last flush (a survivor's writer). */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.done;
    if (this.failed) throw this.failed;
  }

  /** The node died: its client's errors are expected; what it did not flush stays unsure. */
  async abandon(): Promise<void> {
    this.stopping = true;
    await this.done;
    this.failed = null;
    this.acked.splice(0);
  }

  /** Compare a read of the region with the model, skipping unsure bytes; then adopt what was read there. */
  judge(got: Buffer, where: string): void {
    for (let i = 0; i < REGION_BYTES; i += 512) {
      for (let j = i; j < i + 512; j++) {
        if (!this.unsure[j] && got[j] !== this.durable[j])
          assert.fail(`${where}: node${this.k + 1}'s flushed write at region byte ${i} (array byte ${regionAt(this.k) + i}) did not read back`);
      }
    }
    for (let i = 0; i < REGION_BYTES; i++) if (this.unsure[i]) this.durable[i] = got[i]!;
    this.unsure.fill(0);
    this.failedSpans.splice(0);
  }
}
