/**
 * The house's layers (shared/DESIGN.md "The house"): every import in src/ points to its own
 * layer or one below it, never up. A module that needs something from above is a sign that the
 * something belongs lower down (move the helper down, or pass it in from above).
 *
 * Every .ts file under src/ is read and its static imports and re-exports (`import ... from`,
 * `import '...'`, `export ... from`, type-only ones included) and dynamic `import('...')`
 * (calls and type positions), and `new URL('...', import.meta.url)` (how a worker thread's
 * module is named), are resolved to the layer they land in. node: builtins and
 * packages are not layers and are ignored.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix, relative, sep } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * The layers, top to bottom; a module may import its own layer and any layer after it in this
 * list. The key is a directory under src/ (or a file directly under src/, without .ts).
 */
const LAYERS: ReadonlyArray<readonly [layer: string, what: string]> = [
  ['index', 'src/index.ts: tsmd as a library, re-exports the public surface of the layers below'],
  ['cli', 'the tsmd process entry: argv, forwarding to a daemon over the control socket, starting the daemon, progress bar, --monitor alerts'],
  ['daemon', 'the node process: control socket RPC, array lifecycle, mdstat file, metrics, NBD exports'],
  ['mdadm', 'the mdadm operations: grammar (args), create/assemble/manage/grow/misc, --detail/--examine text, the running-array registry'],
  ['nbd', 'NBD server (protocol codec + connection state machine) over any BlockTarget'],
  ['sim', 'deterministic simulator driving md/ + cluster/ (planned: not under src/ yet)'],
  ['cluster', 'md-cluster protocol and the DLM (interface, in-memory, etcd)'],
  ['md', 'the array core: members, superblock I/O, bitmap runtime, sync engine, faults'],
  ['raid', 'personalities, geometry, parity kernels, the sync offload threads'],
  ['format', 'pure encode/decode of on-disk structures (superblock 1.x, bitmap); no I/O'],
  ['io', 'BlockDevice: file, block device, memory, fault-injecting'],
  ['env', 'clock, timers, randomness: injected, never global'],
  ['util', 'small helpers with no tsmd knowledge (async)'],
  ['errors', 'src/errors.ts: TsmdError, the error codes, assert; imports nothing of tsmd'],
];

const RANK: ReadonlyMap<string, number> = new Map(LAYERS.map(([name], i) => [name, i]));

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

/**
 * The module specifiers a source imports, with the line each is on. Static forms are matched
 * only where a statement starts a line (so prose in comments does not count); `import('...')`
 * anywhere except on a comment line.
 */
