/**
 * The DLM interface: Linux DLM semantics (fs/dlm, include/uapi/linux/dlm*.h) in TypeScript terms.
 *
 * Mapping from the kernel API:
 *
 * | Linux                                            | tsmd                                                     |
 * |--------------------------------------------------|----------------------------------------------------------|
 * | dlm_new_lockspace(name, .., lvblen, ops, ..)     | `await dlm.join({ name, lvbLength, ops, timeoutMs })`    |
 * | recover_prep / recover_slot / recover_done       | `ops.recoverPrep()`, `ops.recoverSlot(slot)`, `ops.recoverDone(slots, ourSlot)` |
 * | our_slot (1-based)                               | `ls.slot`                                                |
 * | dlm_lock(ls, mode, lksb, flags, name, ast, bast) | `const lk = await ls.lock(name, mode, { flags, lvb, bast, timeoutMs, signal })` |
 * | dlm_lock(.., DLM_LKF_CONVERT, lkid in lksb)      | `await lk.convert(mode, { flags, lvb, bast, timeoutMs, signal })` |
 * | completion AST + lksb.sb_status == 0             | the promise resolves; `lk.mode` is the granted mode      |
 * | sb_status -EAGAIN / -EDEADLK / -DLM_ECANCEL      | rejects with TsmdError EAGAIN / EDEADLK / ECANCELED      |
 * | lksb.sb_lvbptr                                   | `lk.lvb` (a Buffer of lvbLength bytes, the caller may write into it) |
 * | sb_flags DLM_SBF_VALNOTVALID / DEMOTED / ALTMODE | `lk.valNotValid`, `lk.sbFlags`                           |
 * | bast(mode)                                       | `opts.bast(mode)`, called with the blocked mode          |
 * | dlm_unlock(ls, lkid, flags)                      | `await lk.unlock({ flags, lvb })` (flags IVVALBLK, FORCEUNLOCK) |
 * | dlm_unlock(.., DLM_LKF_CANCEL)                   | `await lk.cancel()` (a pending conversion), or abort `opts.signal` (a pending new request) |
 * | dlm_release_lockspace(.., force=2)               | `await ls.leave()` (releases everything)                 |
 *
 * Differences that follow from being asynchronous and distributed, all deliberate:
 * - Every wait has a timeout (`timeoutMs`, default 30000 like md-cluster). On expiry the pending
 *   request is cancelled (a new request disappears, a conversion goes back to its granted mode)
 *   and the promise rejects with ETIMEDOUT naming the lockspace, resource and mode. If the grant
 *   raced the cancel and won, the promise resolves instead: the lock is held.
 * - A plain unlock of a lock whose request is still pending fails with EBUSY (cancel it, or use
 *   FORCEUNLOCK, which removes it and rejects the pending request with ECANCELED).
 * - A lockspace whose node lost its membership (lease expired, partition, crash in the in-memory
 *   backend) is fenced: `ls.fenced` becomes true, the 'fenced' listeners run once, every pending
 *   request rejects and every later call fails with EFENCED. Its locks are gone; re-join.
 * - PERSISTENT and ORPHAN (userspace lock lifetimes) and the deprecated TIMEOUT flag are refused.
 */
import { TsmdError } from '../../errors.js';

/** Lock modes (DLM_LOCK_*). IV is "no mode" (a new request, an unlocked lock). */
export const Mode = { IV: -1, NL: 0, CR: 1, CW: 2, PR: 3, PW: 4, EX: 5 } as const;
/** A real lock mode (NL..EX). */
export type Mode = 0 | 1 | 2 | 3 | 4 | 5;
/** A mode or IV (-1). */
export type ModeOrIV = Mode | -1;

export const MODE_NAMES: readonly string[] = ['NL', 'CR', 'CW', 'PR', 'PW', 'EX'];

export function modeName(m: number): string {
  return m === -1 ? 'IV' : (MODE_NAMES[m] ?? `mode(${m})`);
}

export function isMode(m: unknown): m is Mode {
  return typeof m === 'number' && Number.isInteger(m) && m >= 0 && m <= 5;
}

/** Request flags (DLM_LKF_*), same values as the kernel. */
export const Flag = {
  NOQUEUE: 0x1,
  CANCEL: 0x2,
  CONVERT: 0x4,
  VALBLK: 0x8,
  QUECVT: 0x10,
  IVVALBLK: 0x20,
  CONVDEADLK: 0x40,
  PERSISTENT: 0x80,
  NODLCKWT: 0x100,
  EXPEDITE: 0x400,
  NOQUEUEBAST: 0x800,
  HEADQUE: 0x1000,
  NOORDER: 0x2000,
  ORPHAN: 0x4000,
  ALTPR: 0x8000,
  ALTCW: 0x10000,
  FORCEUNLOCK: 0x20000,
  TIMEOUT: 0x40000,
} as const;

