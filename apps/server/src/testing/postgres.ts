/**
 * A real PostgreSQL for tests and benchmarks: Debian's `postgresql` package (installed by
 * scripts/setup.sh), its own data directory (initdb) and a free port on 127.0.0.1, password
 * authentication over TCP, stopped again afterwards. PostgreSQL refuses to run as root, so as
 * root the server runs as the `postgres` user the package created (runuser).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';

export interface TestPostgres {
  /** `postgres://cryo:PASSWORD@127.0.0.1:PORT/cryo` */
  url: string;
  port: number;
  user: string;
  password: string;
  database: string;
  dir: string;
  /** The server's log so far. */
  logs(): string;
  /** A URL for `database` with another password (to test rejected credentials). */
  urlWithPassword(password: string): string;
  /** Runs SQL as the cryo user (test setup and checks). */
  query<R extends object = Record<string, unknown>>(text: string, values?: unknown[]): Promise<R[]>;
  stop(): Promise<void>;
}

export interface StartPostgresOptions {
  /** Settings passed as `-c name=value` (e.g. fsync off for unit tests). */
  settings?: Record<string, string>;
}

const live = new Set<() => void>();
let exitHook = false;

/** The directory of the newest installed server binaries (/usr/lib/postgresql/N/bin). */
export function postgresBinDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'postgres'))).sort((a, b) => Number(b) - Number(a))
    : [];
  const newest = versions[0];
  if (newest === undefined) {
    throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql; run scripts/setup.sh (Debian package postgresql)');
  }
  return join(root, newest, 'bin');
}

export async function startPostgres(options: StartPostgresOptions = {}): Promise<TestPostgres> {
  installExitHook();
  const bin = postgresBinDir();
  const asRoot = process.getuid?.() === 0;
  const dir = mkdtempSync('/var/tmp/cryo-pg-');
  const data = join(dir, 'data');
  const user = 'cryo';
  const database = 'cryo';
  const password = `pw-${randomBytes(12).toString('hex')}`;
  const pwfile = join(dir, 'pwfile');
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  const owner = asRoot ? postgresIds() : null;
  if (owner !== null) {
    chownSync(dir, owner.uid, owner.gid);
    chownSync(pwfile, owner.uid, owner.gid);
  }
  const run = (program: string, args: string[]): string[] =>
    asRoot ? ['runuser', '-u', 'postgres', '--', join(bin, program), ...args] : [join(bin, program), ...args];

  const [initProgram = '', ...initArgs] = run('initdb', [
    '-D', data, '-U', user, `--pwfile=${pwfile}`, '--auth-local=trust', '--auth-host=scram-sha-256',
    '--encoding=UTF8', '--locale=C.UTF-8', '--no-sync',
  ]);
  try {
    execFileSync(initProgram, initArgs, { stdio: 'pipe' });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`initdb failed: ${err instanceof Error ? err.message : String(err)}\n${stderr}`);
  }
  rmSync(pwfile);

  let port = await freePort();
  const logFile = join(dir, 'postgres.log');
  writeFileSync(logFile, '');
  if (owner !== null) chownSync(logFile, owner.uid, owner.gid);
  const settings = { max_connections: '200', shared_buffers: '64MB', ...options.settings };
  let child: ChildProcess | undefined;
  const launch = async (): Promise<void> => {
    const fd = openSync(logFile, 'a');
    const [program = '', ...args] = run('postgres', [
      '-D', data, '-h', '127.0.0.1', '-p', String(port), '-k', dir,
      ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
    ]);
    child = spawn(program, args, { stdio: ['ignore', fd, fd], detached: false });
    closeSync(fd);
    await waitReady(child);
  };
  const waitReady = async (proc: ChildProcess): Promise<void> => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`postgres exited (${proc.exitCode ?? proc.signalCode})`);
      const client = new pg.Client({ host: '127.0.0.1', port, user, password, database: 'postgres' });
      try {
        await client.connect();
        await client.end();
        return;
      } catch {
        await client.end().catch(() => undefined);
      }
      if (Date.now() > deadline) throw new Error('postgres did not accept connections within 30 s');
      await sleep(100);
    }
  };
  for (let attempt = 1; ; attempt += 1) {
    try {
      await launch();
      break;
    } catch (err) {
      await stopPostmaster(data, child);
      const log = readFileSync(logFile, 'utf8');
      if (attempt < 5 && /could not bind|address already in use/i.test(log)) {
        port = await freePort();
        continue;
      }
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`${err instanceof Error ? err.message : String(err)}\npostgres log:\n${log.slice(-4000)}`);
    }
  }

  const admin = new pg.Client({ host: '127.0.0.1', port, user, password, database: 'postgres' });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.end();

  const url = `postgres://${user}:${password}@127.0.0.1:${port}/${database}`;
  const kill = (): void => {
    const pid = postmasterPid(data);
    if (pid !== null) {
      try {
        process.kill(pid, 'SIGQUIT');
      } catch {
        // already gone
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  live.add(kill);
  let stopped = false;
  return {
    url, port, user, password, database, dir,
    logs: () => readFileSync(logFile, 'utf8'),
    urlWithPassword: (other) => `postgres://${user}:${encodeURIComponent(other)}@127.0.0.1:${port}/${database}`,
    async query<R extends object>(text: string, values: unknown[] = []): Promise<R[]> {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        return (await client.query<R>(text, values)).rows;
      } finally {
        await client.end();
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      live.delete(kill);
      await stopPostmaster(data, child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function postgresIds(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
  const [, , uid, gid] = line?.split(':') ?? [];
  if (uid === undefined || gid === undefined) {
    throw new Error('no postgres user: install Debian package postgresql (scripts/setup.sh)');
  }
  return { uid: Number(uid), gid: Number(gid) };
}

function postmasterPid(data: string): number | null {
  try {
    const pid = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** Fast shutdown (SIGINT to the postmaster), waiting for it to exit; SIGQUIT after 15 s. */
async function stopPostmaster(data: string, child: ChildProcess | undefined): Promise<void> {
  const pid = postmasterPid(data);
  const alive = (): boolean => {
    if (pid === null) return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (pid !== null && alive()) {
    process.kill(pid, 'SIGINT');
    const deadline = Date.now() + 15_000;
    while (alive() && Date.now() < deadline) await sleep(50);
    if (alive()) process.kill(pid, 'SIGQUIT');
    while (alive()) await sleep(50);
  }
  if (child !== undefined && child.exitCode === null && child.signalCode === null) {
    await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const kill of live) kill();
  });
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
    srv.on('error', reject);
  });
}
