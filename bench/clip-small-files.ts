/**
 * What reading small files costs, with uniform 1 MiB spans and with checkpoints placed by file
 * size (checkpoint-plan.ts): index size as a share of the compressed layer, compressed bytes
 * fetched per cold read of one small file (a fresh reader per file: no memory, no disk cache),
 * and the bytes a real `python3 -c 'import numpy'` pulls through a FUSE mount of the image
 * (chroot into the mount; the source counts every range request).
 *
 *   npx tsx bench/clip-small-files.ts [files-per-class]
 *
 * Image: the Debian bookworm + python3 + numpy root filesystem of bench/large-image.ts
 * (/var/tmp/cryo-test-cache/debian-bookworm-python3-large.tar, built by bench/lazy-restore.ts or bench/zone-cache.ts), gzip -6.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import { ClipIndex, ClipReader, MemoryLayerSource, indexLayers, type LayerSource } from '@cryo/clip';
import { mountClip } from '@cryo/clip/fuse';
import { prng } from '../libs/clip/src/testing/data';
import { MEDIA, sha256, testImage } from '../libs/clip/src/testing/fixtures';
import { mdTable, regularFiles, writeSection } from './clip-report';
import { LARGE_TAR } from './large-image';
import { percentile, printTable, writeResult } from './report';

const PER_CLASS = Number(process.argv[2] ?? 300);
if (!existsSync(LARGE_TAR)) {
  console.error(`${LARGE_TAR} is missing: run bench/lazy-restore.ts or bench/zone-cache.ts once (they build the image, bench/large-image.ts), then this bench`);
  process.exit(2);
}
const work = mkdtempSync(join(tmpdir(), 'clip-small-bench-'));
const MB = 1e6;
const execFileAsync = promisify(execFile);

class CountingSource implements LayerSource {
  requests = 0;
  bytes = 0;
  constructor(private readonly inner: LayerSource) {}
  async readRange(digest: string, start: number, end: number, size?: number): Promise<Buffer> {
    this.requests++;
    const b = await this.inner.readRange(digest, start, end, size);
    this.bytes += b.length;
    return b;
  }
  openStream(digest: string): Promise<AsyncIterable<Buffer>> {
    return this.inner.openStream(digest);
  }
}


function sample<T>(items: T[], n: number, seed: number): T[] {
  const rnd = prng(seed);
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy.slice(0, n);
}

/** `python3 -c 'import numpy'` chrooted into a FUSE mount of the index: bytes and requests it costs */
async function importNumpy(indexFile: string, source: LayerSource): Promise<{ requests: number; bytes: number; served: number; spans: number; ms: number }> {
  const counting = new CountingSource(source);
  const mnt = join(work, `mnt-${Date.now()}`);
  const mount = await mountClip(indexFile, mnt, { source: counting });
  try {
    const t0 = performance.now();
    // async: this process serves the mount, its event loop must keep running
    await execFileAsync('/usr/sbin/chroot', [mnt, '/usr/bin/python3', '-c', 'import numpy; print(numpy.__version__)'], {
      env: { PATH: '/usr/bin:/bin', HOME: '/root', LANG: 'C.UTF-8' },
      timeout: 300_000,
    });
    const ms = performance.now() - t0;
    const { fs, fetch } = mount.stats();
    return { requests: counting.requests, bytes: counting.bytes, served: fs.bytesRead, spans: fetch.spansFetched, ms };
  } finally {
    await mount.unmount();
  }
}

