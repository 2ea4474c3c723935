/**
 * The operation loop against a scripted server: each op id runs once (also across a restart, from
 * the on-disk journal), results are reported until the server takes them, and every failure
 * leaves through the error boundary.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { RegistryError } from '@cryo/registry-auth';
import type { Operation } from '@cryo/snapshot';
import { ServerError } from '../server-client';
import { until } from '../testing/until';
import { OpJournal } from '../state/op-journal';
import { ScriptedServer } from '../testing/scripted-server';
import { OperationLoop } from './operation-loop';

const log = pino({ level: 'silent' });
const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function stateDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'cryo-oploop-'));
  dirs.push(dir);
  return dir;
}

function execOp(opId: string, attempt = 1): Operation {
  return { op_id: opId, attempt, lease_expires_at: new Date().toISOString(), kind: 'exec', payload: { sandbox_id: 'sbx-1', command: ['true'], timeout_secs: 5 } };
}

describe('OperationLoop', () => {
  it('runs an op id once when it is offered again while running and after it is done', async () => {
    let calls = 0;
    let release = (): void => undefined;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    const server = new ScriptedServer([[execOp('op-a')], [execOp('op-a', 2)]]);
    const journal = new OpJournal(stateDir());
    const loop = new OperationLoop(server, journal, async () => {
      calls++;
      await gate;
      return { exit_code: 0, stdout: 'ok\n', stderr: '' };
    }, log, 10);
    loop.start();
    try {
      await until('the first run', () => calls === 1);
      // The second batch (a re-offered lease) arrives while the first run is under way.
      await new Promise((r) => setTimeout(r, 50));
      release();
      await until('the report', () => server.reports.length === 1);
      server.offer([execOp('op-a', 3)]);
      await until('the second report', () => server.reports.length === 2);
      expect(calls).toBe(1);
      expect(server.reports.map((r) => r.body)).toEqual([
        { ok: true, result: { exit_code: 0, stdout: 'ok\n', stderr: '' } },
        { ok: true, result: { exit_code: 0, stdout: 'ok\n', stderr: '' } },
      ]);
      expect(journal.get('op-a')).toMatchObject({ state: 'done', reported: true });
    } finally {
      await loop.stop();
    }
  });

  it('does not redo an op a previous process finished: the journal answers', async () => {
    const dir = stateDir();
    new OpJournal(dir).finished('op-b', 'exec', { ok: true, result: { exit_code: 7, stdout: '', stderr: '' } }, false);
    const server = new ScriptedServer([[execOp('op-b', 2)]]);
    let calls = 0;
    const loop = new OperationLoop(server, new OpJournal(dir), async () => { calls++; return {}; }, log, 10);
    loop.start();
    try {
      await until('the report', () => server.reports.length === 1);
      expect(calls).toBe(0);
      expect(server.reports[0]?.body).toEqual({ ok: true, result: { exit_code: 7, stdout: '', stderr: '' } });
    } finally {
      await loop.stop();
    }
  });

  it('retries a report while the server is unreachable, keeping the result in the journal meanwhile', async () => {
    const server = new ScriptedServer([[execOp('op-c')]]);
    server.resultFailures.push(new ServerError('cannot reach cryo server (ECONNREFUSED)', undefined), new ServerError('server answered 503', 503));
    const journal = new OpJournal(stateDir());
    const loop = new OperationLoop(server, journal, async () => ({ exit_code: 0, stdout: '', stderr: '' }), log, 10);
    loop.start();
    try {
      await until('the first failed report', () => journal.get('op-c')?.state === 'done');
      expect(journal.get('op-c')).toMatchObject({ state: 'done', reported: false });
      await until('the report', () => server.reports.length === 1);
      expect(server.resultFailures).toEqual([]);
      expect(journal.get('op-c')).toMatchObject({ state: 'done', reported: true });
    } finally {
      await loop.stop();
    }
  });

  it('reports failures through the error boundary: a registry rejection is UNAVAILABLE with advice', async () => {
    const server = new ScriptedServer([[execOp('op-d')]]);
    const loop = new OperationLoop(server, new OpJournal(stateDir()), async () => {
      throw new RegistryError('REGISTRY_UNAUTHORIZED', 'registry 127.0.0.1:5001 rejected credentials for user u (HTTP 401)', { host: '127.0.0.1:5001', status: 401 });
    }, log, 10);
    loop.start();
    try {
      await until('the report', () => server.reports.length === 1);
      expect(server.reports[0]?.body).toEqual({
        ok: false,
        error: { code: 'UNAVAILABLE', message: expect.stringMatching(/^registry 127\.0\.0\.1:5001 rejected credentials for user u \(HTTP 401\); check/) },
      });
    } finally {
      await loop.stop();
    }
  });

  it.each([
    [400, 'result.exit_code: expected int'],
    [413, 'request body is larger than 8388608 bytes'],
  ])('replaces a result the server refuses (%i) by a failure, instead of retrying it forever', async (status, why) => {
    const server = new ScriptedServer([[execOp('op-e')]]);
    server.resultFailures.push(new ServerError(`server answered ${status} to POST /internal/v1/operations/op-e/result: ${why}`, status));
    const journal = new OpJournal(stateDir());
    const loop = new OperationLoop(server, journal, async () => ({ exit_code: 1.5 }), log, 10);
    loop.start();
    try {
      await until('the report', () => server.reports.length === 1);
      expect(server.reports[0]?.body).toEqual({
        ok: false, error: { code: 'INTERNAL', message: expect.stringContaining(`the executor's exec result was refused by the server: server answered ${status}`) },
      });
      expect(journal.get('op-e')).toMatchObject({ state: 'done', reported: true, result: { ok: false } });
    } finally {
      await loop.stop();
    }
  });
});
