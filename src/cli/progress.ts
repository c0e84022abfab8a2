/**
 * The line `tsmd --wait` draws on a terminal while a resync/recovery/check runs. Its numbers
 * are the daemon's (the sync's done/total sectors and md's speed, the same source as
 * --detail and the mdstat file), not cli-progress's own estimate: that one starts at "0s" and
 * turns into "NFs" (Infinity cut to width) when two polls see the same value.
 */

export interface WaitProgress {
  kind: string;
  doneSectors: number;
  totalSectors: number;
  /** md's sync speed, KiB/s (0 when not yet measured) */
  speedKiBs: number;
}

/** Per-mille, floored, as /proc/mdstat prints it ("12.3"): never 100.0 before the end. */
export function percentText(doneSectors: number, totalSectors: number): string {
  if (!(totalSectors > 0)) return '0.0';
  const permille = Math.floor((Math.min(Math.max(doneSectors, 0), totalSectors) * 1000) / totalSectors);
  return (permille / 10).toFixed(1);
}

/** "1h02m", "3m05s", "12s". */
export function durationText(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}

/**
 * Time left as md computes finish= in /proc/mdstat (what is left over the current speed), or
 * null when it cannot be known: no speed measured yet, or nothing finite to show.
 */
export function etaSeconds(p: WaitProgress): number | null {
  const leftKiB = Math.max(0, p.totalSectors - p.doneSectors) / 2;
  if (!(p.speedKiBs > 0) || !Number.isFinite(p.speedKiBs)) return null;
  const eta = leftKiB / p.speedKiBs;
  return Number.isFinite(eta) ? eta : null;
}

/** The whole line: `/dev/md0 recovery [=====-----] 42.0% | 51200 KiB/s | ETA 12s` (ETA left out when unknown). */
export function waitLine(name: string, p: WaitProgress, barWidth = 30): string {
  const frac = p.totalSectors > 0 ? Math.min(1, Math.max(0, p.doneSectors / p.totalSectors)) : 0;
  const full = Math.floor(frac * barWidth);
  const bar = '\u2588'.repeat(full) + '\u2591'.repeat(barWidth - full);
  const eta = etaSeconds(p);
  const speed = Number.isFinite(p.speedKiBs) ? Math.max(0, Math.floor(p.speedKiBs)) : 0;
  return `${name} ${p.kind} [${bar}] ${percentText(p.doneSectors, p.totalSectors)}% | ${speed} KiB/s${eta === null ? '' : ` | ETA ${durationText(eta)}`}`;
}

/** The state to draw when the sync is over: 100 % when it completed, where it stopped otherwise. */
export function finalProgress(last: WaitProgress, completed: boolean): WaitProgress {
  return completed ? { ...last, doneSectors: last.totalSectors, speedKiBs: 0 } : { ...last, speedKiBs: 0 };
}
