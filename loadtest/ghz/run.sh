#!/usr/bin/env sh
# Runs one of the seed's scenarios with real ghz against a deployed slotgate,
# into a fresh slot of the seed's restaurant, from the repository root:
#
#   loadtest/ghz/run.sh duplicate-2000 slotgate.example.internal:50051 [ghz options...]
#
# The scenarios, the restaurant, the slot's capacity and the party size are
# those of loadtest/scenarios.json (the configs and call data here are
# generated from it). Each run needs an empty slot (a slot booked by an
# earlier run would only answer SOLD_OUT): this opens one at the current UTC
# minute with grpcurl (OpenSlots; pass credentials as grpcurl would need them
# in GRPCURL_FLAGS), then points the scenario's call data at it. Needs ghz
# and grpcurl.
#
# Environment: SLOTGATE_TOKEN, an admin caller's bearer token when the
# deployment has authentication on (sent to both tools); GRPCURL_FLAGS,
# grpcurl's transport flags (default -plaintext; e.g. "-cacert ca.pem");
# SLOT_DATE (the definition's date). ghz's own TLS flags go after HOST.
set -eu
scenario=${1:?usage: run.sh SCENARIO HOST [ghz options...]}
host=${2:?usage: run.sh SCENARIO HOST [ghz options...]}
shift 2
dir=$(dirname "$0")
config="$dir/$scenario.json"
[ -f "$config" ] || { echo "no scenario $scenario (see $dir/*.json)" >&2; exit 2; }

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

time=$(date -u +%H:%M)
date_=${SLOT_DATE:-$seed_date}
auth=
[ -n "${SLOTGATE_TOKEN:-}" ] && auth="authorization: Bearer $SLOTGATE_TOKEN"
# shellcheck disable=SC2086
grpcurl ${GRPCURL_FLAGS:--plaintext} ${auth:+-H "$auth"} -d "{\"slots\":[{\"slot\":{\"restaurant_id\":$restaurant,\"date\":\"$date_\",\"time\":\"$time\"},\"capacity\":$capacity}]}" \
  "$host" slotgate.v1.SlotAdmin/OpenSlots >/dev/null
data_file=$(sed -n 's/.*"data-file": *"\([^"]*\)".*/\1/p' "$config")
data=$(mktemp)
trap 'rm -f "$data"' EXIT
sed -e "s/\"time\": \"$seed_time\"/\"time\": \"$time\"/" -e "s/\"date\": \"$seed_date\"/\"date\": \"$date_\"/" "$data_file" > "$data"
echo "$scenario into $restaurant $date_ $time" >&2
if [ -n "$auth" ]; then
  ghz --config "$config" --data-file "$data" --metadata "{\"authorization\":\"Bearer $SLOTGATE_TOKEN\"}" "$@" "$host"
else
  ghz --config "$config" --data-file "$data" "$@" "$host"
fi
