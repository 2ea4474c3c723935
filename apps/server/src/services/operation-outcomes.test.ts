/**
 * Results are input like any other: each one is parsed once, with the schema of its operation's
 * kind, before anything is stored; what does not fit is a 400 in cryo's error shape.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Harness, runningSandbox } from '../testing/harness';

let h: Harness;
beforeEach(async () => {
  h = await Harness.start();
});
afterEach(async () => {
  await h.close();
});

/** `[[[...]]]`, `depth` levels: 4,100 levels is an 8 KB body. */
function nested(depth: number): unknown {
  return JSON.parse(`${'['.repeat(depth)}${']'.repeat(depth)}`);
}

async function storedResult(opId: string): Promise<unknown> {
  const row = await h.server.stores.operations.get(opId);
  return row?.result == null ? null : JSON.parse(row.result);
}

describe('operation results', () => {
  it('refuses a delete_sandbox result nested 4,100 levels deep (or not of its kind) with a 400 naming the field', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    expect((await h.api('DELETE', `/sandboxes/${sandboxId}`)).status).toBe(200);
    const op = await executor.pollOne('delete_sandbox');
    for (const result of [nested(4100), { removed: nested(4100) }, nested(8), { removed: nested(8) }, { removed: 'yes' }]) {
      const reply = await executor.ok(op.op_id, result);
      expect(reply.status).toBe(400);
      expect(reply.json).toEqual({
        error: { code: 'INVALID_REQUEST', message: expect.stringMatching(/^(body\.)?result/), request_id: expect.any(String) },
      });
    }
    // The operation is still open: a well-formed result is taken.
    expect((await executor.ok(op.op_id, { removed: true })).json).toEqual({ ignored: false, reason: null });
    expect(await storedResult(op.op_id)).toEqual({ removed: true });
  });

  it('refuses a deeply nested delete_image result, and stores only the fields of the kind', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    const snapshot = await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    const pushed = await executor.pushNext();
    expect(pushed.snapshotId).toBe(snapshot.json.snapshot_id);
    expect((await h.api('DELETE', `/snapshots/${pushed.snapshotId}`)).status).toBe(202);
    await h.server.reaper.runOnce();
    const op = await executor.pollOne('delete_image');
    const deep = await executor.ok(op.op_id, { removed: nested(4100) });
    expect(deep.status).toBe(400);
    expect(deep.json).toMatchObject({ error: { code: 'INVALID_REQUEST', message: expect.stringContaining('result.removed') } });
    // Shallow enough for the body parser, but not of the kind's shape: checked against the kind, not stored.
    expect((await executor.ok(op.op_id, { removed: nested(8) })).json).toMatchObject({
      error: { code: 'INVALID_REQUEST', message: expect.stringMatching(/^result\.removed\.0: .*delete_image operation/) },
    });
    const ok = await executor.ok(op.op_id, { removed: [`cryo-snapshots:x`], extra: nested(8) });
    expect(ok.status).toBe(200);
    expect(await storedResult(op.op_id)).toEqual({ removed: ['cryo-snapshots:x'] });
  });

  it('checks what an executor reports: digests, sizes and progress are bounded', async () => {
    const { executor, sandboxId } = await runningSandbox(h);
    await h.api('POST', `/sandboxes/${sandboxId}/snapshots`, {});
    const op = await executor.pollOne('snapshot');
    const timings = { pause_ms: 1, commit_ms: 1, push_ms: 1, index_ms: null };
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ image_ref: 'r/x:t', digest: 'sha256:abc', size_bytes: 1, timings }, 'result.digest'],
      [{ image_ref: 'r/x:t', digest: null, size_bytes: -5, timings }, 'result.size_bytes'],
      [{ image_ref: 'r/x:t', digest: null, size_bytes: 1.5, timings }, 'result.size_bytes'],
      [{ image_ref: 'r/x:t', digest: null, size_bytes: 2 ** 60, timings }, 'result.size_bytes'],
      [{ image_ref: '', digest: null, size_bytes: 1, timings }, 'result.image_ref'],
    ];
    for (const [result, field] of cases) {
      const reply = await executor.ok(op.op_id, result);
      expect(reply.status, field).toBe(400);
      expect(String((reply.json.error as { message: string }).message)).toContain(field);
    }
    for (const [progress, field] of [
      [{ phase: 'push', bytes_done: -1, bytes_total: null }, 'bytes_done'],
      [{ phase: 'push', bytes_done: 1e300, bytes_total: null }, 'bytes_done'],
      [{ phase: 'push', bytes_done: 0, bytes_total: 0.5 }, 'bytes_total'],
      [{ phase: 'x'.repeat(5000), bytes_done: 0, bytes_total: null }, 'phase'],
    ] as const) {
      const reply = await executor.progress(op.op_id, progress);
      expect(reply.status, field).toBe(400);
      expect(String((reply.json.error as { message: string }).message)).toContain(`body.${field}`);
    }
    const failed = await executor.fail(op.op_id, 'lower case', 'x');
    expect(failed.status).toBe(400);
    expect((await executor.fail(op.op_id, 'UNAVAILABLE', 'x'.repeat(20_000))).status).toBe(400);
  });

  it('checks what an executor says about itself: its id, capacity and images', async () => {
    const bad: Array<[string, Record<string, unknown>, string]> = [
      ['exec-a', { capacity: { cpus: -1, memory_mb: 1024, max_sandboxes: 1 } }, 'body.capacity.cpus'],
      ['exec-a', { capacity: { cpus: 1, memory_mb: 0.5, max_sandboxes: 1 } }, 'body.capacity.memory_mb'],
      ['exec-a', { capacity: { cpus: 1, memory_mb: 1024, max_sandboxes: 1e12 } }, 'body.capacity.max_sandboxes'],
      ['exec-a', { images: [{ ref: 'x', snapshot_id: null, size_bytes: -1 }] }, 'body.images.0.size_bytes'],
      ['bad id!', {}, 'params.id'],
    ];
    for (const [id, options, field] of bad) {
      const reply = await h.request('POST', `/internal/v1/executors/${encodeURIComponent(id)}/heartbeat`, { ...h.executor(id).body(), ...options }, 'test-executor-token-abcdef');
      expect(reply.status, field).toBe(400);
      expect(String((reply.json.error as { message: string }).message)).toContain(field);
    }
  });
});
