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

echo "test: cargo test"
cargo test --workspace --locked
