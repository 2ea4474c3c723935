/**
 * `cryo clip index|ls|stat|cat|info|verify`: build an index-only archive of an
 * image straight from its registry, and look into it. Reading file contents
 * goes to the registry recorded in the index (lazily, span by span).
 */
import { writeFile, rename } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import {
  ClipIndex,
  ClipReader,
  RegistryLayerSource,
  S_IFLNK,
  S_IFMT,
  buildIndex,
  displayName,
  nameFromText,
  parsePlatform,
  registryClient,
  verifyIndex,
  type ClipStat,
} from '@cryo/clip';
import {
  RegistryAccessSettingsSchema,
  loadConfigFile,
  registryAccess as accessUnderPolicy,
  resolveCredentials,
  type RegistryCredentials,
} from '@cryo/registry-auth';
import type { Command } from 'commander';
import { z } from 'zod';
import { ProgressLine } from '../progress';
import { humanBytes, infoText, lsLine, statText } from './format';

interface RegistryFlags {
  username?: string;
  passwordStdin?: boolean;
  insecure?: boolean;
  registryConfig?: string;
}

/** The registry keys of a cryo config file (server or executor); its other keys are not ours to check. */
const RegistryConfigFile = z.looseObject(RegistryAccessSettingsSchema.shape);

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(String(c)));
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

/**
 * Credentials and scheme for `host`: --username with the password from stdin or
 * CRYO_REGISTRY_PASSWORD; else cryo's registry policy (@cryo/registry-auth registryAccess) over
 * the `snapshot_registry` and `docker_config` of --registry-config, else Docker's config.json.
 * --insecure forces plain http.
 */
async function registryAccess(host: string, flags: RegistryFlags): Promise<{ credentials: RegistryCredentials | undefined; insecure: boolean }> {
  const file = flags.registryConfig === undefined ? {} : loadConfigFile(flags.registryConfig, RegistryConfigFile);
  const access = await accessUnderPolicy(host, {
    ...(file.snapshot_registry === undefined ? {} : { snapshot_registry: file.snapshot_registry }),
    ...(file.docker_config === undefined ? {} : { docker_config: file.docker_config }),
  });
  const insecure = flags.insecure ?? access.insecure;
  if (flags.username === undefined) return { credentials: access.credentials, insecure };
  const password = flags.passwordStdin === true ? await readStdin() : process.env.CRYO_REGISTRY_PASSWORD;
  return { credentials: await resolveCredentials(host, { explicit: { username: flags.username, password } }), insecure };
}

function registryOptions(cmd: Command): Command {
  return cmd
    .option('--username <user>', 'registry user (password from --password-stdin or env CRYO_REGISTRY_PASSWORD)')
    .option('--password-stdin', 'read the registry password from standard input')
    .option('--registry-config <file>', 'reach registries as a cryo config file says (its snapshot_registry block and docker_config)')
    .option('--insecure', 'plain http to the registry (default for loopback addresses)');
}

function jsonWanted(cmd: Command): boolean {
  return cmd.optsWithGlobals<{ json?: boolean }>().json === true;
}

function out(s: string): void {
  process.stdout.write(s);
}

/**
 * Text holding file names, which are byte strings (@cryo/clip's names.ts): written as their
 * bytes, as ls(1) does, so a name that is not UTF-8 reaches stdout exactly as it is in the image.
 */
function outNames(s: string): void {
  process.stdout.write(Buffer.from(s, 'latin1'));
}

function statJson(st: ClipStat): Record<string, unknown> {
  return { ...st, mode_octal: (st.mode & 0o7777).toString(8).padStart(4, '0') };
}

async function registrySource(index: ClipIndex, flags: RegistryFlags): Promise<RegistryLayerSource> {
  const host = index.image.registry;
  return new RegistryLayerSource(registryClient(host, await registryAccess(host, flags)), index.image.repository);
}

function defaultCacheDir(): string {
  return process.env.CRYO_CLIP_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'cryo', 'clip');
}

