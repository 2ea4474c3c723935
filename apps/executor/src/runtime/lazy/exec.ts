/**
 * `runc exec` into a lazy sandbox, with Docker's semantics: stdout and stderr kept (capped), the
 * exit code of the command (127 not found, 126 not runnable, 128+n killed by signal n), and a
 * timeout that kills the exec'd process itself.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CryoError, type ExecResult } from '@cryo/snapshot';
import { CappedOutput, EXEC_OUTPUT_LIMIT } from '../exec-output';
import type { Runc } from './runc';

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15, SIGABRT: 6, SIGSEGV: 11, SIGPIPE: 13 };

export interface LazyExecTarget {
  runc: Runc;
  sandboxId: string;
  containerId: string;
  /** the sandbox's directory: the exec's pid file goes there */
  dir: string;
}

export async function execInLazySandbox(target: LazyExecTarget, command: string[], timeoutSecs: number): Promise<ExecResult> {
  const { runc, sandboxId, containerId } = target;
  const state = await runc.state(containerId);
  if (state === undefined) throw new CryoError('NOT_FOUND', `sandbox ${sandboxId} has no lazy container on this executor`);
  if (state.status !== 'running') throw new CryoError('CONFLICT', `sandbox ${sandboxId} is not running (container is ${state.status})`);
  const pidFile = join(target.dir, `exec-${randomBytes(6).toString('hex')}.pid`);
  const child = spawn(runc.binary, ['--root', runc.root, 'exec', '--pid-file', pidFile, containerId, ...command], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stdout = new CappedOutput(EXEC_OUTPUT_LIMIT);
  const stderr = new CappedOutput(EXEC_OUTPUT_LIMIT);
  child.stdout.on('data', (c: Buffer) => stdout.push(c));
  child.stderr.on('data', (c: Buffer) => stderr.push(c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutSecs * 1000);
  });
  try {
    const outcome = await Promise.race([exited, timedOut]);
    if (outcome === 'timeout') {
      await killExec(pidFile);
      child.kill('SIGKILL');
      throw new CryoError('TIMEOUT', `command did not finish within ${timeoutSecs} s`);
    }
    const errText = stderr.text();
    let exitCode = outcome.code ?? 128 + (SIGNALS[outcome.signal ?? ''] ?? 0);
    // runc's own failure to start the command (exit 255), as Docker reports it: 127 not found, 126 not runnable.
    if (exitCode === 255 && /exec failed|unable to start container process/.test(errText)) {
      exitCode = /not found|no such file/i.test(errText) ? 127 : 126;
    }
    return { exit_code: exitCode, stdout: stdout.text(), stderr: errText };
  } finally {
    clearTimeout(timer);
    await rm(pidFile, { force: true });
  }
}

/** The exec'd process itself (host pid from runc's pid file): killing runc would not stop it. */
async function killExec(pidFile: string): Promise<void> {
  try {
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    if (Number.isInteger(pid) && pid > 1) process.kill(pid, 'SIGKILL');
  } catch {
    // not started yet, or already gone
  }
}
