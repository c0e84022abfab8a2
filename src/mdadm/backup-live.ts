/**
 * mdadm's backup file and array size on a running array (Grow.c, Assemble.c, mdadm.c):
 *  - --grow --array-size=N|max: md's array_size, runtime only (mdadm.c GROW: imposed first,
 *    never together with --raid-devices or --level);
 *  - --grow --backup-file=F (with --raid-devices / --chunk / --layout): the file is created
 *    (O_EXCL, as reshape_open_backup_file) for a reshape that keeps the data offset, and
 *    recorded as mdadm's MAP_DIR/backup_file-mdX link (make_backup) so that an assembly
 *    without --backup-file finds it (locate_backup); both go when the reshape is done (mdadm
 *    unlinks the file then), or at once when the reshape is refused or does not need it;
 *  - --assemble --backup-file=F (or the link) and --grow --continue [--backup-file=F].
 */
import { closeSync, existsSync, ftruncateSync, lstatSync, openSync, readlinkSync, symlinkSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { TsmdError } from '../errors.js';
import { openDevice } from '../io/file-device.js';
import type { BackupFileHandle, MdArray } from '../md/array.js';
import { BACKUP_DATA_OFFSET_BYTES, BACKUP_SB_BYTES, backupBlocks } from '../md/backup-file.js';
import { growCriticalSectors } from '../md/reshape.js';
import { UsageError } from './args.js';

/** where mdadm keeps its links (MAP_DIR /run/mdadm): the daemon's run directory */
function linkPath(mapDir: string | undefined, mdName: string): string | null {
  return mapDir ? join(mapDir, `backup_file-${mdName}`) : null;
}

function unlinkQuiet(p: string | null): void {
  if (!p) return;
  try {
    unlinkSync(p);
  } catch {
    // already gone
  }
}

/** The handle md/ writes through; `remove` unlinks the file and the link (mdadm at the end). */
async function handleFor(path: string, link: string | null): Promise<BackupFileHandle> {
  const dev = await openDevice(path);
  return {
    dev,
    remove: async () => {
      unlinkQuiet(path);
      unlinkQuiet(link);
    },
  };
}

/** mdadm --array-size's value: "max" or a size (KiB, or with a K/M/G/T suffix); sectors. */
export function parseArraySize(text: string): number | 'max' {
  if (text === 'max') return 'max';
  const m = /^(\d+)([KkMmGgTt]?)$/.exec(text.trim());
  const kib = m ? Number(m[1]) * { '': 1, K: 1, M: 1024, G: 1024 ** 2, T: 1024 ** 3 }[m[2]!.toUpperCase()]! : 0;
  if (!kib) throw new UsageError(`invalid array size: ${text}`);
  return kib * 2;
}

/** mdadm.c GROW: --array-size first, and never with --raid-devices or --level. */
export function growArraySize(arr: MdArray, text: string, other: { raidDisks: boolean; level: boolean }): void {
  const size = parseArraySize(text);
  if (other.raidDisks || other.level)
    throw new TsmdError('EINVAL', 'cannot change array size in same operation as changing raiddisks or level.\n    Change size first, then check that data is still intact.');
  arr.setArraySize(size);
}

/**
 * A new backup file for --grow (mdadm's reshape_open_backup_file: O_EXCL, (blocks + 8)
 * sectors of zeros, where blocks is compute_backup_blocks for the change asked for; tsmd
 * keeps mdadm's second superblock copy inside, 512 bytes more).
 */
export async function createBackupFile(
  arr: MdArray,
  md: string,
  path: string,
  req: { raidDisks?: number; chunkSectors?: number },
  mapDir?: string,
): Promise<BackupFileHandle> {
  const sb = arr.sb;
  const parity = sb.level === 6 ? 2 : 1;
  const [oldD, newD, newC] = [sb.raidDisks - parity, (req.raidDisks ?? sb.raidDisks) - parity, req.chunkSectors ?? sb.chunkSize];
  // a grow in place saves its whole critical section at once (reshape.ts growCriticalSectors)
  let blocks = Math.max(backupBlocks(sb.chunkSize, newC, oldD, newD), newD > oldD ? growCriticalSectors(oldD, newD, sb.chunkSize, newC) : 0);
  // Grow.c: the same number of data disks goes through the file section by section, so the
  // unit grows for throughput, towards 16 MiB while under 1/32 of a member
  if (newD === oldD) while (blocks * 32 < Number(sb.size) && blocks < 16 * 1024 * 2) blocks *= 2;
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (e) {
    throw new TsmdError('EEXIST', `${md}: cannot create backup file ${path}: ${(e as NodeJS.ErrnoException).code === 'EEXIST' ? 'File exists' : (e as Error).message}`);
  }
  try {
    ftruncateSync(fd, BACKUP_DATA_OFFSET_BYTES + blocks * 512 + BACKUP_SB_BYTES);
  } finally {
    closeSync(fd);
  }
  return handleFor(path, linkPath(mapDir, mdNameOf(md)));
}

/** md0 of /dev/md0, /dev/md/0 -> md0-like names for the link */
function mdNameOf(md: string): string {
  return md.replace(/^\/dev\//, '').replace(/\//g, '_');
}

/** After a --grow that uses its backup file: the link an assembly finds it by (make_backup). */
export function linkBackupFile(md: string, path: string, mapDir?: string): void {
  const link = linkPath(mapDir, mdNameOf(md));
  if (!link) return;
  unlinkQuiet(link);
  symlinkSync(path, link);
}

/**
 * The backup file for an assembly: --backup-file, else the link a --grow left (mdadm's
 * locate_backup); null when neither.
 */
export async function backupForAssembly(md: string, given: string | undefined, mapDir?: string): Promise<BackupFileHandle | null> {
  const link = linkPath(mapDir, mdNameOf(md));
  let path = given;
  if (!path && link) {
    try {
      if (lstatSync(link).isSymbolicLink()) path = readlinkSync(link);
    } catch {
      // no link
    }
  }
  if (!path) return null;
  if (!existsSync(path)) throw new TsmdError('ENOENT', `Can't open backup file ${path} : No such file or directory`);
  return handleFor(path, link);
}
