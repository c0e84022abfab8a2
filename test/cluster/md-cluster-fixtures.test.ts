/**
 * Clustered arrays made by the kernel's md-cluster (shared/fixtures/kernel-md-cluster, see its
 * README): they assemble in tsmd as a node of cluster "mdlab", which gathers every slot's
 * dirty bits (a crashed node's included), resyncs exactly those chunks, and reads the
 * documented pattern; the real mdadm then reads the bitmaps tsmd wrote.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { MemoryDlmCluster } from '../../src/cluster/dlm/memory.js';
import { nodeClusterSetup } from '../../src/cluster/md-cluster/setup.js';
import { SystemClock } from '../../src/env/clock.js';
import { countDirty } from '../../src/format/bitmap.js';
import { openDevice } from '../../src/io/file-device.js';
import { MdArray } from '../../src/md/array.js';
import { loadBitmaps, loadSuperblock } from '../../src/md/sb-io.js';
import { checkPattern, sharedDir } from '../helpers/fixtures.js';
import { requireRoot, requireTool, run, tempDir, withLoop } from '../helpers/tools.js';

const clock = new SystemClock();
const root = (): string => join(sharedDir(), 'fixtures', 'kernel-md-cluster');
const cache = join(tmpdir(), `tsmd-cluster-fixtures-${process.getuid?.() ?? 0}`);

/** The fixture's images, decompressed once per process (sparse), then copied for the test. */
function images(name: string, into: string): string[] {
  const src = join(root(), name);
  mkdirSync(join(cache, name), { recursive: true });
  const files = readdirSync(src).filter((f) => /^d\d+\.img\.xz$/.test(f)).sort();
  return files.map((f) => {
    const cached = join(cache, name, f.replace(/\.xz$/, ''));
    if (!existsSync(cached)) execFileSync('sh', ['-c', 'xz -dc "$1" | cp --sparse=always /dev/stdin "$2.tmp" && mv "$2.tmp" "$2"', 'sh', join(src, f), cached]);
    const dst = join(into, f.replace(/\.xz$/, ''));
    copyFileSync(cached, dst);
    return dst;
  });
}

async function until(what: string, fn: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function slotDirty(path: string): Promise<number[]> {
  const d = await openDevice(path, { readOnly: true });
  try {
    const l = (await loadSuperblock(d))!;
    return (await loadBitmaps(d, l)).map((b) => countDirty(b.bits, b.nbits));
  } finally {
    await d.close();
  }
}

interface Case {
  name: string;
  overlay: boolean;
  dirtyBefore: number[];
  resyncedSectors: number;
  dirtyAfter: number[];
}

const cases: Case[] = [
  { name: 'raid1-clustered', overlay: false, dirtyBefore: [0, 0, 0, 0], resyncedSectors: 0, dirtyAfter: [0, 0, 0, 0] },
  { name: 'raid10-clustered', overlay: false, dirtyBefore: [0, 0, 0, 0], resyncedSectors: 0, dirtyAfter: [0, 0, 0, 0] },
  // one node crashed alone: its own slot (0) is dirty; this node gets slot 0 and resyncs 16 chunks of 64 KiB
  { name: 'raid1-clustered-crashed', overlay: true, dirtyBefore: [16, 0, 0, 0], resyncedSectors: 16 * 128, dirtyAfter: [0, 0, 0, 0] },
  // node2 (slot 1) crashed: gathered without clearing (only a survivor's recovery clears a live slot's bits)
  { name: 'raid1-clustered-2node-crashed', overlay: true, dirtyBefore: [0, 16, 0, 0], resyncedSectors: 16 * 128, dirtyAfter: [0, 16, 0, 0] },
];

for (const c of cases) {
  test(`kernel md-cluster fixture ${c.name}: assembles, resyncs only the dirty chunks, reads the pattern, mdadm -X agrees`, async (t) => {
    if (!requireTool(t, 'xz', 'kernel fixtures') || !requireTool(t, 'mdadm', 'the bitmap judge') || !requireRoot(t, 'mdadm -X on a loop device')) return;
    const tmp = tempDir('mdc-fixture');
    t.after(tmp.cleanup);
    const paths = images(c.name, tmp.path);
    assert.deepEqual((await slotDirty(paths[0]!)).slice(0, 4), c.dirtyBefore);
    const dlm = new MemoryDlmCluster({ clock });
    const setup = nodeClusterSetup({ clusterName: 'mdlab', dlm: dlm.node('tsmd1'), clock });
    const logs: string[] = [];
    const devs = await Promise.all(paths.map((p) => openDevice(p, { exclusive: false })));
    const syncLimits = { minKiBs: 100_000, maxKiBs: 1_000_000 };
    const arr = await MdArray.assemble(devs, { run: true, clock, cluster: setup, log: (m) => logs.push(m), syncLimits });
    try {
      assert.equal(arr.cluster!.slotNumber(), 0);
      arr.startBackground();
      await until('resync done', () => !arr.sync.busy && arr.resyncCp === 2n ** 64n - 1n);
      const worked = arr.sync.history.filter((h) => h.kind === 'resync').reduce((s, h) => s + h.workedSectors, 0);
      assert.equal(worked, c.resyncedSectors, `resynced sectors (${logs.join(' | ')})`);
      const buf = new Uint8Array(arr.sizeBytes);
      await arr.read(buf, 0);
      const overlayEnd = c.overlay ? 256 * 4096 : 0;
      assert.equal(checkPattern(buf.subarray(0, overlayEnd), 0, 0xa5a5a5a5a5a5a5a5n), -1, 'overlay pattern');
      assert.equal(checkPattern(buf.subarray(overlayEnd), overlayEnd), -1, 'base pattern');
      await arr.setSyncAction('check');
      await until('check done', () => !arr.sync.busy && arr.sync.lastResult?.kind === 'check');
      assert.equal(arr.sync.mismatchCnt, 0);
      // bits clear once the daemon passes ran (two idle periods of the bitmap's daemon_sleep)
      for (let i = 0; i < 3; i++) await arr.bitmapDaemonPass();
    } finally {
      await arr.close();
    }
    assert.deepEqual((await slotDirty(paths[0]!)).slice(0, 4), c.dirtyAfter);
    // the real mdadm reads every slot of what tsmd wrote
    const x = await withLoop(paths[0]!, (dev) => run('mdadm', ['--examine-bitmap', dev]));
    assert.equal(x.status, 0, x.stderr);
    assert.match(x.stdout, /Cluster nodes : 4/);
    assert.match(x.stdout, /Cluster name : mdlab/);
    const slots = [...x.stdout.matchAll(/Node Slot : (\d+)[\s\S]*?Bitmap : \d+ bits \(chunks\), (\d+) dirty/g)].map((m) => Number(m[2]));
    assert.deepEqual(slots, c.dirtyAfter, x.stdout);
  });
}
