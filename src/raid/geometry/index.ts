/**
 * Pure address mapping for every md level (no I/O): RAID4/5/6, RAID10, RAID0, linear, and
 * mdadm's layout names. All sector numbers are 512-byte sectors; device sectors are relative
 * to the member's data_offset. Bad arguments throw TsmdError('EINVAL').
 */
export * from './linear.js';
export * from './names.js';
export * from './raid0.js';
export * from './raid10.js';
export * from './raid456.js';
