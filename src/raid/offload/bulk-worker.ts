/**
 * A sync helper thread (see bulk.ts): moves and compares member data with synchronous
 * pread/pwrite on file descriptors the main thread holds open, in steps small enough that
 * the step's buffers stay in the CPU cache, and XORs with the WebAssembly parity kernels.
 *
 * Messages in: BulkRequest (bulk.ts); out: { id, flagged } or { id, error }.
 */
import { readSync, writeSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { instantiateParity, type ParityWasm, XOR_MAX_SRCS } from '../parity/kernels.js';
import { Wasm, type WasmMemory } from '../parity/wasm-api.js';
import type { BulkPiece, BulkRequest, BulkResponse, Syndrome } from './bulk.js';
import { BOUNCE_SKEW_BYTES } from '../../io/file-device.js';

/** Bytes per step per source: a step's sources and result fit in a 1 MiB L2 cache. */
const STEP_TOTAL_BYTES = 1024 * 1024;
const STEP_MAX_BYTES = 256 * 1024;
const STEP_MIN_BYTES = 16 * 1024;
const PAGE = 4096;
const WASM_PAGE = 65536;

let memory: WasmMemory | null = null;
let kernels: ParityWasm | null = null;
let zero = new Uint8Array(0);

/** `count` buffers of `step` bytes in WebAssembly memory: their addresses. */
function buffers(count: number, step: number): number[] {
  const stride = step + PAGE;
  const need = WASM_PAGE + count * stride + PAGE;
  if (memory === null) {
    memory = new Wasm.Memory({ initial: Math.ceil(need / WASM_PAGE) });
    kernels = instantiateParity(memory);
  } else if (memory.buffer.byteLength < need) {
    memory.grow(Math.ceil((need - memory.buffer.byteLength) / WASM_PAGE));
  }
  if (zero.length < step) zero = new Uint8Array(step);
  // half a page in, as the device layer's bounce buffers (kernel copies to page + 8..31 are slow)
  return Array.from({ length: count }, (_, i) => WASM_PAGE + BOUNCE_SKEW_BYTES + i * stride);
}

function view(addr: number, len: number): Uint8Array {
  return new Uint8Array(memory!.buffer, addr, len);
}

function fullRead(fd: number, buf: Uint8Array, pos: number): void {
  let done = 0;
  while (done < buf.length) {
    const n = readSync(fd, buf, done, buf.length - done, pos + done);
    if (n === 0) throw Object.assign(new Error(`short read at byte ${pos + done} (device shrank?)`), { code: 'EIO' });
    done += n;
  }
}

function fullWrite(fd: number, buf: Uint8Array, pos: number): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, pos + done);
}

function stepFor(sources: number): number {
  const raw = Math.floor(STEP_TOTAL_BYTES / (sources + 1) / PAGE) * PAGE;
  return Math.max(STEP_MIN_BYTES, Math.min(STEP_MAX_BYTES, raw));
}

