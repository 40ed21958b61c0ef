#!/usr/bin/env bash
# Builds the images the runtime agent's tests and benchmark deploy; idempotent and quick
# (the daemon's build cache makes a rebuild about a tenth of a second).
#
#   berth-test/app:latest (also :v2)   static busybox: httpd on 8080, see app/start.sh
#
# No base image is pulled: the image starts FROM scratch with Debian's busybox-static.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DOCKER=/usr/bin/docker

if ! "$DOCKER" info >/dev/null 2>&1; then
  echo "test-images: the Docker engine is not answering; run scripts/ensure-docker.sh first" >&2
  exit 1
fi
if [ ! -x /bin/busybox ] || ! file_is_static=$(ldd /bin/busybox 2>&1) || ! grep -q "not a dynamic" <<<"$file_is_static"; then
  if ! dpkg -s busybox-static >/dev/null 2>&1; then
    echo "test-images: installing Debian's busybox-static"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q busybox-static >/dev/null 2>&1 || {
      apt-get update -q >/dev/null
      apt-get install -y -q busybox-static >/dev/null
    }
  fi
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$here"/app/* "$ctx"/
cp -L /bin/busybox "$ctx"/busybox
"$DOCKER" build -q -t berth-test/app:latest -t berth-test/app:v2 "$ctx" >/dev/null
echo "test-images: built berth-test/app:latest"
