/**
 * The runc command line, with its own state root (`--root`), so lazy sandboxes never mix with
 * the containers of a Docker engine on the same host.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export type RuncStatus = 'creating' | 'created' | 'running' | 'paused' | 'stopped';

export interface RuncState {
  id: string;
  pid: number;
  status: RuncStatus;
  bundle: string;
  created: string;
}

export class RuncError extends Error {
  constructor(
    message: string,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'RuncError';
  }
}

function isRuncState(value: unknown): value is RuncState {
  return typeof value === 'object' && value !== null && 'id' in value && typeof value.id === 'string'
    && 'status' in value && typeof value.status === 'string' && 'pid' in value && typeof value.pid === 'number';
}

function stderrOf(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'stderr' in err) return String(err.stderr).trim();
  return err instanceof Error ? err.message : String(err);
}

export class Runc {
  constructor(
    readonly root: string,
    readonly binary = 'runc',
  ) {}

  private async run(args: string[], timeoutMs = 60_000): Promise<string> {
    try {
      const { stdout } = await execFileAsync(this.binary, ['--root', this.root, ...args], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
      return stdout;
    } catch (err) {
      const stderr = stderrOf(err);
      throw new RuncError(`runc ${args[0] ?? ''} failed: ${stderr}`, stderr);
    }
  }

  /** The container's state, or undefined when runc does not know it. */
  async state(id: string): Promise<RuncState | undefined> {
    try {
      const value: unknown = JSON.parse(await this.run(['state', id]));
      return isRuncState(value) ? value : undefined;
    } catch (err) {
      if (err instanceof RuncError && /does not exist|not exist|container .* not found/i.test(err.stderr)) return undefined;
      throw err;
    }
  }

  async list(): Promise<RuncState[]> {
    const text = (await this.run(['list', '--format', 'json'])).trim();
    if (text === '' || text === 'null') return [];
    const value: unknown = JSON.parse(text);
    return Array.isArray(value) ? value.filter(isRuncState) : [];
  }

  /**
   * `runc run -d`: the container gets `stdio` as its own stdin/stdout/stderr; runc exits once
   * it has started. Resolves when runc exits 0.
   */
  async runDetached(id: string, bundle: string, pidFile: string, stdio: [number, number, number]): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      // Its own session: stopping the executor's process group must not reach the container.
      const child = spawn(this.binary, ['--root', this.root, 'run', '--detach', '--bundle', bundle, '--pid-file', pidFile, id], { stdio, detached: true });
      child.on('error', (err) => reject(new RuncError(`runc run failed: ${err.message}`, err.message)));
      child.on('exit', (code, signal) => {
        if (code === 0) resolve();
        else reject(new RuncError(`runc run exited with ${code ?? signal}`, ''));
      });
    });
  }

  async kill(id: string, signal = 'KILL'): Promise<void> {
    await this.run(['kill', id, signal]);
  }

  async delete(id: string): Promise<void> {
    await this.run(['delete', '--force', id]);
  }

  async pause(id: string): Promise<void> {
    await this.run(['pause', id]);
  }

  async resume(id: string): Promise<void> {
    await this.run(['resume', id]);
  }
}
