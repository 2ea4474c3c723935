#!/usr/bin/env bash
# The start command: a working cryo on this machine. Installs what is missing, then starts
#  - a Docker engine, unless one runs: the machine's engine on /var/run/docker.sock is used as it
#    is; otherwise cryo starts its own (state in .cryo/docker, socket under /run/cryo-*, a bridge
#    of its own, no iptables rules), so the machine's docker0, firewall and Docker socket stay as
#    they are;
#  - a local registry (Debian's docker-registry on 127.0.0.1:5001, data in .cryo/registry);
#  - the demo image 127.0.0.1:5001/cryo/demo:bookworm (Debian + python3, built once from Debian
#    packages by scripts/demo-image.sh and pushed to that registry);
#  - with CRYO_ZONE_CACHE=1, a zone cache: a second docker-registry on 127.0.0.1:5002 run as a
#    pull-through cache of the local registry (data in .cryo/zone-cache), which the executor reads
#    layers from before the registry (clip.zone_cache);
#  - the cryo server (SQLite in .cryo/) and one local executor, run with configs/server-config.yaml
#    and configs/executor-config.yaml with the ports, paths and Docker host below set (the copies
#    it runs are written to .cryo/).
# Ctrl-C stops what this script started and deletes the bridge it made.
#
# Environment, e.g. to run a second one beside the first (the README walkthrough test does):
#   CRYO_STATE_DIR      logs, state and generated configs (default .cryo)
#   CRYO_SERVER_PORT    default 8900         CRYO_REGISTRY_PORT   default 5001
#   CRYO_EXECUTOR_METRICS_PORT  the executor's Prometheus metrics on 127.0.0.1 (default 8901; "off": none)
#   CRYO_DOCKER_HOST    unset: the machine's engine if it runs, else cryo's own; "own": always
#                       cryo's own engine; unix:///PATH: that engine
#   CRYO_CACHE_DIR      where the demo image's root filesystem is kept (default $CRYO_STATE_DIR/cache)
#   CRYO_ZONE_CACHE     1: start a zone cache too      CRYO_ZONE_CACHE_PORT default 5002
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

STATE=${CRYO_STATE_DIR:-.cryo}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
SERVER_PORT=${CRYO_SERVER_PORT:-8900}
REGISTRY_PORT=${CRYO_REGISTRY_PORT:-5001}
REGISTRY=127.0.0.1:$REGISTRY_PORT
ZONE_CACHE=127.0.0.1:${CRYO_ZONE_CACHE_PORT:-5002}
SERVER=http://127.0.0.1:$SERVER_PORT
EXECUTOR_METRICS_PORT=${CRYO_EXECUTOR_METRICS_PORT:-8901}
executor_metrics=()
if [ "$EXECUTOR_METRICS_PORT" != off ]; then executor_metrics=("metrics.listen=127.0.0.1:$EXECUTOR_METRICS_PORT"); fi

