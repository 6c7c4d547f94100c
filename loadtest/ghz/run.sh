#!/usr/bin/env sh
# Runs one of the seed's scenarios with real ghz against a deployed slotgate,
# into a fresh 40-seat slot of restaurant 67, from the repository root:
#
#   loadtest/ghz/run.sh duplicate-2000 slotgate.example.internal:50051 [ghz options...]
#
# Each run needs an empty slot (a slot booked by an earlier run would only
# answer SOLD_OUT): this opens one at the current UTC minute with grpcurl
# (OpenSlots; pass credentials as grpcurl would need them in GRPCURL_FLAGS),
# then points the scenario's call data at it. Needs ghz and grpcurl.
#
# Environment: SLOTGATE_TOKEN, an admin caller's bearer token when the
# deployment has authentication on (sent to both tools); GRPCURL_FLAGS,
# grpcurl's transport flags (default -plaintext; e.g. "-cacert ca.pem");
# SLOT_DATE (2026-12-24). ghz's own TLS flags go after HOST.
set -eu
scenario=${1:?usage: run.sh SCENARIO HOST [ghz options...]}
host=${2:?usage: run.sh SCENARIO HOST [ghz options...]}
shift 2
dir=$(dirname "$0")
config="$dir/$scenario.json"
[ -f "$config" ] || { echo "no scenario $scenario (see $dir/*.json)"; exit 2; }
time=$(date -u +%H:%M)
date_=${SLOT_DATE:-2026-12-24}
auth=
[ -n "${SLOTGATE_TOKEN:-}" ] && auth="authorization: Bearer $SLOTGATE_TOKEN"
# shellcheck disable=SC2086
grpcurl ${GRPCURL_FLAGS:--plaintext} ${auth:+-H "$auth"} -d "{\"slots\":[{\"slot\":{\"restaurant_id\":67,\"date\":\"$date_\",\"time\":\"$time\"},\"capacity\":40}]}" \
  "$host" slotgate.v1.SlotAdmin/OpenSlots >/dev/null
data_file=$(sed -n 's/.*"data-file": *"\([^"]*\)".*/\1/p' "$config")
data=$(mktemp)
sed -e "s/\"time\": \"19:00\"/\"time\": \"$time\"/" -e "s/\"date\": \"2026-12-24\"/\"date\": \"$date_\"/" "$data_file" > "$data"
echo "$scenario into 67 $date_ $time" >&2
if [ -n "$auth" ]; then
  ghz --config "$config" --data-file "$data" --metadata "{\"authorization\":\"Bearer $SLOTGATE_TOKEN\"}" "$@" "$host"
else
  ghz --config "$config" --data-file "$data" "$@" "$host"
fi
rm -f "$data"
