/** SnapshotImageRegistry over @cryo/oci, with the credentials of the server's `snapshot_registry`. */
import { RegistryClient, parseImageReference } from '@cryo/oci';
import { resolveCredentials, type SnapshotRegistry } from '@cryo/registry-auth';
import type { SnapshotImageRegistry } from './snapshot-registry';

export class OciSnapshotRegistry implements SnapshotImageRegistry {
  private readonly clients = new Map<string, Promise<RegistryClient>>();

  constructor(private readonly config: SnapshotRegistry) {}

  async resolveDigest(ref: string): Promise<string | null> {
    const parsed = parseImageReference(ref);
    const client = await this.client(parsed.host);
    const head = await client.headManifest(parsed.repository, parsed.digest ?? parsed.tag ?? 'latest');
    return head?.digest ?? null;
  }

  async deleteManifest(ref: string, digest: string): Promise<'deleted' | 'not_found'> {
    const parsed = parseImageReference(ref);
    const client = await this.client(parsed.host);
    return client.deleteManifest(parsed.repository, digest);
  }

  async close(): Promise<void> {
    const clients = [...this.clients.values()];
    this.clients.clear();
    await Promise.allSettled(clients.map(async (c) => (await c).close()));
  }

  private client(host: string): Promise<RegistryClient> {
    let client = this.clients.get(host);
    if (client === undefined) {
      client = this.connect(host);
      // A failed credential lookup is not cached: the next attempt looks again.
      client.catch(() => this.clients.delete(host));
      this.clients.set(host, client);
    }
    return client;
  }

  private async connect(host: string): Promise<RegistryClient> {
    const ours = host === this.config.url;
    const credentials = await resolveCredentials(host, {
      explicit: ours ? { username: this.config.username, password: this.config.password } : undefined,
    });
    return new RegistryClient({
      host,
      insecure: ours ? this.config.insecure : false,
      credentials,
      userAgent: 'cryo-server',
    });
  }
}
