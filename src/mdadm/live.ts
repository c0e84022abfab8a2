/**
 * mdadm commands that act on running arrays: --assemble (start), --stop, --detail, --query,
 * --run, --readonly, --readwrite, --wait, --manage (--add, --add-spare, --re-add, --remove,
 * --fail). They run where the arrays live: inside the node daemon (`tsmd daemon`), or, without
 * a daemon, in this process for the length of one command.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { SystemClock } from '../env/clock.js';
import { type ArrayRegistry, type RunningArray } from './registry.js';
import { TsmdError } from '../errors.js';
import { parseUuid, uuidText } from '../format/superblock.js';
import type { BlockDevice } from '../io/block-device.js';
import type { SyncOffload } from '../raid/offload/bulk.js';
import { FileBlockDevice, openDevice } from '../io/file-device.js';
import { FaultyBlockDevice } from '../io/fault-device.js';
import { nodeClusterSetup } from '../cluster/md-cluster/setup.js';
import type { ClusterSetup } from '../md/cluster-ops.js';
import { MdArray, type MdLogLevel } from '../md/array.js';
import type { SyncLimits } from '../md/sync.js';
import { type ClusterConfig, noDlmMessage } from './cluster-config.js';
import { loadSuperblock } from '../md/sb-io.js';
import { type ParsedArgs, parseBitmapDelay, parseChunkKiB, parseLevel, parseSizeKiB, parseSizeSectors, shown, UsageError } from './args.js';
import { growRaid0, growTakeover, type LevelChangeRequest, type TakeoverIo } from '../md/takeover.js';
import { planLevelChange, refuseIfBusy, startLevelChange } from '../md/level-reshape.js';
import { parseLayout } from '../raid/geometry/names.js';
import { backupForAssembly, createBackupFile, growArraySize, linkBackupFile } from './backup-live.js';
import { levelByNumber } from '../raid/levels.js';
import { sameDevice } from './device-id.js';
import { formatDetail, formatDetailBrief } from './report/detail.js';

export interface LiveIo {
  out: (s: string) => void;
  err: (s: string) => void;
  env: NodeJS.ProcessEnv;
}

export interface Ctx {
  registry: ArrayRegistry;
  /** true inside the node daemon: started arrays keep running after the command */
  daemon: boolean;
  /** the mdstat text (daemon) */
  mdstat?: () => string;
  /** the client's working directory: relative device paths are resolved against it */
  cwd?: string;
  /** build the --detail input (kept in main.ts with the other report glue) */
  detailOf: (arr: MdArray, devName: string, homehost?: string) => Parameters<typeof formatDetail>[0];
  /** the daemon's log for what arrays say after the command that started them returned */
  arrayLog?: (mdName: string, msg: string, level?: MdLogLevel) => void;
  /** daemon-wide sync speed limits (KiB/s) */
  syncLimits?: SyncLimits;
  /** helper threads for the arrays' sync work (raid/offload/bulk.ts) */
  syncOffload?: SyncOffload | null;
  /**
   * This node's cluster identity and DLM (the daemon's --node-name, --cluster-name, --etcd):
   * what md-cluster asks corosync and dlm_controld for. Absent outside the daemon (a one-shot
   * command assembles no clustered array).
   */
  cluster?: ClusterConfig;
  /** the daemon noticed a change (mdstat rewrite) */
  changed?: () => void;
  /** wrap every member device opened for an array (the daemon's --fault-injection) */
  wrapDevice?: (dev: BlockDevice) => BlockDevice;
  /** mdadm's MAP_DIR (/run/mdadm): the daemon's run directory, where backup-file links live */
  mapDir?: string;
}

function optStr(a: ParsedArgs, name: string): string | undefined {
  const v = a.opts.get(name);
  return typeof v === 'string' ? v : undefined;
}

function flag(a: ParsedArgs, name: string): boolean {
  return a.opts.has(name);
}

// ---- mdadm.conf ----

export interface ConfArray {
  dev: string;
  uuid?: string;
  name?: string;
  devices?: string[];
  /** spares=N: the spares --monitor expects (SparesMissing below it) */
  spares?: number;
}

export interface MdadmConf {
  deviceGlobs: string[];
  arrays: ConfArray[];
  homehost?: string;
  /** MAILADDR: the first address (config.c mailline keeps the first word of all such lines) */
  mailAddr?: string;
  /** MAILFROM: every word, joined by spaces */
  mailFrom?: string;
  /** PROGRAM: the first word */
  program?: string;
  /** MONITORDELAY: seconds (the first such line) */
  monitorDelay?: number;
}

/** mdadm.conf's keywords, in mdadm's order (config.c keywords[]). */
const CONF_KEYWORDS = ['devices', 'array', 'mailaddr', 'mailfrom', 'program', 'create', 'homehost', 'homecluster', 'auto', 'policy', 'part-policy', 'sysfs', 'monitordelay'] as const;

/**
 * mdadm config.c match_keyword: at least three letters, any case, a prefix of a keyword (the
 * first in the table's order wins: "HOM" is HOMEHOST); null for none.
 */
export function matchConfKeyword(word: string): (typeof CONF_KEYWORDS)[number] | null {
  if (word.length < 3) return null;
  const w = word.toLowerCase();
  return CONF_KEYWORDS.find((k) => k.startsWith(w)) ?? null;
}

/**
 * Parse mdadm.conf: DEVICE, ARRAY and HOMEHOST lines (continuation lines start with blanks);
 * the other keywords mdadm knows are read and not used; a word that is none of them is warned
 * about as mdadm's load_conffile does ("Unknown keyword FOO") and the line is ignored.
 */
export function parseMdadmConf(text: string, warn: (msg: string) => void = () => {}): MdadmConf {
  const conf: MdadmConf = { deviceGlobs: [], arrays: [] };
  const logical: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '');
    if (!line.trim()) continue;
    if (/^\s/.test(line) && logical.length) logical[logical.length - 1] += ` ${line.trim()}`;
    else logical.push(line.trim());
  }
  for (const l of logical) {
    const words = l.split(/\s+/);
    const kw = matchConfKeyword(words[0]!);
    if (kw === null) warn(`Unknown keyword ${words[0]!}`);
    else if (kw === 'devices') conf.deviceGlobs.push(...words.slice(1));
    else if (kw === 'homehost') conf.homehost = words[1];
    else if (kw === 'mailaddr') conf.mailAddr ??= words[1];
    else if (kw === 'mailfrom') {
      const rest = words.slice(1).join(' ');
      if (rest) conf.mailFrom = conf.mailFrom ? `${conf.mailFrom} ${rest}` : rest;
    } else if (kw === 'program') conf.program ??= words[1];
    else if (kw === 'monitordelay') {
      const n = Number.parseInt(words[1] ?? '', 10);
      if (conf.monitorDelay === undefined && n > 0) conf.monitorDelay = n;
    } else if (kw === 'array') {
      const a: ConfArray = { dev: '' };
      for (const w of words.slice(1)) {
        const eq = w.indexOf('=');
        if (eq < 0) {
          if (!a.dev) a.dev = w;
          continue;
        }
        const k = w.slice(0, eq).toLowerCase();
        const v = w.slice(eq + 1);
        if (k === 'uuid') a.uuid = v;
        else if (k === 'name') a.name = v;
        else if (k === 'devices') a.devices = v.split(',');
        else if (k === 'spares') a.spares = Number.parseInt(v, 10) || 0;
      }
      if (!a.dev) throw new TsmdError('EINVAL', `mdadm.conf: ARRAY line without a device: ${l}`);
      conf.arrays.push(a);
    }
  }
  return conf;
}

