/**
 * The registry side of deleting a snapshot: find the manifest digest behind a ref and delete the
 * manifest by digest (distribution only deletes by digest). Credentials come from the server's
 * own `snapshot_registry` block; a ref on another registry is handled anonymously.
 */
export interface SnapshotImageRegistry {
  /** The digest the registry holds under `ref` (by tag or digest), or null when it holds nothing. */
  resolveDigest(ref: string): Promise<string | null>;
  /** Deletes the manifest `digest` from `ref`'s repository. */
  deleteManifest(ref: string, digest: string): Promise<'deleted' | 'not_found'>;
}
