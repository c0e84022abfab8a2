/**
 * The two /proc/mdstat readers tsmd's mdstat file must satisfy, restated in TypeScript from
 * reading their sources (not ported line by line):
 *
 * - mdadm's mdstat_read() (mdstat.c) over conf_line()/conf_word() (config.c): the file is cut
 *   into logical lines (a line starting with a blank continues the previous one) of
 *   white-space separated words, and each "mdN"/"md_X" line is scanned word by word.
 * - prometheus/procfs parseMDStat() (mdstat.go), which node_exporter's md collector uses:
 *   physical lines, a few regular expressions, and fixed line offsets after each md line.
 *
 * Both keep their quirks here on purpose: a test asserting what they extract from tsmd's output
 * asserts what the real tools would see.
 */

// ---------------------------------------------------------------- mdadm

/** mdadm's `percent` special values (RESYNC_NONE etc.), named instead of numbered. */
export type MdadmPercent = number | 'NONE' | 'DELAYED' | 'PENDING' | 'REMOTE';

export interface MdadmEnt {
  devnm: string;
  /** 1 "active", 0 "inactive", -1 neither word seen (e.g. "broken") */
  active: number;
  level: string | null;
  /** member names, in line order (mdadm itself keeps them in a list built by prepending) */
  members: string[];
  /** words taken as members (add_member_devname returned 1) */
  devcnt: number;
  metadataVersion: string | null;
  /** from "[n/m]": atoi after '[' */
  raidDisks: number;
  /** from "[UU_]": the letters */
  pattern: string | null;
  percent: MdadmPercent;
  /** 0 recovery, 1 resync, 2 reshape, 3 check */
  resync: number;
}

/** C's atoi: optional blanks and sign, then digits; 0 when none. */
function atoi(s: string): number {
  const m = /^[ \t\n\v\f\r]*([+-]?\d+)/.exec(s);
  return m ? Number.parseInt(m[1]!, 10) : 0;
}

/** conf_line() over a whole file: logical lines as word lists (quotes and '#' comments as conf_word treats them). */
export function mdadmConfLines(text: string): string[][] {
  let pos = 0;
  const EOF = '';
  const getc = (): string => (pos < text.length ? text[pos++]! : EOF);
  const ungetc = (): void => {
    pos--;
  };
  const word = (allowKey: boolean): string | null => {
    let w = '';
    let found = false;
    while (!found) {
      let c = getc();
      if (c === '#') while (c !== EOF && c !== '\n') c = getc();
      if (c === EOF) break;
      if (c === '\n') continue;
      if (c !== ' ' && c !== '\t' && !allowKey) {
        // a non-blank at the start of a physical line begins the next logical line
        ungetc();
        break;
      }
      let quote = '';
      while (c === ' ' || c === '\t') c = getc();
      if (c !== EOF && c !== '\n' && c !== '#') {
        while (c !== EOF && c !== '\n' && (quote !== '' || (c !== ' ' && c !== '\t'))) {
          found = true;
          if (quote !== '' && c === quote) quote = '';
          else if (quote === '' && (c === "'" || c === '"')) quote = c;
          else w += c;
          c = getc();
        }
      }
      if (c !== EOF) ungetc();
    }
    return found ? w : null;
  };
  const lines: string[][] = [];
  for (;;) {
    const first = word(true);
    if (first === null) break;
    const line = [first];
    for (let w = word(false); w !== null; w = word(false)) line.push(w);
    lines.push(line);
  }
  return lines;
}