function globToRegExp(seg: string): RegExp {
  const re = seg.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]');
  return new RegExp(`^${re.replace(/\[\^\/\]\*/g, '[^/]*')}$`);
}

/** Expand a path glob with * and ? in any segment (no **). */
export function expandGlob(pattern: string): string[] {
  if (!/[*?[]/.test(pattern)) {
    try {
      statSync(pattern);
      return [pattern];
    } catch {
      return [];
    }
  }
  const parts = pattern.split('/');
  let bases = [pattern.startsWith('/') ? '/' : '.'];
  for (const part of parts) {
    if (part === '') continue;
    const next: string[] = [];
    for (const b of bases) {
      if (!/[*?]/.test(part)) {
        next.push(join(b, part));
        continue;
      }
      const re = globToRegExp(part);
      let names: string[];
      try {
        names = readdirSync(b);
      } catch {
        continue;
      }
      for (const n of names.sort()) if (re.test(n)) next.push(join(b, n));
    }
    bases = next;
  }
  return bases.filter((p) => {
    try {
      statSync(p);
      return true;
    } catch {
      return false;
    }
  });
}

/** mdadm's config lookup: --config=FILE, else TSMD_CONF, else /etc/mdadm/mdadm.conf, /etc/mdadm.conf; undefined when none. */
export function mdadmConfPath(explicit: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  return explicit ?? env.TSMD_CONF ?? ['/etc/mdadm/mdadm.conf', '/etc/mdadm.conf'].find((p) => {
    try {
      return statSync(p).isFile();
    } catch {
      return false;
    }
  });
}

export function readConf(a: ParsedArgs, env: NodeJS.ProcessEnv, warn?: (msg: string) => void): MdadmConf {
  const path = mdadmConfPath(optStr(a, 'config'), env);
  if (!path) throw new TsmdError('ENOENT', 'no mdadm.conf found (give --config=FILE)');
  return loadMdadmConf(path, warn);
}

/** Read and parse one mdadm.conf (`warn` hears what mdadm warns about, e.g. unknown keywords). */
export function loadMdadmConf(path: string, warn?: (msg: string) => void): MdadmConf {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new TsmdError('ENOENT', `cannot read ${path}: ${(e as Error).message}`);
  }
  const conf = parseMdadmConf(text, warn);
  // relative DEVICE globs are relative to the config file
  conf.deviceGlobs = conf.deviceGlobs.map((g) => (g.startsWith('/') || g === 'partitions' || g === 'containers' ? g : join(dirname(path), g)));
  return conf;
}

/**
 * mdadm.conf for a scan that may run without one: mdadm reads the config file if there is one
 * and otherwise scans as if it said "DEVICE partitions" (config.c load_conffile / conf_get_devs).
 */
export function readConfOrDefault(a: ParsedArgs, env: NodeJS.ProcessEnv, warn?: (msg: string) => void): MdadmConf {
  try {
    return readConf(a, env, warn);
  } catch (e) {
    if (e instanceof TsmdError && e.code === 'ENOENT' && !optStr(a, 'config') && env.TSMD_CONF === undefined) return { deviceGlobs: [], arrays: [] };
    throw e;
  }
}

/** The devices a --scan looks at: the DEVICE globs, else mdadm's default `DEVICE partitions`. */
export function candidateDevices(conf: MdadmConf): string[] {
  const out = new Set<string>();
  for (const g of conf.deviceGlobs.length ? conf.deviceGlobs : ['partitions']) {
    if (g === 'partitions') {
      try {
        for (const line of readFileSync('/proc/partitions', 'utf8').split('\n').slice(2)) {
          const name = line.trim().split(/\s+/)[3];
          if (name) out.add(`/dev/${name}`);
        }
      } catch {
        // no /proc/partitions: nothing to scan
      }
    } else if (g !== 'containers') for (const p of expandGlob(g)) out.add(p);
  }
  return [...out];
}

// ---- assemble / start ----

function startedMessage(md: string, arr: MdArray): string {
  const working = arr.workingSlots.length;
  const spares = arr.members.filter((m) => m.slot === null).length;
  const of = working < arr.raidDisks ? ` (out of ${arr.raidDisks})` : '';
  const sp = spares ? ` and ${spares} spare${spares > 1 ? 's' : ''}` : '';
  return `tsmd: ${md} has been started with ${working} drive${working === 1 ? '' : 's'}${of}${sp}.\n`;
}

async function openPaths(paths: string[], readOnly: boolean, ctx: Ctx): Promise<BlockDevice[]> {
  const devs: BlockDevice[] = [];
  try {
    for (const p of paths) {
      const dev = await openDevice(p, { readOnly, exclusive: !readOnly });
      devs.push(ctx.wrapDevice ? ctx.wrapDevice(dev) : dev);
    }
    return devs;
  } catch (e) {
    await Promise.all(devs.map((d) => d.close()));
    throw e;
  }
}

/**
 * The devices a search by --uuid/--name passes over, as mdadm's Assemble.c says them: only
 * when reporting mismatches (devices named on the command line and not --quiet, or --verbose:
 * its report_mismatch), and in its words ("DEV has wrong uuid.", "DEV has wrong name.", "no
 * recogniseable superblock on DEV"). Returns undefined for any other message (said as is) and
 * null for one that is not said. The md core's texts are matched here because they are its
 * log lines (md/array.ts loadCandidates).
 */
function mismatchText(m: string, opts: { uuid?: Uint8Array; reportMismatch?: boolean }): string | null | undefined {
  const wrong = /^(.*) has wrong uuid or name \(array ([0-9a-f:]+)\); skipping it$/.exec(m);
  const none = /^no md superblock on (.*); skipping it$/.exec(m);
  if (!wrong && !none) return undefined;
  if (opts.reportMismatch === false) return null;
  if (none) return `no recogniseable superblock on ${none[1]!}`;
  const uuidDiffers = opts.uuid !== undefined && uuidText(opts.uuid) !== wrong![2];
  return `${wrong![1]!} has wrong ${uuidDiffers ? 'uuid' : 'name'}.`;
}

