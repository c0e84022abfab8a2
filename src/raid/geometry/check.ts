/**
 * Argument checks shared by the geometry modules. A bad argument is a caller bug or a bad
 * superblock value: it throws a TsmdError('EINVAL') whose message names the parameter.
 */
import { TsmdError } from '../../errors.js';

export function fail(message: string): never {
  throw new TsmdError('EINVAL', message);
}

/** `value` must be a safe integer >= min (and <= max when given). */
export function requireInt(name: string, value: number, min: number, max?: number): void {
  if (!Number.isSafeInteger(value)) fail(`${name} must be an integer, got ${value}`);
  if (value < min) fail(`${name} must be >= ${min}, got ${value}`);
  if (max !== undefined && value > max) fail(`${name} must be <= ${max}, got ${value}`);
}

export function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 && 2 ** Math.round(Math.log2(value)) === value;
}

/** Kernel rule for RAID4/5/6/10 chunks: a power of two of at least one page (8 sectors). */
export function requireChunkPow2(name: string, value: number): void {
  requireInt(name, value, 1);
  if (!isPowerOfTwo(value) || value < 8) {
    fail(`${name} must be a power of two of at least 8 sectors (4 KiB), got ${value}`);
  }
}

/** `arraySector` must lie in [0, arraySectors). */
export function requireArraySector(arraySector: number, arraySectors: number): void {
  requireInt('arraySector', arraySector, 0);
  if (arraySector >= arraySectors) {
    fail(`arraySector ${arraySector} is beyond the end of the array (${arraySectors} sectors)`);
  }
}
