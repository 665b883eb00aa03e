#!/usr/bin/env bash
# Load benchmark for messaging-server: POST /api/messages/sms with wrk, then measure how
# long the workers take to persist what was accepted. See bench/README.md.
#
#   bash bench/run.sh
#
# Knobs (env): BENCH_DATABASES="sqlite postgres", BENCH_RUNS=3, BENCH_DURATION=20 (s),
# BENCH_CONNECTIONS=64, BENCH_QUEUE_CAPACITY=10000 (the default), BENCH_LOG_LEVEL=warn,
# BENCH_PG_URL=postgres://postgres@127.0.0.1:5432, BENCH_SERVER_ENV="K=V K2=V2",
# BENCH_SENDERS=10, BENCH_CONTACTS=1000, BENCH_DRAIN_TIMEOUT=300, BENCH_BUILD_WAIT=300,
# BENCH_RATE=0 (offered requests/s; 0 = as fast as the server answers, i.e. saturation),
# BENCH_AUTH=1 (0 = server with AUTH_REQUIRED=false and no key sent: what authentication costs).
# BENCH_BACKEND=memory (or nats: a private nats-server, one API process and one worker
# process, PostgreSQL; BENCH_DATABASES defaults to postgres then).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
cd "$ROOT"

BACKEND=${BENCH_BACKEND:-memory}
case $BACKEND in
    memory) DATABASES=${BENCH_DATABASES:-sqlite postgres} ;;
    nats) DATABASES=${BENCH_DATABASES:-postgres} ;;
    *) echo "BENCH_BACKEND accepts memory or nats" >&2; exit 2 ;;
esac
RUNS=${BENCH_RUNS:-3}
DURATION=${BENCH_DURATION:-20}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
QUEUE_CAPACITY=${BENCH_QUEUE_CAPACITY:-10000}
# warn, not the default info: info logs one line per processed event, which would make
# this a benchmark of the log writer.
LOG_LEVEL_USED=${BENCH_LOG_LEVEL:-warn}
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
SERVER_ENV=${BENCH_SERVER_ENV:-}
DRAIN_TIMEOUT=${BENCH_DRAIN_TIMEOUT:-300}
BUILD_WAIT=${BENCH_BUILD_WAIT:-300}
export BENCH_SENDERS=${BENCH_SENDERS:-10} BENCH_CONTACTS=${BENCH_CONTACTS:-1000}
export BENCH_RATE=${BENCH_RATE:-0} BENCH_CONNECTIONS=$CONNECTIONS
AUTH=${BENCH_AUTH:-1}
# The migrations' default customer: the benchmark's key sends for it.
DEFAULT_CUSTOMER=00000000-0000-0000-0000-000000000001

