/**
 * What the NBD server serves: a BlockTarget (an md array, a file, a memory device...) under a
 * name. Any BlockDevice of src/io is a BlockTarget as it is.
 */
import { TsmdError } from '../errors.js';
import { isPowerOfTwo } from './protocol.js';

export interface BlockTarget {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** min / preferred / max payload advertised in INFO_BLOCK_SIZE (default 512 / 4096 / 32 MiB) */
  readonly blockSize?: { min: number; preferred: number; max: number };
  /**
   * false when the target keeps a per-connection cache, so that a FLUSH on one connection does
   * not cover writes made through another one (then CAN_MULTI_CONN is not advertised).
   * Default true.
   */
  readonly multiConn?: boolean;
  /**
   * Fills buf (all of it, or throws). The server owns buf: it is sent to the client and reused
   * once the promise has settled, so the target must not touch it afterwards.
   */
  read(buf: Uint8Array, offsetBytes: number): Promise<void>;
  /**
   * Writes buf (all of it, or throws). buf is a view of the received payload, valid only until
   * the promise settles: the server reuses its memory for later requests, so a target that
   * needs the bytes longer (a cache, a queue) must copy them.
   */
  write(buf: Uint8Array, offsetBytes: number): Promise<void>;
  /** everything written (acknowledged) before the call is durable when it resolves */
  flush(): Promise<void>;
  trim?(offsetBytes: number, lengthBytes: number): Promise<void>;
  writeZeroes?(offsetBytes: number, lengthBytes: number, opts: { noHole: boolean }): Promise<void>;
  cache?(offsetBytes: number, lengthBytes: number): Promise<void>;
  /**
   * What NBD_CMD_BLOCK_STATUS (base:allocation) reports for [offset, offset+length): extents in
   * order from offset, together at most `length` bytes (fewer is allowed: the client asks again
   * for the rest). `hole`: no storage behind the range; `zero`: it reads as zeros. Only a target
   * that KNOWS may say so (a range never written, or trimmed and known to read as zeros);
   * without this method everything is reported as data, which is always correct. md arrays
   * leave it out: tsmd cannot see holes in the members from Node, and md itself keeps no record
   * of what was never written.
   */
  blockStatus?(offsetBytes: number, lengthBytes: number): Promise<BlockExtent[]>;
}

export interface BlockExtent {
  lengthBytes: number;
  hole: boolean;
  zero: boolean;
}

export interface NbdExport {
  name: string;
  description?: string;
  target: BlockTarget;
}

export interface ExportRegistry {
  list(): NbdExport[];
  get(name: string): NbdExport | undefined;
}

export const DEFAULT_BLOCK_SIZE = { min: 512, preferred: 4096, max: 32 * 1024 * 1024 } as const;

/**
 * The sizes to advertise for a target: its own (or the defaults), with the maximum payload
 * clamped to the server's limit. Throws EINVAL for sizes the protocol forbids.
 */
export function advertisedBlockSize(
  target: BlockTarget,
  maxPayloadBytes: number,
): { min: number; preferred: number; max: number } {
  const bs = target.blockSize ?? DEFAULT_BLOCK_SIZE;
  const max = Math.min(bs.max, maxPayloadBytes);
  if (!isPowerOfTwo(bs.min) || bs.min > 65536) {
    throw new TsmdError('EINVAL', `NBD minimum block size ${bs.min} must be a power of 2 ≤ 65536`);
  }
  if (!isPowerOfTwo(bs.preferred) || bs.preferred < Math.max(bs.min, 512)) {
    throw new TsmdError('EINVAL', `NBD preferred block size ${bs.preferred} must be a power of 2 ≥ max(min, 512)`);
  }
  if (!Number.isSafeInteger(max) || max < bs.preferred || max > 0xffffffff || max % bs.min !== 0) {
    throw new TsmdError(
      'EINVAL',
      `NBD maximum payload ${max} must be ≥ the preferred block size ${bs.preferred} and a multiple of the minimum ${bs.min}`,
    );
  }
  return { min: bs.min, preferred: bs.preferred, max };
}

/** A simple mutable registry (the daemon may bring its own). */
export class MapExportRegistry implements ExportRegistry {
  private readonly exports = new Map<string, NbdExport>();

  constructor(exports: NbdExport[] = []) {
    for (const e of exports) this.add(e);
  }

  add(e: NbdExport): void {
    if (Buffer.byteLength(e.name, 'utf8') > 4096) {
      throw new TsmdError('EINVAL', `NBD export name too long (max 4096 bytes): ${e.name.slice(0, 40)}...`);
    }
    if (this.exports.has(e.name)) throw new TsmdError('EEXIST', `NBD export ${e.name} already exists; remove it first`);
    this.exports.set(e.name, e);
  }

  remove(name: string): boolean {
    return this.exports.delete(name);
  }

  list(): NbdExport[] {
    return [...this.exports.values()];
  }

  get(name: string): NbdExport | undefined {
    return this.exports.get(name);
  }
}
