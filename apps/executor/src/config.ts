/** executor-config.yaml: parsed once, with zod, at start. A bad file names the key path. */
import { hostname } from 'node:os';
import { z } from 'zod';
import { loadConfigFile, SnapshotRegistrySchema } from '@cryo/registry-auth';
import { ExecutorIdSchema, LabelsSchema } from '@cryo/snapshot';

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
  }).strict().default({ host: 'unix:///var/run/docker.sock', network: 'bridge' }),
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
  log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
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
