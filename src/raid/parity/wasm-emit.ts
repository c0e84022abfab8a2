/**
 * A very small WebAssembly binary emitter: just enough of the module format (types, one imported
 * memory, functions, exports, code) and of the instruction set (i32 arithmetic, structured
 * control flow, loads/stores and the handful of SIMD v128 instructions the parity kernels use).
 *
 * Module bytes are built in memory at run time; nothing generated is ever written to disk.
 * Encoding follows the WebAssembly core specification 2.0 (binary format, chapter 5) and the
 * fixed-width SIMD proposal that is part of it.
 */

import { assert } from '../../errors.js';

/** Value types (binary encodings). */
export const I32 = 0x7f;
export const V128 = 0x7b;
export type ValType = typeof I32 | typeof V128;

/** Unsigned LEB128 of a non-negative integer below 2^32. */
export function uleb(out: number[], value: number): void {
  assert(Number.isInteger(value) && value >= 0 && value <= 0xffffffff, `uleb ${value}`);
  let v = value;
  do {
    let byte = v & 0x7f;
    v = Math.floor(v / 128);
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
}

/** Signed LEB128 of an integer in the i32 range (unsigned 32-bit inputs are wrapped first). */
export function sleb(out: number[], value: number): void {
  assert(Number.isInteger(value), `sleb ${value}`);
  let v = value | 0;
  for (;;) {
    const byte = v & 0x7f;
    v >>= 7;
    const done = (v === 0 && (byte & 0x40) === 0) || (v === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return;
  }
}

function name(out: number[], s: string): void {
  const bytes = new TextEncoder().encode(s);
  uleb(out, bytes.length);
  for (const b of bytes) out.push(b);
}

/** Plain opcodes (single byte). */
const OP = {
  block: 0x02,
  loop: 0x03,
  if: 0x04,
  else: 0x05,
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  return: 0x0f,
  drop: 0x1a,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  i32Load: 0x28,
  i32Load8U: 0x2d,
  i32Store: 0x36,
  i32Store8: 0x3a,
  i32Const: 0x41,
  i32Eqz: 0x45,
  i32Eq: 0x46,
  i32Ne: 0x47,
  i32LtU: 0x49,
  i32GtU: 0x4b,
  i32LeU: 0x4d,
  i32GeU: 0x4f,
  i32Add: 0x6a,
  i32Sub: 0x6b,
  i32Mul: 0x6c,
  i32And: 0x71,
  i32Or: 0x72,
  i32Xor: 0x73,
  i32Shl: 0x74,
  i32ShrS: 0x75,
  i32ShrU: 0x76,
} as const;

/** SIMD opcodes (prefix 0xfd, then the LEB128-encoded sub-opcode). */
const SIMD = {
  v128Load: 0x00,
  v128Store: 0x0b,
  v128Const: 0x0c,
  i8x16Swizzle: 0x0e,
  i8x16Splat: 0x0f,
  i8x16LtS: 0x25,
  v128Not: 0x4d,
  v128And: 0x4e,
  v128Or: 0x50,
  v128Xor: 0x51,
  i8x16Shl: 0x6b,
  i8x16ShrS: 0x6c,
  i8x16ShrU: 0x6d,
  i8x16Add: 0x6e,
} as const;

/** A label returned by block()/loop(): br() turns it into a relative depth. */
export interface Label {
  readonly depth: number;
}

/**
 * Builds one function body. Locals 0..params-1 are the parameters; `local()` declares more.
 * Each instruction method appends its encoding; structured control flow is tracked so that
 * br/br_if can name their target label instead of counting depths by hand.
 */
export class FunctionBuilder {
  readonly code: number[] = [];
  private readonly localTypes: ValType[] = [];
  private depth = 0;

  constructor(
    readonly params: readonly ValType[],
    readonly results: readonly ValType[],
  ) {}

  /** Declare a new local of type `t`; returns its index. */
  local(t: ValType): number {
    this.localTypes.push(t);
    return this.params.length + this.localTypes.length - 1;
  }

  private op(b: number): this {
    this.code.push(b);
    return this;
  }

  private simd(sub: number): this {
    this.code.push(0xfd);
    uleb(this.code, sub);
    return this;
  }

  private memarg(alignLog2: number, offset: number): void {
    uleb(this.code, alignLog2);
    uleb(this.code, offset);
  }

  // --- control ---------------------------------------------------------------------------
  block(): Label {
    this.op(OP.block).op(0x40);
    this.depth++;
    return { depth: this.depth };
  }

  loop(): Label {
    this.op(OP.loop).op(0x40);
    this.depth++;
    return { depth: this.depth };
  }

  if_(): Label {
    this.op(OP.if).op(0x40);
    this.depth++;
    return { depth: this.depth };
  }

  else_(): this {
    return this.op(OP.else);
  }

  end(): this {
    assert(this.depth > 0, 'end() without an open block');
    this.depth--;
    return this.op(OP.end);
  }

  br(l: Label): this {
    assert(l.depth <= this.depth, 'br to a closed label');
    this.op(OP.br);
    uleb(this.code, this.depth - l.depth);
    return this;
  }

  brIf(l: Label): this {
    assert(l.depth <= this.depth, 'br_if to a closed label');
    this.op(OP.brIf);
    uleb(this.code, this.depth - l.depth);
    return this;
  }

  return_(): this {
    return this.op(OP.return);
  }

  drop(): this {
    return this.op(OP.drop);
  }

  // --- locals ----------------------------------------------------------------------------
  get(i: number): this {
    this.op(OP.localGet);
    uleb(this.code, i);
    return this;
  }

  set(i: number): this {
    this.op(OP.localSet);
    uleb(this.code, i);
    return this;
  }

  tee(i: number): this {
    this.op(OP.localTee);
    uleb(this.code, i);
    return this;
  }

  // --- i32 -------------------------------------------------------------------------------
  i32Const(v: number): this {
    this.op(OP.i32Const);
    sleb(this.code, v);
    return this;
  }

  i32Load(offset = 0): this {
    this.op(OP.i32Load);
    this.memarg(2, offset);
    return this;
  }

  i32Load8U(offset = 0): this {
    this.op(OP.i32Load8U);
    this.memarg(0, offset);
    return this;
  }

  i32Store(offset = 0): this {
    this.op(OP.i32Store);
    this.memarg(2, offset);
    return this;
  }

  i32Store8(offset = 0): this {
    this.op(OP.i32Store8);
    this.memarg(0, offset);
    return this;
  }

  i32Eqz(): this {
    return this.op(OP.i32Eqz);
  }

  i32Eq(): this {
    return this.op(OP.i32Eq);
  }

  i32Ne(): this {
    return this.op(OP.i32Ne);
  }

  i32LtU(): this {
    return this.op(OP.i32LtU);
  }

  i32GtU(): this {
    return this.op(OP.i32GtU);
  }

  i32LeU(): this {
    return this.op(OP.i32LeU);
  }

  i32GeU(): this {
    return this.op(OP.i32GeU);
  }

  i32Add(): this {
    return this.op(OP.i32Add);
  }

  i32Sub(): this {
    return this.op(OP.i32Sub);
  }

  i32Mul(): this {
    return this.op(OP.i32Mul);
  }

  i32And(): this {
    return this.op(OP.i32And);
  }

  i32Or(): this {
    return this.op(OP.i32Or);
  }

  i32Xor(): this {
    return this.op(OP.i32Xor);
  }

  i32Shl(): this {
    return this.op(OP.i32Shl);
  }

  i32ShrS(): this {
    return this.op(OP.i32ShrS);
  }

  i32ShrU(): this {
    return this.op(OP.i32ShrU);
  }

  // --- v128 ------------------------------------------------------------------------------
  /** v128.load with a static byte offset; alignment hint 16 (a hint only: any address works). */
  v128Load(offset = 0): this {
    this.simd(SIMD.v128Load);
    this.memarg(4, offset);
    return this;
  }

  v128Store(offset = 0): this {
    this.simd(SIMD.v128Store);
    this.memarg(4, offset);
    return this;
  }

  /** v128.const with all sixteen lanes equal to `byte`. */
  v128ConstSplat8(byte: number): this {
    this.simd(SIMD.v128Const);
    for (let i = 0; i < 16; i++) this.code.push(byte & 0xff);
    return this;
  }

  i8x16Splat(): this {
    return this.simd(SIMD.i8x16Splat);
  }

  i8x16Swizzle(): this {
    return this.simd(SIMD.i8x16Swizzle);
  }

  i8x16LtS(): this {
    return this.simd(SIMD.i8x16LtS);
  }

  i8x16Shl(): this {
    return this.simd(SIMD.i8x16Shl);
  }

  i8x16ShrS(): this {
    return this.simd(SIMD.i8x16ShrS);
  }

  i8x16ShrU(): this {
    return this.simd(SIMD.i8x16ShrU);
  }

  i8x16Add(): this {
    return this.simd(SIMD.i8x16Add);
  }

  v128Not(): this {
    return this.simd(SIMD.v128Not);
  }

  v128And(): this {
    return this.simd(SIMD.v128And);
  }

  v128Or(): this {
    return this.simd(SIMD.v128Or);
  }

  v128Xor(): this {
    return this.simd(SIMD.v128Xor);
  }

  /** The encoded body: local declarations (run-length grouped), instructions, final `end`. */
  encodeBody(): number[] {
    assert(this.depth === 0, 'function body has unclosed blocks');
    const groups: Array<[number, ValType]> = [];
    for (const t of this.localTypes) {
      const last = groups[groups.length - 1];
      if (last !== undefined && last[1] === t) last[0]++;
      else groups.push([1, t]);
    }
    const body: number[] = [];
    uleb(body, groups.length);
    for (const [count, t] of groups) {
      uleb(body, count);
      body.push(t);
    }
    for (const b of this.code) body.push(b);
    body.push(OP.end);
    return body;
  }
}

/** A module with one imported memory (`env.memory`) and any number of exported functions. */
export class ModuleBuilder {
  private readonly funcs: Array<{ exportName: string; fb: FunctionBuilder }> = [];
  private memory: { module: string; field: string; minPages: number } | null = null;

  /** Imports a memory with at least `minPages` pages and no declared maximum (so one compiled
   * module can be instantiated against memories of any size). */
  importMemory(module: string, field: string, minPages: number): void {
    assert(minPages >= 0 && minPages <= 65536, 'memory limits');
    this.memory = { module, field, minPages };
  }

  /** Adds a function built by `build` and exports it under `exportName`. */
  func(
    exportName: string,
    params: readonly ValType[],
    results: readonly ValType[],
    build: (f: FunctionBuilder) => void,
  ): void {
    const fb = new FunctionBuilder(params, results);
    build(fb);
    this.funcs.push({ exportName, fb });
  }

  toBytes(): Uint8Array {
    const out: number[] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    const section = (id: number, content: number[]): void => {
      out.push(id);
      uleb(out, content.length);
      for (const b of content) out.push(b);
    };

    // Type section: one type per function (duplicates are allowed and keep this simple).
    const types: number[] = [];
    uleb(types, this.funcs.length);
    for (const { fb } of this.funcs) {
      types.push(0x60);
      uleb(types, fb.params.length);
      for (const p of fb.params) types.push(p);
      uleb(types, fb.results.length);
      for (const r of fb.results) types.push(r);
    }
    section(1, types);

    if (this.memory !== null) {
      const imp: number[] = [];
      uleb(imp, 1);
      name(imp, this.memory.module);
      name(imp, this.memory.field);
      imp.push(0x02, 0x00); // memory, limits: min only
      uleb(imp, this.memory.minPages);
      section(2, imp);
    }

    const fsec: number[] = [];
    uleb(fsec, this.funcs.length);
    for (let i = 0; i < this.funcs.length; i++) uleb(fsec, i);
    section(3, fsec);

    const exp: number[] = [];
    uleb(exp, this.funcs.length);
    this.funcs.forEach(({ exportName }, i) => {
      name(exp, exportName);
      exp.push(0x00);
      uleb(exp, i);
    });
    section(7, exp);

    const code: number[] = [];
    uleb(code, this.funcs.length);
    for (const { fb } of this.funcs) {
      const body = fb.encodeBody();
      uleb(code, body.length);
      for (const b of body) code.push(b);
    }
    section(10, code);

    return Uint8Array.from(out);
  }
}
