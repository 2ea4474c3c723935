import { execFileSync } from 'node:child_process';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { mixedData } from '../testing/data';
import { GzipIndexer, type Checkpoint } from './indexer';
import { inflateFromCheckpoint } from './realign';

function index(gz: Buffer, span: number, chunkSize = 65536, prune = true) {
  const cps: Checkpoint[] = [];
  const parts: Buffer[] = [];
  const ix = new GzipIndexer({
    span,
    pruneWindows: prune,
    onData: (d) => parts.push(Buffer.from(d)),
    onCheckpoint: (cp) => cps.push(cp),
  });
  for (let i = 0; i < gz.length; i += chunkSize) ix.push(gz.subarray(i, i + chunkSize));
  const res = ix.end();
  return { cps, out: Buffer.concat(parts), res };
}

function gzipCli(data: Buffer, level: number): Buffer {
  return execFileSync('gzip', [`-${level}`, '-c'], { input: data, maxBuffer: 1 << 30 });
}

/** every checkpoint resumes to exactly the bytes up to the next one */
function checkAll(gz: Buffer, data: Buffer, cps: Checkpoint[]): void {
  for (let i = 0; i < cps.length; i++) {
    const cp = cps[i];
    if (!cp) continue;
    const next = cps[i + 1];
    const end = next ? next.uoff : data.length;
    const cstart = cp.bits > 0 ? cp.coff - 1 : cp.coff;
    const cend = next ? next.coff + 1 : gz.length;
    const out = inflateFromCheckpoint(gz.subarray(cstart, cend), cp.bits, cp.window);
    expect(out.length).toBeGreaterThanOrEqual(end - cp.uoff);
    expect(out.subarray(0, end - cp.uoff).equals(data.subarray(cp.uoff, end))).toBe(true);
  }
}

describe('GzipIndexer', () => {
  const data = mixedData(6 * 1024 * 1024 + 12345, 7);

  for (const level of [1, 6, 9]) {
    it(`takes resumable checkpoints in GNU gzip -${level} output`, () => {
      const gz = gzipCli(data, level);
      const { cps, out, res } = index(gz, 256 * 1024);
      expect(out.equals(data)).toBe(true);
      expect(res.members).toBe(1);
      expect(cps.length).toBeGreaterThan(10);
      expect(cps.some((c) => c.bits !== 0)).toBe(true);
      checkAll(gz, data, cps);
    });
  }

  it('resumes at every possible bit offset (1..7)', () => {
    const seen = new Set<number>();
    for (const level of [1, 9]) {
      const gz = gzipCli(data, level);
      const { cps } = index(gz, 16 * 1024);
      for (const c of cps) seen.add(c.bits);
      checkAll(gz, data, cps);
    }
    expect([...seen].sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('pruned windows are much smaller and still exact', () => {
    const gz = gzipCli(data, 6);
    const full = index(gz, 256 * 1024, 65536, false);
    const pruned = index(gz, 256 * 1024, 65536, true);
    const size = (cps: Checkpoint[]) => cps.reduce((n, c) => n + zlib.deflateRawSync(c.window, { level: 9 }).length, 0);
    expect(size(pruned.cps)).toBeLessThan(size(full.cps));
    checkAll(gz, data, pruned.cps);
  });

  it('handles tiny input chunks (headers and checkpoints split across pushes)', () => {
    const small = data.subarray(0, 400_000);
    const gz = zlib.gzipSync(small, { level: 9 });
    const { cps, out } = index(gz, 50_000, 7);
    expect(out.equals(small)).toBe(true);
    checkAll(gz, small, cps);
  });

  it('handles multi-member gzip with a checkpoint at each member', () => {
    const a = data.subarray(0, 1_500_000);
    const b = data.subarray(1_500_000, 1_500_100);
    const c = data.subarray(2_000_000, 3_000_000);
    const gz = Buffer.concat([gzipCli(a, 1), zlib.gzipSync(b), zlib.gzipSync(Buffer.alloc(0)), gzipCli(c, 9)]);
    const all = Buffer.concat([a, b, c]);
    const { cps, out, res } = index(gz, 300_000);
    expect(res.members).toBe(4);
    expect(out.equals(all)).toBe(true);
    expect(cps.some((cp) => cp.uoff === a.length)).toBe(true);
    checkAll(gz, all, cps);
  });

  it('rejects corrupt and truncated data with GZIP_CORRUPT', () => {
    const gz = zlib.gzipSync(data.subarray(0, 200_000));
    expect(() => index(gz.subarray(0, gz.length - 100), 65536)).toThrow(/truncated/);
    const bad = Buffer.from(gz);
    bad[bad.length - 6] = (bad[bad.length - 6] ?? 0) ^ 0xff; // CRC
    expect(() => index(bad, 65536)).toThrow(/CRC/);
    expect(() => index(Buffer.from('hello world, not gzip'), 65536)).toThrow(/not a gzip/);
  });
});
