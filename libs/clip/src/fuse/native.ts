/**
 * Loading `fuse-native` 2.2.6 and the slice of its API clip uses, typed.
 *
 * The package ships prebuilt N-API addons that link `libfuse.so.2`. Debian's `libfuse2` provides
 * it (scripts/setup.sh installs it). Without it, `require` fails; the package also bundles a
 * libfuse whose SONAME is `libfuse.so.2` under the file name `libfuse.so`, so as a fallback we
 * load that file first (RTLD_GLOBAL | RTLD_NODELETE): the dynamic linker then satisfies the
 * addon's dependency with the library already loaded under that SONAME.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';

/** A stat in the shape fuse-native packs for the kernel (times in ms since the epoch). */
export interface FuseStat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  dev: number;
  nlink: number;
  ino: number;
  rdev: number;
  blksize: number;
  blocks: number;
  atime: number;
  mtime: number;
  ctime: number;
}

export interface FuseStatfs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  fsid: number;
  flag: number;
  namemax: number;
}

/** `code` is 0 or a negative errno; read's code is the byte count. */
export type Done = (code: number) => void;

/**
 * The handlers clip implements. fuse-native calls each with a callback; its first argument is
 * 0 (or a byte count for read, a size for getxattr sizes) or a negative errno.
 */
export interface FuseOperations {
  init?(cb: Done): void;
  statfs?(path: string, cb: (code: number, statfs?: FuseStatfs) => void): void;
  getattr?(path: string, cb: (code: number, stat?: FuseStat) => void): void;
  fgetattr?(path: string, fd: number, cb: (code: number, stat?: FuseStat) => void): void;
  readdir?(path: string, cb: (code: number, names?: string[], stats?: FuseStat[]) => void): void;
  readlink?(path: string, cb: (code: number, target?: string) => void): void;
  open?(path: string, flags: number, cb: (code: number, fd?: number) => void): void;
  opendir?(path: string, flags: number, cb: (code: number, fd?: number) => void): void;
  read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Done): void;
  release?(path: string, fd: number, cb: Done): void;
  releasedir?(path: string, fd: number, cb: Done): void;
  /** Signature from fuse-native's index.js (not its README): no buffer, no size. */
  getxattr?(path: string, name: string, position: number, cb: (code: number, value?: Buffer) => void): void;
  listxattr?(path: string, cb: (code: number, names?: string[]) => void): void;
}

export interface FuseInstance {
  readonly mnt: string;
  ops: FuseOperations;
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}

export interface FuseConstructorOptions {
  timeout?: number | false | Record<string, number | false>;
  force?: boolean;
  mkdir?: boolean;
  debug?: boolean;
}

/** The class fuse-native exports, and the prototype methods clip overrides (see mount.ts). */
export interface FuseClass {
  new (mnt: string, ops: FuseOperations, opts?: FuseConstructorOptions): FuseInstance;
  unmount(mnt: string, cb: (err: Error | null) => void): void;
  readonly prototype: FusePrototype;
}

/** Internals of fuse-native 2.2.6 that mount.ts replaces; `signal` answers the kernel. */
export type FuseSignal = (code: number, ...values: unknown[]) => void;
export interface FusePrototype {
  _fuseOptions(this: FuseInstance): string;
  _op_getxattr(this: FuseInstance, signal: FuseSignal, path: string, name: string, valueBuf: Buffer, position: number): void;
  _op_listxattr(this: FuseInstance, signal: FuseSignal, path: string, listBuf: Buffer): void;
}

export interface FuseNativeStatus {
  ok: boolean;
  /** how it was loaded, or why it could not be */
  detail: string;
}

const require = createRequire(import.meta.url);
let loaded: FuseClass | undefined;
let status: FuseNativeStatus | undefined;

function isFuseClass(value: unknown): value is FuseClass {
  return typeof value === 'function' && 'unmount' in value && typeof value.unmount === 'function';
}

/** The libfuse shipped inside the npm packages (named libfuse.so, SONAME libfuse.so.2). */
export function bundledLibfuse(): string | undefined {
  const candidates: string[] = [];
  try {
    candidates.push(join(dirname(require.resolve('fuse-native/package.json')), 'prebuilds', `linux-${process.arch}`, 'libfuse.so'));
  } catch {
    // fuse-native itself missing: reported by loadFuse
  }
  try {
    candidates.push(join(dirname(require.resolve('fuse-shared-library-linux/package.json')), 'libfuse', 'lib', 'libfuse.so'));
  } catch {
    // optional dependency of fuse-shared-library on other platforms
  }
  return candidates.find((file) => existsSync(file));
}

function preloadBundledLibfuse(): string | undefined {
  const lib = bundledLibfuse();
  if (lib === undefined) return undefined;
  // RTLD_NODELETE (glibc 0x1000) is not in os.constants; Node dlcloses a library that registers no addon.
  const nodelete = process.platform === 'linux' ? 0x1000 : 0;
  const flags = constants.dlopen.RTLD_NOW | constants.dlopen.RTLD_GLOBAL | nodelete;
  try {
    process.dlopen({ exports: {} }, lib, flags);
  } catch {
    // Not an addon, so dlopen "fails" after loading it; RTLD_NODELETE keeps it loaded.
  }
  return lib;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * fuse-native's class; throws with the reason when it cannot be loaded. Set
 * CRYO_FUSE_BUNDLED_LIBFUSE=1 to use the bundled libfuse even when the system has one.
 */
export function loadFuse(): FuseClass {
  if (loaded !== undefined) return loaded;
  let firstError: unknown;
  if (process.env.CRYO_FUSE_BUNDLED_LIBFUSE === '1') preloadBundledLibfuse();
  try {
    const mod: unknown = require('fuse-native');
    if (!isFuseClass(mod)) throw new Error('fuse-native did not export its Fuse class');
    loaded = mod;
    status = { ok: true, detail: process.env.CRYO_FUSE_BUNDLED_LIBFUSE === '1' ? 'fuse-native with bundled libfuse' : 'fuse-native' };
    return mod;
  } catch (err) {
    firstError = err;
  }
  if (!/libfuse\.so/.test(message(firstError))) {
    status = { ok: false, detail: `fuse-native does not load: ${message(firstError)}` };
    throw new Error(status.detail, { cause: firstError });
  }
  const lib = preloadBundledLibfuse();
  try {
    const mod: unknown = require('fuse-native');
    if (!isFuseClass(mod)) throw new Error('fuse-native did not export its Fuse class');
    loaded = mod;
    status = { ok: true, detail: `fuse-native with bundled ${lib ?? 'libfuse'} (install libfuse2 to use the system's)` };
    return mod;
  } catch (err) {
    status = {
      ok: false,
      detail: `fuse-native does not load: ${message(firstError)}; the bundled libfuse did not help either (${message(err)}). Install Debian's libfuse2.`,
    };
    throw new Error(status.detail, { cause: err });
  }
}

/** Whether fuse-native loads in this process, without throwing. */
export function fuseNativeStatus(): FuseNativeStatus {
  if (status !== undefined) return status;
  try {
    loadFuse();
  } catch {
    // status set by loadFuse
  }
  return status ?? { ok: false, detail: 'fuse-native was not loaded' };
}
