#!/usr/bin/env bash
# The whole test suite: dependencies up, formatting, lints, then every unit
# and integration test (real PostgreSQL, real Redis, real gRPC).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

echo "test: cargo fmt --check"
cargo fmt --all -- --check

echo "test: cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Test databases are named sgt_<pid>_...; drop those whose test process died
# without cleaning up (a killed run), never those of a run still going.
for db in $(psql -h "${PGHOST:-127.0.0.1}" -U postgres -d postgres -tAc "SELECT datname FROM pg_database WHERE datname LIKE 'sgt\_%'"); do
  pid=${db#sgt_}; pid=${pid%%_*}
  if ! kill -0 "$pid" 2>/dev/null; then
    psql -h "${PGHOST:-127.0.0.1}" -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
  fi
done

# The OpenTelemetry collector the telemetry tests export to: rotel, from
# PyPI, in a virtualenv of its own next to the build.
tools="${CARGO_TARGET_DIR:-target}/tools"
if ! "$tools/bin/python" -c 'import rotel' 2>/dev/null; then
  echo "test: installing the rotel collector into $tools"
  if ! python3 -m venv "$tools" 2>/dev/null; then
    as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
    as_root apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$tools"
  fi
  "$tools/bin/pip" install --quiet --disable-pip-version-check 'rotel==0.0.1a15'
fi
SLOTGATE_ROTEL="$("$tools/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')"
export SLOTGATE_ROTEL

echo "test: cargo test"
cargo test --workspace --locked
