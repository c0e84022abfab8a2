/**
 * ERROR_CODES (src/errors.ts) end to end: every code's mdadm exit status (what the CLI returns)
 * and NBD error (what a client reads) come from the one table, and the table keeps the values
 * tsmd has always had (mdadm's exit 1 for failures, 2 for usage; the NBD errnos of
 * nbd/errors.ts before the table).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { UsageError } from '../../src/mdadm/args.js';
import { exitCodeOf, main } from '../../src/mdadm/main.js';
import { ERROR_CODES, type ErrorCode, isErrorCode, TsmdError } from '../../src/errors.js';
import { nbdErrnoOf } from '../../src/nbd/errors.js';
import { NbdErrno, type NbdErrnoName } from '../../src/nbd/protocol.js';

/**
 * Written out independently of the table: the NBD errors nbd/errors.ts answered before the
 * table existed. A Record over ErrorCode, so a new code does not compile until it is added here.
 */
const NBD_BEFORE: Record<ErrorCode, NbdErrnoName> = {
  EIO: 'EIO',
  EINVAL: 'EINVAL',
  EBUSY: 'EIO',
  ENOSPC: 'ENOSPC',
  ENODEV: 'ESHUTDOWN',
  ENOENT: 'EIO',
  EEXIST: 'EIO',
  ETIMEDOUT: 'EIO',
  EAGAIN: 'EIO',
  EPERM: 'EPERM',
  EROFS: 'EPERM',
  ENOTSUP: 'ENOTSUP',
  EBADSB: 'EIO',
  ESTALE: 'EIO',
  EDEADLK: 'EIO',
  ECANCELED: 'EIO',
  EFENCED: 'EIO',
};

const CODES = Object.keys(NBD_BEFORE) as ErrorCode[];

describe('error code table', () => {
  test('the table has a row for every code and no other', () => {
    assert.deepEqual(Object.keys(ERROR_CODES).sort(), [...CODES].sort());
    for (const c of CODES) assert.ok(isErrorCode(c), c);
    for (const c of ['EWHAT', 'constructor', 'toString', '', undefined, 5]) assert.equal(isErrorCode(c), false, String(c));
  });

  for (const code of CODES) {
    const row = ERROR_CODES[code];
    test(`${code}: exit ${row.exit}, NBD ${row.nbd}`, () => {
      const e = new TsmdError(code, `failed with ${code}`);
      assert.equal(exitCodeOf(e), row.exit, 'the CLI exit status is the table\'s');
      assert.equal(nbdErrnoOf(e), NbdErrno[row.nbd], 'the NBD error is the table\'s');
      // mdadm: 1 for a failure; 0 is success and 2 is reserved for usage errors
      assert.equal(row.exit, 1);
      assert.equal(row.nbd, NBD_BEFORE[code], 'the NBD error tsmd has always answered');
      // a Node errno error spelled like a tsmd code maps the same (fs errors let through)
      assert.equal(nbdErrnoOf(Object.assign(new Error('x'), { code })), NbdErrno[row.nbd]);
    });
  }

  test('usage errors exit 2; anything else is not a failure the CLI reports (a bug: rethrown)', () => {
    assert.equal(exitCodeOf(new UsageError('no mode given')), 2);
    assert.equal(exitCodeOf(new TypeError('a bug')), null);
    assert.equal(exitCodeOf(Object.assign(new Error('raw fs error'), { code: 'ENOSPC' })), null);
  });

  test('Node errno codes that are not tsmd codes keep their NBD errors', () => {
    const cases: [string, NbdErrnoName][] = [
      ['EDQUOT', 'ENOSPC'],
      ['EFBIG', 'ENOSPC'],
      ['EACCES', 'EPERM'],
      ['EOPNOTSUPP', 'ENOTSUP'],
      ['ESHUTDOWN', 'ESHUTDOWN'],
      ['ENOMEM', 'ENOMEM'],
      ['EMFILE', 'EIO'],
      ['constructor', 'EIO'],
    ];
    for (const [code, nbd] of cases) assert.equal(nbdErrnoOf(Object.assign(new Error('x'), { code })), NbdErrno[nbd], code);
    assert.equal(nbdErrnoOf(new Error('no code')), NbdErrno.EIO);
    assert.equal(nbdErrnoOf('a string'), NbdErrno.EIO);
    assert.equal(nbdErrnoOf(null), NbdErrno.EIO);
  });

  test('the CLI exits with the table\'s status for a TsmdError and 2 for a usage error', async () => {
    const err: string[] = [];
    const io = { out: () => {}, err: (s: string) => void err.push(s), interactive: false, ask: async () => '', env: {} };
    // --status without a daemon: ENODEV
    assert.equal(await main(['--status'], io), ERROR_CODES.ENODEV.exit);
    assert.match(err.join(''), /^tsmd: no node daemon is reachable/);
    assert.equal(await main(['--bogus-option'], io), 2);
  });
});
