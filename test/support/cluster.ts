/**
 * A whole cryo installation for one test file: a real registry (htpasswd auth), one private
 * Docker engine per host, the real server and real executors spawned from their bins.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CryoClient } from '@cryo/cli';
import { startDockerd, type TestDockerd } from './dockerd';
import { startRegistry } from './registry';
import { spawnCryo, freePort, writeYaml, waitFor, type CryoProcess } from './processes';

export interface HostSpec {
  name: string;
  /** Override the registry password this executor uses (to test rejected credentials). */
  registryPassword?: string;
  /** Extra environment for the executor process (fault injection). */
  env?: NodeJS.ProcessEnv;
}

export interface ClusterOptions {
  hosts: HostSpec[];
  /** false: no snapshot_registry block anywhere (snapshots stay local). */
  registry?: boolean;
  /** true: the registry needs no credentials (and the configs carry none). */
  openRegistry?: boolean;
  serverConfig?: string;
  heartbeatTimeoutSecs?: number;
  /** log_level of the server and executors (default debug; benchmarks use info). */
  logLevel?: 'debug' | 'info' | 'warn';
  /**
   * Something in front of the registry, e.g. a counting or throttling proxy: called with the
   * started registry, answers the host:port that the server, the executors and image references
   * use instead of the registry's own (Cluster.registryHost).
   */
  registryFront?: (registry: Registry) => Promise<string>;
}

export interface ApiResponse {
  status: number;
  body: unknown;
}

export type Registry = Awaited<ReturnType<typeof startRegistry>>;

export interface Cluster {
  dir: string;
  serverUrl: string;
  apiKey: string;
  executorToken: string;
  registryUser: string;
  registryPassword: string;
  registry: Registry | undefined;
  /** The registry address every config uses: the registry's own, or what registryFront answered. */
  registryHost: string | undefined;
  engines: Map<string, TestDockerd>;
  executors: Map<string, CryoProcess>;
  server: CryoProcess;
  api(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse>;
  /** The typed client of the CLI, with the cluster's API key, in `namespace`. */
  client(namespace: string): CryoClient;
  /** An executor's state_dir. */
  stateDir(host: string): string;
  startExecutor(name: string, env?: NodeJS.ProcessEnv): Promise<CryoProcess>;
  waitExecutors(names: string[]): Promise<void>;
  logs(): string;
  stop(): Promise<void>;
}

const secret = (prefix: string): string => `${prefix}-${randomBytes(12).toString('hex')}`;

export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const dir = mkdtempSync('/var/tmp/cryo-e2e-');
  const apiKey = secret('apikey');
  const executorToken = secret('exectoken');
  const registryUser = 'cryouser';
  const registryPassword = secret('regpass');
  const useRegistry = opts.registry !== false;
  const open = opts.openRegistry === true;
  const registry = useRegistry ? await startRegistry(open ? {} : { htpasswd: { username: registryUser, password: registryPassword } }) : undefined;
  const engines = new Map<string, TestDockerd>();
  const executors = new Map<string, CryoProcess>();
  const registryHost = registry === undefined ? undefined : await opts.registryFront?.(registry) ?? registry.host;
  const port = await freePort();
  const serverUrl = `http://127.0.0.1:${port}`;
  const logLevel = opts.logLevel ?? 'debug';
  const stateDir = (name: string): string => join(dir, `state-${name}`);
  const registryBlock = (password: string): string => registryHost === undefined ? '' : `
snapshot_registry:
  url: "${registryHost}"
  repository: "cryo/snapshots"
${open ? '' : `  username: "${registryUser}"\n  password: "${password}"\n`}  insecure: true
`;
  // The server's registry password goes through ${ENV} substitution, as operators would write it.
  const serverConfig = writeYaml(join(dir, 'server-config.yaml'), `
listen:
  host: 127.0.0.1
  port: ${port}
database: ${join(dir, 'server.db')}
auth:
  api_keys: ["${apiKey}"]
  executor_token: "\${CRYO_TEST_EXECUTOR_TOKEN}"
executors:
  heartbeat_timeout_secs: ${opts.heartbeatTimeoutSecs ?? 6}
log_level: ${logLevel}
${registry === undefined ? '' : registryBlock('${CRYO_TEST_REGISTRY_PASSWORD}')}
${opts.serverConfig ?? ''}
`);
  const server = spawnCryo('server', 'cryo-server', serverConfig, dir, {
    CRYO_TEST_EXECUTOR_TOKEN: executorToken,
    CRYO_TEST_REGISTRY_PASSWORD: registryPassword,
  });

  const api = async (method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse> => {
    const res = await fetch(`${serverUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try { parsed = JSON.parse(text); } catch { /* not JSON: keep the text */ }
    return { status: res.status, body: parsed };
  };
  await waitFor('server /healthz', async () => {
    const res = await fetch(`${serverUrl}/healthz`).catch(() => undefined);
    return res?.ok === true ? true : undefined;
  }, 60_000);

  const hostSpecs = new Map(opts.hosts.map((h) => [h.name, h]));
  const startExecutor = async (name: string, env: NodeJS.ProcessEnv = {}): Promise<CryoProcess> => {
    const spec = hostSpecs.get(name);
    if (spec === undefined) throw new Error(`unknown host ${name}`);
    let engine = engines.get(name);
    if (engine === undefined) {
      engine = await startDockerd(`${name}-${port}`);
      engines.set(name, engine);
    }
    const config = writeYaml(join(dir, `executor-${name}.yaml`), `
server_url: ${serverUrl}
executor_id: ${name}
token: "${executorToken}"
docker:
  host: ${engine.host}
  network: none
labels:
  host: ${name}
state_dir: ${stateDir(name)}
log_level: ${logLevel}
${registryBlock(spec.registryPassword ?? registryPassword)}
`);
    const proc = spawnCryo(`executor-${name}`, 'cryo-executor', config, dir, { ...spec.env, ...env });
    executors.set(name, proc);
    return proc;
  };

  const waitExecutors = async (names: string[]): Promise<void> => {
    await waitFor(`executors ${names.join(', ')} ready`, async () => {
      const res = await api('GET', '/v1/executors');
      const items = (res.body as { items?: Array<{ executor_id: string; state: string }> }).items ?? [];
      const ready = new Set(items.filter((e) => e.state === 'ready').map((e) => e.executor_id));
      return names.every((n) => ready.has(n)) ? true : undefined;
    }, 60_000);
  };

  for (const host of opts.hosts) await startExecutor(host.name);
  await waitExecutors(opts.hosts.map((h) => h.name));

  return {
    dir, serverUrl, apiKey, executorToken, registryUser, registryPassword, registry, registryHost, engines, executors, server,
    api, startExecutor, waitExecutors, stateDir,
    client: (namespace) => new CryoClient({ server: serverUrl, apiKey, namespace }),
    logs: () => [server.logFile, ...[...executors.values()].map((e) => e.logFile)]
      .map((f) => readFileSync(f, 'utf8')).join('\n'),
    async stop() {
      await Promise.all([...executors.values()].map((e) => e.kill()));
      await server.kill();
      await Promise.all([...engines.values()].map((e) => e.stop()));
      await registry?.stop();
    },
  };
}
