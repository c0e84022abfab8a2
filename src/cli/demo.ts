/**
 * `npm start`: a demo of tsmd on this machine. Creates (first run) a RAID5 of four sparse
 * 64 MiB files under ./demo-data (TSMD_DEMO_DIR), writes a data pattern through the array,
 * reads it back degraded (one member left out), and prints what `tsmd --examine` and
 * `tsmd --assemble --detail` show. The NBD-serving node daemon comes with the daemon work.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { openDevice } from '../io/file-device.js';
import { MdArray } from '../md/array.js';
import { main, processIo } from './main.js';

async function demo(): Promise<number> {
  const dir = resolve(process.env.TSMD_DEMO_DIR ?? 'demo-data');
  mkdirSync(dir, { recursive: true });
  const files = [0, 1, 2, 3].map((i) => join(dir, `disk${i}.img`));
  const io = processIo();
  if (!files.every(existsSync)) {
    const { writeFileSync, truncateSync } = await import('node:fs');
    for (const f of files) {
      writeFileSync(f, '');
      truncateSync(f, 64 * 1024 * 1024);
    }
    const rc = await main(
      [
        '--create',
        '/dev/md/demo',
        '--level=5',
        '--raid-devices=4',
        '--chunk=64',
        '--bitmap=internal',
        '--run',
        ...files,
      ],
      io,
    );
    if (rc !== 0) return rc;
  }
  const arr = await MdArray.assemble(await Promise.all(files.map((f) => openDevice(f))));
  const buf = new Uint8Array(1 << 20);
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 31 + 7) & 0xff;
  const t0 = process.hrtime.bigint();
  for (let off = 0; off < arr.sizeBytes; off += buf.length)
    await arr.write(buf.subarray(0, Math.min(buf.length, arr.sizeBytes - off)), off);
  await arr.flush();
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  io.err(`demo: wrote ${arr.sizeBytes >> 20} MiB through raid5 in ${ms.toFixed(0)} ms\n`);
  await arr.close();
  // read it back with member 2 left out: every byte comes back through parity
  const deg = await MdArray.assemble(
    await Promise.all([0, 1, 3].map((i) => openDevice(files[i]!, { readOnly: true }))),
    { run: true, readOnly: true },
  );
  const back = new Uint8Array(buf.length);
  for (let off = 0; off < deg.sizeBytes; off += back.length) {
    const n = Math.min(back.length, deg.sizeBytes - off);
    await deg.read(back.subarray(0, n), off);
    for (let i = 0; i < n; i++)
      if (back[i] !== buf[i]) throw new Error(`demo: mismatch at ${off + i}`);
  }
  io.err(`demo: read back ${deg.sizeBytes >> 20} MiB degraded (without ${files[2]}): identical\n`);
  await deg.close();
  return main(['--assemble', '/dev/md/demo', '--detail', ...files], io);
}

demo().then(
  (rc) => {
    process.exitCode = rc;
  },
  (e) => {
    process.stderr.write(`demo failed: ${e?.stack ?? e}\n`);
    process.exitCode = 1;
  },
);
