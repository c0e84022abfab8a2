/**
 * Test helpers for the mdadm report formatters: read the kernel-md fixtures (only the first
 * KiBs of each xz image are decompressed), split mdadm-info.txt into its sections, and print
 * a unified-style line diff for assertion messages.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BitmapSlot } from '../../src/mdadm/report/examine-bitmap.js';
import { bitmapSlotLocations } from '../../src/mdadm/report/examine-bitmap.js';
import { decodeBitmapSuper } from '../../src/format/bitmap.js';
import { decodeSuperblock, Feature, type Superblock1 } from '../../src/format/superblock.js';

export const FIXTURES_DIR = '/work/shared/fixtures/kernel-md';

/** Decompress the first `bytes` bytes of an .xz file (xz -dc, stopped early). */
export function readXzPrefix(path: string, bytes: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const child = spawn('xz', ['-dc', path], { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let have = 0;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      const all = Buffer.concat(chunks);
      resolve(new Uint8Array(all.subarray(0, Math.min(bytes, all.length))));
    };
    child.stdout.on('data', (c: Buffer) => {
      if (done) return;
      chunks.push(c);
      have += c.length;
      if (have >= bytes) {
        finish();
        child.stdout.destroy();
        child.kill();
      }
    });
    child.on('error', (e) => {
      if (!done) {
        done = true;
        reject(e);
      }
    });
    child.on('close', () => finish());
  });
}

export interface Section {
  title: string;
  /** section body without the trailing blank separator lines */
  lines: string[];
  /** index of the section's title line in the file */
  at: number;
}

/** Split mdadm-info.txt into "######## <title>" sections (a "$ " command line ends one). */
export function parseInfo(text: string): { sections: Section[]; lines: string[] } {
  const lines = text.split('\n');
  const sections: Section[] = [];
  let cur: Section | null = null;
  const close = () => {
    if (!cur) return;
    while (cur.lines.length && cur.lines[cur.lines.length - 1] === '') cur.lines.pop();
    sections.push(cur);
    cur = null;
  };
  lines.forEach((l, i) => {
    if (l.startsWith('######## ')) {
      close();
      cur = { title: l.slice(9), lines: [], at: i };
    } else if (l.startsWith('$ ')) {
      close();
    } else if (cur) {
      cur.lines.push(l);
    }
  });
  close();
  return { sections, lines };
}

/** Sections after the FINAL STATE (or SECOND VM BOOT) marker: what the images hold. */
export function finalSections(sections: Section[]): Section[] {
  const i = sections.findIndex(
    (s) => s.title.startsWith('FINAL STATE') || s.title.startsWith('SECOND VM BOOT'),
  );
  if (i < 0) throw new Error('no FINAL STATE section');
  return sections.slice(i + 1);
}

export function fixtureDirs(): string[] {
  return readdirSync(FIXTURES_DIR, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
}

export function memberImages(dir: string): string[] {
  return readdirSync(join(FIXTURES_DIR, dir))
    .filter((f) => /^d\d+\.img\.xz$/.test(f))
    .sort((a, b) => Number.parseInt(a.slice(1), 10) - Number.parseInt(b.slice(1), 10));
}

/** Uncompressed sizes from MANIFEST.txt ("dir/dN.img" -> bytes). */
export function manifestSizes(): Map<string, number> {
  const m = new Map<string, number>();
  for (const l of readFileSync(join(FIXTURES_DIR, 'MANIFEST.txt'), 'utf8').split('\n')) {
    if (!l || l.startsWith('#')) continue;
    const [path, size] = l.trim().split(/\s+/);
    if (path && size) m.set(path, Number(size));
  }
  return m;
}

export function vdName(index: number): string {
  return `/dev/vd${String.fromCharCode(97 + index)}`;
}

export interface Member {
  raw: Uint8Array;
  sb: Superblock1;
  slots: BitmapSlot[];
}

/** Decode the superblock at sbStartSector and its bitmap slots from a device prefix. */
export function decodeMember(dev: Uint8Array, sbStartSector: number): Member {
  const raw = dev.subarray(sbStartSector * 512, sbStartSector * 512 + 4096);
  const sb = decodeSuperblock(raw);
  const slots: BitmapSlot[] = [];
  if (sb.featureMap & Feature.BITMAP_OFFSET) {
    const at = Number((sb.superOffset + BigInt(sb.bitmapOffset)) * 512n);
    const first = decodeBitmapSuper(dev.subarray(at, at + 256));
    for (const loc of bitmapSlotLocations(sb, first)) {
      const off = Number(loc.offsetBytes);
      slots.push({
        sup: decodeBitmapSuper(dev.subarray(off, off + 256)),
        bits: dev.subarray(off + 256, off + loc.bytes),
      });
    }
  }
  return { raw, sb, slots };
}

/** A unified-style diff of two line lists (small inputs; LCS table). */
export function lineDiff(expected: string[], actual: string[]): string {
  const n = expected.length;
  const m = actual.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i]![j] =
        expected[i] === actual[j]
          ? lcs[i + 1]![j + 1]! + 1
          : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const out: string[] = ['--- expected (mdadm)', '+++ actual (tsmd)'];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && expected[i] === actual[j]) {
      out.push(`  ${JSON.stringify(expected[i])}`);
      i++;
      j++;
    } else if (j < m && (i >= n || lcs[i]![j + 1]! >= lcs[i + 1]![j]!)) {
      out.push(`+ ${JSON.stringify(actual[j])}`);
      j++;
    } else {
      out.push(`- ${JSON.stringify(expected[i])}`);
      i++;
    }
  }
  return out.join('\n');
}

/** Text (ending in "\n") -> lines without the final empty element. */
export function textLines(text: string): string[] {
  const l = text.split('\n');
  if (l[l.length - 1] === '') l.pop();
  return l;
}
