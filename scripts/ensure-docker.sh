#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine; idempotent.
#
# Uses Debian's client (/usr/bin/docker, from docker.io): it builds with the daemon's own
# builder, which the tests need. There is no systemd here, so dockerd is started directly.
set -euo pipefail

DOCKER=/usr/bin/docker
LOG=${BERTH_DOCKERD_LOG:-/var/log/dockerd.log}
WAIT_SECS=${BERTH_DOCKERD_WAIT_SECS:-60}

answers() { [ -x "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; }

if answers; then
  echo "ensure-docker: the Docker engine answers"
  exit 0
fi

if [ ! -x "$DOCKER" ] || ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-docker: installing Debian's docker.io"
  if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-docker: docker.io is missing and installing it needs root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q docker.io >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q docker.io >/dev/null
  }
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  echo "ensure-docker: starting dockerd (log: $LOG)"
  # A session of its own: killing the caller's process group (a CI step, a shell job) must not
  # take the engine down with it.
  setsid -f dockerd >"$LOG" 2>&1 </dev/null
fi

for _ in $(seq 1 "$WAIT_SECS"); do
  if answers; then
    echo "ensure-docker: the Docker engine answers"
    exit 0
  fi
  sleep 1
done

echo "ensure-docker: the Docker engine did not answer within ${WAIT_SECS}s; see $LOG:" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
