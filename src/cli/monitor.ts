/**
 * mdadm --monitor: poll the node daemon's arrays and turn changes into mdadm's events, in
 * mdadm's order and with its names (Monitor.c): Fail, FailSpare, DegradedArray, SpareActive,
 * RebuildStarted, RebuildNN (every --increment percent, default 20), RebuildFinished,
 * SparesMissing, DeviceDisappeared, NewArray, TestMessage. Each event goes to the --program
 * (called as `program EVENT MD-DEVICE [COMPONENT]`), to --mail through sendmail (Fail*, Test*,
 * Spares*, Degrade*), and with --syslog to the system log through logger(1) when it is there
 * (stderr otherwise); with none of them, to stdout as mdadm prints it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
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
        if (this.opts.test && this.first) out.push({ event: 'TestMessage', dev });
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

/** Deliver one event: program (waited for, like mdadm), mail, syslog; stdout when none of them. */
export interface DeliverOptions {
  program?: string;
  syslog?: boolean;
  /** --mail: the address (Fail*, Test*, Spares*, Degrade* events are mailed, as mdadm's) */
  mail?: string;
  /** mdadm.conf's MAILFROM (default "mdadm monitoring <root>") */
  mailFrom?: string;
  /** the node's mdstat file, quoted in the mail as mdadm quotes /proc/mdstat */
  mdstatPath?: string;
  out: (s: string) => void;
  err: (s: string) => void;
}

/**
 * The mail transfer agent, as mdadm's compiled-in SENDMAIL ("/usr/sbin/sendmail -t"), run
 * through the shell; TSMD_SENDMAIL replaces it (tests, or a system whose sendmail lives
 * elsewhere).
 */
function sendmailCommand(): string {
  return process.env.TSMD_SENDMAIL ?? '/usr/sbin/sendmail -t';
}

/** Monitor.c alert()'s mail: headers, its text, then the mdstat file as it is now. */
export function mailText(e: MonitorEvent, to: string, host: string, mdstat: string | null, from = 'mdadm monitoring <root>'): string {
  let t = `From: ${from}\nTo: ${to}\nSubject: ${e.event} event on ${e.dev}:${host}\n\n`;
  t += `This is an automatically generated mail message from mdadm\nrunning on ${host}\n\n`;
  t += `A ${e.event} event had been detected on md device ${e.dev}.\n\n`;
  if (e.component) t += `It could be related to component device ${e.component}.\n\n`;
  t += 'Faithfully yours, etc.\n';
  if (mdstat !== null) t += `\nP.S. The /proc/mdstat file currently contains the following:\n\n${mdstat}`;
  return t;
}

async function sendMail(e: MonitorEvent, opts: DeliverOptions): Promise<void> {
  if (!/^(Fail|Test|Spares|Degrade)/.test(e.event)) return;
  let mdstat: string | null;
  try {
    mdstat = opts.mdstatPath ? readFileSync(opts.mdstatPath, 'utf8') : null;
  } catch {
    mdstat = null;
  }
  const text = mailText(e, opts.mail!, hostname(), mdstat, opts.mailFrom);
  await new Promise<void>((resolve) => {
    const child = spawn('sh', ['-c', sendmailCommand()], { stdio: ['pipe', 'ignore', 'inherit'] });
    child.on('error', (err) => {
      opts.err(`tsmd: cannot run ${sendmailCommand()}: ${err.message}\n`);
      resolve();
    });
    child.on('exit', (code) => {
      if (code !== 0) opts.err(`tsmd: ${sendmailCommand()} exited with ${code}: the ${e.event} mail for ${e.dev} was not sent\n`);
      resolve();
    });
    child.stdin.on('error', () => {});
    child.stdin.end(text);
  });
}

/** Monitor.c alert()'s line on stdout, for an event with nowhere else to go. */
export function stdoutLine(e: MonitorEvent, now: Date): string {
  // ctime(3) from its 5th character, 15 of them: "Dec  4 19:05:01"
  const mon = now.toLocaleString('en-US', { month: 'short' });
  const pad = (n: number): string => String(n).padStart(2, '0');
  const when = `${mon} ${String(now.getDate()).padStart(2, ' ')} ${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}`;
  return `${when}: ${e.event} on ${e.dev} ${e.component ?? 'unknown device'}\n`;
}

export async function deliver(e: MonitorEvent, opts: DeliverOptions): Promise<void> {
  if (!opts.program && !opts.mail && !opts.syslog) opts.out(stdoutLine(e, new Date()));
  if (opts.mail) await sendMail(e, opts);
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
