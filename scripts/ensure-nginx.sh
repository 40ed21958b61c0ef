#!/usr/bin/env bash
# Makes sure the replicas test can put Debian's nginx in front of several control planes
# (it runs /usr/sbin/nginx itself, in the foreground, with deploy/nginx/berth-control-proxy.conf;
# the packaged service is never started). Idempotent; installing needs root.
set -euo pipefail

[ -x /usr/sbin/nginx ] && exit 0
echo "==> installing nginx"
if [ "$(id -u)" -ne 0 ]; then
  echo "error: nginx missing and installing needs root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d keeps the package from starting its own nginx on port 80.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq nginx-light >/dev/null \
  || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; } \
  || { echo "error: could not install nginx" >&2; exit 1; }
[ -x /usr/sbin/nginx ] || { echo "error: /usr/sbin/nginx missing after installing nginx-light" >&2; exit 1; }
