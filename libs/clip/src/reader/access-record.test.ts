import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { isClipError } from '../errors';
import { nameFromBytes } from '../names';
import { ACCESS_RECORD_FORMAT, AccessRecorder, MAX_RANGES_PER_FILE, decodeAccessRecord, encodeAccessRecord, parseAccessRecord } from './access-record';

describe('access records', () => {
  it('keeps files in the order of their first read, ranges merged', () => {
    const recorder = new AccessRecorder('sha256:abc');
    recorder.note('/usr/bin/python3', 0, 4096);
    recorder.note('/usr/lib/libz.so', 131072, 131072);
    recorder.note('/usr/bin/python3', 4096, 4096); // adjacent: one range
    recorder.note('/usr/bin/python3', 1_000_000, 100); // far: a range of its own
    recorder.note('/usr/lib/libz.so', 0, 131072); // before, adjacent
    recorder.note('/empty', 0, 0); // nothing read
    const record = recorder.record();
    expect(record.format).toBe(ACCESS_RECORD_FORMAT);
    expect(record.image).toBe('sha256:abc');
    expect(record.files.map((f) => f.path)).toEqual(['/usr/bin/python3', '/usr/lib/libz.so']);
    expect(record.files[0]?.ranges).toEqual([[0, 8192], [1_000_000, 100]]);
    expect(record.files[1]?.ranges).toEqual([[0, 262144]]);
    expect(record.files[0]?.first_ms).toBeLessThanOrEqual(record.files[1]?.first_ms ?? -1);
  });

  it('collapses a file read in too many places into one range', () => {
    const recorder = new AccessRecorder('sha256:abc');
    for (let i = 0; i <= MAX_RANGES_PER_FILE; i++) recorder.note('/big', i * 1_000_000, 10);
    expect(recorder.record().files[0]?.ranges).toEqual([[0, MAX_RANGES_PER_FILE * 1_000_000 + 10]]);
  });

  it('round-trips through gzip\'d JSON, names that are not UTF-8 byte for byte', () => {
    const name = nameFromBytes(Buffer.from('/caf\xe9\x01\xff.py', 'latin1'));
    const recorder = new AccessRecorder('sha256:abc');
    recorder.note(name, 10, 20);
    recorder.note('/ok', 0, 1);
    const bytes = encodeAccessRecord(recorder.record());
    const back = decodeAccessRecord(bytes);
    expect(back.image).toBe('sha256:abc');
    expect(back.files.map((f) => [f.path, f.ranges])).toEqual([[name, [[10, 20]]], ['/ok', [[0, 1]]]]);
    expect(Buffer.from(back.files[0]?.path ?? '', 'latin1')).toEqual(Buffer.from('/caf\xe9\x01\xff.py', 'latin1'));
  });

  it('refuses what is not a record, naming what is wrong', () => {
    const bad = (value: unknown): Buffer => gzipSync(Buffer.from(JSON.stringify(value)));
    const good = { format: ACCESS_RECORD_FORMAT, image: 'sha256:x', duration_ms: 5, files: [{ path: '/a', first_ms: 0, ranges: [[0, 1]] }] };
    expect(decodeAccessRecord(bad(good)).files).toHaveLength(1);
    const cases: Array<[Buffer, RegExp]> = [
      [Buffer.from('not gzip'), /not gzip'd JSON/],
      [gzipSync(Buffer.from('{')), /not JSON/],
      [bad({ ...good, format: 'other' }), /format is "other"/],
      [bad({ ...good, files: [{ path: 'relative', first_ms: 0, ranges: [] }] }), /files\[0\]\.path/],
      [bad({ ...good, files: [{ path: '/\u0100', first_ms: 0, ranges: [] }] }), /files\[0\]\.path/],
      [bad({ ...good, files: [{ path: '/a', first_ms: 0, ranges: [[0, -1]] }] }), /files\[0\]\.ranges\[0\]/],
      [bad({ ...good, duration_ms: 'x' }), /duration_ms/],
    ];
    for (const [bytes, message] of cases) {
      let caught: unknown;
      try {
        decodeAccessRecord(bytes);
      } catch (err) {
        caught = err;
      }
      expect(isClipError(caught, 'ACCESS_RECORD_CORRUPT'), String(message)).toBe(true);
      expect((caught as Error).message).toMatch(message);
    }
    expect(() => parseAccessRecord(null)).toThrow(/not a JSON object/);
  });
});
