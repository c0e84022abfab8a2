/**
 * tsmd as a library: create, assemble, read and write md-compatible arrays.
 *
 *   import { openDevice, createArray, MdArray, SystemClock } from 'tsmd';
 *   const devs = await Promise.all(paths.map((p) => openDevice(p)));
 *   const arr = await MdArray.assemble(devs, { clock: new SystemClock() });
 *   await arr.write(buf, 0);        // byte offset, 512-byte aligned
 *   await arr.flush();              // durable on every member
 *   await arr.close();              // clean shutdown recorded in the superblocks
 *
 * See README.md ("Library") for the full walk-through.
 */
export { type Clock, ManualClock, SystemClock } from './env/clock.js';
export { type Random, SeededRandom, SystemRandom } from './env/random.js';
export { assert, AssertionError, ERROR_CODES, type ErrorCode, type ErrorCodeInfo, isErrorCode, isTsmdError, TsmdError } from './errors.js';
export * as bitmapFormat from './format/bitmap.js';
export * as superblockFormat from './format/superblock.js';
export {
  type BlockDevice,
  type FaultRule,
  FaultyBlockDevice,
  FileBlockDevice,
  MemoryBlockDevice,
  openDevice,
  SECTOR_BYTES,
} from './io/index.js';
export { type AssembleOptions, type AssemblyReport, MdArray, type Member } from './md/array.js';
export { createArray, detectUse, zeroSuperblock } from './md/create.js';
export { type CreateOptions, type CreatePlan, planCreate } from './md/create-plan.js';
export { loadBitmaps, loadSuperblock } from './md/sb-io.js';
export { findLevel, type LevelDescriptor, levelByName, levelByNumber, registeredLevels } from './raid/levels.js';
export * as geometry from './raid/geometry/index.js';
export * as parity from './raid/parity/index.js';
