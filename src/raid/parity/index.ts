/**
 * RAID parity kernels: XOR (P), the RAID-6 Q syndrome over GF(2^8) (g = 2, polynomial 0x11d,
 * slot k weighted g^k as in Linux md), and recovery of one or two lost blocks. The heavy lifting
 * is WebAssembly SIMD generated at run time; buffers allocated from the parity arena are
 * processed in place, any other Uint8Array is staged through the arena's scratch area.
 */

export {
  allocBuffer,
  configureParityArena,
  freeBuffer,
  type ParityArena,
  type ParityArenaOptions,
  parityArena,
  WasmParityArena,
} from './arena.js';
export { gfInv, gfLog, gfMul, gfMulTable, gfNibbleTables, gfPow2 } from './gf.js';
export {
  genP,
  genPQ,
  gfMulBlock,
  gfMulXorBlock,
  ParityKernels,
  parityKernels,
  RAID6_MAX_SLOTS,
  recoverOneDataFromP,
  recoverOneDataFromQ,
  recoverTwoData,
  xorBlocks,
  xorInto,
} from './ops.js';