export function registerClipCommands(program: Command): void {
  const clip = program
    .command('clip')
    .description('index-only archives of images (clip v2): build, inspect, read lazily from the registry, verify');

  registryOptions(
    clip
      .command('index <ref>')
      .description('build the index of an image straight from its registry (the tag is pinned to its manifest digest)')
      .requiredOption('-o, --output <file>', 'where to write the index')
      .option('--span <bytes>', 'uncompressed bytes between gzip checkpoints', (v) => Number(v), 1024 * 1024)
      .option('--platform <os/arch[/variant]>', 'platform to pick from an image index', 'linux/amd64'),
  ).action(async (ref: string, opts: RegistryFlags & { output: string; span: number; platform: string; quiet?: boolean }, cmd: Command) => {
    const { parseImageReference } = await import('@cryo/oci');
    const host = parseImageReference(ref).host;
    const access = await registryAccess(host, opts);
    const quiet = cmd.optsWithGlobals<{ quiet?: boolean }>().quiet === true;
    const progress = new ProgressLine(process.stderr, !quiet);
    const started = Date.now();
    let lastDraw = 0;
    const result = await buildIndex(ref, {
      ...access,
      span: opts.span,
      platform: parsePlatform(opts.platform),
      onProgress: (p) => {
        const now = Date.now();
        if (now - lastDraw < 200 && p.bytesDone < p.bytesTotal) return;
        lastDraw = now;
        const pct = p.bytesTotal > 0 ? p.bytesDone / p.bytesTotal : 1;
        const bar = '#'.repeat(Math.round(pct * 30)).padEnd(30, '.');
        progress.update(
          `[${bar}] ${(pct * 100).toFixed(0).padStart(3)}% ${humanBytes(p.bytesDone)}/${humanBytes(p.bytesTotal)} layer ${p.layer + 1}/${p.layers}`,
        );
      },
    });
    progress.finish();
    const tmp = `${opts.output}.tmp-${process.pid}`;
    await writeFile(tmp, result.index);
    await rename(tmp, opts.output);
    const secs = (Date.now() - started) / 1000;
    const pct = (100 * result.index.length) / Math.max(1, result.compressedSize);
    if (jsonWanted(cmd)) {
      out(
        JSON.stringify({
          output: opts.output,
          manifest_digest: result.image.manifestDigest,
          files: result.files,
          spans: result.spans,
          index_bytes: result.index.length,
          image_bytes: result.compressedSize,
          uncompressed_bytes: result.uncompressedSize,
          seconds: secs,
        }) + '\n',
      );
    } else if (!quiet) {
      out(
        `${opts.output}: ${result.image.reference} pinned to ${result.image.manifestDigest}\n` +
          `  ${result.files} entries, ${result.spans} spans, index ${humanBytes(result.index.length)} = ${pct.toFixed(2)} % of ${humanBytes(result.compressedSize)}, ${secs.toFixed(1)} s\n`,
      );
    }
  });

  clip
    .command('ls <file> [dir]')
    .description('list a directory of the image (from the index alone)')
    .action(async (file: string, dir: string | undefined, _opts: unknown, cmd: Command) => {
      const reader = new ClipReader(await ClipIndex.load(file));
      const path = nameFromText(dir ?? '/');
      const entries = await reader.readdirEntries(path);
      const rows = await Promise.all(
        entries.map(async (e) => {
          const child = `${path.replace(/\/+$/, '')}/${e.name}`;
          const st = await reader.stat(child);
          const target = (st.mode & S_IFMT) === S_IFLNK ? await reader.readlink(child) : undefined;
          return { name: e.name, st, target };
        }),
      );
      if (jsonWanted(cmd)) {
        const json = rows.map((r) => ({ name: displayName(r.name), ...statJson(r.st), ...(r.target !== undefined ? { target: displayName(r.target) } : {}) }));
        out(JSON.stringify(json) + '\n');
      } else {
        outNames(rows.map((r) => lsLine(r.name, r.st, r.target)).join('\n') + (rows.length ? '\n' : ''));
      }
    });

  clip
    .command('stat <file> <path>')
    .description('metadata of one path in the image (symlinks not followed)')
    .action(async (file: string, pathText: string, _opts: unknown, cmd: Command) => {
      const reader = new ClipReader(await ClipIndex.load(file));
      const path = nameFromText(pathText);
      const st = await reader.stat(path);
      const target = (st.mode & S_IFMT) === S_IFLNK ? await reader.readlink(path) : undefined;
      const xattrs = await reader.listxattr(path);
      if (jsonWanted(cmd)) {
        const json = { path: pathText, ...statJson(st), ...(target !== undefined ? { target: displayName(target) } : {}), xattrs: xattrs.map(displayName) };
        out(JSON.stringify(json) + '\n');
      } else {
        outNames(statText(path, st, target, xattrs));
      }
    });

  registryOptions(
    clip
      .command('cat <file> <path>')
      .description('print a file of the image, fetching only the spans it needs from the registry')
      .option('--stats', 'print on stderr, as JSON, the bytes and requests fetched from the registry')
      .option('--cache-dir <dir>', 'host cache of layer spans (default $CRYO_CLIP_CACHE or ~/.cache/cryo/clip)')
      .option('--no-cache', 'do not use the disk cache'),
  ).action(async (file: string, pathText: string, opts: RegistryFlags & { stats?: boolean; cacheDir?: string; cache: boolean }) => {
    const path = nameFromText(pathText);
    const index = await ClipIndex.load(file);
    const source = await registrySource(index, opts);
    try {
      const reader = new ClipReader(index, { source, ...(opts.cache ? { cacheDir: opts.cacheDir ?? defaultCacheDir() } : {}) });
      const st = await reader.stat(await reader.realpath(path));
      const chunk = 4 * 1024 * 1024;
      for (let off = 0; off < st.size; off += chunk) {
        const data = await reader.read(path, off, chunk);
        if (!process.stdout.write(data)) await once(process.stdout, 'drain');
      }
      if (st.size === 0) await reader.read(path, 0, 0); // still reports EISDIR and the like
      if (opts.stats) process.stderr.write(JSON.stringify(reader.stats) + '\n');
    } finally {
      await source.close();
    }
  });

  clip
    .command('info <file>')
    .description('image, layers, spans and the index size as a share of the image')
    .action(async (file: string, _opts: unknown, cmd: Command) => {
      const index = await ClipIndex.load(file);
      if (jsonWanted(cmd)) {
        out(
          JSON.stringify({
            image: index.image,
            build: index.build,
            inodes: index.inodeCount,
            index_format: index.formatVersion,
            index_bytes: index.fileSize,
            image_bytes: index.imageSize,
            index_percent: (100 * index.fileSize) / Math.max(1, index.imageSize),
            layers: index.layers.map((l) => ({ ...l, spans: l.spans.length })),
          }) + '\n',
        );
      } else {
        out(infoText(index));
      }
    });

  registryOptions(
    clip.command('verify <file>').description('read every layer once; check the blob digests, every span (from its own checkpoint) and every diff_id'),
  ).action(async (file: string, opts: RegistryFlags, cmd: Command) => {
    const index = await ClipIndex.load(file);
    const source = await registrySource(index, opts);
    const quiet = cmd.optsWithGlobals<{ quiet?: boolean }>().quiet === true;
    const progress = new ProgressLine(process.stderr, !quiet);
    try {
      const report = await verifyIndex(index, source, {
        onProgress: (p) => progress.update(`verifying layer ${p.layer + 1}/${p.layers} ${humanBytes(p.bytesDone)}/${humanBytes(p.bytesTotal)}`),
      });
      progress.finish();
      const spans = report.layers.reduce((n, l) => n + l.spans, 0);
      if (jsonWanted(cmd)) out(JSON.stringify({ ok: true, ...report }) + '\n');
      else out(`ok: ${report.layers.length} layers, ${spans} spans, ${humanBytes(report.bytes)} checked\n`);
    } finally {
      progress.finish();
      await source.close();
    }
  });
}
