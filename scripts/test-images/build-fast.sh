#!/usr/bin/env bash
# Builds berth-test/fast:latest, a keep-alive HTTP server (fast/) as a static Rust binary in a
# FROM scratch image, for the gateway benchmark. The musl target is not available here, so the
# binary is glibc linked statically (crt-static). The first build takes a minute or two.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DOCKER=/usr/bin/docker
if ! "$DOCKER" info >/dev/null 2>&1; then
  echo "test-images: the Docker engine is not answering; run scripts/ensure-docker.sh first" >&2
  exit 1
fi
target_dir=${BERTH_FAST_TARGET_DIR:-$here/fast/target}
triple=$(rustc -vV | sed -n 's/^host: //p')
(
  cd "$here/fast"
  RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$target_dir" \
    cargo build --release --quiet --target "$triple"
)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$target_dir/$triple/release/berth-bench-upstream" "$ctx/upstream"
printf 'FROM scratch\nCOPY upstream /upstream\nCMD ["/upstream"]\n' >"$ctx/Dockerfile"
"$DOCKER" build -q -t berth-test/fast:latest "$ctx" >/dev/null
echo "test-images: built berth-test/fast:latest"
