/**
 * A whole cryo installation for one test file: a real registry (htpasswd auth), one private
 * Docker engine per host, the real server and real executors spawned from their bins.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { mountsUnder } from '@cryo/clip/fuse';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CryoClient } from '@cryo/cli';
import { startDockerd, type TestDockerd } from './dockerd';
import { sweepLazySandboxes } from './lazy-sweep';
import { startRegistry } from './registry';
import { spawnCryo, freePort, writeYaml, waitFor, type CryoProcess } from './processes';

export interface HostSpec {
  name: string;
  /** Override the registry password this executor uses (to test rejected credentials). */
  registryPassword?: string;
  /** Extra environment for the executor process (fault injection). */
  env?: NodeJS.ProcessEnv;
  /** The executor's `snapshots` block (method, compression_level, ...). */
  snapshots?: Record<string, unknown>;
  /** The executor's `docker.mounts`: mounts every sandbox of this host gets. */
  dockerMounts?: Array<{ type: 'bind' | 'volume' | 'tmpfs'; source?: string; target: string; read_only?: boolean }>;
  /** More YAML for this executor's config (e.g. a `metrics:` block with a port of its own, a `clip:` block). */
  config?: string;
  /** The storage driver of this host's engine (default overlay2; see DockerdOptions.storageDriver). */
  storageDriver?: 'overlay2' | 'vfs';
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
  /** The server's `database` (e.g. a postgres:// URL, `${VAR}` allowed); default a SQLite file. */
  database?: string;
  /** Environment for every server replica (the variables `database` refers to). */
  serverEnv?: NodeJS.ProcessEnv;
  /** Server replicas sharing `database` (PostgreSQL); executors get all of them in server_urls. */
  replicas?: number;
  /**
   * More executor configuration (YAML appended to every executor's config), made once the
   * registry runs: e.g. a `clip:` block naming a zone cache started in front of it.
   */
  executorConfig?: (ctx: { registryHost: string | undefined; registryUser: string; registryPassword: string }) => string | Promise<string>;
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
  /** Replica 0. */
  server: CryoProcess;
  /** Every replica, by index; a replica started again replaces its entry. */
  servers: CryoProcess[];
  serverUrls: string[];
  /** A call to replica 0. */
  api(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse>;
  /** The typed client of the CLI, with the cluster's API key, in `namespace`. */
  client(namespace: string): CryoClient;
  /** An executor's state_dir. */
  stateDir(host: string): string;
  /** A call to one replica. */
  apiAt(replica: number, method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse>;
  /** Starts replica `index` (again, after it was killed) and waits for its /healthz. */
  startReplica(index: number): Promise<CryoProcess>;
  startExecutor(name: string, env?: NodeJS.ProcessEnv): Promise<CryoProcess>;
  waitExecutors(names: string[]): Promise<void>;
  logs(): string;
  /**
   * Stops every process, sweeps the lazy sandboxes the executors left (they outlive their
   * executor by design) and removes `dir` once nothing is mounted under it; with
   * CRYO_KEEP_TEST_DIRS=1 the dir (logs, state) stays for a look.
   */
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
  const replicas = opts.replicas ?? 1;
  const ports: number[] = [];
  for (let i = 0; i < replicas; i += 1) ports.push(await freePort());
  const port = ports[0] ?? 0;
  const serverUrls = ports.map((p) => `http://127.0.0.1:${p}`);
  const serverUrl = serverUrls[0] ?? '';
  const logLevel = opts.logLevel ?? 'debug';
  const stateDir = (name: string): string => join(dir, `state-${name}`);
  const registryBlock = (password: string): string => registryHost === undefined ? '' : `
snapshot_registry:
  url: "${registryHost}"
  repository: "cryo/snapshots"
${open ? '' : `  username: "${registryUser}"\n  password: "${password}"\n`}  insecure: true
`;
  // The server's registry password goes through ${ENV} substitution, as operators would write it.
  const serverConfigFor = (replica: number): string => writeYaml(join(dir, replica === 0 ? 'server-config.yaml' : `server-config-${replica}.yaml`), `
listen:
  host: 127.0.0.1
  port: ${ports[replica] ?? 0}
database: "${opts.database ?? join(dir, 'server.db')}"
auth:
  api_keys: ["${apiKey}"]
  executor_token: "\${CRYO_TEST_EXECUTOR_TOKEN}"
executors:
  heartbeat_timeout_secs: ${opts.heartbeatTimeoutSecs ?? 6}
log_level: ${logLevel}
${registry === undefined ? '' : registryBlock('${CRYO_TEST_REGISTRY_PASSWORD}')}
${opts.serverConfig ?? ''}
`);
  const servers: CryoProcess[] = [];
  const spawnReplica = (replica: number): CryoProcess => {
    const proc = spawnCryo(replica === 0 ? 'server' : `server-${replica}`, 'cryo-server', serverConfigFor(replica), dir, {
      CRYO_TEST_EXECUTOR_TOKEN: executorToken,
      CRYO_TEST_REGISTRY_PASSWORD: registryPassword,
      ...opts.serverEnv,
    });
    servers[replica] = proc;
    return proc;
  };
  // Replicas start at the same moment (migrations on an empty database must not race).
  for (let i = 0; i < replicas; i += 1) spawnReplica(i);
  const server = servers[0] as CryoProcess;

  const apiAt = async (replica: number, method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse> => {
    const res = await fetch(`${serverUrls[replica] ?? serverUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try { parsed = JSON.parse(text); } catch { /* not JSON: keep the text */ }
    return { status: res.status, body: parsed };
  };
  const api = (method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse> =>
    apiAt(0, method, path, body, headers);
  const waitHealthy = (replica: number): Promise<true> => waitFor(`server ${replica} /healthz`, async () => {
    const res = await fetch(`${serverUrls[replica] ?? serverUrl}/healthz`).catch(() => undefined);
    return res?.ok === true ? true : undefined;
  }, 60_000);
  for (let i = 0; i < replicas; i += 1) await waitHealthy(i);
  const startReplica = async (replica: number): Promise<CryoProcess> => {
    const proc = spawnReplica(replica);
    await waitHealthy(replica);
    return proc;
  };

  const extraExecutorConfig = (await opts.executorConfig?.({ registryHost, registryUser, registryPassword })) ?? '';
  const hostSpecs = new Map(opts.hosts.map((h) => [h.name, h]));
  const startExecutor = async (name: string, env: NodeJS.ProcessEnv = {}): Promise<CryoProcess> => {
    const spec = hostSpecs.get(name);
    if (spec === undefined) throw new Error(`unknown host ${name}`);
    let engine = engines.get(name);
    if (engine === undefined) {
      engine = await startDockerd(`${name}-${port}`, spec.storageDriver === undefined ? {} : { storageDriver: spec.storageDriver });
      engines.set(name, engine);
    }
    const config = writeYaml(join(dir, `executor-${name}.yaml`), `
${replicas === 1 ? `server_url: ${serverUrl}` : `server_urls: [${serverUrls.join(', ')}]`}
executor_id: ${name}
token: "${executorToken}"
docker:
  host: ${engine.host}
  network: none
${spec.dockerMounts === undefined ? '' : `  mounts: ${JSON.stringify(spec.dockerMounts)}\n`}${spec.snapshots === undefined ? '' : `snapshots: ${JSON.stringify(spec.snapshots)}\n`}labels:
  host: ${name}
state_dir: ${stateDir(name)}
log_level: ${logLevel}
${registryBlock(spec.registryPassword ?? registryPassword)}
${extraExecutorConfig}
${spec.config ?? ''}
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
    servers, serverUrls, api, apiAt, startReplica, startExecutor, waitExecutors, stateDir,
    client: (namespace) => new CryoClient({ server: serverUrl, apiKey, namespace }),
    logs: () => [...new Set(servers.map((s) => s.logFile)), ...[...executors.values()].map((e) => e.logFile)]
      .map((f) => readFileSync(f, 'utf8')).join('\n'),
    async stop() {
      await Promise.all([...executors.values()].map((e) => e.kill()));
      for (const host of opts.hosts) await sweepLazySandboxes(stateDir(host.name), host.name);
      await Promise.all(servers.map((s) => s.kill()));
      await Promise.all([...engines.values()].map((e) => e.stop()));
      await registry?.stop();
      if (process.env.CRYO_KEEP_TEST_DIRS !== '1' && mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
    },
  };
}