/** Start an array from member paths and register it. */
export async function startArray(
  ctx: Ctx,
  md: string,
  paths: string[],
  opts: { run?: boolean; force?: boolean; readOnly?: boolean; uuid?: Uint8Array; name?: string; reportMismatch?: boolean; backupFile?: string },
  io: LiveIo,
): Promise<RunningArray> {
  for (const p of paths) {
    const r = ctx.registry.byMember(p);
    if (r) throw new TsmdError('EBUSY', `${p} is already in use by ${r.devPath} (${r.mdName})`);
  }
  const names = ctx.registry.allocate(md);
  // mdadm Assemble.c: --backup-file, or the one a --grow recorded (locate_backup)
  const backupFile = opts.readOnly ? null : await backupForAssembly(md, opts.backupFile, ctx.mapDir);
  let devs: BlockDevice[];
  try {
    devs = await openPaths(paths, !!opts.readOnly, ctx);
  } catch (e) {
    await backupFile?.dev.close();
    throw e;
  }
  // messages go to the command's stderr while it runs, and to the daemon log always
  let commandDone = false;
  const log = (m: string, level?: MdLogLevel) => {
    ctx.arrayLog?.(names.mdName, m, level);
    if (commandDone) return;
    const said = mismatchText(m, opts);
    if (said === undefined) io.err(`tsmd: ${m}\n`);
    else if (said !== null) io.err(`tsmd: ${said}\n`);
  };
  // md-cluster: a clustered array (bitmap version 5, nodes > 1) checks the bitmap's cluster name
  // against this node's, joins the lockspace named by its UUID as this node, and switches its
  // members to O_DIRECT, before any write (md/array.ts joinCluster)
  const cluster = clusterSetupFor(ctx);
  const syncOffload = ctx.syncOffload ?? null;
  // mdadm's check_env("MDADM_GROW_ALLOW_OLD"), read from the CLI's environment
  const allowOldBackup = (io.env.MDADM_GROW_ALLOW_OLD ?? '') !== '';
  const assembleOpts = { ...opts, log, clock: new SystemClock(), syncLimits: ctx.syncLimits, syncOffload, cluster, backupFile, allowOldBackup };
  const arr = await MdArray.assemble(devs, assembleOpts).catch((e: unknown) => {
    // mdadm Assemble.c names the array: "/dev/md0: Need a backup file to complete reshape..."
    if (e instanceof TsmdError && e.message.startsWith('Need a backup file')) throw new TsmdError(e.code, `${md}: ${e.message}`);
    throw e;
  });
  const r: RunningArray = { mdName: names.mdName, devPath: md, exportName: names.exportName, array: arr, startedAtMs: Date.now() };
  ctx.registry.add(r);
  if (ctx.daemon) {
    arr.sync.onEvent = () => ctx.changed?.();
    arr.startBackground();
  }
  setImmediate(() => {
    commandDone = true;
  });
  return r;
}

/**
 * md_setup_cluster for this node: its cluster name and DLM from the daemon's flags. A node
 * with a cluster name but no DLM refuses clustered arrays with the reason; members are
 * reopened O_DIRECT (other hosts write the same disks), refused where that is impossible.
 */
function clusterSetupFor(ctx: Ctx): ClusterSetup | null {
  const c = ctx.cluster;
  if (!c || c.clusterName === null) return null;
  const direct = async (dev: BlockDevice): Promise<BlockDevice> => {
    const inner = dev instanceof FaultyBlockDevice ? dev.inner : dev;
    if (inner instanceof FileBlockDevice) await inner.reopenDirect(true);
    return dev;
  };
  if (!c.dlm) {
    const clusterName = c.clusterName;
    return {
      clusterName,
      create: () => {
        throw new TsmdError('ENOTSUP', noDlmMessage(clusterName));
      },
    };
  }
  return nodeClusterSetup({ clusterName: c.clusterName, dlm: c.dlm, clock: new SystemClock(), direct });
}

export async function cmdAssembleLive(a: ParsedArgs, io: LiveIo, ctx: Ctx): Promise<number> {
  const readOnly = flag(a, 'readonly') || a.misc === 'readonly' || (!ctx.daemon && a.misc === 'detail');
  const common = { run: flag(a, 'run'), force: flag(a, 'force'), readOnly, backupFile: optStr(a, 'backup-file') };
  const jobs: Array<{ md: string; paths: string[]; uuid?: Uint8Array; name?: string }> = [];
  if (flag(a, 'scan') || (a.devices.length === 0 && a.mdDevice !== null && (optStr(a, 'uuid') || optStr(a, 'name')))) {
    const conf = readConf(a, io.env, (m) => io.err(`tsmd: ${m}\n`));
    const pool = candidateDevices(conf);
    const wanted = a.mdDevice ? conf.arrays.filter((x) => x.dev === a.mdDevice) : conf.arrays;
    if (a.mdDevice && wanted.length === 0) {
      if (optStr(a, 'uuid') || optStr(a, 'name')) wanted.push({ dev: a.mdDevice, uuid: optStr(a, 'uuid'), name: optStr(a, 'name') });
      else throw new TsmdError('ENOENT', `${a.mdDevice} not identified in config file`);
    }
    if (wanted.length === 0) throw new TsmdError('ENOENT', 'no ARRAY lines in the config file');
    for (const w of wanted) {
      if (ctx.registry.find(w.dev)) continue;
      const paths = w.devices ? w.devices.flatMap(expandGlob) : pool;
      jobs.push({ md: w.dev, paths, uuid: w.uuid ? parseUuid(w.uuid) : undefined, name: w.name ?? (w.uuid ? undefined : undefined) });
    }
    if (jobs.some((j) => !j.uuid && !j.name)) throw new TsmdError('EINVAL', 'an ARRAY line needs UUID= or name= to be found by --scan');
  } else {
    const md = a.mdDevice;
    if (!md) throw new UsageError('an md device must be given in this mode');
    if (a.devices.length === 0) throw new UsageError(`no devices given for ${md}`);
    const uuid = optStr(a, 'uuid');
    jobs.push({ md, paths: a.devices, uuid: uuid ? parseUuid(uuid) : undefined, name: optStr(a, 'name') });
  }
  let rc = 0;
  for (const j of jobs) {
    let r: RunningArray;
    try {
      // in a --scan pool, devices of other arrays (or in use) are simply not candidates
      const paths = jobs.length > 1 || flag(a, 'scan') ? j.paths.filter((p) => !ctx.registry.byMember(p)) : j.paths;
      // mdadm Assemble.c report_mismatch: devices from argv unless --quiet, or --verbose
      const reportMismatch = (!flag(a, 'scan') && !a.quiet) || a.verbose > 0;
      r = await startArray(ctx, j.md, paths, { ...common, uuid: j.uuid, name: j.name, reportMismatch }, io);
    } catch (e) {
      if (jobs.length === 1) throw e;
      io.err(`tsmd: ${j.md}: ${(e as Error).message}\n`);
      rc = 1;
      continue;
    }
    const arr = r.array;
    if (!a.quiet) io.err(startedMessage(j.md, arr));
    if (arr.reshapeActive && !a.quiet) {
      // mdadm prints nothing here; the reason an unsupported reshape is left read-only matters
      if (arr.reshapeStuck) io.err(`tsmd: ${j.md}: a reshape is in progress (position ${Number(arr.sb.reshapePosition) / 2}K) that tsmd cannot continue: ${arr.reshapeStuck}; started read-only\n`);
      else if (!ctx.daemon) io.err(`tsmd: ${j.md}: a reshape is in progress (position ${Number(arr.sb.reshapePosition) / 2}K); it continues when the array runs in the daemon\n`);
    }
    if (a.misc === 'detail') printDetail(a, io, ctx, r);
    if (!ctx.daemon) {
      ctx.registry.remove(r.mdName);
      await arr.close();
    }
  }
  return rc;
}

