import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { GzipPool } from './gzip-pool';

/** 4 MiB that compress: long enough that close() arrives while the threads are inside gzipSync */
function chunk(i: number): Buffer {
  return Buffer.from(Array.from({ length: 120_000 }, (_, n) => `chunk ${i} line ${n} of some text\n`).join('').slice(0, 4 * 1024 * 1024));
}

describe('GzipPool', () => {
  it('close() lets the threads finish the chunks they were given (every job settles), then stops them', async () => {
    const pool = new GzipPool({ workers: 2, level: 6 });
    const inputs = Array.from({ length: 6 }, (_, i) => chunk(i));
    const jobs = inputs.map((c) => pool.compress(c));
    // Right away, as a failed push does: before, terminate() stopped the threads mid-zlib, the
    // jobs never settled, and a thread stopped inside gzipSync could abort the process.
    const closed = pool.close();
    const out = await Promise.all(jobs);
    await closed;
    out.forEach((c, i) => expect(gunzipSync(c.gzip).equals(inputs[i] ?? Buffer.alloc(0))).toBe(true));
  });

  it('refuses chunks once closed', async () => {
    const pool = new GzipPool({ workers: 1, level: 1 });
    await pool.close();
    await expect(pool.compress(Buffer.from('late'))).rejects.toThrow('gzip pool is closed');
  });
});
