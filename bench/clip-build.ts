/**
 * clip index build: throughput next to `gzip -dc LAYER > /dev/null` on the same layer in the
 * same run, a plain native-zlib pass (gunzip + sha256 + tar parse: the floor), the index
 * size as a share of the compressed image per checkpoint placement, and the time to open a
 * 50k-file index.
 *
 *   npx tsx bench/clip-build.ts
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import zlib from 'node:zlib';
import { ClipIndex, ClipReader, TarParser, indexLayers, type IndexLayersOptions, type LayerInput } from '@cryo/clip';
import { debianRootfsTar } from '../libs/clip/src/testing/debian';
import { MEDIA, sha256, testImage } from '../libs/clip/src/testing/fixtures';
import { writeTar } from '../libs/clip/src/testing/tar-writer';
import { mdTable, writeSection } from './clip-report';
import { median, printTable, writeResult } from './report';

const ROUNDS = 5;
const work = mkdtempSync(join(tmpdir(), 'clip-bench-'));
const MB = 1e6;

function time<T>(fn: () => T): [T, number] {
  const t0 = performance.now();
  const r = fn();
  return [r, (performance.now() - t0) / 1000];
}

/** CPU seconds (user + system) of the children this process has waited for: /proc/self/stat cutime + cstime */
function childCpu(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[13]) + Number(fields[14])) / 100;
}

/** CPU seconds of this process, every thread (the hashing worker included) */
function ownCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function timeAsync<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await fn();
  return [r, (performance.now() - t0) / 1000];
}

function layerFromFile(file: string, diffId: string): LayerInput {
  const blob = readFileSync(file);
  return {
    digest: sha256(blob),
    mediaType: MEDIA.gzip,
    size: blob.length,
    diffId,
    open: async () => createReadStream(file, { highWaterMark: 1 << 20 }),
  };
}

/** gunzip + sha256 + tar parse with Node's native zlib: no checkpoints, the floor for a native indexer */
async function nativePass(file: string): Promise<number> {
  const hash = createHash('sha256');
  let entries = 0;
  const tar = new TarParser(() => entries++);
  const gunzip = zlib.createGunzip({ chunkSize: 1 << 20 });
  createReadStream(file, { highWaterMark: 1 << 20 }).pipe(gunzip);
  for await (const chunk of gunzip) {
    const b = chunk as Buffer;
    hash.update(b);
    tar.push(b);
  }
  tar.end();
  return entries;
}

