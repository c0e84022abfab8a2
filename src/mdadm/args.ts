/**
 * mdadm's command-line grammar, hand-written: modes (-C, -A, -E, -X, -D, ...), long options
 * with `=value` or a separate value, short options with attached values (`-l5`, `-n4`),
 * bundled short flags (`-vv`), and short letters whose meaning depends on the mode exactly as
 * in mdadm (`-f` force/fail, `-b` bitmap/brief, `-c` chunk/config, `-W` write-mostly/wait).
 */
import { levelByName } from '../raid/levels.js';

export type Mode =
  | 'create'
  | 'assemble'
  | 'build'
  | 'manage'
  | 'misc'
  | 'grow'
  | 'monitor'
  | 'incremental';

export type MiscAction =
  | 'examine'
  | 'examine-bitmap'
  | 'examine-badblocks'
  | 'detail'
  | 'query'
  | 'zero-superblock'
  | 'stop'
  | 'readonly'
  | 'readwrite'
  | 'wait'
  | 'run'
  | 'action'
  | 'speed-limit'
  | 'status';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface ParsedArgs {
  mode: Mode | null;
  /** misc-mode action, also set when --detail follows --assemble (tsmd extension) */
  misc: MiscAction | null;
  /** first non-option argument for modes that take an md device */
  mdDevice: string | null;
  devices: string[];
  /** option values by long name; flags are true; repeatable options collect arrays */
  opts: Map<string, string | true>;
  /** --add/--remove/--fail/... in manage mode, in order with their devices */
  manageOps: ManageOp[];
  /** member devices that follow -W/--write-mostly (true) or --readwrite in manage mode (false) */
  writeMostly: Map<string, boolean>;
  verbose: number;
  quiet: boolean;
  /**
   * Device paths as the user typed them, by the absolute path they were resolved to (main.ts
   * resolvePaths): mdadm names devices in its messages and headers as given (`d0.img:`).
   */
  given: Map<string, string>;
  /** --help/-h was given: the parse stopped there, with the mode set so far (mdadm.c) */
  help: boolean;
  /** --help-options */
  helpOptions: boolean;
  version: boolean;
}

/** One --add/--remove/... with its devices; write-mostly set (true) or cleared (false) per device. */
export interface ManageOp {
  op: string;
  devices: string[];
  writeMostly: Array<boolean | undefined>;
}

interface OptSpec {
  long: string;
  arg: 'none' | 'required' | 'optional';
  /** sets the mode (mode flags) */
  mode?: Mode;
  misc?: MiscAction;
}

