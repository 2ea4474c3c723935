/**
 * Issue 8 item 9: a newcomer gets through the README. `npm start` (scripts/start.sh, as it is)
 * builds the demo image from Debian packages and pushes it to its registry, and the README's
 * walkthrough block, read from README.md, runs with the real CLI: create, exec, snapshot, restore
 * eager and lazy, exec. Only the addresses differ, so that this instance runs beside others: the
 * test gives start.sh its own state dir, ports and Docker engine, points the CLI at its server
 * (CRYO_SERVER) and writes its registry address where the README says 127.0.0.1:5001.
 *
 * Then start.sh is stopped and must leave the machine as it found it: no engine, bridge, mount or
 * process of its own, and the machine's links, addresses, iptables rules and ip_forward unchanged.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { sampleValue, scrapeMetrics } from './support/metrics';
import { CryoClient } from '@cryo/cli';
import { CACHE_DIR } from './support/images';
import { REPO_ROOT, freePort, waitFor } from './support/processes';

const README_REGISTRY = '127.0.0.1:5001';

/** The sh block after `<!-- walkthrough -->` in README.md, as lines. */
function walkthroughBlock(readme: string): string[] {
  const match = /<!-- walkthrough -->\s*```sh\n([\s\S]*?)\n```/.exec(readme);
  if (match?.[1] === undefined) throw new Error('README.md has no ```sh block after <!-- walkthrough -->');
  return match[1].split('\n').filter((line) => line.trim() !== '');
}

const shQuote = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`;

/**
 * The block as a bash script that stops at the first failing line, and checks every line that
 * ends in `# -> TEXT` printed exactly TEXT.
 */
function walkthroughScript(lines: string[], registry: string): string {
  const out = ['set -euo pipefail'];
  lines.forEach((raw, i) => {
    const line = raw.replaceAll(README_REGISTRY, registry);
    const expected = /^(.*?)\s+# -> (.*)$/.exec(line);
    out.push(`echo "+ README line ${i + 1}: "${shQuote(line)} >&2`);
    if (expected === null) {
      out.push(line);
      return;
    }
    const [, command = '', text = ''] = expected;
    out.push(`__out=$(${command})`, 'printf "%s\\n" "$__out"',
      `[ "$__out" = ${shQuote(text)} ] || { echo "README line ${i + 1} printed \\"$__out\\", the README says ${shQuote(text).replaceAll('"', '\\"')}" >&2; exit 1; }`);
  });
  return out.join('\n');
}

interface MachineNetwork { links: string[]; iptables: string; ipForward: string }

