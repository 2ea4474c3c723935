#!/usr/bin/env bash
# The start command: a working cryo on this machine. Installs what is missing, starts a Docker
# engine if none runs, a local registry (Debian's docker-registry on 127.0.0.1:5001), the cryo
# server (SQLite in .cryo/) and one local executor. Ctrl-C stops what this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

STATE=.cryo
mkdir -p "$STATE"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

docker_up() { curl -sf --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1; }
if ! docker_up; then
  echo "start: starting dockerd (log: $STATE/dockerd.log)"
  dockerd >"$STATE/dockerd.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do docker_up && break; sleep 0.2; done
  docker_up || { echo "start: dockerd did not come up; see $STATE/dockerd.log" >&2; exit 1; }
fi

REGISTRY_PORT=${CRYO_REGISTRY_PORT:-5001}
if ! curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/" >/dev/null 2>&1; then
  mkdir -p "$STATE/registry/data"
  cat >"$STATE/registry/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $PWD/$STATE/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
YAML
  echo "start: starting registry on 127.0.0.1:$REGISTRY_PORT (log: $STATE/registry.log)"
  docker-registry serve "$STATE/registry/config.yml" >"$STATE/registry.log" 2>&1 &
  pids+=($!)
fi

# The executor token is a secret shared by server and executor: made once, kept 0600.
if [ ! -s "$STATE/executor-token" ]; then
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/executor-token")
fi
export CRYO_EXECUTOR_TOKEN
CRYO_EXECUTOR_TOKEN=$(cat "$STATE/executor-token")
export CRYO_REGISTRY_URL="127.0.0.1:$REGISTRY_PORT"

echo "start: cryo server on http://127.0.0.1:8900 (log: $STATE/server.log)"
node apps/server/bin/cryo-server.js --config configs/server-config.yaml >"$STATE/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8900/healthz >/dev/null 2>&1 && break; sleep 0.2; done
curl -sf http://127.0.0.1:8900/healthz >/dev/null || { echo "start: server did not come up; see $STATE/server.log" >&2; tail -20 "$STATE/server.log" >&2; exit 1; }

echo "start: executor (log: $STATE/executor.log)"
node apps/executor/bin/cryo-executor.js --config configs/dataplane-config.yaml >"$STATE/executor.log" 2>&1 &
pids+=($!)

echo "start: cryo is up. Try: npx cryo executors list; npx cryo sandboxes create IMAGE -- sh"
echo "start: press Ctrl-C to stop"
wait -n "${pids[@]}" || true
echo "start: a process exited; stopping the rest (see logs in $STATE/)" >&2
