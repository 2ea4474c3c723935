/**
 * A directory of small JSON records written with temp file + fsync + rename, so a record is
 * either fully there or not at all, whatever moment the process dies.
 */
import { mkdirSync, openSync, writeSync, fsyncSync, closeSync, renameSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export class JsonJournal<T> {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  private file(key: string): string {
    if (!/^[A-Za-z0-9._-]+$/.test(key)) throw new Error(`invalid journal key ${key}`);
    return join(this.dir, `${key}.json`);
  }

  write(key: string, value: T): void {
    const target = this.file(key);
    const tmp = `${target}.${process.pid}.tmp`;
    const fd = openSync(tmp, 'w');
    try {
      writeSync(fd, JSON.stringify(value));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, target);
    const dirFd = openSync(this.dir, 'r');
    try { fsyncSync(dirFd); } finally { closeSync(dirFd); }
  }

  read(key: string): T | undefined {
    try {
      return JSON.parse(readFileSync(this.file(key), 'utf8')) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  remove(key: string): void {
    rmSync(this.file(key), { force: true });
  }

  entries(): Array<[string, T]> {
    const out: Array<[string, T]> = [];
    for (const name of readdirSync(this.dir)) {
      if (!name.endsWith('.json')) continue;
      const key = name.slice(0, -'.json'.length);
      const value = this.read(key);
      if (value !== undefined) out.push([key, value]);
    }
    return out;
  }
}
