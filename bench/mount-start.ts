/**
 * Issue 10 item 1: how long a lazy mount takes from being asked to being mounted, three ways:
 *  - launcher: what the executor's runc-lazy driver does now: a MountLauncher keeps a mount
 *    process of the prebuilt bundle loaded and waiting; the mount is handed to it on stdin;
 *  - bundle: a fresh process of the prebuilt bundle (libs/clip/src/fuse/mount-bundle.ts) per mount;
 *  - tsx: a fresh process running the TypeScript through tsx (what every mount did before).
 * All mount the clip index of the lazy bench's image (the debootstrap bookworm + python3 +
 * numpy... root filesystem, one gzip layer) with registry access on stdin.
 *
 *   npx tsx bench/mount-start.ts [rounds]        (default 10 per kind, interleaved)
 *
 * Timed: start() / startMountProcess() called -> resolved (status `mounted` and the mount in
 * /proc/self/mounts). Also the process's own `ready_ms` (node start -> mounted, from its log;
 * for the launcher this includes the time it sat waiting) and, as the floor of a fresh process,
 * `node -e 0` spawned and exited.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { MountLauncher, ensureMountBundle, mountsUnder, readMountStatus, startMountProcess, stopMountProcess } from '@cryo/clip/fuse';
import { indexLayers } from '../libs/clip/src/build/build-index';
import { sha256, testImage } from '../libs/clip/src/testing/fixtures';
import { TEST_CACHE_DIR } from '../libs/clip/src/testing/debian';
import { median, printTable, writeResult } from './report';

const rounds = Number(process.argv[2] ?? 10);
const LARGE_TAR = join(TEST_CACHE_DIR, 'debian-bookworm-python3-large.tar');
const SMALL_TAR = join(TEST_CACHE_DIR, 'debian-bookworm-python3.tar');

const dir = mkdtempSync('/var/tmp/cryo-bench-mount-');
try {
  const tarPath = existsSync(LARGE_TAR) ? LARGE_TAR : SMALL_TAR;
  if (!existsSync(tarPath)) throw new Error(`no cached image tarball: run bench/lazy-restore.ts once (it builds ${LARGE_TAR})`);
  const tar = readFileSync(tarPath);
  const blob = execFileSync('pigz', ['-6', '-n', '-c'], { input: tar, maxBuffer: 2 ** 31 });
  const built = await indexLayers(testImage(), [{
    digest: sha256(blob), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', size: blob.length, diffId: sha256(tar),
    open: async () => (async function* () {
      for (let p = 0; p < blob.length; p += 1 << 20) yield blob.subarray(p, p + (1 << 20));
    })(),
  }]);
  const indexPath = join(dir, 'image.clip');
  writeFileSync(indexPath, built.index);
  console.error(`index of ${tarPath}: ${(built.index.length / 1e6).toFixed(2)} MB, ${built.files} files`);
  const bundle = await ensureMountBundle();
  console.error(`bundle: ${bundle.detail}`);
  const registryAccess = { snapshot_registry: { url: 'test.local', repository: 'clip/test', username: 'u', password: 'p', insecure: false } };
  const launcher = new MountLauncher({ logFile: join(dir, 'launcher.log') });
  await launcher.prepare();
  type Kind = 'launcher' | 'bundle' | 'tsx';
  const KINDS: Kind[] = ['launcher', 'bundle', 'tsx'];

  const bare: number[] = [];
  const runs: Array<{ entry: Kind; round: number; ask_to_mounted_ms: number; ready_ms: number | null; load1: number } & Record<string, number | undefined | null | string>> = [];
  for (let round = 1; round <= rounds; round++) {
    const t = performance.now();
    spawnSync(process.execPath, ['-e', '0']);
    bare.push(performance.now() - t);
    for (const entry of KINDS) {
      const mountpoint = join(dir, `mnt-${entry}-${round}`);
      const statusFile = join(dir, `mount-${entry}-${round}.json`);
      const logFile = join(dir, `mount-${entry}-${round}.log`);
      const load1 = loadavg()[0] ?? NaN;
      const t0 = performance.now();
      const job = { indexPath, mountpoint, statusFile, logFile, cacheDir: join(dir, 'cache'), registryAccess };
      const status = entry === 'launcher' ? await launcher.start(job) : await startMountProcess({ ...job, entry });
      const ms = performance.now() - t0;
      const mounted = readFileSync(logFile, 'utf8').split('\n').find((l) => l.includes('"msg":"mounted"'));
      const line = mounted === undefined ? {} : JSON.parse(mounted) as Record<string, number>;
      const ready = line.ready_ms ?? null;
      const phases = { main_ms: line.main_ms, stdin_ms: line.stdin_ms, index_ms: line.index_ms, source_ms: line.source_ms, fuse_ms: line.fuse_ms };
      runs.push({ entry, round, ask_to_mounted_ms: ms, ready_ms: ready, load1, ...phases });
      console.error(`${entry} round ${round}: ${ms.toFixed(0)} ms (process ready after ${ready} ms: ${JSON.stringify(phases)}), load ${load1.toFixed(2)}`);
      await stopMountProcess(status, mountpoint);
      if (readMountStatus(statusFile)?.state !== 'unmounted') console.error(`  ${entry} round ${round}: did not unmount cleanly`);
    }
  }
  launcher.close();
  const of = (entry: Kind, key: 'ask_to_mounted_ms' | 'ready_ms'): number => median(runs.filter((r) => r.entry === entry).map((r) => Number(r[key])));
  const rows = [['entry', 'asked -> mounted (median)', 'min..max', 'process start -> mounted']];
  for (const entry of KINDS) {
    const all = runs.filter((r) => r.entry === entry).map((r) => r.ask_to_mounted_ms);
    rows.push([entry, `${of(entry, 'ask_to_mounted_ms').toFixed(0)} ms`, `${Math.min(...all).toFixed(0)}..${Math.max(...all).toFixed(0)} ms`, `${of(entry, 'ready_ms').toFixed(0)} ms`]);
  }
  rows.push(['node -e 0 (floor)', `${median(bare).toFixed(0)} ms`, '', '']);
  const loads = runs.map((r) => r.load1);
  printTable(`Mount start, ${rounds} rounds each; 1-min load ${Math.min(...loads).toFixed(2)}..${Math.max(...loads).toFixed(2)}`, rows);
  const ask = (entry: Kind): number => of(entry, 'ask_to_mounted_ms');
  console.log(`  target: launcher asked -> mounted <= 150 ms: ${ask('launcher') <= 150 ? 'met' : 'MISSED'}; `
    + `tsx / launcher ${(ask('tsx') / ask('launcher')).toFixed(1)}x, tsx / bundle ${(ask('tsx') / ask('bundle')).toFixed(1)}x`);
  writeResult('mount-start', { rounds, tar: tarPath, index_bytes: built.index.length, bare_node_ms: median(bare), runs });
} finally {
  const left = mountsUnder(dir);
  if (left.length > 0) console.error(`mounts left under ${dir}: ${left.map((m) => m.mountpoint).join(', ')}`);
  else rmSync(dir, { recursive: true, force: true });
}
