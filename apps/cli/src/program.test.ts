import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { Cli } from './cli';
import { buildProgram } from './program';
import { useFakeCli } from './testing/cli-run';
import { closedPort, sandboxFixture, snapshotFixture, type FakeHandler } from './testing/fake-server';

const cli = useFakeCli();
const { cryo } = cli;
const testIO = cli.testIO;

describe('executors and health', () => {
  it('lists executors as a table', async () => {
    const ran = await cryo(['executors', 'list'], () => ({
      body: {
        items: [
          {
            executor_id: 'exec-a',
            host: 'host-a',
            labels: {},
            state: 'ready',
            last_heartbeat_at: '2025-01-01T00:04:58.000Z',
            version: '0.1.0',
            capacity: { cpus: 2, memory_mb: 4096, max_sandboxes: 10 },
            capabilities: { lazy: true, lazy_unavailable_reason: null },
            sandboxes: 3,
            cached_snapshot_images: ['a', 'b'],
            warnings: ['executor exec-a pushes snapshots to r:5000/x, not to the server\'s snapshot_registry'],
          },
        ],
        next_cursor: null,
      },
    }));
    expect(cli.fake.requests[0]?.path).toBe('/v1/executors');
    expect(ran.stdout).toBe(
      'EXECUTOR   STATE   HOST     SANDBOXES   CAPACITY                 LAZY   IMAGES   HEARTBEAT   VERSION\n' +
        'exec-a     ready   host-a   3           2 cpu, 4.0 GiB, max 10   yes    2        2s ago      0.1.0\n',
    );
    expect(ran.stderr).toBe('warning: executor exec-a pushes snapshots to r:5000/x, not to the server\'s snapshot_registry\n');
  });

  it('health prints the answer; --quiet only the exit code', async () => {
    const ran = await cryo(['health'], () => ({ body: { status: 'ok', version: '0.1.0' } }));
    expect(ran.stdout).toBe(`cryo server at ${cli.fake.url}: ok, version 0.1.0\n`);
    expect(await cryo(['health', '-q'])).toEqual({ code: 0, stdout: '', stderr: '' });
  });
});

describe('global options, auth and errors', () => {
  const ok: FakeHandler = () => ({ body: { items: [], next_cursor: null } });

  it('takes the namespace from -n, else CRYO_NAMESPACE', async () => {
    await cryo(['-n', 'team-a', 'sb', 'ls'], ok);
    await cryo(['sb', 'ls', '--namespace', 'team-b'], ok);
    await cryo(['sb', 'ls'], ok, { env: { CRYO_NAMESPACE: 'team-c' } });
    expect(cli.fake.requests.map((r) => r.path)).toEqual([
      '/v1/namespaces/team-a/sandboxes',
      '/v1/namespaces/team-b/sandboxes',
      '/v1/namespaces/team-c/sandboxes',
    ]);
  });

  it('takes the server from --server over CRYO_SERVER', async () => {
    const ran = await cryo(['--server', cli.fake.url, 'health'], () => ({ body: { status: 'ok' } }), { env: { CRYO_SERVER: 'http://127.0.0.1:1' } });
    expect(ran.code).toBe(0);
  });

  it('sends CRYO_API_KEY, or the content of --api-key-file, as a bearer token', async () => {
    await cryo(['sb', 'ls'], ok, { env: { CRYO_API_KEY: 'from-env' } });
    await cryo(['sb', 'ls', '--api-key-file', '/keys/cryo'], ok, { env: { CRYO_API_KEY: 'from-env' }, files: { '/keys/cryo': 'from-file\n' } });
    expect(cli.fake.requests.map((r) => r.headers.authorization)).toEqual(['Bearer from-env', 'Bearer from-file']);
  });

  it('explains a 401 without ever printing the key', async () => {
    const denied: FakeHandler = () => ({ status: 401, body: { error: { code: 'UNAUTHORIZED', message: 'invalid API key' } } });
    const ran = await cryo(['sb', 'ls'], denied, { env: { CRYO_API_KEY: 'very-secret-key' } });
    expect(ran.code).toBe(1);
    expect(ran.stderr).toBe('error: invalid API key (UNAUTHORIZED); the server rejected the API key; check CRYO_API_KEY or the file given to --api-key-file\n');
    expect(ran.stdout + ran.stderr).not.toContain('very-secret-key');
    const none = await cryo(['sb', 'ls'], denied);
    expect(none.stderr).toContain('set CRYO_API_KEY, or pass --api-key-file FILE');
  });

  it('names an unreadable API key file', async () => {
    const ran = await cryo(['sb', 'ls', '--api-key-file', '/nope'], ok);
    expect(ran).toEqual({ code: 1, stdout: '', stderr: 'error: cannot read the API key file /nope: ENOENT (API_KEY_FILE)\n' });
    expect(cli.fake.requests).toHaveLength(0);
  });

  it('prints a not found as "error: <message> (<code>)" and exits 1', async () => {
    const ran = await cryo(['sb', 'get', 'sbx-x'], () => ({ status: 404, body: { error: { code: 'NOT_FOUND', message: 'sandbox sbx-x not found' } } }));
    expect(ran).toEqual({ code: 1, stdout: '', stderr: 'error: sandbox sbx-x not found (NOT_FOUND)\n' });
  });

  it('says how to start the server when nothing listens', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const ran = await cryo(['health'], undefined, { env: { CRYO_SERVER: url } });
    expect(ran.code).toBe(1);
    expect(ran.stderr).toBe(
      `error: cannot reach cryo server at ${url} (ECONNREFUSED); is it running? start it with \`npm start\`, or point --server / CRYO_SERVER at the right address\n`,
    );
  });

  it('rejects a bad namespace and unknown options and commands', async () => {
    expect((await cryo(['-n', 'Team A', 'sb', 'ls'])).stderr).toContain('namespace "Team A" must match');
    expect((await cryo(['sb', 'ls', '--bogus'])).stderr).toContain("error: unknown option '--bogus'");
    const typo = await cryo(['snapshots', 'lsit']);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toContain("error: unknown command 'lsit'");
    expect(cli.fake.requests).toHaveLength(0);
  });
});

