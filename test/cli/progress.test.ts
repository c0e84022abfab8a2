/**
 * The --wait progress line (src/cli/progress.ts): the ETA is md's finish= (what is left over
 * the current speed), finite or left out, never cli-progress's "NFs"; the percentage is
 * /proc/mdstat's per-mille, never 100 before the end; a completed sync is drawn at 100 %.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { durationText, etaSeconds, finalProgress, percentText, waitLine } from '../../src/cli/progress.js';

describe('--wait progress line', () => {
  const p = { kind: 'recovery', doneSectors: 2 * 1024 * 1024, totalSectors: 8 * 1024 * 1024, speedKiBs: 10240 };

  test('ETA from what is left and the speed; left out when unknown', () => {
    // 3 GiB left at 10 MiB/s
    assert.equal(etaSeconds(p), 307.2);
    assert.match(waitLine('/dev/md0', p), /^\/dev\/md0 recovery \[.{30}\] 25\.0% \| 10240 KiB\/s \| ETA 5m07s$/);
    for (const speedKiBs of [0, NaN, Infinity, -5]) {
      const line = waitLine('/dev/md0', { ...p, speedKiBs });
      assert.equal(etaSeconds({ ...p, speedKiBs }), null, String(speedKiBs));
      assert.doesNotMatch(line, /ETA|NF|NaN|Infinity/, line);
    }
  });

  test('durations', () => {
    assert.equal(durationText(0), '0s');
    assert.equal(durationText(59.4), '59s');
    assert.equal(durationText(61), '1m01s');
    assert.equal(durationText(3 * 3600 + 125), '3h02m');
  });

  test('percent: floored per-mille, 99.9 at most before the end, 100.0 at the end', () => {
    assert.equal(percentText(0, 100), '0.0');
    assert.equal(percentText(999, 1000), '99.9');
    assert.equal(percentText(9999, 10000), '99.9');
    assert.equal(percentText(10000, 10000), '100.0');
    assert.equal(percentText(5, 0), '0.0');
  });

  test('a completed sync ends at 100 %, without an ETA; an interrupted one stays where it was', () => {
    const last = { ...p, doneSectors: (p.totalSectors / 100) * 97 };
    const done = waitLine('/dev/md0', finalProgress(last, true));
    assert.match(done, /\[\u2588{30}\] 100\.0% \| 0 KiB\/s$/);
    assert.match(waitLine('/dev/md0', finalProgress(last, false)), / 97\.0% \| 0 KiB\/s$/);
  });
});
