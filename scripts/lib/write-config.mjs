// node scripts/lib/write-config.mjs IN OUT KEY.PATH=VALUE...
// Copies the YAML file IN to OUT with the given keys set (comments kept); a value of digits is
// written as a number. `npm start` uses it to run the example configs with its own ports and dirs.
import { readFileSync, writeFileSync } from 'node:fs';
import { parseDocument } from 'yaml';

const [input, output, ...sets] = process.argv.slice(2);
if (input === undefined || output === undefined) {
  process.stderr.write('usage: write-config.mjs IN OUT KEY.PATH=VALUE...\n');
  process.exit(2);
}
const doc = parseDocument(readFileSync(input, 'utf8'));
for (const set of sets) {
  const eq = set.indexOf('=');
  if (eq <= 0) throw new Error(`write-config: "${set}" is not KEY.PATH=VALUE`);
  const value = set.slice(eq + 1);
  doc.setIn(set.slice(0, eq).split('.'), /^\d+$/.test(value) ? Number(value) : value);
}
writeFileSync(output, String(doc));
