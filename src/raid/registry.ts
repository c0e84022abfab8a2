/**
 * The level registry: one descriptor per md personality, registered once by the module that
 * implements it (SPDK's raid_bdev_module + RAID_MODULE_REGISTER; md's register_md_personality).
 * A descriptor carries the level's constraints as data, so the core, mdadm's create checks and
 * the reports ask the registry instead of switching on level numbers.
 *
 * Lookups go through raid/levels.ts, which loads every level module first.
 */
import { assert, TsmdError } from '../errors.js';
import type { MemberIo, Personality } from './personality.js';

/** What a personality is built from: the member I/O and the geometry the superblock states. */
export interface PersonalityArgs {
  readonly io: MemberIo;
  readonly layout: number;
  readonly chunkSectors: number;
  readonly raidDisks: number;
  /** sb.size: the sectors each member contributes (the redundant levels) */
  readonly componentSectors: number;
  /** data sectors of the member in each slot (linear and raid0 use all of each member) */
  readonly memberSectors: readonly number[];
}

/** How a level keeps data when a member is gone: not at all, by copies, or by parity. */
export type Redundancy = 'none' | 'mirror' | 'parity';

export interface LevelDescriptor {
  /** md's level number (superblock `level`; linear is -1) */
  readonly level: number;
  /** md's personality name, as /proc/mdstat and mdadm print it */
  readonly name: string;
  /** the other spellings mdadm accepts for --level (maps.c `pers`) */
  readonly aliases: readonly string[];
  /** fewest raid devices mdadm creates the level with */
  readonly minDevices: number;
  readonly redundancy: Redundancy;
  /** is the chunk size part of the geometry (raid0/4/5/6/10; linear's is a rounding) */
  readonly usesChunk: boolean;
  /** members that may be missing at best with this geometry (0 for linear/raid0) */
  maxDegraded(raidDisks: number, layout: number): number;
  create(args: PersonalityArgs): Personality;
}

const byNumber = new Map<number, LevelDescriptor>();
const byName = new Map<string, LevelDescriptor>();

/** RAID_MODULE_REGISTER: called once per level, at the bottom of the module implementing it. */
export function registerLevel(d: LevelDescriptor): void {
  assert(!byNumber.has(d.level), `level ${d.level} registered twice`);
  assert(d.minDevices >= 1 && Number.isInteger(d.level), `level ${d.name}: descriptor is sane`);
  byNumber.set(d.level, d);
  for (const n of [d.name, String(d.level), ...d.aliases]) {
    assert(!byName.has(n), `level name ${n} registered twice`);
    byName.set(n, d);
  }
}

/** The descriptor of an md level number, or undefined when tsmd has no such personality. */
export function findLevel(level: number): LevelDescriptor | undefined {
  return byNumber.get(level);
}

/** The descriptor of an md level number; an unknown level is a clear ENOTSUP. */
export function levelByNumber(level: number): LevelDescriptor {
  const d = byNumber.get(level);
  if (!d) throw new TsmdError('ENOTSUP', `raid level ${level} is not supported (tsmd has ${registeredNames()})`);
  return d;
}

/**
 * The descriptor for a level as mdadm spells it (raid5, 5, stripe, mirror...; any case), or
 * undefined. Levels md has and tsmd does not (multipath, faulty, container) are not found.
 */
export function levelByName(text: string): LevelDescriptor | undefined {
  return byName.get(text.trim().toLowerCase());
}

/** Every registered level, ascending by number. */
export function registeredLevels(): LevelDescriptor[] {
  return [...byNumber.values()].sort((a, b) => a.level - b.level);
}

function registeredNames(): string {
  return registeredLevels()
    .map((d) => d.name)
    .join(', ');
}
