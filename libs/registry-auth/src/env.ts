import { ConfigError, formatKeyPath, type ConfigIssue } from './errors';

// `$${` is the escape for a literal `${`; `${NAME}` is a reference. Anything else after `$` is
// left alone, so `$HOME` or a lone `$` in a password survive untouched.
const TOKEN = /\$\$\{|\$\{([^}]*)\}|\$\{/g;
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Replaces `${VAR}` in every string of a parsed YAML/JSON tree with the value from `env`.
 * Keys are not expanded. Every missing or malformed reference is reported at once, by key path.
 */
export function expandEnv(value: unknown, env: NodeJS.ProcessEnv, path: string[] = []): unknown {
  const issues: ConfigIssue[] = [];
  const result = expandNode(value, env, path, issues);
  if (issues.length > 0) throw new ConfigError(issues);
  return result;
}

function expandNode(value: unknown, env: NodeJS.ProcessEnv, path: PropertyKey[], issues: ConfigIssue[]): unknown {
  if (typeof value === 'string') return expandString(value, env, path, issues);
  if (Array.isArray(value)) return value.map((item, index) => expandNode(item, env, [...path, index], issues));
  if (isPlainObject(value)) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) out[key] = expandNode(item, env, [...path, key], issues);
    return out;
  }
  return value;
}

function expandString(text: string, env: NodeJS.ProcessEnv, path: PropertyKey[], issues: ConfigIssue[]): string {
  const where = formatKeyPath(path);
  return text.replace(TOKEN, (match: string, name: string | undefined) => {
    if (match === '$${') return '${';
    if (name === undefined) {
      issues.push({ path: where, message: 'unterminated ${ (write $${ for a literal ${)' });
      return match;
    }
    if (!NAME.test(name)) {
      issues.push({ path: where, message: `invalid environment variable reference \${${name}}` });
      return match;
    }
    const replacement = env[name];
    if (replacement === undefined) {
      issues.push({ path: where, message: `environment variable ${name} is not set` });
      return match;
    }
    return replacement;
  });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}
