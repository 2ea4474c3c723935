/** Text for sizes, durations, ages and TTL countdowns; pure, so it is unit-tested without a browser. */

const BYTE_UNITS = ['B', 'kB', 'MB', 'GB', 'TB'];
const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** Decimal units, as Docker prints image sizes: 1234567 -> "1.2 MB". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return '—';
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < BYTE_UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value < 10 ? value.toFixed(1) : Math.round(value)} ${BYTE_UNITS[unit]}`;
}

/** The two largest units of a duration: 3725 -> "1h 2m", 45 -> "45s", 0 -> "0s". */
export function formatDuration(totalSecs: number): string {
  const secs = Math.max(0, Math.floor(totalSecs));
  const parts: Array<[number, string]> = [
    [Math.floor(secs / 86400), 'd'],
    [Math.floor((secs % 86400) / 3600), 'h'],
    [Math.floor((secs % 3600) / 60), 'm'],
    [secs % 60, 's'],
  ];
  const first = parts.findIndex(([n]) => n > 0);
  if (first === -1) return '0s';
  return parts.slice(first, first + 2).filter(([n]) => n > 0).map(([n, u]) => `${n}${u}`).join(' ');
}

/** A duration exactly, as parseDuration reads it back: 3725 -> "1h2m5s", 0 -> "0". */
export function durationInput(totalSecs: number): string {
  let rest = Math.max(0, Math.floor(totalSecs));
  if (rest === 0) return '0';
  let out = '';
  for (const [unit, size] of Object.entries(DURATION_UNITS).reverse()) {
    const n = Math.floor(rest / size);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * size;
  }
  return out;
}

/** Time left until an ISO instant: "in 59m 12s", "expired 3s ago", or "never" for null. */
export function formatCountdown(expiresAt: string | null, nowMs: number): string {
  if (expiresAt === null) return 'never';
  const left = (Date.parse(expiresAt) - nowMs) / 1000;
  return left > 0 ? `in ${formatDuration(Math.ceil(left))}` : `expired ${formatDuration(-left)} ago`;
}

/** How long ago an ISO instant was: "12s ago". */
export function formatAge(at: string, nowMs: number): string {
  return `${formatDuration((nowMs - Date.parse(at)) / 1000)} ago`;
}

/**
 * A duration typed by a user, in seconds: "90", "90s", "30m", "1h30m", "7d"; "0" means never.
 * Throws an Error naming the input and the accepted forms.
 */
export function parseDuration(text: string): number {
  const input = text.trim().toLowerCase();
  if (/^\d+$/.test(input)) return Number(input);
  const pattern = /(\d+)\s*([smhd])/g;
  let total = 0;
  let consumed = 0;
  for (const match of input.matchAll(pattern)) {
    if (match.index !== consumed) break;
    total += Number(match[1]) * (DURATION_UNITS[match[2] ?? 's'] ?? 1);
    consumed += match[0].length;
  }
  if (input === '' || consumed !== input.length) {
    throw new Error(`"${text}" is not a duration: use seconds or units, e.g. 90s, 30m, 12h, 7d, 1h30m (0 = never)`);
  }
  return total;
}
