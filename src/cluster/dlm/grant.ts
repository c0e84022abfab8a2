/**
 * The grant engine: the pure state machine of one DLM resource (Linux fs/dlm/lock.c
 * `_can_be_granted`, `do_request`, `do_convert`, `grant_pending_locks`, `set_lvb_lock`,
 * `set_lvb_unlock`, the BAST rules, and the recovery purge). Both backends run exactly this code
 * on a resource's state — in memory directly, in etcd inside a compare-and-swap transaction on the
 * resource's key — so they cannot disagree about who holds what.
 *
 * The state is plain JSON (the etcd backend stores checkpoints of it). Functions mutate the state
 * passed in and return the outcome of the operation; everything another node must learn (a grant
 * of its queued request, a BAST) is recorded in its lock entry, so the owner learns it from the
 * state. `Op` is an operation as data and `applyOp` its deterministic effect: the etcd backend
 * appends ops to a log and every node replays the log through `applyOp` in the same order.
 */
import { assert, TsmdError } from '../../errors.js';
import { compatible, Flag, lvbOp, Mode, type ModeOrIV, modeName, SbFlag } from './types.js';

/** One lock (an lkb). Short keys: this is stored in etcd. */
export interface LockEntry {
  /** lock id, unique in the lockspace */
  id: string;
  /** owner node id */
  node: string;
  /** owner slot */
  slot: number;
  /** owner incarnation (etcd: create revision of its member key; memory: a join counter) */
  inc: string;
  /** granted mode (IV while a new request waits) */
  gr: ModeOrIV;
  /** requested mode while on the convert/wait queue, else IV */
  rq: ModeOrIV;
  /** flags of the request in progress or of the last one */
  fl: number;
  /** highest mode a BAST was sent for since the last grant (lkb_highbast) */
  hb: ModeOrIV;
  /** BAST counter and mode of the latest BAST: the owner delivers a BAST when bs grows */
  bs: number;
  bm: ModeOrIV;
  /** the owner registered a BAST callback */
  cb: boolean;
  /** owner's operation counter of the request in progress or last made */
  op: number;
  /** the owner's operation last answered by a grant (op === ga: the last request was granted) */
  ga: number;
  /** sb_flags of the last grant */
  sb: number;
  /** LVB read by a grant made while queued (base64; null = zeros), for the owner to copy */
  lv?: string | null;
}

export interface ResourceState {
  grant: LockEntry[];
  convert: LockEntry[];
  wait: LockEntry[];
  /** LVB (base64), null = never written (all zeros) */
  lvb: string | null;
  lvbseq: number;
  /** VALNOTVALID */
  vnv: boolean;
  /**
   * etcd backend only: the sequence number of the last operation applied per owner incarnation,
   * so that an operation appended twice (a retry after an ambiguous failure) is applied once.
   */
  ap?: Record<string, number>;
}

export function newResource(): ResourceState {
  return { grant: [], convert: [], wait: [], lvb: null, lvbseq: 0, vnv: false };
}

export function isEmpty(r: ResourceState): boolean {
  return r.grant.length === 0 && r.convert.length === 0 && r.wait.length === 0;
}

export type Outcome =
  | { kind: 'granted'; mode: Mode; sb: number; /** LVB read (base64, null = zeros), undefined = not read */ lvb?: string | null }
  | { kind: 'queued' }
  | { kind: 'error'; code: 'EAGAIN' | 'EDEADLK'; message: string };

type Where = 'grant' | 'convert' | 'wait';

export function findLock(r: ResourceState, id: string): { e: LockEntry; where: Where } | undefined {
  for (const where of ['grant', 'convert', 'wait'] as const) {
    const e = r[where].find((x) => x.id === id);
    if (e) return { e, where };
  }
  return undefined;
}

function remove(list: LockEntry[], e: LockEntry): void {
  const i = list.indexOf(e);
  assert(i >= 0, 'lock entry is on the queue it is removed from');
  list.splice(i, 1);
}

/** Grant queue is kept ordered by granted mode, highest first (lkb_add_ordered). */
function addGranted(r: ResourceState, e: LockEntry): void {
  let i = 0;
  while (i < r.grant.length && r.grant[i]!.gr >= e.gr) i++;
  r.grant.splice(i, 0, e);
}

function addQueued(list: LockEntry[], e: LockEntry): void {
  if (e.fl & Flag.HEADQUE) list.unshift(e);
  else list.push(e);
}

function queueConflict(list: readonly LockEntry[], e: LockEntry): boolean {
  for (const x of list) {
    if (x === e) continue;
    if (!compatible(x.gr, e.rq)) return true;
  }
  return false;
}

