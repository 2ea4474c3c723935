import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Harness, runningSandbox } from '../testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start({ operations: { exec_lease_grace_secs: 1 } });
});
afterEach(async () => {
  await h.close();
});

describe('sandbox lifecycle', () => {
  it('goes pending -> running through a create_sandbox operation', async () => {
    const executor = h.executor('exec-a');
    await executor.heartbeat();
    const created = await h.api('POST', '/sandboxes', {
      image: 'busybox', command: ['sleep', '60'], env: { GREETING: 'hi' }, labels: { app: 'x' }, timeout_secs: 30,
    });
    expect(created.status).toBe(202);
    expect(created.json).toMatchObject({ status: 'pending' });
    const id = created.json.sandbox_id as string;
    expect((await h.api('GET', `/sandboxes/${id}`)).json).toMatchObject({
      status: 'pending', executor_id: 'exec-a', pending_reason: expect.stringContaining('exec-a'),
    });

    const op = await executor.pollOne('create_sandbox');
    expect(op.payload).toMatchObject({ sandbox_id: id, image: 'busybox', env: { GREETING: 'hi' }, restore: null });
    expect(op.attempt).toBe(1);
    await executor.ok(op.op_id, { container_id: 'c1', runtime: 'docker' });

    const sandbox = (await h.api('GET', `/sandboxes/${id}`)).json;
    expect(sandbox).toMatchObject({ status: 'running', pending_reason: null, started_at: new Date(h.clock.now()).toISOString() });
    expect(sandbox.expires_at).toBe(new Date(h.clock.now() + 30_000).toISOString());
    // The fake executor does not report the container; within the grace period that is no loss.
    expect((await executor.heartbeat()).desired).toEqual([id]);
    expect((await h.api('GET', `/sandboxes/${id}`)).json.status).toBe('running');
  });

  it('ends failed with the executor error when the container cannot be created', async () => {
    const executor = h.executor('exec-a');
    await executor.heartbeat();
    const id = (await h.api('POST', '/sandboxes', { image: 'nope:missing' })).json.sandbox_id as string;
    const op = await executor.pollOne('create_sandbox');
    await executor.fail(op.op_id, 'IMAGE_NOT_FOUND', 'image nope:missing not found');
    expect((await h.api('GET', `/sandboxes/${id}`)).json).toMatchObject({
      status: 'terminated', outcome: { kind: 'failed', reason: 'image nope:missing not found' },
    });
  });

  it('deletes idempotently; a create not yet taken is withdrawn', async () => {
    const executor = h.executor('exec-a');
    await executor.heartbeat();
    const id = (await h.api('POST', '/sandboxes', { image: 'busybox' })).json.sandbox_id as string;
    const first = await h.api('DELETE', `/sandboxes/${id}`);
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({ status: 'terminated', outcome: { kind: 'user' } });
    const again = await h.api('DELETE', `/sandboxes/${id}`);
    expect(again.status).toBe(200);
    expect(again.json).toMatchObject({ status: 'terminated', terminated_at: first.json.terminated_at });
    expect(await executor.poll()).toEqual([]);
  });

  it('asks the executor to remove the container of a running sandbox it deletes', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    await h.api('DELETE', `/sandboxes/${sandboxId}`);
    const op = await executor.pollOne('delete_sandbox');
    expect(op.payload.sandbox_id).toBe(sandboxId);
    expect((await executor.heartbeat()).desired).not.toContain(sandboxId);
  });
});

