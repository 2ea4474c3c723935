import { describe, expect, it } from 'vitest';
import {
  formatBytes,
  formatMillis,
  formatProgressBytes,
  formatTtl,
  fullTime,
  relativeTime,
  renderFields,
  renderTable,
} from './format';

const now = new Date('2025-01-01T12:00:00.000Z');

describe('renderTable', () => {
  it('aligns columns three spaces apart without trailing blanks', () => {
    const out = renderTable(
      ['ID', 'STATUS', 'NOTE'],
      [
        ['sbx-1', 'running', ''],
        ['sbx-22222', 'pending', 'pulling image'],
      ],
    );
    expect(out).toBe(
      'ID          STATUS    NOTE\n' + 'sbx-1       running\n' + 'sbx-22222   pending   pulling image\n',
    );
  });
});

describe('renderFields', () => {
  it('aligns values and leaves out undefined ones', () => {
    expect(renderFields([['id', 'sbx-1'], ['pending_reason', undefined], ['status', 'running']])).toBe(
      'id:     sbx-1\nstatus: running\n',
    );
  });
});

describe('relativeTime', () => {
  it.each([
    ['2025-01-01T12:00:00.400Z', 'just now'],
    ['2025-01-01T11:59:18.000Z', '42s ago'],
    ['2025-01-01T11:57:00.000Z', '3m ago'],
    ['2025-01-01T07:00:00.000Z', '5h ago'],
    ['2024-12-30T12:00:00.000Z', '2d ago'],
    ['2025-01-01T15:00:00.000Z', 'in 3h'],
  ])('%s is %s', (iso, text) => {
    expect(relativeTime(iso, now)).toBe(text);
  });

  it('passes null and unparsable values through readably', () => {
    expect(relativeTime(null, now)).toBe('-');
    expect(relativeTime('soon', now)).toBe('soon');
  });

  it('fullTime keeps the timestamp and adds the relative form', () => {
    expect(fullTime('2025-01-01T11:57:00.000Z', now)).toBe('2025-01-01T11:57:00.000Z (3m ago)');
  });
});

describe('sizes and durations', () => {
  it('formats bytes in binary units', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(5 * 1024 ** 3)).toBe('5.0 GiB');
    expect(formatBytes(null)).toBe('-');
  });

  it('formats transfer progress with a percentage when the total is known', () => {
    expect(formatProgressBytes(3 * 1024 ** 2, 12 * 1024 ** 2)).toBe('3.0 MiB / 12.0 MiB (25%)');
    expect(formatProgressBytes(3 * 1024 ** 2, null)).toBe('3.0 MiB');
  });

  it('formats milliseconds', () => {
    expect(formatMillis(15)).toBe('15 ms');
    expect(formatMillis(1234)).toBe('1.2 s');
    expect(formatMillis(185_000)).toBe('3m 05s');
    expect(formatMillis(null)).toBe('-');
  });

  it('formats TTLs, 0 as never', () => {
    expect(formatTtl(0)).toBe('never');
    expect(formatTtl(5400)).toBe('1h 30m');
    expect(formatTtl(7 * 86_400)).toBe('7d');
  });
});