try {
  const tar = readFileSync(LARGE_TAR);
  const gzFile = join(work, 'layer.tar.gz');
  execFileSync('sh', ['-c', `gzip -6 -n -c '${LARGE_TAR}' > '${gzFile}'`]);
  const blob = readFileSync(gzFile);
  const digest = sha256(blob);
  const source = new MemoryLayerSource(new Map([[digest, blob]]));
  const load = loadavg()[0]?.toFixed(1) ?? '?';
  const configs = [
    { name: 'uniform 1 MiB spans (before)', opts: { span: 1 << 20, minSpan: 1 << 20 } },
    { name: 'by file size: 32 KiB .. 1 MiB, 1 % budget (after)', opts: { span: 1 << 20, minSpan: 32 << 10 } },
  ];
  const sizeRows: Array<Array<string | number>> = [];
  const readRows: Array<Array<string | number>> = [];
  const numpyRows: Array<Array<string | number>> = [];
  const results: Record<string, unknown> = { tar_bytes: tar.length, gz_bytes: blob.length, load };
  for (const [ci, cfg] of configs.entries()) {
    const built = await indexLayers(
      testImage(),
      [{ digest, mediaType: MEDIA.gzip, size: blob.length, diffId: sha256(tar), open: async () => (async function* () {
        for (let p = 0; p < blob.length; p += 1 << 20) yield blob.subarray(p, p + (1 << 20));
      })() }],
      cfg.opts,
    );
    const index = ClipIndex.fromBuffer(built.index);
    const indexFile = join(work, `index-${ci}.clip`);
    writeFileSync(indexFile, built.index);
    const spans = index.layers[0]?.spans ?? [];
    results.inodes = index.inodeCount;
    sizeRows.push([cfg.name, spans.length, `${(built.index.length / 1024).toFixed(0)} KiB`, `${((100 * built.index.length) / blob.length).toFixed(2)} %`]);

    const files = regularFiles(index).filter((f) => f.size > 0);
    const cls = [
      { label: 'files < 16 KiB', pick: files.filter((f) => f.size < 16 << 10) },
      { label: 'files 16-64 KiB', pick: files.filter((f) => f.size >= 16 << 10 && f.size < 64 << 10) },
      { label: 'files 64-256 KiB', pick: files.filter((f) => f.size >= 64 << 10 && f.size < 256 << 10) },
    ];
    const perClass: Record<string, unknown> = {};
    for (const c of cls) {
      const fetched: number[] = [];
      let fileBytes = 0;
      for (const f of sample(c.pick, PER_CLASS, 7)) {
        const src = new CountingSource(source);
        const reader = new ClipReader(index, { source: src });
        await reader.readFile(f.path);
        fetched.push(src.bytes);
        fileBytes += f.size;
      }
      const mean = fetched.reduce((a, b) => a + b, 0) / fetched.length;
      readRows.push([cfg.name, c.label, fetched.length, `${(fileBytes / fetched.length / 1024).toFixed(1)} KiB`, `${(mean / 1024).toFixed(0)} KiB`, `${(percentile(fetched, 50) / 1024).toFixed(0)} / ${(percentile(fetched, 90) / 1024).toFixed(0)} KiB`]);
      perClass[c.label] = { n: fetched.length, mean_file: fileBytes / fetched.length, mean_fetched: mean, p50: percentile(fetched, 50), p90: percentile(fetched, 90) };
    }
    const numpy = await importNumpy(indexFile, source);
    numpyRows.push([cfg.name, numpy.requests, numpy.spans, `${(numpy.bytes / MB).toFixed(1)} MB`, `${(numpy.served / MB).toFixed(1)} MB`, `${(numpy.ms / 1000).toFixed(2)} s`]);
    results[`config${ci}`] = { name: cfg.name, spans: spans.length, index_bytes: built.index.length, reads: perClass, import_numpy: numpy };
  }
  const loadEnd = loadavg()[0]?.toFixed(1) ?? '?';
  results.load_end = loadEnd;
  printTable('index size', sizeRows.map((r) => r.map(String)));
  printTable('cold read of one small file', readRows.map((r) => r.map(String)));
  printTable('import numpy through FUSE', numpyRows.map((r) => r.map(String)));
  writeResult('clip-small-files', results);
  writeSection(
    'clip-small-files',
    `## Small files (\`npx tsx bench/clip-small-files.ts ${PER_CLASS}\`)

Image: Debian bookworm + python3 + numpy (bench/large-image.ts), ${(tar.length / MB).toFixed(0)} MB of tar,
gzip -6: ${(blob.length / MB).toFixed(1)} MB, ${results.inodes} inodes. Both indexes built from the same blob in the same run;
1-minute load average ${load} at the start and ${loadEnd} at the end (2 cores, shared with other sessions).

### Index size

${mdTable(['checkpoints', 'spans', 'index', '% of compressed'], sizeRows)}

### One cold read of one small file

A fresh reader per file (nothing in memory, no disk cache), the whole file read; ${PER_CLASS} files drawn at
random per size class. "fetched" is the compressed bytes of the range request(s): the span(s)
holding the file.

${mdTable(['checkpoints', 'files', 'n', 'mean file', 'fetched, mean', 'fetched, p50 / p90'], readRows)}

### \`python3 -c 'import numpy'\` through a FUSE mount

\`chroot\` into a clip FUSE mount of the index (mountClip, memory cache only, blob served from memory
through a counting source). "served by FUSE" is what the kernel asked the mount for (the program's
reads plus kernel readahead).

${mdTable(['checkpoints', 'range requests', 'spans', 'fetched (compressed)', 'served by FUSE', 'time'], numpyRows)}`,
  );
} finally {
  spawnSync('sh', ['-c', `grep -o '${work}/mnt-[0-9]*' /proc/mounts | xargs -r -n1 fusermount -uz`]);
  rmSync(work, { recursive: true, force: true });
}