const LONG: OptSpec[] = [
  // modes
  { long: 'create', arg: 'none', mode: 'create' },
  { long: 'assemble', arg: 'none', mode: 'assemble' },
  { long: 'build', arg: 'none', mode: 'build' },
  { long: 'manage', arg: 'none', mode: 'manage' },
  { long: 'misc', arg: 'none', mode: 'misc' },
  { long: 'grow', arg: 'none', mode: 'grow' },
  { long: 'monitor', arg: 'none', mode: 'monitor' },
  { long: 'follow', arg: 'none', mode: 'monitor' },
  { long: 'incremental', arg: 'none', mode: 'incremental' },
  { long: 'examine', arg: 'none', mode: 'misc', misc: 'examine' },
  { long: 'examine-bitmap', arg: 'none', mode: 'misc', misc: 'examine-bitmap' },
  { long: 'examine-badblocks', arg: 'none', mode: 'misc', misc: 'examine-badblocks' },
  { long: 'detail', arg: 'none', mode: 'misc', misc: 'detail' },
  { long: 'query', arg: 'none', mode: 'misc', misc: 'query' },
  { long: 'zero-superblock', arg: 'none', mode: 'misc', misc: 'zero-superblock' },
  { long: 'stop', arg: 'none', mode: 'misc', misc: 'stop' },
  { long: 'readonly', arg: 'none', misc: 'readonly' },
  { long: 'readwrite', arg: 'none', misc: 'readwrite' },
  { long: 'wait', arg: 'none', mode: 'misc', misc: 'wait' },
  { long: 'action', arg: 'required', mode: 'misc', misc: 'action' },
  // tsmd's per-array sync_speed_min / sync_speed_max (sysfs in Linux)
  { long: 'speed-limit-min', arg: 'required', mode: 'misc', misc: 'speed-limit' },
  { long: 'speed-limit-max', arg: 'required', mode: 'misc', misc: 'speed-limit' },
  { long: 'run', arg: 'none' },
  { long: 'status', arg: 'none', mode: 'misc', misc: 'status' },
  // general
  { long: 'help', arg: 'none' },
  { long: 'help-options', arg: 'none' },
  { long: 'version', arg: 'none' },
  { long: 'verbose', arg: 'none' },
  { long: 'quiet', arg: 'none' },
  { long: 'brief', arg: 'none' },
  { long: 'scan', arg: 'none' },
  { long: 'force', arg: 'none' },
  { long: 'config', arg: 'required' },
  { long: 'test', arg: 'none' },
  { long: 'export', arg: 'none' },
  // create / grow / build
  { long: 'level', arg: 'required' },
  { long: 'raid-devices', arg: 'required' },
  { long: 'spare-devices', arg: 'required' },
  { long: 'chunk', arg: 'required' },
  { long: 'rounding', arg: 'required' },
  { long: 'layout', arg: 'required' },
  { long: 'parity', arg: 'required' },
  { long: 'size', arg: 'required' },
  { long: 'array-size', arg: 'required' },
  { long: 'name', arg: 'required' },
  { long: 'homehost', arg: 'required' },
  { long: 'uuid', arg: 'required' },
  { long: 'metadata', arg: 'required' },
  { long: 'bitmap', arg: 'required' },
  { long: 'bitmap-chunk', arg: 'required' },
  { long: 'write-behind', arg: 'optional' },
  { long: 'write-mostly', arg: 'none' },
  { long: 'readwrite-mostly', arg: 'none' },
  { long: 'failfast', arg: 'none' },
  { long: 'nofailfast', arg: 'none' },
  { long: 'nodes', arg: 'required' },
  { long: 'home-cluster', arg: 'required' },
  { long: 'cluster-name', arg: 'required' },
  { long: 'assume-clean', arg: 'none' },
  { long: 'data-offset', arg: 'required' },
  { long: 'consistency-policy', arg: 'required' },
  { long: 'backup-file', arg: 'required' },
  { long: 'continue', arg: 'none' },
  { long: 'auto', arg: 'required' },
  { long: 'update', arg: 'required' },
  { long: 'no-degraded', arg: 'none' },
  // manage
  { long: 'add', arg: 'none' },
  { long: 'add-spare', arg: 'none' },
  { long: 're-add', arg: 'none' },
  { long: 'remove', arg: 'none' },
  { long: 'fail', arg: 'none' },
  { long: 'set-faulty', arg: 'none' },
  { long: 'replace', arg: 'none' },
  { long: 'with', arg: 'none' },
  // monitor
  { long: 'mail', arg: 'required' },
  { long: 'program', arg: 'required' },
  { long: 'alert', arg: 'required' },
  { long: 'syslog', arg: 'none' },
  { long: 'delay', arg: 'required' },
  { long: 'daemonise', arg: 'none' },
  { long: 'oneshot', arg: 'none' },
  { long: 'pid-file', arg: 'required' },
  { long: 'increment', arg: 'required' },
  // tsmd's own
  { long: 'run-dir', arg: 'required' },
];

const MANAGE_OPS = new Set([
  'add',
  'add-spare',
  're-add',
  'remove',
  'fail',
  'set-faulty',
  'replace',
  'with',
]);