/** `_can_be_granted` (rules 1–6 of spec/dlm.md). `now`: first attempt; `recover`: after recovery. */
function canBeGrantedCore(r: ResourceState, e: LockEntry, now: boolean, recover: boolean): boolean {
  const conv = e.gr !== -1;
  if (e.fl & Flag.EXPEDITE) return true;
  if (queueConflict(r.grant, e)) return false;
  if (queueConflict(r.convert, e)) return false;
  if (conv && recover) return true;
  if (now && conv && !(e.fl & Flag.QUECVT)) return true;
  if (now && conv && e.fl & Flag.QUECVT) return r.convert.length === 0;
  if (e.fl & Flag.NOORDER) return true;
  if (!now && conv && r.convert[0] === e) return true;
  if (now && !conv && r.convert.length === 0 && r.wait.length === 0) return true;
  if (!now && !conv && r.convert.length === 0 && r.wait[0] === e) return true;
  return false;
}

/** `conversion_deadlock_detect`: e (converting) and a lock on the convert queue wait for each other. */
function conversionDeadlock(r: ResourceState, e: LockEntry): boolean {
  let ahead = false;
  for (const x of r.convert) {
    if (x === e) {
      ahead = true;
      continue;
    }
    if (!ahead) {
      if (!compatible(e.gr, x.rq)) return true;
    } else if (!compatible(e.gr, x.rq) && !compatible(x.gr, e.rq)) {
      return true;
    }
  }
  return false;
}

/** `can_be_granted`: core rules, then conversion deadlock handling and ALTPR/ALTCW. */
function canBeGranted(r: ResourceState, e: LockEntry, now: boolean, recover: boolean): { ok: boolean; deadlock: boolean } {
  if (canBeGrantedCore(r, e, now, recover)) return { ok: true, deadlock: false };
  const conv = e.gr !== -1;
  if (conv && !(e.fl & Flag.NOQUEUE) && conversionDeadlock(r, e)) {
    if (e.fl & Flag.CONVDEADLK) {
      e.gr = Mode.NL;
      e.sb |= SbFlag.DEMOTED;
      return { ok: false, deadlock: false };
    }
    return { ok: false, deadlock: !(e.fl & Flag.NODLCKWT) || !now };
  }
  const rq = e.rq;
  let alt: ModeOrIV = -1;
  if (rq !== Mode.PR && e.fl & Flag.ALTPR) alt = Mode.PR;
  else if (rq !== Mode.CW && e.fl & Flag.ALTCW) alt = Mode.CW;
  if (alt !== -1) {
    e.rq = alt;
    if (canBeGrantedCore(r, e, now, false)) {
      e.sb |= SbFlag.ALTMODE;
      return { ok: true, deadlock: false };
    }
    e.rq = rq;
  }
  return { ok: false, deadlock: false };
}

/**
 * `grant_lock` + `set_lvb_lock`: e becomes granted in e.rq. `lvbIn` is the caller's LVB
 * (used only when the transition writes it). Returns the LVB read (undefined if none).
 */
function grantLock(r: ResourceState, e: LockEntry, lvbIn: string | null | undefined): string | null | undefined {
  assert(e.rq !== -1, 'a granted lock has a requested mode');
  const from = e.gr;
  const to = e.rq as Mode;
  let read: string | null | undefined;
  e.sb &= SbFlag.DEMOTED | SbFlag.ALTMODE;
  const op = lvbOp(from, to);
  const valblk = (e.fl & Flag.VALBLK) !== 0;
  let flagVnv = true;
  if (op === 1) {
    if (valblk) read = r.lvb;
    else flagVnv = false;
  } else if (op === 0) {
    if (e.fl & Flag.IVVALBLK) {
      r.vnv = true;
      flagVnv = false;
    } else if (valblk) {
      assert(lvbIn !== undefined, 'an LVB write has the caller\'s LVB');
      r.lvb = lvbIn;
      r.lvbseq++;
      r.vnv = false;
    } else {
      flagVnv = false;
    }
  }
  if (flagVnv && r.vnv) e.sb |= SbFlag.VALNOTVALID;
  e.gr = to;
  e.rq = -1;
  e.hb = Mode.NL;
  e.ga = e.op;
  e.lv = read;
  addGranted(r, e);
  return read;
}

function modesRequireBast(gr: LockEntry, rq: ModeOrIV): boolean {
  if ((gr.gr === Mode.PR && rq === Mode.CW) || (gr.gr === Mode.CW && rq === Mode.PR)) return gr.hb < Mode.EX;
  return gr.hb < rq && !compatible(gr.gr, rq);
}

