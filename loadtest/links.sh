#!/usr/bin/env bash
# What TLS to PostgreSQL and Redis costs a burst: the seed's duplicate-2000
# against two release servers on one private PostgreSQL and one private
# Redis, one server linked in plaintext, the other with both links on TLS
# (PostgreSQL sslmode=verify-full, Redis rediss:// checked against the CA),
# runs interleaved.
#
#   loadtest/links.sh              # from the repository root, after the README's set-up
#
# The certificates are made here with openssl (a CA, and a server
# certificate naming localhost and 127.0.0.1). The private PostgreSQL takes
# both plaintext and TLS (`host` and `hostssl`), the private Redis listens
# on a plaintext port and a TLS port: the same servers either way. Each
# slotgate gets a warm-up burst first; then REPEATS (3) runs of each,
# plaintext and TLS in turn. Printed per run: p95 and makespan as
# slotgate-load reports them, and the CPU time the slotgate process, the
# PostgreSQL processes and Redis spent on it (from /proc). Settings
# (environment): REPEATS, SCENARIO (duplicate-2000), POOL (16 PostgreSQL
# connections).
set -euo pipefail
cd "$(dirname "$0")/.."

REPEATS=${REPEATS:-3}
SCENARIO=${SCENARIO:-duplicate-2000}
POOL=${POOL:-16}

say() { printf 'links: %s\n' "$*" >&2; }

scripts/deps.sh
command -v openssl >/dev/null || { say "openssl is needed for the certificates (apt-get install openssl)"; exit 1; }
pgbin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
[ -x "$pgbin/initdb" ] || { say "PostgreSQL's server binaries not found under /usr/lib/postgresql"; exit 1; }

say "building (release)"
cargo build --release --locked -p slotgate -p slotgate-load
bin=$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)

work=$(mktemp -d -t slotgate-links.XXXXXX)
chmod 755 "$work"
pids=()
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  as_owner "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

say "certificates"
(
  cd "$work"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=slotgate-links-ca \
    -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout server.key -out server.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext \
    -out server.crt 2>/dev/null
  chmod 644 ca.crt server.crt server.key
)

say "private PostgreSQL, plaintext and TLS"
pg_port=$(free_port)
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work/pg"
as_owner "$pgbin/initdb" -D "$work/pg/data" -A trust -U postgres >/dev/null
cp "$work/server.crt" "$work/server.key" "$work/pg/data/"
chmod 600 "$work/pg/data/server.key"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work/pg/data/server.crt" "$work/pg/data/server.key"
as_owner "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key" \
  start >/dev/null

say "private Redis, plaintext and TLS ports"
redis_port=$(free_port)
redis_tls_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --tls-port "$redis_tls_port" \
  --tls-cert-file "$work/server.crt" --tls-key-file "$work/server.key" --tls-ca-cert-file "$work/ca.crt" \
  --tls-auth-clients no --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
redis_pid=$!

plain_db="postgres://postgres@127.0.0.1:$pg_port/postgres?sslmode=disable"
tls_db="postgres://postgres@localhost:$pg_port/postgres?sslmode=verify-full&sslrootcert=$work/ca.crt"
DATABASE_URL=$plain_db "$bin/slotgate" migrate >/dev/null

# serve NAME DATABASE_URL REDIS_URL [VAR=VALUE...]: a release slotgate on a
# free port; its pid and address in $server and $addr.
serve() {
  local name=$1 db=$2 redis=$3; shift 3
  addr=127.0.0.1:$(free_port)
  env DATABASE_URL="$db" REDIS_URL="$redis" SLOTGATE_LISTEN="$addr" SLOTGATE_REDIS_NAMESPACE=links \
    SLOTGATE_DB_POOL_SIZE="$POOL" SLOTGATE_POOL_TIMEOUT_MS=120000 SLOTGATE_REDIS_COMMAND_TIMEOUT_MS=120000 \
    SLOTGATE_REQUEST_TIMEOUT_MS=120000 SLOTGATE_HOLD_LEASE_MS=600000 SLOTGATE_USER_BURST=10 "$@" \
    "$bin/slotgate" serve >"$work/server-$name.log" 2>&1 &
  server=$!
  pids+=("$server")
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null && return 0
    kill -0 "$server" 2>/dev/null || break
    sleep 0.2
  done
  say "slotgate ($name) did not start:"; cat "$work/server-$name.log" >&2; exit 1
}

serve plain "$plain_db" "redis://127.0.0.1:$redis_port"
plain_pid=$server plain_addr=$addr
serve tls "$tls_db" "rediss://localhost:$redis_tls_port" SLOTGATE_REDIS_TLS_CA="$work/ca.crt"
tls_pid=$server tls_addr=$addr

ticks() { awk '{ t += $14 + $15 } END { print t + 0 }' "$@" 2>/dev/null || echo 0; }
# The private PostgreSQL: its postmaster and every backend it started.
pg_stats() {
  local postmaster
  postmaster=$(head -n 1 "$work/pg/data/postmaster.pid")
  { echo "$postmaster"; pgrep -P "$postmaster"; } | sed 's|.*|/proc/&/stat|' | xargs -r cat 2>/dev/null
}
cpu() { echo "$(ticks "/proc/$1/stat") $(pg_stats | ticks) $(ticks "/proc/$redis_pid/stat")"; }

# burst NAME PID ADDR: one run; prints its line of the table.
burst() {
  local name=$1 pid=$2 addr=$3 before after
  before=$(cpu "$pid")
  "$bin/slotgate-load" --addr "$addr" --name "$name" --scenario "$SCENARIO" -t 120s \
    --format json --output "$work/$name.json" 2>"$work/$name.log" \
    || { say "$name failed its checks:"; cat "$work/$name.log" >&2; exit 1; }
  after=$(cpu "$pid")
  python3 - "$work/$name.json" "$name" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p95 = next(e["latency"] for e in r["latencyDistribution"] if e["percentage"] == 95) / 1e6
before, after = [list(map(int, a.split())) for a in sys.argv[3:5]]
ms = [(a - b) * 1000 / int(sys.argv[5]) for a, b in zip(after, before)]
codes = ", ".join(f"{k} {v}" for k, v in sorted(r["statusCodeDistribution"].items()))
print(f"| {sys.argv[2]} | {p95:.0f} | {r['slotgate']['makespan'] / 1e6:.0f} | {ms[0]:.0f} | {ms[1]:.0f} | {ms[2]:.0f} | {codes} |")
PY
}

say "warm-up bursts"
burst warmup-plain "$plain_pid" "$plain_addr" >/dev/null
burst warmup-tls "$tls_pid" "$tls_addr" >/dev/null

echo "| run | p95 (ms) | makespan (ms) | slotgate CPU (ms) | PostgreSQL CPU (ms) | Redis CPU (ms) | outcomes |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for r in $(seq 1 "$REPEATS"); do
  burst "plain.$r" "$plain_pid" "$plain_addr"
  burst "tls.$r" "$tls_pid" "$tls_addr"
done
