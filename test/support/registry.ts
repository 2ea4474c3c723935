/**
 * A real distribution registry (Debian's `docker-registry`, distribution 2.8) for tests:
 * loopback only, on a free port, filesystem storage in its own temp dir, deletes enabled and,
 * when asked, htpasswd (bcrypt) Basic auth. It can be stopped and started again on the same
 * port with the same data, to test "registry down" paths. Node built-ins only.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  accessSync,
  closeSync,
  constants,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface RegistryOptions {
  /** Turns on htpasswd auth with this one user. */
  htpasswd?: { username: string; password: string };
  /** Fixed port; default a free one. */
  port?: number;
  /** How long to wait for `GET /v2/` to answer (default 30 s). */
  startTimeoutMs?: number;
  /**
   * Run as a pull-through cache (distribution's `proxy` mode) of this upstream registry
   * (`http://host:port`), with these credentials for it: stores each blob on its first fetch.
   */
  proxy?: { remoteurl: string; username?: string; password?: string };
}

export interface TestRegistry {
  /** `127.0.0.1:PORT`, what cryo's `snapshot_registry.url` and image references use. */
  host: string;
  /** `http://127.0.0.1:PORT` */
  url: string;
  port: number;
  /** Temp dir holding config, htpasswd, storage (`data/`) and the log (`registry.log`). */
  dir: string;
  configFile: string;
  credentials: { username: string; password: string } | undefined;
  readonly running: boolean;
  /** Stops the process and waits for it to exit; port and data are kept for start(). */
  stop(): Promise<void>;
  /** Starts it again on the same port with the same data; resolves once it answers. */
  start(): Promise<void>;
  restart(): Promise<void>;
  /** Stops it and deletes its dir. */
  destroy(): Promise<void>;
  /** What the registry wrote to stdout/stderr so far (all runs). */
  logs(): string;
}

const DIR_PREFIX = 'cryo-registry-';
const OWNER_FILE = 'owner.json';
const live = new Set<ChildProcess>();
const dirs = new Set<string>();
let exitHookInstalled = false;
let swept = false;

// A crashed or forgotten test must not leave registries running or temp dirs behind.
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of live) child.kill('SIGKILL');
    if (process.env.CRYO_KEEP_REGISTRY_DATA === undefined) {
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    }
  });
}

/**
 * A test process killed by a signal runs no exit hook: its registries keep running and its
 * dirs stay. Each dir names its owner; the next run removes those whose owner is gone.
 */
