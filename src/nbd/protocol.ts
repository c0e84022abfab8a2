/**
 * NBD wire protocol: constants and the small fixed-size encoders/decoders of the fixed
 * newstyle handshake and the transmission phase (see shared/spec/nbd.md). Pure: no I/O.
 * Everything on the wire is big-endian.
 */
import type { NbdErrnoName } from '../errors.js';

/** "NBDMAGIC" */
export const NBDMAGIC_HI = 0x4e42444d;
export const NBDMAGIC_LO = 0x41474943;
/** "IHAVEOPT" */
export const IHAVEOPT_HI = 0x49484156;
export const IHAVEOPT_LO = 0x454f5054;
/** option reply magic 0x0003e889045565a9 */
export const OPT_REPLY_MAGIC_HI = 0x0003e889;
export const OPT_REPLY_MAGIC_LO = 0x045565a9;

export const REQUEST_MAGIC = 0x25609513;
export const EXTENDED_REQUEST_MAGIC = 0x21e41c71;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_BYTES = 16;
export const STRUCTURED_HEADER_BYTES = 20;
export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;

/** Handshake flags (server, u16) and client flags (u32): same bit meanings. */
export const HS_FIXED_NEWSTYLE = 1;
export const HS_NO_ZEROES = 2;

/** Longest string (export name, description, error message) the protocol allows. */
export const MAX_STRING_BYTES = 4096;

export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const REP_ERR = 0x80000000;
export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: REP_ERR + 1,
  ERR_POLICY: REP_ERR + 2,
  ERR_INVALID: REP_ERR + 3,
  ERR_PLATFORM: REP_ERR + 4,
  ERR_TLS_REQD: REP_ERR + 5,
  ERR_UNKNOWN: REP_ERR + 6,
  ERR_SHUTDOWN: REP_ERR + 7,
  ERR_BLOCK_SIZE_REQD: REP_ERR + 8,
  ERR_TOO_BIG: REP_ERR + 9,
} as const;

export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Transmission flags (u16). */
export const TxFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
} as const;

export const CmdFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
  PAYLOAD_LEN: 1 << 5,
} as const;

export const REPLY_FLAG_DONE = 1;

export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

/** Error values of the transmission phase (Linux errno numbers, fixed by the protocol). */
export const NbdErrno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const satisfies Record<NbdErrnoName, number>;
export type { NbdErrnoName };

export function errnoName(errno: number): NbdErrnoName | 'UNKNOWN' {
  for (const [k, v] of Object.entries(NbdErrno)) if (v === errno) return k as NbdErrnoName;
  return 'UNKNOWN';
}

export const CMD_NAMES: Record<number, string> = {
  [Cmd.READ]: 'read',
  [Cmd.WRITE]: 'write',
  [Cmd.DISC]: 'disc',
  [Cmd.FLUSH]: 'flush',
  [Cmd.TRIM]: 'trim',
  [Cmd.CACHE]: 'cache',
  [Cmd.WRITE_ZEROES]: 'writeZeroes',
  [Cmd.BLOCK_STATUS]: 'blockStatus',
};

const OPT_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Opt).map(([k, v]) => [v, k]),
);
export function optName(opt: number): string {
  return OPT_NAMES[opt] ?? `OPT_${opt}`;
}

/** Server greeting: NBDMAGIC, IHAVEOPT, u16 handshake flags. */
export function encodeGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.allocUnsafe(18);
  b.writeUInt32BE(NBDMAGIC_HI, 0);
  b.writeUInt32BE(NBDMAGIC_LO, 4);
  b.writeUInt32BE(IHAVEOPT_HI, 8);
  b.writeUInt32BE(IHAVEOPT_LO, 12);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

