import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { lazyCapabilities } from './capabilities';

const dir = mkdtempSync(join(tmpdir(), 'lazy-caps-'));
const bin = join(dir, 'bin');
const filesystems = join(dir, 'filesystems');
const devFuse = join(dir, 'fuse');

function tool(name: string, script = 'exit 0'): void {
  writeFileSync(join(bin, name), `#!/bin/sh\n${script}\n`);
  chmodSync(join(bin, name), 0o755);
}

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('lazyCapabilities', () => {
  const ok = async (): Promise<{ ok: boolean; detail: string }> => ({ ok: true, detail: 'fuse-native' });

  it('is lazy when everything is there', async () => {
    const { mkdirSync } = await import('node:fs');
    mkdirSync(bin);
    tool('runc');
    tool('fusermount3');
    writeFileSync(filesystems, 'nodev\tsysfs\nnodev\toverlay\nnodev\tfuse\n\text4\n');
    writeFileSync(devFuse, '');
    expect(await lazyCapabilities({ path: bin, filesystems, devFuse, uid: 0, fuseNative: ok })).toEqual({ lazy: true, lazy_unavailable_reason: null });
  });

  it('names every missing piece', async () => {
    writeFileSync(filesystems, 'nodev\tsysfs\n\text4\n');
    const caps = await lazyCapabilities({
      path: join(dir, 'empty'), filesystems, devFuse: join(dir, 'no-fuse'), uid: 1000,
      fuseNative: async () => ({ ok: false, detail: 'fuse-native does not load: libfuse.so.2: cannot open shared object file' }),
    });
    expect(caps.lazy).toBe(false);
    for (const part of ['not root', 'no-fuse is not usable (ENOENT)', 'fusermount is not on PATH', 'runc is not on PATH', 'no overlay filesystem', 'no fuse filesystem', 'libfuse.so.2']) {
      expect(caps.lazy_unavailable_reason).toContain(part);
    }
  });

  it('a runc that does not run is a reason too', async () => {
    writeFileSync(filesystems, 'nodev\toverlay\nnodev\tfuse\n');
    tool('runc', 'echo broken >&2; exit 1');
    const caps = await lazyCapabilities({ path: bin, filesystems, devFuse, uid: 0, fuseNative: ok });
    expect(caps.lazy_unavailable_reason).toMatch(/runc --version failed/);
  });

  it('on this machine, answers without throwing', async () => {
    const caps = await lazyCapabilities();
    expect(typeof caps.lazy).toBe('boolean');
    expect(caps.lazy ? caps.lazy_unavailable_reason : typeof caps.lazy_unavailable_reason).toBe(caps.lazy ? null : 'string');
  });
});
