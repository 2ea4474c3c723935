#!/usr/bin/env bash
# npm run bench [-- NAME...]: runs bench/NAME.ts (default: every benchmark). Results print as
# tables and are kept as JSON in bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=(snapshot flatten clip-build clip-small-files clip-read lazy-restore zone-cache fork reaper-latency reaper-latency-postgres heartbeat-under-load api-throughput)
fi
for n in "${names[@]}"; do
  echo "== bench $n"
  if [ "$n" = reaper-latency-postgres ]; then npx tsx apps/server/bench/reaper-latency.ts --postgres
  elif [ -f "apps/server/bench/$n.ts" ]; then npx tsx "apps/server/bench/$n.ts"; else npx tsx "bench/$n.ts"; fi
done
