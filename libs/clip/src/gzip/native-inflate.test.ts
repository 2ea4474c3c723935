import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { mixedData } from '../testing/data';
import { inflateLimited, RawInflater, Z_BLOCK, Z_NO_FLUSH } from './native-inflate';

/** the Node internals RawInflater drives: if a Node upgrade changes them, this fails first */
describe('RawInflater (Node zlib handle)', () => {
  const data = mixedData(3_000_000, 3);
  const raw = zlib.deflateRawSync(data, { level: 6 });

  it('inflates a whole stream step by step and reports input consumed and output produced', () => {
    const inf = new RawInflater();
    const out = Buffer.alloc(data.length + 100);
    let inOff = 0;
    let outOff = 0;
    for (let i = 0; i < 10_000 && inOff < raw.length; i++) {
      const s = inf.step(Z_NO_FLUSH, raw, inOff, Math.min(65536, raw.length - inOff), out, outOff, Math.min(100_000, out.length - outOff));
      inOff += s.consumed;
      outOff += s.produced;
    }
    inf.close();
    expect(inOff).toBe(raw.length);
    expect(out.subarray(0, outOff).equals(data)).toBe(true);
  });

  it('with Z_BLOCK stops at every deflate block boundary, with input left over', () => {
    const inf = new RawInflater();
    const out = Buffer.alloc(data.length);
    let inOff = 0;
    let outOff = 0;
    let stops = 0;
    for (;;) {
      const s = inf.step(Z_BLOCK, raw, inOff, raw.length - inOff, out, outOff, out.length - outOff);
      inOff += s.consumed;
      outOff += s.produced;
      if (s.consumed === 0 && s.produced === 0) break;
      if (s.availIn > 0) stops++;
    }
    inf.close();
    expect(out.subarray(0, outOff).equals(data)).toBe(true);
    expect(stops).toBeGreaterThan(10);
  });

  it('throws GZIP_CORRUPT on corrupt data, and inflateLimited caps the output', () => {
    const bad = Buffer.from(raw.subarray(0, 5000));
    bad.fill(0xff, 100, 200);
    expect(() => inflateLimited(bad, Buffer.alloc(0), 1 << 20)).toThrow(expect.objectContaining({ code: 'GZIP_CORRUPT' }));
    expect(inflateLimited(raw, Buffer.alloc(0), 1000).equals(data.subarray(0, 1000))).toBe(true);
  });
});