function queueBast(e: LockEntry, mode: ModeOrIV): void {
  e.bs++;
  e.bm = mode;
}

/** `send_bast_queue`: BAST every holder in `list` that blocks a request for `rq` (skipping `self`). */
function sendBastQueue(list: readonly LockEntry[], rq: ModeOrIV, self: LockEntry | undefined): void {
  for (const g of list) {
    if (g === self) continue;
    if (g.cb && modesRequireBast(g, rq)) {
      queueBast(g, rq);
      g.hb = rq;
    }
  }
}

function lockRequiresBast(g: LockEntry, high: ModeOrIV, cw: boolean): boolean {
  if ((g.gr === Mode.PR && cw) || (g.gr === Mode.CW && high === Mode.PR)) return g.hb < Mode.EX;
  return g.hb < high && !compatible(g.gr, high);
}

/**
 * `grant_pending_locks`: grant what the convert queue then the wait queue allow (FIFO, convert
 * queue first), then BAST the holders that block the highest mode still waiting.
 * Returns the entries granted by this pass.
 */
export function grantPending(r: ResourceState, recover = false): LockEntry[] {
  const granted: LockEntry[] = [];
  let high: ModeOrIV = -1;
  let cw = false;
  // convert queue (grant_pending_convert), restarting after every grant; bounded by its length
  let quit = false;
  for (let pass = 0; ; pass++) {
    assert(pass <= 2 * (r.convert.length + granted.length) + 2, 'convert pass terminates');
    let grantRestart = false;
    let demoteRestart = false;
    let hi: ModeOrIV = -1;
    for (const e of [...r.convert]) {
      const wasDemoted = (e.sb & SbFlag.DEMOTED) !== 0;
      const res = canBeGranted(r, e, false, recover);
      if (res.ok) {
        remove(r.convert, e);
        grantLock(r, e, undefined);
        granted.push(e);
        grantRestart = true;
        continue;
      }
      if (!wasDemoted && e.sb & SbFlag.DEMOTED) {
        demoteRestart = true;
        continue;
      }
      if (res.deadlock) {
        if (e.fl & Flag.NODLCKWT && e.hb < e.rq) {
          queueBast(e, e.rq);
          e.hb = e.rq;
        }
        continue;
      }
      if (e.rq > hi) hi = e.rq;
      if (e.rq === Mode.CW) cw = true;
    }
    if (grantRestart) continue;
    if (demoteRestart && !quit) {
      quit = true;
      continue;
    }
    if (hi > high) high = hi;
    break;
  }
  // wait queue (grant_pending_wait)
  for (const e of [...r.wait]) {
    if (canBeGranted(r, e, false, false).ok) {
      remove(r.wait, e);
      grantLock(r, e, undefined);
      granted.push(e);
    } else {
      if (e.rq > high) high = e.rq;
      if (e.rq === Mode.CW) cw = true;
    }
  }
  if (high !== -1) {
    for (const g of r.grant) {
      if (g.cb && lockRequiresBast(g, high, cw)) {
        queueBast(g, cw && high === Mode.PR && g.gr === Mode.PR ? Mode.CW : high);
        g.hb = high;
      }
    }
  }
  return granted;
}

/**
 * A new request (`do_request` + effects). `e` has gr = IV, rq = the mode, fl, op, cb set.
 * The caller's lock id must be new on this resource.
 */
export function request(r: ResourceState, e: LockEntry): Outcome {
  assert(e.gr === -1 && e.rq !== -1, 'a new request has no granted mode and a requested mode');
  assert(findLock(r, e.id) === undefined, 'lock ids are unique on a resource');
  const res = canBeGranted(r, e, true, false);
  if (res.ok) {
    const lvb = grantLock(r, e, undefined);
    return { kind: 'granted', mode: e.gr as Mode, sb: e.sb, lvb };
  }
  if (!(e.fl & Flag.NOQUEUE)) {
    addQueued(r.wait, e);
    sendBastQueue(r.grant, e.rq, e);
    return { kind: 'queued' };
  }
  if (e.fl & Flag.NOQUEUEBAST) {
    sendBastQueue(r.grant, e.rq, e);
    sendBastQueue(r.convert, e.rq, e);
  }
  return { kind: 'error', code: 'EAGAIN', message: `${modeName(e.rq)} is not grantable at once (NOQUEUE)` };
}

