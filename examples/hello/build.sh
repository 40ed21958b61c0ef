#!/usr/bin/env bash
# Builds berth-sample/hello:latest from this folder (no pull: FROM scratch + static busybox).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DOCKER=/usr/bin/docker
if [ ! -f /bin/busybox ] || ! ldd /bin/busybox 2>&1 | grep -q "not a dynamic"; then
  dpkg -s busybox-static >/dev/null 2>&1 || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q busybox-static >/dev/null 2>&1 || { apt-get update -q >/dev/null; apt-get install -y -q busybox-static >/dev/null; }
  }
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp -r "$here/Dockerfile" "$here/www" "$ctx"/
cp -L /bin/busybox "$ctx/busybox"
"$DOCKER" build -q -t berth-sample/hello:latest "$ctx" >/dev/null
echo "built berth-sample/hello:latest"
