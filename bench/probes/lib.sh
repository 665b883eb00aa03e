# Helpers of the shell probes (sourced): ports, CPU ticks from /proc, metrics, readiness.

freeport() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pg_ticks() {  # every PostgreSQL process of the machine (the backends come and go)
    local total=0 pid
    for pid in $(pgrep -x postgres); do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0))); done
    echo "$total"
}
per_msg() { python3 -c "print(round(($2) * 1e6 / $(getconf CLK_TCK) / $1))"; }  # MESSAGES TICKS -> µs
metric() {  # URL NAME-REGEX [LABEL-REGEX]: the sum of the matching samples
    curl -s "$1/metrics" | awk -v m="$2" -v l="${3:-}" \
        '$0 ~ "^"m && (l == "" || $0 ~ l) {s += $NF} END {printf "%d\n", s + 0}'
}
wait_ready() { for _ in $(seq 300); do curl -sf "$1/readyz" >/dev/null && return; sleep 0.1; done; echo "$1 not ready" >&2; exit 1; }
wait_for() {  # SECONDS DESCRIPTION COMMAND...: polls until the command succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        (( SECONDS < deadline )) || { echo "timed out waiting for $what" >&2; exit 1; }
        sleep 0.05
    done
}
