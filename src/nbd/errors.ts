/**
 * Errors of a BlockTarget → the NBD error of the reply (spec/nbd.md, "Errors").
 */
import { TsmdError } from '../errors.js';
import { NbdErrno } from './protocol.js';

/**
 * TsmdError codes (and Node's errno codes, for targets that let them through) to NBD errors:
 * EIO→EIO, ENOSPC/EDQUOT/EFBIG→ENOSPC, EROFS/EPERM/EACCES→EPERM, EINVAL→EINVAL,
 * ENOTSUP/EOPNOTSUPP→ENOTSUP, ENODEV/ESHUTDOWN→ESHUTDOWN, ENOMEM→ENOMEM, anything else EIO.
 */
export function nbdErrnoOf(e: unknown): number {
  const code = e instanceof TsmdError ? e.code : (e as { code?: unknown } | null)?.code;
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return NbdErrno.ENOSPC;
    case 'EROFS':
    case 'EPERM':
    case 'EACCES':
      return NbdErrno.EPERM;
    case 'EINVAL':
      return NbdErrno.EINVAL;
    case 'ENOTSUP':
    case 'EOPNOTSUPP':
      return NbdErrno.ENOTSUP;
    case 'ENODEV':
    case 'ESHUTDOWN':
      return NbdErrno.ESHUTDOWN;
    case 'ENOMEM':
      return NbdErrno.ENOMEM;
    default:
      return NbdErrno.EIO;
  }
}

/** True for errors that are a bug in tsmd rather than a failure of the storage. */
export function isUnexpected(e: unknown): boolean {
  return !(e instanceof TsmdError) && typeof (e as { code?: unknown } | null)?.code !== 'string';
}
