import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { ClipCacheService } from './clip-cache';

const root = mkdtempSync(join(tmpdir(), 'executor-clip-cache-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** a host cache as mount processes leave it: span files of 100 kB, oldest first */
function fill(dir: string, spans: number): string {
  const layer = join(dir, `sha256_${'b'.repeat(64)}`);
  mkdirSync(layer, { recursive: true });
  const t0 = Date.now() / 1000 - 1000;
  for (let i = 0; i < spans; i++) {
    const file = join(layer, `${i * 100_000}-100000`);
    writeFileSync(file, Buffer.alloc(100_000, i));
    utimesSync(file, t0 + i, t0 + i);
  }
  return layer;
}

describe('ClipCacheService', () => {
  it('keeps the cache within max_bytes, least recently used first, and reports usage and evictions', async () => {
    const dir = join(root, 'budget');
    const layer = fill(dir, 20);
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => lines.push(line) });
    const service = new ClipCacheService({ dir, maxBytes: 1_000_000, intervalMs: 60_000, log });
    const first = await service.enforce();
    expect(first.used_bytes).toBeLessThanOrEqual(1_000_000);
    expect(first).toMatchObject({ max_bytes: 1_000_000, evicted_spans: 20 - first.spans, evicted_bytes: 2_000_000 - first.used_bytes });
    expect(readdirSync(layer).sort()).not.toContain('0-100000'); // the oldest went first
    expect(readdirSync(layer)).toContain('1900000-100000');
    expect(lines.some((l) => /clip cache over its budget: evicted \d+ spans/.test(l))).toBe(true);
    // evictions add up across passes; the heartbeat sees the last pass
    fill(dir, 20);
    const second = await service.enforce();
    expect(second.evicted_spans).toBeGreaterThan(first.evicted_spans);
    expect(service.observe()).toEqual(second);
  });

  it('without a budget only measures, and a missing cache directory is an empty cache', async () => {
    const dir = join(root, 'unlimited');
    const service = new ClipCacheService({ dir, maxBytes: undefined, intervalMs: 60_000, log: pino({ level: 'silent' }) });
    expect(await service.enforce()).toEqual({ max_bytes: null, used_bytes: 0, spans: 0, evicted_spans: 0, evicted_bytes: 0 });
    fill(dir, 5);
    expect(await service.enforce()).toEqual({ max_bytes: null, used_bytes: 500_000, spans: 5, evicted_spans: 0, evicted_bytes: 0 });
  });

  it('runs in the background until stopped', async () => {
    const dir = join(root, 'loop');
    fill(dir, 10);
    const service = new ClipCacheService({ dir, maxBytes: 300_000, intervalMs: 20, log: pino({ level: 'silent' }) });
    service.start();
    for (let i = 0; i < 200 && service.observe().evicted_spans === 0; i++) await new Promise((r) => setTimeout(r, 10));
    await service.stop();
    expect(service.observe().used_bytes).toBeLessThanOrEqual(300_000);
  });
  it("gives a mount's background fill what is left of half the budget, none past it, all without a budget", async () => {
    const log = pino({ level: 'silent' });
    const dir = join(root, 'allowance');
    fill(dir, 3); // 300 kB
    const budget = new ClipCacheService({ dir, maxBytes: 1_000_000, intervalMs: 60_000, log });
    await budget.enforce();
    expect(budget.fillAllowance()).toBe(200_000);
    fill(dir, 8); // 800 kB: past half the budget
    await budget.enforce();
    expect(budget.fillAllowance()).toBe(0);
    expect(new ClipCacheService({ dir, maxBytes: undefined, intervalMs: 60_000, log }).fillAllowance()).toBeUndefined();
  });
});
