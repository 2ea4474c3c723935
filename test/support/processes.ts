/**
 * cryo's own processes (server, executors) spawned from their real bins, each logging to a file
 * the tests can read (e.g. to prove no secret was logged), and always stopped at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer } from 'node:net';

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');

export interface CryoProcess {
  name: string;
  logFile: string;
  child: ChildProcess;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

const live = new Set<CryoProcess>();

export function spawnCryo(name: string, bin: 'cryo-server' | 'cryo-executor', configFile: string, logDir: string, env: NodeJS.ProcessEnv = {}): CryoProcess {
  mkdirSync(logDir, { recursive: true });
  const logFile = join(logDir, `${name}.log`);
  const fd = openSync(logFile, 'a');
  const script = join(REPO_ROOT, 'apps', bin === 'cryo-server' ? 'server' : 'executor', 'bin', `${bin}.js`);
  const child = spawn(process.execPath, [script, '--config', configFile], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const proc: CryoProcess = {
    name, logFile, child,
    async kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) {
        live.delete(proc);
        return;
      }
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill(signal);
      const done = await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)]);
      if (!done) {
        child.kill('SIGKILL');
        await exited;
      }
      live.delete(proc);
    },
  };
  live.add(proc);
  return proc;
}

export async function killAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.kill()));
}

export function freePort(): Promise<number> {
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

export function writeYaml(file: string, text: string): string {
  writeFileSync(file, text);
  return file;
}

/** Poll `probe` until it returns a value (not undefined) or the deadline passes. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError instanceof Error ? ` (last error: ${lastError.message})` : ''}`);
    }
    await sleep(everyMs);
  }
}
