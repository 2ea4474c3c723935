import type { Command } from 'commander';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Cli, type CliIO } from './cli';
import { buildProgram, run } from './program';
import {
  closedPort,
  sandboxFixture,
  snapshotFixture,
  startFakeServer,
  type FakeHandler,
  type FakeServer,
} from './testing/fake-server';

const NOW = new Date('2025-01-01T00:05:00.000Z');
const NS = '/v1/namespaces/default';

let fake: FakeServer;
beforeAll(async () => {
  fake = await startFakeServer();
});
afterAll(() => fake.close());
beforeEach(() => {
  fake.requests.length = 0;
});

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function testIO(options: { env?: Record<string, string>; tty?: boolean; files?: Record<string, string> } = {}): {
  io: CliIO;
  output: { stdout: string; stderr: string };
} {
  const output = { stdout: '', stderr: '' };
  const io: CliIO = {
    stdout: { write: (s: string) => (output.stdout += s), isTTY: options.tty === true },
    stderr: { write: (s: string) => (output.stderr += s), isTTY: options.tty === true },
    env: { CRYO_SERVER: fake.url, ...options.env },
    now: () => NOW,
    readFile: async (path) => {
      const content = options.files?.[path];
      if (content === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
      return content;
    },
    pollIntervalMs: 5,
  };
  return { io, output };
}

async function cryo(
  args: string[],
  handler?: FakeHandler,
  options: { env?: Record<string, string>; tty?: boolean; files?: Record<string, string> } = {},
): Promise<Ran> {
  if (handler) fake.handle(handler);
  const { io, output } = testIO(options);
  const code = await run(args, io);
  return { code, ...output };
}

/** Answers in sequence (the last one repeats), for polls. */
function sequence(...answers: Array<ReturnType<FakeHandler>>): FakeHandler {
  return () => (answers.length > 1 ? answers.shift() : answers[0]) ?? { status: 500 };
}

describe('sandboxes create', () => {
  const created = { status: 202, body: { sandbox_id: 'sbx-new000000001', status: 'pending' } };

  it('sends image, command after --, repeated env and labels, resources, timeout and executor', async () => {
    const ran = await cryo(
      [
        'sandboxes', 'create', 'busybox:latest',
        '-e', 'A=1', '--env', 'B=x=y', '--label', 'team=ml', '-l', 'tier=gold',
        '--cpus', '0.5', '--memory-mb', '256', '--timeout-secs', '600', '--executor', 'exec-b',
        '--', 'sh', '-c', 'echo hi --json',
      ],
      () => created,
    );
    expect(ran).toEqual({ code: 0, stdout: 'created sandbox sbx-new000000001 (pending)\n', stderr: '' });
    expect(fake.requests[0]?.path).toBe(`${NS}/sandboxes`);
    expect(fake.requests[0]?.body).toEqual({
      image: 'busybox:latest',
      command: ['sh', '-c', 'echo hi --json'],
      env: { A: '1', B: 'x=y' },
      labels: { team: 'ml', tier: 'gold' },
      resources: { cpus: 0.5, memory_mb: 256 },
      timeout_secs: 600,
      executor_id: 'exec-b',
    });
  });

  it('sends only the image when nothing else is given; the alias sb works', async () => {
    await cryo(['sb', 'create', 'busybox'], () => created);
    expect(fake.requests[0]?.body).toEqual({ image: 'busybox' });
  });

  it('--quiet prints only the id, --json exactly the server answer', async () => {
    expect((await cryo(['sandbox', 'create', 'busybox', '-q'], () => created)).stdout).toBe('sbx-new000000001\n');
    const json = await cryo(['sandbox', 'create', 'busybox', '--json'], () => created);
    expect(JSON.parse(json.stdout)).toEqual(created.body);
  });

  it('rejects bad option values before sending anything', async () => {
    const ran = await cryo(['sb', 'create', 'busybox', '--cpus', '0'], () => created);
    expect(ran.code).toBe(1);
    expect(ran.stderr).toContain("error: option '--cpus <n>' argument '0' is invalid. expected a positive number");
    const env = await cryo(['sb', 'create', 'busybox', '--env', 'NOEQUALS']);
    expect(env.stderr).toContain('expected KEY=VALUE, got "NOEQUALS"');
    expect(fake.requests).toHaveLength(0);
  });

  it('--wait notes each new pending reason once and ends when running', async () => {
    const pending = (reason: string) => ({ body: sandboxFixture({ status: 'pending', pending_reason: reason, started_at: null }) });
    const answers = [pending('no executor has capacity'), pending('no executor has capacity'), pending('pulling image'), { body: sandboxFixture() }];
    const ran = await cryo(['sb', 'create', 'busybox', '--wait'], (req) =>
      req.method === 'POST' ? created : (answers.shift() ?? { body: sandboxFixture() }),
    );
    expect(ran).toEqual({
      code: 0,
      stdout: 'sandbox sbx-aaaa1111bbbb is running on exec-a\n',
      stderr: 'sbx-aaaa1111bbbb pending: no executor has capacity\nsbx-aaaa1111bbbb pending: pulling image\n',
    });
  });

  it('--wait of a restore shows the pending reason, then the executor\'s pull progress', async () => {
    const pending = (over: Record<string, unknown>) => ({ body: sandboxFixture({ status: 'pending', started_at: null, ...over }) });
    const answers = [
      pending({ pending_reason: 'waiting for executor exec-a', progress: null }),
      pending({ pending_reason: 'waiting for executor exec-a', progress: { phase: 'pull', bytes_done: 1024 * 1024, bytes_total: 4 * 1024 * 1024 } }),
      pending({ pending_reason: 'waiting for executor exec-a', progress: { phase: 'pull', bytes_done: 4 * 1024 * 1024, bytes_total: 4 * 1024 * 1024 } }),
      { body: sandboxFixture() },
    ];
    const ran = await cryo(['snap', 'restore', 'snap-cccc2222dddd', '--wait'], (req) =>
      req.method === 'POST' ? created : (answers.shift() ?? { body: sandboxFixture() }),
    );
    expect(ran.stderr).toBe([
      'sbx-aaaa1111bbbb pending: waiting for executor exec-a',
      'sbx-aaaa1111bbbb pending: pull 1.0 MiB / 4.0 MiB (25%)',
      'sbx-aaaa1111bbbb pending: pull 4.0 MiB / 4.0 MiB (100%)',
      '',
    ].join('\n'));
    expect(ran.code).toBe(0);
  });

  it('--wait fails when the sandbox terminated instead of running', async () => {
    const ended = sandboxFixture({
      status: 'terminated',
      started_at: null,
      outcome: { kind: 'failed', reason: 'image busybox:nope not found' },
    });
    const ran = await cryo(['sb', 'create', 'busybox:nope', '--wait', '--json'], (req) =>
      req.method === 'POST' ? created : { body: ended },
    );
    expect(ran.code).toBe(1);
    expect(JSON.parse(ran.stdout)).toEqual(ended);
    expect(ran.stderr).toBe(
      'error: sandbox sbx-new000000001 terminated before it started: failed: image busybox:nope not found (SANDBOX_TERMINATED)\n',
    );
  });

  it('--wait-timeout-secs gives up', async () => {
    const ran = await cryo(['sb', 'create', 'busybox', '--wait', '--wait-timeout-secs', '1', '-q'], (req) =>
      req.method === 'POST' ? created : { body: sandboxFixture({ status: 'pending', pending_reason: 'pulling image' }) },
    );
    expect(ran.code).toBe(1);
    expect(ran.stderr).toMatch(/^error: gave up waiting after 1s: sandbox sbx-new000000001 is pending \(pulling image\).* \(WAIT_TIMEOUT\)\n$/);
  });
});

describe('sandboxes list and get', () => {
  const two = {
    items: [
      sandboxFixture({ sandbox_id: 'sbx-1', created_at: '2025-01-01T00:02:00.000Z' }),
      sandboxFixture({
        sandbox_id: 'sbx-22',
        status: 'pending',
        image: 'python:3.12',
        executor_id: null,
        pending_reason: 'pulling image',
        created_at: '2024-12-31T22:05:00.000Z',
      }),
    ],
    next_cursor: null,
  };

  it('prints an aligned table with relative times', async () => {
    const ran = await cryo(['sandboxes', 'list'], () => ({ body: two }));
    expect(ran.stdout).toBe(
      [
        'SANDBOX   STATUS    IMAGE            EXECUTOR   CREATED   DETAIL',
        'sbx-1     running   busybox:latest   exec-a     3m ago',
        'sbx-22    pending   python:3.12      -          2h ago    pulling image',
        '',
      ].join('\n'),
    );
  });

  it('passes filters and notes when more pages exist', async () => {
    const ran = await cryo(['sb', 'ls', '--status', 'running', '--label', 'team=ml', '--limit', '2'], () => ({
      body: { ...two, next_cursor: 'next-1' },
    }));
    const query = fake.requests[0]?.query;
    expect(query?.get('status')).toBe('running');
    expect(query?.getAll('label')).toEqual(['team=ml']);
    expect(query?.get('limit')).toBe('2');
    expect(ran.stderr).toBe('more sandboxes: add --all, or --cursor next-1\n');
  });

  it('rejects an unknown status', async () => {
    const ran = await cryo(['sb', 'ls', '--status', 'sleeping']);
    expect(ran.code).toBe(1);
    expect(ran.stderr).toContain("error: option '--status <status>' argument 'sleeping' is invalid. Allowed choices are pending, running, snapshotting, restoring, terminated.");
  });

  it('--all follows cursors; --json prints one page of everything; --quiet the ids', async () => {
    const pages: FakeHandler = (req) =>
      req.query.get('cursor') === null
        ? { body: { items: [sandboxFixture({ sandbox_id: 'sbx-1' })], next_cursor: 'p2' } }
        : { body: { items: [sandboxFixture({ sandbox_id: 'sbx-2' })], next_cursor: null } };
    const json = await cryo(['sb', 'ls', '--all', '--json'], pages);
    expect(JSON.parse(json.stdout)).toEqual({
      items: [sandboxFixture({ sandbox_id: 'sbx-1' }), sandboxFixture({ sandbox_id: 'sbx-2' })],
      next_cursor: null,
    });
    expect((await cryo(['sb', 'ls', '--all', '-q'], pages)).stdout).toBe('sbx-1\nsbx-2\n');
  });

  it('says so when there is nothing', async () => {
    expect((await cryo(['sb', 'ls'], () => ({ body: { items: [], next_cursor: null } }))).stdout).toBe('no sandboxes\n');
  });

  it('get prints key: value with full timestamps', async () => {
    const ran = await cryo(['sb', 'get', 'sbx-aaaa1111bbbb'], () => ({
      body: sandboxFixture({ labels: { team: 'ml' }, resources: { cpus: 1 } }),
    }));
    expect(fake.requests[0]?.path).toBe(`${NS}/sandboxes/sbx-aaaa1111bbbb`);
    expect(ran.stdout).toMatch(/^sandbox_id: +sbx-aaaa1111bbbb\n/);
    expect(ran.stdout).toContain('\nstatus:       running\n');
    expect(ran.stdout).toContain('\ncommand:      sleep 3600\n');
    expect(ran.stdout).toContain('\nlabels:       team=ml\n');
    expect(ran.stdout).toContain('\nresources:    cpus=1\n');
    expect(ran.stdout).toContain('\ncreated_at:   2025-01-01T00:00:00.000Z (5m ago)\n');
    expect(ran.stdout).not.toContain('pending_reason');
  });

  it('delete calls DELETE and prints the new status', async () => {
    const ran = await cryo(['sb', 'rm', 'sbx-1'], () => ({ body: sandboxFixture({ status: 'terminated', outcome: { kind: 'user' } }) }));
    expect(fake.requests[0]?.method).toBe('DELETE');
    expect(ran.stdout).toBe('sandbox sbx-1 is terminated\n');
  });
});

describe('sandboxes exec', () => {
  it("prints the command's stdout and stderr to the matching streams and exits with its code", async () => {
    const ran = await cryo(['sb', 'exec', 'sbx-1', '--timeout-secs', '30', '--', 'sh', '-c', 'exit 3'], () => ({
      body: { exit_code: 3, stdout: 'out\n', stderr: 'err\n' },
    }));
    expect(ran).toEqual({ code: 3, stdout: 'out\n', stderr: 'err\n' });
    expect(fake.requests[0]?.path).toBe(`${NS}/sandboxes/sbx-1/exec`);
    expect(fake.requests[0]?.body).toEqual({ command: ['sh', '-c', 'exit 3'], timeout_secs: 30 });
  });

  it('exits 1 for an exit code a process cannot have', async () => {
    const ran = await cryo(['sb', 'exec', 'sbx-1', '--', 'x'], () => ({ body: { exit_code: -1, stdout: '', stderr: '' } }));
    expect(ran.code).toBe(1);
  });

  it('--json prints the result and still exits with the exit code', async () => {
    const body = { exit_code: 2, stdout: 'a', stderr: 'b' };
    const ran = await cryo(['--json', 'sb', 'exec', 'sbx-1', '--', 'false'], () => ({ body }));
    expect(ran.code).toBe(2);
    expect(JSON.parse(ran.stdout)).toEqual(body);
    expect(ran.stderr).toBe('');
  });

  it('wants a command', async () => {
    const ran = await cryo(['sb', 'exec', 'sbx-1']);
    expect(ran.code).toBe(1);
    expect(ran.stderr).toContain("error: missing required argument 'command'");
  });
});

describe('snapshots', () => {
  const created = { status: 202, body: { snapshot_id: 'snap-cccc2222dddd', status: 'creating' } };
  const creating = (phase: string, done: number, total: number | null) => ({
    body: snapshotFixture({ status: 'creating', progress: { phase, bytes_done: done, bytes_total: total } }),
  });
  const MiB = 1024 * 1024;

  it('create sends ttl, tag and labels', async () => {
    const ran = await cryo(['snapshots', 'create', 'sbx-1', '--ttl-secs', '0', '--tag', 'v1', '-l', 'a=b'], () => created);
    expect(fake.requests[0]?.path).toBe(`${NS}/sandboxes/sbx-1/snapshots`);
    expect(fake.requests[0]?.body).toEqual({ ttl_secs: 0, tag: 'v1', labels: { a: 'b' } });
    expect(ran.stdout).toBe('created snapshot snap-cccc2222dddd of sandbox sbx-1 (creating)\n');
  });

  it('create --wait prints one plain line per change off a terminal, then the snapshot', async () => {
    const polls = [creating('committing', 0, null), creating('pushing', 2 * MiB, 8 * MiB), creating('pushing', 2 * MiB, 8 * MiB), { body: snapshotFixture() }];
    const ran = await cryo(['snap', 'create', 'sbx-1', '--wait'], (req) => (req.method === 'POST' ? created : (polls.shift() ?? { body: snapshotFixture() })));
    expect(ran.code).toBe(0);
    expect(ran.stderr).toBe(
      [
        'snap-cccc2222dddd creating: committing',
        'snap-cccc2222dddd creating: pushing 2.0 MiB / 8.0 MiB (25%)',
        'snap-cccc2222dddd active',
        '',
      ].join('\n'),
    );
    expect(ran.stdout).toMatch(/\nstatus: +active\n/);
    expect(ran.stdout).toMatch(/\ntimings: +pause 15 ms, commit 70 ms, push 1\.2 s, index -\n/);
  });

  it('shows the layer count and says when the snapshot was flattened', async () => {
    const flat = snapshotFixture({ layers: 1, flattened: true, timings: { pause_ms: 15, commit_ms: 70, push_ms: 1200, index_ms: null, flatten_ms: 2500 } });
    const ran = await cryo(['snap', 'create', 'sbx-1', '--wait'], (req) => (req.method === 'POST' ? created : { body: flat }));
    expect(ran.stdout).toMatch(/\nlayers: +1 \(flattened: the chain of snapshots had reached the executor's snapshots\.max_layers\)\n/);
    expect(ran.stdout).toMatch(/\ntimings: +pause 15 ms, commit 70 ms, flatten 2\.5 s, push 1\.2 s, index -\n/);
    const plain = await cryo(['snap', 'create', 'sbx-1', '--wait'], (req) => (req.method === 'POST' ? created : { body: snapshotFixture() }));
    expect(plain.stdout).toMatch(/\nlayers: +3\n/);
  });

  it('create --wait redraws a single line on a terminal', async () => {
    const polls = [creating('pushing', MiB, 4 * MiB), { body: snapshotFixture() }];
    const ran = await cryo(['snap', 'create', 'sbx-1', '--wait', '-q'], (req) => (req.method === 'POST' ? created : (polls.shift() ?? { body: snapshotFixture() })), { tty: true });
    expect(ran.stdout).toBe('snap-cccc2222dddd\n');
    expect(ran.stderr).toBe('');
    const loud = [creating('pushing', MiB, 4 * MiB), { body: snapshotFixture() }];
    const tty = await cryo(['snap', 'create', 'sbx-1', '--wait'], (req) => (req.method === 'POST' ? created : (loud.shift() ?? { body: snapshotFixture() })), { tty: true });
    expect(tty.stderr).toBe(
      '\r\x1b[2Ksnap-cccc2222dddd creating: pushing 1.0 MiB / 4.0 MiB (25%)\r\x1b[2Ksnap-cccc2222dddd active\n',
    );
  });

  it('create --wait exits 1 with the error of a failed snapshot', async () => {
    const failed = snapshotFixture({ status: 'failed', error: 'registry 127.0.0.1:5001 rejected credentials for user myuser (HTTP 401)' });
    const ran = await cryo(['snap', 'create', 'sbx-1', '--wait', '--json'], (req) => (req.method === 'POST' ? created : { body: failed }));
    expect(ran.code).toBe(1);
    expect(JSON.parse(ran.stdout)).toEqual(failed);
    expect(ran.stderr).toContain(
      'error: snapshot snap-cccc2222dddd failed: registry 127.0.0.1:5001 rejected credentials for user myuser (HTTP 401) (SNAPSHOT_FAILED)\n',
    );
  });

  it('list --sandbox uses the sandbox route and prints a table', async () => {
    const ran = await cryo(['snap', 'ls', '--sandbox', 'sbx-1', '--status', 'active'], () => ({
      body: { items: [snapshotFixture()], next_cursor: null },
    }));
    expect(fake.requests[0]?.path).toBe(`${NS}/sandboxes/sbx-1/snapshots`);
    expect(fake.requests[0]?.query.get('status')).toBe('active');
    const [header, row] = ran.stdout.split('\n');
    expect(header).toMatch(/^SNAPSHOT\s+STATUS\s+SANDBOX\s+SIZE\s+CREATED\s+EXPIRES\s+REF$/);
    expect(row).toMatch(/^snap-cccc2222dddd\s+active\s+sbx-aaaa1111bbbb\s+5\.0 MiB\s+5m ago\s+in 55m\s+127\.0\.0\.1:5001\/cryo/);
  });

  it('get shows TTL, expiry and size', async () => {
    const ran = await cryo(['snapshot', 'get', 'snap-1'], () => ({ body: snapshotFixture({ ttl_secs: 0, expires_at: null }) }));
    expect(ran.stdout).toMatch(/\nttl_secs: +0 \(never expires\)\n/);
    expect(ran.stdout).toMatch(/\nexpires_at: +never\n/);
    expect(ran.stdout).toMatch(/\nsize: +5\.0 MiB \(5242880 bytes\)\n/);
  });

  it('patch and set-ttl send the new TTL', async () => {
    const updated = { body: snapshotFixture({ ttl_secs: 7200, expires_at: '2025-01-01T02:00:00.000Z' }) };
    const ran = await cryo(['snap', 'patch', 'snap-1', '--ttl-secs', '7200'], () => updated);
    expect(fake.requests[0]).toMatchObject({ method: 'PATCH', path: `${NS}/snapshots/snap-1`, body: { ttl_secs: 7200 } });
    expect(ran.stdout).toBe('snapshot snap-1 ttl 2h, expires 2025-01-01T02:00:00.000Z (in 1h)\n');
    await cryo(['snap', 'set-ttl', 'snap-1', '--ttl-secs', '0'], () => ({ body: snapshotFixture({ ttl_secs: 0, expires_at: null }) }));
    expect(fake.requests[1]?.body).toEqual({ ttl_secs: 0 });
    const missing = await cryo(['snap', 'patch', 'snap-1']);
    expect(missing.stderr).toContain("error: required option '--ttl-secs <n>' not specified");
  });

  it('delete without --wait prints the status the server answered', async () => {
    const ran = await cryo(['snap', 'rm', 'snap-1'], () => ({ status: 202, body: snapshotFixture({ status: 'deleting' }) }));
    expect(fake.requests[0]).toMatchObject({ method: 'DELETE', path: `${NS}/snapshots/snap-1` });
    expect(ran.stdout).toBe('snapshot snap-1 is deleting\n');
  });

  it('delete --wait polls until the snapshot is deleted or gone', async () => {
    const polls = [{ body: snapshotFixture({ status: 'deleting' }) }, { status: 404, body: { error: { code: 'NOT_FOUND', message: 'gone' } } }];
    const ran = await cryo(['snap', 'delete', 'snap-1', '--wait'], (req) =>
      req.method === 'DELETE' ? { status: 202, body: snapshotFixture({ status: 'deleting' }) } : (polls.shift() ?? { status: 500 }),
    );
    expect(ran).toEqual({ code: 0, stdout: 'deleted snapshot snap-1\n', stderr: '' });
  });

  it('restore sends mode, executor, env, labels and the command override', async () => {
    const ran = await cryo(
      ['snap', 'restore', 'snap-1', '--mode', 'lazy', '--executor', 'exec-b', '-e', 'A=1', '--', 'python3', '-m', 'http.server'],
      () => ({ status: 202, body: { sandbox_id: 'sbx-r', status: 'pending', restored_from_snapshot: 'snap-1' } }),
    );
    expect(fake.requests[0]?.path).toBe(`${NS}/snapshots/snap-1/restore`);
    expect(fake.requests[0]?.body).toEqual({
      mode: 'lazy',
      executor_id: 'exec-b',
      env: { A: '1' },
      command: ['python3', '-m', 'http.server'],
    });
    expect(ran.stdout).toBe('restoring snapshot snap-1 into sandbox sbx-r (pending)\n');
    const bad = await cryo(['snap', 'restore', 'snap-1', '--mode', 'fast']);
    expect(bad.stderr).toContain('Allowed choices are eager, lazy.');
  });

  it('restore --mode lazy --wait waits for the clip index the executor builds after the push, then restores', async () => {
    const indexRef = `${String(snapshotFixture().image_ref)}.clip`;
    const snapshots = [snapshotFixture({ status: 'creating', image_ref: null }), snapshotFixture(), snapshotFixture(), snapshotFixture({ clip_index_ref: indexRef })];
    const ran = await cryo(['snap', 'restore', 'snap-1', '--mode', 'lazy', '--wait', '-q'], (req) => {
      if (req.method === 'POST') return { status: 202, body: { sandbox_id: 'sbx-r', status: 'pending' } };
      if (req.path.includes('/snapshots/')) return { body: snapshots.shift() ?? { error: { code: 'INTERNAL', message: 'polled once too often' } } };
      return { body: sandboxFixture({ sandbox_id: 'sbx-r', restore_mode: 'lazy' }) };
    });
    expect(ran).toEqual({ code: 0, stdout: 'sbx-r\n', stderr: '' });
    expect(snapshots).toEqual([]);
    expect(fake.requests.map((r) => `${r.method} ${r.path.replace(NS, '')}`)).toEqual([
      'GET /snapshots/snap-1', 'GET /snapshots/snap-1', 'GET /snapshots/snap-1', 'GET /snapshots/snap-1',
      'POST /snapshots/snap-1/restore', 'GET /sandboxes/sbx-r',
    ]);
    // Without --quiet the wait is noted once; a local snapshot (never indexed) is restored at once
    // and gets the server's answer.
    const local = snapshotFixture({ image_ref: 'cryo-snapshots:sb-x-snap-y' });
    fake.requests.length = 0;
    const refused = await cryo(['snap', 'restore', 'snap-1', '--mode', 'lazy', '--wait'], (req) =>
      req.method === 'POST'
        ? { status: 422, body: { error: { code: 'UNPROCESSABLE', message: 'snapshot snap-1 has no clip index' } } }
        : { body: local });
    expect(refused).toEqual({ code: 1, stdout: '', stderr: 'error: snapshot snap-1 has no clip index (UNPROCESSABLE)\n' });
    expect(fake.requests.map((r) => r.method)).toEqual(['GET', 'POST']);
  });

  it('restore of an expired snapshot prints the server error', async () => {
    const ran = await cryo(['snap', 'restore', 'snap-1'], () => ({
      status: 410,
      body: { error: { code: 'GONE', message: 'snapshot snap-1 expired at 2025-01-01T01:00:00.000Z' } },
    }));
    expect(ran).toEqual({ code: 1, stdout: '', stderr: 'error: snapshot snap-1 expired at 2025-01-01T01:00:00.000Z (GONE)\n' });
  });
});

describe('lifecycle (issue 12): fork, rollback, retention, sliding TTL, fallback, tags', () => {
  /** GET /snapshots?tag=golden answers an expired and an active one; the active one is chosen. */
  const tagged = (req: { path: string; query: URLSearchParams }) =>
    req.path === `${NS}/snapshots` && req.query.get('tag') === 'golden'
      ? { body: { items: [snapshotFixture({ snapshot_id: 'snap-new', status: 'active', tag: 'golden' }), snapshotFixture({ snapshot_id: 'snap-old', status: 'expired', tag: 'golden' })], next_cursor: null } }
      : undefined;
  const forked = (statuses: string[]) => ({
    status: 202,
    body: {
      snapshot_id: 'snap-new', restored_from_snapshot: 'snap-new',
      sandboxes: statuses.map((status, i) => ({ sandbox_id: `sbx-f${i}`, status, executor_id: status === 'terminated' ? null : `exec-${i % 2 === 0 ? 'a' : 'b'}` })),
    },
  });

  it('create sends keep_last and ttl_from; get shows them with last_used_at and deleted_reason', async () => {
    await cryo(['snap', 'create', 'sbx-1', '--keep-last', '3', '--ttl-from', 'last_use'], () => ({ status: 202, body: { snapshot_id: 'snap-1', status: 'creating' } }));
    expect(fake.requests[0]?.body).toEqual({ keep_last: 3, ttl_from: 'last_use' });
    expect((await cryo(['snap', 'create', 'sbx-1', '--keep-last', '0'])).stderr).toContain('must be between 1 and 1000');
    expect((await cryo(['snap', 'create', 'sbx-1', '--ttl-from', 'never'])).stderr).toContain('Allowed choices are created, last_use.');
    const ran = await cryo(['snap', 'get', 'snap-1'], () => ({
      body: snapshotFixture({ ttl_from: 'last_use', keep_last: 3, last_used_at: '2025-01-01T00:04:00.000Z', status: 'deleted', deleted_reason: 'retention', deleted_at: '2025-01-01T00:04:30.000Z' }),
    }));
    expect(ran.stdout).toMatch(/\nttl_secs: +3600 \(1h, from the last use\)\n/);
    expect(ran.stdout).toMatch(/\nlast_used_at: +2025-01-01T00:04:00.000Z \(1m ago\)\n/);
    expect(ran.stdout).toMatch(/\nkeep_last: +3\n/);
    expect(ran.stdout).toMatch(/\ndeleted_reason: +retention\n/);
  });

  it('takes tag:NAME wherever it takes a snapshot id: the live snapshot of that name', async () => {
    const handler: FakeHandler = (req) => tagged(req) ?? { body: snapshotFixture({ snapshot_id: 'snap-new' }) };
    const ran = await cryo(['snap', 'get', 'tag:golden', '-q'], handler);
    expect(ran).toEqual({ code: 0, stdout: 'snap-new\n', stderr: '' });
    expect(fake.requests.map((r) => `${r.method} ${r.path.replace(NS, '')}${r.query.size > 0 ? `?${r.query.toString()}` : ''}`)).toEqual([
      'GET /snapshots?limit=50&tag=golden', 'GET /snapshots/snap-new',
    ]);
    for (const args of [['snap', 'rm', 'tag:golden'], ['snap', 'patch', 'tag:golden', '--ttl-secs', '60'], ['snap', 'restore', 'tag:golden'], ['snap', 'fork', 'tag:golden', '--count', '1'], ['sb', 'rollback', 'sbx-1', 'tag:golden']]) {
      fake.requests.length = 0;
      await cryo(args, (req) => tagged(req) ?? (req.path.endsWith('/fork') ? forked(['pending']) : req.path.endsWith('/rollback')
        ? { status: 202, body: { sandbox_id: 'sbx-1', status: 'restoring', snapshot_id: 'snap-new', restore_mode: 'eager' } }
        : { status: 202, body: req.method === 'DELETE' || req.method === 'PATCH' ? snapshotFixture({ snapshot_id: 'snap-new' }) : { sandbox_id: 'sbx-r', status: 'pending' } }));
      const second = fake.requests[1];
      expect(second?.path.includes('snap-new') || (second?.body as { snapshot_id?: string } | undefined)?.snapshot_id === 'snap-new', args.join(' ')).toBe(true);
    }
    // Only an expired one of that name: it is chosen (the server then says what became of it).
    const onlyOld = await cryo(['snap', 'get', 'tag:old', '-q'], (req) => (req.path === `${NS}/snapshots`
      ? { body: { items: [snapshotFixture({ snapshot_id: 'snap-old', status: 'expired' })], next_cursor: null } }
      : { body: snapshotFixture({ snapshot_id: 'snap-old', status: 'expired' }) }));
    expect(onlyOld.stdout).toBe('snap-old\n');
    const none = await cryo(['snap', 'restore', 'tag:nothing'], () => ({ body: { items: [], next_cursor: null } }));
    expect(none).toEqual({ code: 1, stdout: '', stderr: 'error: no snapshot in namespace default is tagged nothing (SNAPSHOT_TAG_NOT_FOUND)\n' });
    expect((await cryo(['snap', 'ls', '--tag', 'golden', '-q'], (req) => tagged(req) ?? { status: 500 })).stdout).toBe('snap-new\nsnap-old\n');
  });

  it('restore --on-expired base_image says on stderr that the base image ran instead', async () => {
    const ran = await cryo(['snap', 'restore', 'snap-1', '--on-expired', 'base_image'], () => ({
      status: 202,
      body: { sandbox_id: 'sbx-r', status: 'pending', restored_from_snapshot: null, fallback: { reason: 'snapshot snap-1 expired at X; started from its base image busybox:latest instead' } },
    }));
    expect(fake.requests[0]?.body).toEqual({ on_expired: 'base_image' });
    expect(ran).toEqual({
      code: 0,
      stdout: 'starting sandbox sbx-r from the base image of snapshot snap-1 (pending)\n',
      stderr: 'snapshot snap-1 is gone: snapshot snap-1 expired at X; started from its base image busybox:latest instead\n',
    });
  });

  it('snapshots fork sends count, executors, env, labels, command; prints the forks, and exits 1 when some could not be placed', async () => {
    const ran = await cryo(
      ['snap', 'fork', 'snap-new', '--count', '3', '--executor', 'exec-a,exec-b', '--executor', 'exec-c', '-e', 'K=V', '-l', 'run=7', '--timeout-secs', '60', '--on-expired', 'base_image', '--', 'python3', 'w.py'],
      () => forked(['pending', 'pending', 'terminated']),
    );
    expect(fake.requests[0]?.path).toBe(`${NS}/snapshots/snap-new/fork`);
    expect(fake.requests[0]?.body).toEqual({
      count: 3, executor_ids: ['exec-a', 'exec-b', 'exec-c'], env: { K: 'V' }, labels: { run: '7' }, timeout_secs: 60, on_expired: 'base_image', command: ['python3', 'w.py'],
    });
    expect(ran.code).toBe(1);
    expect(ran.stdout.split('\n').slice(0, 2)).toEqual(['3 forks of snapshot snap-new:', 'SANDBOX   STATUS       EXECUTOR   DETAIL']);
    expect(ran.stderr).toBe('error: 1 of 3 forks could not be placed (cryo sandboxes get ID says why); the others start (FORKS_TERMINATED)\n');
    expect((await cryo(['snap', 'fork', 'snap-new', '--count', '2', '-q'], () => forked(['pending', 'pending']))).stdout).toBe('sbx-f0\nsbx-f1\n');
    expect((await cryo(['snap', 'fork', 'snap-new', '--count', '101'])).stderr).toContain('must be between 1 and 100');
    expect((await cryo(['snap', 'fork', 'snap-new'])).stderr).toContain("required option '--count <n>' not specified");
  });

  it('fork --wait waits for every fork and fails naming how many terminated', async () => {
    const ran = await cryo(['sb', 'fork', 'sbx-1', '--count', '2', '--wait'], (req) => {
      if (req.method === 'POST') return forked(['pending', 'pending']);
      return req.path.endsWith('sbx-f0')
        ? { body: sandboxFixture({ sandbox_id: 'sbx-f0', status: 'running' }) }
        : { body: sandboxFixture({ sandbox_id: 'sbx-f1', status: 'terminated', outcome: { kind: 'failed', reason: 'pull failed' } }) };
    });
    expect(fake.requests[0]?.path).toBe(`${NS}/sandboxes/sbx-1/fork`);
    expect(fake.requests[0]?.body).toEqual({ count: 2 });
    expect(ran.code).toBe(1);
    expect(ran.stdout).toContain('1 of 2 forks of snapshot snap-new running:');
    expect(ran.stdout).toMatch(/sbx-f1 +terminated +exec-a +failed: pull failed/);
    expect(ran.stderr).toBe('snapshot snap-new of sbx-1 is being taken; the forks start once it is active\nerror: 1 of 2 forks terminated; the others run (FORKS_TERMINATED)\n');
  });

  it('sandboxes rollback sends the snapshot and mode; --wait until it runs again, or fails with the reason', async () => {
    const accepted = { status: 202, body: { sandbox_id: 'sbx-1', status: 'restoring', snapshot_id: 'snap-1', restore_mode: 'lazy' } };
    const ran = await cryo(['sb', 'rollback', 'sbx-1', 'snap-1', '--mode', 'lazy'], () => accepted);
    expect(fake.requests[0]?.path).toBe(`${NS}/sandboxes/sbx-1/rollback`);
    expect(fake.requests[0]?.body).toEqual({ snapshot_id: 'snap-1', mode: 'lazy' });
    expect(ran.stdout).toBe('sandbox sbx-1 is restoring: rolling back to snapshot snap-1 (lazy)\n');
    const polls = [sandboxFixture({ sandbox_id: 'sbx-1', status: 'restoring' }), sandboxFixture({ sandbox_id: 'sbx-1', status: 'running' })];
    const waited = await cryo(['sb', 'rollback', 'sbx-1', 'snap-1', '--wait'], (req) => (req.method === 'POST' ? accepted : { body: polls.shift() ?? sandboxFixture() }));
    expect(waited).toEqual({ code: 0, stdout: 'sandbox sbx-1 rolled back to snapshot snap-1 (lazy); running on exec-a\n', stderr: '' });
    const failed = await cryo(['sb', 'rollback', 'sbx-1', 'snap-1', '--wait'], (req) => (req.method === 'POST' ? accepted
      : { body: sandboxFixture({ sandbox_id: 'sbx-1', status: 'terminated', outcome: { kind: 'failed', reason: 'rollback to snapshot snap-1 failed: pull failed' } }) }));
    expect(failed.code).toBe(1);
    expect(failed.stderr).toBe('error: sandbox sbx-1 terminated: failed: rollback to snapshot snap-1 failed: pull failed (SANDBOX_TERMINATED)\n');
    const conflict = await cryo(['sb', 'rollback', 'sbx-1', 'snap-1'], () => ({ status: 409, body: { error: { code: 'CONFLICT', message: 'sandbox sbx-1 is snapshotting' } } }));
    expect(conflict).toEqual({ code: 1, stdout: '', stderr: 'error: sandbox sbx-1 is snapshotting (CONFLICT)\n' });
  });
});

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
    expect(fake.requests[0]?.path).toBe('/v1/executors');
    expect(ran.stdout).toBe(
      'EXECUTOR   STATE   HOST     SANDBOXES   CAPACITY                 LAZY   IMAGES   HEARTBEAT   VERSION\n' +
        'exec-a     ready   host-a   3           2 cpu, 4.0 GiB, max 10   yes    2        2s ago      0.1.0\n',
    );
    expect(ran.stderr).toBe('warning: executor exec-a pushes snapshots to r:5000/x, not to the server\'s snapshot_registry\n');
  });

  it('health prints the answer; --quiet only the exit code', async () => {
    const ran = await cryo(['health'], () => ({ body: { status: 'ok', version: '0.1.0' } }));
    expect(ran.stdout).toBe(`cryo server at ${fake.url}: ok, version 0.1.0\n`);
    expect(await cryo(['health', '-q'])).toEqual({ code: 0, stdout: '', stderr: '' });
  });
});

