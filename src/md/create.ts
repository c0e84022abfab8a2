/**
 * Creating an array on devices (mdadm --create) and removing md metadata (--zero-superblock).
 * Nothing is written to a device that looks used unless the caller says so (force/run), and
 * no device is written at all until every device has passed the checks.
 */
import { TsmdError } from '../errors.js';
import {
  deviceRole,
  encodeSuperblock,
  isActiveRole,
  SB_READ_BYTES,
  sbBytes,
  setNameText,
  uuidText,
} from '../format/superblock.js';
import type { BlockDevice } from '../io/block-device.js';
import type { Clock } from '../env/clock.js';
import { MdArray } from './array.js';
import { levelText } from './assemble.js';
import { type CreateOptions, type CreatePlan, planCreate } from './create-plan.js';
import { loadSuperblock } from './sb-io.js';

export interface UsedSignature {
  device: string;
  what: string;
}

function ascii(buf: Uint8Array, off: number, len: number): string {
  let s = '';
  for (let i = 0; i < len && off + i < buf.length; i++) s += String.fromCharCode(buf[off + i]!);
  return s;
}

/**
 * What is on a device already: an md superblock (any minor version), a partition table or a
 * common filesystem / volume signature. Returns a description, or null when it looks unused.
 */
export async function detectUse(dev: BlockDevice): Promise<string | null> {
  const l = await loadSuperblock(dev);
  if (l) {
    const s = l.sb;
    return `appears to be part of a raid array:\n       level=${levelText(s.level)} devices=${s.raidDisks} name=${setNameText(s)} uuid=${uuidText(s.setUuid)}`;
  }
  const headLen = Math.min(dev.sizeBytes, 70 * 1024);
  if (headLen < 1024) return null;
  const head = new Uint8Array(headLen - (headLen % 512));
  await dev.read(head, 0);
  if (head.length >= 1082 && head[1080] === 0x53 && head[1081] === 0xef)
    return 'appears to contain an ext2fs file system';
  if (ascii(head, 0, 4) === 'XFSB') return 'appears to contain an xfs file system';
  if (head.length >= 65608 && ascii(head, 65600, 8) === '_BHRfS_M')
    return 'appears to contain a btrfs file system';
  if (ascii(head, 512, 8) === 'LABELONE') return 'appears to be an LVM physical volume';
  if (head.length >= 4096 && ascii(head, 4086, 10) === 'SWAPSPACE2')
    return 'appears to contain swap space';
  if (ascii(head, 512, 8) === 'EFI PART') return 'appears to contain a GPT partition table';
  if (head[510] === 0x55 && head[511] === 0xaa) return 'appears to contain an MBR partition table';
  return null;
}

export interface CreateResult {
  plan: CreatePlan;
  /** messages for the user (what mdadm prints to stderr) */
  messages: string[];
  syncedSectors: number;
}

/**
 * Create an array. `devices` follows options.members (null where the member is "missing").
 * The devices are closed on return.
 */
export async function createArray(
  devices: Array<BlockDevice | null>,
  options: Omit<CreateOptions, 'members'> & { members?: CreateOptions['members'] },
  opts: {
    /** proceed over devices that look used (mdadm --run / --force / answered "y") */
    confirmOverwrite: (found: UsedSignature[]) => Promise<boolean>;
    /** run the initial resync/recovery now (the kernel does it in the background) */
    initialSync?: boolean;
    log?: (m: string) => void;
    /** time for that initial sync (injected, as everywhere in md/) */
    clock: Clock;
  },
): Promise<CreateResult> {
  const present = devices.filter((d): d is BlockDevice => d !== null);
  try {
    const members =
      options.members ??
      devices.map((d) => ({ sizeSectors: d ? Math.floor(d.sizeBytes / 512) : null }));
    const plan = planCreate({ ...options, members });
    const used: UsedSignature[] = [];
    for (const d of present) {
      if (d.readOnly) throw new TsmdError('EROFS', `${d.name} is read-only`);
      const what = await detectUse(d);
      if (what) used.push({ device: d.name, what });
    }
    if (used.length > 0 && !(await opts.confirmOverwrite(used))) {
      throw new TsmdError(
        'EEXIST',
        'create aborted: devices are in use (give --run to overwrite them)',
      );
    }
    // write bitmaps first, then superblocks (a crash in between leaves no valid array behind)
    for (const pm of plan.members) {
      const dev = devices[pm.index]!;
      if (pm.bitmapImage)
        await dev.write(pm.bitmapImage, (pm.sbStartSector + pm.sb.bitmapOffset) * 512);
    }
    for (const pm of plan.members) {
      const dev = devices[pm.index]!;
      const block = encodeSuperblock(pm.sb);
      // clear the whole 4 KiB superblock block, then the superblock itself
      const n = Math.ceil(sbBytes(pm.sb.maxDev) / 512) * 512;
      const out = new Uint8Array(Math.min(SB_READ_BYTES, dev.sizeBytes - pm.sbStartSector * 512));
      out.set(block.subarray(0, Math.min(n, out.length)));
      await dev.write(out, pm.sbStartSector * 512);
      await dev.flush();
    }
    const messages: string[] = [];
    let syncedSectors = 0;
    if (opts.initialSync !== false && (plan.needsResync || plan.recoverOntoLast)) {
      const arr = await MdArray.assemble(present, { run: true, log: opts.log, clock: opts.clock });
      try {
        const r = await arr.syncNow();
        syncedSectors = r.recovered + r.resynced;
      } finally {
        await arr.close();
      }
      return { plan, messages, syncedSectors };
    }
    return { plan, messages, syncedSectors };
  } finally {
    await Promise.all(present.map((d) => d.close().catch(() => {})));
  }
}

/**
 * Remove md superblocks from a device (mdadm --zero-superblock): every v1.x location that holds
 * one is overwritten with zeros. Returns false when there was nothing to remove.
 */
export async function zeroSuperblock(dev: BlockDevice): Promise<boolean> {
  let any = false;
  for (const minor of [0, 1, 2] as const) {
    const l = await loadSuperblock(dev, minor);
    if (!l) continue;
    any = true;
    const n = Math.max(512, Math.ceil(sbBytes(l.sb.maxDev) / 512) * 512);
    await dev.write(
      new Uint8Array(
        Math.min(SB_READ_BYTES, Math.max(n, 4096), dev.sizeBytes - l.sbStartSector * 512),
      ),
      l.sbStartSector * 512,
    );
  }
  if (any) await dev.flush();
  return any;
}

/** Short description of a member's role for messages. */
export function roleText(role: number): string {
  return isActiveRole(role) ? `active device ${role}` : role === 0xfffe ? 'faulty' : 'spare';
}
export { deviceRole };
