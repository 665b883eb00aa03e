#!/usr/bin/env bash
# Webhooks to customers (SPEC §15): what they cost the store rate, and how fast they go.
#   1. Without an endpoint: wrk sends SMS for SECONDS (mock provider); stored/s from the
#      first request until the queue is drained.
#   2. The same on a fresh database with one endpoint for every event type, at a local sink
#      (bench/probes/webhook_sink.py: 204 at once): stored/s the same way, so the
#      difference is the cost of recording each event in the status change's transaction
#      and of delivering it meanwhile; then deliveries/s as the sink saw them, from its
#      first request to its last once nothing is pending.
# Usage: bash bench/probes/webhooks.sh sqlite|postgres [SECONDS] (default 10);
# BENCH_PG_URL as in send_stage.sh. Release build at $CARGO_TARGET_DIR or target/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/messaging-server
DB_KIND=${1:?usage: webhooks.sh sqlite|postgres [SECONDS]}
SECS=${2:-10}
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
[[ -x $BIN ]] || { echo "build first: cargo build --release ($BIN)" >&2; exit 1; }

# shellcheck source=bench/probes/lib.sh
source "$ROOT/bench/probes/lib.sh"

work=$(mktemp -d /tmp/webhooks-probe.XXXXXX)
server= sink=
dbs=()
cleanup() {
    [[ -n $server ]] && kill -KILL "$server" 2>/dev/null || true
    [[ -n $sink ]] && kill -KILL "$sink" 2>/dev/null || true
    wait 2>/dev/null || true
    for db in "${dbs[@]}"; do
        psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# run NAME WITH_ENDPOINT: one phase on a fresh database; prints its figures.
run() {
    local name=$1 with_endpoint=$2 url
    case $DB_KIND in
        sqlite) url="sqlite://$work/$name.db?mode=rwc" ;;
        postgres)
            local db=webhooks_${name}_$$
            dbs+=("$db")
            psql -q "$PG_URL/postgres" -c "CREATE DATABASE $db" >/dev/null
            url="$PG_URL/$db"
            ;;
        *) echo "sqlite or postgres, not $DB_KIND" >&2; exit 2 ;;
    esac
    env DATABASE_URL="$url" LOG_LEVEL=warn "$BIN" migrate up >/dev/null 2>&1
    local key port base
    key=$(env DATABASE_URL="$url" LOG_LEVEL=warn "$BIN" keys create \
        --customer 00000000-0000-0000-0000-000000000001 --name probe --scope send 2>/dev/null)
    port=$(freeport)
    base="http://127.0.0.1:$port"
    if [[ $with_endpoint == yes ]]; then
        local sink_port
        sink_port=$(freeport)
        python3 "$ROOT/bench/probes/webhook_sink.py" "$sink_port" "$work/sink.txt" &
        sink=$!
        env DATABASE_URL="$url" LOG_LEVEL=warn MESSAGING__WEBHOOKS__ALLOW_PRIVATE=true "$BIN" \
            webhooks create --customer 00000000-0000-0000-0000-000000000001 \
            --url "http://127.0.0.1:$sink_port/hooks" >/dev/null 2>&1
    fi
    env DATABASE_URL="$url" PORT="$port" LOG_LEVEL=warn MESSAGING__WEBHOOKS__ALLOW_PRIVATE=true \
        "$BIN" serve >"$work/$name.log" 2>&1 &
    server=$!
    wait_ready "$base"
    local t0 t1 stored
    t0=$(date +%s.%N)
    BENCH_API_KEY=$key BENCH_NONCE=$$-$RANDOM wrk -t2 -c64 -d"${SECS}s" \
        -s "$ROOT/bench/sms.lua" "$base/api/messages/sms" >"$work/$name-wrk.txt"
    drained() { [[ $(metric "$base" messaging_queue_depth) == 0 ]]; }
    wait_for 300 "the queue to drain" drained
    t1=$(date +%s.%N)
    stored=$(metric "$base" messaging_worker_processed_total 'outcome="stored"')
    echo "$name: stored $stored in $(python3 -c "print(f'{$t1 - $t0:.2f}')") s: $(python3 -c "print(round($stored / ($t1 - $t0)))") stored/s"
    if [[ $with_endpoint == yes ]]; then
        settled() { [[ $(metric "$base" messaging_webhook_pending) == 0 ]] && (( $(metric "$base" messaging_webhook_deliveries_total 'outcome="delivered"') >= stored )); }
        wait_for 900 "every event delivered" settled
        sleep 0.3  # the sink's next report
        read -r n first last <"$work/sink.txt"
        echo "$name: the sink took $n deliveries in $(python3 -c "print(f'{$last - $first:.2f}')") s: $(python3 -c "print(round($n / ($last - $first)))") deliveries/s" \
            "(retried: $(metric "$base" messaging_webhook_deliveries_total 'outcome="retry"'))"
        kill -KILL "$sink"
        sink=
    fi
    kill -KILL "$server"
    wait "$server" 2>/dev/null || true
    server=
}

run plain no
run webhooks yes