try {
  const tarFile = debianRootfsTar();
  const loadStart = loadavg()[0] ?? NaN;
  const tar = readFileSync(tarFile);
  const diffId = sha256(tar);
  const rows: Array<Array<string | number>> = [];
  const sizeRows: Array<Array<string | number>> = [];
  const results: Record<string, unknown> = { uncompressed_bytes: tar.length };
  for (const level of [6, 1]) {
    const gz = join(work, `layer-${level}.tar.gz`);
    writeFileSync(gz, execFileSync('gzip', [`-${level}`, '-n', '-c', tarFile], { maxBuffer: 1 << 30 }));
    const gzSize = statSync(gz).size;
    const gzipDc: number[] = [];
    const clip: number[] = [];
    const native: number[] = [];
    const gzipCpu: number[] = [];
    const clipCpu: number[] = [];
    let indexBytes = 0;
    const layer = layerFromFile(gz, diffId);
    for (let round = 0; round < ROUNDS; round++) {
      const g0 = childCpu();
      gzipDc.push(time(() => spawnSync('sh', ['-c', `gzip -dc '${gz}' > /dev/null`]))[1]);
      gzipCpu.push(childCpu() - g0);
      const c0 = ownCpu();
      const [built, t] = await timeAsync(() => indexLayers(testImage(), [layer]));
      clipCpu.push(ownCpu() - c0);
      clip.push(t);
      indexBytes = built.index.length;
      native.push((await timeAsync(() => nativePass(gz)))[1]);
    }
    const mbps = (s: number) => (tar.length / MB / s).toFixed(0);
    const g = median(gzipDc);
    const c = median(clip);
    const n = median(native);
    const gc = median(gzipCpu);
    const cc = median(clipCpu);
    rows.push([
      `gzip -${level} (${(gzSize / MB).toFixed(1)} MB -> ${(tar.length / MB).toFixed(1)} MB)`,
      `${mbps(g)} MB/s (${g.toFixed(2)} s)`,
      `${mbps(c)} MB/s (${c.toFixed(2)} s)`,
      `**${(g / c).toFixed(2)}x**`,
      `${gc.toFixed(2)} s / ${cc.toFixed(2)} s`,
      `${mbps(n)} MB/s (${n.toFixed(2)} s)`,
    ]);
    results[`gzip${level}`] = {
      gz_bytes: gzSize, gzip_dc_s: g, clip_index_s: c, native_pass_s: n, gzip_dc_cpu_s: gc, clip_index_cpu_s: cc, index_bytes: indexBytes,
      rounds: { gzip_dc_s: gzipDc, clip_index_s: clip },
    };

    const MiB = 1024 * 1024;
    const placements: Array<{ name: string; opts: IndexLayersOptions }> = [
      { name: 'by file size, 32 KiB .. 1 MiB, 1 % budget (default)', opts: {} },
      { name: 'by file size, 32 KiB .. 1 MiB, 2 % budget', opts: { indexBudget: 0.02 } },
      { name: 'uniform 1 MiB', opts: { span: MiB, minSpan: MiB } },
      { name: 'uniform 256 KiB', opts: { span: MiB / 4, minSpan: MiB / 4 } },
      { name: 'uniform 4 MiB', opts: { span: 4 * MiB, minSpan: 4 * MiB } },
      { name: 'uniform 1 MiB, windows not pruned', opts: { span: MiB, minSpan: MiB, pruneWindows: false } },
    ];
    for (const { name, opts } of placements) {
      const built = await indexLayers(testImage(), [layerFromFile(gz, diffId)], opts);
      const idx = ClipIndex.fromBuffer(built.index);
      const spans = idx.layers[0]?.spans ?? [];
      sizeRows.push([
        `gzip -${level}`,
        name,
        built.spans,
        spans.filter((sp) => sp.windowLength === 0).length,
        `${(built.index.length / 1024).toFixed(0)} KiB`,
        `${((100 * built.index.length) / gzSize).toFixed(2)} %`,
      ]);
    }
  }
  printTable('index build (MB/s of uncompressed output)', rows.map((r) => r.map(String)));
  printTable('index size', sizeRows.map((r) => r.map(String)));

  // opening a 50k-file index
  const entries = [];
  for (let d = 0; d < 100; d++) for (let f = 0; f < 500; f++) entries.push({ name: `usr/lib/python3/pkg${d}/mod_${f}.py`, data: `# ${d} ${f}\n` });
  const t50 = writeTar(entries);
  const big = await indexLayers(testImage(), [
    { digest: sha256(t50), mediaType: MEDIA.none, size: t50.length, diffId: sha256(t50), open: async () => (async function* () { yield t50; })() },
  ]);
  const loads: number[] = [];
  const lookups: number[] = [];
  for (let i = 0; i < 7; i++) {
    const [idx, t] = time(() => ClipIndex.fromBuffer(big.index));
    loads.push(t * 1000);
    const r = new ClipReader(idx);
    const t0 = performance.now();
    for (let k = 0; k < 1000; k++) await r.stat(`/usr/lib/python3/pkg${k % 100}/mod_${(k * 7) % 500}.py`);
    lookups.push(performance.now() - t0);
  }
  const loadMs = median(loads);
  const lookupMs = median(lookups);
  results.index_50k = { inodes: ClipIndex.fromBuffer(big.index).inodeCount, bytes: big.index.length, load_ms: loadMs, stat_ms: lookupMs };
  writeResult('clip-build', results);

  const loadEnd = loadavg()[0] ?? NaN;
  writeSection(
    'clip-build',
    `## Index build (\`npx tsx bench/clip-build.ts\`)

Layer: the Debian bookworm root filesystem with python3 (debootstrap minbase, ${(tar.length / MB).toFixed(0)} MB of tar),
compressed with GNU gzip at two levels. Medians of ${ROUNDS} rounds, all in the same run; 1-minute load
average ${loadStart.toFixed(1)} at the start and ${loadEnd.toFixed(1)} at the end (2 cores, shared with other sessions).
"clip index" is the whole build as \`cryo clip index\` runs it (the executor runs the same build
on its index thread): zlib through clip's addon stopped at every deflate block boundary (Z_BLOCK; the
bit offset is zlib's data_type), checkpoints placed by file size (each candidate resumed once to see
whether it needs a window; windows pruned in the addon and deflated), sha256 of the blob, the diff
and every span (on a second thread), tar parse, merge and index write. "native pass" is Node's zlib
gunzip + sha256 + tar parse on one thread and nothing else. "CPU" is the CPU time (user + system)
of \`gzip -dc\` and of the whole build, every thread: on a busy machine a session gets a share of the
cores whatever its thread count (the kernel's autogroups), and when that share is one core or
less the wall-time ratio tends to the CPU ratio; with two idle cores the build's two threads run
side by side.

${mdTable(['layer', 'gzip -dc > /dev/null', 'clip index', 'clip / gzip', 'CPU: gzip -dc / clip index', 'native pass'], rows)}

Target: clip index >= 0.9x of \`gzip -dc\`.

### Index size (share of the compressed image)

${mdTable(['layer', 'checkpoints', 'spans', 'of which windowless', 'index', '% of compressed'], sizeRows)}

Target: <= 1 % by default. Windows are pruned to the bytes the next 32 KiB of output reference
(marker dictionaries) and deflated; a checkpoint whose next 32 KiB reference nothing before it
stores no window at all. Placement by file size: see libs/clip/README.md ("Checkpoints") and
bench/clip-small-files.ts for what it buys.

### Opening a 50k-file index

${big.index.length} bytes, ${results.index_50k ? (results.index_50k as { inodes: number }).inodes : 0} inodes: open (checksum + inflate + table views) **${loadMs.toFixed(1)} ms**
(median of 7); 1000 cold \`stat\` lookups ${lookupMs.toFixed(1)} ms.`,
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}
