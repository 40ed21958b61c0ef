#!/usr/bin/env bash
# Makes sure a Docker registry answers on 127.0.0.1:5000 (the runner's build tests push there);
# idempotent. Uses Debian's docker-registry package (Distribution 2.8), started directly since
# there is no systemd: `docker-registry serve` with a config that listens on loopback only.
#
# The Docker engine treats registries on 127.0.0.0/8 as insecure-allowed by default, so pushing
# over plain HTTP to 127.0.0.1:5000 needs no daemon configuration.
set -euo pipefail

ADDR=127.0.0.1:5000
LOG=${BERTH_REGISTRY_LOG:-/var/log/berth-registry.log}
DATA=${BERTH_REGISTRY_DATA:-/var/lib/berth-registry}
CONFIG=${BERTH_REGISTRY_CONFIG:-/etc/docker/registry/berth-config.yml}
WAIT_SECS=${BERTH_REGISTRY_WAIT_SECS:-30}

answers() { curl -fsS -m 2 "http://$ADDR/v2/" >/dev/null 2>&1; }

if answers; then
  echo "ensure-registry: a registry answers on $ADDR"
  exit 0
fi

if ! command -v docker-registry >/dev/null 2>&1; then
  echo "ensure-registry: installing Debian's docker-registry"
  if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-registry: docker-registry is missing and installing it needs root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q docker-registry >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q docker-registry >/dev/null
  }
fi

# The package's own /etc/docker/registry/config.yml listens on :5000 on every interface; write
# a copy that listens on loopback only and keeps its data in a known folder.
mkdir -p "$(dirname "$CONFIG")" "$DATA"
cat >"$CONFIG" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DATA
  delete:
    enabled: true
http:
  addr: $ADDR
  headers:
    X-Content-Type-Options: [nosniff]
YAML

if ! pgrep -f "docker-registry serve $CONFIG" >/dev/null 2>&1; then
  echo "ensure-registry: starting docker-registry on $ADDR (log: $LOG)"
  setsid -f docker-registry serve "$CONFIG" >"$LOG" 2>&1 </dev/null
fi

for _ in $(seq 1 "$((WAIT_SECS * 5))"); do
  if answers; then
    echo "ensure-registry: a registry answers on $ADDR"
    exit 0
  fi
  sleep 0.2
done

echo "ensure-registry: no registry answered on http://$ADDR/v2/ within ${WAIT_SECS}s; see $LOG:" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
