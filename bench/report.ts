/** Small shared helpers for benchmark output: medians, percentiles, a table, a JSON record. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx] ?? NaN;
}

export const median = (values: number[]): number => percentile(values, 50);

export function printTable(title: string, rows: string[][]): void {
  const width = Math.max(...rows.map((r) => (r[0] ?? '').length));
  console.log(`\n${title}`);
  for (const row of rows) console.log(`  ${(row[0] ?? '').padEnd(width)}  ${row.slice(1).join('  ')}`);
}

export function writeResult(name: string, data: unknown): void {
  const dir = join(import.meta.dirname, 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.json`), JSON.stringify({ at: new Date().toISOString(), ...((data as object) ?? {}) }, null, 2));
}
