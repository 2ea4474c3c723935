/** executor-config.yaml: parsed once, with zod, at start. A bad file names the key path. */
import { hostname } from 'node:os';
import { z } from 'zod';
import { loadConfigFile, SnapshotRegistrySchema } from '@cryo/registry-auth';
import { ExecutorIdSchema, LabelsSchema } from '@cryo/snapshot';

export const ExecutorConfigSchema = z.object({
  server_url: z.string().url('server_url must be a URL such as http://127.0.0.1:8900').default('http://127.0.0.1:8900'),
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
}).strict();

export type ExecutorConfig = z.infer<typeof ExecutorConfigSchema>;

export function loadExecutorConfig(file: string, env: NodeJS.ProcessEnv = process.env): ExecutorConfig {
  return loadConfigFile(file, ExecutorConfigSchema, env);
}
