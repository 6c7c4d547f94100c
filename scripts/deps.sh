#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis run on this machine and that the slotgate
# database exists: starts them when they are stopped, installs them with
# apt-get when they are missing. Safe to run any number of times.
#
# Settings (environment): PGHOST (127.0.0.1), PGPORT (5432),
# SLOTGATE_DB (slotgate), REDIS_PORT (6379).
#
# `scripts/deps.sh --install NAME...` does only one thing: installs the
# first of these Debian package names that apt knows (a package some
# releases renamed has several names). scripts/test.sh uses it for what its
# tools need.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
SLOTGATE_DB=${SLOTGATE_DB:-slotgate}
REDIS_PORT=${REDIS_PORT:-6379}

say() { printf 'deps: %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
apt_update() {
  [ -z "$apt_updated" ] || return 0
  command -v apt-get >/dev/null || { say "apt-get not found: install $* yourself"; exit 1; }
  as_root apt-get update -qq
  apt_updated=1
}

apt_install() {
  apt_update "$@"
  say "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ "${1:-}" = --install ]; then
  shift
  apt_update "$@"
  for name in "$@"; do
    # The exact name: apt takes a name with a dot in it that no package has
    # for a pattern, which matches others.
    if apt-cache pkgnames "$name" | grep -xF "$name" >/dev/null; then
      apt_install "$name"
      exit 0
    fi
  done
  say "apt knows none of these packages: $*"
  exit 1
fi

wait_for() { # wait_for WHAT COMMAND...
  local what=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  say "$what did not come up"; exit 1
}

command -v cargo >/dev/null || { say "cargo not found: install Rust (rustup, stable >= 1.88) first"; exit 1; }

# --- PostgreSQL -------------------------------------------------------------
if ! command -v pg_isready >/dev/null || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  apt_install postgresql postgresql-client
fi
if ! pg_isready -q -h "$PGHOST" -p "$PGPORT"; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  say "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for PostgreSQL pg_isready -h "$PGHOST" -p "$PGPORT"
fi
# slotgate's defaults connect as postgres over loopback without a password,
# as a development machine is usually set up. A fresh Debian cluster asks for
# one; allow loopback connections for postgres without it (local use only).
if ! psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  say "allowing passwordless loopback connections for postgres in $hba"
  as_root sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  wait_for "PostgreSQL (trust)" psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -tAc 'SELECT 1'
fi
if [ "$(psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$SLOTGATE_DB'")" != 1 ]; then
  say "creating database $SLOTGATE_DB"
  psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -qc "CREATE DATABASE \"$SLOTGATE_DB\""
fi

# --- Redis ------------------------------------------------------------------
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  say "starting Redis on port $REDIS_PORT"
  # Redis holds only counters rebuilt from PostgreSQL: nothing to persist.
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/slotgate-redis.log"
  wait_for Redis redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping
fi

# --- RabbitMQ ---------------------------------------------------------------
# The events relay publishes to it (and its tests consume from it); guest /
# guest works from localhost.
command -v rabbitmqctl >/dev/null || apt_install rabbitmq-server
if ! as_root rabbitmqctl -q status >/dev/null 2>&1; then
  say "starting RabbitMQ (the first start takes several seconds)"
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    as_root systemctl start rabbitmq-server
  else
    as_root sh -c 'rabbitmq-server -detached >/dev/null 2>&1 || true'
  fi
  wait_for RabbitMQ as_root rabbitmq-diagnostics -q ping
fi
# A broker whose application was stopped (and not started again) answers
# status but not AMQP.
as_root rabbitmqctl -q start_app >/dev/null 2>&1 || true

say "PostgreSQL $PGHOST:$PGPORT (database $SLOTGATE_DB), Redis 127.0.0.1:$REDIS_PORT and RabbitMQ 127.0.0.1:5672 are up"