function homehostOf(a: ParsedArgs, io: LiveIo): string {
  return optStr(a, 'homehost') ?? io.env.TSMD_HOMEHOST ?? hostname();
}

function printDetail(a: ParsedArgs, io: LiveIo, ctx: Ctx, r: RunningArray): void {
  const d = ctx.detailOf(r.array, r.devPath.startsWith('/dev/') ? r.devPath : `/dev/${r.devPath}`, homehostOf(a, io));
  io.out(flag(a, 'brief') || flag(a, 'scan') ? formatDetailBrief(d, { verbose: a.verbose > 0 }) : formatDetail(d));
}

// ---- misc mode on running arrays ----

function targets(a: ParsedArgs, ctx: Ctx): RunningArray[] {
  if (flag(a, 'scan') && a.devices.length === 0) return ctx.registry.list();
  if (a.devices.length === 0) throw new UsageError('no md device given');
  return a.devices.map((d) => ctx.registry.get(d));
}

function notRunning(ctx: Ctx, what: string): TsmdError {
  return new TsmdError(
    'ENODEV',
    ctx.daemon
      ? `${what} is not an active md array`
      : `${what} is not running: no node daemon is reachable (start one with "tsmd daemon", or use tsmd --assemble <md> <members...> --detail for an in-process report)`,
  );
}

// ---- sync speed limits ----

/** The largest value md's sysctl takes (proc_dointvec: an int). */
export const MAX_SPEED_LIMIT_KIBS = 0x7fffffff;

/**
 * One --speed-limit-min/--speed-limit-max value: KiB/s, a whole number 1..2^31-1 (md's
 * sync_speed_min_store refuses 0, which is its "system"; the sysctl would take 0, a max of
 * which stops every sync). "system" (per array only): back to the node-wide value.
 */
export function parseSpeedLimit(name: string, text: string, allowSystem: boolean): number | 'system' {
  if (allowSystem && text === 'system') return 'system';
  if (!/^\d+$/.test(text) || Number(text) <= 0 || Number(text) > MAX_SPEED_LIMIT_KIBS)
    throw new UsageError(`--${name} wants a positive whole number of KiB/s (at most ${MAX_SPEED_LIMIT_KIBS})${allowSystem ? ' or "system"' : ''}, got ${text}`);
  return Number(text);
}

function speedLimitChange(a: ParsedArgs): { minKiBs?: number | 'system'; maxKiBs?: number | 'system' } {
  const perArray = a.devices.length > 0;
  const v = (name: string) => {
    const t = optStr(a, name);
    return t === undefined ? undefined : parseSpeedLimit(name, t, perArray);
  };
  return { minKiBs: v('speed-limit-min'), maxKiBs: v('speed-limit-max') };
}

/**
 * Change the node-wide limits in place (every array holds this object: SyncEngine.system).
 * md's sysctl checks nothing across the two: min above max is accepted and max wins.
 */
export function applySystemSpeedLimits(limits: SyncLimits, change: { minKiBs?: number | 'system'; maxKiBs?: number | 'system' }): SyncLimits {
  for (const k of ['minKiBs', 'maxKiBs'] as const) {
    const v = change[k];
    if (v === undefined) continue;
    if (v === 'system' || !Number.isInteger(v) || v <= 0 || v > MAX_SPEED_LIMIT_KIBS)
      throw new TsmdError('EINVAL', `speed_limit_${k === 'minKiBs' ? 'min' : 'max'}: a positive whole number of KiB/s, got ${String(v)}`);
  }
  if (change.minKiBs !== undefined) limits.minKiBs = change.minKiBs as number;
  if (change.maxKiBs !== undefined) limits.maxKiBs = change.maxKiBs as number;
  return { ...limits };
}

/** The node-wide limits as sysctl prints them. */
export function speedLimitsText(l: SyncLimits): string {
  return `dev.raid.speed_limit_min = ${l.minKiBs}\ndev.raid.speed_limit_max = ${l.maxKiBs}\n`;
}

export const MIN_ABOVE_MAX = (l: SyncLimits): string =>
  `speed_limit_min (${l.minKiBs}) is above speed_limit_max (${l.maxKiBs}): md accepts it, and the max wins (a sync never goes faster)`;

