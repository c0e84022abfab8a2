/**
 * The /proc/mdstat snapshots recorded in shared/fixtures/kernel-md/<fixture>/mdadm-info.txt,
 * each with the `mdadm --detail` (and `mdadm --examine-bitmap`) output recorded right after it,
 * so that a test can rebuild the array's description from what mdadm reported and compare
 * tsmd's text with the kernel's.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fixtureNames, fixtureRoot } from '../helpers/fixtures.js';

export interface DetailRow {
  /** "Number": the superblock dev_number, or null for a "removed" slot */
  number: number | null;
  /** "RaidDevice": the slot, or null for a spare / faulty member */
  raidDevice: number | null;
  state: string;
  /** "/dev/vda", absent for a removed slot */
  device?: string;
}

export interface Detail {
  fields: Map<string, string>;
  rows: DetailRow[];
}

export interface ExamineBitmap {
  chunkBytes: number;
  bits: number;
}

export interface MdstatSnapshot {
  fixture: string;
  /** 0, 1: position among the fixture's mdstat snapshots */
  index: number;
  /** the STATE title that precedes it */
  state: string;
  /** the recorded file, from "Personalities" through the "unused devices" line and its newline */
  text: string;
  detail: Detail;
  /** the first member's --examine-bitmap after it, if any */
  bitmap?: ExamineBitmap;
}

interface Section {
  title: string;
  body: string[];
}

function sections(text: string): Section[] {
  const out: Section[] = [];
  let cur: Section | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('######## ')) {
      cur = { title: line.slice('######## '.length), body: [] };
      out.push(cur);
    } else if (cur) {
      cur.body.push(line);
    }
  }
  return out;
}

function parseDetail(body: string[]): Detail {
  const fields = new Map<string, string>();
  const rows: DetailRow[] = [];
  let inTable = false;
  for (const line of body) {
    if (/^\s+Number\s+Major\s+Minor\s+RaidDevice\s+State/.test(line)) {
      inTable = true;
      continue;
    }
    if (inTable) {
      const m = /^\s+(\d+|-)\s+\d+\s+\d+\s+(\d+|-)\s+(.*?)\s*(\/dev\/\S+)?$/.exec(line);
      if (!m) continue;
      rows.push({
        number: m[1] === '-' ? null : Number(m[1]),
        raidDevice: m[2] === '-' ? null : Number(m[2]),
        state: m[3]!.trim(),
        ...(m[4] ? { device: m[4] } : {}),
      });
      continue;
    }
    const kv = /^\s*([A-Za-z][A-Za-z ']*?) : (.*)$/.exec(line);
    if (kv) fields.set(kv[1]!.trim(), kv[2]!.trim());
  }
  return { fields, rows };
}

function parseExamineBitmap(body: string[]): ExamineBitmap {
  let chunkBytes = 0;
  let bits = 0;
  for (const line of body) {
    const c = /^\s*Chunksize : (\d+) (B|KB|MB|GB)$/.exec(line);
    if (c) chunkBytes = Number(c[1]) * { B: 1, KB: 1024, MB: 1 << 20, GB: 1 << 30 }[c[2] as 'B' | 'KB' | 'MB' | 'GB'];
    const b = /^\s*Bitmap : (\d+) bits/.exec(line);
    if (b) bits = Number(b[1]);
  }
  if (!chunkBytes || !bits) throw new Error('examine-bitmap section without Chunksize or Bitmap bits');
  return { chunkBytes, bits };
}

/** Every mdstat snapshot of every fixture, in file order. */
export function mdstatSnapshots(): MdstatSnapshot[] {
  const out: MdstatSnapshot[] = [];
  for (const fixture of fixtureNames()) {
    const secs = sections(readFileSync(join(fixtureRoot(), fixture, 'mdadm-info.txt'), 'utf8'));
    let index = 0;
    let state = '';
    for (let i = 0; i < secs.length; i++) {
      const s = secs[i]!;
      if (s.title.startsWith('STATE') || s.title.startsWith('FINAL STATE')) state = s.title;
      if (s.title !== 'cat /proc/mdstat') continue;
      const end = s.body.findIndex((l) => l.startsWith('unused devices:'));
      if (end < 0) throw new Error(`${fixture}: mdstat snapshot without an "unused devices" line`);
      const text = s.body.slice(0, end + 1).join('\n') + '\n';
      let detail: Detail | undefined;
      let bitmap: ExamineBitmap | undefined;
      for (let j = i + 1; j < secs.length; j++) {
        const t = secs[j]!.title;
        if (t === 'cat /proc/mdstat' || t.startsWith('STATE') || t.startsWith('FINAL STATE')) break;
        if (!detail && t.startsWith('mdadm --detail')) detail = parseDetail(secs[j]!.body);
        if (!bitmap && t.startsWith('mdadm --examine-bitmap')) bitmap = parseExamineBitmap(secs[j]!.body);
      }
      if (!detail) throw new Error(`${fixture}: mdstat snapshot ${index} without a following mdadm --detail`);
      out.push({ fixture, index, state, text, detail, ...(bitmap ? { bitmap } : {}) });
      index++;
    }
  }
  return out;
}
