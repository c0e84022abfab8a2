/**
 * The md-cluster message (Linux: `struct cluster_msg` in md-cluster.c), carried whole in the
 * 64-byte LVB of the `message` lock (shared/spec/md-cluster-protocol.md §3.1). All fields are
 * little-endian (the 2015 endian fix); senders zero the buffer, so bytes 44..63 are 0.
 *
 * | offset | size | field     |
 * |--------|------|-----------|
 * | 0      | 4    | type      |
 * | 4      | 4    | slot      | the sender's 0-based md slot
 * | 8      | 8    | low       | sectors
 * | 16     | 8    | high      | sectors
 * | 24     | 16   | uuid      | a device UUID (NEWDISK)
 * | 40     | 4    | raid_slot | desc_nr (dev_number) of the device concerned
 * | 44     | 4    | padding   |
 */
import { TsmdError } from '../../errors.js';

/** md-cluster's LVB length (the lockspace's lvblen). */
export const LVB_BYTES = 64;
/** sizeof(struct cluster_msg) */
export const MESSAGE_BYTES = 48;

/** Message types (`enum msg_type`); new ones only ever appended, "for compatibility". */
export const MsgType = {
  METADATA_UPDATED: 0,
  RESYNCING: 1,
  NEWDISK: 2,
  REMOVE: 3,
  RE_ADD: 4,
  BITMAP_NEEDS_SYNC: 5,
  CHANGE_CAPACITY: 6,
  BITMAP_RESIZE: 7,
  RESYNCING_START: 8,
} as const;
export type MsgType = (typeof MsgType)[keyof typeof MsgType];

export const MSG_TYPE_NAMES: readonly string[] = [
  'METADATA_UPDATED',
  'RESYNCING',
  'NEWDISK',
  'REMOVE',
  'RE_ADD',
  'BITMAP_NEEDS_SYNC',
  'CHANGE_CAPACITY',
  'BITMAP_RESIZE',
  'RESYNCING_START',
];

export interface ClusterMsg {
  /** a MsgType value; unknown values survive decoding (the receiver refuses them) */
  type: number;
  /** the sender's 0-based md slot (the send routine fills it in) */
  slot: number;
  low: bigint;
  high: bigint;
  /** 16 bytes */
  uuid: Uint8Array;
  /** desc_nr of a device (-1 when not used... md sends 0 then; kept signed as in the kernel) */
  raidSlot: number;
}

const U64_MAX = (1n << 64n) - 1n;

export function msgTypeName(t: number): string {
  return MSG_TYPE_NAMES[t] ?? `type ${t}`;
}

/** A message with every field zero but the type and the given ones (md zero-initialises). */
export function makeMsg(type: MsgType, fields: Partial<Omit<ClusterMsg, 'type'>> = {}): ClusterMsg {
  return { type, slot: 0, low: 0n, high: 0n, uuid: new Uint8Array(16), raidSlot: 0, ...fields };
}

/** Encode into a fresh 64-byte LVB (bytes 48..63 zero). */
export function encodeMsg(m: ClusterMsg): Buffer {
  if (!Number.isInteger(m.type) || m.type < 0 || m.type > 0xffffffff) throw new TsmdError('EINVAL', `md-cluster message: bad type ${m.type}`);
  if (!Number.isInteger(m.slot) || m.slot < -0x80000000 || m.slot > 0x7fffffff) throw new TsmdError('EINVAL', `md-cluster message: bad slot ${m.slot}`);
  if (m.low < 0n || m.low > U64_MAX || m.high < 0n || m.high > U64_MAX) throw new TsmdError('EINVAL', 'md-cluster message: low/high out of u64 range');
  if (m.uuid.length !== 16) throw new TsmdError('EINVAL', 'md-cluster message: uuid must be 16 bytes');
  if (!Number.isInteger(m.raidSlot) || m.raidSlot < -0x80000000 || m.raidSlot > 0x7fffffff) throw new TsmdError('EINVAL', `md-cluster message: bad raid_slot ${m.raidSlot}`);
  const b = Buffer.alloc(LVB_BYTES);
  b.writeUInt32LE(m.type >>> 0, 0);
  b.writeInt32LE(m.slot, 4);
  b.writeBigUInt64LE(m.low, 8);
  b.writeBigUInt64LE(m.high, 16);
  b.set(m.uuid, 24);
  b.writeInt32LE(m.raidSlot, 40);
  return b;
}

/** Decode an LVB (at least 48 bytes). */
export function decodeMsg(lvb: Uint8Array): ClusterMsg {
  if (lvb.length < MESSAGE_BYTES) throw new TsmdError('EINVAL', `md-cluster message: LVB of ${lvb.length} bytes, need ${MESSAGE_BYTES}`);
  const b = Buffer.from(lvb.buffer, lvb.byteOffset, lvb.length);
  return {
    type: b.readUInt32LE(0),
    slot: b.readInt32LE(4),
    low: b.readBigUInt64LE(8),
    high: b.readBigUInt64LE(16),
    uuid: Uint8Array.from(b.subarray(24, 40)),
    raidSlot: b.readInt32LE(40),
  };
}
