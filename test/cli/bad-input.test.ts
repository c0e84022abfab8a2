/**
 * Bad input gets a clear error, an mdadm-style exit code (2 = usage, 1 = failure) and loses
 * nothing: every member file is byte-identical after a refused command.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, openSync, readFileSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sparseFile, tempDir, tsmd } from '../helpers/tools.js';

const MiB = 1024 * 1024;
let dir: { path: string; cleanup: () => void };
const p = (n: string) => join(dir.path, n);

function hashOf(files: string[]): string[] {
  return files.map((f) => createHash('sha256').update(readFileSync(f)).digest('hex'));
}

/** Run a command that must fail; assert the exit code, a message, and that nothing changed. */
function refused(args: string[], files: string[], code: number, message: RegExp) {
  const beforeHash = hashOf(files);
  const r = tsmd(args);
  assert.equal(r.status, code, `exit code of tsmd ${args.join(' ')}\nstderr: ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.deepEqual(hashOf(files), beforeHash, 'a refused command must not write to any member');
  return r;
}

function poke(file: string, offset: number, bytes: number[]) {
  const fd = openSync(file, 'r+');
  writeSync(fd, Buffer.from(bytes), 0, bytes.length, offset);
  closeSync(fd);
}

describe('bad input', () => {
  const a = ['a0', 'a1', 'a2'];
  const b = ['b0', 'b1', 'b2'];
  before(() => {
    dir = tempDir('bad');
    for (const n of [...a, ...b]) sparseFile(p(n), 16 * MiB);
    let r = tsmd(['--create', 'md0', '-l5', '-n3', '-c16', '--run', '--assume-clean', ...a.map(p)]);
    assert.equal(r.status, 0, r.stderr);
    r = tsmd(['--create', 'md1', '-l5', '-n3', '-c16', '--run', '--assume-clean', ...b.map(p)]);
    assert.equal(r.status, 0, r.stderr);
  });
  after(() => dir.cleanup());

  test("Create.c's own checks exit 1, as mdadm 4.2 does (the same three commands give it 1), and touch nothing", () => {
    const files = a.map(p);
    refused(['--create', 'md9', '-n3', ...files], files, 1, /RAID level is needed/);
    refused(['--create', 'md9', '-l5', ...files], files, 1, /no raid-devices specified/);
    refused(['--create', 'md9', '-l5', '-n2', ...files], files, 1, /You have listed more devices \(3\) than are in the array\(2\)!/);
  });

  test('usage errors exit 2 and touch nothing', () => {
    const files = a.map(p);
    refused(['--create', 'md9', '-l7', '-n3', ...files], files, 2, /invalid raid level/);
    refused(['--create', 'md9', '-l5', '-n3', '--layout=f2', ...files], files, 2, /layout|f2/);
    refused(['--create', 'md9', '-l5', '-n3', '--metadata=0.90', ...files], files, 2, /metadata/);
    refused(['--create', 'md9', '-l5', '-n3', '--bitmap=/tmp/ext', ...files], files, 2, /bitmap/);
    refused(['--create', '--assemble', 'md9', ...files], files, 2, /already set to "create"/);
    refused(['--frobnicate', ...files], files, 2, /unrecognised option --frobnicate/);
    refused(
      ['-C', 'md9', '-l5', '-n', 'three', ...files],
      files,
      2,
      /invalid number of raid devices/,
    );
    refused(['--examine'], files, 2, /No devices/);
  });

  test('too few devices for --create exits 1 (mdadm Create.c) and touches nothing', () => {
    const files = a.map(p);
    refused(['--create', 'md9', '-l5', '-n4', ...files], files, 1, /enough devices/);
  });

  test('conflicting create options exit 1 and touch nothing', () => {
    const files = b.map(p);
    refused(
      ['--create', 'md9', '-l1', '-n3', '-c64', '--run', ...files],
      files,
      1,
      /raid1 does not use a chunk/,
    );
    refused(
      ['--create', 'md9', '-l0', '-n3', '--bitmap=internal', '--run', ...files],
      files,
      1,
      /bitmap needs a redundant level/,
    );
    refused(
      ['--create', 'md9', '-l10', '-n3', '--layout=n4', '--run', ...files],
      files,
      2,
      /at least 4 devices|requires/,
    );
    refused(
      ['--create', 'md9', '-l5', '-n3', '--chunk=48', '--run', ...files],
      files,
      1,
      /power of two/,
    );
    refused(
      ['--create', 'md9', '-l1', '-n3', '--size=1G', '--run', ...files],
      files,
      1,
      /larger than the smallest device/,
    );
    refused(
      ['--create', 'md9', '-l6', '-n3', '--run', ...files],
      files,
      1,
      /at least 4 raid devices/,
    );
  });

  test('create over members of an existing array is refused without --run', () => {
    const files = a.map(p);
    const r = refused(
      ['--create', 'md9', '-l1', '-n3', ...files],
      files,
      1,
      /appears to be part of a raid array/,
    );
    assert.match(r.stderr, /--run/);
  });

  test('a member too small is refused', () => {
    const tiny = sparseFile(p('tiny'), 8 * 1024);
    const files = [p('b0'), tiny];
    refused(['--create', 'md9', '-l1', '-n2', '--run', ...files], files, 1, /too small/);
  });

  test('truncated member: no superblock, assembly refused', () => {
    copyFileSync(p('a2'), p('trunc'));
    truncateSync(p('trunc'), 2048); // cut before the 1.2 superblock at 4 KiB
    const files = [p('a0'), p('a1'), p('trunc')];
    refused(['--examine', p('trunc')], files, 1, /No md superblock detected/);
    refused(['--assemble', 'md0', ...files], files, 1, /no md superblock on .*trunc/);
  });

  test('wrong magic, bad checksum, super_offset mismatch are refused with the reason', () => {
    copyFileSync(p('a2'), p('magic'));
    poke(p('magic'), 4096, [0xa9, 0x2b, 0x4e, 0xfc]); // magic written big-endian
    refused(
      ['--assemble', 'md0', p('a0'), p('a1'), p('magic')],
      [p('a0'), p('a1'), p('magic')],
      1,
      /no md superblock on .*magic/,
    );

    copyFileSync(p('a2'), p('csum'));
    poke(p('csum'), 4096 + 200, [0x55]); // events changed, checksum not
    refused(
      ['--assemble', 'md0', p('a0'), p('a1'), p('csum')],
      [p('a0'), p('a1'), p('csum')],
      1,
      /checksum/,
    );
    // mdadm -E still prints it and says what the checksum should be
    const e = tsmd(['--examine', p('csum')]);
    assert.equal(e.status, 0);
    assert.match(e.stdout, /Checksum : [0-9a-f]+ - expected [0-9a-f]+\n/);

    copyFileSync(p('a2'), p('padded'));
    poke(p('padded'), 4096 + 12, [1]); // pad0 non-zero (and checksum now wrong too)
    refused(
      ['--assemble', 'md0', p('a0'), p('a1'), p('padded')],
      [p('a0'), p('a1'), p('padded')],
      1,
      /superblock refused/,
    );
  });

  test('mixed members of two arrays are refused', () => {
    const files = [p('a0'), p('a1'), p('b2')];
    refused(['--assemble', 'md0', ...files], files, 1, /doesn't match others/);
  });

  test('an array with a member missing starts only with --run, and then read-only assembly writes nothing', () => {
    const files = [p('a0'), p('a1')];
    refused(['--assemble', 'md0', ...files], files, 1, /not started.*--run/s);
    const h = hashOf(files);
    const r = tsmd(['--assemble', 'md0', '--run', '--readonly', ...files]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /started with 2 drives \(out of 3\)/);
    assert.deepEqual(hashOf(files), h);
  });

  test('zero-superblock on a device without one', () => {
    const blank = sparseFile(p('blank'), MiB);
    // mdadm says so and exits 0 (Kill.c's "no superblock" is masked out of the exit status)
    refused(['--zero-superblock', blank], [blank], 0, /Unrecognised md component device/);
    assert.equal(tsmd(['--zero-superblock', '--force', blank]).status, 0);
  });
});
