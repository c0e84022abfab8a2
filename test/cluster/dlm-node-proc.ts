/**
 * A DLM member in its own process, for the kill -9 test (dlm-etcd.test.ts): joins, takes EX with
 * VALBLK on a resource, prints "HELD <slot>", then waits to be killed. Run: node dlm-node-proc.js --dlm-node <endpoint> <prefix> <lockspace> <resource> <ttlSec>
 * (without --dlm-node it does nothing, so a test runner that loads it is unaffected).
 */
import { EtcdDlm, Flag, Mode } from '../../src/cluster/dlm/index.js';
import { SystemClock } from '../../src/env/clock.js';

async function main(args: string[]): Promise<void> {
  const [endpoint, prefix, name, resource, ttl] = args;
  const dlm = new EtcdDlm({ clock: new SystemClock(), nodeId: `victim-${process.pid}`, endpoints: [endpoint!], prefix, leaseTtlSec: Number(ttl) });
  const ls = await dlm.join({ name: name!, lvbLength: 8 });
  const lk = await ls.lock(resource!, Mode.EX, { flags: Flag.VALBLK });
  lk.lvb!.write('victim');
  process.stdout.write(`HELD ${ls.slot}\n`);
  setInterval(() => undefined, 1000); // stay alive until killed
}

const i = process.argv.indexOf('--dlm-node');
if (i >= 0) {
  main(process.argv.slice(i + 1)).catch((e: unknown) => {
    process.stderr.write(`dlm-node-proc: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
}
