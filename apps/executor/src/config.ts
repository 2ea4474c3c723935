/** executor-config.yaml: parsed once, with zod, at start. A bad file names the key path. */
import { hostname } from 'node:os';
import { z } from 'zod';
import { loadConfigFile, SnapshotRegistrySchema, ZoneCacheSchema } from '@cryo/registry-auth';
import { ExecutorIdSchema, LabelsSchema } from '@cryo/snapshot';
import { DEFAULT_MAX_LAYERS, DOCKER_MAX_LAYERS } from './snapshot/flatten-image';

/** A mount every sandbox gets (Docker's mount spec); the operator's, so snapshots never capture it. */
const SandboxMountSchema = z.object({
  type: z.enum(['bind', 'volume', 'tmpfs']),
  /** host path (bind) or volume name (volume); not for tmpfs */
  source: z.string().min(1).optional(),
  target: z.string().regex(/^\//, 'target must be an absolute path in the sandbox'),
  read_only: z.boolean().default(false),
}).strict().refine((m) => (m.type === 'tmpfs') === (m.source === undefined), { message: 'a bind or volume mount needs a source; a tmpfs has none' });

export const SnapshotsConfigSchema = z.object({
  /**
   * precopy: copy the container's writable layer while it runs, pause only for what changed
   * since, push without the engine; commit: pause for a `docker commit`, push with the engine.
   * Default: precopy where the engine's storage driver is overlay2 with its data on this host.
   */
  method: z.enum(['precopy', 'commit', 'auto']).default('auto'),
  /** gzip level of the layers a pre-copy snapshot pushes: 1 is fastest, 9 smallest */
  compression_level: z.number().int().min(1).max(9).default(1),
  /** copy passes while the sandbox runs before the paused one (the first copies everything) */
  max_running_passes: z.number().int().min(1).max(10).default(3),
  /** a running pass that copied fewer bytes than this is the last before the pause */
  settled_bytes: z.number().int().min(0).default(4 * 1024 * 1024),
  /**
   * A snapshot image with more layers than this is flattened into one layer, so that chains of
   * snapshot -> restore -> snapshot go on forever (Docker stacks at most 125 layers).
   */
  max_layers: z.number().int().min(1).max(DOCKER_MAX_LAYERS - 1, `snapshots.max_layers must be below Docker's limit of ${DOCKER_MAX_LAYERS} layers`)
    .default(DEFAULT_MAX_LAYERS),
}).strict();

/** `host:port` of a metrics listener; the host is an IP address or `localhost`. */
const ListenSchema = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port, such as 127.0.0.1:9101');

/**
 * `metrics: {listen, allow_non_loopback}`: the page has no authentication and names sandboxes'
 * operations, so an address other than loopback is refused unless `allow_non_loopback: true`.
 */
export const MetricsConfigSchema = z.object({
  listen: ListenSchema,
  allow_non_loopback: z.boolean().default(false),
}).strict().refine((m) => m.allow_non_loopback || isLoopbackListen(m.listen), {
  message: 'is not a loopback address: the metrics page has no authentication; listen on 127.0.0.1 (scrape through a tunnel or a local agent), or set metrics.allow_non_loopback: true',
  path: ['listen'],
});

/** Host and port of a `host:port` listen address (brackets of an IPv6 host removed). */
export function parseListen(listen: string): { host: string; port: number } {
  const colon = listen.lastIndexOf(':');
  const host = listen.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(listen.slice(colon + 1)) };
}

