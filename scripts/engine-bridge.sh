#!/usr/bin/env bash
# A Linux bridge of its own for every Docker engine that cryo starts (test hosts, benchmarks,
# `npm start`). An engine started with --bridge=none makes moby delete the machine's docker0, and
# an engine on docker0 shares it with the machine's own engine; an engine on a bridge of its own
# (`dockerd --bridge=NAME --iptables=false --ip-masq=false --ip-forward=false`) touches neither.
#
#   engine-bridge.sh create OWNER_PID   claim a bridge for the process OWNER_PID; prints
#                                       "NAME ADDRESS/24", e.g. "cryobr17 10.213.17.1/24"
#   engine-bridge.sh delete NAME        delete it (only cryobrN bridges)
#   engine-bridge.sh sweep              delete the bridges whose owner process is gone, after
#                                       stopping a dockerd that still uses one
#
# Names are cryobr0..cryobr255 with subnet 10.213.N.0/24 (CRYO_BRIDGE_NET=A.B changes 10.213).
# `ip link add` fails when the name exists, so a claim is atomic: parallel runs on one machine
# never share a bridge. A subnet that overlaps a route of the machine is skipped. The owner
# (pid and its start time, which guards against pid reuse) is kept in the link's alias.
set -euo pipefail

NET=${CRYO_BRIDGE_NET:-10.213}
PREFIX=cryobr

die() { echo "engine-bridge: $*" >&2; exit 1; }

# Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), or nothing.
start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }           # the command name may hold spaces: cut after its closing paren
  set -- $stat
  echo "${20}"
}

# Whether a route of this machine other than the default one overlaps NET.N.0/24.
subnet_in_use() {
  local cidr=$NET.$1.0/24 covering inside
  # Captured first: with pipefail, `ip | grep -q` fails when grep's early exit kills ip (SIGPIPE).
  covering=$(ip -4 route show table all match "$cidr" | grep -v '^\(default\|unreachable\|local\|broadcast\) ' || true)
  inside=$(ip -4 route show table all root "$cidr")
  [ -n "$covering$inside" ]
}

create() {
  local owner=$1 start n name i
  start=$(start_time "$owner")
  [ -n "$start" ] || die "owner process $owner does not exist"
  for i in $(seq 0 255); do
    n=$(( (owner + i) % 256 ))
    name=$PREFIX$n
    ip link add "$name" type bridge 2>/dev/null || continue
    if subnet_in_use "$n"; then
      ip link del "$name" 2>/dev/null || true
      continue
    fi
    ip link set dev "$name" alias "cryo engine bridge owner=$owner start=$start"
    ip addr add "$NET.$n.1/24" dev "$name"
    ip link set dev "$name" up
    echo "$name $NET.$n.1/24"
    return 0
  done
  die "no free bridge: ${PREFIX}0..${PREFIX}255 are taken or their subnets $NET.N.0/24 overlap routes of this machine (set CRYO_BRIDGE_NET)"
}

delete() {
  [[ $1 =~ ^$PREFIX[0-9]+$ ]] || die "refusing to delete $1: not a bridge this script makes"
  ip link del "$1" 2>/dev/null || true
}

# Pids of dockerd processes started with --bridge=NAME.
engines_on() {
  local p args
  for p in /proc/[0-9]*; do
    args=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
    [[ $args == dockerd\ * || $args == */dockerd\ * ]] || continue
    [[ " $args" == *" --bridge=$1 "* ]] && echo "${p#/proc/}"
  done
  return 0
}

sweep() {
  local line name owner start pid _
  # `ip`, not /sys/class/net: under `nsenter --net` /sys still shows the namespace that mounted it.
  while IFS= read -r line; do
    [[ $line =~ ^[0-9]+:\ ($PREFIX[0-9]+): ]] || continue
    name=${BASH_REMATCH[1]}
    # Not (yet) labelled: being created right now, or not ours.
    [[ $line =~ alias\ cryo\ engine\ bridge\ owner=([0-9]+)\ start=([0-9]+) ]] || continue
    owner=${BASH_REMATCH[1]} start=${BASH_REMATCH[2]}
    [ "$(start_time "$owner")" = "$start" ] && continue
    for pid in $(engines_on "$name"); do
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
    done
    echo "engine-bridge: deleted $name, left by process $owner that is gone" >&2
    ip link del "$name" 2>/dev/null || true
  done < <(ip -o link show type bridge)
}

case "${1:-}" in
  create) [ $# -eq 2 ] || die "usage: $0 create OWNER_PID"; create "$2" ;;
  delete) [ $# -eq 2 ] || die "usage: $0 delete NAME"; delete "$2" ;;
  sweep) sweep ;;
  *) die "usage: $0 create OWNER_PID | delete NAME | sweep" ;;
esac
