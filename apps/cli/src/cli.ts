/**
 * What every command needs: the process's streams and environment (injectable, so tests run the
 * whole CLI in-process), the global options resolved once, a client, and the output modes.
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { z } from 'zod';
import { CryoClient, DEFAULT_NAMESPACE, DEFAULT_SERVER } from './client';
import { CryoClientError } from './client-errors';

export interface OutStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
}

export interface CliIO {
  stdout: OutStream;
  stderr: OutStream;
  env: Record<string, string | undefined>;
  now(): Date;
  readFile(path: string): Promise<string>;
  /** Poll interval of --wait (tests shorten it). */
  pollIntervalMs: number;
}

export const processIO: CliIO = {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  now: () => new Date(),
  readFile: (path) => readFile(path, 'utf8'),
  pollIntervalMs: 500,
};

const GlobalOptionsSchema = z.object({
  server: z.string().optional(),
  apiKeyFile: z.string().optional(),
  namespace: z.string().optional(),
  json: z.boolean().optional(),
  quiet: z.boolean().optional(),
});

/** How results are printed: --json (the server's JSON), --quiet (ids only), or for people. */
export class Output {
  constructor(
    private readonly io: CliIO,
    readonly json: boolean,
    readonly quiet: boolean,
  ) {}

  /**
   * Prints a command's result: with --json the server's answer, with --quiet only `ids` (one
   * per line), otherwise the human text. --json wins over --quiet.
   */
  result(value: unknown, view: { human: () => string; ids?: readonly string[] }): void {
    if (this.json) {
      this.io.stdout.write(JSON.stringify(value, null, 2) + '\n');
    } else if (this.quiet) {
      for (const id of view.ids ?? []) this.io.stdout.write(id + '\n');
    } else {
      this.io.stdout.write(withNewline(view.human()));
    }
  }

  /** A remark for people on stderr (progress, "more pages"); silenced by --quiet. */
  note(text: string): void {
    if (!this.quiet) this.io.stderr.write(withNewline(text));
  }

  get stderr(): OutStream {
    return this.io.stderr;
  }

  get stdout(): OutStream {
    return this.io.stdout;
  }
}

function withNewline(text: string): string {
  return text.endsWith('\n') ? text : text + '\n';
}

export interface CommandContext {
  client: CryoClient;
  out: Output;
  now: Date;
  pollIntervalMs: number;
}

/** One run of the CLI: its IO, and what the top level needs to know after a command ran. */
export class Cli {
  exitCode = 0;
  apiKeySent = false;

  constructor(readonly io: CliIO) {}

  async context(cmd: Command): Promise<CommandContext> {
    const options = GlobalOptionsSchema.parse(cmd.optsWithGlobals());
    const apiKey = await this.apiKey(options.apiKeyFile);
    this.apiKeySent = apiKey !== undefined;
    const client = new CryoClient({
      server: options.server ?? this.io.env.CRYO_SERVER ?? DEFAULT_SERVER,
      namespace: options.namespace ?? this.io.env.CRYO_NAMESPACE ?? DEFAULT_NAMESPACE,
      apiKey,
    });
    return {
      client,
      out: new Output(this.io, options.json === true, options.quiet === true),
      now: this.io.now(),
      pollIntervalMs: this.io.pollIntervalMs,
    };
  }

  /** --api-key-file wins over CRYO_API_KEY; the key itself is never a flag (it would sit in ps and shell history). */
  private async apiKey(file: string | undefined): Promise<string | undefined> {
    if (file !== undefined) {
      let text: string;
      try {
        text = await this.io.readFile(file);
      } catch (err) {
        const code = err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : 'EIO';
        throw new CryoClientError('API_KEY_FILE', `cannot read the API key file ${file}: ${code}`);
      }
      const key = text.trim();
      if (key === '') throw new CryoClientError('API_KEY_FILE', `the API key file ${file} is empty`);
      return key;
    }
    const key = this.io.env.CRYO_API_KEY?.trim();
    return key === '' ? undefined : key;
  }
}
