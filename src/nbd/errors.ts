/**
 * Errors of a BlockTarget → the NBD error of the reply (spec/nbd.md, "Errors").
 */
import { AssertionError, ERROR_CODES, isErrorCode, TsmdError } from '../errors.js';
import { NbdErrno, type NbdErrnoName } from './protocol.js';

/**
 * Node's errno codes that are not tsmd codes, for targets that let them through (file I/O):
 * the nearest NBD error, as Linux's nbd driver and nbdkit would report them.
 */
const NODE_ERRNO: ReadonlyMap<string, NbdErrnoName> = new Map<string, NbdErrnoName>([
  ['EDQUOT', 'ENOSPC'],
  ['EFBIG', 'ENOSPC'],
  ['EACCES', 'EPERM'],
  ['EOPNOTSUPP', 'ENOTSUP'],
  ['ESHUTDOWN', 'ESHUTDOWN'],
  ['ENOMEM', 'ENOMEM'],
]);

/**
 * The NBD error of a failed request. TsmdError codes (and Node errno codes spelled the same,
 * e.g. a raw ENOSPC from fs) map through ERROR_CODES in ../errors.ts; Node's other codes through
 * NODE_ERRNO (EDQUOT/EFBIG→ENOSPC, EACCES→EPERM, EOPNOTSUPP→ENOTSUP, ESHUTDOWN, ENOMEM);
 * anything else is EIO. A failed assert() has no NBD error: it is rethrown, so that no caller
 * turns a bug into an EIO reply (the connection crashes the process on it instead).
 */
export function nbdErrnoOf(e: unknown): number {
  if (e instanceof AssertionError) throw e;
  const code = e instanceof TsmdError ? e.code : (e as { code?: unknown } | null | undefined)?.code;
  if (isErrorCode(code)) return NbdErrno[ERROR_CODES[code].nbd];
  if (typeof code === 'string') return NbdErrno[NODE_ERRNO.get(code) ?? 'EIO'];
  return NbdErrno.EIO;
}

/** True for errors that are a bug in tsmd rather than a failure of the storage. */
export function isUnexpected(e: unknown): boolean {
  if (e instanceof AssertionError) return true;
  return !(e instanceof TsmdError) && typeof (e as { code?: unknown } | null | undefined)?.code !== 'string';
}

/** A failed assert(): the connection must crash on it, not answer the request. */
export function isCrash(e: unknown): e is AssertionError {
  return e instanceof AssertionError;
}
