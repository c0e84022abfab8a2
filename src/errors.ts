/**
 * The one error type of tsmd. Every failure that reaches a user carries a stable errno-like
 * code (mapped to NBD error replies and to mdadm-style exit codes) and a message that says
 * what to do next.
 */
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

/** Invariant check: a broken invariant is a bug and must crash loudly. */
export function assert(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Error(`tsmd invariant violated: ${what}`);
}