export async function cmdMiscLive(a: ParsedArgs, io: LiveIo, ctx: Ctx): Promise<number> {
  const lookup = (d: string) => {
    const r = ctx.registry.find(d);
    if (!r) throw notRunning(ctx, d);
    return r;
  };
  switch (a.misc) {
    case 'detail': {
      if (flag(a, 'scan') && a.devices.length === 0) {
        for (const r of ctx.registry.list()) printDetail(a, io, ctx, r);
        return 0;
      }
      if (a.devices.length === 0) throw new UsageError('no md device given for --detail');
      let rc = 0;
      for (const d of a.devices) {
        const r = ctx.registry.find(d);
        if (!r) {
          io.err(`tsmd: ${notRunning(ctx, d).message}\n`);
          rc = 1;
          continue;
        }
        printDetail(a, io, ctx, r);
        // mdadm --detail --test: 1 degraded, 2 unusable
        if (flag(a, 'test') && r.array.degraded) rc = Math.max(rc, 1);
      }
      return rc;
    }
    case 'query': {
      let rc = 0;
      for (const d of a.devices) {
        // mdadm Query.c names the device as given
        const name = shown(a, d);
        const r = ctx.registry.find(d);
        if (r) {
          const arr = r.array;
          const lvl = arr.level === -1 ? 'linear' : `raid${arr.level}`;
          io.out(`${name}: ${(arr.sizeBytes / 2 ** 20).toFixed(2)}MiB ${lvl} ${arr.raidDisks} devices, ${arr.members.filter((m) => m.slot === null).length} spare. Use mdadm --detail for more detail.\n`);
          continue;
        }
        const byMember = ctx.registry.byMember(d);
        if (byMember) {
          const m = byMember.array.members.find((x) => sameDevice(x.dev.name, d))!;
          io.out(`${name}: device ${m.devNumber} in ${byMember.array.raidDisks} device active raid${byMember.array.level} ${byMember.devPath}.  Use mdadm --examine for more detail.\n`);
          continue;
        }
        try {
          const dev = await openDevice(d, { readOnly: true });
          try {
            const l = await loadSuperblock(dev);
            // mdadm Query.c: a member of no running array is "inactive ... array"; without a
            // superblock the first line is all it says, and that is not a failure (exit 0)
            io.out(`${name}: is not an md array\n`);
            if (l) io.out(`${name}: device ${l.sb.devNumber} in ${l.sb.raidDisks} device inactive ${l.sb.level === -1 ? 'linear' : `raid${l.sb.level}`} array.  Use mdadm --examine for more detail.\n`);
          } finally {
            await dev.close();
          }
        } catch (e) {
          io.err(`tsmd: cannot open ${name}: ${(e as Error).message}\n`);
          rc = 1;
        }
      }
      return rc;
    }
    case 'stop': {
      const list = flag(a, 'scan') && a.devices.length === 0 ? ctx.registry.list() : a.devices.map(lookup);
      for (const r of list) {
        await r.array.close();
        ctx.registry.remove(r.mdName);
        if (!a.quiet) io.err(`tsmd: stopped ${r.devPath}\n`);
      }
      return 0;
    }
    case 'readonly':
    case 'readwrite':
      for (const r of targets(a, ctx)) {
        await r.array.setReadOnly(a.misc === 'readonly');
        ctx.registry.changed();
      }
      return 0;
    case 'run':
      // arrays here are started by --assemble/--create; --run on a running array is a no-op
      for (const d of a.devices) lookup(d);
      return 0;
    case 'action': {
      const what = optStr(a, 'action');
      const valid = ['check', 'repair', 'idle', 'frozen', 'resync', 'recover'] as const;
      if (!what || !(valid as readonly string[]).includes(what)) {
        throw new UsageError(`--action must be one of ${valid.join(', ')} (got ${what ?? 'nothing'})`);
      }
      for (const d of a.devices) {
        const r = lookup(d);
        await r.array.setSyncAction(what as (typeof valid)[number]);
        ctx.changed?.();
      }
      return 0;
    }
    case 'speed-limit': {
      const change = speedLimitChange(a);
      if (a.devices.length === 0) {
        // no array: the node-wide values, md's sysctl dev.raid.speed_limit_min/max
        if (!ctx.daemon || !ctx.syncLimits)
          throw new TsmdError('ENODEV', 'no node daemon is running: the node-wide sync speed limits (md\'s /proc/sys/dev/raid/speed_limit_min and _max) are those of "tsmd daemon"');
        const now = applySystemSpeedLimits(ctx.syncLimits, change);
        io.out(speedLimitsText(now));
        if (now.minKiBs > now.maxKiBs) io.err(`tsmd: ${MIN_ABOVE_MAX(now)}\n`);
        return 0;
      }
      for (const d of a.devices) {
        // md's sysfs sync_speed_min/max of one array; "system" goes back to the node's value
        const r = lookup(d);
        if (change.minKiBs !== undefined) r.array.sync.local.minKiBs = change.minKiBs === 'system' ? null : change.minKiBs;
        if (change.maxKiBs !== undefined) r.array.sync.local.maxKiBs = change.maxKiBs === 'system' ? null : change.maxKiBs;
        const l = r.array.sync.local;
        const shown = (v: number, own: number | null) => `${v} (${own === null ? 'system' : 'local'})`;
        io.out(`${d}: sync speed limits ${shown(r.array.sync.limits.minKiBs, l.minKiBs)} / ${shown(r.array.sync.limits.maxKiBs, l.maxKiBs)} KiB/s\n`);
      }
      return 0;
    }
    case 'wait': {
      // mdadm --wait: 0 when a resync/recovery was waited for, 1 when there was none
      let waited = false;
      for (const d of a.devices) {
        const r = lookup(d);
        for (;;) {
          const cur = r.array.sync.current;
          // a reshape counts as a sync (md's sync_action "reshape"), unless it is frozen
          const reshaping = r.array.reshapeActive && !r.array.reshape.frozen && !r.array.isReadOnly;
          if (!cur && !r.array.sync.busy && !reshaping) break;
          waited = true;
          await new Promise((res) => setTimeout(res, 50));
        }
      }
      return waited ? 0 : 1;
    }
    default:
      throw new UsageError(`--${a.misc} is not supported`);
  }
}

export async function cmdManageLive(a: ParsedArgs, io: LiveIo, ctx: Ctx): Promise<number> {
  const md = a.mdDevice;
  if (!md) throw new UsageError('an md device must be given in --manage mode');
  const r = ctx.registry.find(md);
  if (!r) throw notRunning(ctx, md);
  const arr = r.array;
  // mdadm pairs each --replace device with the next --with device
  const withs = a.manageOps.filter((o) => o.op === 'with').flatMap((o) => o.devices);
  let withUsed = 0;
  let withSeen = 0;
  for (const op of a.manageOps) {
    if (op.devices.length === 0) throw new UsageError(`--${op.op} needs a device`);
    for (const [i, d] of op.devices.entries()) {
      switch (op.op) {
        case 'fail':
        case 'set-faulty':
          await arr.failMember(d);
          if (!a.quiet) io.err(`tsmd: set ${shown(a, d)} faulty in ${md}\n`);
          break;
        case 'remove':
          await arr.removeMember(d);
          if (!a.quiet) io.err(`tsmd: hot removed ${shown(a, d)} from ${md}\n`);
          break;
        case 'add':
        case 'add-spare':
        case 're-add': {
          // mdadm Manage_subdevs: a device held by an array (this one or another) fails its
          // O_EXCL open, "Cannot open DEV: Device or resource busy", exit 1
          if (ctx.registry.byMember(d)) throw new TsmdError('EBUSY', `Cannot open ${shown(a, d)}: Device or resource busy`);
          const opened = await openDevice(d, { exclusive: true });
          const dev = ctx.wrapDevice ? ctx.wrapDevice(opened) : opened;
          try {
            const how = await arr.addMember(dev, { reAdd: op.op === 're-add', deviceUuid: randomBytes(16), writeMostly: op.writeMostly[i] });
            if (!a.quiet) io.err(`tsmd: ${how === 're-added' ? 're-added' : 'added'} ${shown(a, d)}\n`);
          } catch (e) {
            await dev.close();
            throw e;
          }
          break;
        }
        case 'replace': {
          const w = withs[withUsed];
          if (w !== undefined) withUsed++;
          const slot = await arr.requestReplacement(d, w);
          if (!a.quiet) {
            io.err(`tsmd: Marked ${d} (device ${slot} in ${md}) for replacement\n`);
            if (w !== undefined) io.err(`tsmd: Marked ${w} in ${md} as replacement for device ${slot}\n`);
          }
          break;
        }
        case 'with':
          if (withSeen++ >= withUsed) throw new TsmdError('EINVAL', `No matching --replace device for --with ${d}`);
          break;
        default:
          throw new UsageError(`--${op.op} is not supported yet`);
      }
      ctx.registry.changed();
    }
  }
  return 0;
}

