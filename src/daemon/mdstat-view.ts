/** The running arrays as /proc/mdstat shows them (formatter: ./mdstat.ts). */
import { basename } from 'node:path';
import { Feature } from '../format/superblock.js';
import { bitmapCounterPages, formatMdstat, type MdstatArray } from './mdstat.js';
import type { RunningArray } from '../mdadm/registry.js';

export function mdstatArrays(running: RunningArray[]): MdstatArray[] {
  return running.map((r) => {
    const a = r.array;
    const sb = a.sb;
    const working = new Set(a.workingSlots);
    const bm = a.members.find((m) => !m.faulty && m.bitmaps.length > 0)?.bitmaps[0];
    const dataDisks = Math.max(1, a.raidDisks - (sb.newLevel === 6 ? 2 : sb.newLevel === 4 || sb.newLevel === 5 ? 1 : 0));
    const minor = a.members[0]?.loaded.minor ?? 2;
    const out: MdstatArray = {
      name: r.mdName,
      active: true,
      readOnly: a.isReadOnly ? 'read-only' : false,
      level: a.level,
      members: a.members.map((m) => ({
        name: basename(m.dev.name),
        descNr: m.devNumber,
        faulty: m.faulty,
        spare: !m.faulty && m.slot === null,
        writeMostly: (m.loaded.sb.devFlags & 1) !== 0,
        replacement: m.replacement === true && !m.faulty,
      })),
      blocks: Math.floor(a.sizeBytes / 1024),
      superVersion: `1.${minor}`,
      chunkKiB: sb.chunkSize / 2,
      layout: sb.layout,
      raidDisks: a.raidDisks,
      slotsUp: Array.from({ length: a.raidDisks }, (_, s) => working.has(s)),
      workingDisks: working.size,
      bitmap:
        bm && (sb.featureMap & Feature.BITMAP_OFFSET) !== 0
          ? { pagesUsed: bitmapCounterPages(bm.nbits), pagesTotal: bitmapCounterPages(bm.nbits), chunkBytes: bm.sup.chunkSize }
          : null,
      sync: a.reshapeActive
        ? reshapeLine(a) ?? { action: 'reshape', doneSectors: Math.floor(Number(sb.reshapePosition) / dataDisks), totalSectors: Number(sb.size), windowSectors: 0, windowSeconds: 1 }
        : syncLine(a),
      // md-cluster: waiting for the cluster's resync lock is "resync=PENDING"; another node's
      // sync (no local one) is "resync=REMOTE" / "recover=REMOTE"
      resyncPending: !a.reshapeActive && (a.resyncPending || a.syncPendingCluster),
      remoteSync: a.sync.current ? null : (a.remoteSync ?? null),
    };
    return out;
  });
}

/** A running reshape as the engine counts it (per-member sectors of the new geometry, md's reshape line). */
function reshapeLine(a: RunningArray['array']): MdstatArray['sync'] {
  const p = a.reshape.progress();
  if (!p) return null;
  return { action: 'reshape', doneSectors: p.doneSectors, totalSectors: p.totalSectors, windowSectors: p.windowSectors, windowSeconds: p.windowSeconds };
}

function syncLine(a: RunningArray['array']): MdstatArray['sync'] {
  const cur = a.sync.current;
  if (!cur) return null;
  return {
    action: cur.kind,
    doneSectors: cur.doneSectors,
    totalSectors: cur.totalSectors,
    windowSectors: cur.windowSectors,
    windowSeconds: cur.windowSeconds,
  };
}

export function mdstatText(running: RunningArray[]): string {
  // oldest first: the formatter prints the most recently created array first, as the kernel does
  const byAge = [...running].sort((x, y) => x.startedAtMs - y.startedAtMs);
  return formatMdstat(mdstatArrays(byAge));
}
