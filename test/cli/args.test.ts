/** mdadm's argument grammar as tsmd parses it. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseArgs, parseLevel, parseSizeKiB, UsageError } from '../../src/mdadm/args.js';
import { nameFromMdDevice, setNameFor } from '../../src/mdadm/main.js';

describe('mdadm grammar', () => {
  test('create with long, short, attached and separate values', () => {
    const a = parseArgs([
      '-C',
      '/dev/md0',
      '-l5',
      '-n',
      '4',
      '--chunk=64',
      '-pls',
      '--bitmap',
      'internal',
      'a',
      'b',
      'c',
      'd',
    ]);
    assert.equal(a.mode, 'create');
    assert.equal(a.mdDevice, '/dev/md0');
    assert.deepEqual(a.devices, ['a', 'b', 'c', 'd']);
    assert.equal(a.opts.get('level'), '5');
    assert.equal(a.opts.get('raid-devices'), '4');
    assert.equal(a.opts.get('chunk'), '64');
    assert.equal(a.opts.get('layout'), 'ls');
    assert.equal(a.opts.get('bitmap'), 'internal');
  });

  test('mode-dependent letters: -f force/fail, -b bitmap/brief, -c chunk/config, -W write-mostly/wait', () => {
    assert.ok(parseArgs(['--create', 'md0', '-f', '-l1', '-n2', 'a', 'b']).opts.has('force'));
    const m = parseArgs(['/dev/md0', '-f', '/dev/sdb']);
    assert.equal(m.mode, 'manage');
    assert.deepEqual(m.manageOps, [{ op: 'fail', devices: ['/dev/sdb'], writeMostly: [undefined] }]);
    assert.equal(m.mdDevice, '/dev/md0');
    assert.equal(parseArgs(['-C', 'md0', '-binternal']).opts.get('bitmap'), 'internal');
    assert.ok(parseArgs(['-E', '-b', 'x']).opts.has('brief'));
    assert.equal(parseArgs(['-C', 'md0', '-c', '128']).opts.get('chunk'), '128');
    assert.equal(
      parseArgs(['-A', 'md0', '-c', '/etc/mdadm.conf']).opts.get('config'),
      '/etc/mdadm.conf',
    );
    assert.ok(parseArgs(['-C', 'md0', '-W']).opts.has('write-mostly'));
    assert.equal(parseArgs(['-W', '/dev/md0']).misc, 'wait');
  });

  test('bundled flags and misc modes', () => {
    const a = parseArgs(['-Esv', 'x', 'y']);
    assert.equal(a.misc, 'examine');
    assert.ok(a.opts.has('scan'));
    assert.equal(a.verbose, 1);
    assert.deepEqual(a.devices, ['x', 'y']);
    assert.equal(parseArgs(['--zero-superblock', 'x']).misc, 'zero-superblock');
    assert.equal(parseArgs(['-X', 'x']).misc, 'examine-bitmap');
    assert.equal(parseArgs(['-A', 'md0', 'a', '--detail']).misc, 'detail');
  });

  test('manage ops keep their devices in order', () => {
    const a = parseArgs([
      '--manage',
      '/dev/md0',
      '--fail',
      'sdb',
      '--remove',
      'sdb',
      '--add',
      'sdc',
      'sdd',
    ]);
    assert.deepEqual(a.manageOps, [
      { op: 'fail', devices: ['sdb'], writeMostly: [undefined] },
      { op: 'remove', devices: ['sdb'], writeMostly: [undefined] },
      { op: 'add', devices: ['sdc', 'sdd'], writeMostly: [undefined, undefined] },
    ]);
  });

  test('-W/--write-mostly and --readwrite mark the member devices that follow them (mdadm)', () => {
    const c = parseArgs(['-C', '/dev/md0', '-l1', '-n3', 'a', '-W', 'b', 'c']);
    assert.deepEqual([...c.writeMostly], [['b', true], ['c', true]]);
    assert.deepEqual(c.devices, ['a', 'b', 'c']);
    const m = parseArgs(['/dev/md0', '--add', 'x', '--write-mostly', 'y', '--readwrite', 'z']);
    assert.equal(m.misc, null);
    assert.deepEqual(m.manageOps, [{ op: 'add', devices: ['x', 'y', 'z'], writeMostly: [undefined, true, false] }]);
    assert.equal(parseArgs(['--readwrite', '/dev/md0']).misc, 'readwrite');
  });

  test('errors are usage errors', () => {
    assert.throws(() => parseArgs(['--create', '--assemble']), UsageError);
    assert.throws(() => parseArgs(['--bogus']), /unrecognised option --bogus/);
    assert.throws(() => parseArgs(['-C', 'md0', '--level']), /requires an argument/);
    assert.throws(() => parseArgs(['-C', 'md0', '--run=yes']), /does not take a value/);
    assert.throws(() => parseArgs(['-j']), /invalid option -- 'j'/);
  });

  test('sizes, levels and names as mdadm reads them', () => {
    assert.equal(parseSizeKiB('64', 'chunk'), 64);
    assert.equal(parseSizeKiB('1M', 'chunk'), 1024);
    assert.equal(parseSizeKiB('2g', 'size'), 2 * 1024 * 1024);
    assert.throws(() => parseSizeKiB('12Q', 'chunk'), UsageError);
    assert.equal(parseLevel('mirror'), 1);
    assert.equal(parseLevel('raid10'), 10);
    assert.equal(parseLevel('linear'), -1);
    assert.throws(() => parseLevel('raid7'), /invalid raid level/);
    assert.equal(nameFromMdDevice('/dev/md0'), '0');
    assert.equal(nameFromMdDevice('/dev/md/home'), 'home');
    assert.equal(nameFromMdDevice('md127'), '127');
    assert.equal(nameFromMdDevice('/dev/md_d0'), 'd0');
    assert.equal(setNameFor('home', 'host'), 'host:home');
    assert.equal(setNameFor('a:b', 'host'), 'a:b');
    assert.equal(setNameFor('x', null), 'x');
    assert.equal(setNameFor('n'.repeat(40), 'host'), 'n'.repeat(31));
  });
});