/** --raid-devices=N of a --grow (undefined: not given); mdadm's refusal of anything but a count. */
function raidDevicesOpt(a: ParsedArgs): number | undefined {
  const text = optStr(a, 'raid-devices');
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new UsageError(`invalid number of raid devices: ${text}`);
  return Number(text);
}

/**
 * mdadm --grow on a running array: --bitmap=internal|none (with --bitmap-chunk and --delay),
 * the reshapes (growReshape: raid4/5/6 --raid-devices, --chunk, --layout, raid10 near
 * --raid-devices; raid1 --raid-devices), --level, --array-size, --continue, --size
 * (growSizeLive) and linear --add (growAddLive).
 */
export async function cmdGrowLive(a: ParsedArgs, io: LiveIo, ctx: Ctx): Promise<number> {
  const md = a.mdDevice;
  if (!md) throw new UsageError('an md device must be given in --grow mode');
  // level changes that move data (level-reshape.ts); null: not one of them
  if (a.opts.has('level')) {
    const rc = await growLevelReshape(a, io, ctx, md);
    if (rc !== null) return rc;
  }
  // (with --array-size, mdadm's "cannot change array size in same operation..." below)
  if (a.opts.has('level') && !a.opts.has('array-size')) return growLevel(a, io, ctx, md);
  if (a.opts.has('raid-devices') && !a.opts.has('array-size') && ctx.registry.find(md)?.array.level === 0) return growRaid0Devices(a, io, ctx, md);
  const adds = a.manageOps.filter((o) => o.op === 'add');
  if (adds.length > 0 && !a.opts.has('raid-devices') && a.manageOps.length === adds.length) return growAddLive(a, io, ctx, md, adds.flatMap((o) => o.devices));
  if (adds.length > 0 && a.opts.has('raid-devices') && a.manageOps.length === adds.length) {
    // Grow_reshape: the devices given are added (as spares) before the shape changes
    await addSpares(a, io, ctx, md, adds.flatMap((o) => o.devices));
    return growReshape(a, io, ctx, md);
  }
  if (a.manageOps.length > 0) throw new UsageError(`--${a.manageOps[0]!.op} cannot be used with --grow`);
  // mdadm.c GROW: --array-size is imposed first, independent of anything else
  const arraySize = optStr(a, 'array-size');
  if (arraySize !== undefined) {
    const r = ctx.registry.find(md);
    if (!r) throw notRunning(ctx, md);
    growArraySize(r.array, arraySize, { raidDisks: a.opts.has('raid-devices'), level: a.opts.has('level') });
    ctx.registry.changed();
    if (!a.opts.has('chunk') && !a.opts.has('layout') && !a.opts.has('bitmap') && !a.opts.has('size') && !flag(a, 'continue')) return 0;
  }
  if (a.opts.has('size')) return growSizeLive(a, io, ctx, md);
  if (flag(a, 'continue')) {
    const r = ctx.registry.find(md);
    if (!r) throw notRunning(ctx, md);
    const given = optStr(a, 'backup-file');
    await r.array.continueReshape(given ? await backupForAssembly(md, given, ctx.mapDir) : null, md);
    ctx.registry.changed();
    return 0;
  }
  if (a.opts.has('raid-devices') || a.opts.has('chunk') || a.opts.has('layout')) return growReshape(a, io, ctx, md);
  if (a.opts.has('backup-file')) throw new UsageError('--backup-file is only used with --raid-devices, --chunk, --layout or --continue in --grow mode');
  const bitmap = optStr(a, 'bitmap');
  if (bitmap === undefined) throw new UsageError('--grow needs something to change: --bitmap=internal|none');
  if (bitmap !== 'internal' && bitmap !== 'none') {
    throw new UsageError(`--grow --bitmap=${bitmap}: tsmd can add an internal bitmap or remove one (internal, none)`);
  }
  const r = ctx.registry.find(md);
  if (!r) throw notRunning(ctx, md);
  const chunkText = optStr(a, 'bitmap-chunk');
  const chunkBytes = chunkText ? parseSizeKiB(chunkText, 'bitmap chunk') * 1024 : undefined;
  await r.array.setBitmap(bitmap, { chunkBytes, devName: md, daemonSleepSec: parseBitmapDelay(optStr(a, 'delay')) });
  ctx.registry.changed();
  return 0;
}

/**
 * mdadm --grow --raid-devices / --chunk / --layout (Grow.c's Grow_reshape for raid4/5/6): the
 * reshape starts and runs in the daemon's background, as md runs it; the command returns.
 */