/** Short letters that do not depend on the mode. */
const SHORT_FIXED: Record<string, string> = {
  C: 'create',
  A: 'assemble',
  B: 'build',
  G: 'grow',
  F: 'monitor',
  I: 'incremental',
  D: 'detail',
  E: 'examine',
  X: 'examine-bitmap',
  Q: 'query',
  S: 'stop',
  o: 'readonly',
  w: 'readwrite',
  R: 'run',
  h: 'help',
  V: 'version',
  v: 'verbose',
  q: 'quiet',
  s: 'scan',
  l: 'level',
  n: 'raid-devices',
  x: 'spare-devices',
  p: 'layout',
  z: 'size',
  N: 'name',
  u: 'uuid',
  e: 'metadata',
  a: 'add',
  r: 'remove',
  t: 'test',
  Y: 'export',
  k: 'delay',
  m: 'mail',
  d: 'delay',
  U: 'update',
  K: 'cluster-name',
  Z: 'array-size',
  y: 'syslog',
  i: 'increment',
  P: 'pid-file',
};

/** The mode-dependent short letters (mdadm's rules). */
function shortFor(letter: string, mode: Mode | null): string | null {
  const creating = mode === 'create' || mode === 'build' || mode === 'grow';
  switch (letter) {
    case 'f':
      // `mdadm /dev/md0 -f /dev/sdb` is manage mode's --fail; elsewhere -f is --force
      if (mode === 'manage' || mode === null) return 'fail';
      return mode === 'monitor' ? 'daemonise' : 'force';
    case 'b':
      return creating ? 'bitmap' : 'brief';
    case 'c':
      return creating ? 'chunk' : 'config';
    case 'W':
      return creating || mode === 'manage' ? 'write-mostly' : 'wait';
    default:
      return SHORT_FIXED[letter] ?? null;
  }
}

function spec(long: string): OptSpec | undefined {
  return LONG.find((o) => o.long === long);
}

/**
 * A long option as getopt_long finds it (mdadm parses with it): the exact name, else the one
 * option the text is a prefix of (\`--zero\` is --zero-superblock). A prefix of several is an
 * error naming them in the table's order, in getopt's words; a prefix of none is unknown.
 */
export function resolveLong(text: string): OptSpec | undefined {
  const exact = spec(text);
  if (exact || text === '') return exact;
  const hits = LONG.filter((o) => o.long.startsWith(text));
  if (hits.length > 1) {
    throw new UsageError(`option '--${text}' is ambiguous; possibilities:${hits.map((o) => ` '--${o.long}'`).join('')}`);
  }
  return hits[0];
}