/** Option reply: magic, option, reply type, length, data. */
export function encodeOptionReply(opt: number, replyType: number, data?: Uint8Array): Buffer {
  const len = data ? data.length : 0;
  const b = Buffer.allocUnsafe(OPTION_REPLY_HEADER_BYTES + len);
  b.writeUInt32BE(OPT_REPLY_MAGIC_HI, 0);
  b.writeUInt32BE(OPT_REPLY_MAGIC_LO, 4);
  b.writeUInt32BE(opt >>> 0, 8);
  b.writeUInt32BE(replyType >>> 0, 12);
  b.writeUInt32BE(len, 16);
  if (data) b.set(data, OPTION_REPLY_HEADER_BYTES);
  return b;
}

/** Writes a u64 that fits a JS number (≤ 2^53). */
export function writeU64(b: Buffer, value: number, at: number): void {
  b.writeUInt32BE(Math.floor(value / 0x1_0000_0000), at);
  b.writeUInt32BE(value % 0x1_0000_0000, at + 4);
}

/** Reads a u64 as a number; values above 2^53 lose precision (callers treat them as out of range). */
export function readU64(b: Uint8Array, at: number): number {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return v.getUint32(at) * 0x1_0000_0000 + v.getUint32(at + 4);
}

/** INFO_EXPORT payload: u16 type, u64 size, u16 flags. */
export function encodeInfoExport(sizeBytes: number, txFlags: number): Buffer {
  const b = Buffer.allocUnsafe(12);
  b.writeUInt16BE(Info.EXPORT, 0);
  writeU64(b, sizeBytes, 2);
  b.writeUInt16BE(txFlags, 10);
  return b;
}

export function encodeInfoString(type: number, text: Buffer): Buffer {
  const b = Buffer.allocUnsafe(2 + text.length);
  b.writeUInt16BE(type, 0);
  text.copy(b, 2);
  return b;
}

export function encodeInfoBlockSize(min: number, preferred: number, max: number): Buffer {
  const b = Buffer.allocUnsafe(14);
  b.writeUInt16BE(Info.BLOCK_SIZE, 0);
  b.writeUInt32BE(min, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(max, 10);
  return b;
}

/** REP_SERVER payload: u32 name length, name, description. */
export function encodeRepServer(name: Buffer, description: Buffer): Buffer {
  const b = Buffer.allocUnsafe(4 + name.length + description.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  description.copy(b, 4 + name.length);
  return b;
}

/** Reply to NBD_OPT_EXPORT_NAME: u64 size, u16 flags, then 124 zeros unless NO_ZEROES. */
export function encodeExportNameReply(sizeBytes: number, txFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? 10 : 134);
  writeU64(b, sizeBytes, 0);
  b.writeUInt16BE(txFlags, 8);
  return b;
}

export interface RequestHeader {
  magic: number;
  flags: number;
  type: number;
  /** the cookie, as two u32 halves (opaque to the server, echoed back) */
  cookieHi: number;
  cookieLo: number;
  /** may exceed 2^53 (then imprecise, and out of range for any export) */
  offset: number;
  length: number;
}

export function decodeRequestHeader(b: Uint8Array): RequestHeader {
  const v = new DataView(b.buffer, b.byteOffset, REQUEST_HEADER_BYTES);
  return {
    magic: v.getUint32(0),
    flags: v.getUint16(4),
    type: v.getUint16(6),
    cookieHi: v.getUint32(8),
    cookieLo: v.getUint32(12),
    offset: v.getUint32(16) * 0x1_0000_0000 + v.getUint32(20),
    length: v.getUint32(24),
  };
}

export function encodeSimpleReply(errno: number, cookieHi: number, cookieLo: number): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_BYTES);
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(errno, 4);
  b.writeUInt32BE(cookieHi, 8);
  b.writeUInt32BE(cookieLo, 12);
  return b;
}

/**
 * Structured chunk header; `extra` bytes are appended right after it (e.g. the u64 offset of
 * OFFSET_DATA) and count in the length along with `payloadBytes` sent separately.
 */
