export { type BlockDevice, type DirectFd, SECTOR_BYTES } from './block-device.js';
export { type FaultRule, FaultyBlockDevice } from './fault-device.js';
export { type DirectMode, FileBlockDevice, type OpenOptions, openDevice } from './file-device.js';
export { MemoryBlockDevice } from './memory-device.js';
