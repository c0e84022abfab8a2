/**
 * Access to shared/fixtures/kernel-md: member images made by the real Linux md driver and
 * mdadm 4.2, decompressed once per process into a temp dir (sparse).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** The shared/ folder: beside the repo (CI: clone with shared/ beside it) or TSMD_SHARED. */
export function sharedDir(): string {
  const candidates = [
    process.env.TSMD_SHARED,
    process.env.TSMD_SHARED_DIR,
    resolve(here, '../../../shared'), // dist/test/helpers -> repo/..
    resolve(here, '../../../../shared'),
    '/work/shared',
  ].filter((x): x is string => !!x);
  for (const c of candidates)
    if (existsSync(join(c, 'fixtures', 'kernel-md', 'MANIFEST.txt'))) return c;
  throw new Error(
    `shared/ with fixtures/kernel-md not found (tried ${candidates.join(', ')}); set TSMD_SHARED`,
  );
}

export function fixtureRoot(): string {
  return join(sharedDir(), 'fixtures', 'kernel-md');
}

export function fixtureNames(): string[] {
  return readdirSync(fixtureRoot(), { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
}

const cacheDir = join(tmpdir(), `tsmd-fixtures-${process.getuid?.() ?? 0}`);

/** Decompressed member image paths of a fixture (d0.img, d1.img, ...), cached across tests. */
export function fixtureMembers(name: string, set = 'kernel-md'): string[] {
  const src = join(sharedDir(), 'fixtures', set, name);
  const out = join(cacheDir, name);
  mkdirSync(out, { recursive: true });
  const files = readdirSync(src)
    .filter((f) => /^d\d+\.img\.xz$/.test(f))
    .sort((a, b) => Number.parseInt(a.slice(1), 10) - Number.parseInt(b.slice(1), 10));
  return files.map((f) => {
    const dst = join(out, f.replace(/\.xz$/, ''));
    if (!existsSync(dst)) {
      // xz -dc | cp --sparse=always keeps the 32 MiB images sparse
      execFileSync('sh', [
        '-c',
        'xz -dc "$1" | cp --sparse=always /dev/stdin "$2.tmp" && mv "$2.tmp" "$2"',
        'sh',
        join(src, f),
        dst,
      ]);
    }
    return dst;
  });
}

export function fixtureInfo(name: string): string {
  return readFileSync(join(fixtureRoot(), name, 'mdadm-info.txt'), 'utf8');
}

/**
 * The fixtures' data pattern: the 64-bit LE word number w of the array holds w XOR key.
 * Checks buf, which holds array bytes starting at offsetBytes. Returns the first bad byte
 * offset (array-relative) or -1.
 */
export function checkPattern(
  buf: Uint8Array,
  offsetBytes: number,
  key = 0x5a5a5a5a5a5a5a5an,
): number {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const keyLo = Number(key & 0xffffffffn);
  const keyHi = Number(key >> 32n);
  for (let i = 0; i < buf.length; i += 8) {
    const w = (offsetBytes + i) / 8;
    const lo = (w % 0x100000000) ^ keyLo;
    const hi = Math.floor(w / 0x100000000) ^ keyHi;
    if (dv.getUint32(i, true) !== lo >>> 0 || dv.getUint32(i + 4, true) !== hi >>> 0)
      return offsetBytes + i;
  }
  return -1;
}

export function fillPattern(buf: Uint8Array, offsetBytes: number, key = 0x5a5a5a5a5a5a5a5an): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const keyLo = Number(key & 0xffffffffn);
  const keyHi = Number(key >> 32n);
  for (let i = 0; i < buf.length; i += 8) {
    const w = (offsetBytes + i) / 8;
    dv.setUint32(i, ((w % 0x100000000) ^ keyLo) >>> 0, true);
    dv.setUint32(i + 4, (Math.floor(w / 0x100000000) ^ keyHi) >>> 0, true);
  }
}
