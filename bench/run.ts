/**
 * npm run bench: every benchmark, each printing ratios against a baseline measured in the
 * same run. Not part of the test suite. `--quick` for a short run.
 */
import { runArrayBench } from './array.js';
import { runArrayNbdBench } from './array-nbd.js';
import { runClusterBench } from './cluster.js';
import { runDirectBench } from './direct.js';
import { runDlmBench } from './dlm.js';
import { runNbdBench } from './nbd.js';
import { runParityBench } from './parity.js';
import { runReshapeBench } from './reshape.js';
import { runSyncBench } from './sync.js';

const quick = process.argv.includes('--quick');
console.log(`tsmd benchmarks (node ${process.version}, ${quick ? 'quick' : 'full'} run)`);
await runParityBench({ quick });
await runArrayBench({ quick });
await runNbdBench({ quick });
await runArrayNbdBench({ quick });
await runSyncBench({ quick });
await runReshapeBench({ quick });
await runDirectBench({ quick });
await runDlmBench();
// last: the md-cluster parts run hosts of test/helpers/hosts.ts (root, namespaces, etcd)
await runClusterBench({ quick });