export function parseArgs(argv: string[]): ParsedArgs {
  const out: ParsedArgs = {
    mode: null,
    misc: null,
    mdDevice: null,
    devices: [],
    opts: new Map(),
    manageOps: [],
    writeMostly: new Map(),
    verbose: 0,
    quiet: false,
    given: new Map(),
    help: false,
    helpOptions: false,
    version: false,
  };
  let currentManage: ManageOp | null = null;
  // mdadm: -W/--write-mostly and --readwrite in manage mode apply to the devices that follow
  let manageWriteMostly: boolean | undefined;
  const positional: string[] = [];

  const setMode = (m: Mode, flag: string) => {
    if (out.mode === null || out.mode === m) {
      out.mode = m;
      return;
    }
    // mdadm lets a misc action follow a mode-less start; --detail after --assemble is tsmd's
    // in-process report until the node daemon exists
    if (m === 'misc' && out.mode === 'assemble' && flag === 'detail') return;
    throw new UsageError(
      `--${flag} would set mdadm mode to "${m}", but it is already set to "${out.mode}".`,
    );
  };

  const apply = (long: string, value: string | undefined, flagText: string) => {
    const s = spec(long);
    if (!s) throw new UsageError(`unrecognised option ${flagText}`);
    if (s.mode) setMode(s.mode, long);
    if (s.misc) {
      if (out.misc && out.misc !== s.misc && !(s.misc === 'readonly' || s.misc === 'readwrite')) {
        throw new UsageError(`--${long} cannot be combined with --${out.misc}`);
      }
      if (!out.misc || s.misc === 'detail' || out.misc === 'readonly' || out.misc === 'readwrite')
        out.misc = s.misc;
    }
    if (long === 'help') out.help = true;
    else if (long === 'help-options') out.helpOptions = true;
    else if (long === 'version') out.version = true;
    else if (long === 'verbose') out.verbose++;
    else if (long === 'quiet') out.quiet = true;
    if ((out.mode === 'create' || out.mode === 'build') && long === 'write-mostly') manageWriteMostly = true;
    if (out.mode === 'manage' && (long === 'write-mostly' || long === 'readwrite-mostly' || (long === 'readwrite' && currentManage))) {
      manageWriteMostly = long === 'write-mostly';
      if (long === 'readwrite') out.misc = null;
      return;
    }
    if (
      MANAGE_OPS.has(long) &&
      (out.mode === 'manage' || out.mode === null || out.mode === 'grow')
    ) {
      if (out.mode === null) out.mode = 'manage';
      currentManage = { op: long, devices: [], writeMostly: [] };
      out.manageOps.push(currentManage);
      return;
    }
    if (s.arg === 'none' && value !== undefined)
      throw new UsageError(`option --${long} does not take a value`);
    // mdadm.c checks --chunk/--rounding while parsing (exit 2), before any device is looked at
    if ((long === 'chunk' || long === 'rounding') && value !== undefined) parseChunkKiB(value);
    out.opts.set(long, value ?? true);
  };

  args: for (let i = 0; i < argv.length; i++) {
    // mdadm acts on --help (and --help-options) as soon as it reads it, with the mode so far
    if (out.help || out.helpOptions) break;
    const a = argv[i]!;
    if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const s = resolveLong(eq >= 0 ? a.slice(2, eq) : a.slice(2));
      if (!s) throw new UsageError(`unrecognised option ${a}`);
      const long = s.long;
      let value: string | undefined = eq >= 0 ? a.slice(eq + 1) : undefined;
      if (s.arg === 'required' && value === undefined) {
        if (i + 1 >= argv.length) throw new UsageError(`option --${long} requires an argument`);
        value = argv[++i]!;
      }
      apply(long, value, a);
      continue;
    }
    if (a.startsWith('-') && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const letter = a[j]!;
        const long = shortFor(letter, out.mode);
        if (!long) throw new UsageError(`invalid option -- '${letter}'`);
        const s = spec(long);
        if (!s) throw new UsageError(`invalid option -- '${letter}'`);
        if (s.arg === 'required') {
          let value = a.slice(j + 1);
          if (value === '') {
            if (i + 1 >= argv.length)
              throw new UsageError(`option requires an argument -- '${letter}'`);
            value = argv[++i]!;
          }
          apply(long, value, `-${letter}`);
          break;
        }
        apply(long, undefined, `-${letter}`);
        if (out.help) break args;
      }
      continue;
    }
    // a plain argument: the md device first (for modes that have one), then members
    if (currentManage) {
      const cm = currentManage as ManageOp;
      cm.devices.push(a);
      cm.writeMostly.push(manageWriteMostly);
      if (manageWriteMostly !== undefined) out.writeMostly.set(a, manageWriteMostly);
    } else {
      positional.push(a);
      // the md device itself is never one (mdadm: -W applies to the member devices after it)
      if (manageWriteMostly !== undefined && positional.length > 1) out.writeMostly.set(a, manageWriteMostly);
    }
  }

  // `mdadm --run /dev/md0`, `mdadm --readonly /dev/md0`: misc mode without a mode flag
  if (out.mode === null && (out.misc || out.opts.has('run')) && positional.length > 0) {
    out.mode = 'misc';
    if (!out.misc) out.misc = 'run';
  }
  const modeTakesMd =
    out.mode === 'create' ||
    out.mode === 'assemble' ||
    out.mode === 'build' ||
    out.mode === 'grow' ||
    out.mode === 'manage' ||
    out.mode === 'incremental';
  // --grow /dev/md0 --add DEV (--grow --level=10 /dev/md0 --add DEV...): the md device comes
  // first in grow mode too (mdadm's devlist)
  if (modeTakesMd && positional.length > 0 && (out.manageOps.length === 0 || out.mode === 'grow')) {
    out.mdDevice = positional.shift()!;
  } else if (out.mode === 'manage' && out.manageOps.length > 0 && positional.length > 0) {
    out.mdDevice = positional.shift()!;
  }
  // "mdadm /dev/md0 --add /dev/sdb": the md device came first, before the op
  if (out.mode === 'manage' && out.mdDevice === null && out.manageOps.length > 0) {
    throw new UsageError('an md device must be given in --manage mode');
  }
  out.devices = positional;
  return out;
}

