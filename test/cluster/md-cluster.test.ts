/**
 * md-cluster in one process: several MdArray "nodes" over the same memory disks (each its own
 * device handles), joined through the in-memory DLM. The protocol's visible outcomes: one
 * resync at a time, writes of one node read back on the others, METADATA_UPDATED applying a
 * member failure everywhere, a dead node's dirty bits taken over by exactly one survivor.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { MdCluster } from '../../src/cluster/md-cluster/md-cluster.js';
import { MemoryDlmCluster } from '../../src/cluster/dlm/memory.js';
import { SystemClock } from '../../src/env/clock.js';
import { MemoryBlockDevice } from '../../src/io/memory-device.js';
import { MdArray } from '../../src/md/array.js';
import type { ClusterSetup } from '../../src/md/cluster-ops.js';
import { createArray } from '../../src/md/create.js';
import { loadBitmaps, loadSuperblock } from '../../src/md/sb-io.js';

const clock = new SystemClock();

async function clusteredDisks(n: number, mib: number, opts: { level?: 1 | 10; assumeClean?: boolean; bitmapChunkKiB?: number } = {}): Promise<MemoryBlockDevice[]> {
  const devs = Array.from({ length: n }, (_, i) => new MemoryBlockDevice(`shared${i}`, mib * 1024 * 1024));
  await createArray(
    devs,
    {
      level: opts.level ?? 1,
      raidDisks: n,
      metadata: '1.2',
      layout: opts.level === 10 ? 0x102 : undefined,
      chunkKiB: opts.level === 10 ? 64 : undefined,
      setName: 'c:0',
      uuid: randomBytes(16),
      deviceUuids: devs.map(() => randomBytes(16)),
      bitmap: 'clustered',
      nodes: 4,
      clusterName: 'tc',
      bitmapChunkBytes: (opts.bitmapChunkKiB ?? 64) * 1024,
      assumeClean: opts.assumeClean,
      nowSeconds: 1_700_000_000,
      members: devs.map((d) => ({ sizeSectors: Math.floor(d.sizeBytes / 512) })),
    },
    { confirmOverwrite: async () => false, initialSync: false, clock },
  );
  return devs;
}

function setup(dlm: MemoryDlmCluster, node: string, clusterName = 'tc'): ClusterSetup & { last: MdCluster | null } {
  const s: ClusterSetup & { last: MdCluster | null } = {
    clusterName,
    last: null,
    create: (info, host) => (s.last = new MdCluster({ dlm: dlm.node(node), clock, info, host, timeoutMs: 5000 })),
  };
  return s;
}

async function assembleNode(devs: MemoryBlockDevice[], dlm: MemoryDlmCluster, node: string, logs: string[] = []): Promise<MdArray> {
  const a = await MdArray.assemble(
    devs.map((d) => d.reopen()),
    { run: true, clock, cluster: setup(dlm, node), log: (m) => logs.push(`${node}: ${m}`), syncLimits: { minKiBs: 200_000, maxKiBs: 2_000_000 } },
  );
  return a;
}

async function until(what: string, fn: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('md-cluster: three nodes assemble, one resyncs at a time, writes cross nodes', async () => {
  const devs = await clusteredDisks(2, 48);
  const dlm = new MemoryDlmCluster({ clock });
  const logs: string[] = [];
  const nodes = [await assembleNode(devs, dlm, 'n1', logs), await assembleNode(devs, dlm, 'n2', logs), await assembleNode(devs, dlm, 'n3', logs)];
  try {
    assert.deepEqual(nodes.map((n) => n.cluster!.slotNumber()), [0, 1, 2]);
    // count concurrent syncs: never more than one node at a time
    let running = 0;
    let maxRunning = 0;
    for (const n of nodes) {
      n.sync.onEvent = (ev) => {
        if (ev.type === 'started') maxRunning = Math.max(maxRunning, ++running);
        else running--;
      };
      n.startBackground();
    }
    const data = randomBytes(1 << 20);
    await nodes[1]!.write(data, 5 << 20);
    await nodes[1]!.flush();
    await until('all nodes idle and in sync', () => nodes.every((n) => !n.sync.busy && n.resyncCp === 2n ** 64n - 1n));
    if (process.env.TSMD_TEST_LOG) console.log(logs.join("\n"));
    assert.equal(maxRunning, 1, "one resync in the cluster at a time");
    for (const n of nodes) {
      const got = new Uint8Array(data.length);
      await n.read(got, 5 << 20);
      assert.deepEqual(Buffer.from(got), data);
    }
  } finally {
    for (const n of nodes) await n.close();
  }
  // every node's slot is on disk as the real mdadm lays it out (4 slots, our three used)
  const d0 = devs[0]!.reopen();
  const l = (await loadSuperblock(d0))!;
  const bms = await loadBitmaps(d0, l);
  assert.equal(bms.length, 4);
  assert.ok(bms.every((b) => b.sup.version === 5));
});

test('md-cluster: refusals write nothing (no cluster, wrong cluster name)', async () => {
  const devs = await clusteredDisks(2, 16);
  const image = async (d: MemoryBlockDevice): Promise<Buffer> => {
    const b = new Uint8Array(d.sizeBytes);
    await d.reopen().read(b, 0);
    return Buffer.from(b);
  };
  const before = await Promise.all(devs.map(image));
  await assert.rejects(MdArray.assemble(devs.map((d) => d.reopen()), { run: true, clock }), /clustered.*no cluster configured/);
  const dlm = new MemoryDlmCluster({ clock });
  await assert.rejects(MdArray.assemble(devs.map((d) => d.reopen()), { run: true, clock, cluster: setup(dlm, 'n1', 'other') }), /belongs to cluster "tc"/);
  for (let i = 0; i < devs.length; i++) assert.ok((await image(devs[i]!)).equals(before[i]!), 'nothing written');
});
