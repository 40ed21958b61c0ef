#!/usr/bin/env bash
# Makes sure PostgreSQL, MariaDB and RabbitMQ answer on 127.0.0.1, installing them from
# Debian's packages and starting them when they are missing (no systemd needed).
# Fails with the name of the service it could not bring up.
set -euo pipefail

log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq || die "apt-get update failed: cannot install $*"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || die "could not install $*"
}

wait_for() { # name, tries, command...
  local name=$1 tries=$2; shift 2
  for _ in $(seq "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  die "$name did not come up"
}

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 && psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; }
ensure_postgres() {
  if postgres_up; then log "PostgreSQL answers"; return; fi
  command -v pg_ctlcluster >/dev/null || { log "installing PostgreSQL"; apt_install postgresql; }
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  [ -n "$version" ] || die "PostgreSQL is installed but has no cluster in /etc/postgresql"
  # Trust local TCP connections for the test user, as the tests expect.
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main reload || true
  wait_for PostgreSQL 30 postgres_up
}

mariadb_up() { mysql -h 127.0.0.1 -P 3306 -u root -e 'select 1' >/dev/null 2>&1; }
ensure_mariadb() {
  if mariadb_up; then log "MariaDB answers"; return; fi
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || { log "installing MariaDB"; apt_install mariadb-server; }
  log "starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  service mariadb start >/dev/null 2>&1 || start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_for "MariaDB (socket)" 30 mysql -u root -e 'select 1'
  # Root over TCP without a password, as the tests expect (the socket login works as root).
  mysql -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;" 2>/dev/null || true
  wait_for MariaDB 30 mariadb_up
}

rabbitmq_up() { rabbitmqctl -q status >/dev/null 2>&1 && (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
ensure_rabbitmq() {
  if rabbitmq_up; then log "RabbitMQ answers"; return; fi
  command -v rabbitmq-server >/dev/null || { log "installing RabbitMQ"; apt_install rabbitmq-server; }
  log "starting RabbitMQ"
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 rabbitmq-server -detached >/dev/null 2>&1 || true
  rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  wait_for RabbitMQ 60 rabbitmq_up
}

ensure_postgres
ensure_mariadb
ensure_rabbitmq