/** dst = XOR of the sources (folded XOR_MAX_SRCS at a time). */
function xorInto(dst: number, srcs: readonly number[], len: number): void {
  const k = kernels!;
  let first = true;
  for (let i = 0; i < srcs.length;) {
    const take = Math.min(first ? XOR_MAX_SRCS : XOR_MAX_SRCS - 1, srcs.length - i);
    const args = first ? srcs.slice(i, i + take) : [dst, ...srcs.slice(i, i + take)];
    k.xor[args.length - 1]!(dst, ...args, len);
    i += take;
    first = false;
  }
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

/** The Q kernels' slot table at `tbl`: each data block's address at its slot; the top slot. */
function slotTable(bufs: readonly number[], syn: Syndrome, tbl: number): number {
  const table = new Uint32Array(memory!.buffer, tbl, syn.slots);
  table.fill(0);
  let top = 0;
  for (let i = 0; i < syn.qSlots.length; i++) {
    const slot = syn.qSlots[i]!;
    table[slot] = bufs[i]!;
    top = Math.max(top, slot);
  }
  return top;
}

/**
 * raid6 check of one step: P and Q recomputed from the data blocks (bufs[0..nd) data, then
 * the P and Q read from the disk, then two outputs and the slot table with top slot `top`);
 * true when either differs.
 */
function pqDiffers(bufs: readonly number[], nd: number, top: number, len: number): boolean {
  const [pDisk, qDisk, pOut, qOut, tbl] = [bufs[nd]!, bufs[nd + 1]!, bufs[nd + 2]!, bufs[nd + 3]!, bufs[nd + 4]!];
  kernels!.pq(tbl, top, pOut, qOut, len);
  return !equal(view(pOut, len), view(pDisk, len)) || !equal(view(qOut, len), view(qDisk, len));
}

/** The op's shape is what the worker's buffers assume: refused otherwise. */
function checkShape(op: BulkRequest['op'], p: BulkPiece): void {
  const n = p.srcs.length;
  let ok = n >= 1;
  if (op === 'pq') ok = p.syndrome?.qSlots.length === n - 2 && p.dsts.length === 0;
  else if (op === 'q') ok = p.syndrome?.qSlots.length === n && p.dsts.length > 0;
  else if (op === 'copy') ok = n === 1;
  if (!ok) throw Object.assign(new Error(`${op}: a piece with ${n} sources and ${p.dsts.length} destinations does not fit the op`), { code: 'EINVAL' });
}

/** Runs one piece; true when a compare or a zero check found a difference. */
function runPiece(op: BulkRequest['op'], p: BulkPiece): boolean {
  checkShape(op, p);
  const nsrc = p.srcs.length;
  // besides the sources: pq two outputs and the slot table, q one output and the table, the
  // others one output
  const extra = op === 'pq' ? 3 : op === 'q' ? 2 : 1;
  const step = stepFor(nsrc + extra - 1);
  const bufs = buffers(nsrc + extra, step);
  // the table holds the buffers' addresses, the same for every step: built once (last buffer)
  const top = p.syndrome && extra > 1 ? slotTable(bufs, p.syndrome, bufs[nsrc + extra - 1]!) : 0;
  for (let off = 0; off < p.bytes; off += step) {
    const len = Math.min(step, p.bytes - off);
    for (let i = 0; i < nsrc; i++) fullRead(p.srcs[i]![0], view(bufs[i]!, len), p.srcs[i]![1] + off);
    if (op === 'copy') {
      for (const [fd, at] of p.dsts) fullWrite(fd, view(bufs[0]!, len), at + off);
    } else if (op === 'pq') {
      if (pqDiffers(bufs, nsrc - 2, top, len)) return true;
    } else if (op === 'q') {
      const [out, tbl] = [bufs[nsrc]!, bufs[nsrc + 1]!];
      kernels!.q(tbl, top, out, len);
      for (const [fd, at] of p.dsts) fullWrite(fd, view(out, len), at + off);
    } else if (op === 'compare') {
      // a difference sends the whole piece back to the caller's own path: no need to read on
      for (let i = 1; i < nsrc; i++) if (!equal(view(bufs[0]!, len), view(bufs[i]!, len))) return true;
    } else {
      const out = bufs[nsrc]!;
      xorInto(out, bufs.slice(0, nsrc), len);
      if (p.dsts.length > 0) {
        for (const [fd, at] of p.dsts) fullWrite(fd, view(out, len), at + off);
      } else if (!equal(view(out, len), zero.subarray(0, len))) {
        return true;
      }
    }
  }
  return false;
}

parentPort!.on('message', (req: BulkRequest) => {
  let res: BulkResponse;
  try {
    const flagged: number[] = [];
    // parts in turn from the counter the call's threads share, until none is left or one failed
    while (Atomics.load(req.ctl, 1) === 0) {
      const i = Atomics.add(req.ctl, 0, 1);
      if (i >= req.pieces.length) break;
      const p = req.pieces[i]!;
      if (runPiece(req.op, p)) flagged.push(p.tag);
    }
    res = { id: req.id, flagged };
  } catch (e) {
    Atomics.store(req.ctl, 1, 1);
    const err = e as NodeJS.ErrnoException;
    res = { id: req.id, error: { code: err.code ?? 'EIO', message: err.message } };
  }
  parentPort!.postMessage(res);
});