describe('global options, auth and errors', () => {
  const ok: FakeHandler = () => ({ body: { items: [], next_cursor: null } });

  it('takes the namespace from -n, else CRYO_NAMESPACE', async () => {
    await cryo(['-n', 'team-a', 'sb', 'ls'], ok);
    await cryo(['sb', 'ls', '--namespace', 'team-b'], ok);
    await cryo(['sb', 'ls'], ok, { env: { CRYO_NAMESPACE: 'team-c' } });
    expect(fake.requests.map((r) => r.path)).toEqual([
      '/v1/namespaces/team-a/sandboxes',
      '/v1/namespaces/team-b/sandboxes',
      '/v1/namespaces/team-c/sandboxes',
    ]);
  });

  it('takes the server from --server over CRYO_SERVER', async () => {
    const ran = await cryo(['--server', fake.url, 'health'], () => ({ body: { status: 'ok' } }), { env: { CRYO_SERVER: 'http://127.0.0.1:1' } });
    expect(ran.code).toBe(0);
  });

  it('sends CRYO_API_KEY, or the content of --api-key-file, as a bearer token', async () => {
    await cryo(['sb', 'ls'], ok, { env: { CRYO_API_KEY: 'from-env' } });
    await cryo(['sb', 'ls', '--api-key-file', '/keys/cryo'], ok, { env: { CRYO_API_KEY: 'from-env' }, files: { '/keys/cryo': 'from-file\n' } });
    expect(fake.requests.map((r) => r.headers.authorization)).toEqual(['Bearer from-env', 'Bearer from-file']);
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
    expect(fake.requests).toHaveLength(0);
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
    expect(fake.requests).toHaveLength(0);
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
    fake.handle((req) => {
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
