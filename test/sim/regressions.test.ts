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
import type { SyncLimits } from '../../src/md/sync.js';

const clock = new SystemClock();

async function clusteredDisks(n: number, mib: number, seed: number, assumeClean = true): Promise<{ devs: MemoryBlockDevice[]; uuid: Uint8Array }> {
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
      assumeClean,
      nowSeconds: 1_700_000_000,
      members: devs.map((d) => ({ sizeSectors: Math.floor(d.sizeBytes / 512) })),
    },
    { confirmOverwrite: async () => false, initialSync: false, clock },
  );
  return { devs, uuid };
}

function assemble(devs: MemoryBlockDevice[], dlm: MemoryDlmCluster, node: string, timeoutMs: number, syncLimits?: SyncLimits): Promise<MdArray> {
  const setup: ClusterSetup = {
    clusterName: 'tc',
    create: (info, host) => new MdCluster({ dlm: dlm.node(node), clock, info, host, timeoutMs }),
  };
  return MdArray.assemble(devs.map((d) => d.reopen()), { run: true, clock, cluster: setup, syncLimits });
}

async function until(what: string, fn: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
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

test('sim seed 235: dirty bits taken over from a dead node behind a running resync are resynced after it', async () => {
  // n1 runs the initial resync; n2 writes at the start of the array (its slot's bit set) and
  // dies with the mirrors different there (a torn write); n1 merges n2's bits while its resync
  // is already past them. The resync's end set the resync point to MaxSector: the merged
  // chunk was never synced and check found the mirrors different for ever.
  // (48 MiB: n1's resync window moves on from the first 32 MiB, so n2 may write at the start)
  const { devs } = await clusteredDisks(2, 48, 235, false);
  const dlm = new MemoryDlmCluster({ clock });
  const n1 = await assemble(devs, dlm, 'n1', 5000, { minKiBs: 10_000, maxKiBs: 20_000 });
  n1.startBackground();
  const n2 = await assemble(devs, dlm, 'n2', 5000);
  try {
    await until('n1 resyncing past its first window', () => n1.sync.current?.kind === 'resync' && n1.sync.current.doneSectors > 32 * 2048 + 2048);
    await n2.write(Buffer.alloc(64 << 10, 0x5a), 0);
    assert.ok((n2.bitmap?.dirtyCount ?? 0) > 0, "n2's slot has the bit of its write");
    // the torn write: the second mirror holds something else there
    const d1 = devs[1]!.reopen();
    const dataOffset = Number(n2.members.find((m) => m.dev.name === 'shared1')!.loaded.sb.dataOffset);
    await d1.write(Buffer.alloc(64 << 10, 0xa5), dataOffset * 512);
    let busyAtMerge: string | undefined;
    const merged = (): boolean => (n1.cluster as MdCluster).stats.slotsMerged === 1;
    dlm.crash('n2');
    await until('n1 took n2\'s bitmap over', () => {
      busyAtMerge ??= merged() ? `${n1.sync.current?.kind} at ${n1.sync.current?.doneSectors}` : undefined;
      return merged();
    });
    assert.match(busyAtMerge ?? '', /^resync at [1-9]/, 'the merge came while the resync ran past it');
    Object.assign(n1.sync.local, { minKiBs: 200_000, maxKiBs: 2_000_000 });
    await until('n1 in sync', () => !n1.sync.busy && n1.resyncCp === 2n ** 64n - 1n);
    await n1.setSyncAction('check');
    await until('check done', () => !n1.sync.busy && n1.sync.lastResult?.kind === 'check');
    assert.equal(n1.sync.mismatchCnt, 0, 'the merged chunk was resynced');
  } finally {
    await n1.close();
    await n2.close();
  }
});

test('sim seed 3314: a remote resync moving on does not clear dirty bits it never had', async () => {
  // After a power loss every node rejoined; n2 merged a free slot's dirty bits (a torn write
  // there), n3 resynced its own bits first and its RESYNCING windows moved over n2's chunk:
  // n2 counted that range as synced by n3 (md's bitmap_sync_with_cluster, spec §5 #12) and
  // dropped its NEEDED bit, but n3's bitmap-guided resync had skipped the chunk: nobody
  // resynced it. Here n1 resyncs chunks at 0 and at 40 MiB; n2 owes the chunk at 8 MiB.
  const { devs } = await clusteredDisks(2, 48, 3314);
  const dlm = new MemoryDlmCluster({ clock });
  const n1 = await assemble(devs, dlm, 'n1', 5000);
  const n2 = await assemble(devs, dlm, 'n2', 5000);
  try {
    const chunkSectors = n1.bitmap!.chunkSectors;
    const bitsFor = (sectors: number[]): Uint8Array => {
      const b = new Uint8Array(Math.ceil(n1.bitmap!.nbits / 8));
      for (const s of sectors) b[Math.floor(s / chunkSectors) >> 3]! |= 1 << (Math.floor(s / chunkSectors) & 7);
      return b;
    };
    const x = 8 * 2048; // n2's chunk, at 8 MiB
    await n2.bitmap!.mergeDirty(bitsFor([x]), n2.bitmap!.nbits);
    // the torn write in n2's chunk: the mirrors differ there
    const dataOffset = Number(n2.members.find((m) => m.dev.name === 'shared1')!.loaded.sb.dataOffset);
    await devs[1]!.reopen().write(Buffer.alloc(chunkSectors * 512, 0xa5), (dataOffset + x) * 512);
    // n1 resyncs its own chunks at 0 and 40 MiB: its window moves from [0, ..) to [40 MiB, ..)
    await n1.bitmap!.mergeDirty(bitsFor([0, 40 * 2048]), n1.bitmap!.nbits);
    n1.lowerResyncPoint(0);
    n1.startBackground();
    await until('n1 resynced', () => !n1.sync.busy && n1.resyncCp === 2n ** 64n - 1n && n1.sync.history.some((h) => h.kind === 'resync' && h.completed));
    n2.lowerResyncPoint(x);
    n2.startBackground();
    await until('n2 idle', () => !n2.sync.busy && n2.resyncCp === 2n ** 64n - 1n);
    await n2.setSyncAction('check');
    await until('check done', () => !n2.sync.busy && n2.sync.lastResult?.kind === 'check');
    assert.equal(n2.sync.mismatchCnt, 0, "n2's chunk was resynced");
  } finally {
    await n1.close();
    await n2.close();
  }
});

test('sim seed 6310: a node that read the superblocks before another node\'s updates never writes the event count backwards', async () => {
  // n1 read the superblocks (events 0) while n3 and n2 joined and wrote events 1 and 2; its
  // own join then wrote events 1 over them. A power loss later lost a superblock write on d1,
  // leaving it two events behind instead of one: every node kicked d1 as non-fresh and ran
  // degraded for ever. Here n2's reads of the superblocks are scripted to be stale.
  const { devs } = await clusteredDisks(2, 16, 6310);
  const dlm = new MemoryDlmCluster({ clock });
  const sbAt = 4096;
  const stale = await Promise.all(
    devs.map(async (d) => {
      const b = new Uint8Array(4096);
      await d.reopen().read(b, sbAt);
      return b;
    }),
  );
  const n1 = await assemble(devs, dlm, 'n1', 5000);
  await n1.update(() => {});
  const newest = n1.events;
  const staleOnce = (d: MemoryBlockDevice, img: Uint8Array): MemoryBlockDevice => {
    const h = d.reopen();
    let served = false;
    return Object.assign(Object.create(h) as MemoryBlockDevice, {
      read: (buf: Uint8Array, off: number): Promise<void> => {
        if (!served && off === sbAt && buf.length <= img.length) {
          served = true;
          buf.set(img.subarray(0, buf.length));
          return Promise.resolve();
        }
        return h.read(buf, off);
      },
    });
  };
  const setup: ClusterSetup = { clusterName: 'tc', create: (info, host) => new MdCluster({ dlm: dlm.node('n2'), clock, info, host, timeoutMs: 5000 }) };
  const n2 = await MdArray.assemble(devs.map((d, i) => staleOnce(d, stale[i]!)), { run: true, clock, cluster: setup });
  try {
    for (const d of devs) {
      const b = Buffer.alloc(4096);
      await d.reopen().read(b, sbAt);
      const events = b.readBigUInt64LE(200);
      assert.ok(events > newest, `${d.name}: events ${events} after n2's join, n1 had written ${newest}`);
    }
  } finally {
    await n2.close();
    await n1.close();
  }
});
