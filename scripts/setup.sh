#!/usr/bin/env bash
# Installs what cryo needs on a fresh Debian 12 machine: Docker engine, the distribution
# registry, FUSE, busybox-static and debootstrap (to build base images locally), Chromium (the
# dashboard's browser test), PostgreSQL (the tests start their own servers from its binaries),
# the npm packages, clip's two addons (FUSE, built from source so names cross it as bytes; inflate,
# for the gzip indexer) and its mount process bundle (esbuild), and the dashboard. Safe to run
# again: it only installs or builds what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(docker.io docker-registry fuse3 libfuse2 libfuse-dev pkg-config apache2-utils busybox-static debootstrap iproute2 pigz attr chromium postgresql)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm packages: reinstall when the lockfile changed since the last install.
stamp=node_modules/.cryo-lock-sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # `npm install`, not `npm ci`: this npm leaves other platforms' optional packages (turbo's
  # binaries) out of the lockfile and `npm ci` then refuses it; install keeps to the lockfile.
  echo "setup: installing npm packages"
  npm install --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

# clip's addons (libs/clip/native): the FUSE addon and the inflate addon the gzip indexer runs
# on; rebuilt when missing or when their sources changed.
addons=(libs/clip/native/build/Release/fuse.node libs/clip/native/inflate/build/Release/clip_inflate.node)
addon_stamp=libs/clip/native/build/.cryo-src-sha
addon_want=$(cat libs/clip/native/binding.gyp libs/clip/native/fuse-bytes.c libs/clip/native/inflate/binding.gyp libs/clip/native/inflate/clip-inflate.c node_modules/fuse-native/fuse-native.c | sha256sum | cut -d' ' -f1)
if [ ! -f "${addons[0]}" ] || [ ! -f "${addons[1]}" ] || [ ! -f "$addon_stamp" ] || [ "$(cat "$addon_stamp")" != "$addon_want" ]; then
  echo "setup: building clip's FUSE and inflate addons"
  npm run build:fuse -w @cryo/clip --silent
  echo "$addon_want" > "$addon_stamp"
fi

# clip's mount process, bundled ahead by esbuild so a lazy mount does not compile TypeScript at
# start: rebuilt when any file it was built from changed (libs/clip/src/fuse/mount-bundle.ts).
npm run build:mount -w @cryo/clip --silent

# The web dashboard served at /ui.
bash scripts/build-ui.sh
