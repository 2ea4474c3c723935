/** Parsers for option values; commander reports their InvalidArgumentError as `error: option ... is invalid`. */
import { InvalidArgumentError } from 'commander';

/** `--env K=V` / `--label K=V`, repeatable; the value may itself contain "=". */
export function collectKeyValue(item: string, previous: Record<string, string> | undefined): Record<string, string> {
  const eq = item.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError(`expected KEY=VALUE, got "${item}"`);
  return { ...previous, [item.slice(0, eq)]: item.slice(eq + 1) };
}

export function parseInteger(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    if (!/^-?\d+$/.test(value.trim())) throw new InvalidArgumentError(`expected a whole number, got "${value}"`);
    const n = Number(value);
    if (n < min || n > max) {
      throw new InvalidArgumentError(max === Number.MAX_SAFE_INTEGER ? `must be at least ${min}` : `must be between ${min} and ${max}`);
    }
    return n;
  };
}

export function parsePositiveNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) {
    throw new InvalidArgumentError(`expected a positive number, got "${value}"`);
  }
  return n;
}

/** A repeatable option (`--executor a --executor b`), or one comma-separated value (`--executor a,b`). */
export function collectList(item: string, previous: string[] | undefined): string[] {
  const items = item.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new InvalidArgumentError(`expected a value, got "${item}"`);
  return [...(previous ?? []), ...items];
}
