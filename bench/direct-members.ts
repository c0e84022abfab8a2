/**
 * Bench-only preload (`NODE_OPTIONS=--import=.../direct-members.js` in a daemon's environment):
 * while the file named by TSMD_BENCH_DIRECT_FLAG exists, every member the daemon opens is opened
 * O_DIRECT ('try': buffered where refused), as md-cluster reopens the members of a clustered
 * array. bench/cluster.ts uses it to run the standalone baseline under the same I/O policy as
 * the clustered array, so that the ratio measures md-cluster and not the page cache. The flag is
 * read at every open, so one daemon serves both the direct and the buffered (deployed) baseline.
 */
import { existsSync } from 'node:fs';
import { FileBlockDevice, type OpenOptions } from '../src/io/file-device.js';

const flag = process.env.TSMD_BENCH_DIRECT_FLAG;
if (flag) {
  const open = FileBlockDevice.open.bind(FileBlockDevice);
  FileBlockDevice.open = (path: string, opts: OpenOptions = {}): Promise<FileBlockDevice> =>
    open(path, !opts.readOnly && !opts.direct && existsSync(flag) ? { ...opts, direct: 'try' } : opts);
}
