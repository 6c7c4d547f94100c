#!/usr/bin/env bash
# The seed's duplicate-2000 burst against a real slotgate: dependencies up,
# release build, migrate, serve, open restaurant 67's 40-seat slot, fire
# 2,000 users x 3 simultaneous clicks, print the report, stop the server.
#
# Settings (environment): SLOTGATE_LISTEN (127.0.0.1:50051), SCENARIO
# (duplicate-2000; or burst-100/200/400/800), and every slotgate setting
# (DATABASE_URL, REDIS_URL, ...; see docs/operations.md).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

echo "demo: building (release)"
cargo build --release --locked -p slotgate -p slotgate-load
bin=${CARGO_TARGET_DIR:-target}/release

export SLOTGATE_LISTEN=${SLOTGATE_LISTEN:-127.0.0.1:50051}
"$bin"/slotgate migrate

log=$(mktemp -t slotgate-demo.XXXXXX.log)
"$bin"/slotgate serve >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT

host=${SLOTGATE_LISTEN%:*}; port=${SLOTGATE_LISTEN##*:}
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { echo "demo: slotgate did not start:"; cat "$log"; exit 1; }
  sleep 0.2
done
echo "demo: slotgate serving on $SLOTGATE_LISTEN (log: $log)"

# Without SCENARIO, the load tool fires the headline scenario (duplicate-2000).
"$bin"/slotgate-load --addr "$SLOTGATE_LISTEN" ${SCENARIO:+--scenario "$SCENARIO"}
