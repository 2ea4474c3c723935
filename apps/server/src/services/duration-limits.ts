/**
 * Durations where 0 means "forever" (snapshot TTLs, sandbox timeouts) and a configured maximum
 * (also 0 = none) caps them. Over the limit is a 422 naming the limit and its value.
 */
import { CryoError } from '@cryo/snapshot';

export interface DurationLimit {
  /** Request field, e.g. `ttl_secs`. */
  field: string;
  /** Config key of the maximum, e.g. `snapshots.max_ttl_secs`. */
  limit: string;
  max: number;
  /** What 0 means, for the message: "never expire". */
  zeroMeans: string;
}

export function withinLimit(value: number, rule: DurationLimit): boolean {
  return rule.max === 0 || (value > 0 && value <= rule.max);
}

export function assertWithinLimit(value: number, rule: DurationLimit): number {
  if (!withinLimit(value, rule)) {
    throw new CryoError(
      'UNPROCESSABLE',
      `${rule.field} ${value}${value === 0 ? ` (${rule.zeroMeans})` : ''} exceeds the limit ${rule.limit} = ${rule.max}`,
      { limit: rule.limit, value: rule.max },
    );
  }
  return value;
}
