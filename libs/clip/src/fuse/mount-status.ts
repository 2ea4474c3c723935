/**
 * The status file a mount process keeps (written atomically): whoever started it, or a later
 * executor after a restart, reads from it whether the mount is up, which process serves it, and
 * how many bytes it has fetched.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { PackStats } from '../reader/access-pack';
import type { SchedulerStats } from '../reader/fetch-scheduler';
import type { FetchStats } from '../reader/span-store';
import type { ClipFsStats } from './clip-fs';

export type MountState = 'starting' | 'mounted' | 'failed' | 'unmounted';

export interface MountStatus {
  pid: number;
  /** the process's start time (clock ticks after boot, /proc/PID/stat): tells it from a later process with the same pid */
  proc_start?: number | undefined;
  state: MountState;
  mountpoint: string;
  index: string;
  updated_at: string;
  error?: string;
  fs?: ClipFsStats;
  fetch?: FetchStats;
  /** requests and bytes by why they were made (demand, readahead, prefetch, background) */
  fetch_reasons?: SchedulerStats;
  /** the access pack the mount streams, when its prefetch record has one */
  pack?: PackStats;
}

/** Start time of process `pid` in clock ticks after boot (field 22 of /proc/PID/stat), or undefined. */
export function procStartTicks(pid: number): number | undefined {
  try {
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    return Number.isSafeInteger(ticks) ? ticks : undefined;
  } catch {
    return undefined;
  }
}

export function writeMountStatus(file: string, status: Omit<MountStatus, 'updated_at'>): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ ...status, updated_at: new Date().toISOString() })}\n`);
  renameSync(tmp, file);
}

function isMountStatus(value: unknown): value is MountStatus {
  if (typeof value !== 'object' || value === null) return false;
  return 'pid' in value && typeof value.pid === 'number' && 'state' in value && typeof value.state === 'string'
    && 'mountpoint' in value && typeof value.mountpoint === 'string';
}

export function readMountStatus(file: string): MountStatus | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const value: unknown = JSON.parse(text);
    return isMountStatus(value) ? value : undefined;
  } catch {
    return undefined;
  }
}
