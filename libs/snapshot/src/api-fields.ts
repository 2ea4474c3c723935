/**
 * The bounded fields every request of the public API is built from (API_LIMITS): environment,
 * labels, commands, image references, ids and resources. api.ts builds the bodies from them; the
 * names exported from the package are the ones api.ts re-exports.
 */
import { z } from 'zod';
import { parseImageReference } from '@cryo/oci/reference';
import { EXECUTOR_ID_PATTERN, EXECUTOR_ID_RULE, ID_MAX_LENGTH } from './ids';

export const MAX_TTL_SECS = 10 * 365 * 24 * 3600;

/** What one request may carry. Bytes are UTF-8 bytes. */
export const API_LIMITS = {
  /** Linux MAX_ARG_STRLEN (128 KiB) less the NUL: execve fails with E2BIG on a longer argument or NAME=value. */
  argBytes: 128 * 1024 - 1,
  commandElements: 1024,
  /** All command elements together. */
  commandBytes: 256 * 1024,
  envVariables: 1024,
  /** All NAME=value strings together. */
  envBytes: 256 * 1024,
  labels: 64,
  labelKeyLength: 63,
  labelValueLength: 255,
  /** All keys and values together: bounds what every list item carries. */
  labelBytes: 8 * 1024,
  /** `label=k=v` filters on one list request (all must match). */
  labelFilters: 16,
  /** distribution allows a 255-character name plus a 128-character tag and a digest. */
  imageLength: 512,
  /** Items on one page of a list. */
  pageItems: 500,
} as const;

export const utf8Bytes = (text: string): number => Buffer.byteLength(text, 'utf8');
export const NO_NUL = /^[^\u0000]*$/;
export const NO_CONTROL = /^[^\u0000-\u001f\u007f]*$/;

/** One argument or environment string a process can receive: no NUL, at most MAX_ARG_STRLEN. */
export const ArgumentSchema = (what: string) =>
  z.string()
    .max(API_LIMITS.argBytes, `${what} is at most ${API_LIMITS.argBytes} bytes (Linux MAX_ARG_STRLEN)`)
    .regex(NO_NUL, `${what} must not contain NUL bytes: no process can receive them`)
    .refine((text) => utf8Bytes(text) <= API_LIMITS.argBytes, `${what} is at most ${API_LIMITS.argBytes} bytes of UTF-8 (Linux MAX_ARG_STRLEN)`);

/** A record whose key refusals keep the key rule (zod's default says only "Invalid key in record"). */
export function recordOf<K extends z.ZodString, V extends z.ZodType>(key: K, value: V) {
  return z.record(key, value, {
    error: (issue) =>
      issue.code === 'invalid_key' ? `invalid key: ${(issue.issues ?? []).map((i) => i.message).join('; ')}` : undefined,
  });
}

export const ENV_RULE = `at most ${API_LIMITS.envVariables} variables; names without "=" or NUL; values without NUL; ` +
  `each NAME=value at most ${API_LIMITS.argBytes} bytes and all together at most ${API_LIMITS.envBytes} bytes (UTF-8)`;
export const EnvSchema = recordOf(
  z.string().min(1).regex(/^[^=\u0000]+$/, 'env names must not contain "=" or NUL'),
  ArgumentSchema('an env value'),
).check((ctx) => {
  const entries = Object.entries(ctx.value);
  if (entries.length > API_LIMITS.envVariables) {
    ctx.issues.push({ code: 'custom', input: ctx.value, message: `at most ${API_LIMITS.envVariables} variables; got ${entries.length}` });
    return;
  }
  let total = 0;
  for (const [name, value] of entries) {
    const bytes = utf8Bytes(name) + 1 + utf8Bytes(value);
    if (bytes > API_LIMITS.argBytes) {
      ctx.issues.push({ code: 'custom', input: ctx.value, path: [name], message: `NAME=value is ${bytes} bytes; at most ${API_LIMITS.argBytes} (Linux MAX_ARG_STRLEN)` });
    }
    total += bytes;
  }
  if (total > API_LIMITS.envBytes) {
    ctx.issues.push({ code: 'custom', input: ctx.value, message: `all NAME=value strings together are ${total} bytes; at most ${API_LIMITS.envBytes}` });
  }
}).meta({ maxProperties: API_LIMITS.envVariables, description: `Environment variables: ${ENV_RULE}.` });

