/** Writes one benchmark's section into docs/benchmarks-clip.md (between its own markers); helpers the clip benches share. */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { S_IFMT, S_IFREG, type ClipIndex } from '@cryo/clip';

const FILE = join(import.meta.dirname, '..', 'docs', 'benchmarks-clip.md');
const HEADER = `# clip benchmarks

Produced by \`bench/clip-*.ts\` (\`npm run bench -- clip-build clip-read\`); each section is
rewritten by its benchmark. Machine: 2 cores, Node ${process.versions.node}, loopback registry
(distribution 2.8) where a registry is involved.
`;

export function writeSection(name: string, body: string): void {
  let text = existsSync(FILE) ? readFileSync(FILE, 'utf8') : HEADER;
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  const section = `${start}\n${body.trim()}\n${end}`;
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  text = a >= 0 && b > a ? text.slice(0, a) + section + text.slice(b + end.length) : `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(FILE, text);
  console.log(`wrote section ${name} of ${FILE}`);
}

export function mdTable(header: string[], rows: Array<Array<string | number>>): string {
  return [
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

/** every regular file of an index with its size, from the index alone */
export function regularFiles(index: ClipIndex): Array<{ path: string; size: number }> {
  const out: Array<{ path: string; size: number }> = [];
  const walk = (id: number, path: string): void => {
    for (const c of index.children(id)) {
      const p = `${path}/${c.name}`;
      if (index.isDir(c.id)) walk(c.id, p);
      else if ((index.mode(c.id) & S_IFMT) === S_IFREG) out.push({ path: p, size: index.stat(c.id).size });
    }
  };
  walk(0, '');
  return out;
}
