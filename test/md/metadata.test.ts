/**
 * The metadata transaction (src/md/metadata.ts, md_update_sb): one event per change, the
 * change applied under the lock, and for a clustered array the md-cluster bracket
 * (metadata_update_start before the change is decided; finish after the write; cancel when
 * nothing was written). Judges: the members' superblocks read back from disk, and the order
 * of calls a recording ClusterOps sees.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SystemClock } from '../../src/env/clock.js';
import { TsmdError } from '../../src/errors.js';
import { MdArray } from '../../src/md/array.js';
import type { ClusterOps } from '../../src/md/cluster-ops.js';
import { UNCHANGED } from '../../src/md/metadata.js';
import { loadSuperblock } from '../../src/md/sb-io.js';
import { memoryArray } from '../helpers/arrays.js';

/** A ClusterOps that records the metadata bracket and refuses everything else. */
function recordingCluster(calls: string[]): ClusterOps {
  const no = () => Promise.reject(new Error('not part of this test'));
  return {
    join: no,
    loadBitmaps: no,
    leave: no,
    slotNumber: () => 0,
    peers: () => 0,
    resyncInfoUpdate: no,
    resyncStart: no,
    resyncFinish: no,
    metadataUpdateStart: async () => {
      calls.push('start');
    },
    metadataUpdateFinish: async () => {
      calls.push('finish');
    },
    metadataUpdateCancel: async () => {
      calls.push('cancel');
    },
    areaResyncing: () => false,
    addNewDiskStart: no,
    addNewDiskFinish: no,
    addNewDiskCancel: no,
    newDiskAck: no,
    removeDisk: no,
    gatherBitmaps: no,
    lockAllBitmaps: no,
    unlockAllBitmaps: no,
    updateSize: no,
    resizeBitmaps: no,
  };
}

async function eventsOnDisk(arr: MdArray): Promise<bigint[]> {
  const out: bigint[] = [];
  for (const m of arr.members) out.push((await loadSuperblock(m.dev))!.sb.events);
  return out;
}

describe('the metadata transaction', () => {
  test('one change, one event, on every member; the change is made under the token', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [4, 4, 4], assumeClean: true });
    const arr = await MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock() });
    const calls: string[] = [];
    arr.cluster = recordingCluster(calls);
    const before = arr.events;
    await arr.update(() => {
      calls.push('mutate');
      arr.sb.utime = 0n;
    });
    assert.deepEqual(calls, ['start', 'mutate', 'finish']);
    assert.equal(arr.events, before + 1n);
    assert.deepEqual(await eventsOnDisk(arr), [before + 1n, before + 1n, before + 1n]);
    arr.cluster = null;
    await arr.close();
  });

  test('a refused change writes nothing and cancels; UNCHANGED writes nothing and cancels', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [4, 4], assumeClean: true });
    const arr = await MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock() });
    const calls: string[] = [];
    arr.cluster = recordingCluster(calls);
    const before = arr.events;
    await assert.rejects(
      arr.update(() => {
        throw new TsmdError('EBUSY', 'refused');
      }),
      /refused/,
    );
    await arr.update(() => UNCHANGED);
    assert.deepEqual(calls, ['start', 'cancel', 'start', 'cancel']);
    assert.equal(arr.events, before);
    assert.deepEqual(await eventsOnDisk(arr), [before, before]);
    arr.cluster = null;
    await arr.close();
  });

  test('concurrent changes are applied one at a time, each with its own event', async () => {
    const devs = await memoryArray({ level: 1, sizesMiB: [4, 4], assumeClean: true });
    const arr = await MdArray.assemble(devs.map((d) => d.reopen()), { clock: new SystemClock() });
    const before = arr.events;
    let inside = 0;
    let most = 0;
    await Promise.all(
      Array.from({ length: 8 }, () =>
        arr.update(async () => {
          most = Math.max(most, ++inside);
          await new Promise<void>((r) => setImmediate(r));
          inside--;
        }),
      ),
    );
    assert.equal(most, 1, 'one mutate at a time');
    assert.equal(arr.events, before + 8n);
    assert.deepEqual(await eventsOnDisk(arr), [before + 8n, before + 8n]);
    await arr.close();
  });
});