function sweepAbandoned(): void {
  if (swept) return;
  swept = true;
  let names: string[];
  try {
    names = readdirSync(tmpdir()).filter((name) => name.startsWith(DIR_PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const dir = join(tmpdir(), name);
    let owner: { ownerPid?: unknown; registryPid?: unknown };
    try {
      owner = JSON.parse(readFileSync(join(dir, OWNER_FILE), 'utf8')) as { ownerPid?: unknown; registryPid?: unknown };
    } catch {
      continue; // not (yet) ours to judge
    }
    if (typeof owner.ownerPid !== 'number' || isAlive(owner.ownerPid)) continue;
    if (typeof owner.registryPid === 'number' && isOurRegistry(owner.registryPid, dir)) {
      try {
        process.kill(owner.registryPid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error instanceof Error && 'code' in error && error.code === 'EPERM';
  }
}

// Guards against pid reuse: only a docker-registry serving this very dir's config is killed.
function isOurRegistry(pid: number, dir: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(join(dir, 'config.yml'));
  } catch {
    return false;
  }
}

export async function startRegistry(options: RegistryOptions = {}): Promise<TestRegistry> {
  installExitHook();
  sweepAbandoned();
  const dir = mkdtempSync(join(tmpdir(), DIR_PREFIX));
  dirs.add(dir);
  const dataDir = join(dir, 'data');
  mkdirSync(dataDir);
  const logFile = join(dir, 'registry.log');
  writeFileSync(logFile, '');
  let htpasswdFile: string | undefined;
  if (options.htpasswd) {
    htpasswdFile = join(dir, 'htpasswd');
    const line = execFileSync('htpasswd', ['-Bbn', options.htpasswd.username, options.htpasswd.password], { encoding: 'utf8' });
    writeFileSync(htpasswdFile, line.trim() + '\n', { mode: 0o600 });
  }
  const binary = registryBinary();
  const timeoutMs = options.startTimeoutMs ?? 30_000;
  const configFile = join(dir, 'config.yml');
  // Every response carries this header, so readiness is proven for *our* process, not
  // for whatever else might have grabbed the port.
  const marker = randomBytes(8).toString('hex');

  let port = options.port ?? (await freePort());
  let child: ChildProcess | undefined;

  const launch = async (): Promise<void> => {
    // Distribution's YAML parser reads JSON, which keeps this file free of a YAML dependency.
    writeFileSync(configFile, JSON.stringify(registryConfig(port, dataDir, htpasswdFile, marker, options.proxy), null, 2));
    const fd = openSync(logFile, 'a');
    const proc = spawn(binary, ['serve', configFile], { env: registryEnv(), stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const spawnError = new Promise<Error>((resolve) => proc.once('error', resolve));
    if (proc.pid === undefined) throw new Error(`cannot run ${binary}: ${(await spawnError).message}`);
    live.add(proc);
    proc.once('exit', () => live.delete(proc));
    child = proc;
    writeFileSync(join(dir, OWNER_FILE), JSON.stringify({ ownerPid: process.pid, registryPid: proc.pid }));
    await waitReady(port, marker, proc, timeoutMs);
  };

  // A free port can be taken between probing and binding; with a chosen port we retry elsewhere.
  for (let attempt = 1; ; attempt++) {
    try {
      await launch();
      break;
    } catch (error) {
      await stopChild(child);
      const log = readLog(logFile);
      if (options.port === undefined && attempt < 5 && /address already in use/i.test(log)) {
        port = await freePort();
        continue;
      }
      dirs.delete(dir);
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`${error instanceof Error ? error.message : String(error)}\nregistry log:\n${tail(log)}`);
    }
  }

  const host = `127.0.0.1:${port}`;
  const handle: TestRegistry = {
    host,
    url: `http://${host}`,
    port,
    dir,
    configFile,
    credentials: options.htpasswd ? { ...options.htpasswd } : undefined,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    async stop() {
      await stopChild(child);
    },
    async start() {
      if (handle.running) return;
      try {
        await launch();
      } catch (error) {
        await stopChild(child);
        throw new Error(`${error instanceof Error ? error.message : String(error)}\nregistry log:\n${tail(readLog(logFile))}`);
      }
    },
    async restart() {
      await handle.stop();
      await handle.start();
    },
    async destroy() {
      await handle.stop();
      dirs.delete(dir);
      rmSync(dir, { recursive: true, force: true });
    },
    logs: () => readLog(logFile),
  };
  return handle;
}

function registryConfig(port: number, dataDir: string, htpasswdFile: string | undefined, marker: string, proxy: RegistryOptions['proxy']): object {
  return {
    version: '0.1',
    log: { level: 'info', formatter: 'text', accesslog: { disabled: false } },
    storage: {
      filesystem: { rootdirectory: dataDir },
      delete: { enabled: true },
      cache: { blobdescriptor: 'inmemory' },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: {
      addr: `127.0.0.1:${port}`,
      secret: randomBytes(16).toString('hex'),
      headers: { 'X-Content-Type-Options': ['nosniff'], 'X-Cryo-Test-Registry': [marker] },
    },
    ...(htpasswdFile ? { auth: { htpasswd: { realm: 'cryo-test-registry', path: htpasswdFile } } } : {}),
    ...(proxy ? { proxy } : {}),
  };
}

// REGISTRY_* variables override the config file in distribution; keep the caller's out.
function registryEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('REGISTRY_') && !key.startsWith('OTEL_')) env[key] = value;
  }
  return env;
}

function registryBinary(): string {
  const override = process.env.CRYO_DOCKER_REGISTRY_BIN;
  if (override) return override;
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, 'docker-registry');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return '/usr/bin/docker-registry';
}

async function waitReady(port: number, marker: string, proc: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer yet';
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`docker-registry exited (${proc.exitCode ?? proc.signalCode}) before answering on 127.0.0.1:${port}`);
    }
    const answer = await probe(port).catch((error: unknown) => (error instanceof Error ? error.message : String(error)));
    if (typeof answer === 'object') {
      if ((answer.status === 200 || answer.status === 401) && answer.marker === marker) return;
      last = `HTTP ${answer.status}${answer.marker === marker ? '' : ' from another process'}`;
    } else {
      last = answer;
    }
    if (Date.now() > deadline) throw new Error(`docker-registry did not answer GET /v2/ on 127.0.0.1:${port} within ${timeoutMs} ms (${last})`);
    await sleep(50);
  }
}

function probe(port: number): Promise<{ status: number; marker: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/v2/', method: 'GET', timeout: 2_000, agent: false }, (res) => {
      res.resume();
      const header = res.headers['x-cryo-test-registry'];
      resolve({ status: res.statusCode ?? 0, marker: Array.isArray(header) ? header[0] : header });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const done = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
  if (!done) {
    child.kill('SIGKILL');
    await exited;
  }
  live.delete(child);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function tail(text: string, lines = 30): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}
