#!/usr/bin/env bash
# Load benchmark for messaging-server. For each database and queue backend, and each run:
# the /healthz ceiling, POST /api/messages/sms at saturation (with a 1 Hz time series) and
# at a fixed offered rate, CPU time per stored message, and (memory queue) the RSS of a
# 100,000-event backlog; consistency checks after every load. Writes a summary to
# bench/results/history.md and a chart (SVG). See bench/README.md.
#
#   bash bench/run.sh                       # everything (about 20 minutes)
#   BENCH_QUICK=1 bash bench/run.sh         # smoke run: 1 run of 5 s per combination
#
# Knobs (env; bench/README.md has the table): BENCH_DATABASES="sqlite postgres",
# BENCH_BACKENDS="memory nats", BENCH_PHASES="healthz saturation fixed backlog",
# BENCH_RUNS=3, BENCH_DURATION=20 (s), BENCH_THREADS=2, BENCH_CONNECTIONS=64,
# BENCH_RATE=10000 (offered requests/s of the fixed-rate phase), BENCH_BACKLOG_EVENTS=100000,
# BENCH_QUEUE_CAPACITY=10000, BENCH_LOG_LEVEL=warn, BENCH_PG_URL, BENCH_SERVER_ENV="K=V ...",
# BENCH_SENDERS=10, BENCH_CONTACTS=1000, BENCH_AUTH=1, BENCH_DRAIN_TIMEOUT=300,
# BENCH_BUILD_WAIT=300, BENCH_STOP_TIMEOUT=120, BENCH_CHART_OUT (copy the chart there,
# e.g. docs/bench.svg), BENCH_MACHINE (the machine's name in titles), BENCH_QUICK=1,
# BENCH_HISTORY=bench/results/history.md (none: do not append; the default with BENCH_QUICK=1).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
cd "$ROOT"

# BENCH_QUICK=1 only changes defaults; a knob set explicitly still wins.
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    # A smoke run's figures are not figures: not appended to history.md by default.
    d_runs=1 d_duration=5 d_backlog=20000 d_history=none
else
    d_runs=3 d_duration=20 d_backlog=100000 d_history=$BENCH_DIR/results/history.md
fi
HISTORY=${BENCH_HISTORY:-$d_history}
# BENCH_BACKEND (one backend) is the older name of BENCH_BACKENDS.
BACKENDS=${BENCH_BACKENDS:-${BENCH_BACKEND:-memory nats}}
DATABASES=${BENCH_DATABASES:-sqlite postgres}
PHASES=${BENCH_PHASES:-healthz saturation fixed backlog}
RUNS=${BENCH_RUNS:-$d_runs}
DURATION=${BENCH_DURATION:-$d_duration}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
FIXED_RATE=${BENCH_RATE:-10000}
BACKLOG_EVENTS=${BENCH_BACKLOG_EVENTS:-$d_backlog}
QUEUE_CAPACITY=${BENCH_QUEUE_CAPACITY:-10000}
# warn, not the default info: the figures of earlier runs were taken at warn, when info
# still logged a line per processed event (now a 10 s summary; BENCH_LOG_LEVEL=info measures it).
LOG_LEVEL_USED=${BENCH_LOG_LEVEL:-warn}
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
SERVER_ENV=${BENCH_SERVER_ENV:-}
DRAIN_TIMEOUT=${BENCH_DRAIN_TIMEOUT:-300}
BUILD_WAIT=${BENCH_BUILD_WAIT:-300}
STOP_TIMEOUT=${BENCH_STOP_TIMEOUT:-120}
CHART_OUT=${BENCH_CHART_OUT:-}
AUTH=${BENCH_AUTH:-1}
export BENCH_SENDERS=${BENCH_SENDERS:-10} BENCH_CONTACTS=${BENCH_CONTACTS:-1000}
export BENCH_CONNECTIONS=$CONNECTIONS BENCH_THREADS=$THREADS
# The migrations' default customer: the benchmark's key sends for it.
DEFAULT_CUSTOMER=00000000-0000-0000-0000-000000000001