pids=()
bridge=""
exec_root=""
cleanup() {
  trap - EXIT INT TERM
  local i
  # Newest first: the executor, the server, the registry, then the engine (it stops its containers).
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  [ -z "$bridge" ] || bash scripts/engine-bridge.sh delete "$bridge"
  if [ -n "$exec_root" ]; then
    # A dockerd slow to stop can leave its netns/default mounted in the exec root.
    grep -o " $exec_root/[^ ]*" /proc/mounts | sort -r | xargs -r umount -l 2>/dev/null || true
    rm -rf "$exec_root" || true
  fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

fail() {
  echo "start: $1" >&2
  [ -z "${2:-}" ] || tail -20 "$2" >&2
  exit 1
}

# wait_for SECS COMMAND...: polls COMMAND every 0.2 s for up to SECS seconds.
wait_for() {
  local tries=$(($1 * 5)) _
  shift
  for _ in $(seq 1 "$tries"); do "$@" && return 0; sleep 0.2; done
  return 1
}

engine_up() { curl -sf --unix-socket "${1#unix://}" http://localhost/_ping >/dev/null 2>&1; }

# ---- Docker engine ---------------------------------------------------------------------------
DOCKER=${CRYO_DOCKER_HOST:-}
if [ -z "$DOCKER" ] && engine_up /var/run/docker.sock; then
  DOCKER=unix:///var/run/docker.sock
  echo "start: using the machine's Docker engine ($DOCKER)"
elif [ -z "$DOCKER" ] || [ "$DOCKER" = own ]; then
  bash scripts/engine-bridge.sh sweep
  claimed=$(bash scripts/engine-bridge.sh create $$)
  bridge=${claimed%% *}
  # Short and per state dir: unix socket paths are limited to 108 bytes.
  exec_root=/run/cryo-$(printf '%s' "$STATE" | sha256sum | cut -c1-12)
  mkdir -p "$exec_root"
  DOCKER=unix://$exec_root/docker.sock
  echo "start: starting cryo's own Docker engine on $DOCKER, bridge $claimed (log: $STATE/dockerd.log)"
  dockerd --data-root "$STATE/docker" --exec-root "$exec_root" --pidfile "$exec_root/dockerd.pid" -H "$DOCKER" \
    --bridge="$bridge" --iptables=false --ip-masq=false --ip-forward=false >"$STATE/dockerd.log" 2>&1 &
  pids+=($!)
  wait_for 60 engine_up "$DOCKER" || fail "dockerd did not come up; see $STATE/dockerd.log" "$STATE/dockerd.log"
else
  engine_up "$DOCKER" || fail "no Docker engine answers at CRYO_DOCKER_HOST=$DOCKER"
fi

# ---- registry --------------------------------------------------------------------------------
registry_up() { curl -sf "http://$REGISTRY/v2/" >/dev/null 2>&1; }
if ! registry_up; then
  mkdir -p "$STATE/registry/data"
  cat >"$STATE/registry/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/registry/data
  delete:
    enabled: true
http:
  addr: $REGISTRY
YAML
  echo "start: starting registry on $REGISTRY (log: $STATE/registry.log)"
  docker-registry serve "$STATE/registry/config.yml" >"$STATE/registry.log" 2>&1 &
  pids+=($!)
  wait_for 20 registry_up || fail "the registry did not come up; see $STATE/registry.log" "$STATE/registry.log"
fi

# ---- zone cache (optional) --------------------------------------------------------------------
# distribution's proxy mode: it stores each blob of the registry on its first fetch and serves
# ranges of it from then on. The local registry needs no credentials; with one that does, put
# them into remoteurl (http://user:password@host:port): distribution 2.8 sends its proxy.username
# and proxy.password only to Bearer token services, userinfo in the URL also to Basic ones.
zone_args=()
if [ "${CRYO_ZONE_CACHE:-0}" = 1 ]; then
  zone_up() { curl -sf "http://$ZONE_CACHE/v2/" >/dev/null 2>&1; }
  if ! zone_up; then
    mkdir -p "$STATE/zone-cache/data"
    cat >"$STATE/zone-cache/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/zone-cache/data
http:
  addr: $ZONE_CACHE
proxy:
  remoteurl: http://$REGISTRY
YAML
    echo "start: starting zone cache on $ZONE_CACHE, a pull-through cache of $REGISTRY (log: $STATE/zone-cache.log)"
    docker-registry serve "$STATE/zone-cache/config.yml" >"$STATE/zone-cache.log" 2>&1 &
    pids+=($!)
    wait_for 20 zone_up || fail "the zone cache did not come up; see $STATE/zone-cache.log" "$STATE/zone-cache.log"
  fi
  zone_args=("clip.zone_cache.url=$ZONE_CACHE")
fi

# ---- demo image ------------------------------------------------------------------------------
DEMO_IMAGE=$(bash scripts/demo-image.sh "$DOCKER" "$REGISTRY" "${CRYO_CACHE_DIR:-$STATE/cache}")
echo "start: demo image $DEMO_IMAGE"

# ---- server and executor ---------------------------------------------------------------------
# The executor token is a secret shared by server and executor: made once, kept 0600.
if [ ! -s "$STATE/executor-token" ]; then
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/executor-token")
fi
export CRYO_EXECUTOR_TOKEN
CRYO_EXECUTOR_TOKEN=$(cat "$STATE/executor-token")
export CRYO_REGISTRY_URL=$REGISTRY
node scripts/lib/write-config.mjs configs/server-config.yaml "$STATE/server-config.yaml" \
  "listen.port=$SERVER_PORT" "database=$STATE/server.db"
node scripts/lib/write-config.mjs configs/executor-config.yaml "$STATE/executor-config.yaml" \
  "server_url=$SERVER" "docker.host=$DOCKER" "state_dir=$STATE/executor" ${executor_metrics[@]+"${executor_metrics[@]}"} ${zone_args[@]+"${zone_args[@]}"}

echo "start: cryo server on $SERVER (log: $STATE/server.log)"
node apps/server/bin/cryo-server.js --config "$STATE/server-config.yaml" >"$STATE/server.log" 2>&1 &
pids+=($!)
wait_for 30 curl -sf "$SERVER/healthz" -o /dev/null || fail "the server did not come up; see $STATE/server.log" "$STATE/server.log"

echo "start: executor (log: $STATE/executor.log)${executor_metrics[0]+, metrics on http://127.0.0.1:$EXECUTOR_METRICS_PORT/metrics}"
node apps/executor/bin/cryo-executor.js --config "$STATE/executor-config.yaml" >"$STATE/executor.log" 2>&1 &
pids+=($!)
executor_ready() { curl -sf "$SERVER/v1/executors" | grep -q '"state":"ready"'; }
wait_for 60 executor_ready || fail "the executor did not report ready; see $STATE/executor.log" "$STATE/executor.log"

echo "start: cryo is up. Walk through README.md's \"Using it\", starting with:"
echo "start:   npx cryo sandboxes create $DEMO_IMAGE --wait"
echo "start: press Ctrl-C to stop"
wait -n "${pids[@]}" || true
echo "start: a process exited; stopping the rest (see logs in $STATE/)" >&2
