/** Human output: aligned tables, key: value blocks, relative times, sizes and durations. */

/** Columns separated by three spaces, no trailing blanks; every row as wide as the header. */
export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    widths
      .map((w, i) => (cells[i] ?? '').padEnd(w))
      .join('   ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** `key: value` lines with the values aligned; entries whose value is undefined are left out. */
export function renderFields(fields: ReadonlyArray<readonly [string, string | undefined]>): string {
  const shown = fields.filter((f): f is readonly [string, string] => f[1] !== undefined);
  const width = Math.max(0, ...shown.map(([k]) => k.length + 1));
  return shown.map(([k, v]) => `${`${k}:`.padEnd(width)} ${v}`.trimEnd()).join('\n') + '\n';
}

/** "just now", "42s ago", "3m ago", "5h ago", "2d ago"; for future times "in 3m". */
export function relativeTime(iso: string | null, now: Date): string {
  if (iso === null) return '-';
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return iso;
  const diff = now.getTime() - then;
  const span = shortDuration(Math.abs(diff));
  if (span === undefined) return 'just now';
  return diff >= 0 ? `${span} ago` : `in ${span}`;
}

/** The largest whole unit: 42s, 3m, 5h, 2d; undefined under a second. */
function shortDuration(ms: number): string | undefined {
  const s = Math.floor(ms / 1000);
  if (s < 1) return undefined;
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

/** A full timestamp with its relative form: "2025-01-02T03:04:05.000Z (3m ago)". */
export function fullTime(iso: string | null, now: Date): string {
  if (iso === null) return '-';
  return `${iso} (${relativeTime(iso, now)})`;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(bytes: number | null): string {
  if (bytes === null) return '-';
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** Milliseconds as "85 ms", "1.2 s", "3m 05s". */
export function formatMillis(ms: number | null): string {
  if (ms === null) return '-';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
}

/** A TTL in seconds: "never" for 0, else the largest exact units ("1h 30m", "7d"). */
export function formatTtl(secs: number): string {
  if (secs === 0) return 'never';
  const parts: string[] = [];
  let rest = secs;
  for (const [unit, size] of [['d', 86_400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.join(' ');
}

export function formatLabels(labels: Record<string, string>): string {
  const entries = Object.entries(labels);
  return entries.length === 0 ? '-' : entries.map(([k, v]) => `${k}=${v}`).join(',');
}

/** Progress of a transfer: "12.0 MiB / 40.0 MiB (30%)", or only the bytes done when the total is unknown. */
export function formatProgressBytes(done: number, total: number | null): string {
  if (total === null || total <= 0) return formatBytes(done);
  const pct = Math.min(100, Math.floor((done / total) * 100));
  return `${formatBytes(done)} / ${formatBytes(total)} (${pct}%)`;
}