for b in $BACKENDS; do
    [[ $b == memory || $b == nats ]] || { echo "BENCH_BACKENDS accepts memory and nats, not '$b'" >&2; exit 2; }
done
for d in $DATABASES; do
    [[ $d == sqlite || $d == postgres ]] || { echo "BENCH_DATABASES accepts sqlite and postgres, not '$d'" >&2; exit 2; }
done
for p in $PHASES; do
    [[ " healthz saturation fixed backlog " == *" $p "* ]] \
        || { echo "BENCH_PHASES accepts healthz saturation fixed backlog, not '$p'" >&2; exit 2; }
done
has_phase() { [[ " $PHASES " == *" $1 "* ]]; }
if has_phase fixed && ! (( FIXED_RATE > 0 )); then
    echo "BENCH_RATE must be > 0 for the fixed-rate phase (or leave 'fixed' out of BENCH_PHASES)" >&2; exit 2
fi

REPORT=(python3 "$BENCH_DIR/report.py")
# psql for admin statements (only here, so the server does not inherit PGOPTIONS);
# client_min_messages hides the NOTICE of DROP ... IF EXISTS.
pg() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$@"; }
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$BENCH_DIR/results/$STAMP"
RUNS_JSONL="$OUT/runs.jsonl"
mkdir -p "$OUT"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- cleanup: never leave a process or a bench database behind ------------------------
SERVER_PID=""   # the server (memory), or the API process (nats)
WORKER_PID=""   # nats: the worker process
NATS_PID=""     # nats: the private nats-server
SAMPLER_PID=""  # the 1 Hz /metrics sampler
PG_DBS=()       # PostgreSQL databases created by this script, not dropped yet
TMP_DIRS=()     # SQLite files and NATS stores
stop_pid() {
    if [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; then
        kill -TERM "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
cleanup() {
    stop_pid "$SAMPLER_PID"
    stop_pid "$SERVER_PID"
    stop_pid "$WORKER_PID"
    stop_pid "$NATS_PID"
    local d
    for d in "${PG_DBS[@]}"; do
        pg -d "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS \"$d\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
    for d in "${TMP_DIRS[@]}"; do rm -rf "$d"; done
    SAMPLER_PID="" SERVER_PID="" WORKER_PID="" NATS_PID="" PG_DBS=() TMP_DIRS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. tools -------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
fi
if [[ " $BACKENDS " == *" nats "* ]] && ! command -v nats-server >/dev/null; then
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
MACHINE=${BENCH_MACHINE:-$("${REPORT[@]}" machine)}

# Settings shared by every run, read by report.py (record, summary) and chart.py.
python3 - "$OUT/settings.json" <<EOF
import json, sys
json.dump({"date": "$(date -u '+%Y-%m-%d %H:%M UTC')", "git_rev": "$GIT_REV", "machine": """$MACHINE""",
           "host": "$(nproc) cores", "threads": $THREADS, "connections": $CONNECTIONS,
           "duration": $DURATION, "queue_capacity": $QUEUE_CAPACITY, "log_level": "$LOG_LEVEL_USED",
           "senders": $BENCH_SENDERS, "contacts": $BENCH_CONTACTS, "extra_env": """$SERVER_ENV""",
           "auth": $AUTH, "fixed_rate": $FIXED_RATE, "backlog_events": $BACKLOG_EVENTS,
           "phases": "$PHASES", "runs": $RUNS}, open(sys.argv[1], "w"))
EOF

log "results in $OUT; backends=[$BACKENDS] databases=[$DATABASES] phases=[$PHASES] runs=$RUNS"
log "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, fixed rate $FIXED_RATE/s, backlog $BACKLOG_EVENTS events, LOG_LEVEL=$LOG_LEVEL_USED, queue.capacity=$QUEUE_CAPACITY"

# --- 3. building blocks -----------------------------------------------------------------

# Fresh database for every phase, so phases and runs do not depend on each other.
# Sets URL (for the server) and CHECK_TARGET (for report.py dbcheck).
URL="" CHECK_TARGET=""
fresh_db() {  # DB NAME
    if [[ $1 == sqlite ]]; then
        local d
        d=$(mktemp -d /tmp/msgbench.XXXXXX)
        TMP_DIRS+=("$d")
        URL="sqlite://$d/bench.db?mode=rwc"
        CHECK_TARGET="$d/bench.db"
    else
        local name="bench_${STAMP,,}_${2//[^a-z0-9]/_}"
        pg -d "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS \"$name\"" -c "CREATE DATABASE \"$name\"" >/dev/null
        PG_DBS+=("$name")
        URL="$PG_URL/$name"
        CHECK_TARGET=$URL
    fi
}
drop_dbs() {
    local d
    for d in "${PG_DBS[@]}"; do
        pg -d "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS \"$d\" WITH (FORCE)" >/dev/null
    done
    for d in "${TMP_DIRS[@]}"; do rm -rf "$d"; done
    PG_DBS=() TMP_DIRS=()
}

# Authentication on (the product's default): a send key made with the CLI before the
# start (so no bootstrap key is created), sent by sms.lua as a Bearer token.
AUTH_ENV="AUTH_REQUIRED=false"
make_key() {  # DIR (its keys.log gets the command's messages)
    BENCH_API_KEY=""
    if [[ $AUTH == 1 ]]; then
        AUTH_ENV="AUTH_REQUIRED=true"
        # A fresh database: only `migrate up` (or `serve`) creates one.
        env DATABASE_URL="$URL" LOG_LEVEL=warn "$BIN" migrate up >/dev/null 2>>"$1/keys.log"
        BENCH_API_KEY=$(env DATABASE_URL="$URL" LOG_LEVEL=warn "$BIN" keys create \
            --customer "$DEFAULT_CUSTOMER" --name bench --scope send 2>>"$1/keys.log")
    fi
    export BENCH_API_KEY
}

# Starts the server (memory) or nats-server + API + worker (nats) on $URL, waits for
# /readyz. Sets BASE (what wrk drives, and the enqueue counters), METRICS_BASE (the
# worker's /metrics: depth and stored), PIDS (the server processes). Extra args: K=V env.
BASE="" METRICS_BASE="" PIDS=""
start_stack() {  # BACKEND DIR [K=V...]
    local backend=$1 dir=$2
    shift 2
    local port
    port=$("${REPORT[@]}" freeport)
    BASE="http://127.0.0.1:$port" METRICS_BASE="http://127.0.0.1:$port"
    if [[ $backend == memory ]]; then
        # env execs the binary, so $! is the server's own pid (for /proc/PID/...).
        # shellcheck disable=SC2086  # BENCH_SERVER_ENV is a list of K=V words on purpose
        env DATABASE_URL="$URL" PORT="$port" LOG_LEVEL="$LOG_LEVEL_USED" \
            MESSAGING__QUEUE__CAPACITY="$QUEUE_CAPACITY" "$AUTH_ENV" $SERVER_ENV "$@" \
            "$BIN" >>"$dir/server.log" 2>&1 &
        SERVER_PID=$!
        PIDS=$SERVER_PID
        "${REPORT[@]}" wait-ready "$BASE/readyz" 120 "$SERVER_PID" \
            || { tail -50 "$dir/server.log" >&2; exit 1; }
        return
    fi
    local store nats_port worker_port role rport
    store=$(mktemp -d /tmp/msgbench-nats.XXXXXX)
    TMP_DIRS+=("$store")
    nats_port=$("${REPORT[@]}" freeport)
    worker_port=$("${REPORT[@]}" freeport)
    nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$store" >>"$dir/nats.log" 2>&1 &
    NATS_PID=$!
    # The API process refuses to start without its queue: wait until NATS listens.
    local tries=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null; do
        (( ++tries < 200 )) || { tail -20 "$dir/nats.log" >&2; echo "nats-server did not listen within 20 s" >&2; exit 1; }
        sleep 0.1
    done
    for role in api worker; do
        rport=$port; [[ $role == worker ]] && rport=$worker_port
        # shellcheck disable=SC2086
        env DATABASE_URL="$URL" PORT="$rport" LOG_LEVEL="$LOG_LEVEL_USED" \
            QUEUE_BACKEND=nats NATS_URL="nats://127.0.0.1:$nats_port" \
            MESSAGING__QUEUE__NATS__CONNECT_TIMEOUT=20s "$AUTH_ENV" $SERVER_ENV "$@" \
            "$BIN" serve --role "$role" >>"$dir/$role.log" 2>&1 &
        if [[ $role == api ]]; then SERVER_PID=$!; else WORKER_PID=$!; fi
        "${REPORT[@]}" wait-ready "http://127.0.0.1:$rport/readyz" 120 "$!" \
            || { tail -50 "$dir/$role.log" >&2; exit 1; }
    done
    METRICS_BASE="http://127.0.0.1:$worker_port"
    PIDS="$SERVER_PID $WORKER_PID"
}

# Graceful stop (SIGTERM, the API first so that nothing new arrives), bounded by
# BENCH_STOP_TIMEOUT, then SIGKILL. Sets STOP_EXIT (the first non-zero exit status, or 0)
# and STOP_S (seconds the stop took).
STOP_EXIT=0 STOP_S=0
stop_stack() {  # DIR
    local pid t0 t_begin status
    STOP_EXIT=0
    t_begin=$(date +%s.%N)
    for pid in $SERVER_PID $WORKER_PID; do
        kill -TERM "$pid"
        t0=$SECONDS
        while kill -0 "$pid" 2>/dev/null && (( SECONDS - t0 < STOP_TIMEOUT )); do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "process $pid did not stop within ${STOP_TIMEOUT}s of SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        status=0
        wait "$pid" || status=$?
        (( STOP_EXIT == 0 )) && STOP_EXIT=$status
    done
    STOP_S=$(python3 -c "import time; print(round(time.time() - $t_begin, 2))")
    SERVER_PID="" WORKER_PID="" PIDS=""
    stop_pid "$NATS_PID"; NATS_PID=""
    # One log per phase, whatever the backend (nats: both processes).
    if [[ -f $1/api.log ]]; then cat "$1/api.log" "$1/worker.log" >"$1/server.log"; fi
}

# Writes DIR/phase.json from KEY=VALUE words (numbers as numbers, the rest as strings).
phase_json() {  # DIR KEY=VALUE...
    local dir=$1
    shift
    python3 - "$dir/phase.json" "$@" <<'EOF'
import json, sys
out = {}
for kv in sys.argv[2:]:
    k, _, v = kv.partition("=")
    try:
        out[k] = int(v)
    except ValueError:
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
json.dump(out, open(sys.argv[1], "w"))
EOF
}

# GET /healthz with the same wrk settings: what the binary answers when the request does
# nothing (the HTTP layer's ceiling on this machine, measured in the same run).
measure_healthz() {  # DIR (the stack is up)
    local dir=$1
    mkdir -p "$dir"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$BASE/healthz" >"$dir/wrk.txt"
}

# One load phase on a fresh database and stack: saturation (as fast as answered) or
# fixed (BENCH_RATE offered). Samples /metrics at 1 Hz during wrk and the drain, reads
# server CPU time before and after, drains, checks the database.
load_phase() {  # KIND DB BACKEND RUN_DIR LABEL DO_HEALTHZ
    local kind=$1 db=$2 backend=$3 run_dir=$4 label=$5 do_hz=$6
    local dir="$run_dir/$kind"
    mkdir -p "$dir"
    local busy=""
    wait_for_builds || busy="at start"
    fresh_db "$db" "$label-$kind"
    make_key "$dir"
    start_stack "$backend" "$dir"
    if [[ $do_hz == 1 ]]; then
        log "  healthz ceiling ($label)"
        measure_healthz "$run_dir/healthz"
    fi
    local rate=0
    [[ $kind == fixed ]] && rate=$FIXED_RATE
    log "  $kind ($label)$([[ $rate != 0 ]] && echo ", $rate req/s offered")"

    local cpu0 t_start t_end cpu1
    cpu0=$("${REPORT[@]}" cpu $PIDS)
    "${REPORT[@]}" sample "$dir/timeseries.csv" "$BASE" "$METRICS_BASE" $PIDS &
    SAMPLER_PID=$!
    # The first sample (all zero) before the load starts, so the curves start at 0.
    local waited=0
    while [[ $(wc -l 2>/dev/null <"$dir/timeseries.csv" || echo 0) -lt 2 ]] && (( waited < 100 )); do
        sleep 0.1; waited=$(( waited + 1 ))
    done
    t_start=$(date +%s.%N)
    BENCH_RATE=$rate BENCH_NONCE="$STAMP-$label-$kind" wrk -t"$THREADS" -c"$CONNECTIONS" \
        -d"${DURATION}s" --latency -s "$BENCH_DIR/sms.lua" "$BASE/api/messages/sms" >"$dir/wrk.txt"
    t_end=$(date +%s.%N)
    local enq_arg=""
    [[ $backend == nats ]] && enq_arg=$BASE
    "${REPORT[@]}" drain "$METRICS_BASE" "$DRAIN_TIMEOUT" "$t_end" $enq_arg >"$dir/drain.json"
    cpu1=$("${REPORT[@]}" cpu $PIDS)
    stop_pid "$SAMPLER_PID"; SAMPLER_PID=""
    local nats_cpu=0
    [[ -n $NATS_PID ]] && nats_cpu=$("${REPORT[@]}" cpu "$NATS_PID")
    busy_builds && busy="${busy:+$busy and }during the run (seen at the end)"

    # Peak RSS over the processes' whole life (nats: API + worker), read before they stop.
    local hwm
    hwm=$("${REPORT[@]}" rss VmHWM $PIDS)
    stop_stack "$dir"
    "${REPORT[@]}" dbcheck "$db" "$CHECK_TARGET" >"$dir/db.json"
    drop_dbs
    phase_json "$dir" kind="$kind" rate="$rate" t_start="$t_start" t_end="$t_end" \
        cpu0_s="$cpu0" cpu1_s="$cpu1" nats_cpu_s="$nats_cpu" vmhwm_kb="$hwm" \
        server_exit="$STOP_EXIT" stop_s="$STOP_S" busy="$busy" \
        server_log_lines="$(wc -l <"$dir/server.log")"
}

# Memory with a backlog: workers off, exactly BENCH_BACKLOG_EVENTS accepted, RSS read.
# Then a graceful stop writes the queue to pending_events, and a restart with workers on
# must re-enqueue and store every one of them: nothing of the backlog may be lost.
backlog_phase() {  # DB RUN_DIR LABEL
    local db=$1 run_dir=$2 label=$3
    local dir="$run_dir/backlog"
    mkdir -p "$dir"
    local busy=""
    wait_for_builds || busy="at start"
    fresh_db "$db" "$label-backlog"
    make_key "$dir"
    # Room for the whole backlog (the default capacity is 10,000): this measures what
    # each queued event costs, not the capacity limit.
    local capacity=$(( BACKLOG_EVENTS + BACKLOG_EVENTS / 10 + CONNECTIONS ))
    local saved_capacity=$QUEUE_CAPACITY
    QUEUE_CAPACITY=$capacity
    start_stack memory "$dir" WORKER_ENABLED=false
    QUEUE_CAPACITY=$saved_capacity
    log "  backlog ($label): accepting $BACKLOG_EVENTS events with workers off"
    local rss0 rss1 hwm1
    rss0=$("${REPORT[@]}" rss VmRSS $PIDS)
    BENCH_NONCE="$STAMP-$label-backlog" "${REPORT[@]}" backlog-load "$BASE" "$BACKLOG_EVENTS" \
        "$BENCH_DIR/sms.lua" "$dir/wrk.txt" >"$dir/load.json"
    rss1=$("${REPORT[@]}" rss VmRSS $PIDS)
    hwm1=$("${REPORT[@]}" rss VmHWM $PIDS)
    # SIGTERM: no workers to drain, so the queue is written to pending_events.
    stop_stack "$dir"
    local exit1=$STOP_EXIT spill_s=$STOP_S
    log "  backlog ($label): restarting with workers on; the spilled backlog must drain"
    local t_restart
    t_restart=$(date +%s.%N)
    start_stack memory "$dir"
    "${REPORT[@]}" drain "$METRICS_BASE" "$DRAIN_TIMEOUT" "$t_restart" >"$dir/drain.json"
    stop_stack "$dir"
    "${REPORT[@]}" dbcheck "$db" "$CHECK_TARGET" >"$dir/db.json"
    drop_dbs
    busy_builds && busy="${busy:+$busy and }during the run (seen at the end)"
    phase_json "$dir" kind=backlog events="$BACKLOG_EVENTS" capacity="$capacity" \
        rss0_kb="$rss0" rss1_kb="$rss1" vmhwm_kb="$hwm1" server_exit="$exit1" \
        spill_s="$spill_s" restart_exit="$STOP_EXIT" busy="$busy" \
        server_log_lines="$(wc -l <"$dir/server.log")"
}

# --- 4. runs ----------------------------------------------------------------------------
for backend in $BACKENDS; do
    for db in $DATABASES; do
        for run in $(seq 1 "$RUNS"); do
            label="$db-$backend-$run"
            run_dir="$OUT/$label"
            mkdir -p "$run_dir"
            log "run $run/$RUNS: $db, $backend queue"
            do_hz=0
            has_phase healthz && do_hz=1
            for kind in saturation fixed; do
                if has_phase "$kind"; then
                    load_phase "$kind" "$db" "$backend" "$run_dir" "$label" "$do_hz"
                    do_hz=0
                fi
            done
            if [[ $do_hz == 1 ]]; then  # healthz alone: a stack just for it
                mkdir -p "$run_dir/healthz"
                fresh_db "$db" "$label-healthz"
                make_key "$run_dir/healthz"
                start_stack "$backend" "$run_dir/healthz"
                log "  healthz ceiling ($label)"
                measure_healthz "$run_dir/healthz"
                stop_stack "$run_dir/healthz"
                drop_dbs
            fi
            if has_phase backlog && [[ $backend == memory ]]; then
                backlog_phase "$db" "$run_dir" "$label"
            fi
            "${REPORT[@]}" record "$OUT/settings.json" "$run_dir" "$db" "$backend" "$run" >"$run_dir/record.json"
            cat "$run_dir/record.json" >>"$RUNS_JSONL"
            "${REPORT[@]}" line "$run_dir/record.json"
        done
    done
done

# --- 5. summary and chart -------------------------------------------------------------
echo
CHART="$OUT/bench.svg"
if python3 "$BENCH_DIR/chart.py" "$OUT/settings.json" "$RUNS_JSONL" "$CHART"; then
    log "chart: $CHART"
    if [[ -n $CHART_OUT ]]; then
        mkdir -p "$(dirname "$CHART_OUT")"
        cp "$CHART" "$CHART_OUT"
        log "chart copied to $CHART_OUT"
    fi
else
    log "WARNING: the chart could not be drawn (see above); the summary follows"
    CHART=""
fi
status=0
"${REPORT[@]}" summary "$OUT/settings.json" "$RUNS_JSONL" "$OUT/summary.md" "$HISTORY" "$CHART" || status=$?
if (( status != 0 )); then
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! FAIL: a consistency check failed (see the FAIL lines above) !!!"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
fi
where="summary in $OUT/summary.md"
[[ $HISTORY != none ]] && where="$where, appended to $HISTORY"
echo "(server LOG_LEVEL=$LOG_LEVEL_USED; raw output per run under $OUT; $where)"
exit "$status"