REPORT=(python3 "$BENCH_DIR/report.py")
# psql for admin statements (only here, so the server does not inherit PGOPTIONS);
# client_min_messages hides the NOTICE of DROP ... IF EXISTS.
pg() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$@"; }
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$BENCH_DIR/results/$STAMP"
RUNS_JSONL="$OUT/runs.jsonl"
mkdir -p "$OUT"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- cleanup: never leave a server or a bench database behind -----------------------
SERVER_PID=""   # the server (memory), or the API process (nats)
WORKER_PID=""   # nats: the worker process
NATS_PID=""     # nats: the private nats-server
PG_DB=""
TMP_DIR=""
stop_pid() {
    if [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; then
        kill -TERM "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
cleanup() {
    stop_pid "$SERVER_PID"
    stop_pid "$WORKER_PID"
    stop_pid "$NATS_PID"
    if [[ -n $PG_DB ]]; then
        pg -d "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [[ -n $TMP_DIR ]]; then rm -rf "$TMP_DIR"; fi
    SERVER_PID="" WORKER_PID="" NATS_PID="" PG_DB="" TMP_DIR=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. wrk -------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
fi

if [[ $BACKEND == nats ]] && ! command -v nats-server >/dev/null; then
    log "installing nats-server"
    apt-get install -y nats-server || { apt-get update && apt-get install -y nats-server; }
fi

# --- 2. build -------------------------------------------------------------------------
log "cargo build --release"
cargo build --release
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/messaging-server"
[[ -x $BIN ]] || { echo "no binary at $BIN" >&2; exit 1; }

if [[ " $DATABASES " == *" postgres "* ]]; then
    pg -d "$PG_URL/postgres" -c 'SELECT 1' >/dev/null \
        || { echo "PostgreSQL not reachable at $PG_URL (set BENCH_PG_URL or BENCH_DATABASES=sqlite)" >&2; exit 1; }
fi

# Other people's cargo builds on this 2-core machine would skew the numbers: wait for
# them (bounded), and record it if we had to run anyway.
busy_builds() { pgrep -x cargo >/dev/null || pgrep rustc >/dev/null; }
wait_for_builds() {
    local waited=0
    while busy_builds && (( waited < BUILD_WAIT )); do
        (( waited == 0 )) && log "another cargo/rustc is running; waiting up to ${BUILD_WAIT}s"
        sleep 5; waited=$(( waited + 5 ))
    done
    if busy_builds; then
        log "WARNING: still a cargo/rustc running; benchmarking anyway (numbers will be low)"
        return 1
    fi
}

GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && GIT_REV="$GIT_REV-dirty"

log "results in $OUT; backend=$BACKEND, LOG_LEVEL=$LOG_LEVEL_USED, wrk -t2 -c$CONNECTIONS -d${DURATION}s, queue.capacity=$QUEUE_CAPACITY"
"${REPORT[@]}" header

# --- 3. runs ----------------------------------------------------------------------------
run_one() {
    local db=$1 run=$2
    local dir="$OUT/$db-$run"
    mkdir -p "$dir"
    local busy=""
    wait_for_builds || busy="at start"

    # Fresh database for every run, so runs do not depend on each other.
    local url check_target
    if [[ $db == sqlite ]]; then
        TMP_DIR=$(mktemp -d /tmp/msgbench.XXXXXX)
        url="sqlite://$TMP_DIR/bench.db?mode=rwc"
        check_target="$TMP_DIR/bench.db"
    elif [[ $db == postgres ]]; then
        PG_DB="bench_${STAMP,,}_$run"
        pg -d "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS \"$PG_DB\"" -c "CREATE DATABASE \"$PG_DB\"" >/dev/null
        url="$PG_URL/$PG_DB"
        check_target=$url
    else
        echo "unknown database '$db' (sqlite or postgres)" >&2; exit 2
    fi

    # Authentication on (the product's default): a send key made with the CLI before the
    # start (so no bootstrap key is created), sent by sms.lua as a Bearer token.
    local auth_env="AUTH_REQUIRED=false"
    BENCH_API_KEY=""
    if [[ $AUTH == 1 ]]; then
        auth_env="AUTH_REQUIRED=true"
        BENCH_API_KEY=$(env DATABASE_URL="$url" LOG_LEVEL=warn "$BIN" keys create \
            --customer "$DEFAULT_CUSTOMER" --name bench --scope send 2>>"$dir/server.log")
    fi
    export BENCH_API_KEY

    local port
    port=$("${REPORT[@]}" freeport)
    local base="http://127.0.0.1:$port"
    # What the drain and the checks read: the server, or (nats) the worker process, with
    # the API process's enqueue counters.
    local metrics_base=$base enqueue_base=""
    if [[ $BACKEND == memory ]]; then
        # env execs the binary, so $! is the server's own pid (for /proc/PID/status).
        # shellcheck disable=SC2086  # BENCH_SERVER_ENV is a list of K=V words on purpose
        env DATABASE_URL="$url" PORT="$port" LOG_LEVEL="$LOG_LEVEL_USED" \
            MESSAGING__QUEUE__CAPACITY="$QUEUE_CAPACITY" "$auth_env" $SERVER_ENV \
            "$BIN" >"$dir/server.log" 2>&1 &
        SERVER_PID=$!
        "${REPORT[@]}" wait-ready "$base/readyz" 60 "$SERVER_PID" \
            || { cat "$dir/server.log" >&2; exit 1; }
    else
        [[ -n $TMP_DIR ]] || TMP_DIR=$(mktemp -d /tmp/msgbench.XXXXXX)
        local nats_port worker_port
        nats_port=$("${REPORT[@]}" freeport)
        worker_port=$("${REPORT[@]}" freeport)
        nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$TMP_DIR/nats" >"$dir/nats.log" 2>&1 &
        NATS_PID=$!
        local role rport
        for role in api worker; do
            rport=$port; [[ $role == worker ]] && rport=$worker_port
            # shellcheck disable=SC2086
            env DATABASE_URL="$url" PORT="$rport" LOG_LEVEL="$LOG_LEVEL_USED" \
                QUEUE_BACKEND=nats NATS_URL="nats://127.0.0.1:$nats_port" \
                MESSAGING__QUEUE__NATS__CONNECT_TIMEOUT=20s "$auth_env" $SERVER_ENV \
                "$BIN" serve --role "$role" >"$dir/$role.log" 2>&1 &
            if [[ $role == api ]]; then SERVER_PID=$!; else WORKER_PID=$!; fi
            "${REPORT[@]}" wait-ready "http://127.0.0.1:$rport/readyz" 60 "$!" \
                || { cat "$dir/$role.log" >&2; exit 1; }
        done
        metrics_base="http://127.0.0.1:$worker_port" enqueue_base=$base
        cat "$dir/api.log" "$dir/worker.log" >"$dir/server.log"
    fi

    BENCH_NONCE="$STAMP-$db-$run" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        -s "$BENCH_DIR/sms.lua" "$base/api/messages/sms" >"$dir/wrk.txt"
    local t_end
    t_end=$(date +%s.%N)
    "${REPORT[@]}" drain "$metrics_base" "$DRAIN_TIMEOUT" "$t_end" $enqueue_base >"$dir/drain.json"
    busy_builds && busy="${busy:+$busy and }during the run (seen at the end)"

    # Peak RSS over the server's whole life (nats: API + worker), read before it stops.
    local vmhwm_kb=0 pid kb
    for pid in $SERVER_PID $WORKER_PID; do
        kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
        vmhwm_kb=$(( vmhwm_kb + kb ))
    done

    # Graceful stop; the queue is already empty, so this should be quick.
    local server_exit=0
    for pid in $SERVER_PID $WORKER_PID; do
        kill -TERM "$pid"
        local t0=$SECONDS
        while kill -0 "$pid" 2>/dev/null && (( SECONDS - t0 < 60 )); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            log "process $pid did not stop within 60s of SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" || server_exit=$?
    done
    SERVER_PID="" WORKER_PID=""
    if [[ $BACKEND == nats ]]; then
        cat "$dir/api.log" "$dir/worker.log" >"$dir/server.log"
        stop_pid "$NATS_PID"; NATS_PID=""
    fi

    "${REPORT[@]}" dbcheck "$db" "$check_target" >"$dir/db.json"
    local label=$db
    [[ $BACKEND == nats ]] && label="$db+nats"

    python3 - "$dir/meta.json" <<EOF
import json, sys
json.dump({"db": "$label", "run": $run, "backend": "$BACKEND", "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
           "git_rev": "$GIT_REV", "host": "$(nproc) cores",
           "connections": $CONNECTIONS, "duration": $DURATION, "queue_capacity": $QUEUE_CAPACITY,
           "log_level": "$LOG_LEVEL_USED", "senders": $BENCH_SENDERS, "contacts": $BENCH_CONTACTS,
           "extra_env": """$SERVER_ENV""", "auth": $AUTH, "rate": $BENCH_RATE, "vmhwm_kb": $vmhwm_kb, "server_exit": $server_exit,
           "server_log_lines": $(wc -l <"$dir/server.log"), "busy": "$busy",
           "dir": "$dir"}, open(sys.argv[1], "w"))
EOF
    "${REPORT[@]}" record "$dir" | tee -a "$RUNS_JSONL" >"$dir/record.json"
    "${REPORT[@]}" row "$dir/record.json"
    cleanup
}

for db in $DATABASES; do
    for run in $(seq 1 "$RUNS"); do
        run_one "$db" "$run"
    done
done

# --- 4. summary -------------------------------------------------------------------------
echo
status=0
"${REPORT[@]}" summary "$RUNS_JSONL" "$BENCH_DIR/results/history.md" || status=$?
if (( status != 0 )); then
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! FAIL: a consistency check failed (see the FAIL lines above) !!!"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
fi
echo "(server LOG_LEVEL=$LOG_LEVEL_USED; raw output per run under $OUT; summary appended to bench/results/history.md)"
exit "$status"
