import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ExecutorConfigSchema, serverUrls } from './config';
import { ServerClient } from './server-client';

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/** A fake replica answering heartbeats with its name in executor_id; `status` overrides the code. */
async function replica(name: string, status = 200): Promise<{ url: string; hits: string[]; server: Server }> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(req.url ?? '');
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(status === 200 ? { executor_id: name, heartbeat_interval_ms: 1000, desired_sandboxes: [] } : { error: 'down' }));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits, server };
}

const BODY = {
  host: 'h', version: 't', labels: {}, capacity: { cpus: 1, memory_mb: 1, max_sandboxes: 1 },
  capabilities: { lazy: false, lazy_unavailable_reason: 'test' }, registry: null, sandboxes: [], images: [],
};

describe('ServerClient with several replicas', () => {
  it('moves to the next replica when the current one refuses connections or answers 503, and stays there', async () => {
    const a = await replica('a');
    const b = await replica('b', 503);
    const c = await replica('c');
    await new Promise((r) => a.server.close(r)); // replica a is down: connection refused
    const client = new ServerClient([a.url, b.url, c.url], 'exec-1', 'token');
    expect((await client.heartbeat(BODY)).executor_id).toBe('c');
    expect(client.serverUrl).toBe(c.url);
    expect(b.hits).toHaveLength(1);
    expect((await client.heartbeat(BODY)).executor_id).toBe('c');
    expect(b.hits).toHaveLength(1); // no going back while c answers
    expect(c.hits).toEqual(['/internal/v1/executors/exec-1/heartbeat', '/internal/v1/executors/exec-1/heartbeat']);
  });

  it('fails with the last replica tried when none answers', async () => {
    const a = await replica('a');
    await new Promise((r) => a.server.close(r));
    const client = new ServerClient([a.url], 'exec-1', 'token');
    await expect(client.heartbeat(BODY)).rejects.toThrow(`cannot reach cryo server at ${a.url} (ECONNREFUSED)`);
  });
});

describe('server_url / server_urls', () => {
  const base = { token: 't' };
  it('takes either one, defaults to the local server, and refuses both at once', () => {
    expect(serverUrls(ExecutorConfigSchema.parse(base))).toEqual(['http://127.0.0.1:8900']);
    expect(serverUrls(ExecutorConfigSchema.parse({ ...base, server_url: 'http://a:1' }))).toEqual(['http://a:1']);
    expect(serverUrls(ExecutorConfigSchema.parse({ ...base, server_urls: ['http://a:1', 'http://b:2'] }))).toEqual(['http://a:1', 'http://b:2']);
    const both = ExecutorConfigSchema.safeParse({ ...base, server_url: 'http://a:1', server_urls: ['http://b:2'] });
    expect(both.success).toBe(false);
    expect(both.error?.issues[0]).toMatchObject({ path: ['server_urls'], message: 'give server_url or server_urls, not both' });
    expect(ExecutorConfigSchema.safeParse({ ...base, server_urls: [] }).success).toBe(false);
  });
});