/** mdstat_read(): one entry per md line. */
export function mdadmParseMdstat(text: string): MdadmEnt[] {
  const out: MdadmEnt[] = [];
  for (const line of mdadmConfLines(text)) {
    const head = line[0]!;
    if (head === 'Personalities' || head === 'read_ahead' || head === 'unused') continue;
    if (!head.startsWith('md') || head.length >= 32 || !(head[2] === '_' || /^[0-9]$/.test(head[2] ?? ''))) continue;
    const ent: MdadmEnt = {
      devnm: head, active: -1, level: null, members: [], devcnt: 0, metadataVersion: null,
      raidDisks: 0, pattern: null, percent: 'NONE', resync: 0,
    };
    let inDevs = false;
    for (let i = 1; i < line.length; i++) {
      const w = line[i]!;
      const l = w.length;
      if (w === 'active') {
        ent.active = 1;
      } else if (w === 'inactive') {
        ent.active = 0;
        inDevs = true;
      } else if (w === 'bitmap:') {
        break; // mdadm stops at the bitmap line
      } else if (ent.active > 0 && ent.level === null && w[0] !== '(') {
        ent.level = w;
        inDevs = true;
      } else if (inDevs && w === 'blocks') {
        inDevs = false;
      } else if (inDevs) {
        const b = w.indexOf('[');
        if (b >= 0) {
          ent.members.push(w.slice(0, b));
          ent.devcnt++;
        }
      } else if (w === 'super' && i + 1 < line.length) {
        ent.metadataVersion = line[++i]!;
      } else if (w[0] === '[' && /^[0-9]$/.test(w[1] ?? '')) {
        ent.raidDisks = atoi(w.slice(1));
      } else if (ent.pattern === null && w[0] === '[' && (w[1] === 'U' || w[1] === '_')) {
        ent.pattern = w.endsWith(']') ? w.slice(1, -1) : w.slice(1);
      } else if (ent.percent === 'NONE' && w.startsWith('re') && w[l - 1] === '%' && w.includes('=')) {
        ent.percent = atoi(w.slice(w.indexOf('=') + 1));
        ent.resync = w.startsWith('resync') ? 1 : w.startsWith('reshape') ? 2 : 0;
      } else if (ent.percent === 'NONE' && (w[0] === 'r' || w[0] === 'c')) {
        if (w.startsWith('resync')) ent.resync = 1;
        if (w.startsWith('reshape')) ent.resync = 2;
        if (w.startsWith('recovery')) ent.resync = 0;
        if (w.startsWith('check')) ent.resync = 3;
        if (l > 8 && w.endsWith('=DELAYED')) ent.percent = 'DELAYED';
        if (l > 8 && w.endsWith('=PENDING')) ent.percent = 'PENDING';
        if (l > 7 && w.endsWith('=REMOTE')) ent.percent = 'REMOTE';
      } else if (ent.percent === 'NONE' && /^[0-9]$/.test(w[0] ?? '') && w[l - 1] === '%') {
        ent.percent = atoi(w);
      }
    }
    out.push(ent);
  }
  return out;
}

// ---------------------------------------------------------------- procfs (node_exporter)

export interface ProcfsComponent {
  name: string;
  descriptorIndex: number;
  writeMostly: boolean;
  journal: boolean;
  faulty: boolean;
  spare: boolean;
  replacement: boolean;
}

export interface ProcfsMdstat {
  name: string;
  type: string;
  activityState: string;
  disksActive: number;
  disksTotal: number;
  disksFailed: number;
  disksDown: number;
  disksSpare: number;
  blocksTotal: number;
  blocksSynced: number;
  blocksToBeSynced: number;
  blocksSyncedPct: number;
  blocksSyncedFinishTime: number;
  blocksSyncedSpeed: number;
  devices: ProcfsComponent[];
}

const statusLineRE = /(\d+) blocks .*\[(\d+)\/(\d+)\] \[([U_]+)\]/;
const recoveryLineBlocksRE = /\((\d+\/\d+)\)/;
const recoveryLinePctRE = /= (.+)%/;
const recoveryLineFinishRE = /finish=(.+)min/;
const recoveryLineSpeedRE = /speed=(.+)[A-Z]/;
const componentDeviceRE = /(.*)\[(\d+)\](\([SF]+\))?/;
const personalitiesPrefix = 'Personalities : ';

/** Go's strings.Fields. */
function fields(s: string): string[] {
  const t = s.trim();
  return t === '' ? [] : t.split(/\s+/);
}

/** Go's strconv.ParseInt(s, 10, 64) (throws where Go returns an error). */
function parseInt64(s: string): number {
  if (!/^[+-]?\d+$/.test(s)) throw new Error(`procfs: ParseInt ${JSON.stringify(s)}`);
  return Number(s);
}

/** Go's strconv.ParseFloat(s, 64). */
function parseFloat64(s: string): number {
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) throw new Error(`procfs: ParseFloat ${JSON.stringify(s)}`);
  return Number(s);
}

function count(s: string, sub: string): number {
  return s.split(sub).length - 1;
}

function evalStatusLine(deviceLine: string, statusLine: string): { active: number; total: number; down: number; size: number } {
  const f = fields(statusLine);
  if (f.length < 1) throw new Error(`procfs: unexpected status line ${JSON.stringify(statusLine)}`);
  const size = parseInt64(f[0]!);
  if (deviceLine.includes('raid0') || deviceLine.includes('linear')) {
    const total = count(deviceLine, '[');
    return { active: total, total, down: 0, size };
  }
  if (deviceLine.includes('inactive')) return { active: 0, total: 0, down: 0, size };
  const m = statusLineRE.exec(statusLine);
  if (!m) throw new Error(`procfs: could not find all substring matches ${JSON.stringify(statusLine)}`);
  return { total: parseInt64(m[2]!), active: parseInt64(m[3]!), down: count(m[4]!, '_'), size };
}

