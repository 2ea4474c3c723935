import { describe, expect, it } from 'vitest';
import { durationInput, formatAge, formatBytes, formatCountdown, formatDuration, parseDuration } from './format';

describe('formatBytes', () => {
  it('uses decimal units like docker images', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1234)).toBe('1.2 kB');
    expect(formatBytes(4_400_000)).toBe('4.4 MB');
    expect(formatBytes(544_000_000)).toBe('544 MB');
    expect(formatBytes(null)).toBe('—');
  });
});

describe('durations', () => {
  it('shows the two largest units', () => {
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(45)).toBe('45s');
    expect(formatDuration(3725)).toBe('1h 2m');
    expect(formatDuration(3600)).toBe('1h');
    expect(formatDuration(86400 * 7 + 5)).toBe('7d');
    expect(formatDuration(86400 + 3600 * 3)).toBe('1d 3h');
  });

  it('counts down to an expiry and says how long ago it passed', () => {
    const now = Date.parse('2030-01-01T00:00:00Z');
    expect(formatCountdown('2030-01-01T01:00:00Z', now)).toBe('in 1h');
    expect(formatCountdown('2030-01-01T00:00:01.200Z', now)).toBe('in 2s');
    expect(formatCountdown('2029-12-31T23:59:57Z', now)).toBe('expired 3s ago');
    expect(formatCountdown(null, now)).toBe('never');
    expect(formatAge('2029-12-31T23:59:48Z', now)).toBe('12s ago');
  });

  it('parses what a user types for a TTL, and names what it cannot parse', () => {
    expect(parseDuration('3600')).toBe(3600);
    expect(parseDuration('0')).toBe(0);
    expect(parseDuration('90s')).toBe(90);
    expect(parseDuration('30m')).toBe(1800);
    expect(parseDuration('1h30m')).toBe(5400);
    expect(parseDuration(' 2H ')).toBe(7200);
    expect(parseDuration('7d')).toBe(604800);
    for (const secs of [0, 59, 3600, 3725, 90061, 604800]) expect(parseDuration(durationInput(secs))).toBe(secs);
    expect(durationInput(3725)).toBe('1h2m5s');
    for (const bad of ['', 'soon', '1x', '1h and 2m', '-5', 'h1']) {
      expect(() => parseDuration(bad)).toThrow(/is not a duration: use seconds or units/);
    }
  });
});
