/**
 * The server's configuration file, parsed once at start with zod. `${VAR}` is replaced from the
 * environment (a missing variable is an error naming it) and every problem is reported with its
 * key path, e.g. `snapshots.max_ttl_secs: Too small: expected number to be >=0`.
 */
import { z } from 'zod';
import { isLoopbackHost, loadConfigFile, SnapshotRegistrySchema, validateConfig } from '@cryo/registry-auth';
import { DatabaseSettingError, parseDatabaseTarget } from './db/target';

const secs = (fallback: number) => z.number().int().min(0).default(fallback);
const positiveSecs = (fallback: number) => z.number().int().positive().default(fallback);

export const ServerConfigSchema = z
  .strictObject({
    listen: z
      .strictObject({
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8900),
      })
      .prefault({}),
    /**
     * A SQLite file (relative paths are resolved against the working directory), or a
     * `postgres://user:password@host:5432/db` URL that several replicas share. Any other URL is
     * refused: a URL is never taken as a file name.
     */
    database: z.string().min(1).default('./.cryo/server.db').superRefine((value, ctx) => {
      try {
        parseDatabaseTarget(value);
      } catch (err) {
        if (!(err instanceof DatabaseSettingError)) throw err;
        ctx.addIssue({ code: 'custom', message: err.message });
      }
    }),
    log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    auth: z.strictObject({
      /** Keys clients send as `Authorization: Bearer <key>`; empty = no auth, loopback only. */
      api_keys: z.array(z.string().min(1, 'an API key must not be empty')).default([]),
      /** Shared with every executor's `token`. */
      executor_token: z.string().min(1, 'must not be empty'),
    }),
    snapshots: z
      .strictObject({
        default_ttl_secs: secs(86_400),
        /** 0 = no limit; otherwise no snapshot may live longer (ttl_secs 0 is refused too). */
        max_ttl_secs: secs(0),
        /** Live snapshots (creating, active, deleting) per namespace; 0 = no limit. */
        max_per_namespace: secs(1000),
        reaper_interval_secs: z.number().positive().default(10),
        /** Snapshots handled per database transaction; the reaper yields between batches. */
        reaper_batch_size: z.number().int().positive().max(10_000).default(100),
        /** Registry deletions in flight at once. */
        reaper_concurrency: z.number().int().positive().max(64).default(8),
        /** First retry after a failed registry delete; doubles per attempt up to the max. */
        delete_retry_base_secs: z.number().positive().default(5),
        delete_retry_max_secs: z.number().positive().default(300),
        /** Deleted/expired/failed snapshots are removed from the database this long after they ended. */
        retention_secs: positiveSecs(604_800),
      })
      .prefault({}),
    sandboxes: z
      .strictObject({
        /** Applied when a create request has no timeout_secs; 0 = none. */
        default_timeout_secs: secs(0),
        /** 0 = no limit. */
        max_timeout_secs: secs(0),
        exec_default_timeout_secs: positiveSecs(60),
        /** Terminated sandboxes are removed from the database this long after they ended. */
        retention_secs: positiveSecs(604_800),
      })
      .prefault({}),
    executors: z
      .strictObject({
        heartbeat_interval_secs: z.number().positive().default(3),
        heartbeat_timeout_secs: z.number().positive().default(15),
        /** A sandbox reported missing this soon after it started is not yet considered gone. */
        reconcile_grace_secs: z.number().min(0).default(10),
      })
      .prefault({}),
    operations: z
      .strictObject({
        /** Leases that expire while the executor lives are offered again, this many times in all. */
        max_attempts: z.number().int().positive().default(3),
        lease_secs: positiveSecs(120),
        create_sandbox_lease_secs: positiveSecs(900),
        snapshot_lease_secs: positiveSecs(3600),
        /** Added to an exec's own timeout. */
        exec_lease_grace_secs: positiveSecs(30),
      })
      .prefault({}),
    /** Where executors push snapshots; the server needs it (with credentials) to delete manifests. */
    snapshot_registry: SnapshotRegistrySchema.optional(),
  })
  .superRefine((config, ctx) => {
    const defaultWithinMax = (section: 'snapshots' | 'sandboxes', key: string, value: number, maxKey: string, max: number) => {
      if (max > 0 && (value === 0 || value > max)) {
        ctx.addIssue({ code: 'custom', path: [section, key], message: `must be between 1 and ${section}.${maxKey} (${max})` });
      }
    };
    defaultWithinMax('snapshots', 'default_ttl_secs', config.snapshots.default_ttl_secs, 'max_ttl_secs', config.snapshots.max_ttl_secs);
    defaultWithinMax(
      'sandboxes', 'default_timeout_secs', config.sandboxes.default_timeout_secs, 'max_timeout_secs', config.sandboxes.max_timeout_secs,
    );
    const { heartbeat_interval_secs: interval, heartbeat_timeout_secs: timeoutSecs } = config.executors;
    if (timeoutSecs <= interval) {
      ctx.addIssue({
        code: 'custom',
        path: ['executors', 'heartbeat_timeout_secs'],
        message: `must be longer than executors.heartbeat_interval_secs (${interval})`,
      });
    }
    if (config.snapshots.delete_retry_max_secs < config.snapshots.delete_retry_base_secs) {
      ctx.addIssue({
        code: 'custom',
        path: ['snapshots', 'delete_retry_max_secs'],
        message: 'must not be shorter than snapshots.delete_retry_base_secs',
      });
    }
  });

export type ServerConfig = z.output<typeof ServerConfigSchema>;
export type ServerConfigInput = z.input<typeof ServerConfigSchema>;

/** Reads and validates a config file; throws ConfigError naming the file and key paths. */
export function loadServerConfig(file: string, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  return resolvePaths(loadConfigFile(file, ServerConfigSchema, env));
}

/** Validates an in-memory config (tests, in-process e2e); defaults are applied as for a file. */
export function serverConfig(input: ServerConfigInput): ServerConfig {
  return resolvePaths(validateConfig(input, ServerConfigSchema));
}

function resolvePaths(config: ServerConfig): ServerConfig {
  const target = parseDatabaseTarget(config.database);
  return target.kind === 'sqlite' ? { ...config, database: target.path } : config;
}

/** Without API keys anyone who can reach the port owns the server: only loopback is allowed then. */
export function assertSafeListen(config: ServerConfig): void {
  if (config.auth.api_keys.length === 0 && !isLoopbackHost(config.listen.host)) {
    throw new Error(
      `refusing to listen on ${config.listen.host}:${config.listen.port} without API keys: ` +
        'set auth.api_keys in the server config, or listen on a loopback address such as 127.0.0.1',
    );
  }
}
