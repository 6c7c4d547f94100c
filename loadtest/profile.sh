#!/usr/bin/env bash
# Where a release slotgate's CPU goes under the seed's bursts: perf samples
# of the server process while slotgate-load fires each shape, turned into
# flame graphs (SVG) and the functions that spent the most.
#
#   loadtest/profile.sh            # from the repository root, after the README's set-up
#
# Shapes: the refusal path (duplicate-2000: 6,000 calls into one slot, 10
# win), the same 6,000 calls to the trivial health Check (what gRPC alone
# costs), and the winners' path (spread: 1,000 slots filled, every call
# wins). Each shape runs once to warm up, then once under perf. Writes
# RESULTS/results/flame-<shape>.svg and RESULTS/results/profile.txt: each
# shape's server CPU time, top functions by self time, and the service's
# own frames by inclusive time. Needs perf (Debian's
# linux-perf) and inferno (`cargo install inferno`). Settings
# (environment): RESULTS (loadtest), LISTEN (127.0.0.1:50073), FREQ (perf
# samples per second, 999), SPREAD_SLOTS (1000).
set -euo pipefail
cd "$(dirname "$0")/.."

RESULTS=${RESULTS:-loadtest}
LISTEN=${LISTEN:-127.0.0.1:50073}
FREQ=${FREQ:-999}
SPREAD_SLOTS=${SPREAD_SLOTS:-1000}

say() { printf 'profile: %s\n' "$*" >&2; }
command -v perf >/dev/null || { say "perf is needed (apt-get install linux-perf)"; exit 1; }
for tool in inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || { say "$tool is needed (cargo install inferno)"; exit 1; }
done

scripts/deps.sh
say "building (release)"
cargo build --release --locked -p slotgate -p slotgate-load
bin=${CARGO_TARGET_DIR:-target}/release

work=$(mktemp -d -t slotgate-profile.XXXXXX)
server=
cleanup() {
  [ -z "$server" ] || { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

db=slotgate_profile
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE \"$db\""
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db?sslmode=disable" SLOTGATE_LISTEN=$LISTEN \
  SLOTGATE_REDIS_NAMESPACE="profile$$" SLOTGATE_POOL_TIMEOUT_MS=120000 SLOTGATE_REDIS_COMMAND_TIMEOUT_MS=120000 \
  SLOTGATE_REQUEST_TIMEOUT_MS=120000 SLOTGATE_HOLD_LEASE_MS=600000 SLOTGATE_USER_BURST=10 \
  "$bin/slotgate" serve >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/${LISTEN%:*}/${LISTEN##*:}") 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { say "slotgate did not start:"; cat "$work/server.log" >&2; exit 1; }
  sleep 0.2
done

ticks() { awk '{ print $14 + $15 }' "/proc/$server/stat"; }

# profile SHAPE [slotgate-load options...]
profile() {
  local shape=$1; shift
  "$bin/slotgate-load" --addr "$LISTEN" --name "warmup-$shape" -t 120s "$@" >/dev/null 2>"$work/warmup-$shape.log" \
    || { say "$shape (warm-up) failed:"; cat "$work/warmup-$shape.log" >&2; exit 1; }
  # DWARF unwinding: release builds keep no frame pointers, so frame-pointer
  # stacks stop short and hide who called what.
  perf record -F "$FREQ" --call-graph dwarf,32768 -p "$server" -o "$work/$shape.data" 2>"$work/$shape.perf.log" &
  local perf=$! before
  sleep 0.5
  kill -0 "$perf" 2>/dev/null || { say "perf could not attach:"; cat "$work/$shape.perf.log" >&2; exit 1; }
  before=$(ticks)
  "$bin/slotgate-load" --addr "$LISTEN" --name "$shape" -t 120s "$@" >/dev/null 2>"$work/$shape.log" \
    || { say "$shape failed:"; cat "$work/$shape.log" >&2; exit 1; }
  local spent=$(( ( $(ticks) - before ) * 1000 / $(getconf CLK_TCK) ))
  kill -INT "$perf"; wait "$perf" 2>/dev/null || true
  perf script -i "$work/$shape.data" 2>/dev/null | inferno-collapse-perf >"$work/$shape.folded"
  mkdir -p "$RESULTS/results"
  inferno-flamegraph --minwidth 0.5 --title "slotgate: $shape ($*)" <"$work/$shape.folded" >"$RESULTS/results/flame-$shape.svg"
  echo "## $shape: server CPU $spent ms"
  python3 - "$work/$shape.folded" <<'PY'
import collections, sys
self_time, total = collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    n = int(n)
    total += n
    self_time[stack.split(";")[-1]] += n
for frame, n in self_time.most_common(15):
    print(f"{100 * n / total:5.1f}%  {frame[:110]}")
# Inclusive time of the service's own frames and the libraries it calls
# directly: where, in the code, the self time above is spent.
OWN = ("slotgate::", "redis::", "tracing_subscriber::", "tracing_core::", "tracing::", "bb8::", "governor::",
       "tonic_types::", "tonic::codec", "tonic_prost::", "h2::", "hyper::", "mimalloc", "mi_")
inclusive = collections.Counter()
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    seen = set()
    for frame in stack.split(";"):
        name = frame.lstrip("<")
        if name.startswith(OWN) and name not in seen:
            seen.add(name)
            inclusive[name] += int(n)
print("inclusive (the service, its libraries, the allocator):")
for frame, n in inclusive.most_common(30):
    print(f"{100 * n / total:5.1f}%  {frame[:140]}")
PY
}

mkdir -p "$RESULTS/results"
# Read before the summary below is written: tee empties the tracked
# profile.txt as it starts, which would make every build look modified.
build=$(git describe --always --dirty 2>/dev/null || echo unknown)
{
  echo "# slotgate profile, $(date -u +%Y-%m-%d), build $build"
  echo "# $(nproc) cores, perf at $FREQ Hz with DWARF stacks; see loadtest/README.md (profile.sh)"
  profile refusals --scenario duplicate-2000
  profile health --scenario duplicate-2000 --call grpc.health.v1.Health/Check
  profile winners --scenario spread --slots "$SPREAD_SLOTS"
} | tee "$RESULTS/results/profile.txt"
say "flame graphs in $RESULTS/results/flame-{refusals,health,winners}.svg, summary in $RESULTS/results/profile.txt"
