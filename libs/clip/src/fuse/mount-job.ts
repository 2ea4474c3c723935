/**
 * What one mount process is asked to do: the job mount-main.ts runs. It arrives either as argv
 * flags (plus registry access on stdin) or, from a MountLauncher's ready process, as one JSON
 * object on stdin (`--job-stdin`): then nothing about the mount, and nothing secret, is in the
 * process's argv or environment.
 */
import { RegistryAccessSettingsSchema, validateConfig, type RegistryAccessSettings } from '@cryo/registry-auth';

export interface MountJob {
  /** the clip index file */
  index: string;
  mountpoint: string;
  /** written by the process: starting / mounted / failed / unmounted, pid, fetch stats */
  statusFile?: string | undefined;
  /** the process's JSON log lines are appended here (else its stderr) */
  logFile?: string | undefined;
  /** host-wide span cache directory */
  cacheDir?: string | undefined;
  /** how to reach the registry; absent: Docker's default config.json answers */
  registryAccess?: RegistryAccessSettings | undefined;
  /** libfuse debug output on stderr */
  debug?: boolean | undefined;
  /** an access record (access-record.ts) to prefetch, in its order, from the moment the index is open */
  prefetch?: string | undefined;
  /** where the process writes the reads it served (an access record), on SIGUSR2 and when it stops */
  accessOut?: string | undefined;
  /** fetch the rest of the image in the background, at most this many compressed bytes/s (0 or absent: off) */
  backgroundFillBytesPerSec?: number | undefined;
  /** the background fill stops after this many compressed bytes (absent: the whole image) */
  backgroundFillMaxBytes?: number | undefined;
}

function optional<T>(value: unknown, key: string, check: (v: unknown) => v is T, what: string): T | undefined {
  if (value === undefined || value === null) return undefined;
  if (!check(value)) throw new Error(`mount job: ${key} must be ${what}`);
  return value;
}

const isString = (v: unknown): v is string => typeof v === 'string' && v !== '';
const isBoolean = (v: unknown): v is boolean => typeof v === 'boolean';
const isRate = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Check a job read as JSON; throws naming the first key that is wrong. */
export function parseMountJob(value: unknown): MountJob {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('mount job: not a JSON object');
  const v = value as Record<string, unknown>;
  const known = new Set(['index', 'mountpoint', 'statusFile', 'logFile', 'cacheDir', 'registryAccess', 'debug', 'prefetch', 'accessOut', 'backgroundFillBytesPerSec', 'backgroundFillMaxBytes']);
  for (const key of Object.keys(v)) if (!known.has(key)) throw new Error(`mount job: unknown key ${key}`);
  const index = optional(v.index, 'index', isString, 'a path');
  const mountpoint = optional(v.mountpoint, 'mountpoint', isString, 'a path');
  if (index === undefined || mountpoint === undefined) throw new Error('mount job: index and mountpoint are required');
  return {
    index,
    mountpoint,
    statusFile: optional(v.statusFile, 'statusFile', isString, 'a path'),
    logFile: optional(v.logFile, 'logFile', isString, 'a path'),
    cacheDir: optional(v.cacheDir, 'cacheDir', isString, 'a path'),
    registryAccess: v.registryAccess === undefined ? undefined : validateConfig(v.registryAccess, RegistryAccessSettingsSchema, 'registry access on stdin'),
    debug: optional(v.debug, 'debug', isBoolean, 'true or false'),
    prefetch: optional(v.prefetch, 'prefetch', isString, 'a path'),
    accessOut: optional(v.accessOut, 'accessOut', isString, 'a path'),
    backgroundFillBytesPerSec: optional(v.backgroundFillBytesPerSec, 'backgroundFillBytesPerSec', isRate, 'a whole number of bytes per second, 0 or more'),
    backgroundFillMaxBytes: optional(v.backgroundFillMaxBytes, 'backgroundFillMaxBytes', isRate, 'a whole number of bytes, 0 or more'),
  };
}