/** Flags accepted on lock()/convert() (CONVERT is implied by convert()). */
export const REQUEST_FLAGS =
  Flag.NOQUEUE | Flag.VALBLK | Flag.QUECVT | Flag.IVVALBLK | Flag.CONVDEADLK | Flag.NODLCKWT | Flag.EXPEDITE |
  Flag.NOQUEUEBAST | Flag.HEADQUE | Flag.NOORDER | Flag.ALTPR | Flag.ALTCW;
/** Flags accepted on unlock(). */
export const UNLOCK_FLAGS = Flag.VALBLK | Flag.IVVALBLK | Flag.FORCEUNLOCK;

/** lksb sb_flags (DLM_SBF_*). */
export const SbFlag = { DEMOTED: 1, VALNOTVALID: 2, ALTMODE: 4 } as const;

/**
 * The compatibility matrix (`__dlm_compat_matrix` without UN/PD): COMPAT[granted][requested].
 * Symmetric.
 */
export const COMPAT: readonly (readonly boolean[])[] = [
  /*        NL     CR     CW     PR     PW     EX   */
  /* NL */ [true, true, true, true, true, true],
  /* CR */ [true, true, true, true, true, false],
  /* CW */ [true, true, true, false, false, false],
  /* PR */ [true, true, false, true, false, false],
  /* PW */ [true, true, false, false, false, false],
  /* EX */ [true, false, false, false, false, false],
];

export function compatible(granted: number, requested: number): boolean {
  if (granted < 0 || requested < 0) return true; // IV conflicts with nothing
  return COMPAT[granted]![requested]!;
}

/** What a grant does with the LVB (`dlm_lvb_operations`). */
export const LvbOp = { NONE: -1, WRITE: 0, READ: 1 } as const;
export type LvbOp = -1 | 0 | 1;

/**
 * LVB_OPS[granted + 1][requested]: granted is IV (-1, a new request) .. EX; requested NL..EX.
 * READ returns the resource LVB to the caller, WRITE stores the caller's LVB in the resource.
 */
export const LVB_OPS: readonly (readonly LvbOp[])[] = [
  /*        NL  CR  CW  PR  PW  EX */
  /* IV */ [1, 1, 1, 1, 1, 1],
  /* NL */ [1, 1, 1, 1, 1, 1],
  /* CR */ [-1, 1, 1, 1, 1, 1],
  /* CW */ [-1, -1, 1, 1, 1, 1],
  /* PR */ [-1, -1, -1, 1, 1, 1],
  /* PW */ [0, 0, 0, 0, 0, 1],
  /* EX */ [0, 0, 0, 0, 0, 0],
];

export function lvbOp(granted: ModeOrIV, requested: Mode): LvbOp {
  return LVB_OPS[granted + 1]![requested]!;
}

/**
 * QUECVT is allowed only on a conversion up (`__quecvt_compat_matrix`): QUECVT_OK[granted][requested].
 */
export const QUECVT_OK: readonly (readonly boolean[])[] = [
  /*        NL     CR     CW     PR     PW     EX   */
  /* NL */ [false, true, true, true, true, true],
  /* CR */ [false, false, true, true, true, true],
  /* CW */ [false, false, false, true, true, true],
  /* PR */ [false, false, true, false, true, true],
  /* PW */ [false, false, false, false, false, true],
  /* EX */ [false, false, false, false, false, false],
];

/** One member of a lockspace as reported to recoverDone (`struct dlm_slot`). */
export interface SlotInfo {
  readonly nodeId: string;
  /** 1-based, stable while the node is a member, reusable after it leaves or dies. */
  readonly slot: number;
}

