#!/usr/bin/env node
// npm start: the tsmd demo (see src/cli/demo.ts). Needs the build that npm ci runs.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const entry = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'src', 'cli', 'demo.js');
if (!existsSync(entry)) {
  process.stderr.write('tsmd: dist/ is missing; run "npm ci" first\n');
  process.exit(1);
}
await import(entry);
