/**
 * Runs the CLI in-process against the fake server (testing/fake-server.ts), for the program's
 * unit tests: `useFakeCli()` starts one fake server per test file (vitest hooks) and answers
 * `cryo(args, handler?)` with the exit code and what was written to stdout and stderr.
 */
import { afterAll, beforeAll, beforeEach } from 'vitest';
import type { CliIO } from '../cli';
import { run } from '../program';
import { startFakeServer, type FakeHandler, type FakeServer } from './fake-server';

/** The clock every test run sees. */
export const NOW = new Date('2025-01-01T00:05:00.000Z');
export const NS = '/v1/namespaces/default';

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

export interface IOOptions {
  env?: Record<string, string>;
  tty?: boolean;
  /** Files `readFile` can read, by path; any other path is ENOENT. */
  files?: Record<string, string>;
}

export interface FakeCli {
  /** The file's fake server (started in beforeAll). */
  readonly fake: FakeServer;
  testIO(options?: IOOptions): { io: CliIO; output: { stdout: string; stderr: string } };
  /** Runs `cryo ARGS` with `handler` answering the requests. */
  cryo(args: string[], handler?: FakeHandler, options?: IOOptions): Promise<Ran>;
}

export function useFakeCli(): FakeCli {
  let server: FakeServer | undefined;
  beforeAll(async () => {
    server = await startFakeServer();
  });
  afterAll(() => server?.close());
  beforeEach(() => {
    if (server !== undefined) server.requests.length = 0;
  });
  const cli: FakeCli = {
    get fake(): FakeServer {
      if (server === undefined) throw new Error('the fake server starts in beforeAll');
      return server;
    },
    testIO(options = {}) {
      const output = { stdout: '', stderr: '' };
      const io: CliIO = {
        stdout: { write: (s: string) => (output.stdout += s), isTTY: options.tty === true },
        stderr: { write: (s: string) => (output.stderr += s), isTTY: options.tty === true },
        env: { CRYO_SERVER: cli.fake.url, ...options.env },
        now: () => NOW,
        readFile: async (path) => {
          const content = options.files?.[path];
          if (content === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
          return content;
        },
        pollIntervalMs: 5,
      };
      return { io, output };
    },
    async cryo(args, handler, options = {}) {
      if (handler) cli.fake.handle(handler);
      const { io, output } = cli.testIO(options);
      const code = await run(args, io);
      return { code, ...output };
    },
  };
  return cli;
}

/** Answers in sequence (the last one repeats), for polls. */
export function sequence(...answers: Array<ReturnType<FakeHandler>>): FakeHandler {
  return () => (answers.length > 1 ? answers.shift() : answers[0]) ?? { status: 500 };
}