async function growReshape(a: ParsedArgs, io: LiveIo, ctx: Ctx, md: string): Promise<number> {
  if (a.opts.has('bitmap')) throw new UsageError('--bitmap cannot be changed in the same --grow as a reshape');
  const r = ctx.registry.find(md);
  if (!r) throw notRunning(ctx, md);
  const arr = r.array;
  const raidDisks = raidDevicesOpt(a);
  const chunkText = optStr(a, 'chunk');
  const chunkSectors = chunkText !== undefined ? parseChunkKiB(chunkText) * 2 : undefined;
  const layoutText = optStr(a, 'layout');
  let layout: number | undefined;
  if (layoutText !== undefined) {
    // raid10: nN <-> oN (reshape-raid10.ts says what md allows)
    if (arr.level !== 4 && arr.level !== 5 && arr.level !== 6 && arr.level !== 10) throw new TsmdError('ENOTSUP', `${md}: --layout of raid${arr.level} is not supported yet by tsmd`);
    layout = parseLayout(arr.level, layoutText, raidDisks ?? arr.raidDisks);
  }
  if (arr.level === 1 && raidDisks !== undefined && chunkSectors === undefined && layout === undefined) {
    // Grow.c: raid1 restripes nothing; raid_disks is set and mdadm prints it on stdout
    const said = await arr.growMirrors({ raidDisks, force: flag(a, 'force'), devName: md });
    if (said === null && !a.quiet) io.err(`tsmd: ${md}: no change requested\n`);
    else if (said !== null && !a.quiet) io.out(`${said}\n`);
    ctx.registry.changed();
    return 0;
  }
  const backupPath = optStr(a, 'backup-file');
  const backup = backupPath ? await createBackupFile(arr, md, backupPath, { raidDisks, chunkSectors }, ctx.mapDir) : undefined;
  const notice = (m: string) => {
    if (!a.quiet) io.err(`tsmd: ${m}\n`);
  };
  const changed = await arr.grow({ raidDisks, chunkSectors, layout, force: flag(a, 'force'), devName: md, backup, notice });
  // the array kept the file (a reshape in place): an assembly finds it by the link
  if (changed && backupPath && arr.backupFileName !== null) linkBackupFile(md, backupPath, ctx.mapDir);
  if (!changed && !a.quiet) io.err(`tsmd: ${md}: no change requested\n`);
  ctx.registry.changed();
  return 0;
}

/**
 * mdadm --grow --raid-devices=N [--add DEV...] of a raid0: through raid4 and back (takeover.ts
 * growRaid0), as mdadm 4.2 grows a raid0.
 */
async function growRaid0Devices(a: ParsedArgs, io: LiveIo, ctx: Ctx, md: string): Promise<number> {
  if (a.opts.has('chunk') || a.opts.has('layout') || a.opts.has('bitmap')) throw new UsageError('--raid-devices of a raid0 cannot be combined with --chunk, --layout or --bitmap');
  const other = a.manageOps.find((o) => o.op !== 'add');
  if (other) throw new UsageError(`--${other.op} cannot be used with --grow`);
  const adds = a.manageOps.flatMap((o) => o.devices);
  const raidDisks = raidDevicesOpt(a)!;
  const arr = ctx.registry.find(md)!.array;
  for (const d of adds) if (ctx.registry.byMember(d)) throw new TsmdError('EBUSY', `Cannot open ${shown(a, d)}: Device or resource busy`);
  const done = await growRaid0(arr, { devName: md, raidDisks }, takeoverIo(a, io, ctx, adds)).finally(() => ctx.registry.changed());
  if (!done) return growReshape(a, io, ctx, md);
  return 0;
}

/** What takeover.ts needs from the command line: the --add devices and mdadm's messages. */
function takeoverIo(a: ParsedArgs, io: LiveIo, ctx: Ctx, adds: string[]): TakeoverIo {
  return {
    add: adds.map((d) => ({ path: d, shown: shown(a, d) })),
    open: async (path) => {
      const opened = await openDevice(path, { exclusive: true });
      return ctx.wrapDevice ? ctx.wrapDevice(opened) : opened;
    },
    deviceUuid: () => randomBytes(16),
    say: (msg) => {
      if (!a.quiet) io.err(`tsmd: ${msg}\n`);
    },
  };
}

/**
 * The level changes --grow --level can make, tried in turn: each returns null for a change it
 * does not make (the next one is asked), else the exit status: md's instant takeovers
 * (md/takeover.ts). The level changes that move data (raid5 <-> raid6, raid0 -> raid5 with
 * its layout reshape: growLevelReshape) are tried before these.
 */
export type LevelChange = (arr: MdArray, req: LevelChangeRequest, io: TakeoverIo) => Promise<number | null>;

export const LEVEL_CHANGES: LevelChange[] = [async (arr, req, tio) => ((await growTakeover(arr, req, tio)) ? 0 : null)];

/**
 * mdadm --grow --level=L [--layout] [--raid-devices] [--add DEV...] (Grow_reshape's level
 * change): mdadm's checks in its order, then the first of LEVEL_CHANGES that makes the change.
 */
async function growLevel(a: ParsedArgs, io: LiveIo, ctx: Ctx, md: string): Promise<number> {
  const level = parseLevel(optStr(a, 'level') ?? '');
  // Grow_reshape's first check
  if (a.opts.has('chunk')) throw new TsmdError('EINVAL', 'Cannot change array level in the same operation as changing chunk size.');
  if (a.opts.has('bitmap')) throw new UsageError('--bitmap changes cannot be used with other geometry changes in --grow mode');
  const other = a.manageOps.find((o) => o.op !== 'add');
  if (other) throw new UsageError(`--${other.op} cannot be used with --grow`);
  const adds = a.manageOps.flatMap((o) => o.devices);
  const r = ctx.registry.find(md);
  if (!r) throw notRunning(ctx, md);
  const arr = r.array;
  const raidDisks = raidDevicesOpt(a);
  if (level === arr.level && adds.length === 0) {
    // the level as it is: a plain reshape, or nothing
    if (raidDisks !== undefined || a.opts.has('layout')) return growReshape(a, io, ctx, md);
    if (!a.quiet) io.err(`tsmd: ${md}: no change requested\n`);
    return 0;
  }
  // a device held by an array fails mdadm's O_EXCL open before anything changes
  for (const d of adds) if (ctx.registry.byMember(d)) throw new TsmdError('EBUSY', `Cannot open ${shown(a, d)}: Device or resource busy`);
  const req: LevelChangeRequest = { devName: md, level, layoutText: optStr(a, 'layout'), raidDisks, adding: adds.length, force: flag(a, 'force') };
  const tio = takeoverIo(a, io, ctx, adds);
  for (const change of LEVEL_CHANGES) {
    const rc = await change(arr, req, tio).finally(() => ctx.registry.changed());
    if (rc !== null) return rc;
  }
  const name = (l: number) => levelByNumber(l).name;
  throw new TsmdError(
    'ENOTSUP',
    `--grow --level is not supported yet by tsmd for ${name(arr.level)} -> ${name(level)} with this geometry: it needs a reshape tsmd does not make ` +
      '(md\'s instant takeovers: raid1 <-> raid5 of 2 devices, raid0 <-> raid10 near=2, raid4 <-> raid5 parity-last, raid0 <-> raid4 / raid5 --layout=parity-last, ' +
      'raid1 / raid10 -> raid0; with a reshape: raid4/5 <-> raid6, raid0 -> raid5, raid1 of 2 -> raid5 of more, raid4 -> raid5 of another layout)',
  );
}

