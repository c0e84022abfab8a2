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
import { dump } from '../helpers/reshape-model.js';

const clock = new SystemClock();

interface DiskOpts {
  level?: 1 | 10;
  assumeClean?: boolean;
  bitmapChunkKiB?: number;
  /** bitmap slots (default 4) */
  nodes?: number;
  /** active members (default: all n; the rest are spares) */
  raidDisks?: number;
}

async function clusteredDisks(n: number, mib: number, opts: DiskOpts = {}): Promise<MemoryBlockDevice[]> {
  const devs = Array.from({ length: n }, (_, i) => new MemoryBlockDevice(`shared${i}`, mib * 1024 * 1024));
  await createArray(
    devs,
    {
      level: opts.level ?? 1,
      raidDisks: opts.raidDisks ?? n,
      metadata: '1.2',
      layout: opts.level === 10 ? 0x102 : undefined,
      chunkKiB: opts.level === 10 ? 64 : undefined,
      setName: 'c:0',
      uuid: randomBytes(16),
      deviceUuids: devs.map(() => randomBytes(16)),
      bitmap: 'clustered',
      nodes: opts.nodes ?? 4,
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

function setup(dlm: MemoryDlmCluster, node: string, clusterName = 'tc', receiverBarrier?: 'PR' | 'EX'): ClusterSetup & { last: MdCluster | null } {
  const s: ClusterSetup & { last: MdCluster | null } = {
    clusterName,
    last: null,
    create: (info, host) => (s.last = new MdCluster({ dlm: dlm.node(node), clock, info, host, timeoutMs: 5000, receiverBarrier })),
  };
  return s;
}

async function assembleNode(devs: MemoryBlockDevice[], dlm: MemoryDlmCluster, node: string, logs: string[] = [], maxKiBs = 2_000_000): Promise<MdArray> {
  const a = await MdArray.assemble(
    devs.map((d) => d.reopen()),
    { run: true, clock, cluster: setup(dlm, node), log: (m) => logs.push(`${node}: ${m}`), syncLimits: { minKiBs: Math.min(200_000, maxKiBs), maxKiBs } },
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
    if (process.env.TSMD_TEST_LOG) console.log(logs.join('\n'));
    assert.equal(maxRunning, 1, 'one resync in the cluster at a time');
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

test('md-cluster: more nodes than the bitmap has slots: the extra node is refused, writes nothing, and the others go on', async () => {
  const devs = await clusteredDisks(2, 16, { nodes: 2, assumeClean: true });
  const dlm = new MemoryDlmCluster({ clock });
  const n1 = await assembleNode(devs, dlm, 'n1');
  const n2 = await assembleNode(devs, dlm, 'n2');
  const image = async (d: MemoryBlockDevice): Promise<Buffer> => {
    const b = new Uint8Array(d.sizeBytes);
    await d.reopen().read(b, 0);
    return Buffer.from(b);
  };
  const before = await Promise.all(devs.map(image));
  await assert.rejects(assembleNode(devs, dlm, 'n3'), (e: Error & { code?: string }) => e.code === 'ENOSPC' && /more nodes than the bitmap has slots/.test(e.message));
  for (let i = 0; i < devs.length; i++) assert.ok((await image(devs[i]!)).equals(before[i]!), 'the refused node wrote nothing');
  // it left the lockspace: the two members still write and read each other's data
  const data = randomBytes(64 * 1024);
  await n2.write(data, 1 << 20);
  await n2.flush();
  const got = new Uint8Array(data.length);
  await n1.read(got, 1 << 20);
  assert.ok(Buffer.from(got).equals(data));
  await n1.close();
  await n2.close();
});

test("md-cluster: a write held in another node's resync window fails when its array stops (it does not wait for the window)", async () => {
  const devs = await clusteredDisks(2, 16);
  const dlm = new MemoryDlmCluster({ clock });
  // node 1 resyncs slowly: its 32 MiB window covers the whole 16 MiB array for seconds
  const n1 = await assembleNode(devs, dlm, 'n1', [], 500);
  const n2 = await assembleNode(devs, dlm, 'n2');
  n1.startBackground();
  await until('node 2 sees node 1 resync', () => n2.remoteSync !== null);
  let settled = false;
  const held = n2.write(randomBytes(4096), 1 << 20).finally(() => (settled = true));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(settled, false, 'the write waits for the window');
  const t0 = Date.now();
  await n2.close();
  await assert.rejects(held, (e: Error & { code?: string }) => e.code === 'ENODEV');
  assert.ok(Date.now() - t0 < 3000, 'the stop did not wait for the window to move');
  assert.ok(n1.sync.busy, "node 1's resync still runs");
  await n1.close();
});

test('md-cluster: a member failed on one node is failed on every node (METADATA_UPDATED)', async () => {
  const devs = await clusteredDisks(2, 16, { assumeClean: true });
  const dlm = new MemoryDlmCluster({ clock });
  const nodes = [await assembleNode(devs, dlm, 'n1'), await assembleNode(devs, dlm, 'n2'), await assembleNode(devs, dlm, 'n3')];
  try {
    await nodes[0]!.failMember('shared1');
    for (const n of nodes) {
      const m = n.members.find((x) => x.dev.name === 'shared1')!;
      assert.equal(m.faulty, true, 'the failure reached every node before --fail returned');
      assert.equal(n.events, nodes[0]!.events, 'events follow the writer');
    }
  } finally {
    for (const n of nodes) await n.close();
  }
});

test('md-cluster: receivers waiting with CR→EX (the original protocol) deadlock each other with three nodes; CR→PR does not (spec §5 #1)', async () => {
  for (const barrier of ['EX', 'PR'] as const) {
    const devs = await clusteredDisks(3, 16, { assumeClean: true });
    const dlm = new MemoryDlmCluster({ clock });
    const logs: string[] = [];
    const nodes: MdArray[] = [];
    for (const n of ['n1', 'n2', 'n3']) {
      nodes.push(await MdArray.assemble(devs.map((d) => d.reopen()), { run: true, clock, cluster: setup(dlm, n, 'tc', barrier), log: (m) => logs.push(`${n}: ${m}`) }));
    }
    const outcome = (p: Promise<unknown>): Promise<string> => p.then(() => 'done', (e: Error & { code?: string }) => e.code ?? e.message);
    try {
      // the first round gets its acks either way: the receivers ack before their barrier
      assert.equal(await outcome(nodes[0]!.failMember('shared1')), 'done');
      // the second needs message EX, which waits for every receiver to have left the first
      const t0 = Date.now();
      const second = await outcome(nodes[0]!.failMember('shared2'));
      const ms = Date.now() - t0;
      assert.ok(ms < 4000, `the second round took ${ms} ms`);
      if (barrier === 'PR') {
        assert.equal(second, 'done', logs.join('\n'));
        for (const n of nodes.slice(1)) assert.equal(n.members.find((x) => x.dev.name === 'shared2')!.faulty, true);
      } else {
        // each receiver holds message CR and asks for EX: each waits for the other's CR. The
        // DLM's conversion deadlock detection (conversion_deadlock_detect) fails one of them
        // with EDEADLK; that receiver never re-arms its ack, so the channel has lost it: the
        // next broadcast completes without it, and it never applies the change
        assert.ok(logs.some((l) => /EDEADLK|deadlock/.test(l)), `a receiver saw the conversion deadlock:\n${logs.join('\n')}`);
        const missed = nodes.slice(1).filter((n) => !n.members.find((x) => x.dev.name === 'shared2')!.faulty);
        assert.ok(missed.length > 0, 'a receiver missed the second broadcast');
      }
    } finally {
      for (const n of nodes) await n.close().catch(() => {});
    }
  }
});

test('md-cluster: a dead node\'s dirty regions are taken over by exactly one survivor and resynced', async () => {
  const devs = await clusteredDisks(2, 32, { assumeClean: true });
  const dlm = new MemoryDlmCluster({ clock });
  const logs: string[] = [];
  const n1 = await assembleNode(devs, dlm, 'n1', logs);
  const n2 = await assembleNode(devs, dlm, 'n2', logs);
  const n3 = await assembleNode(devs, dlm, 'n3', logs);
  const clusters = [n1, n2, n3].map((n) => n.cluster as MdCluster);
  for (const n of [n1, n3]) n.startBackground();
  try {
    // n2 writes 3 MiB at 8 MiB: its slot's bits for those chunks are on disk before the data
    const data = randomBytes(3 << 20);
    await n2.write(data, 8 << 20);
    await n2.flush();
    const mine = n2.bitmap!.dirtyCount;
    assert.ok(mine >= 48, `n2's own slot is dirty (${mine} bits)`);
    // make the mirrors differ in that region, as if n2 died between its two member writes
    const d1 = devs[1]!.reopen();
    await d1.write(Buffer.alloc(1 << 20, 0xee), 2048 * 512 + (8 << 20));
    dlm.crash('n2');
    await assert.rejects(n2.write(Buffer.alloc(4096), 0), /lost its cluster membership/);
    await until('a survivor resynced the dead slot', () => clusters[0]!.stats.slotsRecovered + clusters[2]!.stats.slotsRecovered >= 2 && !n1.sync.busy && !n3.sync.busy && n1.resyncCp === 2n ** 64n - 1n && n3.resyncCp === 2n ** 64n - 1n);
    assert.equal(clusters[0]!.stats.slotsMerged + clusters[2]!.stats.slotsMerged, 1, 'exactly one survivor took the dirty bits');
    const worked = [n1, n3].flatMap((n) => n.sync.history.filter((h) => h.kind === 'resync')).reduce((s, h) => s + h.workedSectors, 0);
    assert.equal(worked, mine * 128, 'only the dead node\'s dirty chunks were resynced (64 KiB each)');
    // the mirrors agree again: check finds nothing
    await n1.setSyncAction('check');
    await until('check done', () => !n1.sync.busy && n1.sync.lastResult?.kind === 'check');
    assert.equal(n1.sync.mismatchCnt, 0);
    const got = new Uint8Array(data.length);
    await n3.read(got, 8 << 20);
    // the region holds one of the two copies consistently (the resync picked the first)
    const again = new Uint8Array(data.length);
    await n1.read(again, 8 << 20);
    assert.deepEqual(Buffer.from(got), Buffer.from(again));
  } finally {
    for (const n of [n1, n3]) await n.close();
    await n2.close();
  }
});

test('md-cluster: stopping the resyncing node hands the resync over (03r1_switch-resync)', async () => {
  const devs = await clusteredDisks(2, 48);
  const dlm = new MemoryDlmCluster({ clock });
  const logs: string[] = [];
  const slow = { minKiBs: 1000, maxKiBs: 8000 };
  const n1 = await MdArray.assemble(devs.map((d) => d.reopen()), { run: true, clock, cluster: setup(dlm, 'n1'), log: (m) => logs.push(`n1: ${m}`), syncLimits: slow });
  n1.startBackground();
  await until('n1 resyncing', () => n1.sync.current?.kind === 'resync' && n1.sync.current.doneSectors > 0);
  const n2 = await assembleNode(devs, dlm, 'n2', logs);
  n2.startBackground();
  await until('n2 pending', () => n2.syncPendingCluster);
  await n1.close();
  await until('n2 finished the resync', () => !n2.sync.busy && n2.resyncCp === 2n ** 64n - 1n && n2.sync.history.some((h) => h.kind === 'resync' && h.completed));
  await n2.setSyncAction('check');
  await until('check done', () => !n2.sync.busy && n2.sync.lastResult?.kind === 'check');
  assert.equal(n2.sync.mismatchCnt, 0, 'the array is consistent after the hand-over');
  await n2.close();
  // n1 comes back: nothing left to resync
  const back = await assembleNode(devs, dlm, 'n1', logs);
  back.startBackground();
  await until('idle', () => !back.sync.busy);
  const worked = back.sync.history.reduce((s, h) => s + h.workedSectors, 0);
  assert.equal(worked, 0, 'no sync after re-assembly');
  await back.close();
});

test('md-cluster: part 2 device changes are refused on a clustered array, nothing written', async () => {
  const devs = await clusteredDisks(2, 16, { assumeClean: true });
  const dlm = new MemoryDlmCluster({ clock });
  const n1 = await assembleNode(devs, dlm, 'n1');
  try {
    const spare = new MemoryBlockDevice('spare', 16 << 20);
    await assert.rejects(n1.addMember(spare, { deviceUuid: randomBytes(16) }), (e: Error & { code?: string }) => e.code === 'ENOTSUP' && /clustered array/.test(e.message));
    assert.equal(spare.stats.writes, 0);
    // md's array_size_store refuses a cluster array (EINVAL), mdadm's words for it
    assert.throws(() => n1.setArraySize(8192), (e: Error & { code?: string }) => e.code === 'EINVAL' && e.message === 'current kernel does not support setting --array-size');
    assert.equal(n1.exportedSectors, n1.personality.arraySectors);
    await n1.failMember('shared1');
    const events = n1.events;
    await assert.rejects(n1.removeMember('shared1'), (e: Error & { code?: string }) => e.code === 'ENOTSUP');
    assert.equal(n1.events, events, 'no superblock change');
  } finally {
    await n1.close();
  }
});

test('md-cluster: stopping the recovering node hands the recovery over (03r1_switch-recovery)', async () => {
  // two active members and a spare
  const devs = await clusteredDisks(3, 48, { assumeClean: true, raidDisks: 2 });
  const dlm = new MemoryDlmCluster({ clock });
  const logs: string[] = [];
  const slow = { minKiBs: 1000, maxKiBs: 8000 };
  const mk = (node: string): Promise<MdArray> =>
    MdArray.assemble(devs.map((d) => d.reopen()), { run: true, clock, cluster: setup(dlm, node), log: (m) => logs.push(`${node}: ${m}`), syncLimits: slow });
  const nodes = [await mk('n1'), await mk('n2')];
  for (const n of nodes) n.startBackground();
  await until('both idle', () => nodes.every((n) => !n.sync.busy || n.syncPendingCluster));
  await nodes[0]!.failMember('shared0');
  // since md delays choosing the sync action (6.7), either node may win the recovery (01r1_Grow_add accepts both)
  await until('a node recovering onto the spare', () => nodes.some((n) => n.sync.current?.kind === 'recovery' && n.sync.current.doneSectors > 4096)).catch((e: unknown) => {
    throw new Error(`${(e as Error).message}\n${logs.join('\n')}`);
  });
  const busy = nodes.find((n) => n.sync.current?.kind === 'recovery')!;
  const other = nodes.find((n) => n !== busy)!;
  assert.equal(other.members.find((m) => m.dev.name === 'shared2')!.slot, 0, 'the other node saw the spare activated');
  assert.ok(other.syncPendingCluster || other.remoteSync !== null, 'the other node waits (PENDING) or shows the remote recovery');
  Object.assign(other.sync.local, { minKiBs: 100_000, maxKiBs: 1_000_000 });
  await busy.close();
  await until('the other node finished the recovery', () => other.members.find((m) => m.dev.name === 'shared2')!.recoveryOffset === null && !other.sync.busy, 30_000);
  assert.ok(other.sync.history.some((h) => h.kind === 'recovery' && h.completed), logs.join('\n'));
  await other.setSyncAction('check');
  await until('check done', () => !other.sync.busy && other.sync.lastResult?.kind === 'check');
  assert.equal(other.sync.mismatchCnt, 0);
  assert.deepEqual([...other.workingSlots].sort(), [0, 1]);
  await other.close();
});

/**
 * Three nodes each fail another member at the same moment (three METADATA_UPDATED rounds at
 * once) while a resync sends its windows and every node writes. md's deadlocks here came from
 * a task holding the local metadata lock (reconfig_mutex) while it waited for the token, whose
 * holder waited for this node's ack, whose receive needed that lock. `lockOrder` is the order
 * every node's Metadata takes them in.
 */
async function threeUpdatesAtOnce(lockOrder: 'token-first' | 'lock-first') {
  const devs = await clusteredDisks(4, 48);
  const dlm = new MemoryDlmCluster({ clock });
  const logs: string[] = [];
  const nodes = [await assembleNode(devs, dlm, 'n1', logs, 20_000), await assembleNode(devs, dlm, 'n2', logs, 20_000), await assembleNode(devs, dlm, 'n3', logs, 20_000)];
  for (const n of nodes) n.meta.lockOrder = lockOrder;
  try {
    for (const n of nodes) n.startBackground();
    await until('a resync under way', () => nodes.some((n) => n.sync.current !== null));
    const t0 = Date.now();
    const writes = nodes.map(async (n, i) => {
      for (let k = 0; k < 16; k++) await n.write(randomBytes(65536), ((i * 16 + k) * 2 + 1) << 16).catch(() => {});
    });
    const rounds = nodes.map((n, i) => n.failMember(`shared${i + 1}`).then(() => 'done', (e: Error & { code?: string }) => `${e.code ?? ''} ${e.message}`));
    // a deadlock between local locks has no timer of its own: a watchdog ends the wait
    let watchdog: NodeJS.Timeout | undefined;
    const hung = new Promise<string[]>((r) => (watchdog = setTimeout(() => r(['hung', 'hung', 'hung']), 8000)));
    const outcomes = await Promise.race([Promise.all([...rounds, ...writes]), hung]);
    clearTimeout(watchdog);
    const ms = Date.now() - t0;
    const failed = nodes.map((n) => ['shared1', 'shared2', 'shared3'].filter((name) => n.members.find((m) => m.dev.name === name)!.faulty));
    const events = nodes.map((n) => n.events);
    // one good member left: every node still reads what each wrote
    const got = new Uint8Array(65536);
    if (lockOrder === 'token-first') {
      await nodes[2]!.read(got, 1 << 16);
      await nodes[0]!.read(got, 1 << 16);
    }
    return { outcomes: outcomes.slice(0, 3), ms, failed, events, logs };
  } finally {
    // (a deadlocked node's close waits on the lock too: not for long)
    for (const n of nodes) await Promise.race([n.close().catch(() => {}), new Promise((r) => setTimeout(r, 500))]);
  }
}

test('md-cluster: metadata updates started on every node at once, while a resync sends its windows: no deadlock, every node applies every change (spec §5 #9, #16)', async () => {
  // tsmd takes the token before the local lock (metadata.ts update), so a receiver can always
  // take it; a regression shows as the 5 s DLM timeout
  const ours = await threeUpdatesAtOnce('token-first');
  assert.deepEqual(ours.outcomes, ['done', 'done', 'done'], ours.logs.join('\n'));
  assert.ok(ours.ms < 4000, `the three rounds took ${ours.ms} ms (a deadlock waits for the 5 s DLM timeout)`);
  for (const f of ours.failed) assert.deepEqual(f, ['shared1', 'shared2', 'shared3'], 'every member failed on every node');
  assert.ok(ours.events.every((e) => e === ours.events[0]), `events agree: ${ours.events.join(' ')}`);
  // md's historical order (the lock, then the token) on the same scenario: a node holds its
  // lock while it waits for the token, and the token holder waits for that node's ack, whose
  // receive waits for the lock
  const broken = await threeUpdatesAtOnce('lock-first');
  assert.ok(broken.ms >= 4000 && broken.outcomes.some((o) => o !== 'done'), `lock-first: ${broken.ms} ms, ${broken.outcomes.join(' | ')}`);
});

/**
 * Node 1's resync with every RESYNCING round slowed down (the sender's resync_info_update waits
 * `roundMs` before its LVB write and round): what it announces and what it syncs, in order.
 * Each sync region is checked when it starts against the window node 1 had acknowledged, the
 * one in flight (receivers hold either) and node 2's write-suspend window (spec §8 invariant 7).
 */
async function tracedResync(opts: { roundMs: number; failAt?: number }) {
  // 64 MiB bitmap chunks: one resync pass, windows as large as the engine makes them
  const devs = await clusteredDisks(2, 80, { bitmapChunkKiB: 65536 });
  const dlm = new MemoryDlmCluster({ clock });
  const logs: string[] = [];
  // 100 MB/s: an 8 MiB sync window takes ~80 ms, longer than the slowed round
  const n1 = await assembleNode(devs, dlm, 'n1', logs, 100_000);
  const n2 = await assembleNode(devs, dlm, 'n2', logs);
  const c1 = n1.cluster!;
  const announced: Array<{ lo: number; hi: number; completedAtStart: number; acked: boolean; overlapped: number }> = [];
  let acked = { lo: 0, hi: 0 };
  let inFlight: { lo: number; hi: number } | null = null;
  let completed = 0;
  const regions: Array<[number, number]> = [];
  const violations: string[] = [];
  const orig = c1.resyncInfoUpdate.bind(c1);
  c1.resyncInfoUpdate = async (w) => {
    if (w.hi === 0) return orig(w);
    const a = { ...w, completedAtStart: completed, acked: false, overlapped: 0 };
    announced.push(a);
    if (inFlight) violations.push(`announcement [${w.lo}, ${w.hi}) started while [${inFlight.lo}, ${inFlight.hi}) was in flight`);
    inFlight = w;
    try {
      await new Promise((r) => setTimeout(r, opts.roundMs));
      if (announced.length === opts.failAt) throw new Error('injected: RESYNCING round failed');
      await orig(w);
      a.acked = true;
      acked = w;
    } finally {
      inFlight = null;
    }
  };
  const p = n1.personality;
  const syncRegion = p.syncRegion.bind(p);
  p.syncRegion = async (start, sectors, rebuild) => {
    const end = start + sectors;
    regions.push([start, end]);
    const inside = (w: { lo: number; hi: number }): boolean => start >= w.lo && end <= w.hi;
    if (!inside(acked)) violations.push(`sync [${start}, ${end}) outside the acknowledged window [${acked.lo}, ${acked.hi})`);
    if (inFlight && !inside(inFlight)) violations.push(`sync [${start}, ${end}) outside the window in flight [${inFlight.lo}, ${inFlight.hi})`);
    if (inFlight) announced[announced.length - 1]!.overlapped++;
    // node 2's suspend window (one range) holds both ends of the region
    if (!n2.cluster!.areaResyncing('write', start, start + 1) || !n2.cluster!.areaResyncing('write', end - 1, end))
      violations.push(`sync [${start}, ${end}) not inside node 2's write-suspend window`);
    if (start !== completed) violations.push(`sync [${start}, ${end}) does not start at the completed position ${completed}`);
    await syncRegion(start, sectors, rebuild);
    completed = end;
  };
  return {
    devs,
    n1,
    n2,
    logs,
    announced,
    regions,
    violations,
    get completed(): number {
      return completed;
    },
  };
}

test('md-cluster: the next resync window is announced while the sync goes on inside the acknowledged one (spec §8 invariant 7)', async () => {
  const t = await tracedResync({ roundMs: 40 });
  const { n1, n2, announced, regions, violations } = t;
  try {
    n1.startBackground();
    await until('node 1 resynced', () => n1.sync.history.some((r) => r.kind === 'resync' && r.completed), 30_000);
    await until('node 2 released the window', () => n2.remoteSync === null && !n2.cluster!.areaResyncing('write', 0, 80 * 2048));
    if (process.env.TSMD_TEST_LOG) console.log(t.logs.join('\n'), announced, regions);
    assert.deepEqual(violations, []);
    const size = n1.personality.syncSectors;
    assert.equal(t.completed, size, 'the whole array was synced');
    // sync windows of a quarter of md's 32 MiB window, so the announcement overlaps two
    assert.ok(regions.every(([a, b]) => b - a <= 16384), 'sync windows of at most 8 MiB');
    // every window: low never past what was completely synced; md's 32 MiB first, then at
    // most twice the last (cluster-window.ts sizes it by the pace), inside the array
    for (const [i, a] of announced.entries()) {
      assert.ok(a.lo <= a.completedAtStart, `window low ${a.lo} <= completed ${a.completedAtStart}`);
      const cap = i === 0 ? 65536 : 2 * (announced[i - 1]!.hi - announced[i - 1]!.lo);
      assert.ok(a.hi - a.lo <= Math.max(65536, cap) && a.hi <= size && a.acked, `window ${i} [${a.lo}, ${a.hi})`);
    }
    for (let i = 1; i < announced.length; i++) assert.ok(announced[i]!.lo >= announced[i - 1]!.lo && announced[i]!.hi >= announced[i - 1]!.hi, 'windows move forward');
    // the pipelining: after the first (which the sync waits for), the sync started regions
    // while each announcement was in flight instead of stopping for it
    assert.ok(announced.length >= 3, `${announced.length} windows announced`);
    const stalled = announced.slice(1).filter((a) => a.overlapped === 0);
    assert.deepEqual(stalled, [], 'no announcement after the first held the sync up');
  } finally {
    await n1.close();
    await n2.close();
  }
});

test('md-cluster: a failed resync window announced ahead stops the sync as a failed synchronous one does', async () => {
  const t = await tracedResync({ roundMs: 20, failAt: 3 });
  const { n1, n2, announced, violations } = t;
  try {
    n1.startBackground();
    await until('node 1 stopped its resync', () => !n1.sync.busy, 30_000);
    assert.deepEqual(violations, []);
    assert.ok(t.logs.some((l) => /n1: md: resync aborted: injected: RESYNCING round failed/.test(l)), 'the sync reports the failed round');
    assert.equal(n1.sync.history.filter((r) => r.kind === 'resync').length, 0, 'the job did not complete');
    // no sync I/O past the last window every node acknowledged
    const lastAcked = announced.filter((a) => a.acked).at(-1)!;
    assert.ok(t.completed <= lastAcked.hi && t.completed < n1.personality.syncSectors);
    assert.equal((n1.cluster as MdCluster).holdsResyncLock, false, 'the resync lock is released');
  } finally {
    await n1.close();
    await n2.close();
  }
});

test('md-cluster: a recovery checkpoint runs beside the sync and records no more than what its flush covered', async () => {
  const devs = await clusteredDisks(3, 48, { assumeClean: true, raidDisks: 2 });
  const dlm = new MemoryDlmCluster({ clock });
  const logs: string[] = [];
  const mk = (node: string): Promise<MdArray> =>
    MdArray.assemble(devs.map((d) => d.reopen()), { run: true, clock, cluster: setup(dlm, node), log: (m) => logs.push(`${node}: ${m}`), syncLimits: { minKiBs: 1000, maxKiBs: 60_000 } });
  const nodes = [await mk('n1'), await mk('n2')];
  // per node: the completed position, where the last flush started, and each checkpoint seen
  type Checkpoint = { cap: number; flushedFrom: number; recorded: number; liveAfter: number };
  const seen = nodes.map(() => ({ completed: 0, flushedFrom: 0, inCheckpoint: false, regionsBeside: 0, checkpoints: [] as Checkpoint[] }));
  nodes.forEach((n, i) => {
    const s = seen[i]!;
    // a checkpoint every 2 MiB of progress (an interval set by hand has no time floor)
    n.sync.checkpointSectors = 4096;
    const p = n.personality;
    const syncRegion = p.syncRegion.bind(p);
    p.syncRegion = async (start, sectors, rebuild) => {
      if (s.inCheckpoint) s.regionsBeside++;
      await syncRegion(start, sectors, rebuild);
      s.completed = start + sectors;
    };
    const flush = p.flush.bind(p);
    p.flush = async () => {
      s.flushedFrom = s.completed;
      await flush();
    };
    const write = n.writeSuperblocks.bind(n);
    n.writeSuperblocks = async (opts) => {
      const cap = n.syncRecordCap;
      if (!cap) return write(opts);
      assert.equal(cap.kind, 'recovery');
      const flushedFrom = s.flushedFrom;
      s.inCheckpoint = true;
      try {
        // a slow metadata round (a loaded machine: 40-390 ms in docs/perf.md)
        await new Promise((r) => setTimeout(r, 100));
        await write(opts);
      } finally {
        s.inCheckpoint = false;
      }
      const m = n.members.find((x) => x.dev.name === 'shared2')!;
      s.checkpoints.push({ cap: cap.sectors, flushedFrom, recorded: Number(m.loaded.sb.recoveryOffset), liveAfter: m.recoveryOffset ?? Infinity });
    };
  });
  try {
    for (const n of nodes) n.startBackground();
    await until('both idle', () => nodes.every((n) => !n.sync.busy || n.syncPendingCluster));
    await nodes[0]!.failMember('shared0');
    await until('the recovery done on both nodes', () => nodes.every((n) => n.members.find((m) => m.dev.name === 'shared2')?.slot === 0 && n.rebuildingSlots.length === 0 && !n.sync.busy), 30_000);
    const s = seen.find((x) => x.checkpoints.length > 0);
    assert.ok(s, `a node checkpointed its recovery\n${logs.join('\n')}`);
    assert.ok(s.checkpoints.length >= 3, `${s.checkpoints.length} checkpoints`);
    for (const c of s.checkpoints) {
      assert.ok(c.recorded <= c.cap, `recorded ${c.recorded} <= cap ${c.cap}`);
      assert.ok(c.cap <= c.flushedFrom, `cap ${c.cap} covered by the flush (started at ${c.flushedFrom})`);
    }
    // the sync went on while checkpoints were written, and the frontier moved past what they recorded
    assert.ok(s.regionsBeside > 0, 'sync windows ran beside a checkpoint');
    assert.ok(s.checkpoints.some((c) => c.liveAfter > c.recorded), 'the in-memory frontier moved on while the checkpoint recorded its cap');
  } finally {
    for (const n of nodes) await n.close();
  }
});

test('md-cluster: a member another node runs but this one cannot open: refused, nothing written; the first node alone starts degraded', async () => {
  const devs = await clusteredDisks(2, 24, { assumeClean: true });
  const dlm = new MemoryDlmCluster({ clock });
  const logs: string[] = [];
  const n1 = await assembleNode(devs, dlm, 'n1', logs);
  try {
    const before = devs.map((d) => Buffer.from(dump(d)));
    // node 2 sees only shared0 (its path to shared1 is missing), and asks to run degraded
    await assert.rejects(
      MdArray.assemble([devs[0]!.reopen()], { run: true, clock, cluster: setup(dlm, 'n2'), log: (m) => logs.push(`n2: ${m}`) }),
      (e: Error & { code?: string }) => e.code === 'ENODEV' && /device 1 \(role 1\) is active on the 1 other node of the cluster but was not found here: not started, nothing written/.test(e.message),
    );
    devs.forEach((d, i) => assert.ok(Buffer.from(dump(d)).equals(before[i]!), `${d.name}: nothing written`));
    // node 1 goes on with both members, and node 2 joins once it sees both
    assert.equal(n1.degraded, false);
    await n1.write(randomBytes(65536), 0);
    const n2 = await assembleNode(devs, dlm, 'n2', logs);
    assert.equal(n2.degraded, false);
    await n2.close();
  } finally {
    await n1.close();
  }
  // alone in the cluster, a node that finds one member assembles degraded with --run, as a
  // local array does (nobody else has the missing one running)
  const alone = await MdArray.assemble([devs[0]!.reopen()], { run: true, clock, cluster: setup(dlm, 'n3'), log: (m) => logs.push(`n3: ${m}`) });
  try {
    assert.equal(alone.degraded, true);
  } finally {
    await alone.close();
  }
});
