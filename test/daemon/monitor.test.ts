/**
 * tsmd --monitor as mdadm 4.2's Monitor.c runs: --test adds a TestMessage to the first pass and
 * the monitor goes on (only --oneshot ends it); --mail sends Fail/Test/Spares/Degrade events
 * through sendmail (TSMD_SENDMAIL here: a script that keeps each mail) with the node's mdstat
 * quoted; events with nowhere to go are printed on stdout in mdadm's words; with no redundant
 * array to watch it stops ("No array with redundancy detected, stopping").
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type TestDaemon, untilAsync } from '../helpers/daemon.js';
import { alertProgram, run, sparseFile, tempDir, tsmdBin } from '../helpers/tools.js';

const MiB = 1024 * 1024;

/** A stand-in MTA for TSMD_SENDMAIL: each mail in its own file under `mails`, its argv first. */
function standInMta(dir: string, name: string): { sendmail: string; mails: string } {
  const mails = join(dir, `${name}-mails`);
  const sendmail = join(dir, `${name}.sh`);
  writeFileSync(sendmail, `#!/bin/sh\nmkdir -p ${mails}\nf=$(mktemp ${mails}/mail.XXXXXX)\necho "argv: $*" > "$f"\ncat >> "$f"\n`);
  chmodSync(sendmail, 0o755);
  return { sendmail, mails };
}

