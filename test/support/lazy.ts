/**
 * Lazy restores without the server: an image's clip index built and pushed next to it, as the
 * executor's build_index operation does (ClipArtifacts.publish), and the restore spec the
 * runc-lazy driver takes for it.
 */
import { ClipArtifacts } from '../../apps/executor/src/clip-artifacts';
import type { RestoreSpec } from '../../apps/executor/src/runtime/driver';
import { connectRegistry, parseImageReference } from '@cryo/oci';
import type { RegistryAccessSettings } from '@cryo/registry-auth';

/** Index `ref` (pinned to its manifest digest), push the index as `<tag>.clip`, and say how to restore it lazily. */
export async function lazyRestoreOf(clip: ClipArtifacts, access: RegistryAccessSettings, ref: string, snapshotId: string): Promise<RestoreSpec> {
  const parsed = parseImageReference(ref);
  const client = await connectRegistry(parsed.host, access);
  try {
    const head = await client.headManifest(parsed.repository, parsed.digest ?? parsed.tag ?? 'latest');
    if (head === undefined) throw new Error(`${ref} is not in the registry`);
    const published = await clip.publish(ref, head.digest);
    return { snapshotId, imageRef: ref, digest: head.digest, clipIndexRef: published.clip_index_ref, mode: 'lazy' };
  } finally {
    await client.close();
  }
}

export { ClipArtifacts };
