/**
 * The daemon's boot role: at start, assemble the arrays mdadm.conf names, as
 * `mdadm --assemble --scan` does at boot (mdadm's Assemble.c driven by the ARRAY lines, run by
 * the initramfs or mdadm-last-resort), so arrays come back after a daemon restart.
 *
 * Safety, since the machine may hold other arrays' members (other tests' loop devices, the
 * host's disks): only ARRAY lines are assembled, never "whatever array is found"; each line's
 * candidates are its devices= or the DEVICE globs; candidates are read (not opened exclusively,
 * never written) to keep only those whose superblock carries the line's UUID / name, and only
 * those are handed to the ordinary --assemble (without --run: an array missing members stays
 * down, as mdadm leaves it to --run). Each array gets one log line: assembled, or not and why.
 */
import type { Logger } from 'pino';
import { parseUuid, uuidText } from '../format/superblock.js';
import { openDevice } from '../io/file-device.js';
import { matchesSearch, type SearchOptions } from '../md/assemble.js';
import { loadSuperblock } from '../md/sb-io.js';
import { candidateDevices, expandGlob, loadMdadmConf, mdadmConfPath, type MdadmConf } from '../mdadm/live.js';

export interface BootAssembleResult {
  dev: string;
  assembled: boolean;
  reason?: string;
  members?: string[];
}

/** Is this candidate a member of the searched array? Read-only, shared open; errors = no. */
async function isMember(path: string, search: SearchOptions): Promise<boolean> {
  let dev;
  try {
    dev = await openDevice(path, { readOnly: true });
  } catch {
    return false;
  }
  try {
    const l = await loadSuperblock(dev);
    return !!l && matchesSearch(l.sb, search);
  } catch {
    return false;
  } finally {
    await dev.close().catch(() => {});
  }
}

/**
 * Assemble every ARRAY line of the config (explicit path, else TSMD_CONF, /etc/mdadm/mdadm.conf,
 * /etc/mdadm.conf). `assemble` runs one mdadm argv in the daemon (its command queue).
 */
export async function bootAssemble(
  log: Logger,
  configPath: string | undefined,
  env: NodeJS.ProcessEnv,
  assemble: (argv: string[]) => Promise<{ code: number; stderr: string }>,
): Promise<BootAssembleResult[]> {
  const path = mdadmConfPath(configPath, env);
  if (!path) {
    log.info('boot assembly: no mdadm.conf (TSMD_CONF, /etc/mdadm/mdadm.conf, /etc/mdadm.conf); nothing to assemble');
    return [];
  }
  let conf: MdadmConf;
  try {
    conf = loadMdadmConf(path);
  } catch (e) {
    // a broken config must not keep the daemon (and the arrays started by hand) down
    log.error({ config: path, err: e }, `boot assembly: cannot use ${path}: ${(e as Error).message}`);
    return [];
  }
  if (conf.arrays.length === 0) log.info({ config: path }, `boot assembly: no ARRAY lines in ${path}`);
  let pool: string[] | null = null;
  const results: BootAssembleResult[] = [];
  for (const a of conf.arrays) {
    const done = (r: BootAssembleResult) => {
      results.push(r);
      const fields = { array: a.dev, config: path, assembled: r.assembled, members: r.members, reason: r.reason };
      if (r.assembled) log.info(fields, `boot assembly: ${a.dev} assembled from ${r.members!.length} device(s)${r.reason ? ` (${r.reason})` : ''}`);
      else log.warn(fields, `boot assembly: ${a.dev} not assembled: ${r.reason}`);
    };
    if (!a.uuid && !a.name) {
      done({ dev: a.dev, assembled: false, reason: 'the ARRAY line has neither UUID= nor name=' });
      continue;
    }
    let search: SearchOptions;
    try {
      search = { uuid: a.uuid ? parseUuid(a.uuid) : undefined, name: a.name };
    } catch (e) {
      done({ dev: a.dev, assembled: false, reason: (e as Error).message });
      continue;
    }
    const candidates = a.devices ? a.devices.flatMap(expandGlob) : (pool ??= candidateDevices(conf));
    const members: string[] = [];
    for (const c of candidates) if (await isMember(c, search)) members.push(c);
    if (members.length === 0) {
      done({ dev: a.dev, assembled: false, reason: `no member found among ${candidates.length} candidate device(s)` });
      continue;
    }
    const argv = ['--assemble', a.dev, ...(search.uuid ? [`--uuid=${uuidText(search.uuid)}`] : [`--name=${a.name!}`]), ...members];
    const rep = await assemble(argv);
    if (rep.code === 0) {
      const note = rep.stderr.split('\n').find((l) => /has been started/.test(l));
      done({ dev: a.dev, assembled: true, members, reason: note?.replace(/^tsmd: /, '') });
    } else {
      const lines = rep.stderr.trim().split('\n').filter(Boolean);
      done({ dev: a.dev, assembled: false, members, reason: (lines[lines.length - 1] ?? `exit ${rep.code}`).replace(/^tsmd: /, '') });
    }
  }
  return results;
}
