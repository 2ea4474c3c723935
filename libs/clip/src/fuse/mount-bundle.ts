/**
 * The mount process compiled ahead of time. Run through tsx, mount-main.ts spends most of a
 * second compiling TypeScript and loading a few hundred modules before it mounts anything (2 s
 * and more on a loaded host); bundled by esbuild into one CommonJS file it starts in about the
 * time of a bare `node` (see docs/benchmarks-lazy.md, "Mount start").
 *
 * The bundle lives in `libs/clip/dist/fuse/mount-main.cjs` (two levels below the package, like
 * the source, so the FUSE addon is found at the same relative place) next to a stamp listing
 * every input file esbuild read with its sha256. A bundle is used only while every input still
 * hashes to its stamp: an edited source, a changed dependency or a missing file means a rebuild
 * (about half a second), never stale code under a mount. scripts/setup.sh builds it
 * (`npm run build:mount -w @cryo/clip`), the executor checks it when it starts; when it cannot
 * be built (no esbuild, a read-only tree) mounts run the TypeScript through tsx as before, and
 * say so.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/** libs/clip */
const PACKAGE_DIR = resolve(import.meta.dirname, '..', '..');
/** Where the bundle goes; `..`/`..` of it is libs/clip, as for the source (native.ts relies on it). */
export const MOUNT_BUNDLE = join(PACKAGE_DIR, 'dist', 'fuse', 'mount-main.cjs');
const STAMP = `${MOUNT_BUNDLE}.inputs.json`;
const ENTRY = join(PACKAGE_DIR, 'src', 'fuse', 'mount-main.ts');
/** The monorepo root: esbuild names inputs relative to its working directory. */
const ROOT = resolve(PACKAGE_DIR, '..', '..');

interface Stamp {
  /** input path (relative to ROOT) -> sha256 hex of its content */
  inputs: Record<string, string>;
}

export interface MountBundleState {
  /** the bundle to run, or undefined when mounts must run the TypeScript through tsx */
  bundle: string | undefined;
  /** what happened: fresh, rebuilt (with ms), or why there is no bundle */
  detail: string;
}

function sha256File(path: string): string | undefined {
  try {
    return createHash('sha256').update(readFileSync(path)).digest('hex');
  } catch {
    return undefined;
  }
}

/** True when the bundle exists and every input it was built from is unchanged. */
export function mountBundleFresh(): boolean {
  if (!existsSync(MOUNT_BUNDLE)) return false;
  let stamp: Stamp;
  try {
    stamp = JSON.parse(readFileSync(STAMP, 'utf8')) as Stamp;
  } catch {
    return false;
  }
  const entries = Object.entries(stamp.inputs ?? {});
  if (entries.length === 0) return false;
  return entries.every(([path, hash]) => sha256File(join(ROOT, path)) === hash);
}

/**
 * Bundle mount-main.ts with esbuild (CommonJS, node20, minified: a smaller file parses faster,
 * about 40 ms of CPU per start here; messages are unchanged, stack traces show minified names;
 * fuse-native stays external: it loads clip's native addon through node-gyp-build). Written to a temp file and renamed, so concurrent builders and
 * running mounts never see half a file. Throws when esbuild is missing or fails.
 */
export async function buildMountBundle(): Promise<void> {
  const esbuild = await import('esbuild');
  const dir = dirname(MOUNT_BUNDLE);
  mkdirSync(dir, { recursive: true });
  const tmp = `${MOUNT_BUNDLE}.${process.pid}.tmp`;
  try {
    const result = await esbuild.build({
      absWorkingDir: ROOT,
      entryPoints: [ENTRY],
      outfile: tmp,
      bundle: true,
      platform: 'node',
      format: 'cjs',
      target: 'node20',
      minify: true,
      external: ['fuse-native', 'node-gyp-build', 'esbuild'],
      // The sources are ES modules: give them import.meta's two fields in CommonJS terms.
      define: { 'import.meta.url': '__cryoImportMetaUrl', 'import.meta.dirname': '__dirname' },
      banner: { js: 'const __cryoImportMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
      metafile: true,
      logLevel: 'silent',
    });
    const inputs: Record<string, string> = {};
    for (const input of Object.keys(result.metafile.inputs)) {
      const hash = sha256File(join(ROOT, input));
      if (hash === undefined) throw new Error(`esbuild read ${input}, which cannot be read back`);
      inputs[input] = hash;
    }
    writeFileSync(`${STAMP}.${process.pid}.tmp`, `${JSON.stringify({ inputs } satisfies Stamp)}\n`);
    renameSync(tmp, MOUNT_BUNDLE);
    renameSync(`${STAMP}.${process.pid}.tmp`, STAMP);
  } finally {
    rmSync(tmp, { force: true });
    rmSync(`${STAMP}.${process.pid}.tmp`, { force: true });
  }
}

let checked: Promise<MountBundleState> | undefined;

/**
 * The bundle to start mount processes with, rebuilt first when any of its inputs changed. Checked
 * once per process (a few milliseconds of hashing); a failed build leaves mounts on tsx.
 */
export function ensureMountBundle(): Promise<MountBundleState> {
  checked ??= (async (): Promise<MountBundleState> => {
    if (mountBundleFresh()) return { bundle: MOUNT_BUNDLE, detail: `${relative(ROOT, MOUNT_BUNDLE)} is up to date` };
    const started = performance.now();
    try {
      await buildMountBundle();
      return { bundle: MOUNT_BUNDLE, detail: `${relative(ROOT, MOUNT_BUNDLE)} rebuilt in ${Math.round(performance.now() - started)} ms` };
    } catch (err) {
      return { bundle: undefined, detail: `cannot build the mount bundle (${err instanceof Error ? err.message : String(err)}); mounts run through tsx and start slower` };
    }
  })();
  return checked;
}
