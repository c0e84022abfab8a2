/**
 * Bench-only preload (`NODE_OPTIONS=--import=.../direct-members.js` in a daemon's environment):
 * while the file named by TSMD_BENCH_DIRECT_FLAG exists, every member the daemon opens is opened
 * O_DIRECT ('try': buffered where refused), as md-cluster reopens the members of a clustered
 * array. bench/cluster.ts uses it to run the standalone baseline under the same I/O policy as
 * the clustered array, so that the ratio measures md-cluster and not the page cache. The flag is
 * read at every open, so one daemon serves both the direct and the buffered (deployed) baseline.
 */
import { existsSync } from 'node:fs';
import { FileBlockDevice, type OpenOptions } from '../src/io/file-device.js';

const flag = process.env.TSMD_BENCH_DIRECT_FLAG;
if (flag) {
  const open = FileBlockDevice.open.bind(FileBlockDevice);
  FileBlockDevice.open = (path: string, opts: OpenOptions = {}): Promise<FileBlockDevice> =>
    open(path, !opts.readOnly && !opts.direct && existsSync(flag) ? { ...opts, direct: 'try' } : opts);
}

/**
 * TSMD_BENCH_PROF_DIR: a CPU profile from the start (--cpu-prof is refused in NODE_OPTIONS);
 * each SIGUSR2 writes the profile so far to the directory and starts the next one.
 */
const profDir = process.env.TSMD_BENCH_PROF_DIR;
if (profDir) {
  const { Session } = await import('node:inspector');
  const { writeFileSync } = await import('node:fs');
  const s = new Session();
  s.connect();
  const post = (method: string): Promise<unknown> =>
    new Promise((res, rej) => s.post(method, (err, r) => (err ? rej(err) : res(r))));
  await post('Profiler.enable');
  await post('Profiler.start');
  let n = 0;
  process.on('SIGUSR2', () => {
    void (async () => {
      const r = (await post('Profiler.stop')) as { profile: unknown };
      writeFileSync(`${profDir}/daemon-${process.pid}-${n++}.cpuprofile`, JSON.stringify(r.profile));
      await post('Profiler.start');
    })();
  });
}

/**
 * TSMD_BENCH_TRACE=FILE: md-cluster's operations that a sync or a write waits on, timed
 * (start offset and duration, ms), one line each, appended to FILE: where a clustered run's
 * time goes next to the standalone one.
 */
const traceFile = process.env.TSMD_BENCH_TRACE;
if (traceFile) {
  const { appendFileSync } = await import('node:fs');
  const { MdCluster } = await import('../src/cluster/md-cluster/md-cluster.js');
  const { SyncEngine } = await import('../src/md/sync.js');
  const t0 = performance.now();
  const wrap = (proto: Record<string, unknown>, cls: string, names: string[]): void => {
    for (const name of names) {
      const f = proto[name];
      if (typeof f !== 'function') continue;
      proto[name] = function (this: unknown, ...args: unknown[]): unknown {
        const s = performance.now();
        const r = (f as (...a: unknown[]) => unknown).apply(this, args);
        const a = args[0] as { pos?: number; total?: number } | undefined;
        // a sync run: where the window starts (it is taken at the call, before the run moves on)
        const what = a && typeof a.pos === 'number' ? `pos ${a.pos} of ${a.total}` : JSON.stringify(a ?? null, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))?.slice(0, 80);
        const log = () => appendFileSync(traceFile, `${(s - t0).toFixed(1)} ${(performance.now() - s).toFixed(2)} ${cls}.${name} ${what}\n`);
        if (r instanceof Promise) return r.finally(log);
        log();
        return r;
      };
    }
  };
  wrap(MdCluster.prototype as unknown as Record<string, unknown>, 'MdCluster', ['resyncInfoUpdate', 'resyncStart', 'resyncFinish', 'metadataUpdateStart', 'metadataUpdateFinish']);
  wrap(SyncEngine.prototype as unknown as Record<string, unknown>, 'SyncEngine', ['syncWindow']);
  // a sync window's barrier is taken once its cluster window is announced: the gap from the
  // window's start is how long the sync waited for a RESYNCING round
  const { SyncBarrier } = await import('../src/md/barrier.js');
  wrap(SyncBarrier.prototype as unknown as Record<string, unknown>, 'SyncBarrier', ['lockRanges']);
  // member I/O counted by kind and size (small: < 64 KiB, the bitmap's and superblock's
  // writes), written and reset at each SIGUSR2 (the bench's phase marks)
  const counts = new Map<string, { n: number; bytes: number }>();
  const proto = FileBlockDevice.prototype as unknown as Record<string, (...a: unknown[]) => Promise<void>>;
  for (const op of ['read', 'write', 'flush'] as const) {
    const f = proto[op]!;
    proto[op] = function (this: unknown, ...args: unknown[]): Promise<void> {
      const len = op === 'flush' ? 0 : (args[0] as Uint8Array).length;
      const k = `${op}${op === 'flush' ? '' : len < 65536 ? '<64K' : '>=64K'}`;
      const c = counts.get(k) ?? { n: 0, bytes: 0 };
      c.n++;
      c.bytes += len;
      counts.set(k, c);
      return f.apply(this, args);
    };
  }
  process.on('SIGUSR2', () => {
    appendFileSync(traceFile, `${(performance.now() - t0).toFixed(1)} mark member-io ${[...counts].map(([k, c]) => `${k} ${c.n} (${(c.bytes / 1048576).toFixed(1)} MiB)`).join(', ')}\n`);
    counts.clear();
  });
}
