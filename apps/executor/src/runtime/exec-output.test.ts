import { describe, expect, it } from 'vitest';
import { CappedOutput, EXEC_OUTPUT_LIMIT, jsonStringBytes } from './exec-output';

/** Bytes of the JSON text of `value`, as the executor sends it. */
const jsonBytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value), 'utf8');

function capture(data: Buffer, chunk = 65536): string {
  const out = new CappedOutput();
  for (let i = 0; i < data.length; i += chunk) out.push(data.subarray(i, i + chunk));
  return out.text();
}

describe('CappedOutput', () => {
  it('keeps short output as it was written', () => {
    const out = new CappedOutput();
    out.push(Buffer.from('héllo "x"\n'));
    expect(out.text()).toBe('héllo "x"\n');
  });

  it('measures text as JSON.stringify encodes it', () => {
    for (const s of ['plain', 'q"b\\', '\n\t\u0001\u001f', 'é€😀', '\u2028', '\ud800x']) {
      expect(jsonStringBytes(s)).toBe(jsonBytes(s) - 2);
    }
  });

  // The input that failed: 4 MiB of control bytes on stdout and on stderr (e.g. `head -c 4M
  // /dev/zero`) encoded to 48 MiB of JSON, the server refused the result (413) and the exec
  // never ended.
  it.each([
    ['NUL bytes', Buffer.alloc(5 * 1024 * 1024)],
    ['control bytes', Buffer.alloc(5 * 1024 * 1024, 0x01)],
    ['invalid UTF-8', Buffer.alloc(5 * 1024 * 1024, 0xff)],
    ['quotes', Buffer.alloc(5 * 1024 * 1024, 0x22)],
    ['ASCII text', Buffer.alloc(5 * 1024 * 1024, 0x61)],
  ])('cuts %s so that stdout and stderr fit the 8 MiB result limit together', (_name, data) => {
    const stdout = capture(data);
    const stderr = capture(data, 4096);
    const result = { ok: true, exit_code: 0, stdout, stderr };
    expect(jsonBytes(result)).toBeLessThan(8 * 1024 * 1024);
    expect(jsonStringBytes(stdout)).toBeLessThanOrEqual(EXEC_OUTPUT_LIMIT);
    expect(stdout).toMatch(/\[cryo: output truncated: 5242880 bytes written; the start is kept, cut to 3145728 bytes as JSON\]$/);
  });

  it('keeps output that fits exactly, and cuts one byte more', () => {
    const fits = Buffer.alloc(EXEC_OUTPUT_LIMIT, 0x61);
    expect(capture(fits)).toBe(fits.toString());
    const over = Buffer.alloc(EXEC_OUTPUT_LIMIT + 1, 0x61);
    expect(capture(over)).toMatch(/truncated: 3145729 bytes written/);
  });

  it('never splits a character when it cuts', () => {
    const text = capture(Buffer.from('€'.repeat(2 * 1024 * 1024)));
    expect(text).not.toContain('\ufffd');
    expect(text.startsWith('€€€')).toBe(true);
  });
});
