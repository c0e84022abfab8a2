/**
 * Parity kernel benchmark: P (XOR) and P+Q generation against memcpy of the same data volume,
 * measured in the same run.
 *
 * "Bytes" are data bytes processed: for D disks of B bytes, one P or P+Q generation counts D*B.
 * The memcpy baseline copies the same D blocks of B bytes each into one destination block
 * (same source buffers, same destination footprint as P). Two baselines are measured:
 * Uint8Array.prototype.set and Buffer.copy; the ratio uses the faster of the two.
 *
 * Fast path = all buffers from the parity arena (in place); fallback = plain Uint8Arrays
 * (staged through the arena's scratch area).
 *
 * Run: node dist/bench/parity.js [--quick]
 */

import { pathToFileURL } from 'node:url';
import { genP, genPQ, parityArena, recoverTwoData } from '../src/raid/parity/index.js';

interface Case {
  disks: number;
  blockBytes: number;
}

const P_TARGET = 0.4;
const PQ_TARGET = 0.2;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/**
 * GB/s of `fn` that processes `bytesPerCall` per call: calibrates the repetitions so one sample
 * takes about `sampleMs`, warms up, and returns the median of `samples` samples.
 */
function measure(fn: () => void, bytesPerCall: number, samples: number, sampleMs: number): number {
  for (let i = 0; i < 20; i++) fn(); // warm-up (lets V8 tier the kernels up)
  let reps = 1;
  for (;;) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < reps; i++) fn();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (ms >= sampleMs / 4 || reps >= 1 << 20) {
      reps = Math.max(1, Math.round((reps * sampleMs) / Math.max(ms, 0.001)));
      break;
    }
    reps *= 2;
  }
  const rates: number[] = [];
  for (let s = 0; s < samples; s++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < reps; i++) fn();
    const ns = Number(process.hrtime.bigint() - t0);
    rates.push((bytesPerCall * reps) / ns); // bytes per ns = GB/s
  }
  return median(rates);
}

function fill(buf: Uint8Array, seed: number): void {
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < buf.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    buf[i] = x >>> 24;
  }
}

function kib(n: number): string {
  return n >= 1024 * 1024 ? `${n / (1024 * 1024)} MiB` : `${n / 1024} KiB`;
}

function fmt(x: number): string {
  return x.toFixed(2);
}

export async function runParityBench(opts: { quick?: boolean } = {}): Promise<void> {
  const quick = opts.quick === true;
  const samples = quick ? 3 : 7;
  const sampleMs = quick ? 15 : 40;
  const cases: Case[] = [];
  const sizes = quick ? [64 * 1024, 1024 * 1024] : [64 * 1024, 256 * 1024, 1024 * 1024];
  for (const disks of [4, 8]) for (const blockBytes of sizes) cases.push({ disks, blockBytes });

  const arena = parityArena();
  console.log(
    `parity bench (${quick ? 'quick' : 'full'}): node ${process.version}, median of ${samples} samples; ` +
      'GB/s = data bytes per second; ratio = parity / max(memcpy by Uint8Array.set, Buffer.copy)',
  );
  let failures = 0;
  for (const { disks, blockBytes } of cases) {
    const total = disks * blockBytes;
    // Arena (fast path) buffers and plain (fallback path) buffers with the same content.
    const aData: Uint8Array[] = [];
    const jData: Uint8Array[] = [];
    for (let k = 0; k < disks; k++) {
      const a = arena.alloc(blockBytes);
      fill(a, k + 1);
      aData.push(a);
      jData.push(Uint8Array.from(a));
    }
    const aP = arena.alloc(blockBytes);
    const aQ = arena.alloc(blockBytes);
    const jP = new Uint8Array(blockBytes);
    const jQ = new Uint8Array(blockBytes);
    const copyDst = new Uint8Array(blockBytes);
    const bufSrcs = jData.map((d) => Buffer.from(d.buffer, d.byteOffset, d.length));
    const bufDst = Buffer.from(copyDst.buffer, copyDst.byteOffset, copyDst.length);

    const memcpySet = measure(
      () => {
        for (let k = 0; k < disks; k++) copyDst.set(jData[k]);
      },
      total,
      samples,
      sampleMs,
    );
    const memcpyBuf = measure(
      () => {
        for (let k = 0; k < disks; k++) bufSrcs[k].copy(bufDst, 0);
      },
      total,
      samples,
      sampleMs,
    );
    const memcpy = Math.max(memcpySet, memcpyBuf);
    const pFast = measure(() => genP(aData, aP), total, samples, sampleMs);
    const pqFast = measure(() => genPQ(aData, aP, aQ), total, samples, sampleMs);
    const pSlow = measure(() => genP(jData, jP), total, samples, sampleMs);
    const pqSlow = measure(() => genPQ(jData, jP, jQ), total, samples, sampleMs);
    // Two-data-failure recovery (arena buffers, P/Q as just generated): rebuilds slots 0 and 1
    // in place (the same content again): P'/Q' of the survivors + the 2x2 solve.
    const rec2 = measure(() => recoverTwoData(aData, 0, 1, aP, aQ), total, samples, sampleMs);

    const shape = `${String(disks).padStart(2)} disks x ${kib(blockBytes).padStart(8)}`;
    const mem = `memcpy ${fmt(memcpy)} GB/s (set ${fmt(memcpySet)}, Buffer.copy ${fmt(memcpyBuf)})`;
    const line = (what: string, gbs: number, target: number | null): string => {
      const ratio = gbs / memcpy;
      const ok = target === null || ratio >= target;
      if (!ok) failures++;
      const tgt = target === null ? '' : `  (target >= ${target.toFixed(2)}${ok ? '' : ' MISSED'})`;
      return `parity ${what.padEnd(14)} ${shape}: ${fmt(gbs).padStart(6)} GB/s  ${mem}  ratio ${fmt(ratio)}${tgt}`;
    };
    console.log(line('P', pFast, P_TARGET));
    console.log(line('P+Q', pqFast, PQ_TARGET));
    console.log(line('P copy-path', pSlow, null));
    console.log(line('P+Q copy-path', pqSlow, null));
    console.log(line('recover 2 data', rec2, null));

    for (const b of [...aData, aP, aQ]) arena.free(b);
  }
  console.log(
    failures === 0 ? 'parity bench: all targets met' : `parity bench: ${failures} target(s) missed`,
  );
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runParityBench({ quick: process.argv.includes('--quick') }).catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
