/**
 * The error types of tsmd. Every failure that reaches a user carries a stable errno-like code
 * (mapped to NBD error replies and to mdadm-style exit codes by ERROR_CODES below) and a message
 * that says what to do next. A broken invariant is not such a failure: assert() throws an
 * AssertionError, which is a bug report and must crash the process instead of becoming an error
 * reply (Node's own AssertionError is the model: code ERR_ASSERTION, never an I/O error).
 */

/**
 * The errors an NBD reply can carry (spec/nbd.md "Errors"). The names live here, at the bottom,
 * so that ERROR_CODES can say which one each code becomes; nbd/protocol.ts NbdErrno gives their
 * numbers and its type makes the compiler keep the two lists equal.
 */
export type NbdErrnoName = 'EPERM' | 'EIO' | 'ENOMEM' | 'EINVAL' | 'ENOSPC' | 'EOVERFLOW' | 'ENOTSUP' | 'ESHUTDOWN';

/** tsmd's error codes; ERROR_CODES below says what each means and what it becomes. */
export type ErrorCode =
  | 'EIO'
  | 'EINVAL'
  | 'EBUSY'
  | 'ENOSPC'
  | 'ENODEV'
  | 'ENOENT'
  | 'EEXIST'
  | 'ETIMEDOUT'
  | 'EAGAIN'
  | 'EPERM'
  | 'EROFS'
  | 'ENOTSUP'
  | 'EBADSB' // corrupt or foreign superblock
  | 'ESTALE' // member with outdated events
  | 'EDEADLK' // DLM conversion deadlock (Linux -EDEADLK)
  | 'ECANCELED' // DLM request cancelled or force-unlocked while pending (Linux -DLM_ECANCEL)
  | 'EFENCED'; // DLM node lost its membership (lease expired/partitioned): it must stop I/O

/**
 * What a code means to the two places a user sees it: the exit status of the tsmd command
 * (mdadm's convention: 0 success, 1 failure, 2 bad usage; usage errors are mdadm/args.ts's
 * UsageError, not a code here) and the error of an NBD reply (spec/nbd.md "Errors", the only
 * errnos a client understands; see nbd/protocol.ts NbdErrno).
 */
export interface ErrorCodeInfo {
  /** mdadm exit status when this error ends a command */
  exit: number;
  /** NBD error of a request that fails with it */
  nbd: NbdErrnoName;
}

/**
 * The codes and their meanings, in one table (as Node's errors registry and undici's stable
 * codes keep theirs); its type makes the compiler insist that every code has a row. mdadm exits 1 for every failure that is not a usage error, so every exit here is 1; the
 * NBD errors are what nbd/errors.ts has always answered (the Linux errno where NBD has it,
 * EPERM for a read-only target as nbdkit does, ESHUTDOWN for a target that went away, EIO
 * otherwise).
 */
