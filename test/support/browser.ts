/**
 * Debian's Chromium (package chromium, installed by scripts/setup.sh) driven by playwright-core:
 * no browser download, a fresh profile per launch, and the flags that keep it off the network
 * (this machine's network is closed; without them Chromium keeps calling Google's hosts).
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { REPO_ROOT } from './processes';

export const CHROMIUM_BIN = '/usr/bin/chromium';

const CHROMIUM_FLAGS = [
  '--no-sandbox', // tests run as root
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Headless Chromium; `launch` gives it a new empty --user-data-dir, removed on close. */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM_BIN)) throw new Error(`${CHROMIUM_BIN} is missing: run scripts/setup.sh (Debian package chromium)`);
  return chromium.launch({ executablePath: CHROMIUM_BIN, headless: true, args: CHROMIUM_FLAGS });
}

/** A fresh folder for a suite's screenshots, kept after the run: .cryo/test-artifacts/NAME. */
export function artifactDir(name: string): string {
  const dir = join(REPO_ROOT, '.cryo', 'test-artifacts', name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}
