/**
 * mdadm --monitor: poll the node daemon's arrays and turn changes into mdadm's events, in
 * mdadm's order and with its names (Monitor.c): Fail, FailSpare, DegradedArray, SpareActive,
 * RebuildStarted, RebuildNN (every --increment percent, default 20), RebuildFinished,
 * SparesMissing, DeviceDisappeared, NewArray, TestMessage. Each event goes to the --program
 * (called as `program EVENT MD-DEVICE [COMPONENT]`), to stdout, and with --syslog to the
 * system log through logger(1) when it is there (stderr otherwise).
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ArrayState } from '../daemon/control.js';

export interface MonitorEvent {
  event: string;
  dev: string;
  component?: string;
}

export interface MonitorOptions {
  /** RebuildNN step in percent (mdadm --increment, default 20) */
  increment: number;
  /** expected spares per array (mdadm.conf ARRAY spares=N), by md device path */
  spares?: Map<string, number>;
  /** emit TestMessage for every array at start (--test) */
  test?: boolean;
}

interface Seen {
  state: ArrayState;
  percent: number | null;
}

/**
 * The percentage mdadm reads from /proc/mdstat: a resync, recovery or check, or a running
 * reshape (Monitor.c makes no difference: a reshape is reported as RebuildStarted, RebuildNN
 * and RebuildFinished too). null: none runs.
 */
function syncPercent(a: ArrayState): number | null {
  if (a.sync) return Math.floor((a.sync.doneSectors * 100) / Math.max(1, a.sync.totalSectors));
  const r = a.reshape;
  if (r?.running && r.doneSectors !== null && r.totalSectors !== null) return Math.floor((r.doneSectors * 100) / Math.max(1, r.totalSectors));
  return null;
}

export class MonitorState {
  private seen = new Map<string, Seen>();
  private first = true;

  constructor(private readonly opts: MonitorOptions) {}

  /** The events between the last poll and this one. */
  update(arrays: ArrayState[]): MonitorEvent[] {
    const out: MonitorEvent[] = [];
    const now = new Map(arrays.map((a) => [a.devPath, a]));
    for (const a of arrays) {
      const prev = this.seen.get(a.devPath);
      const percent = syncPercent(a);
      const dev = a.devPath;
      if (!prev) {
        if (!this.first) out.push({ event: 'NewArray', dev });
        if (this.opts.test) out.push({ event: 'TestMessage', dev });
        if (a.missing > 0) out.push({ event: 'DegradedArray', dev });
        const want = this.opts.spares?.get(dev);
        const spares = a.members.filter((m) => m.slot === null && !m.faulty).length;
        if (want !== undefined && spares < want) out.push({ event: 'SparesMissing', dev });
        if (percent !== null) out.push({ event: 'RebuildStarted', dev });
      } else {
        // mdadm's order (Monitor.c check_array): sync events first, then each device
        const p = prev.state;
        if (prev.percent === null && percent !== null) out.push({ event: 'RebuildStarted', dev });
        if (prev.percent !== null && percent !== null) {
          const step = Math.max(1, this.opts.increment);
          const before = Math.floor(prev.percent / step);
          const after = Math.floor(percent / step);
          // Monitor.c: the percentage read, not the step boundary crossed ("Rebuild23")
          if (after > before && percent < 100) out.push({ event: `Rebuild${String(percent).padStart(2, '0')}`, dev });
        }
        if (prev.percent !== null && percent === null) {
          const checking = p.sync && (p.sync.kind === 'check' || p.sync.kind === 'repair');
          out.push({ event: 'RebuildFinished', dev, component: checking ? `mismatches found: ${a.mismatchCnt}` : undefined });
        }
        for (const m of a.members) {
          const was = p.members.find((x) => x.path === m.path);
          if (!was) continue;
          // an active member that failed is Fail; a spare (or one being rebuilt) is FailSpare
          if (m.faulty && !was.faulty) {
            out.push({ event: was.slot !== null && !was.rebuilding ? 'Fail' : 'FailSpare', dev, component: m.path });
          } else if (m.slot !== null && !m.faulty && !m.rebuilding && (was.slot === null || was.rebuilding)) {
            out.push({ event: 'SpareActive', dev, component: m.path });
          }
        }
        for (const was of p.members) {
          if (!was.faulty && !a.members.some((m) => m.path === was.path) && was.slot !== null && !was.rebuilding) {
            // gone without being marked faulty first
            out.push({ event: 'Fail', dev, component: was.path });
          }
        }
      }
      this.seen.set(dev, { state: a, percent });
    }
    for (const [dev] of this.seen) {
      if (!now.has(dev)) {
        out.push({ event: 'DeviceDisappeared', dev });
        this.seen.delete(dev);
      }
    }
    this.first = false;
    return out;
  }
}

/** The line mdadm logs for an event. */
export function eventLine(e: MonitorEvent): string {
  return `${e.event} event detected on md device ${e.dev}${e.component ? `, component device ${e.component}` : ''}`;
}

let haveLogger: boolean | null = null;

/** Deliver one event: program (waited for, like mdadm), stdout, syslog. */
export interface DeliverOptions {
  program?: string;
  syslog?: boolean;
  out: (s: string) => void;
  err: (s: string) => void;
}

export async function deliver(e: MonitorEvent, opts: DeliverOptions): Promise<void> {
  opts.out(`tsmd: ${eventLine(e)}\n`);
  if (opts.syslog) {
    haveLogger ??= spawnSync('sh', ['-c', 'command -v logger'], { stdio: 'ignore' }).status === 0;
    const prio = /^(Fail|FailSpare|DegradedArray|SparesMissing|DeviceDisappeared)$/.test(e.event) ? 'daemon.crit' : e.event === 'TestMessage' ? 'daemon.warning' : 'daemon.info';
    if (haveLogger) spawnSync('logger', ['-t', 'tsmd', '-p', prio, eventLine(e)], { stdio: 'ignore' });
    else opts.err(`tsmd[${process.pid}]: ${eventLine(e)}\n`);
  }
  if (opts.program) {
    const args = [e.event, e.dev, ...(e.component ? [e.component] : [])];
    await new Promise<void>((resolve) => {
      const child = spawn(opts.program!, args, { stdio: 'inherit' });
      child.on('error', (err) => {
        opts.err(`tsmd: cannot run ${opts.program}: ${err.message}\n`);
        resolve();
      });
      child.on('exit', () => resolve());
    });
  }
}