/** Whether `host:port` listens on loopback only (127.0.0.0/8, ::1, localhost). */
export function isLoopbackListen(listen: string): boolean {
  const { host } = parseListen(listen);
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export const ClipSettingsSchema = z.object({
  cache: z.object({
    /** the host span cache every lazy mount shares (default state_dir/clip-cache) */
    dir: z.string().optional(),
    /** disk budget: least recently used spans are evicted beyond it (default: no limit) */
    max_bytes: z.number().int().positive().optional(),
    /** how often the budget is enforced */
    gc_interval_secs: z.number().positive().max(3600).default(10),
  }).strict().default({ gc_interval_secs: 10 }),
  /** optional: a zone's pull-through mirror of the snapshot registry, tried before it */
  zone_cache: ZoneCacheSchema.optional(),
  /**
   * Once a lazy sandbox is up, its mount fetches the rest of the image into the host's span
   * cache in the background, at most this many compressed bytes per second, pausing whenever a
   * program waits on a read. 0 turns it off. With a `cache.max_bytes` budget a mount's fill stops
   * once it would take the cache past half the budget (as of its mount), so filling never evicts
   * what programs read.
   */
  background_fill: z.object({
    bytes_per_sec: z.number().int('clip.background_fill.bytes_per_sec must be a whole number').min(0).default(0),
  }).strict().default({ bytes_per_sec: 0 }),
}).strict();
export type ClipSettings = z.infer<typeof ClipSettingsSchema>;

export const ExecutorConfigSchema = z.object({
  /** One server (or a load balancer in front of several replicas). */
  server_url: z.string().url('server_url must be a URL such as http://127.0.0.1:8900').optional(),
  /** Several server replicas: the executor uses one and moves to the next when it stops answering. */
  server_urls: z.array(z.string().url('each of server_urls must be a URL such as http://10.0.0.1:8900')).min(1).optional(),
  executor_id: ExecutorIdSchema.default(() => hostname()),
  token: z.string().min(1, 'token must not be empty'),
  docker: z.object({
    host: z.string().default('unix:///var/run/docker.sock'),
    /** Docker network for sandboxes; "none" isolates them. */
    network: z.string().default('bridge'),
    /** Mounts every sandbox gets; never captured by snapshots (they list them as excluded_mounts). */
    mounts: z.array(SandboxMountSchema).max(64).default([]),
  }).strict().default({ host: 'unix:///var/run/docker.sock', network: 'bridge', mounts: [] }),
  snapshots: SnapshotsConfigSchema.default({ method: 'auto', compression_level: 1, max_running_passes: 3, settled_bytes: 4 * 1024 * 1024, max_layers: DEFAULT_MAX_LAYERS }),
  labels: LabelsSchema.default({}),
  snapshot_registry: SnapshotRegistrySchema.optional(),
  /** Docker's config.json for registry credentials (auths, credsStore, credHelpers). */
  docker_config: z.string().optional(),
  state_dir: z.string().default('./.cryo/executor'),
  capacity: z.object({
    max_sandboxes: z.number().int().positive().default(32),
    cpus: z.number().positive().optional(),
    memory_mb: z.number().int().positive().optional(),
  }).strict().default({ max_sandboxes: 32 }),
  /** lazy restores (runc-lazy): the host span cache, the zone cache and how their image mounts fetch */
  clip: ClipSettingsSchema.default({ cache: { gc_interval_secs: 10 }, background_fill: { bytes_per_sec: 0 } }),
  log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
  /** Prometheus metrics (docs/metrics.md); no block = no metrics listener. */
  metrics: MetricsConfigSchema.optional(),
}).strict().refine((c) => c.server_url === undefined || c.server_urls === undefined, {
  message: 'give server_url or server_urls, not both', path: ['server_urls'],
});

export const DEFAULT_SERVER_URL = 'http://127.0.0.1:8900';

/** The server replicas to use, in order of preference. */
export function serverUrls(config: Pick<ExecutorConfig, 'server_url' | 'server_urls'>): string[] {
  return config.server_urls ?? [config.server_url ?? DEFAULT_SERVER_URL];
}

export type ExecutorConfig = z.infer<typeof ExecutorConfigSchema>;

export function loadExecutorConfig(file: string, env: NodeJS.ProcessEnv = process.env): ExecutorConfig {
  return loadConfigFile(file, ExecutorConfigSchema, env);
}
