/**
 * The running arrays of a node (the role the kernel's md plays for mdadm): md names
 * (md0, md127 for /dev/md/NAME as mdadm allocates them), lookup by any of the names mdadm
 * accepts, and change notifications (mdstat, NBD exports, metrics follow them).
 */
import { TsmdError } from '../errors.js';
import { deviceIdentity } from './device-id.js';
import type { MdArray } from '../md/array.js';

export interface RunningArray {
  /** kernel-style name: md0, md127 */
  mdName: string;
  /** the name the user gave: /dev/md0, /dev/md/home, md0 */
  devPath: string;
  /** NBD export name */
  exportName: string;
  array: MdArray;
  startedAtMs: number;
}

/** Parse an md device name as mdadm accepts it: /dev/md0, md0, /dev/md/name, name (for --scan). */
export function parseMdName(text: string): { mdName?: string; name?: string } {
  let m = /^(?:\/dev\/)?md(\d+)$/.exec(text);
  if (m) return { mdName: `md${Number(m[1])}` };
  m = /^(?:\/dev\/)?md\/(\d+)$/.exec(text);
  if (m) return { mdName: `md${Number(m[1])}` };
  m = /^(?:\/dev\/)?md\/([^/]+)$/.exec(text);
  if (m) return { name: m[1]! };
  m = /^[A-Za-z0-9_.-]+$/.exec(text);
  if (m) return { name: text };
  throw new TsmdError('EINVAL', `${text} is not an md device name (use /dev/md0, md0 or /dev/md/NAME)`);
}

export class ArrayRegistry {
  private readonly byMd = new Map<string, RunningArray>();
  private readonly listeners: Array<() => void> = [];

  list(): RunningArray[] {
    return [...this.byMd.values()].sort((a, b) => Number(a.mdName.slice(2)) - Number(b.mdName.slice(2)));
  }

  onChange(fn: () => void): void {
    this.listeners.push(fn);
  }

  changed(): void {
    for (const fn of this.listeners) {
      try {
        fn();
      } catch {
        // listeners log their own failures
      }
    }
  }

  /** Find a running array by any accepted name. */
  find(text: string): RunningArray | undefined {
    let p: ReturnType<typeof parseMdName>;
    try {
      p = parseMdName(text);
    } catch {
      return undefined; // not an md name at all (e.g. a member path)
    }
    if (p.mdName) return this.byMd.get(p.mdName);
    for (const r of this.byMd.values()) if (r.exportName === p.name || r.devPath === text) return r;
    return undefined;
  }

  get(text: string): RunningArray {
    const r = this.find(text);
    if (!r) throw new TsmdError('ENODEV', `${text} is not an active md array`);
    return r;
  }

  /**
   * The array a member path belongs to, if any: by name, else by the node it names (another
   * spelling of a member's path is that member; the kernel holds members O_EXCL, so mdadm finds
   * them busy whatever the name).
   */
  byMember(path: string): RunningArray | undefined {
    for (const r of this.byMd.values()) if (r.array.members.some((m) => m.dev.name === path)) return r;
    const id = deviceIdentity(path);
    if (id === null) return undefined;
    for (const r of this.byMd.values()) if (r.array.members.some((m) => deviceIdentity(m.dev.name) === id)) return r;
    return undefined;
  }

  /** Reserve names for a new array: md<N> as given, or md127 downwards for /dev/md/NAME. */
  allocate(devPath: string): { mdName: string; exportName: string } {
    const p = parseMdName(devPath);
    if (p.mdName) {
      if (this.byMd.has(p.mdName)) throw new TsmdError('EEXIST', `${devPath} is already in use`);
      return { mdName: p.mdName, exportName: p.mdName };
    }
    for (const r of this.byMd.values()) {
      if (r.exportName === p.name) throw new TsmdError('EEXIST', `${devPath} is already in use (as ${r.mdName})`);
    }
    for (let n = 127; n >= 0; n--) {
      if (!this.byMd.has(`md${n}`)) return { mdName: `md${n}`, exportName: p.name! };
    }
    throw new TsmdError('ENOSPC', 'no free md device numbers');
  }

  add(r: RunningArray): void {
    if (this.byMd.has(r.mdName)) throw new TsmdError('EEXIST', `${r.mdName} is already in use`);
    this.byMd.set(r.mdName, r);
    this.changed();
  }

  remove(mdName: string): void {
    this.byMd.delete(mdName);
    this.changed();
  }
}
