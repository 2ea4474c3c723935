/**
 * Serves the executor's metrics at `GET /metrics` on `metrics.listen` (node:http; one route, no
 * framework). Before each answer, and every `refreshMs` between scrapes (so a mount that comes
 * and goes between two scrapes still counts), `refresh` reads what lives outside this process:
 * the mount processes' status files and the span cache's size.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { ExecutorMetrics } from '../metrics';

export interface MetricsEndpointOptions {
  host: string;
  port: number;
  metrics: ExecutorMetrics;
  /** Reads mount status files and cache sizes into `metrics`; failures are logged, never fatal. */
  refresh: () => Promise<void>;
  /** default 5 s */
  refreshMs?: number;
  log: Logger;
}

export class MetricsEndpoint {
  private server: Server | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: MetricsEndpointOptions) {}

  /** Listen; rejects when the address cannot be bound (in use, not on this host). */
  async start(): Promise<AddressInfo> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' || path !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('the executor serves GET /metrics only\n');
        return;
      }
      this.refresh()
        .then(() => this.opts.metrics.render())
        .then((text) => res.writeHead(200, { 'content-type': this.opts.metrics.contentType }).end(text))
        .catch((err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err instanceof Error ? err.message : String(err)}\n`));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port, this.opts.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    this.timer = setInterval(() => void this.refresh(), this.opts.refreshMs ?? 5000);
    this.timer.unref();
    return server.address() as AddressInfo;
  }

  private async refresh(): Promise<void> {
    try {
      await this.opts.refresh();
    } catch (err) {
      this.opts.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'metrics refresh failed');
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    const server = this.server;
    this.server = undefined;
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