/**
 * mdadm --grow --level where a restripe is needed (Grow.c analyse_change; level-reshape.ts):
 * raid4/5 -> raid6 (and --layout=preserve), raid6 -> raid5, raid0 -> raid5, with --raid-devices,
 * --layout, --chunk and --add DEV (added once the level allows a spare, as Grow_reshape adds
 * its devlist after impose_level). null: not one of these (the instant takeovers).
 */
async function growLevelReshape(a: ParsedArgs, io: LiveIo, ctx: Ctx, md: string): Promise<number | null> {
  const r = ctx.registry.find(md);
  if (!r) throw notRunning(ctx, md);
  const arr = r.array;
  const newLevel = parseLevel(optStr(a, 'level') ?? '');
  // (with --chunk, --bitmap, another op...: growLevel and the checks after it give the refusal)
  if (a.manageOps.some((o) => o.op !== 'add')) return null;
  for (const o of ['chunk', 'bitmap', 'size', 'array-size', 'backup-file', 'continue']) if (a.opts.has(o)) return null;
  const adds = a.manageOps.flatMap((o) => o.devices);
  const newRaidDisks = raidDevicesOpt(a);
  const layoutText = optStr(a, 'layout');
  let newLayout: number | 'preserve' | 'normalise' | undefined;
  if (layoutText === 'preserve') newLayout = 'preserve';
  else if (layoutText === 'normalise' || layoutText === 'normalize') newLayout = 'normalise';
  else if (layoutText !== undefined && (newLevel === 5 || newLevel === 6)) newLayout = parseLayout(newLevel, layoutText);
  const sb = arr.sb;
  const spares = arr.members.filter((m) => m.slot === null && !m.faulty).length;
  const plan = planLevelChange({
    level: sb.level,
    layout: sb.layout,
    raidDisks: sb.raidDisks,
    chunkSectors: sb.chunkSize,
    sizeSectors: Number(sb.size),
    memberSectors: arr.members.filter((m) => m.slot !== null && !m.faulty).map((m) => Number(m.loaded.sb.dataSize)),
    spares: spares + adds.length,
    newLevel,
    newRaidDisks,
    newLayout,
    force: flag(a, 'force'),
    devName: md,
  });
  if (!plan) return null;
  refuseIfBusy(arr, md);
  const added: string[] = [];
  for (const d of adds) {
    if (ctx.registry.byMember(d)) throw new TsmdError('EBUSY', `Cannot open ${shown(a, d)}: Device or resource busy`);
    const opened = await openDevice(d, { exclusive: true });
    const dev = ctx.wrapDevice ? ctx.wrapDevice(opened) : opened;
    try {
      await arr.addMember(dev, { reAdd: false, deviceUuid: randomBytes(16) });
    } catch (e) {
      await dev.close();
      throw e;
    }
    added.push(shown(a, d));
  }
  await startLevelChange(arr, plan);
  if (!a.quiet) {
    if (plan.announce) io.err(`tsmd: ${plan.announce}\n`);
    for (const d of added) io.err(`tsmd: added ${d}\n`);
  }
  ctx.registry.changed();
  return 0;
}

/**
 * mdadm --grow --size=N|max (Grow.c "set size"): the component size changes, the array and
 * its NBD export follow; mdadm's "component size of DEV has been set to NK" on stderr.
 */
async function growSizeLive(a: ParsedArgs, io: LiveIo, ctx: Ctx, md: string): Promise<number> {
  if (a.opts.has('chunk') || a.opts.has('layout') || a.opts.has('raid-devices'))
    throw new TsmdError('EINVAL', 'cannot change component size at the same time as other changes.\n   Change size first, then check data is intact before making other changes.');
  if (a.manageOps.length > 0) throw new TsmdError('EINVAL', '--add cannot be used with other geometry changes in --grow mode');
  if (a.opts.has('bitmap')) throw new TsmdError('EINVAL', '--bitmap changes cannot be used with other geometry changes in --grow mode');
  const text = optStr(a, 'size')!;
  let sectors: number | 'max';
  if (text === 'max') sectors = 'max';
  else {
    // mdadm.c: parse_size, at least 8 sectors, then whole KiB
    const s = parseSizeSectors(text);
    if (s === null || s < 8) throw new UsageError(`invalid size: ${text}`);
    sectors = Math.floor(s / 2) * 2;
  }
  const r = ctx.registry.find(md);
  if (!r) throw notRunning(ctx, md);
  const res = await r.array.growSize({ sectors, devName: md, assumeClean: flag(a, 'assume-clean') });
  if (!a.quiet) io.err(`tsmd: ${res.message}\n`);
  ctx.registry.changed();
  return 0;
}

/**
 * mdadm --grow MD --add DEV... (mdadm.c: Grow_Add_device for each device; only linear arrays
 * grow this way: "can only add devices to linear arrays" otherwise).
 */
async function growAddLive(a: ParsedArgs, io: LiveIo, ctx: Ctx, md: string, devs: string[]): Promise<number> {
  if (a.opts.has('chunk') || a.opts.has('layout') || a.opts.has('bitmap'))
    throw new TsmdError('EINVAL', '--add cannot be used with other geometry changes in --grow mode');
  const r = ctx.registry.find(md);
  if (!r) throw notRunning(ctx, md);
  for (const d of devs) {
    if (r.array.level !== -1) throw new TsmdError('EINVAL', 'can only add devices to linear arrays');
    if (ctx.registry.byMember(d)) throw new TsmdError('EBUSY', `cannot open ${shown(a, d)}`);
    const opened = await openDevice(d, { exclusive: true });
    const dev = ctx.wrapDevice ? ctx.wrapDevice(opened) : opened;
    try {
      await r.array.linearAdd(dev, randomBytes(16), md);
    } catch (e) {
      await dev.close();
      throw e;
    }
    ctx.registry.changed();
  }
  return 0;
}

/** mdadm's Manage_subdevs for the devices of a --grow: each joins as a spare ("added DEV"). */
async function addSpares(a: ParsedArgs, io: LiveIo, ctx: Ctx, md: string, devs: string[]): Promise<void> {
  const r = ctx.registry.find(md);
  if (!r) throw notRunning(ctx, md);
  for (const d of devs) {
    if (ctx.registry.byMember(d)) throw new TsmdError('EBUSY', `Cannot open ${shown(a, d)}: Device or resource busy`);
    const opened = await openDevice(d, { exclusive: true });
    const dev = ctx.wrapDevice ? ctx.wrapDevice(opened) : opened;
    try {
      await r.array.addMember(dev, { deviceUuid: randomBytes(16) });
    } catch (e) {
      await dev.close();
      throw e;
    }
    ctx.registry.changed();
    if (!a.quiet) io.err(`tsmd: added ${shown(a, d)}\n`);
  }
}

export { uuidText };
