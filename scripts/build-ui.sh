#!/usr/bin/env bash
# Builds the web dashboard (apps/ui, Vite) into apps/ui/dist, which cryo-server serves at /ui.
# Cached: it rebuilds only when the dashboard's sources, the code it bundles from libs, or the
# lockfile changed since the last build (a hash of them is kept next to the build).
set -euo pipefail
cd "$(dirname "$0")/.."

dist=apps/ui/dist
stamp=$dist/.sources-sha256
want=$(
  { find apps/ui -path apps/ui/dist -prune -o -path apps/ui/node_modules -prune -o -type f -print
    echo libs/snapshot/src/naming.ts
    echo package-lock.json
  } | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1
)
if [ -f "$dist/index.html" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup: building the dashboard (apps/ui -> $dist)"
npm run build --silent -w @cryo/ui
echo "$want" > "$stamp"
