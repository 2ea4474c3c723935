import { z } from 'zod';
import { isImageIndexMediaType, isImageManifestMediaType } from './media-types';

const DigestSchema = z.string().regex(/^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/, 'must be a digest (algorithm:hex)');
const Annotations = z.record(z.string(), z.string());

export const PlatformSchema = z.looseObject({
  architecture: z.string(),
  os: z.string(),
  'os.version': z.string().optional(),
  'os.features': z.array(z.string()).optional(),
  variant: z.string().optional(),
  features: z.array(z.string()).optional(),
});
export type Platform = z.infer<typeof PlatformSchema>;

export const DescriptorSchema = z.looseObject({
  mediaType: z.string(),
  digest: DigestSchema,
  size: z.number().int().nonnegative(),
  urls: z.array(z.string()).optional(),
  annotations: Annotations.optional(),
  artifactType: z.string().optional(),
  platform: PlatformSchema.optional(),
});
export type Descriptor = z.infer<typeof DescriptorSchema>;

// Fields shared by manifests and indexes.
const manifestCommon = {
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().optional(),
  subject: DescriptorSchema.optional(),
  annotations: Annotations.optional(),
};

/** An OCI image manifest or a Docker schema 2 manifest (same shape). */
export const ImageManifestSchema = z.looseObject({
  ...manifestCommon,
  config: DescriptorSchema,
  layers: z.array(DescriptorSchema),
});
export type ImageManifest = z.infer<typeof ImageManifestSchema>;

/** An OCI image index or a Docker manifest list. */
export const ImageIndexSchema = z.looseObject({
  ...manifestCommon,
  manifests: z.array(DescriptorSchema),
});
export type ImageIndex = z.infer<typeof ImageIndexSchema>;

// Docker writes `null` for empty lists and maps, so every field is nullish.
const StringList = z.array(z.string()).nullish();
const EmptyObjectMap = z.record(z.string(), z.object({}).loose()).nullish();

export const ContainerConfigSchema = z.looseObject({
  User: z.string().nullish(),
  ExposedPorts: EmptyObjectMap,
  Env: StringList,
  Entrypoint: StringList,
  Cmd: StringList,
  Volumes: EmptyObjectMap,
  WorkingDir: z.string().nullish(),
  Labels: z.record(z.string(), z.string()).nullish(),
  StopSignal: z.string().nullish(),
});
export type ContainerConfig = z.infer<typeof ContainerConfigSchema>;

export const HistoryEntrySchema = z.looseObject({
  created: z.string().optional(),
  created_by: z.string().optional(),
  author: z.string().optional(),
  comment: z.string().optional(),
  empty_layer: z.boolean().optional(),
});

/** The image configuration blob (OCI `application/vnd.oci.image.config.v1+json` or Docker's). */
export const ImageConfigSchema = z.looseObject({
  created: z.string().optional(),
  author: z.string().optional(),
  architecture: z.string(),
  os: z.string(),
  variant: z.string().optional(),
  config: ContainerConfigSchema.nullish(),
  rootfs: z.looseObject({
    type: z.literal('layers'),
    diff_ids: z.array(DigestSchema),
  }),
  history: z.array(HistoryEntrySchema).nullish(),
});
export type ImageConfig = z.infer<typeof ImageConfigSchema>;

/** What a manifest endpoint can hold: an image manifest or an index of them. */
export type ManifestDocument = { kind: 'manifest'; json: ImageManifest } | { kind: 'index'; json: ImageIndex };

export class ManifestFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ManifestFormatError';
  }
}

function parseJson(input: Uint8Array | string, what: string): unknown {
  const text = typeof input === 'string' ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength).toString('utf8');
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ManifestFormatError(`${what} is not JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function validate<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`);
  throw new ManifestFormatError(`invalid ${what}: ${problems.slice(0, 5).join('; ')}`);
}

export function parseImageManifest(input: Uint8Array | string): ImageManifest {
  return validate(ImageManifestSchema, parseJson(input, 'image manifest'), 'image manifest');
}

export function parseImageIndex(input: Uint8Array | string): ImageIndex {
  return validate(ImageIndexSchema, parseJson(input, 'image index'), 'image index');
}

export function parseImageConfig(input: Uint8Array | string): ImageConfig {
  return validate(ImageConfigSchema, parseJson(input, 'image config'), 'image config');
}

/**
 * Parses manifest bytes as the media type says (falling back to the document's own
 * `mediaType`, then to its shape, for registries that answer `application/json`).
 */
export function parseManifestDocument(input: Uint8Array | string, mediaType?: string): ManifestDocument {
  const json = parseJson(input, 'manifest');
  const declared = typeof json === 'object' && json !== null && 'mediaType' in json && typeof json.mediaType === 'string' ? json.mediaType : undefined;
  const known = [mediaType, declared].find(
    (type): type is string => type !== undefined && (isImageIndexMediaType(type) || isImageManifestMediaType(type)),
  );
  const isIndex = known !== undefined ? isImageIndexMediaType(known) : typeof json === 'object' && json !== null && 'manifests' in json;
  if (isIndex) return { kind: 'index', json: validate(ImageIndexSchema, json, 'image index') };
  return { kind: 'manifest', json: validate(ImageManifestSchema, json, 'image manifest') };
}

/** Canonical bytes for a manifest we write: plain JSON, no trailing newline. */
export function serializeManifest(manifest: ImageManifest | ImageIndex): Buffer {
  return Buffer.from(JSON.stringify(manifest), 'utf8');
}

const ARCH_ALIASES: Record<string, string> = { x86_64: 'amd64', 'x86-64': 'amd64', aarch64: 'arm64', armhf: 'arm', armel: 'arm' };
const DEFAULT_VARIANT: Record<string, string> = { arm64: 'v8', arm: 'v7' };

function normalizePlatform(platform: { os: string; architecture: string; variant?: string | undefined }): {
  os: string;
  architecture: string;
  variant: string | undefined;
} {
  const architecture = ARCH_ALIASES[platform.architecture] ?? platform.architecture;
  return { os: platform.os, architecture, variant: platform.variant ?? DEFAULT_VARIANT[architecture] };
}

/**
 * Picks the manifest for a platform from an index, as `docker pull` does: same os and
 * architecture, the requested variant (or the architecture's default one) preferred.
 * Attestation manifests (`unknown/unknown`) are never picked.
 */
export function selectPlatform(
  index: ImageIndex,
  wanted: { os: string; architecture: string; variant?: string },
): Descriptor | undefined {
  const want = normalizePlatform(wanted);
  const candidates = index.manifests.filter((descriptor) => {
    const platform = descriptor.platform;
    if (!platform) return false;
    if (descriptor.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest') return false;
    const have = normalizePlatform(platform);
    return have.os === want.os && have.architecture === want.architecture;
  });
  const exact = candidates.find((descriptor) => descriptor.platform && normalizePlatform(descriptor.platform).variant === want.variant);
  if (exact) return exact;
  // No variant asked for (or none matching exactly): an entry without a variant is the generic one.
  if (wanted.variant === undefined) return candidates.find((descriptor) => descriptor.platform?.variant === undefined) ?? candidates[0];
  return undefined;
}
