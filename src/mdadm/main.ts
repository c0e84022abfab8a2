/**
 * `tsmd`: mdadm's command line over tsmd. Exit codes follow mdadm: 0 success, 1 failure,
 * 2 bad usage (exitCodeOf, from ERROR_CODES in ../errors.ts). Messages go to stderr prefixed
 * "tsmd: " (mdadm prints "mdadm: ").
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { resolve as pathResolve } from 'node:path';
import { SystemClock } from '../env/clock.js';
import { ERROR_CODES, isTsmdError, TsmdError } from '../errors.js';
import { BITMAP_SB_BYTES, decodeBitmapSuper } from '../format/bitmap.js';
import { Feature, MAX_SECTOR, parseUuid } from '../format/superblock.js';
import type { BlockDevice } from '../io/block-device.js';
import { FaultyBlockDevice } from '../io/fault-device.js';
import { FileBlockDevice, openDevice } from '../io/file-device.js';
import { ArrayRegistry } from './registry.js';
import type { MdArray } from '../md/array.js';
import { FenceableDevice } from '../md/cluster-glue.js';
import { candidateDevices, cmdAssembleLive, cmdGrowLive, cmdManageLive, cmdMiscLive, type Ctx, type MdadmConf, readConfOrDefault, startArray } from './live.js';
import { createArray, zeroSuperblock } from '../md/create.js';
import { DEFAULT_CLUSTER_NODES, type Level, planCreate } from '../md/create-plan.js';
import { loadBitmaps, loadSuperblock } from '../md/sb-io.js';
import { isBackwards } from '../md/reshape.js';
import { parseLayout } from '../raid/geometry/names.js';
import {
  type ParsedArgs,
  parseArgs,
  parseBitmapDelay,
  parseChunkKiB,
  parseIntStrict,
  parseLevel,
  parseSizeKiB,
  shown,
  UsageError,
} from './args.js';
import { noDlmMessage } from './cluster-config.js';
import { clusterNameMismatch } from '../md/cluster-ops.js';
import { deviceIdentity } from './device-id.js';
import { helpText, optionsHelpText } from './help.js';
import { type DetailInput, type DetailMember, detailFieldsFromSuperblock } from './report/detail.js';
import { formatExamine, formatExamineScan } from './report/examine.js';
import { formatExamineBitmap } from './report/examine-bitmap.js';

export const VERSION = '0.1.0';

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  /** is stdin an interactive terminal (may we ask "Continue creating array?") */
  interactive: boolean;
  ask: (question: string) => Promise<string>;
  env: NodeJS.ProcessEnv;
}

function optStr(a: ParsedArgs, name: string): string | undefined {
  const v = a.opts.get(name);
  return typeof v === 'string' ? v : undefined;
}

function flag(a: ParsedArgs, name: string): boolean {
  return a.opts.has(name);
}

/** md device name → array name, as mdadm derives it (/dev/md0 → 0, /dev/md/home → home). */
export function nameFromMdDevice(md: string): string {
  let m = /^(?:\/dev\/)?md\/(.+)$/.exec(md);
  if (m) return m[1]!;
  m = /^(?:\/dev\/)?md_?(d?\d+)$/.exec(md);
  if (m) return m[1]!;
  const base = md.split('/').pop() ?? md;
  return base.replace(/^md/, '') || base;
}

/** set_name from name and homehost (§2.1). */
export function setNameFor(name: string, homehost: string | null): string {
  if (homehost && !name.includes(':') && homehost.length + 1 + name.length < 32)
    return `${homehost}:${name}`;
  return name.slice(0, 31);
}

/** mdadm 4.2's words for the limits of clustered arrays (mdadm.c, Create.c, super1.c). */
export const CLUSTER_MSG = {
  nodes: (text: string) => `clustered array needs two nodes at least: ${text}`,
  nameTooBig: 'Cluster name too big.',
  noName: "The md can't get cluster name",
  nodesNeedClustered: '--nodes argument only compatible with --bitmap=clustered',
  level: '--bitmap=clustered is currently supported with raid1/10 only',
  near: 'only near layout is supported with clustered raid10',
  metadata: 'Warning: cluster md only works with superblock 1.2',
  writeMostly: (dev: string) => `Can not set ${dev} --write-mostly with a clustered bitmap`,
} as const;

