/**
 * Loading `fuse-native` 2.2.6 and the slice of its API clip uses, typed.
 *
 * Names are bytes (see ../names.ts), and the addon fuse-native ships passes paths to JavaScript
 * decoded as UTF-8, which turns every byte that is not UTF-8 into U+FFFD (two names collapse
 * into one, a third is renamed). So clip does not load that prebuilt addon: it builds
 * fuse-native's own C source with the N-API Latin-1 string calls instead of the UTF-8 ones
 * (libs/clip/native: every path, name and link target crosses as one JS character per byte),
 * linked against Debian's libfuse2. scripts/setup.sh builds it (`npm run build:fuse -w
 * @cryo/clip`); fuse-native's JavaScript is used as is, pointed at that addon through
 * node-gyp-build's `FUSE_NATIVE_PREBUILD` override. Without the addon there is no FUSE: never a
 * silent fallback to renamed files.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';

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
 * 0 (or a byte count for read, a size for getxattr sizes) or a negative errno. With clip's addon
 * every path, name, link target and xattr name, in and out, is a byte string (../names.ts).
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

/** Where scripts/setup.sh builds the byte-exact addon (libs/clip/native, node-gyp's layout). */
export const FUSE_ADDON_DIR = resolve(import.meta.dirname, '..', '..', 'native');
export const FUSE_ADDON = join(FUSE_ADDON_DIR, 'build', 'Release', 'fuse.node');

function isFuseClass(value: unknown): value is FuseClass {
  return typeof value === 'function' && 'unmount' in value && typeof value.unmount === 'function';
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** fuse-native's JavaScript with clip's addon under it (node-gyp-build reads the override at require time). */
function requireWithAddon(): unknown {
  const saved = process.env.FUSE_NATIVE_PREBUILD;
  process.env.FUSE_NATIVE_PREBUILD = FUSE_ADDON_DIR;
  try {
    const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
    const picked = nodeGypBuild.resolve(dirname(require.resolve('fuse-native/package.json')));
    if (resolve(picked) !== FUSE_ADDON) throw new Error(`node-gyp-build picked ${picked} instead of ${FUSE_ADDON}`);
    return require('fuse-native');
  } finally {
    if (saved === undefined) delete process.env.FUSE_NATIVE_PREBUILD;
    else process.env.FUSE_NATIVE_PREBUILD = saved;
  }
}

/** fuse-native's class on clip's byte-exact addon; throws with the reason when it cannot be loaded. */
export function loadFuse(): FuseClass {
  if (loaded !== undefined) return loaded;
  if (!existsSync(FUSE_ADDON)) {
    status = {
      ok: false,
      detail: `the FUSE addon is not built (${FUSE_ADDON} is missing): run scripts/setup.sh, or \`npm run build:fuse -w @cryo/clip\` with libfuse-dev installed`,
    };
    throw new Error(status.detail);
  }
  try {
    const mod = requireWithAddon();
    if (!isFuseClass(mod)) throw new Error('fuse-native did not export its Fuse class');
    loaded = mod;
    status = { ok: true, detail: `fuse-native with clip's byte-exact addon ${FUSE_ADDON}` };
    return mod;
  } catch (err) {
    status = { ok: false, detail: `fuse-native does not load with ${FUSE_ADDON}: ${message(err)} (rebuild it: npm run build:fuse -w @cryo/clip)` };
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
