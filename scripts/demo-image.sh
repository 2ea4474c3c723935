#!/usr/bin/env bash
# The demo image of `npm start`: Debian bookworm (debootstrap minbase) with python3, trimmed like
# the "slim" images (no apt lists or .debs, docs, man pages, locales), running `sleep infinity` so
# that a sandbox made from it stays up. Nothing is pulled from a public image registry: the root
# filesystem comes from Debian packages.
#
#   demo-image.sh DOCKER_HOST REGISTRY [CACHE_DIR]
#     DOCKER_HOST  the engine that imports and pushes it, e.g. unix:///var/run/docker.sock
#     REGISTRY     host:port of a plain-http loopback registry, e.g. 127.0.0.1:5001
#     CACHE_DIR    where the root filesystem tarball is kept (default .cryo/cache; env CRYO_CACHE_DIR)
#   Prints the image name, REGISTRY/cryo/demo:bookworm, on stdout; progress goes to stderr.
#
# Built once: the tarball is cached under a hash of the recipe below, and the push is skipped when
# the registry already holds the image built from this recipe (label org.cryo.demo.recipe).
# A change to the recipe makes a new tarball and a new push; the first build takes about a minute
# (debootstrap from the Debian mirror), later runs take a second.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 2 ] || { echo "usage: $0 DOCKER_HOST REGISTRY [CACHE_DIR]" >&2; exit 2; }
DOCKER_HOST_ARG=$1 REGISTRY=$2
CACHE_DIR=${3:-${CRYO_CACHE_DIR:-.cryo/cache}}
IMAGE=$REGISTRY/cryo/demo:bookworm

# ---- the recipe: any change here makes a new image ---------------------------------------------
SUITE=bookworm
PACKAGES=python3
TRIM=(var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* usr/share/doc/* usr/share/man/*
  usr/share/info/* usr/share/locale/*)
CHANGES=('ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'WORKDIR /root' 'CMD ["sleep", "infinity"]')
# -------------------------------------------------------------------------------------------------
RECIPE=$(printf '%s\n' "debootstrap --variant=minbase --include=$PACKAGES $SUITE" "trim ${TRIM[*]}" "${CHANGES[@]}" | sha256sum | cut -c1-16)

log() { echo "demo-image: $*" >&2; }
docker_() { docker -H "$DOCKER_HOST_ARG" "$@"; }

# The label of the image in the registry, if it is there (a manifest GET needs its media type).
registry_recipe() {
  local manifest config
  manifest=$(curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY/v2/cryo/demo/manifests/$SUITE") || return 0
  config=$(printf '%s' "$manifest" | tr -d ' \n' | grep -o '"config":{[^}]*' | grep -o 'sha256:[0-9a-f]*' | head -1)
  [ -n "$config" ] || return 0
  curl -sf "http://$REGISTRY/v2/cryo/demo/blobs/$config" | grep -o '"org.cryo.demo.recipe":"[0-9a-f]*"' | cut -d'"' -f4 | head -1
}

if [ "$(registry_recipe)" = "$RECIPE" ]; then
  echo "$IMAGE"
  exit 0
fi

mkdir -p "$CACHE_DIR"
tar=$CACHE_DIR/demo-rootfs-$RECIPE.tar
if [ ! -f "$tar" ]; then
  # Built in a dir of its own and renamed into place: two first runs at once do not collide.
  build=$(mktemp -d "$CACHE_DIR/demo-rootfs-$RECIPE.build.XXXXXX")
  trap 'rm -rf "$build" "$tar.$$"' EXIT
  log "building the root filesystem once: debootstrap $SUITE + $PACKAGES (about a minute; log $build.log)"
  if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$build/root" >"$build.log" 2>&1; then
    log "debootstrap failed (it needs the Debian mirror of /etc/apt/sources.list); the end of $build.log:"
    tail -5 "$build.log" >&2
    exit 1
  fi
  (cd "$build/root" && shopt -s nullglob && rm -rf ${TRIM[*]})
  tar -C "$build/root" --numeric-owner --xattrs --xattrs-include='*' -cf "$tar.$$" .
  mv "$tar.$$" "$tar"
  rm -rf "$build" "$build.log"
fi

log "importing $tar and pushing $IMAGE"
changes=()
for c in "${CHANGES[@]}" "LABEL org.cryo.demo.recipe=$RECIPE"; do changes+=(-c "$c"); done
docker_ import "${changes[@]}" "$tar" "$IMAGE" >/dev/null
docker_ push "$IMAGE" >/dev/null
echo "$IMAGE"
