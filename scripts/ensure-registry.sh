#!/usr/bin/env bash
# Makes sure a local image registry answers on 127.0.0.1:5000 (Debian's docker-registry,
# Distribution 2.8); idempotent. The Docker engine trusts 127.0.0.0/8 registries over plain
# HTTP by default, so `docker push 127.0.0.1:5000/x` works without further set-up.
set -euo pipefail

ADDR=${BERTH_REGISTRY_ADDR:-127.0.0.1:5000}
DATA=${BERTH_REGISTRY_DATA:-/var/lib/berth-registry}
LOG=${BERTH_REGISTRY_LOG:-/var/log/berth-registry.log}
CONF=${BERTH_REGISTRY_CONF:-/etc/berth-registry.yml}
WAIT_SECS=${BERTH_REGISTRY_WAIT_SECS:-30}

answers() { curl -sf -o /dev/null "http://$ADDR/v2/"; }

if answers; then
  echo "ensure-registry: a registry answers on $ADDR"
  exit 0
fi

if ! command -v docker-registry >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-registry: docker-registry is missing and installing it needs root" >&2
    exit 1
  fi
  echo "ensure-registry: installing Debian's docker-registry"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q docker-registry >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q docker-registry >/dev/null
  }
fi

mkdir -p "$DATA"
cat >"$CONF" <<YAML
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
YAML

echo "ensure-registry: starting docker-registry on $ADDR (log: $LOG)"
nohup docker-registry serve "$CONF" >"$LOG" 2>&1 &

for _ in $(seq 1 "$WAIT_SECS"); do
  if answers; then
    echo "ensure-registry: a registry answers on $ADDR"
    exit 0
  fi
  sleep 1
done
echo "ensure-registry: the registry did not answer on $ADDR within ${WAIT_SECS}s; see $LOG:" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
