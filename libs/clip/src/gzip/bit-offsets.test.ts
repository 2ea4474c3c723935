/**
 * The indexer reads a checkpoint's bit offset from zlib (`data_type`, zlib-native.ts) and prunes
 * its window in the addon. Before, the offset was searched for by resuming at each of the 8
 * candidates (boundary.ts) and the window pruned by realign.ts `pruneWindow` on Node's zlib. Every
 * candidate checkpoint of real GNU gzip output must come out as that search gave it: the same bit
 * offset, the same answer to "needs a window?", the same pruned window.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { mixedData, prng } from '../testing/data';
import { boundaryCandidates, resolveBoundaryBits } from './boundary';
import { GzipIndexer, type Checkpoint } from './indexer';
import { pruneWindow } from './realign';

const WINDOW = 32768;

function gzipCli(data: Buffer, level: number): Buffer {
  return execFileSync('gzip', [`-${level}`, '-n', '-c'], { input: data, maxBuffer: 1 << 30 });
}

/** one member (GNU gzip -n: 10-byte header, deflate data, 8-byte trailer) */
function member(data: Buffer, level: number): { gz: Buffer; data: Buffer } {
  return { gz: gzipCli(data, level), data };
}

interface Seen {
  cp: Checkpoint;
  needsWindow: boolean;
}

/** every block boundary 8 KiB or more after the last checkpoint is a candidate; each is settled with its window */
function indexAll(gz: Buffer, chunk: number): { seen: Seen[]; out: Buffer } {
  const seen: Seen[] = [];
  const parts: Buffer[] = [];
  let keep = false;
  const ix = new GzipIndexer({
    span: 1 << 20,
    onData: (d) => parts.push(Buffer.from(d)),
    onCheckpoint: () => undefined,
    cutAt: (_uoff, sinceLast) => (sinceLast >= 8192 ? 'maybe' : 'no'),
    decide: (cp, needsWindow, windowBytes) => {
      windowBytes();
      seen.push({ cp, needsWindow });
      keep = !keep;
      return keep;
    },
  });
  for (let i = 0; i < gz.length; i += chunk) ix.push(gz.subarray(i, i + chunk));
  ix.end();
  return { seen, out: Buffer.concat(parts) };
}

function compare(members: Array<{ gz: Buffer; data: Buffer }>, chunk = 1 << 20): { checked: number; bits: Set<number>; windowless: number } {
  const gz = Buffer.concat(members.map((m) => m.gz));
  const { seen, out } = indexAll(gz, chunk);
  expect(out.equals(Buffer.concat(members.map((m) => m.data)))).toBe(true);
  // member extents in the compressed and uncompressed streams
  const extents: Array<{ cstart: number; cend: number; ustart: number; uend: number }> = [];
  let c = 0;
  let u = 0;
  for (const m of members) {
    extents.push({ cstart: c, cend: c + m.gz.length - 8, ustart: u, uend: u + m.data.length });
    c += m.gz.length;
    u += m.data.length;
  }
  const bits = new Set<number>();
  let windowless = 0;
  for (const { cp, needsWindow } of seen) {
    const m = extents.find((e) => cp.coff > e.cstart && cp.coff <= e.cend);
    if (!m) throw new Error(`checkpoint at ${cp.coff} outside every member`);
    const input = gz.subarray(cp.coff - 1, m.cend);
    const following = out.subarray(cp.uoff, Math.min(cp.uoff + WINDOW, m.uend));
    const raw = out.subarray(Math.max(m.ustart, cp.uoff - WINDOW), cp.uoff);
    const searched = resolveBoundaryBits(input, Buffer.alloc(0), following);
    expect({ coff: cp.coff, needsWindow }).toEqual({ coff: cp.coff, needsWindow: searched === undefined });
    if (searched !== undefined) {
      expect({ coff: cp.coff, bits: cp.bits, window: cp.window.length }).toEqual({ coff: cp.coff, bits: searched, window: 0 });
      windowless++;
    } else {
      const found = boundaryCandidates(input, raw, following)
        .map((b) => ({ bits: b, ...pruneWindow(Buffer.from(raw), b > 0 ? input : input.subarray(1), b, following) }))
        .find((r) => r.verified);
      expect(found).toBeDefined();
      expect({ coff: cp.coff, bits: cp.bits, used: cp.windowUsed }).toEqual({ coff: cp.coff, bits: found?.bits, used: found?.used });
      expect(cp.window.equals(found?.window ?? Buffer.alloc(0))).toBe(true);
    }
    bits.add(cp.bits);
  }
  return { checked: seen.length, bits, windowless };
}

/** text, binary runs and random stretches (stored blocks), in pieces of random length */
function storedHeavy(size: number, seed: number): Buffer {
  const rnd = prng(seed);
  const parts: Buffer[] = [];
  let n = 0;
  while (n < size) {
    const len = 1000 + Math.floor(rnd() * 120_000);
    const part = rnd() < 0.5 ? randomBytes(len) : mixedData(len, Math.floor(rnd() * 1000));
    parts.push(part);
    n += len;
  }
  return Buffer.concat(parts).subarray(0, size);
}

describe('bit offsets from zlib match the search over candidates', () => {
  const data = mixedData(12 * 1024 * 1024 + 777, 11);

  for (const level of [1, 6, 9]) {
    it(`GNU gzip -${level}: every candidate checkpoint has the searched bit offset, window need and pruned window`, () => {
      const r = compare([member(data, level)]);
      expect(r.checked).toBeGreaterThan(40);
      expect(r.windowless).toBeGreaterThan(0);
      expect(r.windowless).toBeLessThan(r.checked);
      expect(r.bits.size).toBeGreaterThan(4);
    });
  }

  it('stored blocks (random data among text): the lowest offset that decodes the same block', () => {
    const r = compare([member(storedHeavy(3_000_000, 5), 6), member(storedHeavy(2_000_000, 6), 1)], 65536);
    expect(r.checked).toBeGreaterThan(50);
    expect(r.windowless).toBeGreaterThan(10);
  });

  it('multi-member gzip (GNU gzip members of levels 1, 9 and an empty one)', () => {
    const r = compare([member(data.subarray(0, 1_500_000), 1), member(Buffer.alloc(0), 6), member(data.subarray(1_500_000, 6_000_000), 9)], 100_000);
    expect(r.checked).toBeGreaterThan(20);
  });

  it('an empty layer: one empty member, no block boundary, no output', () => {
    const gz = gzipCli(Buffer.alloc(0), 6);
    const { seen, out } = indexAll(gz, 1 << 20);
    expect(seen).toEqual([]);
    expect(out.length).toBe(0);
    expect(zlib.gunzipSync(gz).length).toBe(0);
  });
});