function evalRecoveryLine(line: string): { synced: number; toBeSynced: number; pct: number; finish: number; speed: number } {
  let m = recoveryLineBlocksRE.exec(line);
  if (!m) throw new Error(`procfs: unexpected recovery line blocks ${JSON.stringify(line)}`);
  const [a, b] = m[1]!.split('/');
  const synced = parseInt64(a!);
  const toBeSynced = parseInt64(b!);
  m = recoveryLinePctRE.exec(line);
  if (!m) throw new Error(`procfs: unexpected recovery line matching percentage ${JSON.stringify(line)}`);
  const pct = parseFloat64(m[1]!.trim());
  m = recoveryLineFinishRE.exec(line);
  if (!m) throw new Error(`procfs: unexpected recovery line matching finish ${JSON.stringify(line)}`);
  const finish = parseFloat64(m[1]!);
  m = recoveryLineSpeedRE.exec(line);
  if (!m) throw new Error(`procfs: unexpected recovery line matching speed ${JSON.stringify(line)}`);
  const speed = parseFloat64(m[1]!);
  return { synced, toBeSynced, pct, finish, speed };
}

function evalComponentDevices(deviceFields: string[]): ProcfsComponent[] {
  const out: ProcfsComponent[] = [];
  for (const field of deviceFields) {
    const m = componentDeviceRE.exec(field);
    if (!m) continue;
    const flags = m[3] ?? '';
    out.push({
      name: m[1]!,
      descriptorIndex: parseInt64(m[2]!),
      faulty: flags.includes('(F)'),
      spare: flags.includes('(S)'),
      journal: flags.includes('(J)'),
      replacement: flags.includes('(R)'),
      writeMostly: flags.includes('(W)'),
    });
  }
  return out;
}

/** parseMDStat(): throws where procfs returns an error. */
export function procfsParseMdstat(text: string): ProcfsMdstat[] {
  const out: ProcfsMdstat[] = [];
  const lines = text.split('\n');
  const known = new Set<string>();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === '' || line[0] === ' ' || line.startsWith('unused')) continue;
    if (known.size === 0 && line.startsWith(personalitiesPrefix)) {
      for (const w of fields(line.slice(personalitiesPrefix.length))) known.add(w.slice(1, -1));
      continue;
    }
    const deviceFields = fields(line);
    if (deviceFields.length < 3) throw new Error(`procfs: expected 3+ fields, got ${JSON.stringify(line)}`);
    const name = deviceFields[0]!;
    let state = deviceFields[2]!;
    const isRaidType = (t: string): boolean => known.has(t) && !/[([]/.test(t);
    let type = 'unknown';
    let deviceStart = 0;
    if (deviceFields.length > 3) {
      if (isRaidType(deviceFields[3]!)) {
        type = deviceFields[3]!;
        deviceStart = 4;
      } else if (deviceFields.length > 4 && isRaidType(deviceFields[4]!)) {
        type = deviceFields[4]!;
        deviceStart = 5;
      }
    }
    if (lines.length <= i + 3) throw new Error(`procfs: too few lines for md device ${name}`);
    const fail = count(line, '(F)');
    const spare = count(line, '(S)');
    const st = evalStatusLine(lines[i]!, lines[i + 1]!);
    let syncIdx = i + 2;
    if (lines[i + 2]!.includes('bitmap')) syncIdx++;
    const syncLine = lines[syncIdx]!;
    let synced = st.size;
    let toBeSynced = st.size;
    let speed = 0;
    let finish = 0;
    let pct = 0;
    const recovering = syncLine.includes('recovery');
    const reshaping = syncLine.includes('reshape');
    const resyncing = syncLine.includes('resync');
    const checking = syncLine.includes('check');
    if (recovering || resyncing || checking || reshaping) {
      state = recovering ? 'recovering' : reshaping ? 'reshaping' : checking ? 'checking' : 'resyncing';
      if (syncLine.includes('PENDING') || syncLine.includes('DELAYED')) {
        synced = 0;
      } else {
        const r = evalRecoveryLine(syncLine);
        ({ synced, toBeSynced, pct, finish, speed } = r);
      }
    }
    out.push({
      name, type, activityState: state,
      disksActive: st.active, disksFailed: fail, disksDown: st.down, disksSpare: spare, disksTotal: st.total,
      blocksTotal: st.size, blocksSynced: synced, blocksToBeSynced: toBeSynced,
      blocksSyncedPct: pct, blocksSyncedFinishTime: finish, blocksSyncedSpeed: speed,
      devices: evalComponentDevices(deviceFields.slice(deviceStart)),
    });
  }
  return out;
}
