import { spawn } from 'node:child_process';
import { z } from 'zod';
import { CredentialHelperError } from './errors';

const HelperOutputSchema = z.object({ Username: z.string().default(''), Secret: z.string() });

export type HelperCredentials = { username: string; secret: string };

const NOT_FOUND = /credentials not found/i;

/**
 * Runs `docker-credential-<helper> get` with the server address on stdin, the way the Docker
 * CLI does. Returns undefined when the helper knows no credentials for that server.
 */
export async function getFromCredentialHelper(
  helper: string,
  serverAddress: string,
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; configuredBy?: string } = {},
): Promise<HelperCredentials | undefined> {
  const program = `docker-credential-${helper}`;
  const where = options.configuredBy ? ` (configured by ${options.configuredBy})` : '';
  const { code, stdout, stderr } = await run(program, serverAddress, options.env ?? process.env, options.timeoutMs ?? 30_000).catch(
    (error: unknown) => {
      if (isErrno(error) && error.code === 'ENOENT') {
        throw new CredentialHelperError(helper, `docker credential helper ${program} was not found on PATH${where}`, {
          cause: error,
        });
      }
      const reason = error instanceof Error ? error.message : String(error);
      throw new CredentialHelperError(helper, `docker credential helper ${program} could not run${where}: ${reason}`, {
        cause: error,
      });
    },
  );
  if (code !== 0) {
    if (NOT_FOUND.test(stdout) || NOT_FOUND.test(stderr)) return undefined;
    const detail = (stderr.trim() || stdout.trim()).split('\n')[0] ?? '';
    throw new CredentialHelperError(
      helper,
      `docker credential helper ${program} failed for ${serverAddress}${where}: exit code ${code}${detail ? `: ${detail}` : ''}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout);
  } catch {
    throw new CredentialHelperError(helper, `docker credential helper ${program} printed no JSON for ${serverAddress}${where}`);
  }
  const output = HelperOutputSchema.safeParse(parsed);
  if (!output.success) {
    throw new CredentialHelperError(
      helper,
      `docker credential helper ${program} printed JSON without a Secret for ${serverAddress}${where}`,
    );
  }
  return { username: output.data.Username, secret: output.data.Secret };
}

function run(
  program: string,
  input: string,
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, ['get'], { env, stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', reject);
    // A helper that exits without reading stdin makes the write fail with EPIPE; its exit code tells.
    child.stdin.on('error', () => undefined);
    child.on('close', (code, signal) => {
      if (signal) {
        reject(new Error(`killed by ${signal}${signal === 'SIGTERM' ? ` after ${timeoutMs} ms` : ''}`));
        return;
      }
      resolve({ code: code ?? 1, stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8') });
    });
    child.stdin.end(input);
  });
}

function isErrno(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && 'code' in error;
}
