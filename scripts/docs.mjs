// Writes the configuration reference into README.md between its config-reference markers, from the
// schema (dist/src/config/reference.js: run `npm run build` first; `npm run docs` does both).
import { readFileSync, writeFileSync } from 'node:fs';
import { referenceMarkdown, undescribed } from '../dist/src/config/reference.js';

const missing = undescribed();
if (missing.length > 0) {
  process.stderr.write(`settings without a description in src/config/reference.ts: ${missing.join(', ')}\n`);
  process.exit(1);
}
const file = new URL('../README.md', import.meta.url);
const readme = readFileSync(file, 'utf8');
const start = '<!-- config-reference:start -->';
const end = '<!-- config-reference:end -->';
const a = readme.indexOf(start);
const b = readme.indexOf(end);
if (a < 0 || b < a) {
  process.stderr.write('README.md has no config-reference markers\n');
  process.exit(1);
}
writeFileSync(file, `${readme.slice(0, a + start.length)}\n${referenceMarkdown()}\n${readme.slice(b)}`);