/** Precondition failures of convert/unlock/cancel: ENOENT / EBUSY with a clear message. */
function mustFind(r: ResourceState, id: string, what: string): { e: LockEntry; where: Where } {
  const f = findLock(r, id);
  if (!f) throw new TsmdError('ENOENT', `${what}: lock ${id} is not held (already unlocked, cancelled or purged)`);
  return f;
}

/**
 * A conversion (`do_convert` + effects). `lvbIn` is the caller's LVB (written by a conversion
 * down from PW/EX with VALBLK).
 */
export function convert(r: ResourceState, id: string, mode: Mode, fl: number, op: number, cb: boolean, lvbIn: string | null | undefined): Outcome {
  const { e, where } = mustFind(r, id, 'convert');
  if (where !== 'grant')
    throw new TsmdError('EBUSY', `convert: lock ${id} already has a request in progress (${modeName(e.rq)}); wait for it or cancel it`);
  e.rq = mode;
  e.fl = fl;
  e.op = op;
  e.cb = cb;
  e.sb = 0;
  delete e.lv;
  let res = canBeGranted(r, e, true, false);
  if (res.ok) {
    remove(r.grant, e);
    const lvb = grantLock(r, e, lvbIn);
    grantPending(r);
    return { kind: 'granted', mode: e.gr as Mode, sb: e.sb, lvb };
  }
  if (res.deadlock && !(fl & Flag.NODLCKWT)) {
    e.rq = -1; // revert_lock: it stays granted in its mode
    return { kind: 'error', code: 'EDEADLK', message: `conversion ${modeName(e.gr)}->${modeName(mode)} deadlocks with another conversion` };
  }
  if (e.sb & SbFlag.DEMOTED) {
    // CONVDEADLK demoted our granted mode to NL: others may now go, then retry once
    remove(r.grant, e);
    addGranted(r, e);
    grantPending(r);
    res = { ok: canBeGrantedCore(r, e, true, false), deadlock: false };
    if (res.ok) {
      remove(r.grant, e);
      const lvb = grantLock(r, e, lvbIn);
      grantPending(r);
      return { kind: 'granted', mode: e.gr as Mode, sb: e.sb, lvb };
    }
  }
  if (!(fl & Flag.NOQUEUE)) {
    remove(r.grant, e);
    addQueued(r.convert, e);
    sendBastQueue(r.grant, e.rq, e);
    return { kind: 'queued' };
  }
  const rq = e.rq;
  e.rq = -1;
  if (fl & Flag.NOQUEUEBAST) {
    sendBastQueue(r.grant, rq, e);
    sendBastQueue(r.convert, rq, e);
  }
  return { kind: 'error', code: 'EAGAIN', message: `conversion ${modeName(e.gr)}->${modeName(rq)} is not grantable at once (NOQUEUE)` };
}

/**
 * Unlock (`do_unlock` + `set_lvb_unlock` + effects). Without FORCEUNLOCK a lock with a request in
 * progress is refused (EBUSY). Returns the entry removed, and whether it had a pending request.
 */
export function unlock(r: ResourceState, id: string, fl: number, lvbIn: string | null | undefined): { pending: boolean; gr: ModeOrIV } {
  const { e, where } = mustFind(r, id, 'unlock');
  if (where !== 'grant' && !(fl & Flag.FORCEUNLOCK))
    throw new TsmdError('EBUSY', `unlock: lock ${id} has a ${modeName(e.rq)} request in progress; cancel it first or use FORCEUNLOCK`);
  remove(r[where], e);
  if (e.gr >= Mode.PW) {
    // set_lvb_unlock: exflags accumulate, so VALBLK of the last request still applies
    if (fl & Flag.IVVALBLK) {
      r.vnv = true;
    } else if ((fl | e.fl) & Flag.VALBLK && lvbIn !== undefined) {
      r.lvb = lvbIn;
      r.lvbseq++;
      r.vnv = false;
    }
  }
  grantPending(r);
  return { pending: where !== 'grant', gr: e.gr };
}

/**
 * Cancel (`do_cancel`): a waiting request is removed, a queued conversion goes back to its granted
 * mode. Returns 'none' when the lock had nothing pending (already granted).
 */
export function cancel(r: ResourceState, id: string, op: number): 'removed' | 'reverted' | 'none' {
  const { e, where } = mustFind(r, id, 'cancel');
  if (where === 'grant' || e.op !== op) return 'none';
  remove(r[where], e);
  if (where === 'wait') {
    grantPending(r);
    return 'removed';
  }
  e.rq = -1;
  addGranted(r, e);
  grantPending(r);
  return 'reverted';
}