/** A device path as the user gave it (mdadm prints names as given, not resolved). */
export function shown(a: ParsedArgs, path: string): string {
  return a.given.get(path) ?? path;
}

/**
 * mdadm parse_size() (util.c): a positive decimal number, then nothing (KiB), K, M, G, T or s
 * (sectors); upper-case suffixes only. Returns sectors, or null when mdadm says INVALID_SECTORS.
 */
export function parseSizeSectors(text: string): number | null {
  const m = /^\s*[+]?(\d+)(.*)$/s.exec(text);
  if (!m || Number(m[1]) <= 0) return null;
  const n = Number(m[1]);
  const mult: Record<string, number> = { '': 2, K: 2, M: 2048, G: 2 * 1024 * 1024, T: 2 * 1024 ** 3, s: 1 };
  const k = mult[m[2]!];
  return k === undefined ? null : n * k;
}

/**
 * --delay in create and grow: the bitmap daemon's period in seconds (mdadm.c's parse_num into
 * c.delay, written to the bitmap superblock's daemon_sleep; unset: DEFAULT_BITMAP_DELAY 5).
 */
export function parseBitmapDelay(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 0x7fffffff) throw new UsageError(`invalid delay: ${text}`);
  return Number(text);
}

/**
 * --chunk / --rounding as mdadm.c takes them: parse_size, then at least 8 sectors and a whole
 * number of KiB, else "invalid chunk/rounding value: TEXT" and exit 2 (a usage error).
 */
export function parseChunkKiB(text: string): number {
  const sectors = parseSizeSectors(text);
  if (sectors === null || sectors < 8 || sectors % 2) throw new UsageError(`invalid chunk/rounding value: ${text}`);
  return sectors / 2;
}

/** mdadm parse_size(): a number with optional K/M/G/T suffix; plain numbers are KiB. Returns KiB. */
export function parseSizeKiB(text: string, what: string): number {
  const m = /^(\d+)([KkMmGgTt]?)$/.exec(text.trim());
  if (!m) throw new UsageError(`invalid ${what}: ${text}`);
  const n = Number(m[1]);
  const mult = { '': 1, K: 1, M: 1024, G: 1024 * 1024, T: 1024 * 1024 * 1024 }[
    m[2]!.toUpperCase()
  ]!;
  return n * mult;
}

export function parseIntStrict(
  text: string,
  what: string,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (!/^-?\d+$/.test(text.trim())) throw new UsageError(`invalid ${what}: ${text}`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`invalid ${what}: ${text} (must be ${min}..${max})`);
  return n;
}

/** mdadm's level names: linear, raid0/0/stripe, raid1/1/mirror, raid4/4, raid5/5, raid6/6, raid10/10. */
export function parseLevel(text: string): number {
  const t = text.trim().toLowerCase();
  const v = levelByName(t)?.level;
  if (v === undefined) {
    if (t === 'multipath' || t === 'mp' || t === 'faulty' || t === 'container') {
      throw new UsageError(`level ${text} is not supported by tsmd`);
    }
    throw new UsageError(`invalid raid level: ${text}`);
  }
  return v;
}
