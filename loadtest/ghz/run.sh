#!/usr/bin/env sh
# Runs one of the seed's scenarios with real ghz against a deployed slotgate,
# into a fresh slot of the seed's restaurant, from the repository root:
#
#   loadtest/ghz/run.sh duplicate-2000 slotgate.example.internal:50051 [ghz options...]
#   loadtest/ghz/run.sh duplicate-2000 HOST --opens-in 3 --early 2000 [ghz options...]
#
# The scenarios, the restaurant, the slot's capacity and the party size are
# those of loadtest/scenarios.json (the configs and call data here are
# generated from it). Each run needs an empty slot (a slot booked by an
# earlier run would only answer SOLD_OUT): this opens one at the current UTC
# minute with grpcurl (OpenSlots; pass credentials as grpcurl would need them
# in GRPCURL_FLAGS), then points the scenario's call data at it. Needs ghz
# and grpcurl.
#
# A slot's opening, with these two right after HOST:
#   --opens-in SECONDS  (a whole number) the slot is opened with its sale
#       window starting (opens_at, RFC 3339) at the first whole second more
#       than SECONDS from now, by this machine's clock. After the early
#       calls, GetRemaining must say NOT_YET_OPEN with every seat left (else
#       exit 1: seats went before the opening). The script waits until
#       opens_at, then starts ghz as usual: ghz's own start-up (reading the
#       proto, connecting) comes after the instant, so its calls arrive just
#       after the opening, never before it.
#   --early N  (needs --opens-in 2 or more) first, N calls into the closed
#       slot with ghz, spread evenly at ceil(N / (SECONDS - 1)) calls/s
#       (--rps), so they end a second or more before the opening. Their
#       request ids and users are the scenario's prefixed with "early-".
#       Every one must be FailedPrecondition (SLOT_NOT_OPEN): its ghz
#       summary goes to stderr. It gets the ghz options given here except
#       those it sets itself (-n, -c, --rps, --connections, -z, -x, -O, -o).
#
# Environment: SLOTGATE_TOKEN, an admin caller's bearer token when the
# deployment has authentication on (sent to both tools); GRPCURL_FLAGS,
# grpcurl's transport flags (default -plaintext; e.g. "-cacert ca.pem");
# SLOT_DATE (the definition's date). ghz's own TLS flags go after HOST (and
# after --opens-in and --early).
set -eu
usage="usage: run.sh SCENARIO HOST [--opens-in SECONDS [--early N]] [ghz options...]"
scenario=${1:?$usage}
host=${2:?$usage}
shift 2
dir=$(dirname "$0")
config="$dir/$scenario.json"
[ -f "$config" ] || { echo "no scenario $scenario (see $dir/*.json)" >&2; exit 2; }

opens_in=
early=0
while [ $# -gt 0 ]; do
  case $1 in
    --opens-in) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; opens_in=$2; shift 2 ;;
    --opens-in=*) opens_in=${1#*=}; shift ;;
    --early) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; early=$2; shift 2 ;;
    --early=*) early=${1#*=}; shift ;;
    *) break ;;
  esac
done
case $early in '' | *[!0-9]*) echo "--early $early: a whole number of calls" >&2; exit 2 ;; esac
if [ -n "$opens_in" ]; then
  case $opens_in in *[!0-9]*) echo "--opens-in $opens_in: whole seconds, e.g. 3" >&2; exit 2 ;; esac
  if [ "$early" -gt 0 ] && [ "$opens_in" -lt 2 ]; then
    echo "--early needs --opens-in 2 or more: the early calls end a second before the opening" >&2
    exit 2
  fi
elif [ "$early" -gt 0 ]; then
  echo "--early needs --opens-in: early calls go before a slot's opening" >&2
  exit 2
fi

# seed KEY: a top-level value of the definition, which has one per line.
definition="$dir/../scenarios.json"
seed() {
  sed -n "s/^  \"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$definition"
}
restaurant=$(seed restaurant_id)
capacity=$(seed capacity)
seed_date=$(seed date)
seed_time=$(seed time)
if [ -z "$restaurant" ] || [ -z "$capacity" ] || [ -z "$seed_date" ] || [ -z "$seed_time" ]; then
  echo "$definition: restaurant_id, capacity, date or time not found" >&2
  exit 2
fi

# rfc3339 UNIX_SECONDS: that instant in UTC (GNU date, else BSD date).
rfc3339() {
  date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r "$1" +%Y-%m-%dT%H:%M:%SZ
}