/** Lockspace recovery callbacks (`struct dlm_lockspace_ops`). They must not block for long. */
export interface RecoveryOps {
  /** Start of a membership change: locks of failed members may soon be granted to others. */
  recoverPrep?(): void;
  /** A member failed (not called for a clean leave); `slot` is its 1-based slot. */
  recoverSlot?(slot: number): void;
  /** End of recovery (also once at our own join): the members and our slot. */
  recoverDone?(slots: readonly SlotInfo[], ourSlot: number): void;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_SLOTS = 64;
/** Largest LVB accepted (the kernel has no hard limit; md-cluster uses 64). */
export const MAX_LVB_BYTES = 1024;
export const MAX_RESOURCE_NAME_BYTES = 64; // DLM_RESNAME_MAXLEN
export const MAX_LOCKSPACE_NAME_BYTES = 64; // DLM_LOCKSPACE_LEN

export interface JoinOptions {
  /** Lockspace name: 1..64 bytes of printable ASCII other than '/', no spaces. */
  name: string;
  /** LVB length in bytes: 0 (no LVBs) or a multiple of 8 up to MAX_LVB_BYTES; all members must agree. */
  lvbLength: number;
  ops?: RecoveryOps;
  /** Default timeout of every wait in this lockspace (ms). Default 30000. */
  timeoutMs?: number;
  /** Most members the lockspace accepts (slots 1..maxSlots). Default 64. */
  maxSlots?: number;
}

export interface LockOptions {
  /** Flag.* bits (see REQUEST_FLAGS). */
  flags?: number;
  /** With VALBLK: the LVB to write on a down-conversion from PW/EX (copied into lk.lvb first). */
  lvb?: Uint8Array;
  /** Blocking callback: called with the blocked mode when this lock blocks another request. */
  bast?: (mode: Mode) => void;
  /** Timeout of the wait for the grant (ms); default: the lockspace's. */
  timeoutMs?: number;
  /** Aborting cancels the pending request (DLM_LKF_CANCEL); it then rejects with ECANCELED. */
  signal?: AbortSignal;
}

export interface UnlockOptions {
  /** IVVALBLK, FORCEUNLOCK, VALBLK. */
  flags?: number;
  /** With VALBLK, unlocking from PW/EX writes this LVB (else the current lk.lvb). */
  lvb?: Uint8Array;
}

export interface LockHandle {
  readonly id: string;
  readonly resource: string;
  /** Granted mode, or null once unlocked/cancelled/purged. */
  readonly mode: Mode | null;
  /** Mode of the request in progress, or null. */
  readonly pendingMode: Mode | null;
  /** The lock's LVB buffer (lvbLength bytes; null in a lockspace without LVBs). */
  readonly lvb: Buffer | null;
  /** sb_flags of the last completion (SbFlag bits). */
  readonly sbFlags: number;
  /** The last grant with VALBLK found the resource's LVB flagged not valid. */
  readonly valNotValid: boolean;
  convert(mode: Mode, opts?: LockOptions): Promise<void>;
  unlock(opts?: UnlockOptions): Promise<void>;
  /** Cancel a pending conversion; true if something was cancelled. */
  cancel(): Promise<boolean>;
}

export interface Lockspace {
  readonly name: string;
  readonly nodeId: string;
  /** Our 1-based slot. */
  readonly slot: number;
  readonly lvbLength: number;
  readonly fenced: boolean;
  /** Current members as last seen by this node. */
  members(): SlotInfo[];
  lock(resource: string, mode: Mode, opts?: LockOptions): Promise<LockHandle>;
  /** Release every lock (force) and leave; other members see a clean leave (no recoverSlot). */
  leave(): Promise<void>;
  /** 'fenced': this node lost its membership and must stop acting on its locks. */
  on(event: 'fenced', listener: (err: TsmdError) => void): this;
  off(event: 'fenced', listener: (err: TsmdError) => void): this;
}

export interface Dlm {
  readonly nodeId: string;
  join(opts: JoinOptions): Promise<Lockspace>;
  /** Does the backend answer (network backends)? One cheap round trip; rejects with its error. */
  probe?(): Promise<void>;
  /** Drop the backend's connection (lockspaces not left are abandoned); the daemon's last step. */
  close?(): void;
}

// --- validation shared by both backends ---------------------------------------------------

const NAME_RE = /^[\x21-\x2e\x30-\x7e]+$/; // printable ASCII, no space, no '/'

export function validateLockspaceName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0)
    throw new TsmdError('EINVAL', 'DLM lockspace name must be a non-empty string');
  if (Buffer.byteLength(name) > MAX_LOCKSPACE_NAME_BYTES)
    throw new TsmdError('EINVAL', `DLM lockspace name ${JSON.stringify(name)} is longer than ${MAX_LOCKSPACE_NAME_BYTES} bytes`);
  if (!NAME_RE.test(name))
    throw new TsmdError(
      'EINVAL',
      `DLM lockspace name ${JSON.stringify(name)} is not storable: use printable ASCII without spaces, '/' or NUL (an etcd key component)`,
    );
  return name;
}

export function validateResourceName(ls: string, name: unknown): string {
  if (typeof name !== 'string' || name.length === 0)
    throw new TsmdError('EINVAL', `DLM ${ls}: resource name must be a non-empty string`);
  if (Buffer.byteLength(name) > MAX_RESOURCE_NAME_BYTES || !NAME_RE.test(name))
    throw new TsmdError(
      'EINVAL',
      `DLM ${ls}: resource name ${JSON.stringify(name)} must be 1..${MAX_RESOURCE_NAME_BYTES} bytes of printable ASCII without spaces or '/'`,
    );
  return name;
}

export function validateLvbLength(n: unknown): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > MAX_LVB_BYTES || n % 8 !== 0)
    throw new TsmdError('EINVAL', `DLM LVB length ${String(n)} is invalid: use 0 or a multiple of 8 up to ${MAX_LVB_BYTES}`);
  return n;
}

