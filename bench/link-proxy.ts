/**
 * A counting, throttling TCP proxy for benchmarks: put in front of a registry, it counts the bytes
 * in both directions and can limit each direction with a token bucket shared by all connections,
 * so that parallel connections share the bandwidth as on a real link.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../test/support/processes';

/**
 * One direction of the link: a token bucket (GCRA form) of `rate` bytes/s with `burst` bytes of
 * depth, shared by every connection, so that parallel connections share the bandwidth as on a
 * real link. No rate: no limit.
 */
export class Direction {
  bytes = 0;
  private rate: number | undefined;
  private readonly burst = 64 * 1024;
  private free = 0; // time (ms) at which everything sent so far has left the bucket

  setRate(bytesPerSec: number | undefined): void {
    this.rate = bytesPerSec;
    this.free = 0;
  }

  /** Resolves when `n` bytes may go out. */
  async take(n: number): Promise<void> {
    this.bytes += n;
    if (this.rate === undefined) return;
    const now = performance.now();
    const perByteMs = 1000 / this.rate;
    this.free = Math.max(this.free, now - this.burst * perByteMs) + n * perByteMs;
    const wait = this.free - now;
    if (wait >= 1) await sleep(wait);
  }
}

export class LinkProxy {
  readonly down = new Direction(); // registry -> clients
  readonly up = new Direction(); // clients -> registry
  connections = 0;
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;
  port = 0;

  constructor(private readonly upstreamPort: number) {}

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  setLimit(mbit: number | undefined): void {
    const rate = mbit === undefined ? undefined : (mbit * 1e6) / 8;
    this.down.setRate(rate);
    this.up.setRate(rate);
  }

  counters(): { down: number; up: number; connections: number } {
    return { down: this.down.bytes, up: this.up.bytes, connections: this.connections };
  }

  async start(): Promise<void> {
    this.server = createServer({ allowHalfOpen: true }, (client) => this.accept(client));
    this.port = await freePort();
    await new Promise<void>((resolve, reject) => {
      this.server?.once('error', reject);
      this.server?.listen(this.port, '127.0.0.1', () => resolve());
    });
  }

  private accept(client: Socket): void {
    this.connections++;
    const upstream = createConnection({ host: '127.0.0.1', port: this.upstreamPort, allowHalfOpen: true });
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.once('close', () => this.sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    pump(client, upstream, this.up);
    pump(upstream, client, this.down);
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server === undefined ? resolve() : this.server.close(() => resolve())));
  }
}

/** Copies `src` to `dst` through the direction's bucket, with backpressure and half-close. */
function pump(src: Socket, dst: Socket, dir: Direction): void {
  let chain = Promise.resolve();
  src.on('data', (chunk: Buffer) => {
    src.pause();
    chain = chain.then(async () => {
      await dir.take(chunk.length);
      if (dst.destroyed) return;
      if (!dst.write(chunk)) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            dst.off('drain', done);
            dst.off('close', done);
            resolve();
          };
          dst.on('drain', done);
          dst.on('close', done);
        });
      }
      src.resume();
    });
  });
  src.on('end', () => { void chain.then(() => { if (!dst.destroyed) dst.end(); }); });
}

/**
 * A startCluster `registryFront` that puts a LinkProxy in front of the cluster's registry (every
 * executor and engine then reaches the registry through it); `started` gets the proxy.
 */
export function linkProxyFront(started: (proxy: LinkProxy) => void): (registry: { port: number }) => Promise<string> {
  return async (registry) => {
    const proxy = new LinkProxy(registry.port);
    await proxy.start();
    started(proxy);
    return proxy.host;
  };
}
