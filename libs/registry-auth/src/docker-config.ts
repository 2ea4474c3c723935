import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError } from './errors';

/** The parts of Docker's `config.json` that hold registry credentials. */
const AuthEntrySchema = z.looseObject({
  auth: z.string().optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  identitytoken: z.string().optional(),
});

export const DockerConfigSchema = z.looseObject({
  auths: z.record(z.string(), AuthEntrySchema).optional(),
  credsStore: z.string().optional(),
  credHelpers: z.record(z.string(), z.string()).optional(),
});

export type DockerConfig = z.infer<typeof DockerConfigSchema>;
export type DockerAuthEntry = z.infer<typeof AuthEntrySchema>;

// Docker Hub is stored under this key whatever name the user typed.
export const DOCKER_HUB_SERVER = 'https://index.docker.io/v1/';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com']);

export function defaultDockerConfigPath(env: NodeJS.ProcessEnv): string {
  const dir = env.DOCKER_CONFIG ?? join(env.HOME ?? homedir(), '.docker');
  return join(dir, 'config.json');
}

/** Reads config.json; a missing file is no configuration, a malformed one is an error. */
export async function readDockerConfig(file: string): Promise<DockerConfig | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if (error instanceof Error && 'code' in error && (error.code === 'ENOENT' || error.code === 'ENOTDIR')) return undefined;
    throw new ConfigError([{ path: '', message: `cannot read Docker config (${String(error)})` }], file);
  }
  if (text.trim() === '') return undefined;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ConfigError([{ path: '', message: `not valid JSON: ${error instanceof Error ? error.message : String(error)}` }], file);
  }
  const parsed = DockerConfigSchema.safeParse(json);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => ({ path: issue.path.map(String).join('.'), message: issue.message })),
      file,
    );
  }
  return parsed.data;
}

/** Reduces a config key or registry name to Docker's hostname form (`https://h:5000/v1/` -> `h:5000`). */
export function normalizeRegistryHost(value: string): string {
  let host = value.trim().replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  const slash = host.indexOf('/');
  if (slash >= 0) host = host.slice(0, slash);
  host = host.toLowerCase();
  return DOCKER_HUB_ALIASES.has(host) ? 'docker.io' : host;
}

/** The server address Docker passes to credential helpers for a registry host. */
export function credentialServerAddress(host: string): string {
  return normalizeRegistryHost(host) === 'docker.io' ? DOCKER_HUB_SERVER : host;
}

export function isDockerHub(host: string): boolean {
  return normalizeRegistryHost(host) === 'docker.io';
}

/** Finds the `auths` entry for a host: exact key first, then any key that normalizes to it. */
export function findAuthEntry(config: DockerConfig, host: string): DockerAuthEntry | undefined {
  const auths = config.auths ?? {};
  const exact = auths[host];
  if (exact) return exact;
  const wanted = normalizeRegistryHost(host);
  for (const [key, entry] of Object.entries(auths)) {
    if (normalizeRegistryHost(key) === wanted) return entry;
  }
  return undefined;
}

/** Finds the `credHelpers` entry for a host, with the same matching as auths. */
export function findCredHelper(config: DockerConfig, host: string): { key: string; helper: string } | undefined {
  const helpers = config.credHelpers ?? {};
  const exact = helpers[host];
  if (exact !== undefined) return { key: host, helper: exact };
  const wanted = normalizeRegistryHost(host);
  for (const [key, helper] of Object.entries(helpers)) {
    if (normalizeRegistryHost(key) === wanted) return { key, helper };
  }
  return undefined;
}
