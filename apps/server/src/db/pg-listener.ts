/**
 * One dedicated PostgreSQL connection that LISTENs on the replicas' event channel: work queued
 * for an executor, an operation that ended, a duty to wake. A replica's NOTIFY is delivered to
 * every other replica at commit, so a long poll on replica B wakes when replica A queues work,
 * without anyone polling the database. If the connection drops it is opened again (with
 * backoff) and `reconnected` fires so sleepers look again for what they may have missed.
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { scrubSecret } from './target';

export interface PgListenerHandlers {
  notification(payload: string): void;
  reconnected(): void;
  logger: Logger | undefined;
}

const MAX_BACKOFF_MS = 5000;

export class PgListener {
  private client: pg.Client | null = null;
  private closed = false;
  private retry: NodeJS.Timeout | null = null;

  constructor(
    private readonly config: pg.ClientConfig,
    private readonly channel: string,
    private readonly password: string | null,
    private readonly handlers: PgListenerHandlers,
  ) {}

  /** Connects and listens; rejects when the first connection fails. */
  async start(): Promise<void> {
    await this.connect();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retry !== null) clearTimeout(this.retry);
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    const client = new pg.Client(this.config);
    client.on('notification', (message) => {
      if (message.channel === this.channel && message.payload !== undefined) this.handlers.notification(message.payload);
    });
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, null));
    await client.connect();
    await client.query(`LISTEN ${this.channel}`);
    if (this.closed) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
  }

  private lost(client: pg.Client, err: Error | null): void {
    if (this.closed || this.client !== client) return;
    this.client = null;
    this.handlers.logger?.warn(
      { error: err === null ? 'connection ended' : scrubSecret(err.message, this.password) },
      'PostgreSQL notification connection lost; reconnecting',
    );
    void client.end().catch(() => undefined);
    this.reconnect(250);
  }

  private reconnect(delayMs: number): void {
    if (this.closed) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      this.connect().then(
        () => {
          if (this.closed) return;
          this.handlers.logger?.info('PostgreSQL notification connection restored');
          this.handlers.reconnected();
        },
        (err: unknown) => {
          this.handlers.logger?.warn(
            { error: scrubSecret(err instanceof Error ? err.message : String(err), this.password) },
            'PostgreSQL notification connection failed; retrying',
          );
          this.reconnect(Math.min(delayMs * 2, MAX_BACKOFF_MS));
        },
      );
    }, delayMs);
    this.retry.unref();
  }
}