/** What start.sh must leave as it found it. cryobrN bridges are left out: other runs make and delete theirs. */
function machineNetwork(): MachineNetwork {
  const links = (JSON.parse(execFileSync('ip', ['-j', 'addr', 'show'], { encoding: 'utf8' })) as Array<{ ifname: string; addr_info?: Array<{ local: string; prefixlen: number }> }>)
    .filter((l) => !/^cryobr\d+$/.test(l.ifname))
    .map((l) => `${l.ifname} ${(l.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`).sort().join(' ')}`)
    .sort();
  let iptables = '';
  try {
    iptables = execFileSync('iptables-save', { encoding: 'utf8' }).split('\n')
      .filter((l) => !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]/, '')).join('\n');
  } catch { /* no iptables on this machine */ }
  return { links, iptables, ipForward: readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim() };
}

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(dir));
}

/** Processes other than start.sh itself whose command line names the state dir. */
function processesUsing(dir: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let args = '';
    try { args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' '); } catch { continue; }
    if (args.includes(dir)) found.push(`${pid} ${args}`);
  }
  return found;
}

const dir = mkdtempSync('/var/tmp/cryo-readme-');
const stateDir = join(dir, 'state');
let start: ChildProcess | undefined;
let output = '';
let serverUrl = '';
let registry = '';
let executorMetricsPort = 0;
let before: MachineNetwork;

async function stopStart(): Promise<void> {
  if (start === undefined || start.exitCode !== null || start.signalCode !== null) return;
  const exited = new Promise((resolve) => start?.once('exit', resolve));
  start.kill('SIGTERM');
  await exited;
}

beforeAll(async () => {
  before = machineNetwork();
  const [serverPort, registryPort] = [await freePort(), await freePort()];
  executorMetricsPort = await freePort();
  serverUrl = `http://127.0.0.1:${serverPort}`;
  registry = `127.0.0.1:${registryPort}`;
  start = spawn('bash', ['scripts/start.sh'], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      CRYO_STATE_DIR: stateDir,
      CRYO_SERVER_PORT: String(serverPort),
      CRYO_REGISTRY_PORT: String(registryPort),
      CRYO_EXECUTOR_METRICS_PORT: String(executorMetricsPort),
      CRYO_DOCKER_HOST: 'own',
      // The root filesystem tarball is shared with other test runs (built once per machine).
      CRYO_CACHE_DIR: CACHE_DIR,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  for (const stream of [start.stdout, start.stderr]) stream?.on('data', (b: Buffer) => { output += b.toString(); });
  await waitFor('npm start to say "cryo is up"', async () => {
    if (start?.exitCode !== null) throw new Error(`start.sh exited ${String(start?.exitCode)}:\n${output}`);
    return output.includes('start: cryo is up') ? true : undefined;
  }, 600_000, 500).catch((err: unknown) => {
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n--- start.sh said:\n${output}`);
  });
}, 660_000);

afterAll(async () => {
  // Whatever a failed walkthrough left running (lazy sandboxes outlive their executor).
  if (serverUrl !== '') {
    const client = new CryoClient({ server: serverUrl });
    const left = await client.listAllSandboxes().catch(() => []);
    for (const sb of left.filter((s) => s.status !== 'terminated')) {
      await client.deleteSandbox(sb.sandbox_id).catch(() => undefined);
      await client.waitForSandbox(sb.sandbox_id, { until: ['terminated'], timeoutMs: 60_000 }).catch(() => undefined);
    }
  }
  await stopStart();
  if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
});

describe('the README walkthrough against npm start', () => {
  it('npm start prints the demo image, built from Debian packages and pushed to its own registry', async () => {
    const image = `${registry}/cryo/demo:bookworm`;
    expect(output).toContain(`start: demo image ${image}\n`);
    const res = await fetch(`http://${registry}/v2/cryo/demo/manifests/bookworm`, {
      headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' },
    });
    expect(res.status).toBe(200);
  });

  it('runs README.md\'s walkthrough verbatim: create, exec, snapshot, restore eager and lazy, exec', async () => {
    const lines = walkthroughBlock(readFileSync(join(REPO_ROOT, 'README.md'), 'utf8'));
    // What the walkthrough must show a newcomer; a README that drops a step fails here.
    for (const step of [/sandboxes create .*cryo\/demo/, /sandboxes exec .*python3/, /snapshots create /,
      /snapshots restore (?!.*--mode lazy)/, /snapshots restore .*--mode lazy/, /sandboxes exec \$EAGER/, /sandboxes exec \$LAZY/]) {
      expect(lines.some((l) => step.test(l)), `the walkthrough has a line matching ${step}`).toBe(true);
    }
    const script = walkthroughScript(lines, registry);
    let stdout = '';
    let stderr = '';
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn('bash', ['-c', script], { cwd: REPO_ROOT, env: { ...process.env, CRYO_SERVER: serverUrl }, stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
      child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
      child.once('exit', resolve);
    });
    expect({ code, stderr }).toEqual({ code: 0, stderr: expect.any(String) as string });
    expect(stdout).toContain('45\nwritten before the snapshot\nwritten before the snapshot\n');
    // The two restores ran in the modes the README says.
    const sandboxes = await new CryoClient({ server: serverUrl }).listAllSandboxes();
    expect(sandboxes.map((s) => s.restore_mode).sort()).toEqual(['eager', 'lazy', null]);
    expect(sandboxes.every((s) => s.status === 'terminated')).toBe(true);
  });

  it('the executor of npm start serves its metrics, which counted the walkthrough\'s restores', async () => {
    expect(output).toContain(`metrics on http://127.0.0.1:${executorMetricsPort}/metrics`);
    const text = await scrapeMetrics(`http://127.0.0.1:${executorMetricsPort}/metrics`);
    expect(sampleValue(text, 'process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(sampleValue(text, 'cryo_executor_restore_to_running_seconds_count', { mode: 'eager' })).toBe(1);
    expect(sampleValue(text, 'cryo_executor_restore_to_running_seconds_count', { mode: 'lazy' })).toBe(1);
    expect(sampleValue(text, 'clip_first_exec_ms_count')).toBe(1);
  });

  it('stopping npm start leaves the machine as it was: no engine, bridge, mount or process of its own, network unchanged', async () => {
    const bridge = /bridge (cryobr\d+) /.exec(output)?.[1];
    const socket = /own Docker engine on unix:\/\/(\S+)/.exec(output)?.[1];
    expect(bridge).toBeDefined();
    expect(socket).toBeDefined();
    await stopStart();
    expect(start?.exitCode === 0 || start?.exitCode === 130 || start?.signalCode === 'SIGTERM').toBe(true);
    // The engine's exec root (its socket's dir) holds containerd's config: no process may name either.
    const execRoot = dirname(socket ?? '/nonexistent/x');
    const leftovers = (): string[] => [...processesUsing(stateDir), ...processesUsing(execRoot)];
    await waitFor('start.sh\'s processes to end', async () => (leftovers().length === 0 ? true : undefined), 30_000)
      .catch(() => undefined);
    expect(leftovers()).toEqual([]);
    expect(mountsUnder(dir)).toEqual([]);
    expect(existsSync(execRoot)).toBe(false);
    const links = (JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })) as Array<{ ifname: string }>).map((l) => l.ifname);
    expect(links).not.toContain(bridge);
    expect(machineNetwork()).toEqual(before);
  });
});
