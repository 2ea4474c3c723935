/**
 * A small HTTP proxy in front of a real registry, on loopback, for tests of what proxies and
 * registries out there do that distribution does not: ignore Range, rewrite statuses, check
 * their own (rotating) credentials. Every request goes through `hooks`; what they leave alone is
 * forwarded unchanged (Host included, so the registry's Location headers point at the proxy).
 * Node built-ins only.
 */
import { createServer, request, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Transform } from 'node:stream';

export interface ProxyHooks {
  /** Answer here instead of forwarding: return true when `res` was answered. */
  intercept?(req: IncomingMessage, res: ServerResponse): boolean;
  /** Change the headers sent to the registry (e.g. drop `range` by setting it to undefined). */
  forwardHeaders?(req: IncomingMessage, headers: IncomingHttpHeaders): IncomingHttpHeaders;
  /** Change the registry's status and headers before they go back (the body passes through). */
  answer?(req: IncomingMessage, status: number, headers: IncomingHttpHeaders): { status: number; headers: IncomingHttpHeaders };
  /** Hold the request this many ms before forwarding it (a slow registry, for a phase to be seen). */
  delayMs?(req: IncomingMessage): number;
  /** Send the answer's body at most this fast (bytes per second; 0 = as fast as it comes). */
  throttleBytesPerSec?(req: IncomingMessage): number;
}

export interface ProxiedRequest {
  method: string;
  path: string;
  range: string | undefined;
  status: number;
}

export interface RegistryProxy {
  /** `127.0.0.1:PORT` */
  host: string;
  /** every request, with the status the client got */
  requests: ProxiedRequest[];
  hooks: ProxyHooks;
  close(): Promise<void>;
}

/** A pass-through that holds each chunk until the bytes so far fit `bytesPerSec` since the first. */
function throttled(bytesPerSec: number): Transform {
  const started = Date.now();
  let sent = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      sent += chunk.length;
      const wait = Math.max(0, (sent / bytesPerSec) * 1000 - (Date.now() - started));
      setTimeout(() => done(null, chunk), wait);
    },
  });
}

/** Headers without the ones a hook set to undefined (node:http refuses undefined values). */
function defined(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).filter(([, value]) => value !== undefined));
}

/** Starts a proxy to `target` (`127.0.0.1:PORT` of a registry). `hooks` can be swapped later. */
export async function startRegistryProxy(target: string, hooks: ProxyHooks = {}): Promise<RegistryProxy> {
  const [targetHost, targetPort] = target.split(':');
  const proxy: RegistryProxy = { host: '', requests: [], hooks, close: async () => undefined };
  const server = createServer((req, res) => {
    const record = (status: number): void => {
      proxy.requests.push({ method: req.method ?? '', path: req.url ?? '', range: req.headers.range, status });
    };
    if (proxy.hooks.intercept?.(req, res)) {
      record(res.statusCode);
      return;
    }
    const headers = defined(proxy.hooks.forwardHeaders?.(req, { ...req.headers }) ?? req.headers);
    const forward = (): void => {
      const upstream = request({ host: targetHost, port: Number(targetPort), method: req.method, path: req.url, headers }, (answer) => {
        const out = proxy.hooks.answer?.(req, answer.statusCode ?? 502, { ...answer.headers }) ?? { status: answer.statusCode ?? 502, headers: answer.headers };
        record(out.status);
        res.writeHead(out.status, defined(out.headers));
        const rate = proxy.hooks.throttleBytesPerSec?.(req) ?? 0;
        if (rate > 0) answer.pipe(throttled(rate)).pipe(res);
        else answer.pipe(res);
      });
      upstream.on('error', (err) => {
        record(502);
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`proxy: ${err.message}`);
      });
      req.pipe(upstream);
    };
    const delay = proxy.hooks.delayMs?.(req) ?? 0;
    if (delay > 0) setTimeout(forward, delay);
    else forward();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxy.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return proxy;
}
