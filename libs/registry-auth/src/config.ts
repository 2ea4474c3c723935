import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument } from 'yaml';
import { z, type ZodType } from 'zod';
import { expandEnv } from './env';
import { ConfigError, formatKeyPath, type ConfigIssue } from './errors';

// One path component of a distribution repository name (docker/distribution reference grammar).
const REPOSITORY = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const HOST_PORT = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?$/;

const registryUrl = z.string().superRefine((value, ctx) => {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(value);
  if (scheme) {
    ctx.addIssue({
      code: 'custom',
      message:
        `must be host[:port] without a scheme (got "${value}"); ` +
        `drop the "${scheme[0]}" prefix and set insecure: true for a plain-http registry`,
    });
  } else if (value.includes('/')) {
    ctx.addIssue({
      code: 'custom',
      message: `must be host[:port] only (got "${value}"); put the path into repository`,
    });
  } else if (!HOST_PORT.test(value)) {
    ctx.addIssue({ code: 'custom', message: `must be host[:port] (got "${value}")` });
  }
});

// Environment expansion yields strings, so `insecure: "${REGISTRY_INSECURE}"` has to work too.
const booleanLike = z.union([
  z.boolean(),
  z.enum(['true', 'false']).transform((value) => value === 'true'),
]);

export const SnapshotRegistrySchema = z
  .strictObject({
    url: registryUrl,
    repository: z
      .string()
      .regex(REPOSITORY, 'must be a lowercase repository path such as "cryo/snapshots"'),
    username: z.string().optional(),
    password: z.string().optional(),
    insecure: booleanLike.default(false),
  })
  .superRefine((value, ctx) => {
    if (value.password !== undefined && value.username === undefined) {
      ctx.addIssue({ code: 'custom', path: ['username'], message: 'is required when password is set' });
    }
  });

export type SnapshotRegistry = z.infer<typeof SnapshotRegistrySchema>;

/**
 * A zone cache: a registry that mirrors the snapshot registry's blobs for the hosts of a zone
 * (distribution run as a pull-through cache, `proxy.remoteurl`), read before the snapshot
 * registry itself. Its own credentials, when it wants any.
 */
export const ZoneCacheSchema = z
  .strictObject({
    url: registryUrl,
    username: z.string().optional(),
    password: z.string().optional(),
    /** plain http; default: true for loopback hosts (as dockerd does), else false */
    insecure: booleanLike.optional(),
  })
  .superRefine((value, ctx) => {
    if (value.password !== undefined && value.username === undefined) {
      ctx.addIssue({ code: 'custom', path: ['username'], message: 'is required when password is set' });
    }
  });

export type ZoneCache = z.infer<typeof ZoneCacheSchema>;

/**
 * Reads a YAML file, replaces `${VAR}` from `env`, and validates it with `schema`.
 * Every failure is a ConfigError naming the file and each bad key path.
 */
export function loadConfigFile<T>(file: string, schema: ZodType<T>, env: NodeJS.ProcessEnv = process.env): T {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError([{ path: '', message: `cannot read configuration file (${errorCode(error)})` }], file);
  }
  return parseConfig(text, schema, env, file);
}

/** Same as loadConfigFile, for YAML text that did not come from a file (`source` names it). */
export function parseConfig<T>(text: string, schema: ZodType<T>, env: NodeJS.ProcessEnv, source?: string): T {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { prettyErrors: false, lineCounter });
  if (document.errors.length > 0) {
    const issues = document.errors.map((error) => {
      const position = lineCounter.linePos(error.pos[0]);
      const where = position.line > 0 ? ` at line ${position.line}, column ${position.col}` : '';
      return { path: '', message: `YAML syntax error${where}: ${firstLine(error.message)}` };
    });
    throw new ConfigError(issues, source);
  }
  let expanded: unknown;
  try {
    expanded = expandEnv(document.toJS(), env);
  } catch (error) {
    if (error instanceof ConfigError && source !== undefined) throw error.inFile(source);
    throw error;
  }
  return validateConfig(expanded, schema, source);
}

/** Validates an already parsed tree; issues are reported as `key.path: message`. */
export function validateConfig<T>(value: unknown, schema: ZodType<T>, source?: string): T {
  const result = schema.safeParse(value, {
    error: (issue) => (issue.code === 'invalid_type' && issue.input === undefined ? 'Required' : undefined),
  });
  if (result.success) return result.data;
  throw new ConfigError(result.error.issues.flatMap(toConfigIssues), source);
}

function toConfigIssues(issue: z.core.$ZodIssue): ConfigIssue[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ path: formatKeyPath([...issue.path, key]), message: 'unknown key' }));
  }
  return [{ path: formatKeyPath(issue.path), message: issue.message }];
}

function errorCode(error: unknown): string {
  if (error instanceof Error && 'code' in error && typeof error.code === 'string') return error.code;
  return error instanceof Error ? error.message : String(error);
}

function firstLine(text: string): string {
  return text.split('\n')[0] ?? text;
}