export const ERROR_CODES: Readonly<Record<ErrorCode, ErrorCodeInfo>> = {
  /**
   * I/O failed on a member or the array (Linux -EIO), or a failure with no better code. Check
   * the member devices (dmesg, SMART) and --detail; a redundant array may go on degraded.
   */
  EIO: { exit: 1, nbd: 'EIO' },
  /**
   * A request or argument that cannot be right: bad geometry, sizes, offsets, options (Linux
   * -EINVAL). Fix the command; the message names the value.
   */
  EINVAL: { exit: 1, nbd: 'EINVAL' },
  /**
   * A device or array is in use by something else: a running array, another daemon, a busy
   * resync (mdadm's "Device or resource busy"). Stop the user named in the message, or wait.
   */
  EBUSY: { exit: 1, nbd: 'EIO' },
  /**
   * No room: a device too small for the array, a write beyond the end (Linux -ENOSPC). Use
   * larger devices or a smaller --size.
   */
  ENOSPC: { exit: 1, nbd: 'ENOSPC' },
  /**
   * No such array or device is active, or no node daemon answers (mdadm's "No such device").
   * Assemble the array, start `tsmd daemon`, or check the name.
   */
  ENODEV: { exit: 1, nbd: 'ESHUTDOWN' },
  /** A named file does not exist (mdadm.conf, a member path). Check the path. */
  ENOENT: { exit: 1, nbd: 'EIO' },
  /** The name is already taken: the array is already active or the device already a member. */
  EEXIST: { exit: 1, nbd: 'EIO' },
  /**
   * Something did not answer in time: the node daemon, a DLM request. Check that the daemon
   * (or the lock service) runs, then retry.
   */
  ETIMEDOUT: { exit: 1, nbd: 'EIO' },
  /** Not possible right now, try again (DLM NOQUEUE requests, Linux -EAGAIN). Retry later. */
  EAGAIN: { exit: 1, nbd: 'EIO' },
  /** Permission denied on a device or file (Linux -EPERM/-EACCES). Run as a user that may open it. */
  EPERM: { exit: 1, nbd: 'EPERM' },
  /**
   * The array or member is read-only (md's read-only/auto-read-only state, Linux -EROFS).
   * `tsmd --readwrite /dev/mdX` if writing is intended.
   */
  EROFS: { exit: 1, nbd: 'EPERM' },
  /**
   * A feature md has that tsmd does not implement, or one the array's format forbids (Linux
   * -EOPNOTSUPP). Use mdadm/the kernel for it, or choose a supported layout.
   */
  ENOTSUP: { exit: 1, nbd: 'ENOTSUP' },
  /**
   * A superblock that is corrupt or not md's (bad magic, checksum, sizes). Check that the
   * device is the right one; --examine shows what is there.
   */
  EBADSB: { exit: 1, nbd: 'EIO' },
  /**
   * A member whose event count is behind the others (md's "non-fresh" member): it is left out.
   * Re-add it (--re-add / --add) so it is rebuilt, or --force the assembly if you know better.
   */
  ESTALE: { exit: 1, nbd: 'EIO' },
  /** DLM conversion deadlock (Linux -EDEADLK): one of the conversions must give way. Retry. */
  EDEADLK: { exit: 1, nbd: 'EIO' },
  /**
   * DLM request cancelled or force-unlocked while pending (Linux -DLM_ECANCEL). Retry if the
   * lock is still wanted.
   */
  ECANCELED: { exit: 1, nbd: 'EIO' },
  /**
   * DLM node lost its membership (lease expired, partitioned): it must stop I/O. Re-join the
   * cluster once the node is healthy again.
   */
  EFENCED: { exit: 1, nbd: 'EIO' },
};

/** Is `code` one of tsmd's codes (e.g. one that came over the control socket)? */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}

export class TsmdError extends Error {
  readonly code: ErrorCode;
  override readonly cause?: unknown;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message);
    this.name = 'TsmdError';
    this.code = code;
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

export function isTsmdError(e: unknown, code?: ErrorCode): e is TsmdError {
  return e instanceof TsmdError && (code === undefined || e.code === code);
}

/**
 * A broken invariant: a bug in tsmd, not a failure of the storage or of the request. Not a
 * TsmdError, so no `catch` that handles TsmdErrors (the CLI's exit codes, the control socket)
 * mistakes it for one, and the NBD server crashes on it instead of answering EIO (the kernel's
 * BUG_ON, Node's assert.AssertionError with code ERR_ASSERTION).
 */
export class AssertionError extends Error {
  readonly code = 'ERR_TSMD_ASSERTION';
}
// on the prototype, so that the stack (what the daemon's log prints) starts with the name too:
// Error() writes the stack's first line before a constructor could set this.name
AssertionError.prototype.name = 'TsmdAssertionError';

/** Invariant check: a broken invariant is a bug and must crash loudly. */
export function assert(cond: unknown, what: string): asserts cond {
  if (!cond) throw new AssertionError(`tsmd invariant violated: ${what}`);
}
