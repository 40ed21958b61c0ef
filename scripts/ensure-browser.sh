#!/usr/bin/env bash
# Makes sure the dashboard's browser tests can run: Debian's headless Chromium and its
# WebDriver server, chromium-driver (same package version, so driver and browser always
# match; the tests drive it with the fantoccini crate). Idempotent; installing needs root.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "==> installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "error: ${missing[*]} missing and installing needs root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null \
  || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } \
  || { echo "error: could not install ${missing[*]}" >&2; exit 1; }