/**
 * Recovery purge (`dlm_recover_purge` + `recover_lvb` case 1 + `grant_pending` with
 * RSB_RECOVER_GRANT): drop every lock whose owner `dead` says is gone; if one of them held PW or
 * EX, flag the LVB not valid; then grant, conversions without regard to order.
 * Returns the number of locks removed (0: the state is unchanged).
 */
export function purge(r: ResourceState, dead: (e: LockEntry) => boolean): number {
  let n = 0;
  for (const where of ['grant', 'convert', 'wait'] as const) {
    const keep: LockEntry[] = [];
    for (const e of r[where]) {
      if (dead(e)) {
        n++;
        if (e.gr === Mode.PW || e.gr === Mode.EX) r.vnv = true;
      } else {
        keep.push(e);
      }
    }
    r[where] = keep;
  }
  if (n > 0) grantPending(r, true);
  return n;
}

/** Invariant check of a resource state (tests and debug builds call it after every change). */
export function checkInvariants(r: ResourceState): void {
  const ids = new Set<string>();
  for (const where of ['grant', 'convert', 'wait'] as const) {
    for (const e of r[where]) {
      assert(!ids.has(e.id), `lock ${e.id} is on one queue only`);
      ids.add(e.id);
      if (where === 'grant') assert(e.gr !== -1 && e.rq === -1, `granted lock ${e.id} has a mode and no request`);
      if (where === 'convert') assert(e.gr !== -1 && e.rq !== -1, `converting lock ${e.id} has both modes`);
      if (where === 'wait') assert(e.gr === -1 && e.rq !== -1, `waiting lock ${e.id} has a request only`);
    }
  }
  const held = [...r.grant, ...r.convert];
  for (let i = 0; i < held.length; i++)
    for (let j = i + 1; j < held.length; j++)
      assert(compatible(held[i]!.gr, held[j]!.gr), `granted modes ${modeName(held[i]!.gr)} (${held[i]!.id}) and ${modeName(held[j]!.gr)} (${held[j]!.id}) are compatible`);
}

/** One operation on a resource, as data (stored in the etcd backend's operation log). */
export type Op =
  /** a new request (the entry has gr = IV, rq = the mode, fl, op, cb set) */
  | { k: 'rq'; e: LockEntry }
  | { k: 'cv'; id: string; mode: Mode; fl: number; op: number; cb: boolean; lvb?: string | null }
  | { k: 'ul'; id: string; fl: number; lvb?: string | null }
  /** cancel request `op` of lock `id` (isNew: it was a new request, not a conversion) */
  | { k: 'cx'; id: string; op: number; isNew: boolean }
  /** recovery purge of every lock of these (dead) owner incarnations */
  | { k: 'pg'; incs: string[] };

export type CancelResult = { kind: 'cancel'; res: 'removed' | 'reverted' | 'none' | 'gone'; /** the lock, when its grant won the race */ e?: LockEntry };

export type OpResult =
  | Outcome
  | CancelResult
  | { kind: 'done' }
  /** a precondition failed (lock not found, request in progress); the state is unchanged */
  | { kind: 'fail'; code: 'ENOENT' | 'EBUSY'; message: string };

/**
 * Apply `op` to `r` (deterministic: the same op on the same state gives the same state and
 * result everywhere). Precondition failures are results, not exceptions, so a replayed log never
 * stops on them; an internal invariant failure still throws.
 */
export function applyOp(r: ResourceState, op: Op): OpResult {
  try {
    switch (op.k) {
      case 'rq':
        return request(r, op.e);
      case 'cv':
        return convert(r, op.id, op.mode, op.fl, op.op, op.cb, op.lvb);
      case 'ul':
        unlock(r, op.id, op.fl, op.lvb);
        return { kind: 'done' };
      case 'cx': {
        const f = findLock(r, op.id);
        if (!f) return { kind: 'cancel', res: op.isNew ? 'removed' : 'gone' };
        if (f.e.op !== op.op) return { kind: 'cancel', res: 'none' }; // the request never reached the state
        if (f.where === 'grant') return { kind: 'cancel', res: 'none', e: { ...f.e } };
        return { kind: 'cancel', res: cancel(r, op.id, op.op) };
      }
      case 'pg': {
        const dead = new Set(op.incs);
        purge(r, (e) => dead.has(e.inc));
        return { kind: 'done' };
      }
    }
  } catch (e) {
    if (e instanceof TsmdError && (e.code === 'ENOENT' || e.code === 'EBUSY')) return { kind: 'fail', code: e.code, message: e.message };
    throw e;
  }
}
