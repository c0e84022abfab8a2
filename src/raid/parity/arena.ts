/**
 * The parity arena: one fixed-size WebAssembly.Memory shared by the parity kernels and by the
 * buffers the RAID engine allocates from it. Kernels read and write arena buffers in place (no
 * copy); any other buffer goes through the arena's scratch area in bounded chunks.
 *
 * The memory is never grown: growing a WebAssembly.Memory detaches every view of the old
 * ArrayBuffer, which would break every Uint8Array handed out by alloc().
 *
 * Layout (byte addresses):
 *   [0, 64 KiB)                 control: slot pointer table, nibble tables of all 256 constants
 *   [64 KiB, 64 KiB + scratch)  scratch for the copying (non-arena) path
 *   [heapStart, capacity)       allocator heap, 64-byte aligned blocks
 */

import { registerPageAlignedMemory } from '../../io/file-device.js';
import { assert, TsmdError } from '../../errors.js';
import { gfNibbleTables } from './gf.js';
import { instantiateParity, type ParityWasm } from './kernels.js';
import { Wasm, type WasmMemory } from './wasm-api.js';

export interface ParityArena {
  /**
   * A view of `lengthBytes` bytes of arena memory, 64-byte aligned; zero-filled unless `zero`
   * is false (a buffer that is read into or computed whole: zeroing it is a wasted pass).
   */
  alloc(lengthBytes: number, zero?: boolean): Uint8Array;
  /** Returns a buffer obtained from alloc() (the same view object, or one with the same
   * byteOffset and length). */
  free(buf: Uint8Array): void;
  /** True when buf is a view into this arena's heap (kernels then run on it without copying). */
  owns(buf: Uint8Array): boolean;
  readonly capacityBytes: number;
}

export interface ParityArenaOptions {
  /** Total arena size, rounded up to 64 KiB. Default 64 MiB; at most 2 GiB. */
  capacityBytes?: number;
  /** Size of the scratch area for non-arena buffers. Default 2 MiB, at least 128 KiB. */
  scratchBytes?: number;
}

export const WASM_PAGE_BYTES = 65536;
export const ARENA_ALIGN_BYTES = 64;
export const DEFAULT_ARENA_BYTES = 64 * 1024 * 1024;
export const DEFAULT_SCRATCH_BYTES = 2 * 1024 * 1024;
const MIN_SCRATCH_BYTES = 128 * 1024;
const MAX_ARENA_BYTES = 2 * 1024 * 1024 * 1024;

/** Control area: where the kernels find their tables. */
export const CONTROL_BYTES = WASM_PAGE_BYTES;
/** Slot pointer table for the syndrome kernels: one u32 per slot. */
export const SLOT_TABLE_ADDR = 1024;
export const SLOT_TABLE_ENTRIES = 1024;
/** Nibble tables of every constant c at NIBBLE_TABLES_ADDR + 32*c. */
export const NIBBLE_TABLES_ADDR = SLOT_TABLE_ADDR + 4 * SLOT_TABLE_ENTRIES;

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** An arena together with its instance of the kernels. */
export class WasmParityArena implements ParityArena {
  readonly capacityBytes: number;
  readonly memory: WasmMemory;
  /** A view of the whole memory (stable: the memory never grows). */
  readonly mem: Uint8Array;
  readonly wasm: ParityWasm;
  readonly scratchAddr: number;
  readonly scratchBytes: number;
  readonly heapStart: number;
  /** Free blocks, sorted by address, never adjacent (coalesced): [addr, size] pairs. */
  private readonly freeList: Array<[number, number]> = [];
  /** Allocated blocks: address -> reserved size. */
  private readonly allocated = new Map<number, number>();
  private usedBytes = 0;

  constructor(opts: ParityArenaOptions = {}) {
    const capacity = roundUp(opts.capacityBytes ?? DEFAULT_ARENA_BYTES, WASM_PAGE_BYTES);
    const scratch = roundUp(opts.scratchBytes ?? DEFAULT_SCRATCH_BYTES, WASM_PAGE_BYTES);
    assert(scratch >= MIN_SCRATCH_BYTES, `parity arena scratch must be >= ${MIN_SCRATCH_BYTES}`);
    if (capacity > MAX_ARENA_BYTES || capacity < CONTROL_BYTES + scratch + WASM_PAGE_BYTES) {
      throw new TsmdError(
        'EINVAL',
        `parity arena capacity ${capacity} bytes is out of range: use between ` +
          `${CONTROL_BYTES + scratch + WASM_PAGE_BYTES} and ${MAX_ARENA_BYTES} bytes`,
      );
    }
    const pages = capacity / WASM_PAGE_BYTES;
    this.memory = new Wasm.Memory({ initial: pages, maximum: pages });
    this.mem = new Uint8Array(this.memory.buffer);
    registerPageAlignedMemory(this.memory.buffer);
    this.capacityBytes = capacity;
    this.scratchAddr = CONTROL_BYTES;
    this.scratchBytes = scratch;
    this.heapStart = CONTROL_BYTES + scratch;
    this.freeList.push([this.heapStart, capacity - this.heapStart]);
    for (let c = 0; c < 256; c++) {
      gfNibbleTables(
        c,
        this.mem.subarray(NIBBLE_TABLES_ADDR + 32 * c, NIBBLE_TABLES_ADDR + 32 * c + 32),
      );
    }
    assert(NIBBLE_TABLES_ADDR + 256 * 32 <= CONTROL_BYTES, 'control area overflow');
    this.wasm = instantiateParity(this.memory);
  }