export function importsOf(text: string): Array<{ spec: string; line: number }> {
  const found: Array<{ spec: string; line: number }> = [];
  const lineAt = (index: number): number => text.slice(0, index).split('\n').length;
  // import x from '..', import { a, type b } from '..', import type X from '..', import * as n
  // from '..', export { a } from '..', export * from '..', export type { X } from '..'; between
  // the keyword and `from` only what an import clause holds (names, braces, commas, `*`), so
  // `export interface X { /** read from '..' */ }` is not taken for one
  const fromRe = /^[ \t]*(?:import|export)\b[\w$\s,{}*]*?\bfrom\s*(['"])([^'"]+)\1/gm;
  // import '..' (for its side effects)
  const bareRe = /^[ \t]*import\s*(['"])([^'"]+)\1/gm;
  // import('..'), await import('..'), import('..').Type
  const dynRe = /\bimport\s*\(\s*(['"])([^'"]+)\1\s*\)/g;
  // new URL('./worker.js', import.meta.url): a module loaded by path (a worker thread's, say)
  const urlRe = /\bnew\s+URL\s*\(\s*(['"])([^'"]+)\1\s*,\s*import\.meta\.url\s*\)/g;
  for (const re of [fromRe, bareRe]) {
    for (const m of text.matchAll(re)) found.push({ spec: m[2]!, line: lineAt(m.index) });
  }
  const lines = text.split('\n');
  for (const m of [...text.matchAll(dynRe), ...text.matchAll(urlRe)]) {
    const line = lineAt(m.index);
    if (/^\s*(?:\*|\/\/|\/\*)/.test(lines[line - 1]!)) continue;
    found.push({ spec: m[2]!, line });
  }
  return found.sort((a, b) => a.line - b.line);
}

/** The layer of a path relative to src/ (posix separators), or null outside src/. */
export function layerOf(srcRelative: string): string | null {
  if (srcRelative.startsWith('../') || srcRelative === '..') return null;
  const parts = srcRelative.split('/');
  return parts.length === 1 ? parts[0]!.replace(/\.[cm]?[jt]s$/, '') : parts[0]!;
}

/**
 * The upward (or unplaceable) imports among `files`: paths relative to src/, posix separators,
 * with their text.
 */
export function violations(files: ReadonlyArray<{ path: string; text: string }>): string[] {
  const out: string[] = [];
  for (const { path, text } of files) {
    const from = layerOf(path)!;
    const fromRank = RANK.get(from);
    if (fromRank === undefined) {
      out.push(`src/${path}: layer '${from}' is not in the layer table of test/layers.test.ts (add it where it belongs)`);
      continue;
    }
    for (const { spec, line } of importsOf(text)) {
      if (!spec.startsWith('./') && !spec.startsWith('../')) continue; // node: builtins and packages
      const target = posix.normalize(posix.join(posix.dirname(path), spec));
      const to = layerOf(target);
      if (to === null) {
        out.push(`src/${path}:${line}: imports '${spec}', outside src/`);
        continue;
      }
      const toRank = RANK.get(to);
      if (toRank === undefined) {
        out.push(`src/${path}:${line}: imports '${spec}' from '${to}', which is not in the layer table`);
      } else if (toRank < fromRank) {
        out.push(`src/${path}:${line}: ${from} imports '${spec}' from ${to}, a layer above it`);
      }
    }
  }
  return out;
}

function sourcesUnder(dir: string): Array<{ path: string; text: string }> {
  const out: Array<{ path: string; text: string }> = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, e.name);
    if (e.isDirectory()) out.push(...sourcesUnder(full));
    else if (e.name.endsWith('.ts')) out.push({ path: relative(SRC, full).split(sep).join('/'), text: readFileSync(full, 'utf8') });
  }
  return out;
}

test('every import in src/ points to its own layer or a lower one', () => {
  const files = sourcesUnder(SRC);
  assert.ok(files.length > 50, `found only ${files.length} sources under ${SRC}`);
  const bad = violations(files);
  const table = LAYERS.map(([name, what], i) => `  ${i}. ${name}: ${what}`).join('\n');
  assert.deepEqual(bad, [], `${bad.length} import(s) point up the layers:\n  ${bad.join('\n  ')}\n\nThe layers, top to bottom:\n${table}`);
});

test('the import scanner sees every form of import and skips builtins, packages and comments', () => {
  const text = [
    "import { a, type B } from '../x/one.js';",
    "import type { C } from '../x/two.js';",
    'import {',
    '  d,',
    '  e,',
    "} from '../x/three.js';",
    "import * as ns from './four.js';",
    'import def, { f } from "../x/five.js";',
    "import '../x/six.js';",
    "export { g } from '../x/seven.js';",
    "export * from '../x/eight.js';",
    "export * as nine from '../x/nine.js';",
    "export type { H } from '../x/ten.js';",
    "const m = await import('../x/eleven.js');",
    "let t: import('../x/twelve.js').T;",
    "const w = new Worker(new URL('./thirteen.js', import.meta.url));",
    "import { readFileSync } from 'node:fs';",
    "import pino from 'pino';",
    ' * see import { z } from \'../x/not-in-a-comment.js\'',
    " * or import('../x/nor-this.js')",
    "// import('../x/nor-that.js')",
    "const s = 'not an import from \\'../x/string.js\\'';",
  ].join('\n');
  assert.deepEqual(importsOf(text).map((i) => i.spec), [
    '../x/one.js',
    '../x/two.js',
    '../x/three.js',
    './four.js',
    '../x/five.js',
    '../x/six.js',
    '../x/seven.js',
    '../x/eight.js',
    '../x/nine.js',
    '../x/ten.js',
    '../x/eleven.js',
    '../x/twelve.js',
    './thirteen.js',
    'node:fs',
    'pino',
  ]);
});

test('an upward import is reported with file, line and both layers; down, sideways, builtins and packages are not', () => {
  const bad = violations([
    { path: 'md/fine.ts', text: "import { x } from '../raid/a.js';\nimport { y } from './b.js';\nimport { z } from '../errors.js';\nimport pino from 'pino';\nimport { readFileSync } from 'node:fs';" },
    { path: 'io/up.ts', text: "import { x } from '../errors.js';\nimport type { Y } from '../raid/offload/bulk.js';" },
    { path: 'errors.ts', text: "const nbd = await import('./nbd/protocol.js');" },
    { path: 'format/out.ts', text: "import { x } from '../../test/helpers/a.js';" },
    { path: 'nowhere/a.ts', text: '' },
  ]);
  assert.deepEqual(bad, [
    "src/io/up.ts:2: io imports '../raid/offload/bulk.js' from raid, a layer above it",
    "src/errors.ts:1: errors imports './nbd/protocol.js' from nbd, a layer above it",
    "src/format/out.ts:1: imports '../../test/helpers/a.js', outside src/",
    "src/nowhere/a.ts: layer 'nowhere' is not in the layer table of test/layers.test.ts (add it where it belongs)",
  ]);
});
