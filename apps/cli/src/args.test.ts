import { InvalidArgumentError } from 'commander';
import { describe, expect, it } from 'vitest';
import { collectKeyValue, parseInteger, parsePositiveNumber } from './args';

describe('collectKeyValue', () => {
  it('collects repeated KEY=VALUE, keeping "=" inside the value', () => {
    const first = collectKeyValue('A=1', undefined);
    expect(collectKeyValue('B=x=y', first)).toEqual({ A: '1', B: 'x=y' });
    expect(collectKeyValue('EMPTY=', undefined)).toEqual({ EMPTY: '' });
  });

  it('rejects an item without a key', () => {
    expect(() => collectKeyValue('novalue', undefined)).toThrow(InvalidArgumentError);
    expect(() => collectKeyValue('=v', undefined)).toThrow(/expected KEY=VALUE/);
  });
});

describe('number options', () => {
  it('parses whole numbers within bounds', () => {
    expect(parseInteger(0)('0')).toBe(0);
    expect(parseInteger(1, 500)('500')).toBe(500);
    expect(() => parseInteger(1, 500)('501')).toThrow(/between 1 and 500/);
    expect(() => parseInteger(1)('0')).toThrow(/must be at least 1$/);
    expect(() => parseInteger(0)('1.5')).toThrow(/whole number/);
    expect(() => parseInteger(0)('ten')).toThrow(/whole number/);
  });

  it('parses positive numbers', () => {
    expect(parsePositiveNumber('0.5')).toBe(0.5);
    expect(() => parsePositiveNumber('0')).toThrow(/positive number/);
    expect(() => parsePositiveNumber('')).toThrow(/positive number/);
  });
});