/**
 * The bitmap, --nodes and the cluster name of a create, checked in mdadm 4.2's order, before
 * anything else about the array: mdadm.c's option parser (--nodes, the name's length: exit 2),
 * then its lookup of the cluster name for any command with nodes (--bitmap=clustered means 4),
 * then its CREATE case (the level and raid10 layout: exit 1).
 *
 * The name: --cluster-name / --home-cluster, else this node daemon's --cluster-name, where
 * mdadm asks corosync for totem.cluster_name (get_cluster_name over libcmap). mdadm reads
 * mdadm.conf's HOMECLUSTER before corosync; tsmd does not (yet).
 */
function clusterOptions(a: ParsedArgs, ctx: Ctx): { bitmap: 'internal' | 'none' | 'clustered'; nodes: number | undefined; clusterName: string | undefined } {
  const bitmapText = optStr(a, 'bitmap') ?? 'none';
  if (!['internal', 'none', 'clustered'].includes(bitmapText)) {
    throw new UsageError(`--bitmap=${bitmapText}: tsmd supports internal, clustered and none`);
  }
  const bitmap = bitmapText as 'internal' | 'none' | 'clustered';
  const nodesText = optStr(a, 'nodes');
  let nodes: number | undefined;
  if (nodesText !== undefined) {
    // lib.c parse_num: a whole decimal int (no sign, nothing after it), then at least 2
    if (!/^\d+$/.test(nodesText) || Number(nodesText) > 0x7fffffff || Number(nodesText) < 2) throw new UsageError(CLUSTER_MSG.nodes(nodesText));
    nodes = Number(nodesText);
  }
  let clusterName = optStr(a, 'cluster-name') ?? optStr(a, 'home-cluster');
  if (clusterName !== undefined && Buffer.byteLength(clusterName) > 64) throw new UsageError(CLUSTER_MSG.nameTooBig);
  if (bitmap === 'clustered') nodes ??= DEFAULT_CLUSTER_NODES;
  if (nodes === undefined) return { bitmap, nodes, clusterName };
  clusterName ??= ctx.cluster?.clusterName ?? undefined;
  if (clusterName === undefined) throw new TsmdError('EINVAL', CLUSTER_MSG.noName);
  if (bitmap !== 'clustered') throw new TsmdError('EINVAL', CLUSTER_MSG.nodesNeedClustered);
  const levelText = optStr(a, 'level');
  const level = levelText === undefined ? null : parseLevel(levelText);
  if (level !== 1 && level !== 10) throw new TsmdError('EINVAL', CLUSTER_MSG.level);
  const layoutText = optStr(a, 'layout') ?? optStr(a, 'parity');
  if (level === 10 && layoutText !== undefined) {
    let layout: number;
    try {
      layout = parseLayout(10, layoutText);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    // util.c is_near_layout_10: one far copy, not offset
    if (((layout >> 8) & 0xff) > 1 || layout & 0x10000) throw new TsmdError('EINVAL', CLUSTER_MSG.near);
  }
  // A node daemon runs what it creates, and a clustered array runs only under a DLM: refuse
  // before a superblock is written rather than leave members the node cannot assemble (the
  // kernel's md_setup_cluster fails at RUN_ARRAY after mdadm has written them).
  if (ctx.daemon && ctx.cluster && !ctx.cluster.dlm) throw new TsmdError('ENOTSUP', noDlmMessage(clusterName));
  const nodeCluster = ctx.cluster?.clusterName;
  if (ctx.daemon && nodeCluster && nodeCluster !== clusterName) throw new TsmdError('EINVAL', clusterNameMismatch(clusterName, nodeCluster));
  return { bitmap, nodes, clusterName };
}

async function cmdCreate(a: ParsedArgs, io: Io, ctx: Ctx): Promise<number> {
  const md = a.mdDevice;
  if (!md) throw new UsageError('an md device must be given in this mode');
  const levelText = optStr(a, 'level');
  const cl = clusterOptions(a, ctx);
  // Create.c's own checks (not the option parser's): mdadm exits 1 for them, not 2
  if (!levelText) throw new TsmdError('EINVAL', 'a RAID level is needed to create an array.');
  const level = parseLevel(levelText) as Level;
  const rdText = optStr(a, 'raid-devices');
  if (!rdText) throw new TsmdError('EINVAL', 'no raid-devices specified.');
  const raidDisks = parseIntStrict(rdText, 'number of raid devices', 1, 1920);
  const spares = optStr(a, 'spare-devices')
    ? parseIntStrict(optStr(a, 'spare-devices')!, 'number of spare-devices', 0, 1920)
    : 0;
  const devices = a.devices;
  if (devices.length > raidDisks + spares) {
    throw new TsmdError('EINVAL', `You have listed more devices (${devices.length}) than are in the array(${raidDisks + spares})!`);
  }
  if (devices.length < raidDisks + spares) {
    // mdadm Create.c returns 1 here (the grammar was fine; the device list is short)
    throw new TsmdError('EINVAL', "You haven't given enough devices (real or missing) to create this array");
  }
  const metaText = optStr(a, 'metadata') ?? '1.2';
  const metadata = (
    {
      1: '1.2',
      1.2: '1.2',
      1.02: '1.2',
      default: '1.2',
      1.1: '1.1',
      1.01: '1.1',
      '1.0': '1.0',
      '1.00': '1.0',
    } as const
  )[metaText as '1'];
  if (!metadata)
    throw new UsageError(
      `unrecognised metadata identifier: ${metaText} (tsmd writes 1.0, 1.1 and 1.2)`,
    );
  const chunkKiB = optStr(a, 'chunk') ? parseChunkKiB(optStr(a, 'chunk')!) : undefined;
  const layoutText = optStr(a, 'layout') ?? optStr(a, 'parity');
  let layout: number | undefined;
  if (layoutText !== undefined) {
    try {
      layout = parseLayout(level, layoutText, raidDisks);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  const sizeText = optStr(a, 'size');
  const sizeKiB = sizeText && sizeText !== 'max' ? parseSizeKiB(sizeText, 'size') : undefined;
  const { bitmap, nodes, clusterName } = cl;
  const bitmapChunkBytes = optStr(a, 'bitmap-chunk')
    ? parseSizeKiB(optStr(a, 'bitmap-chunk')!, 'bitmap chunk') * 1024
    : undefined;
  // super1.c write_bitmap1 (NodeNumUpdate): mdadm 4.2 finds this only after writing the first
  // member's superblock ("Failed to write metadata"); here before anything is written
  if (bitmap === 'clustered' && metadata !== '1.2') throw new TsmdError('EINVAL', CLUSTER_MSG.metadata);
  let homehost: string | null = optStr(a, 'homehost') ?? io.env.TSMD_HOMEHOST ?? hostname();
  if (homehost === '<none>' || homehost === '') homehost = null;
  const name = optStr(a, 'name') ?? nameFromMdDevice(md);
  const uuid = optStr(a, 'uuid') ? parseUuid(optStr(a, 'uuid')!) : randomBytes(16);
  const dataOffsetText = optStr(a, 'data-offset');
  const dataOffsetSectors = dataOffsetText
    ? parseSizeKiB(dataOffsetText, 'data offset') * 2
    : undefined;
  // -W marks the member devices that follow it (mdadm)
  const writeMostly = (p: string): boolean => a.writeMostly.get(p) === true;
  if (flag(a, 'write-mostly') && level !== 1)
    throw new UsageError('--write-mostly is only meaningful for raid1');
  // Create.c, as it adds each member: md-cluster has no write-behind, so no write-mostly member
  const wm = bitmap === 'clustered' ? devices.find((p) => p !== 'missing' && writeMostly(p)) : undefined;
  if (wm !== undefined) throw new TsmdError('EINVAL', CLUSTER_MSG.writeMostly(shown(a, wm)));

  const force = flag(a, 'force');
  const run = flag(a, 'run');
  const paths = devices;
  // mdadm Create.c opens every member O_RDWR|O_EXCL and keeps it open (super1's add_to_super),
  // so a device listed twice fails its second open and the create aborts, exit 1, before any
  // superblock is written. Files have no O_EXCL: the same node under any name is refused too.
  const seen = new Set<string>();
  for (const p of paths) {
    if (p === 'missing') continue;
    const id = deviceIdentity(p);
    if (id === null) continue; // the open below reports it
    if (seen.has(id)) throw new TsmdError('EBUSY', `failed to open ${shown(a, p)} after earlier success - aborting`);
    seen.add(id);
  }
  for (const p of paths) {
    const r = ctx.registry.byMember(p);
    if (r) throw new TsmdError('EBUSY', `${p} is in use by the running array ${r.devPath}`);
  }
  if (ctx.daemon && ctx.registry.find(md)) throw new TsmdError('EEXIST', `${md} is already active`);
  const opened: Array<BlockDevice | null> = [];
  try {
    for (const p of paths) {
      if (p === 'missing') opened.push(null);
      else opened.push(await openDevice(p, { exclusive: true }));
    }
  } catch (e) {
    await Promise.all(opened.map((d) => d?.close()));
    throw e;
  }
  const members = opened.map((d, i) => ({
    sizeSectors: d ? Math.floor(d.sizeBytes / 512) : null,
    writeMostly: writeMostly(paths[i]!),
  }));
  const baseOptions = {
    level,
    raidDisks,
    metadata,
    chunkKiB,
    layout,
    sizeKiB,
    setName: setNameFor(name, homehost),
    uuid,
    deviceUuids: members.map(() => randomBytes(16)),
    bitmap,
    bitmapChunkBytes,
    bitmapDelaySec: parseBitmapDelay(optStr(a, 'delay')),
    nodes,
    clusterName,
    assumeClean: flag(a, 'assume-clean'),
    force,
    dataOffsetSectors,
    nowSeconds: Math.floor(Date.now() / 1000),
  } as const;
  // validate before touching anything (mdadm prints its size/chunk notes here)
  let plan: ReturnType<typeof planCreate>;
  try {
    plan = planCreate({ ...baseOptions, members });
  } catch (e) {
    await Promise.all(opened.map((d) => d?.close()));
    throw e;
  }
  if (!a.quiet) {
    if (!optStr(a, 'chunk') && plan.chunkSectors > 0 && level !== -1)
      io.err(`tsmd: chunk size defaults to ${plan.chunkSectors / 2}K\n`);
    if (!sizeText && level !== 0 && level !== -1)
      io.err(`tsmd: size set to ${plan.componentSectors / 2}K\n`);
  }
  const result = await createArray(
    opened,
    { ...baseOptions, members },
    {
      confirmOverwrite: async (found) => {
        for (const f of found) io.err(`tsmd: ${f.device} ${f.what}\n`);
        if (run || force) return true;
        if (!io.interactive) {
          io.err('tsmd: refusing to overwrite without --run (no terminal to ask on)\n');
          return false;
        }
        const ans = await io.ask('Continue creating array? ');
        return /^y(es)?$/i.test(ans.trim());
      },
      // in the daemon the array resyncs in the background, as md does after mdadm --create;
      // a clustered array's resync belongs to the cluster's nodes, never to a one-shot command
      initialSync: !ctx.daemon && baseOptions.bitmap !== 'clustered',
      clock: new SystemClock(),
      log: (m) => {
        if (a.verbose) io.err(`tsmd: ${m}\n`);
      },
    },
  );
  const p = result.plan;
  if (ctx.daemon) {
    // mdadm --create starts the array; its initial resync/recovery runs in the background
    await startArray(ctx, md, paths.filter((x) => x !== 'missing'), { run: true }, io);
    if (!a.quiet) io.err(`tsmd: array ${md} started.\n`);
  } else if (!a.quiet) {
    const what = p.recoverOntoLast ? ', recovered onto the last member' : p.needsResync ? ', initial resync done' : '';
    io.err(`tsmd: array ${md} created (${paths.length} devices, ${(p.arraySectors / 2).toFixed(0)}K${what}).\n`);
  }
  return 0;
}

async function readBitmapHeader(dev: BlockDevice, sector: number) {
  const buf = new Uint8Array(512);
  await dev.read(buf, sector * 512);
  return decodeBitmapSuper(buf.subarray(0, BITMAP_SB_BYTES));
}

async function cmdExamine(a: ParsedArgs, io: Io): Promise<number> {
  // mdadm --examine --scan without devices examines every device the config names (DEVICE
  // lines, else all partitions) and lists the arrays found, quietly skipping the rest: exit 0
  // (mdadm.c misc_scan path of Examine)
  const scanAll = a.devices.length === 0 && flag(a, 'scan');
  if (a.devices.length === 0 && !scanAll) throw new UsageError('No devices to examine');
  const paths = scanAll ? candidateDevices(readConfOrDefault(a, io.env, (m) => io.err(`tsmd: ${m}\n`))) : a.devices;
  if (scanAll && paths.length === 0) {
    const conf = optStr(a, 'config') ?? io.env.TSMD_CONF;
    throw new TsmdError('ENOENT', `No devices listed in ${conf ? shown(a, conf) : '/etc/mdadm/mdadm.conf'}`);
  }
  const homehost = optStr(a, 'homehost') ?? io.env.TSMD_HOMEHOST ?? hostname();
  const brief = flag(a, 'brief') || flag(a, 'scan');
  let rc = 0;
  const found: Array<{ name: string; sb: import('../format/superblock.js').Superblock1 }> = [];
  for (const path of paths) {
    let dev: BlockDevice;
    try {
      dev = await openDevice(path, { readOnly: true });
    } catch (e) {
      if (scanAll) continue;
      io.err(`tsmd: cannot open ${shown(a, path)}: ${(e as Error).message}\n`);
      rc = 1;
      continue;
    }
    try {
      const l = await loadSuperblock(dev).catch((e: unknown) => {
        if (scanAll) return null;
        throw e;
      });
      if (!l) {
        if (scanAll) continue;
        io.err(`tsmd: No md superblock detected on ${shown(a, path)}.\n`);
        rc = 1;
        continue;
      }
      if (brief) {
        found.push({ name: shown(a, path), sb: l.sb });
        continue;
      }
      let bitmap = null;
      if (l.sb.featureMap & Feature.BITMAP_OFFSET) {
        const at = l.sbStartSector + l.sb.bitmapOffset;
        if (at >= 0 && (at + 1) * 512 <= dev.sizeBytes) bitmap = await readBitmapHeader(dev, at);
      }
      io.out(
        formatExamine({
          // mdadm's header is the name as given ("d0.img:"), not the resolved path
          deviceName: shown(a, path),
          sb: l.sb,
          raw: l.raw,
          devSectors: l.devSectors,
          homehost,
          bitmap,
        }),
      );
    } finally {
      await dev.close();
    }
  }
  if (brief && found.length) io.out(formatExamineScan(found, { verbose: a.verbose > 0 }));
  return rc;
}

async function cmdExamineBitmap(a: ParsedArgs, io: Io): Promise<number> {
  if (a.devices.length === 0) throw new UsageError('No devices to examine');
  let rc = 0;
  for (const path of a.devices) {
    const dev = await openDevice(path, { readOnly: true });
    try {
      const l = await loadSuperblock(dev);
      if (l && l.sb.featureMap & Feature.BITMAP_OFFSET) {
        const bms = await loadBitmaps(dev, l);
        io.out(
          formatExamineBitmap({
            fileName: shown(a, path),
            sb: l.sb,
            slots: bms.map((b) => ({ sup: b.sup, bits: b.bits })),
            brief: flag(a, 'brief'),
          }),
        );
      } else if (l) {
        io.err(`tsmd: ${shown(a, path)} is an md member without an internal bitmap\n`);
        rc = 1;
      } else {
        // an external bitmap file: header at offset 0
        const sup = await readBitmapHeader(dev, 0);
        const nb = Math.ceil(Number(sup.syncSize) / Math.max(1, sup.chunkSize / 512));
        const bits = new Uint8Array(
          Math.min(Math.ceil(nb / 8), Math.max(0, dev.sizeBytes - BITMAP_SB_BYTES)),
        );
        if (bits.length)
          await dev
            .read(bits.subarray(0, bits.length - (bits.length % 512)), BITMAP_SB_BYTES)
            .catch(() => {});
        io.out(formatExamineBitmap({ fileName: shown(a, path), sb: null, slots: [{ sup, bits }] }));
        if (sup.magic !== 0x6d746962) rc = 1;
      }
    } finally {
      await dev.close();
    }
  }
  return rc;
}

/**
 * mdadm --examine-badblocks (Examine.c ExamineBadblocks, super1.c examine_badblocks_super1):
 * "No bad-blocks list configured on NAME" without a usable log, "Bad-blocks list is empty in
 * NAME" while the BAD_BLOCKS feature is off (md sets it with the first entry), else the list;
 * each on stdout, exit 0. No superblock: said on stderr (not with --brief), exit 1.
 */
async function cmdExamineBadblocks(a: ParsedArgs, io: Io): Promise<number> {
  const { loadBadBlocks } = await import('../md/sb-io.js');
  let rc = 0;
  for (const path of a.devices) {
    const name = shown(a, path);
    let dev: BlockDevice;
    try {
      dev = await openDevice(path, { readOnly: true });
    } catch (e) {
      io.err(`tsmd: cannot open ${name}: ${(e as Error).message}\n`);
      rc = 1;
      continue;
    }
    try {
      const l = await loadSuperblock(dev);
      if (!l) {
        if (!flag(a, 'brief')) io.err(`tsmd: No md superblock detected on ${name}\n`);
        rc = 1;
        continue;
      }
      if (!l.sb.bblogSize || l.sb.bblogSize > 100 || !l.sb.bblogOffset) {
        io.out(`No bad-blocks list configured on ${name}\n`);
        continue;
      }
      if (!(l.sb.featureMap & Feature.BAD_BLOCKS)) {
        io.out(`Bad-blocks list is empty in ${name}\n`);
        continue;
      }
      const list = await loadBadBlocks(dev, l);
      io.out(`Bad-blocks on ${name}:\n`);
      for (const b of list)
        io.out(`${String(b.sector).padStart(20)} for ${b.lengthSectors} sectors\n`);
    } finally {
      await dev.close();
    }
  }
  return rc;
}

async function cmdZero(a: ParsedArgs, io: Io, ctx: Ctx): Promise<number> {
  if (a.devices.length === 0) throw new UsageError('No devices given for --zero-superblock');
  let rc = 0;
  for (const path of a.devices) {
    const running = ctx.registry.byMember(path);
    if (running) {
      io.err(`tsmd: Couldn't open ${path} for write - not zeroing (it is a member of the running array ${running.devPath})\n`);
      rc = 1;
      continue;
    }
    const dev = await openDevice(path, { exclusive: true });
    try {
      const did = await zeroSuperblock(dev);
      if (!did) {
        // mdadm Kill.c: said unless --quiet (even with --force); mdadm.c masks that result
        // out of the exit status, so a device without a superblock is not a failure (exit 0)
        if (!a.quiet) io.err(`tsmd: Unrecognised md component device - ${shown(a, path)}\n`);
      } else if (a.verbose) io.err(`tsmd: zeroed superblock on ${shown(a, path)}\n`);
    } finally {
      await dev.close();
    }
  }
  return rc;
}

/** mdadm --detail's view of an array assembled in this process. */
export function detailOf(arr: MdArray, devName: string, homehost?: string): DetailInput {
  const members: DetailMember[] = [];
  const sorted = [...arr.members].sort(
    (x, y) => (x.slot ?? 1e9) - (y.slot ?? 1e9) || x.devNumber - y.devNumber,
  );
  for (const m of sorted) {
    const wm = m.loaded.sb.devFlags & 1 ? ['writemostly'] : [];
    let state: string[];
    if (m.faulty) state = ['faulty'];
    else if (m.slot === null) state = ['spare'];
    else if (m.recoveryOffset !== null) state = ['spare', 'rebuilding'];
    else state = ['active', 'sync'];
    // through the wrappers (fault injection, md-cluster's fence) to the device itself
    let inner: BlockDevice = m.dev;
    while (inner instanceof FaultyBlockDevice || inner instanceof FenceableDevice) inner = inner.inner;
    const mm = inner instanceof FileBlockDevice ? inner.majorMinor : { major: 0, minor: 0 };
    members.push({
      number: m.devNumber,
      major: mm.major,
      minor: mm.minor,
      raidDevice: m.faulty ? null : m.slot,
      state: [...state, ...wm],
      path: m.dev.name,
    });
  }
  // the kernel lists devices by number; the formatter adds the 'removed' rows for empty slots
  members.sort((x, y) => (x.number ?? 1e9) - (y.number ?? 1e9));
  const first = arr.members.find((m) => m.slot !== null) ?? arr.members[0]!;
  const bm = first.bitmaps[0]?.sup ?? null;
  const base = detailFieldsFromSuperblock(
    { ...first.loaded.sb, events: arr.sb.events, devRoles: arr.sb.devRoles, utime: arr.sb.utime },
    bm,
  );
  return {
    devName,
    ...base,
    clean: arr.sb.resyncOffset === MAX_SECTOR,
    arraySizeBytes: arr.sizeBytes,
    members,
    homehost,
    sync: arr.reshapeActive ? { action: 'reshape', percent: reshapePercent(arr) } : syncDetail(arr),
  };
}

/** The running sync as --detail shows it ("Rebuild Status : 42% complete"). */
function syncDetail(arr: MdArray): DetailInput['sync'] {
  const cur = arr.sync.current;
  if (cur) {
    // mdadm shows repair as a check
    const action = cur.kind === 'repair' ? 'check' : cur.kind;
    return { action, percent: Math.floor((cur.doneSectors * 100) / Math.max(1, cur.totalSectors)) };
  }
  if (arr.resyncPending || arr.syncPendingCluster) return { action: 'resync', percent: 'pending' };
  // md-cluster: another node syncs (mdadm --detail "resyncing (REMOTE)")
  if (arr.remoteSync) return { action: arr.remoteSync === 'recover' ? 'recovery' : arr.remoteSync, percent: 'remote' };
  return null;
}

/** Reshape progress as /proc/mdstat shows it: per-member position over the component size. */
function reshapePercent(arr: MdArray): number {
  const sb = arr.sb;
  const parity = sb.newLevel === 6 ? 2 : sb.newLevel === 4 || sb.newLevel === 5 ? 1 : 0;
  const dataDisks = sb.newLevel === 1 ? 1 : sb.raidDisks - parity;
  const at = Number(sb.reshapePosition) / Math.max(1, dataDisks);
  // a backwards reshape starts at the end: what is done is above reshape_position
  const perMember = isBackwards(sb) ? Math.max(0, Number(sb.size) - at) : at;
  return Math.floor((perMember * 100) / Math.max(1, Number(sb.size)));
}

const MD_NAME = /^(?:\/dev\/)?md(?:\d+|\/.+)$|^md_d\d+$/;

/** Make member paths absolute (the daemon runs commands for clients in other directories). */
function resolvePaths(a: ParsedArgs, cwd: string): void {
  const fix = (d: string) => {
    if (d === 'missing' || d.startsWith('/')) return d;
    const abs = pathResolve(cwd, d);
    if (!a.given.has(abs)) a.given.set(abs, d);
    return abs;
  };
  const membersAreMd = a.mode === 'misc' && (a.misc === 'detail' || a.misc === 'stop' || a.misc === 'readonly' || a.misc === 'readwrite' || a.misc === 'run' || a.misc === 'wait' || a.misc === 'action' || a.misc === 'speed-limit');
  if (!membersAreMd) a.devices = a.devices.map((d) => (a.misc === 'query' && MD_NAME.test(d) ? d : fix(d)));
  for (const op of a.manageOps) op.devices = op.devices.map(fix);
  // -W/--write-mostly marks devices by the name given: keep the marks on the resolved names
  // (without this, `--create ... -W d0 d1` from the devices' directory created no write-mostly member)
  if (!membersAreMd) a.writeMostly = new Map([...a.writeMostly].map(([d, v]) => [fix(d), v]));
  const conf = a.opts.get('config');
  if (typeof conf === 'string') a.opts.set('config', fix(conf));
  const backup = a.opts.get('backup-file');
  if (typeof backup === 'string') a.opts.set('backup-file', fix(backup));
}

/**
 * The checks mdadm makes before it monitors anything (exit 1 each, and no arrays are needed to
 * reach them): mdadm.c's MONITOR case wants --scan or a device; Monitor.c refuses --scan with
 * nowhere to send events (no --mail, --program/--alert or --syslog), also with --oneshot or
 * --test.
 */
export function checkMonitor(a: ParsedArgs, conf?: MdadmConf): void {
  if (a.devices.length === 0 && a.mdDevice === null && !flag(a, 'scan'))
    throw new TsmdError('EINVAL', 'Cannot monitor: need --scan or at least one device');
  const somewhere = flag(a, 'mail') || flag(a, 'program') || flag(a, 'alert') || flag(a, 'syslog') || !!conf?.mailAddr || !!conf?.program;
  if (flag(a, 'scan') && !somewhere) throw new TsmdError('EINVAL', 'No mail address or alert command - not monitoring.');
}

/** mdadm.conf for --monitor (MAILADDR, MAILFROM, PROGRAM, MONITORDELAY, ARRAY spares=): none when unreadable. */
export function monitorConf(a: ParsedArgs, env: NodeJS.ProcessEnv): MdadmConf | undefined {
  try {
    return readConfOrDefault(a, env);
  } catch {
    return undefined;
  }
}

/**
 * The exit status of a command that ended with `e`, as mdadm's: 2 for bad usage (UsageError,
 * mdadm's usage() exit), the code's row of ERROR_CODES for a TsmdError (1: mdadm's failure
 * exit); null for anything else, which is a bug and is rethrown rather than passed off as a
 * failure.
 */
export function exitCodeOf(e: unknown): number | null {
  if (e instanceof UsageError) return 2;
  if (isTsmdError(e)) return ERROR_CODES[e.code].exit;
  return null;
}

export function defaultCtx(): Ctx {
  return { registry: new ArrayRegistry(), daemon: false, detailOf };
}

export async function main(argv: string[], io: Io, ctx: Ctx = defaultCtx()): Promise<number> {
  let a: ParsedArgs;
  try {
    a = parseArgs(argv);
  } catch (e) {
    const code = exitCodeOf(e);
    if (code === null) throw e;
    io.err(`tsmd: ${(e as Error).message}\n`);
    return code;
  }
  resolvePaths(a, ctx.cwd ?? process.cwd());
  try {
    // mdadm: --help prints the help of the mode given before it (ReadMe.c Help_MODE), or the
    // general text; --help-options the shared options; no arguments at all is a usage error
    if (a.helpOptions) {
      io.out(optionsHelpText());
      return 0;
    }
    if (a.help || argv.length === 0) {
      io.out(helpText(argv.length === 0 ? null : a.mode));
      return argv.length === 0 ? 2 : 0;
    }
    if (a.version) {
      io.err(`tsmd - v${VERSION} - mdadm 4.2 compatible command line\n`);
      return 0;
    }
    switch (a.mode) {
      case 'create':
        return await cmdCreate(a, io, ctx);
      case 'assemble':
        return await cmdAssembleLive(a, io, ctx);
      case 'manage':
        return await cmdManageLive(a, io, ctx);
      case 'grow':
        return await cmdGrowLive(a, io, ctx);
      case 'misc':
        switch (a.misc) {
          case 'examine':
            return await cmdExamine(a, io);
          case 'examine-bitmap':
            return await cmdExamineBitmap(a, io);
          case 'examine-badblocks':
            return await cmdExamineBadblocks(a, io);
          case 'zero-superblock':
            return await cmdZero(a, io, ctx);
          case 'status':
            if (!ctx.mdstat) throw new TsmdError('ENODEV', 'no node daemon is reachable: the mdstat file is written by "tsmd daemon"');
            io.out(ctx.mdstat());
            return 0;
          default:
            return await cmdMiscLive(a, io, ctx);
        }
      case 'monitor':
        checkMonitor(a, monitorConf(a, io.env));
        throw new TsmdError('ENODEV', 'no node daemon is reachable: --monitor watches the arrays of "tsmd daemon"');
      case null:
        throw new UsageError(
          'no mode given: use --create, --assemble, --examine, ... (see tsmd --help)',
        );
      default:
        io.err(
          `tsmd: --${a.mode} mode needs the node daemon (tsmd daemon), which this build does not have yet\n`,
        );
        return 1;
    }
  } catch (e) {
    const code = exitCodeOf(e);
    if (code === null) throw e;
    io.err(`tsmd: ${(e as Error).message}\n`);
    return code;
  }
}