describe('exec', () => {
  it('wakes the long poll, waits for the result and returns it', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const polled = executor.poll(5000);
    const execReply = h.api('POST', `/sandboxes/${sandboxId}/exec`, { command: ['cat', '/etc/hostname'], timeout_secs: 10 });
    const ops = await polled;
    const op = ops.find((o) => o.kind === 'exec');
    if (op?.kind !== 'exec') throw new Error('no exec operation');
    expect(op.payload).toEqual({ sandbox_id: sandboxId, command: ['cat', '/etc/hostname'], timeout_secs: 10 });
    await executor.ok(op.op_id, { exit_code: 0, stdout: 'box\n', stderr: '' });
    const reply = await execReply;
    expect(reply.status).toBe(200);
    expect(reply.json).toEqual({ exit_code: 0, stdout: 'box\n', stderr: '' });
  });

  it('answers 409 for a sandbox that is not running and 504 when no result comes in time', async () => {
    const executor = h.executor('exec-a');
    await executor.heartbeat();
    const pending = (await h.api('POST', '/sandboxes', { image: 'busybox' })).json.sandbox_id as string;
    const conflict = await h.api('POST', `/sandboxes/${pending}/exec`, { command: ['true'] });
    expect(conflict.status).toBe(409);
    expect(conflict.json).toMatchObject({ error: { code: 'CONFLICT', message: expect.stringContaining('pending') } });

    await executor.ok((await executor.pollOne('create_sandbox')).op_id, { container_id: 'c', runtime: 'docker' });
    const started = Date.now();
    const timeout = await h.api('POST', `/sandboxes/${pending}/exec`, { command: ['sleep', '100'], timeout_secs: 1 });
    expect(timeout.status).toBe(504);
    expect(timeout.json).toMatchObject({ error: { code: 'TIMEOUT' } });
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
    // The abandoned exec is not handed out any more.
    expect(await executor.poll()).toEqual([]);
  });

  it('passes the executor error through', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const execReply = h.api('POST', `/sandboxes/${sandboxId}/exec`, { command: ['true'] });
    const op = await executor.pollOne('exec', 2000);
    await executor.fail(op.op_id, 'CONFLICT', 'container is not running');
    const reply = await execReply;
    expect(reply.status).toBe(409);
    expect(reply.json).toMatchObject({ error: { message: expect.stringContaining('container is not running') } });
  });
  it("maps the executor's failure codes to the public ones: an executor's UNAUTHORIZED is not the caller's 401", async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const cases: Array<[string, number, string]> = [
      ['UNAUTHORIZED', 503, 'UNAVAILABLE'],
      ['FORBIDDEN', 503, 'UNAVAILABLE'],
      ['INVALID_REQUEST', 503, 'UNAVAILABLE'],
      ['INTERNAL', 503, 'UNAVAILABLE'],
      ['SOMETHING_NEW', 503, 'UNAVAILABLE'],
      ['NOT_FOUND', 409, 'CONFLICT'],
      ['TIMEOUT', 504, 'TIMEOUT'],
      ['UNPROCESSABLE', 422, 'UNPROCESSABLE'],
    ];
    for (const [executorCode, status, code] of cases) {
      const execReply = h.api('POST', `/sandboxes/${sandboxId}/exec`, { command: ['true'] });
      const op = await executor.pollOne('exec', 2000);
      await executor.fail(op.op_id, executorCode, 'registry 127.0.0.1:5001 rejected credentials for user myuser');
      const reply = await execReply;
      expect(reply.status, executorCode).toBe(status);
      expect(reply.json).toMatchObject({
        error: {
          code,
          message: `exec in sandbox ${sandboxId} failed on executor exec-a: registry 127.0.0.1:5001 rejected credentials for user myuser`,
          details: { executor_code: executorCode },
        },
      });
    }
  });
});

describe('placement', () => {
  it('spreads sandboxes by free capacity and honours executor_id', async () => {
    const a = h.executor('exec-a', { capacity: { cpus: 0, memory_mb: 0, max_sandboxes: 4 } });
    const b = h.executor('exec-b', { capacity: { cpus: 0, memory_mb: 0, max_sandboxes: 4 } });
    await a.heartbeat();
    await b.heartbeat();
    const placed: string[] = [];
    for (let i = 0; i < 4; i += 1) {
      const id = (await h.api('POST', '/sandboxes', { image: 'busybox' })).json.sandbox_id as string;
      placed.push((await h.api('GET', `/sandboxes/${id}`)).json.executor_id as string);
    }
    expect(placed.filter((e) => e === 'exec-a')).toHaveLength(2);
    expect(placed.filter((e) => e === 'exec-b')).toHaveLength(2);

    const pinned = await h.api('POST', '/sandboxes', { image: 'busybox', executor_id: 'exec-b' });
    expect((await h.api('GET', `/sandboxes/${pinned.json.sandbox_id as string}`)).json.executor_id).toBe('exec-b');

    const unknown = await h.api('POST', '/sandboxes', { image: 'busybox', executor_id: 'exec-z' });
    expect(unknown.status).toBe(422);
    expect(unknown.json).toMatchObject({ error: { message: expect.stringContaining('exec-z is not registered') } });
  });

  it('refuses when every executor is full, saying so', async () => {
    await h.executor('exec-a', { capacity: { cpus: 0, memory_mb: 0, max_sandboxes: 1 } }).heartbeat();
    expect((await h.api('POST', '/sandboxes', { image: 'busybox' })).status).toBe(202);
    const full = await h.api('POST', '/sandboxes', { image: 'busybox' });
    expect(full.status).toBe(503);
    expect(full.json).toMatchObject({ error: { message: expect.stringContaining('full (1 of max_sandboxes 1)') } });
  });

  it('applies sandboxes.max_timeout_secs with a message naming the limit', async () => {
    await h.close();
    h = await Harness.start({ sandboxes: { default_timeout_secs: 60, max_timeout_secs: 3600 } });
    await h.executor('exec-a').heartbeat();
    const over = await h.api('POST', '/sandboxes', { image: 'busybox', timeout_secs: 7200 });
    expect(over.status).toBe(422);
    expect(over.json).toMatchObject({ error: { message: 'timeout_secs 7200 exceeds the limit sandboxes.max_timeout_secs = 3600' } });
    const id = (await h.api('POST', '/sandboxes', { image: 'busybox' })).json.sandbox_id as string;
    expect((await h.api('GET', `/sandboxes/${id}`)).json.timeout_secs).toBe(60);
  });
});
