/**
 * Recovery planning: md_check_recovery's choice of the next sync job, over a narrow view of
 * the array. Recovery comes first (spares activated into empty slots, members being rebuilt),
 * then replacements (mdadm --replace), then the resync owed after an unclean stop, then a
 * check or repair that was asked for. Activating a spare is a metadata change: it is decided
 * inside the metadata transaction, as md-cluster needs (the token before the decision).
 */
import { MAX_SECTOR } from '../format/superblock.js';
import type { Personality } from '../raid/personality.js';
import type { AssemblyReport } from './assemble.js';
import type { WriteIntentBitmap } from './bitmap.js';
import type { Member, MemberSet } from './members.js';
import { UNCHANGED, type UpdateOptions } from './metadata.js';
import type { SyncPlan } from './sync.js';

export interface RecoveryHost {
  readonly memberSet: MemberSet;
  readonly personality: Personality;
  readonly bitmap: WriteIntentBitmap | null;
  /** md's recovery_cp */
  readonly resyncCp: bigint;
  readonly report: AssemblyReport;
  /** may any sync run now (writable, running, redundant, no reshape)? */
  canPlan(): boolean;
  slotMember(slot: number): Member | null;
  update(mutate: () => unknown, opts?: UpdateOptions): Promise<void>;
  log(msg: string): void;
}

/** Empty slots get spares (md's remove_and_add_spares); true if any was activated. */
function activateSpares(h: RecoveryHost): boolean {
  let activated = false;
  for (let slot = 0; slot < h.memberSet.raidDisks; slot++) {
    if (h.slotMember(slot)) continue;
    const spare = h.memberSet.freeSpare();
    if (!spare) break;
    spare.slot = slot;
    spare.recoveryOffset = 0;
    spare.bitmapGuided = false;
    h.report.missingSlots = h.report.missingSlots.filter((s) => s !== slot);
    h.log(`md: recovery of slot ${slot} onto ${spare.dev.name} started`);
    activated = true;
  }
  return activated;
}

/** mdadm --replace: a spare (the --with one first) becomes the replacement of each member that wants one. */
function startReplacements(h: RecoveryHost): boolean {
  let started = false;
  for (let slot = 0; slot < h.memberSet.raidDisks; slot++) {
    const old = h.slotMember(slot);
    if (!old?.wantReplacement || old.recoveryOffset !== null || h.memberSet.replacementOf(slot)) continue;
    const spare = h.memberSet.freeSpare(slot);
    if (!spare) continue;
    spare.slot = slot;
    spare.replacement = true;
    spare.recoveryOffset = 0;
    spare.bitmapGuided = false;
    h.memberSet.updateReplacing();
    started = true;
    h.log(`md: replacement of ${old.dev.name} (slot ${slot}) by ${spare.dev.name} started`);
  }
  return started;
}

/** The next sync job, or null when there is none (md_check_recovery + remove_and_add_spares). */
export async function planRecovery(h: RecoveryHost, requested: 'check' | 'repair' | null): Promise<SyncPlan | null> {
  if (!h.canPlan()) return null;
  const ms = h.memberSet;
  const needsSpare = Array.from({ length: ms.raidDisks }, (_, s) => s).some((s) => !h.slotMember(s)) && ms.freeSpare() !== null;
  if (needsSpare) await h.update(() => (activateSpares(h) ? undefined : UNCHANGED));
  const rebuild = ms.list.filter((m) => m.slot !== null && !m.faulty && m.recoveryOffset !== null && !m.replacement);
  if (rebuild.length > 0) {
    if (!h.personality.canRun(ms.availability())) return null;
    return {
      kind: 'recovery',
      slots: rebuild.map((m) => m.slot!),
      start: Math.min(...rebuild.map((m) => m.recoveryOffset!)),
      bitmapGuided: h.bitmap !== null && rebuild.every((m) => m.bitmapGuided === true),
    };
  }
  const wants = ms.list.some((m) => m.wantReplacement && !m.faulty && m.slot !== null && !ms.replacementOf(m.slot));
  if (wants && ms.freeSpare() !== null) await h.update(() => (startReplacements(h) ? undefined : UNCHANGED));
  const repl = ms.list.filter((m) => m.replacement && !m.faulty);
  if (repl.length > 0) return { kind: 'recovery', slots: repl.map((m) => m.slot!), start: Math.min(...repl.map((m) => m.recoveryOffset!)), bitmapGuided: false, replace: true };
  if (h.resyncCp !== MAX_SECTOR && !ms.degraded) return { kind: 'resync', start: Number(h.resyncCp) };
  if (requested && !ms.degraded) return { kind: requested, start: 0 };
  return null;
}
