import { describe, expect, it } from 'vitest';
import { NS, useFakeCli } from './testing/cli-run';
import { sandboxFixture, type FakeHandler } from './testing/fake-server';

const cli = useFakeCli();
const { cryo } = cli;

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
    expect(cli.fake.requests[0]?.path).toBe(`${NS}/sandboxes`);
    expect(cli.fake.requests[0]?.body).toEqual({
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
    expect(cli.fake.requests[0]?.body).toEqual({ image: 'busybox' });
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
    expect(cli.fake.requests).toHaveLength(0);
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
    const query = cli.fake.requests[0]?.query;
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
    expect(cli.fake.requests[0]?.path).toBe(`${NS}/sandboxes/sbx-aaaa1111bbbb`);
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
    expect(cli.fake.requests[0]?.method).toBe('DELETE');
    expect(ran.stdout).toBe('sandbox sbx-1 is terminated\n');
  });
});

describe('sandboxes exec', () => {
  it("prints the command's stdout and stderr to the matching streams and exits with its code", async () => {
    const ran = await cryo(['sb', 'exec', 'sbx-1', '--timeout-secs', '30', '--', 'sh', '-c', 'exit 3'], () => ({
      body: { exit_code: 3, stdout: 'out\n', stderr: 'err\n' },
    }));
    expect(ran).toEqual({ code: 3, stdout: 'out\n', stderr: 'err\n' });
    expect(cli.fake.requests[0]?.path).toBe(`${NS}/sandboxes/sbx-1/exec`);
    expect(cli.fake.requests[0]?.body).toEqual({ command: ['sh', '-c', 'exit 3'], timeout_secs: 30 });
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