# wait_until UNIX_SECONDS: returns once this machine's clock reads it or later.
wait_until() {
  now=$(date +%s)
  if [ $(($1 - now)) -gt 1 ]; then sleep $(($1 - now - 1)); fi
  while [ "$(date +%s)" -lt "$1" ]; do sleep 0.01; done
}

time=$(date -u +%H:%M)
date_=${SLOT_DATE:-$seed_date}
auth=
[ -n "${SLOTGATE_TOKEN:-}" ] && auth="authorization: Bearer $SLOTGATE_TOKEN"
slot="{\"restaurant_id\":$restaurant,\"date\":\"$date_\",\"time\":\"$time\"}"
window=
if [ -n "$opens_in" ]; then
  opens=$(($(date +%s) + opens_in + 1))
  opens_at=$(rfc3339 "$opens")
  window=",\"opens_at\":\"$opens_at\""
fi
# grpcurl_call METHOD JSON: one call with the transport flags and token.
grpcurl_call() {
  # shellcheck disable=SC2086
  grpcurl ${GRPCURL_FLAGS:--plaintext} ${auth:+-H "$auth"} -d "$2" "$host" "$1"
}
grpcurl_call slotgate.v1.SlotAdmin/OpenSlots "{\"slots\":[{\"slot\":$slot,\"capacity\":$capacity$window}]}" >/dev/null
data_file=$(sed -n 's/.*"data-file": *"\([^"]*\)".*/\1/p' "$config")
data=$(mktemp)
early_data=$(mktemp)
trap 'rm -f "$data" "$early_data"' EXIT
sed -e "s/\"time\": \"$seed_time\"/\"time\": \"$time\"/" -e "s/\"date\": \"$seed_date\"/\"date\": \"$date_\"/" "$data_file" > "$data"
[ -n "$auth" ] && set -- --metadata "{\"authorization\":\"Bearer $SLOTGATE_TOKEN\"}" "$@"

if [ -n "$opens_in" ]; then
  echo "$scenario into $restaurant $date_ $time, which opens at $opens_at" >&2
  if [ "$early" -gt 0 ]; then
    # The early run's own options replace these of the ones given; the
    # rest (TLS, metadata, ...) are passed on, each word quoted for eval.
    quote() { printf "'%s' " "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
    early_args=
    skip=
    for arg in "$@"; do
      if [ -n "$skip" ]; then skip=; continue; fi
      case $arg in
        -[nczrxoO] | --total | --concurrency | --rps | --qps | --connections | --duration | --max-duration | \
          --format | --output) skip=1 ;;
        -[nczrxoO]?* | --total=* | --concurrency=* | --rps=* | --qps=* | --connections=* | --duration=* | \
          --max-duration=* | --format=* | --output=*) ;;
        *) early_args="$early_args$(quote "$arg")" ;;
      esac
    done
    sed -e 's/"request_id": "/"request_id": "early-/' -e 's/"user_id": "/"user_id": "early-/' "$data" > "$early_data"
    rate=$(((early + opens_in - 2) / (opens_in - 1)))
    workers=$((early < 50 ? early : 50))
    # shellcheck disable=SC2034 # used in the eval below
    connections=$((workers < 8 ? workers : 8))
    echo "$early early calls at $rate/s before the opening (every one must be FailedPrecondition, SLOT_NOT_OPEN):" >&2
    eval "ghz --config \"\$config\" --data-file \"\$early_data\" -n \"\$early\" -c \"\$workers\" \
      --connections \"\$connections\" --rps \"\$rate\" --format summary $early_args \"\$host\"" >&2
  fi
  left=$(grpcurl_call slotgate.v1.Reservations/GetRemaining "{\"slot\":$slot}")
  remaining=$(printf '%s\n' "$left" | sed -n 's/.*"remaining": *\([0-9]*\).*/\1/p')
  case $left in
    *'"NOT_YET_OPEN"'*) ;;
    *) echo "the slot is not NOT_YET_OPEN before its opening: $left" >&2; exit 1 ;;
  esac
  if [ "$remaining" != "$capacity" ]; then
    echo "seats went before the opening: GetRemaining says ${remaining:-0} of $capacity left" >&2
    exit 1
  fi
  wait_until "$opens"
fi
echo "$scenario into $restaurant $date_ $time" >&2
ghz --config "$config" --data-file "$data" "$@" "$host"
