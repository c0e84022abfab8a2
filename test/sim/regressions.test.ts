/**
 * Regression scenarios for the core bugs the simulator (src/sim/) found, each scripted so that
 * it keeps testing its bug after code changes move the random runs elsewhere. The seed that
 * first showed each one is named; docs/sim.md lists them.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MdCluster } from '../../src/cluster/md-cluster/md-cluster.js';
import { MemoryDlmCluster } from '../../src/cluster/dlm/memory.js';
import { Mode } from '../../src/cluster/dlm/types.js';
import { SystemClock } from '../../src/env/clock.js';
import { SeededRandom } from '../../src/env/random.js';
import { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { lockspaceName, MdArray } from '../../src/md/array.js';
import type { ClusterSetup } from '../../src/md/cluster-ops.js';
import { createArray } from '../../src/md/create.js';

const clock = new SystemClock();

async function clusteredDisks(n: number, mib: number, seed: number): Promise<{ devs: MemoryBlockDevice[]; uuid: Uint8Array }> {
  const r = new SeededRandom(seed);
  const u = (): Uint8Array => {
    const b = new Uint8Array(16);
    r.fill(b);
    return b;
  };
  const devs = Array.from({ length: n }, (_, i) => new MemoryBlockDevice(`shared${i}`, mib << 20));
  const uuid = u();
  await createArray(
    devs,
    {
      level: 1,
      raidDisks: n,
      metadata: '1.2',
      setName: 'c:0',
      uuid,
      deviceUuids: devs.map(() => u()),
      bitmap: 'clustered',
      nodes: 4,
      clusterName: 'tc',
      bitmapChunkBytes: 64 * 1024,
      assumeClean: true,
      nowSeconds: 1_700_000_000,
      members: devs.map((d) => ({ sizeSectors: Math.floor(d.sizeBytes / 512) })),
    },
    { confirmOverwrite: async () => false, initialSync: false, clock },
  );
  return { devs, uuid };
}

function assemble(devs: MemoryBlockDevice[], dlm: MemoryDlmCluster, node: string, timeoutMs: number): Promise<MdArray> {
  const setup: ClusterSetup = {
    clusterName: 'tc',
    create: (info, host) => new MdCluster({ dlm: dlm.node(node), clock, info, host, timeoutMs }),
  };
  return MdArray.assemble(devs.map((d) => d.reopen()), { run: true, clock, cluster: setup });
}

test('sim seed 77: a joiner reads a live slot\'s window without queueing behind survivors waiting to take that slot over', async () => {
  // n1 leaves with BITMAP_NEEDS_SYNC; the survivors queue PW on its bitmap lock and wait; its
  // round waits for every ack, the joiner's included; the joiner acks only after gathering the
  // slots, and its read of n1's window (a CR request) queued behind those PW waiters: nobody
  // moved until the DLM timeout failed the round and the join. Here the PW waiter is scripted.
  const { devs, uuid } = await clusteredDisks(2, 16, 77);
  const dlm = new MemoryDlmCluster({ clock });
  const timeoutMs = 1500;
  const n1 = await assemble(devs, dlm, 'n1', timeoutMs);
  // a survivor's recovery waiting for n1's bitmap (slot 0) to be released
  const ls = await dlm.node('x').join({ name: lockspaceName(uuid), lvbLength: 64, timeoutMs: 60_000 });
  const waiting = ls.lock('bitmap0000', Mode.PW);
  waiting.catch(() => {});
  try {
    const t0 = Date.now();
    // (a timer of the test's own keeps the process alive: the clock's timers do not)
    let guard: NodeJS.Timeout | undefined;
    const n2 = await Promise.race([
      assemble(devs, dlm, 'n2', timeoutMs),
      new Promise<never>((_, reject) => (guard = setTimeout(() => reject(new Error('the join hung')), 4 * timeoutMs))),
    ]).finally(() => clearTimeout(guard));
    assert.ok(Date.now() - t0 < timeoutMs, 'the join did not wait for a DLM timeout');
    assert.equal(n2.cluster!.slotNumber(), 2, 'n2 got the slot after n1 and x');
    await n2.close();
  } finally {
    await n1.close();
    await ls.leave().catch(() => {});
  }
});

test('sim seed 15: a node assembling while another writes the superblocks does not kick a member it read before the update', async () => {
  // The superblocks are read one member at a time under no cluster lock; a running node's two
  // metadata updates between the reads of d0 and d1 made d0 look two events behind: kicked as
  // non-fresh, the new node ran degraded on d1 alone beside nodes writing both. Here the stale
  // read of d0 is scripted: its first superblock read returns the image from before the updates.
  const { devs } = await clusteredDisks(2, 16, 15);
  const dlm = new MemoryDlmCluster({ clock });
  const n1 = await assemble(devs, dlm, 'n1', 5000);
  const sbAt = 4096;
  const stale = new Uint8Array(4096);
  await devs[0]!.reopen().read(stale, sbAt);
  await n1.update(() => {});
  await n1.update(() => {});
  let served = false;
  const d0 = devs[0]!.reopen();
  const staleOnce = Object.assign(Object.create(d0) as MemoryBlockDevice, {
    read: (buf: Uint8Array, off: number): Promise<void> => {
      if (!served && off === sbAt && buf.length <= stale.length) {
        served = true;
        buf.set(stale.subarray(0, buf.length));
        return Promise.resolve();
      }
      return d0.read(buf, off);
    },
  });
  const logs: string[] = [];
  const setup: ClusterSetup = { clusterName: 'tc', create: (info, host) => new MdCluster({ dlm: dlm.node('n2'), clock, info, host, timeoutMs: 5000 }) };
  const n2 = await MdArray.assemble([staleOnce, devs[1]!.reopen()], { run: true, clock, cluster: setup, log: (m) => logs.push(m) });
  try {
    assert.ok(served, 'the stale superblock was read');
    assert.equal(n2.degraded, false, `n2 runs with both members (${logs.join('; ')})`);
    assert.deepEqual(n2.members.map((m) => m.dev.name).sort(), ['shared0', 'shared1']);
  } finally {
    await n2.close();
    await n1.close();
  }
});
