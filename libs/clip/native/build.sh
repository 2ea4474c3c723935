#!/usr/bin/env bash
# Builds clip's two addons: libs/clip/native/build/Release/fuse.node (binding.gyp), fuse-native's C
# source with Latin-1 (byte) strings, linked against Debian's libfuse2 (needs libfuse-dev,
# pkg-config, a C compiler, make, python3), and inflate/build/Release/clip_inflate.node
# (inflate/binding.gyp), zlib for the gzip indexer (the zlib inside Node, no package). Each has a
# directory of its own: fuse-native's loader (node-gyp-build) takes the first addon it finds in one.
# Run through npm (`npm run build:fuse -w @cryo/clip`), which puts its node-gyp on PATH.
set -euo pipefail
cd "$(dirname "$0")"
# node-gyp downloads Node's headers unless told where they are (no internet here): use the
# headers installed with node when they are there.
prefix=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
args=()
[ -f "$prefix/include/node/node_api.h" ] && args+=("--nodedir=$prefix")
node-gyp rebuild "${args[@]}" --loglevel=warn
(cd inflate && node-gyp rebuild "${args[@]}" --loglevel=warn)
