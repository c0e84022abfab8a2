/** NBD server of tsmd (fixed newstyle) over any BlockTarget. */
export { NbdServer, type ListenAddress, type NbdServerOptions } from './server.js';
export type { CommandName, LogFn, NbdServerStats } from './connection.js';
export {
  advertisedBlockSize,
  type BlockExtent,
  type BlockTarget,
  DEFAULT_BLOCK_SIZE,
  type ExportRegistry,
  MapExportRegistry,
  type NbdExport,
} from './target.js';
export { nbdErrnoOf } from './errors.js';
