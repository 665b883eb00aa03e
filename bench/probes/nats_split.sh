#!/usr/bin/env bash
# The two halves of the NATS deployment, each with the box to itself (PostgreSQL + NATS):
#   1. nats-server and the API process only: wrk at saturation, as the benchmark's
#      saturation phase (accepted/s, p99, CPU per accepted message of the API process and
#      of nats-server: the publishes);
#   2. then the worker process only, draining what phase 1 queued (stored/s, CPU per stored
#      message of the worker, nats-server (deliveries and acks) and the PostgreSQL backends).
# CPU from /proc (utime + stime). Usage: bash bench/probes/nats_split.sh [SECONDS] (default
# 20); BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432) must reach a server where
# it may create and drop a database. Release build at $CARGO_TARGET_DIR or target/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/messaging-server
SECS=${1:-20}
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
[[ -x $BIN ]] || { echo "build first: cargo build --release ($BIN)" >&2; exit 1; }

# shellcheck source=bench/probes/lib.sh
source "$ROOT/bench/probes/lib.sh"

work=$(mktemp -d /tmp/nats-split.XXXXXX)
db=nats_split_$$
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
psql -q "$PG_URL/postgres" -c "CREATE DATABASE $db" >/dev/null
url="$PG_URL/$db"
key=$(env DATABASE_URL="$url" LOG_LEVEL=warn "$BIN" keys create \
    --customer 00000000-0000-0000-0000-000000000001 --name probe --scope send 2>/dev/null)
nats_port=$(freeport) api_port=$(freeport) worker_port=$(freeport)
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/js" >"$work/nats.log" 2>&1 &
nats=$!; pids+=("$nats")
until (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null; do sleep 0.1; done
run() {  # ROLE PORT
    env DATABASE_URL="$url" PORT="$2" LOG_LEVEL=warn AUTH_REQUIRED=true QUEUE_BACKEND=nats \
        NATS_URL="nats://127.0.0.1:$nats_port" "$BIN" serve --role "$1" >"$work/$1.log" 2>&1 &
    pids+=("$!")
}

run api "$api_port"; api=$!
wait_ready "http://127.0.0.1:$api_port"
n0=$(ticks "$nats") a0=$(ticks "$api")
BENCH_API_KEY=$key BENCH_NONCE=$$-$RANDOM wrk -t2 -c64 -d"${SECS}s" --latency \
    -s "$ROOT/bench/sms.lua" "http://127.0.0.1:$api_port/api/messages/sms" >"$work/wrk.txt"
n1=$(ticks "$nats") a1=$(ticks "$api")
accepted=$(metric "http://127.0.0.1:$api_port" messaging_queue_enqueued_total)
echo "API + nats-server alone: $(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt") req/s answered, $accepted accepted," \
    "p99 $(awk '/ 99%/ {print $2}' "$work/wrk.txt"); CPU per accepted message: API $(per_msg "$accepted" "$a1 - $a0") µs," \
    "nats-server $(per_msg "$accepted" "$n1 - $n0") µs (publishes)"

t0=$(date +%s.%N) n0=$(ticks "$nats")
run worker "$worker_port"; worker=$!
wait_ready "http://127.0.0.1:$worker_port"
w0=$(ticks "$worker") g0=$(pg_ticks)
until (( $(metric "http://127.0.0.1:$worker_port" 'messaging_worker_processed_total[{]outcome="stored"') >= accepted )); do sleep 0.05; done
t1=$(date +%s.%N) n1=$(ticks "$nats") w1=$(ticks "$worker") g1=$(pg_ticks)
echo "worker + nats-server + PostgreSQL alone: stored $accepted in $(python3 -c "print(round($t1 - $t0, 1))") s" \
    "(from the worker's start) = $(python3 -c "print(round($accepted / ($t1 - $t0)))") msg/s; CPU per stored message:" \
    "worker $(per_msg "$accepted" "$w1 - $w0") µs, nats-server $(per_msg "$accepted" "$n1 - $n0") µs (deliveries, acks)," \
    "PostgreSQL $(per_msg "$accepted" "$g1 - $g0") µs"