describe('--monitor', () => {
  let dir: ReturnType<typeof tempDir>;
  let d: TestDaemon;
  before(async () => {
    dir = tempDir('monitor');
    d = await startDaemon(join(dir.path, 'run'));
  });
  after(async () => {
    await d?.stop();
    dir?.cleanup();
  });

  test('--test: a TestMessage in the first pass only, then it goes on monitoring; --mail mails Test and Fail with the mdstat', async () => {
    const files = [0, 1].map((k) => sparseFile(join(dir.path, `m${k}.img`), 16 * MiB));
    let r = d.tsmd(['--create', '/dev/md1', '-l1', '-n2', '--run', '--assume-clean', ...files]);
    assert.equal(r.status, 0, r.stderr);
    const { program, events } = alertProgram(dir.path, 'handler');
    const { sendmail, mails } = standInMta(dir.path, 'mta');
    const mon = spawn(process.execPath, [tsmdBin, '--run-dir', d.runDir, '--monitor', '--test', '--delay=0.2', `--program=${program}`, '--mail=ops@example.org', '/dev/md1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TSMD_SENDMAIL: `${sendmail} -t` },
    });
    let out = '';
    mon.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    mon.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
    try {
      await untilAsync('TestMessage', async () => /^TestMessage \/dev\/md1 $/m.test(events()));
      // several more passes: still running, no second TestMessage
      await new Promise((res) => setTimeout(res, 1000));
      assert.equal(mon.exitCode, null, `the monitor goes on after --test's first pass: ${out}`);
      r = d.tsmd(['/dev/md1', '--fail', files[1]!]);
      assert.equal(r.status, 0, r.stderr);
      await untilAsync('Fail', async () => /^Fail \/dev\/md1 /m.test(events()));
      const seen = events().trim().split('\n');
      assert.equal(seen.filter((l) => l.startsWith('TestMessage')).length, 1, seen.join('\n'));
      await untilAsync('two mails', async () => existsSync(mails) && readdirSync(mails).length >= 2);
      const texts = readdirSync(mails).map((f) => readFileSync(join(mails, f), 'utf8'));
      const test = texts.find((t) => /^Subject: TestMessage event on \/dev\/md1:/m.test(t));
      assert.ok(test, texts.join('\n----\n'));
      assert.match(test, /^argv: -t$/m);
      assert.match(test, /^To: ops@example\.org$/m);
      assert.match(test, new RegExp(`^Subject: TestMessage event on /dev/md1:${hostname()}$`, 'm'));
      assert.match(test, /^A TestMessage event had been detected on md device \/dev\/md1\.$/m);
      // the node's mdstat as it was, quoted after mdadm's P.S.
      assert.match(test, /P\.S\. The \/proc\/mdstat file currently contains the following:\n\nPersonalities : [^\n]*\nmd1 : active raid1 /);
      const fail = texts.find((t) => /^Subject: Fail event on \/dev\/md1:/m.test(t));
      assert.ok(fail, texts.join('\n----\n'));
      assert.match(fail, new RegExp(`^It could be related to component device ${files[1]!.replace(/[.]/g, '\\.')}\\.$`, 'm'));
      // with a program and a mail address, nothing on stdout (Monitor.c prints only when an
      // event has nowhere else to go)
      assert.doesNotMatch(out, /TestMessage|Fail/);
    } finally {
      mon.kill();
    }
    r = d.tsmd(['--stop', '/dev/md1']);
    assert.equal(r.status, 0, r.stderr);
  });

  test("mdadm.conf's MAILADDR, MAILFROM, PROGRAM and ARRAY spares= stand in for the command line", async () => {
    const files = [0, 1].map((k) => sparseFile(join(dir.path, `c${k}.img`), 16 * MiB));
    let r = d.tsmd(['--create', '/dev/md4', '-l1', '-n2', '--run', '--assume-clean', ...files]);
    assert.equal(r.status, 0, r.stderr);
    const { program, events } = alertProgram(dir.path, 'conf-handler');
    const { sendmail, mails } = standInMta(dir.path, 'conf-mta');
    const conf = join(dir.path, 'monitor.conf');
    // config.c: the first MAILADDR word, every MAILFROM word, the first PROGRAM word
    writeFileSync(conf, `MAILADDR ops@example.org second@example.org\nMAILFROM tsmd monitor\n  <monitor@example.org>\nPROGRAM ${program}\nARRAY /dev/md4 spares=1\n`);
    // --scan with nowhere to send events on the command line: the config's are enough
    r = run(process.execPath, [tsmdBin, '--run-dir', d.runDir, '--monitor', '--scan', '--oneshot', '--test', `--config=${conf}`], { env: { ...process.env, TSMD_SENDMAIL: sendmail } });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /from config file/, 'with --scan mdadm does not say where the program came from');
    assert.match(events(), /^TestMessage \/dev\/md4 $/m);
    assert.match(events(), /^SparesMissing \/dev\/md4 $/m, 'spares=1 on an array with none');
    const texts = readdirSync(mails).map((f) => readFileSync(join(mails, f), 'utf8'));
    assert.equal(texts.length, 2, 'TestMessage and SparesMissing are mailed');
    for (const t of texts) {
      assert.match(t, /^From: tsmd monitor <monitor@example\.org>$/m);
      assert.match(t, /^To: ops@example\.org$/m);
    }
    assert.ok(texts.some((t) => /^Subject: SparesMissing event on \/dev\/md4:/m.test(t)));
    // given the device instead of --scan, mdadm says where they came from
    r = run(process.execPath, [tsmdBin, '--run-dir', d.runDir, '--monitor', '--oneshot', `--config=${conf}`, '/dev/md4'], { env: { ...process.env, TSMD_SENDMAIL: sendmail } });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`^tsmd: Monitor using program "${program.replace(/[.]/g, '\\.')}" from config file$`, 'm'));
    assert.match(r.stderr, /^tsmd: Monitor using email address "ops@example\.org" from config file$/m);
    r = d.tsmd(['--stop', '/dev/md4']);
    assert.equal(r.status, 0, r.stderr);
  });

  test('events with nowhere to go are printed in mdadm\'s words; with only raid0 to watch it stops', () => {
    const files = [0, 1].map((k) => sparseFile(join(dir.path, `z${k}.img`), 16 * MiB));
    let r = d.tsmd(['--create', '/dev/md2', '-l1', '-n2', '--run', '--assume-clean', ...files]);
    assert.equal(r.status, 0, r.stderr);
    r = d.tsmd(['--monitor', '--oneshot', '--test', '/dev/md2']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d: TestMessage on \/dev\/md2 unknown device$/m);
    r = d.tsmd(['--stop', '/dev/md2']);
    assert.equal(r.status, 0, r.stderr);
    const striped = [0, 1].map((k) => sparseFile(join(dir.path, `s${k}.img`), 16 * MiB));
    r = d.tsmd(['--create', '/dev/md3', '-l0', '-n2', '--run', ...striped]);
    assert.equal(r.status, 0, r.stderr);
    // not --oneshot: Monitor.c's loop ends by itself when nothing it watches is redundant
    const t0 = Date.now();
    const m = run(process.execPath, [tsmdBin, '--run-dir', d.runDir, '--monitor', '--delay=30', '/dev/md3'], { timeoutMs: 20_000 });
    assert.equal(m.status, 0, m.stderr);
    assert.match(m.stderr, /^tsmd: No array with redundancy detected, stopping$/m);
    assert.ok(Date.now() - t0 < 15_000, 'it did not wait for the next pass');
    r = d.tsmd(['--stop', '/dev/md3']);
    assert.equal(r.status, 0, r.stderr);
  });
});
