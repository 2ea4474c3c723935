import { describe, expect, it } from 'vitest';
import { NS, useFakeCli } from './testing/cli-run';
import { sandboxFixture, snapshotFixture, type FakeHandler } from './testing/fake-server';

const cli = useFakeCli();
const { cryo } = cli;

describe('snapshots', () => {
  const created = { status: 202, body: { snapshot_id: 'snap-cccc2222dddd', status: 'creating' } };
  const creating = (phase: string, done: number, total: number | null) => ({
    body: snapshotFixture({ status: 'creating', progress: { phase, bytes_done: done, bytes_total: total } }),
  });
  const MiB = 1024 * 1024;

  it('create sends ttl, tag and labels', async () => {
    const ran = await cryo(['snapshots', 'create', 'sbx-1', '--ttl-secs', '0', '--tag', 'v1', '-l', 'a=b'], () => created);
    expect(cli.fake.requests[0]?.path).toBe(`${NS}/sandboxes/sbx-1/snapshots`);
    expect(cli.fake.requests[0]?.body).toEqual({ ttl_secs: 0, tag: 'v1', labels: { a: 'b' } });
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
    expect(cli.fake.requests[0]?.path).toBe(`${NS}/sandboxes/sbx-1/snapshots`);
    expect(cli.fake.requests[0]?.query.get('status')).toBe('active');
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
    expect(cli.fake.requests[0]).toMatchObject({ method: 'PATCH', path: `${NS}/snapshots/snap-1`, body: { ttl_secs: 7200 } });
    expect(ran.stdout).toBe('snapshot snap-1 ttl 2h, expires 2025-01-01T02:00:00.000Z (in 1h)\n');
    await cryo(['snap', 'set-ttl', 'snap-1', '--ttl-secs', '0'], () => ({ body: snapshotFixture({ ttl_secs: 0, expires_at: null }) }));
    expect(cli.fake.requests[1]?.body).toEqual({ ttl_secs: 0 });
    const missing = await cryo(['snap', 'patch', 'snap-1']);
    expect(missing.stderr).toContain("error: required option '--ttl-secs <n>' not specified");
  });

  it('delete without --wait prints the status the server answered', async () => {
    const ran = await cryo(['snap', 'rm', 'snap-1'], () => ({ status: 202, body: snapshotFixture({ status: 'deleting' }) }));
    expect(cli.fake.requests[0]).toMatchObject({ method: 'DELETE', path: `${NS}/snapshots/snap-1` });
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
    expect(cli.fake.requests[0]?.path).toBe(`${NS}/snapshots/snap-1/restore`);
    expect(cli.fake.requests[0]?.body).toEqual({
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
    expect(cli.fake.requests.map((r) => `${r.method} ${r.path.replace(NS, '')}`)).toEqual([
      'GET /snapshots/snap-1', 'GET /snapshots/snap-1', 'GET /snapshots/snap-1', 'GET /snapshots/snap-1',
      'POST /snapshots/snap-1/restore', 'GET /sandboxes/sbx-r',
    ]);
    // Without --quiet the wait is noted once; a local snapshot (never indexed) is restored at once
    // and gets the server's answer.
    const local = snapshotFixture({ image_ref: 'cryo-snapshots:sb-x-snap-y' });
    cli.fake.requests.length = 0;
    const refused = await cryo(['snap', 'restore', 'snap-1', '--mode', 'lazy', '--wait'], (req) =>
      req.method === 'POST'
        ? { status: 422, body: { error: { code: 'UNPROCESSABLE', message: 'snapshot snap-1 has no clip index' } } }
        : { body: local });
    expect(refused).toEqual({ code: 1, stdout: '', stderr: 'error: snapshot snap-1 has no clip index (UNPROCESSABLE)\n' });
    expect(cli.fake.requests.map((r) => r.method)).toEqual(['GET', 'POST']);
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
    expect(cli.fake.requests[0]?.body).toEqual({ keep_last: 3, ttl_from: 'last_use' });
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
    expect(cli.fake.requests.map((r) => `${r.method} ${r.path.replace(NS, '')}${r.query.size > 0 ? `?${r.query.toString()}` : ''}`)).toEqual([
      'GET /snapshots?limit=50&tag=golden', 'GET /snapshots/snap-new',
    ]);
    for (const args of [['snap', 'rm', 'tag:golden'], ['snap', 'patch', 'tag:golden', '--ttl-secs', '60'], ['snap', 'restore', 'tag:golden'], ['snap', 'fork', 'tag:golden', '--count', '1'], ['sb', 'rollback', 'sbx-1', 'tag:golden']]) {
      cli.fake.requests.length = 0;
      await cryo(args, (req) => tagged(req) ?? (req.path.endsWith('/fork') ? forked(['pending']) : req.path.endsWith('/rollback')
        ? { status: 202, body: { sandbox_id: 'sbx-1', status: 'restoring', snapshot_id: 'snap-new', restore_mode: 'eager' } }
        : { status: 202, body: req.method === 'DELETE' || req.method === 'PATCH' ? snapshotFixture({ snapshot_id: 'snap-new' }) : { sandbox_id: 'sbx-r', status: 'pending' } }));
      const second = cli.fake.requests[1];
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
    expect(cli.fake.requests[0]?.body).toEqual({ on_expired: 'base_image' });
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
    expect(cli.fake.requests[0]?.path).toBe(`${NS}/snapshots/snap-new/fork`);
    expect(cli.fake.requests[0]?.body).toEqual({
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
    expect(cli.fake.requests[0]?.path).toBe(`${NS}/sandboxes/sbx-1/fork`);
    expect(cli.fake.requests[0]?.body).toEqual({ count: 2 });
    expect(ran.code).toBe(1);
    expect(ran.stdout).toContain('1 of 2 forks of snapshot snap-new running:');
    expect(ran.stdout).toMatch(/sbx-f1 +terminated +exec-a +failed: pull failed/);
    expect(ran.stderr).toBe('snapshot snap-new of sbx-1 is being taken; the forks start once it is active\nerror: 1 of 2 forks terminated; the others run (FORKS_TERMINATED)\n');
  });

  it('sandboxes rollback sends the snapshot and mode; --wait until it runs again, or fails with the reason', async () => {
    const accepted = { status: 202, body: { sandbox_id: 'sbx-1', status: 'restoring', snapshot_id: 'snap-1', restore_mode: 'lazy' } };
    const ran = await cryo(['sb', 'rollback', 'sbx-1', 'snap-1', '--mode', 'lazy'], () => accepted);
    expect(cli.fake.requests[0]?.path).toBe(`${NS}/sandboxes/sbx-1/rollback`);
    expect(cli.fake.requests[0]?.body).toEqual({ snapshot_id: 'snap-1', mode: 'lazy' });
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