export const LABEL_KEY_PATTERN = /^[A-Za-z0-9._/-]{1,63}$/;
export const LABEL_KEY_RULE = 'label keys are 1-63 letters, digits, ".", "_", "/", "-"';
export const LABEL_VALUE_RULE = `label values are at most ${API_LIMITS.labelValueLength} characters without control characters`;
export const LabelKeySchema = z.string().regex(LABEL_KEY_PATTERN, LABEL_KEY_RULE);
export const LabelValueSchema = z.string().max(API_LIMITS.labelValueLength, LABEL_VALUE_RULE).regex(NO_CONTROL, LABEL_VALUE_RULE);
export const LabelsSchema = recordOf(LabelKeySchema, LabelValueSchema).check((ctx) => {
  const entries = Object.entries(ctx.value);
  if (entries.length > API_LIMITS.labels) {
    ctx.issues.push({ code: 'custom', input: ctx.value, message: `at most ${API_LIMITS.labels} labels; got ${entries.length}` });
    return;
  }
  const total = entries.reduce((sum, [key, value]) => sum + utf8Bytes(key) + utf8Bytes(value), 0);
  if (total > API_LIMITS.labelBytes) {
    ctx.issues.push({ code: 'custom', input: ctx.value, message: `keys and values together are ${total} bytes; at most ${API_LIMITS.labelBytes}` });
  }
}).meta({
  maxProperties: API_LIMITS.labels,
  description: `Labels: at most ${API_LIMITS.labels}; ${LABEL_KEY_RULE}; ${LABEL_VALUE_RULE}; ` +
    `keys and values together at most ${API_LIMITS.labelBytes} bytes (UTF-8).`,
});

export const COMMAND_RULE = `1-${API_LIMITS.commandElements} elements without NUL; each at most ${API_LIMITS.argBytes} bytes and ` +
  `all together at most ${API_LIMITS.commandBytes} bytes (UTF-8)`;
export const CommandSchema = z.array(ArgumentSchema('a command element'))
  .min(1, 'command must have at least one element')
  .max(API_LIMITS.commandElements, `command has at most ${API_LIMITS.commandElements} elements`)
  .check((ctx) => {
    const total = ctx.value.reduce((sum, element) => sum + utf8Bytes(element), 0);
    if (total > API_LIMITS.commandBytes) {
      ctx.issues.push({ code: 'custom', input: ctx.value, message: `command elements together are ${total} bytes; at most ${API_LIMITS.commandBytes}` });
    }
  })
  .meta({ description: `The process to run, as argv: ${COMMAND_RULE}.` });

export const IMAGE_RULE = 'an image reference in the distribution grammar, [host[:port]/]path[:tag][@digest]: ' +
  'path components of lowercase letters and digits joined by ".", "_", "__" or "-", a tag of at most 128 ' +
  '[A-Za-z0-9_.-] not starting with "." or "-", a digest algorithm:hex; no whitespace';
/** `busybox`, `127.0.0.1:5001/team/app:v1`, `app@sha256:...`; checked with libs/oci's parser. */
export const ImageReferenceSchema = z.string()
  .min(1, 'image must not be empty')
  .max(API_LIMITS.imageLength, `image is at most ${API_LIMITS.imageLength} characters`)
  .check((ctx) => {
    try {
      parseImageReference(ctx.value);
    } catch (err) {
      ctx.issues.push({ code: 'custom', input: ctx.value, message: `${err instanceof Error ? err.message : String(err)}; expected ${IMAGE_RULE}` });
    }
  })
  .meta({ description: `The image to run: ${IMAGE_RULE}.` });

export const ExecutorIdSchema = z.string().regex(EXECUTOR_ID_PATTERN, EXECUTOR_ID_RULE);
/** A sandbox or snapshot id as a client sends it; an id the server never made is answered 404. */
export const ResourceIdSchema = z.string().min(1).max(ID_MAX_LENGTH, `ids are at most ${ID_MAX_LENGTH} characters`);

export const ResourcesSchema = z.strictObject({
  cpus: z.number().positive().max(256).optional(),
  memory_mb: z.number().int().positive().max(1024 * 1024).optional(),
});