describe('help', () => {
  /** The commands of this file's program; `clip` belongs to src/clip/ and is tested there. */
  function allCommands(): Command[] {
    const program = buildProgram(new Cli(testIO().io));
    const out: Command[] = [];
    const visit = (cmd: Command): void => {
      if (cmd.name() === 'clip') return;
      out.push(cmd);
      cmd.commands.forEach(visit);
    };
    visit(program);
    return out;
  }

  function commandPath(cmd: Command): string[] {
    const names: string[] = [];
    for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
    return names;
  }

  it('every command has --help with examples', async () => {
    const commands = allCommands().filter((cmd) => cmd.name() !== 'help');
    expect(commands.length).toBeGreaterThan(15);
    for (const cmd of commands) {
      const ran = await cryo([...commandPath(cmd), '--help']);
      expect(ran.code, commandPath(cmd).join(' ')).toBe(0);
      expect(ran.stdout, commandPath(cmd).join(' ')).toContain('Examples:\n  $ cryo');
    }
  });

  it('every example in the help runs against a server that answers', async () => {
    // A fake that answers every route plausibly; a snapshot read right after a DELETE reads as deleted.
    let deleted = false;
    cli.fake.handle((req) => {
      if (req.path === '/healthz') return { body: { status: 'ok' } };
      if (req.method === 'GET' && req.query.has('tag')) return { body: { items: [snapshotFixture()], next_cursor: null } };
      if (req.path === '/v1/executors' || req.method === 'GET' && /\/(sandboxes|snapshots)$/.test(req.path)) return { body: { items: [], next_cursor: null } };
      if (req.path.endsWith('/fork')) {
        return { status: 202, body: { snapshot_id: 'snap-0123abcd4567', restored_from_snapshot: 'snap-0123abcd4567', sandboxes: [{ sandbox_id: 'sbx-0123abcd4567', status: 'pending', executor_id: 'exec-a' }] } };
      }
      if (req.path.endsWith('/rollback')) {
        return { status: 202, body: { sandbox_id: 'sbx-0123abcd4567', status: 'restoring', snapshot_id: 'snap-0123abcd4567', restore_mode: 'eager' } };
      }
      if (req.path.endsWith('/exec')) return { body: { exit_code: 0, stdout: '', stderr: '' } };
      if (req.method === 'POST' && req.path.endsWith('/snapshots')) return { status: 202, body: { snapshot_id: 'snap-0123abcd4567', status: 'creating' } };
      if (req.method === 'POST') return { status: 202, body: { sandbox_id: 'sbx-0123abcd4567', status: 'pending' } };
      if (req.method === 'DELETE' && req.path.includes('/sandboxes/')) return { body: sandboxFixture({ status: 'terminated' }) };
      if (req.method === 'DELETE') {
        deleted = true;
        return { status: 202, body: snapshotFixture({ status: 'deleting' }) };
      }
      if (req.path.includes('/snapshots/')) {
        const status = deleted ? 'deleted' : 'active';
        deleted = false;
        return { body: snapshotFixture({ status, clip_index_ref: `${String(snapshotFixture().image_ref)}.clip` }) };
      }
      return { body: sandboxFixture() };
    });
    const examples = new Set<string>();
    for (const cmd of allCommands()) {
      const help = cmd.helpInformation() + (await cryo([...commandPath(cmd), '--help'])).stdout;
      for (const match of help.matchAll(/\$ .*?\bcryo ([^)&#\n]*)/g)) examples.add((match[1] ?? '').trim());
    }
    expect(examples.size).toBeGreaterThan(20);
    for (const example of examples) {
      const ran = await cryo(shellWords(example));
      expect({ example, code: ran.code, stderr: ran.stderr }).toEqual({ example, code: 0, stderr: ran.stderr });
      expect(ran.stderr, example).not.toMatch(/^error:/m);
    }
  });
});

/** Splits a command line the way sh would for the plain words and '...' quotes the examples use. */
function shellWords(line: string): string[] {
  return [...line.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2] ?? '');
}