  /** Bytes currently handed out (rounded to the alignment). */
  get allocatedBytes(): number {
    return this.usedBytes;
  }

  alloc(lengthBytes: number, zero = true): Uint8Array {
    assert(
      Number.isInteger(lengthBytes) && lengthBytes >= 0,
      `alloc length must be a non-negative integer, got ${lengthBytes}`,
    );
    const size = roundUp(Math.max(lengthBytes, 1), ARENA_ALIGN_BYTES);
    for (let i = 0; i < this.freeList.length; i++) {
      const [addr, free] = this.freeList[i];
      if (free < size) continue;
      if (free === size) this.freeList.splice(i, 1);
      else this.freeList[i] = [addr + size, free - size];
      this.allocated.set(addr, size);
      this.usedBytes += size;
      const view = new Uint8Array(this.memory.buffer, addr, lengthBytes);
      if (zero) view.fill(0);
      return view;
    }
    throw new TsmdError(
      'ENOSPC',
      `parity arena is full: cannot allocate ${lengthBytes} bytes (${this.usedBytes} of ` +
        `${this.capacityBytes - this.heapStart} heap bytes in use); free unused buffers or ` +
        'create the arena with a larger capacityBytes',
    );
  }

  free(buf: Uint8Array): void {
    assert(buf.buffer === this.memory.buffer, 'free(): buffer does not belong to this arena');
    const addr = buf.byteOffset;
    const size = this.allocated.get(addr);
    assert(size !== undefined, `free(): no allocation at arena address ${addr} (double free?)`);
    assert(buf.length <= size, 'free(): buffer is longer than its allocation');
    this.allocated.delete(addr);
    this.usedBytes -= size;
    // Insert sorted, then coalesce with the neighbours.
    let lo = 0;
    let hi = this.freeList.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.freeList[mid][0] < addr) lo = mid + 1;
      else hi = mid;
    }
    this.freeList.splice(lo, 0, [addr, size]);
    const next = this.freeList[lo + 1];
    if (next !== undefined && addr + size === next[0]) {
      this.freeList[lo] = [addr, size + next[1]];
      this.freeList.splice(lo + 1, 1);
    }
    const prev = this.freeList[lo - 1];
    if (prev !== undefined && prev[0] + prev[1] === addr) {
      this.freeList[lo - 1] = [prev[0], prev[1] + this.freeList[lo][1]];
      this.freeList.splice(lo, 1);
    }
  }

  owns(buf: Uint8Array): boolean {
    return buf.buffer === this.memory.buffer && buf.byteOffset >= this.heapStart;
  }

  /** The arena address of buf when the kernels can use it in place, else -1. */
  addressOf(buf: Uint8Array): number {
    return buf.buffer === this.memory.buffer && buf.byteOffset >= this.heapStart
      ? buf.byteOffset
      : -1;
  }
}

let defaultOptions: ParityArenaOptions = {};
let defaultArena: WasmParityArena | null = null;

/**
 * Sets the size of the process-wide arena. Only before its first use (afterwards it would have
 * to grow, which is exactly what the arena must never do).
 */
export function configureParityArena(opts: ParityArenaOptions): void {
  if (defaultArena !== null) {
    throw new TsmdError(
      'EBUSY',
      'the parity arena is already in use; call configureParityArena() before the first parity operation',
    );
  }
  defaultOptions = { ...opts };
}

/** The process-wide arena, created on first use. */
export function defaultParityArena(): WasmParityArena {
  if (defaultArena === null) defaultArena = new WasmParityArena(defaultOptions);
  return defaultArena;
}

/** The process-wide arena (lazy init). */
export function parityArena(): ParityArena {
  return defaultParityArena();
}

/** alloc() on the process-wide arena: a zeroed, 64-byte aligned view into wasm memory. */
export function allocBuffer(lengthBytes: number): Uint8Array {
  return defaultParityArena().alloc(lengthBytes);
}

/** free() on the process-wide arena. */
export function freeBuffer(buf: Uint8Array): void {
  defaultParityArena().free(buf);
}