export function encodeStructuredHeader(
  flags: number,
  type: number,
  cookieHi: number,
  cookieLo: number,
  payloadBytes: number,
  extraBytes = 0,
): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_HEADER_BYTES + extraBytes);
  b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeUInt32BE(cookieHi, 8);
  b.writeUInt32BE(cookieLo, 12);
  b.writeUInt32BE(payloadBytes + extraBytes, 16);
  return b;
}

/** OFFSET_DATA chunk header (with DONE) followed by `dataBytes` of data sent separately. */
export function encodeOffsetDataHeader(
  cookieHi: number,
  cookieLo: number,
  offset: number,
  dataBytes: number,
  done: boolean,
): Buffer {
  const b = encodeStructuredHeader(done ? REPLY_FLAG_DONE : 0, ReplyType.OFFSET_DATA, cookieHi, cookieLo, dataBytes, 8);
  writeU64(b, offset, STRUCTURED_HEADER_BYTES);
  return b;
}

/** ERROR chunk (with DONE): u32 errno, u16 message length, message. */
export function encodeErrorChunk(cookieHi: number, cookieLo: number, errno: number, message: string): Buffer {
  let msg = Buffer.from(message, 'utf8');
  if (msg.length > MAX_STRING_BYTES) msg = msg.subarray(0, MAX_STRING_BYTES);
  const b = encodeStructuredHeader(REPLY_FLAG_DONE, ReplyType.ERROR, cookieHi, cookieLo, msg.length, 6);
  b.writeUInt32BE(errno, STRUCTURED_HEADER_BYTES);
  b.writeUInt16BE(msg.length, STRUCTURED_HEADER_BYTES + 4);
  return Buffer.concat([b, msg]);
}

/** NONE chunk with DONE: an empty successful structured reply. */
export function encodeNoneChunk(cookieHi: number, cookieLo: number): Buffer {
  return encodeStructuredHeader(REPLY_FLAG_DONE, ReplyType.NONE, cookieHi, cookieLo, 0);
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0 && n <= 0x8000_0000;
}

/**
 * The one metadata context tsmd offers: base:allocation, with the flags below per extent (0 =
 * data). Its id is the same on every connection, as qemu-nbd's is (a u32 of the server's
 * choice; clients only match it against what SET_META_CONTEXT answered).
 */
export const BASE_ALLOCATION = 'base:allocation';
export const BASE_ALLOCATION_ID = 1;
export const StateFlag = { HOLE: 1, ZERO: 2 } as const;
/** descriptors per BLOCK_STATUS chunk: the protocol's bound is 2^20, this keeps a reply under 64 KiB */
export const MAX_EXTENTS_PER_REPLY = 8192;

/** REP_META_CONTEXT payload: u32 context id, then the context's name (no length: the rest). */
export function encodeMetaContext(id: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length);
  b.writeUInt32BE(id >>> 0, 0);
  n.copy(b, 4);
  return b;
}

/** BLOCK_STATUS chunk (with DONE): u32 context id, then (u32 length, u32 flags) per extent. */
export function encodeBlockStatusChunk(
  cookieHi: number,
  cookieLo: number,
  contextId: number,
  extents: readonly { length: number; flags: number }[],
): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_HEADER_BYTES + 4 + 8 * extents.length);
  encodeStructuredHeader(REPLY_FLAG_DONE, ReplyType.BLOCK_STATUS, cookieHi, cookieLo, 4 + 8 * extents.length).copy(b, 0);
  b.writeUInt32BE(contextId >>> 0, STRUCTURED_HEADER_BYTES);
  extents.forEach((e, i) => {
    b.writeUInt32BE(e.length >>> 0, STRUCTURED_HEADER_BYTES + 4 + 8 * i);
    b.writeUInt32BE(e.flags >>> 0, STRUCTURED_HEADER_BYTES + 8 + 8 * i);
  });
  return b;
}