export function validateTimeout(ms: unknown, what: string): number {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0)
    throw new TsmdError('EINVAL', `${what}: timeoutMs must be a positive number of milliseconds, got ${String(ms)}`);
  return ms;
}

/** The checked settings of a join (both backends): name, LVB length, wait timeout, slot bound. */
export function validateJoinOptions(opts: JoinOptions): { name: string; lvbLength: number; timeoutMs: number; maxSlots: number } {
  const name = validateLockspaceName(opts?.name);
  const lvbLength = validateLvbLength(opts.lvbLength);
  const timeoutMs = opts.timeoutMs === undefined ? DEFAULT_TIMEOUT_MS : validateTimeout(opts.timeoutMs, `DLM ${name}`);
  const maxSlots = opts.maxSlots ?? DEFAULT_MAX_SLOTS;
  if (!Number.isInteger(maxSlots) || maxSlots < 1 || maxSlots > 4096) throw new TsmdError('EINVAL', `DLM ${name}: maxSlots must be 1..4096`);
  return { name, lvbLength, timeoutMs, maxSlots };
}

export function validateMode(ls: string, mode: unknown): Mode {
  if (!isMode(mode))
    throw new TsmdError('EINVAL', `DLM ${ls}: unknown lock mode ${JSON.stringify(mode)}: use Mode.NL, CR, CW, PR, PW or EX (0..5)`);
  return mode;
}

/** Checks the flags of a new request (new = true) or a conversion from `granted`. */
export function validateRequestFlags(ls: string, resource: string, flags: unknown, mode: Mode, lvbLength: number, granted: ModeOrIV): number {
  if (typeof flags !== 'number' || !Number.isInteger(flags) || flags < 0)
    throw new TsmdError('EINVAL', `DLM ${ls}/${resource}: flags must be a non-negative integer`);
  const bad = flags & ~REQUEST_FLAGS;
  if (bad !== 0) {
    const what = bad & (Flag.PERSISTENT | Flag.ORPHAN | Flag.TIMEOUT)
      ? 'PERSISTENT, ORPHAN and TIMEOUT are not supported (use timeoutMs)'
      : bad & (Flag.CANCEL | Flag.FORCEUNLOCK)
        ? 'CANCEL and FORCEUNLOCK belong to cancel()/unlock()'
        : bad & Flag.CONVERT ? 'use lk.convert() instead of CONVERT' : 'unknown flag bits';
    throw new TsmdError('EINVAL', `DLM ${ls}/${resource}: flags 0x${bad.toString(16)} refused: ${what}`);
  }
  const conv = granted !== -1;
  if (flags & Flag.EXPEDITE && (conv || mode !== Mode.NL || flags & (Flag.NOQUEUE | Flag.QUECVT)))
    throw new TsmdError('EINVAL', `DLM ${ls}/${resource}: EXPEDITE is only for a new NL request without NOQUEUE/QUECVT`);
  if (flags & (Flag.QUECVT | Flag.CONVDEADLK) && !conv)
    throw new TsmdError('EINVAL', `DLM ${ls}/${resource}: QUECVT and CONVDEADLK apply only to a conversion`);
  if (flags & Flag.QUECVT && !QUECVT_OK[granted]![mode])
    throw new TsmdError('EINVAL', `DLM ${ls}/${resource}: illegal conversion ${modeName(granted)}->${modeName(mode)} with QUECVT: QUECVT is only for a conversion up`);
  if (flags & (Flag.VALBLK | Flag.IVVALBLK) && lvbLength === 0)
    throw new TsmdError('EINVAL', `DLM ${ls}/${resource}: VALBLK/IVVALBLK in a lockspace without LVBs (lvbLength 0)`);
  if (flags & Flag.ALTPR && flags & Flag.ALTCW)
    throw new TsmdError('EINVAL', `DLM ${ls}/${resource}: ALTPR and ALTCW are exclusive`);
  return flags;
}

export function validateLvb(ls: string, resource: string, lvb: unknown, lvbLength: number): Uint8Array | undefined {
  if (lvb === undefined) return undefined;
  if (!(lvb instanceof Uint8Array))
    throw new TsmdError('EINVAL', `DLM ${ls}/${resource}: lvb must be a Uint8Array/Buffer`);
  if (lvbLength === 0)
    throw new TsmdError('EINVAL', `DLM ${ls}/${resource}: an LVB was given but the lockspace has no LVBs (lvbLength 0)`);
  if (lvb.length !== lvbLength)
    throw new TsmdError('EINVAL', `DLM ${ls}/${resource}: LVB of ${lvb.length} bytes, the lockspace's LVB length is ${lvbLength}`);
  return lvb;
}
