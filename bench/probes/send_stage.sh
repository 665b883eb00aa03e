#!/usr/bin/env bash
# The delivery stage alone (SPEC §13): its own send rate and CPU per message.
#   1. The server stores outbound SMS as fast as wrk sends them for SECONDS while the SMS
#      provider's circuit is open (an http provider on a closed port, opened by one call):
#      every stored message waits, due.
#   2. The server is killed (nothing is held: the open circuit made its sender give back
#      every message it was handed, and claims nothing) and started
#      again with the mock provider, and nothing else to do: the senders claim, call and
#      settle every due message. Sent/s from its start until nothing is due, and the CPU
#      per sent message of the server (and, on PostgreSQL, of every postgres process).
# CPU from /proc (utime + stime). Usage: bash bench/probes/send_stage.sh sqlite|postgres
# [SECONDS] (default 10); BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432) must
# reach a server where it may create and drop a database. Release build at
# $CARGO_TARGET_DIR or target/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/messaging-server
DB_KIND=${1:?usage: send_stage.sh sqlite|postgres [SECONDS]}
SECS=${2:-10}
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
[[ -x $BIN ]] || { echo "build first: cargo build --release ($BIN)" >&2; exit 1; }

# shellcheck source=bench/probes/lib.sh
source "$ROOT/bench/probes/lib.sh"

work=$(mktemp -d /tmp/send-stage.XXXXXX)
db=send_stage_$$
server=
cleanup() {
    [[ -n $server ]] && kill -KILL "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    [[ $DB_KIND == postgres ]] && psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
case $DB_KIND in
    sqlite) url="sqlite://$work/probe.db?mode=rwc" ;;
    postgres)
        psql -q "$PG_URL/postgres" -c "CREATE DATABASE $db" >/dev/null
        url="$PG_URL/$db"
        ;;
    *) echo "sqlite or postgres, not $DB_KIND" >&2; exit 2 ;;
esac
env DATABASE_URL="$url" LOG_LEVEL=warn "$BIN" migrate up >/dev/null 2>&1
key=$(env DATABASE_URL="$url" LOG_LEVEL=warn "$BIN" keys create \
    --customer 00000000-0000-0000-0000-000000000001 --name probe --scope send 2>/dev/null)
port=$(freeport) closed=$(freeport)
base="http://127.0.0.1:$port"
start() {  # LOG ENV...: the server, in the background ($server)
    local log=$1
    shift
    env DATABASE_URL="$url" PORT="$port" LOG_LEVEL=warn AUTH_REQUIRED=true "$@" \
        "$BIN" serve >"$work/$log" 2>&1 &
    server=$!
    wait_ready "$base"
}

# 1. Stored, not sent: the circuit opened by a first call to nothing.
start store.log MESSAGING__PROVIDERS__SMS__KIND=http \
    MESSAGING__PROVIDERS__SMS__URL="http://127.0.0.1:$closed/" \
    MESSAGING__PROVIDERS__SMS__BREAKER_FAILURES=1 MESSAGING__PROVIDERS__SMS__BREAKER_COOLDOWN=1h
curl -sf -o /dev/null -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d '{"from":"+12016660000","to":"+18045550000","type":"sms","body":"opens the circuit","timestamp":"2026-12-05T00:00:00Z"}' \
    "$base/api/messages/sms"
circuit_open() { [[ $(metric "$base" messaging_provider_circuit_state 'provider="sms"') == 2 ]]; }
wait_for 30 "the SMS circuit to open" circuit_open
BENCH_API_KEY=$key BENCH_NONCE=$$-$RANDOM wrk -t2 -c64 -d"${SECS}s" \
    -s "$ROOT/bench/sms.lua" "$base/api/messages/sms" >"$work/wrk.txt"
ingested() { [[ $(metric "$base" messaging_queue_depth) == 0 ]]; }
wait_for 120 "the queue to drain" ingested
stored=$(metric "$base" messaging_worker_processed_total 'outcome="stored"')
# Stored messages are leased to this process's sender, which gives them back (due) while
# the circuit is open; killed before that, they would wait for their lease to run out.
given_back() { (( $(metric "$base" messaging_delivery_due) >= stored - 1 )); }
wait_for 120 "every stored message to be given back, due" given_back
kill -KILL "$server"
wait "$server" 2>/dev/null || true
echo "stored $stored outbound SMS with the provider's circuit open (${SECS} s of wrk)"

# 2. Nothing but sending: the mock provider, every stored message due.
p0=0
[[ $DB_KIND == postgres ]] && p0=$(pg_ticks)
t0=$(date +%s.%N)
start send.log
sent() { metric "$base" messaging_provider_requests_total 'outcome="sent"'; }
# The circuit-opening message waits out its retry delay: all but it.
all_sent() { (( $(sent) >= stored - 1 )); }
wait_for 600 "every due message to be sent" all_sent
t1=$(date +%s.%N)
s1=$(ticks "$server")
p1=0
[[ $DB_KIND == postgres ]] && p1=$(pg_ticks)
n=$(sent)
secs=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
echo "sent $n in $secs s (from the start of the process): $(python3 -c "print(round($n / ($t1 - $t0)))") msg/s;" \
    "CPU per sent message: server $(per_msg "$n" "$s1") µs$([[ $DB_KIND == postgres ]] && echo ", postgres $(per_msg "$n" "$((p1 - p0))") µs")"
