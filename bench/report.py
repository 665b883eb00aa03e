#!/usr/bin/env python3
"""Helpers for bench/run.sh: everything that is easier in Python than in bash.

Subcommands (all print to stdout; run.sh stores the output in the run directory):
  freeport                          a free TCP port on 127.0.0.1
  machine                           "CPU model, N cores, M GiB RAM" (for titles)
  wait-ready URL TIMEOUT PID        poll GET URL until 200 (fails if PID dies first)
  cpu PID...                        user+system CPU seconds of the processes (/proc/PID/stat)
  rss FIELD PID...                  VmRSS or VmHWM of the processes, added up, in kB
  sample CSV API_URL METRICS_URL PID...   every second until SIGTERM: counters, CPU, RSS -> CSV
  drain BASE_URL TIMEOUT T_END [API_URL]  poll /metrics until the queue is drained -> JSON
                                    (nats: BASE_URL is the worker, API_URL the API process)
  backlog-load API_URL N LUA WRK_TXT   wrk until exactly N events are accepted -> JSON
  dbcheck sqlite PATH | postgres URL   row counts and the conversation invariant -> JSON
  record SETTINGS RUN_DIR DB BACKEND RUN   combine a run's phases into one JSON line, checked
  line RECORD                       one run in one line of text (printed after each run)
  summary SETTINGS RUNS_JSONL SUMMARY_MD HISTORY_MD|none [CHART]   tables of runs and medians
"""
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

# The invariant of SPEC §5: every conversation's message_count equals its messages.
INVARIANT_SQL = ("SELECT count(*) FROM conversations c WHERE message_count <> "
                 "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)")
COUNT_SQL = "SELECT count(*) FROM messages"
CONV_SQL = "SELECT count(*) FROM conversations"
PENDING_SQL = "SELECT count(*) FROM pending_events"

ENQUEUED = "messaging_queue_enqueued_total"
REJECTED = "messaging_queue_enqueue_rejected_total"
DEPTH = "messaging_queue_depth"
STORED = 'messaging_worker_processed_total{outcome="stored"}'
DUPLICATE = 'messaging_worker_processed_total{outcome="duplicate"}'
DUE = "messaging_delivery_due"


def sent_total(m):
    """Provider calls that succeeded, all providers (the delivery stage's output)."""
    return sum(v for k, v in m.items()
               if k.startswith("messaging_provider_requests_total{") and 'outcome="sent"' in k)


def read_text(path):
    with open(path) as f:
        return f.read()


def read_json(path):
    return json.loads(read_text(path))


def freeport():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def machine():
    model = "unknown CPU"
    try:
        for line in read_text("/proc/cpuinfo").splitlines():
            if line.startswith("model name"):
                model = re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in read_text("/proc/meminfo").splitlines():
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
                break
    except OSError:
        pass
    print(f"{model}, {os.cpu_count()} cores{mem}")


def wait_ready(url, timeout, pid):
    deadline = time.monotonic() + float(timeout)
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            sys.exit(f"server (pid {pid}) exited before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} not 200 after {timeout}s")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """utime + stime of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            # The command name may contain spaces: the fields start after its ')'.
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / CLK_TCK


def rss_kb(field, pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return total


def scrape(base):
    """Prometheus text -> {'name{labels}': value} (no label parsing needed here)."""
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        try:
            out[key] = float(val)
        except ValueError:
            pass
    return out


def metric_sum(m, name):
    """Sum of a metric over all its label sets (0 if absent)."""
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


def sample(csv_path, api_base, metrics_base, *pids):
    """Once a second (on whole-second ticks from the start) until SIGTERM: the API's
    enqueue counters, the worker's stored counter and queue depth, the server processes'
    CPU seconds and RSS. Rates are derived later from consecutive rows."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    t0 = time.time()
    tick = 0
    with open(csv_path, "w") as f:
        f.write("t,enqueued,rejected,stored,depth,cpu_s,rss_kb\n")

        def one():
            t = time.time()
            try:
                api = scrape(api_base)
                m = api if metrics_base == api_base else scrape(metrics_base)
                f.write(f"{t:.3f},{api.get(ENQUEUED, 0):.0f},{api.get(REJECTED, 0):.0f},"
                        f"{m.get(STORED, 0):.0f},{m.get(DEPTH, 0):.0f},"
                        f"{cpu_seconds(pids):.2f},{rss_kb('VmRSS', pids)}\n")
                f.flush()
            except Exception:
                pass  # a missed sample (server busy past the 5 s timeout) leaves a gap

        while not stop:
            one()
            tick += 1
            while not stop and time.time() < t0 + tick:
                time.sleep(0.05)
        one()  # the state when told to stop: the end of the drain


def drain(base, timeout, t_end, api_base=None):
    """Poll every 50 ms until queue depth is 0, every stored message is sent (the delivery
    stage runs after the commit: nothing due, as many sent as stored), and the counters
    stopped moving.

    The drain time is taken at the first poll that showed the final state, measured
    from T_END (wall clock when wrk exited); its resolution is the 50 ms poll interval.
    With NATS (API_URL given) the depth is the consumer's, read by the worker every
    second, so the final state must hold for 1.5 s, and the enqueue counters come from
    the API process.
    """
    hold = 1.5 if api_base else 0.0
    t_end = float(t_end)
    deadline = time.time() + float(timeout)
    prev, first_final_at, timed_out, m = None, None, False, {}
    while True:
        now = time.time()
        m = scrape(base)
        depth, stored = m.get(DEPTH, -1), m.get(STORED, 0)
        sent, due = sent_total(m), m.get(DUE, 0)
        state = (depth, stored, sent)
        if depth == 0 and due == 0 and sent >= stored:
            if first_final_at is None or state != prev:
                first_final_at = now
            elif now - first_final_at >= hold:
                break  # consecutive polls agree (for `hold` seconds): drained
        else:
            first_final_at = None
        prev = state
        if now > deadline:
            timed_out = True
            break
        time.sleep(0.05)
    end = first_final_at if (first_final_at and not timed_out) else time.time()
    api = scrape(api_base) if api_base else m
    print(json.dumps({
        "drain_s": round(max(0.0, end - t_end), 3),
        "drain_timed_out": timed_out,
        "queue_depth": m.get(DEPTH),
        "stored": m.get(STORED, 0),
        "sent": sent_total(m),
        "duplicate": m.get(DUPLICATE, 0),
        "enqueued": api.get(ENQUEUED, 0),
        "enqueue_rejected": api.get(REJECTED, 0),
        "worker_failed": metric_sum(m, "messaging_worker_failed_total"),
        "retries": m.get("messaging_retries_total", 0),
        "dlq": m.get("messaging_dlq_total", 0),
        "processing_latency_avg_s": (m.get("messaging_processing_latency_seconds_sum", 0)
                                     / max(1, m.get("messaging_processing_latency_seconds_count", 0))),
    }))


def backlog_load(api_base, n, lua, wrk_txt):
    """Runs wrk with BENCH_QUOTA=N (sms.lua: every thread stops once its share is
    accepted, and never sends more), until the server counts N accepted events, then
    ends wrk (its main thread would otherwise sleep until -d runs out)."""
    n = int(n)
    timeout = float(os.environ.get("BENCH_BACKLOG_TIMEOUT", "600"))
    env = dict(os.environ, BENCH_QUOTA=str(n), BENCH_RATE="0")
    cmd = ["wrk", f"-t{env.get('BENCH_THREADS', '2')}", f"-c{env.get('BENCH_CONNECTIONS', '64')}",
           f"-d{int(timeout)}s", "-s", lua, api_base + "/api/messages/sms"]
    t0 = time.time()
    reached = False
    with open(wrk_txt, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        while time.time() - t0 < timeout and p.poll() is None:
            if scrape(api_base).get(ENQUEUED, 0) >= n:
                reached = True
                break
            time.sleep(0.1)
        load_s = time.time() - t0
        time.sleep(0.5)  # let wrk read the last responses before it is told to finish
        if p.poll() is None:
            p.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT
        p.wait(60)
    m = scrape(api_base)
    wrk = parse_wrk(wrk_txt)
    print(json.dumps({
        "reached": reached, "load_s": round(load_s, 2),
        "enqueued": m.get(ENQUEUED, 0), "rejected": m.get(REJECTED, 0), "depth": m.get(DEPTH, 0),
        "wrk_2xx": wrk["requests"] - wrk["non2xx"], "wrk_non2xx": wrk["non2xx"],
        "statuses": wrk["statuses"],
    }))


def dbcheck(kind, target):
    if kind == "sqlite":
        import sqlite3
        con = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
        q = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
    else:
        def q(sql):
            out = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", target, "-c", sql],
                                 check=True, capture_output=True, text=True).stdout
            return int(out.strip())
    print(json.dumps({"db_messages": q(COUNT_SQL), "db_conversations": q(CONV_SQL),
                      "db_bad_conversations": q(INVARIANT_SQL), "db_pending_events": q(PENDING_SQL)}))


# --- parsing wrk -------------------------------------------------------------------------

def parse_wrk(path):
    """The BENCH line printed by sms.lua's done(), plus wrk's own Requests/sec."""
    text = read_text(path)
    line = next((l for l in text.splitlines() if l.startswith("BENCH ")), None)
    if line is None:
        sys.exit(f"no BENCH line in {path} (did wrk fail?)\n{text[-2000:]}")
    d = dict(kv.split("=", 1) for kv in line.split()[1:])
    r = {k: (v if k in ("statuses", "clock") else int(v)) for k, v in d.items()}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps"] = float(m.group(1)) if m else r["requests"] / max(1e-9, r["duration_us"] / 1e6)
    return r


UNITS_US = {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def parse_plain_wrk(path):
    """wrk's own report (no script), for GET /healthz: rate, latency distribution, errors."""
    text = read_text(path)
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        sys.exit(f"no Requests/sec in {path} (did wrk fail?)\n{text[-2000:]}")
    r = {"rps": float(m.group(1))}
    for pct, val, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M):
        r[f"p{pct}_ms"] = float(val) * UNITS_US[unit] / 1000
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"(\d+) requests in", text)
    r["requests"] = int(m.group(1)) if m else 0
    return r


# --- one run: records and checks -------------------------------------------------------

def load_record(d, settings):
    """A saturation or fixed-rate phase: wrk, the drain, CPU, RSS and the checks."""
    phase = read_json(os.path.join(d, "phase.json"))
    wrk = parse_wrk(os.path.join(d, "wrk.txt"))
    dr = read_json(os.path.join(d, "drain.json"))
    db = read_json(os.path.join(d, "db.json"))
    dur = wrk["duration_us"] / 1e6
    ok2xx = wrk["requests"] - wrk["non2xx"]
    persisted = int(dr["stored"])
    cpu_s = phase["cpu1_s"] - phase["cpu0_s"]
    r = {
        "rate": phase["rate"],
        "rps": round(wrk["rps"], 1),
        "ok_rps": round(ok2xx / dur, 1),
        "p50_ms": wrk["p50_us"] / 1000, "p75_ms": wrk["p75_us"] / 1000,
        "p90_ms": wrk["p90_us"] / 1000, "p99_ms": wrk["p99_us"] / 1000,
        "p999_ms": wrk["p999_us"] / 1000, "max_ms": wrk["max_us"] / 1000,
        "requests": wrk["requests"], "non2xx": wrk["non2xx"], "statuses": wrk["statuses"],
        "socket_errors": wrk["err_connect"] + wrk["err_read"] + wrk["err_write"] + wrk["err_timeout"],
        "wrk_clock": wrk.get("clock"),
        "wrk_duration_s": round(dur, 3),
        "persisted": persisted,
        "e2e_mps": round(persisted / (dur + dr["drain_s"]), 1),
        "drain_s": dr["drain_s"],
        "peak_rss_mb": round(phase["vmhwm_kb"] / 1024, 1),
        "cpu_s": round(cpu_s, 2),
        "cpu_us_per_msg": round(cpu_s * 1e6 / persisted, 1) if persisted else None,
        "nats_cpu_us_per_msg": (round(phase["nats_cpu_s"] * 1e6 / persisted, 1)
                                if persisted and phase.get("nats_cpu_s") else None),
        "retries": dr["retries"],
        "busy": phase.get("busy") or "",
        "server_log_lines": phase.get("server_log_lines", 0),
        "t_start": phase["t_start"], "t_end": phase["t_end"],
        "dir": d,
    }
    r.update({k: dr[k] for k in ("enqueued", "duplicate", "worker_failed", "dlq", "drain_timed_out")})
    r.update(db)

    # Checks: the metric agrees with the database, nothing accepted was lost or
    # duplicated, and the conversation counters are consistent.
    fails = []
    if dr["drain_timed_out"]:
        fails.append(f"queue not drained within timeout (depth {dr['queue_depth']})")
    if db["db_messages"] != persisted:
        fails.append(f"db messages {db['db_messages']} != stored metric {persisted}")
    if db["db_bad_conversations"] != 0:
        fails.append(f"{db['db_bad_conversations']} conversations with wrong message_count")
    if db.get("db_pending_events"):
        fails.append(f"{db['db_pending_events']} events left in pending_events after a drained stop")
    if persisted != int(dr["enqueued"]):
        fails.append(f"stored {persisted} != enqueued {int(dr['enqueued'])}")
    if "sent" in dr and int(dr["sent"]) != persisted:
        fails.append(f"sent {int(dr['sent'])} != stored {persisted}")
    # wrk drops responses still in flight when its timer ends, so the server may have
    # accepted up to one request per connection more than wrk counted.
    if not (ok2xx <= dr["enqueued"] <= ok2xx + settings["connections"]):
        fails.append(f"enqueued {int(dr['enqueued'])} vs wrk 2xx {ok2xx} (allowed +{settings['connections']})")
    if dr["duplicate"] or dr["worker_failed"] or dr["dlq"]:
        fails.append(f"duplicate={int(dr['duplicate'])} worker_failed={int(dr['worker_failed'])} dlq={int(dr['dlq'])}")
    if phase.get("server_exit") not in (0, None):
        fails.append(f"server exit status {phase['server_exit']} after SIGTERM")
    return r, fails


def backlog_record(d):
    """Workers off, N accepted, RSS; then a restart with workers on must store all N."""
    phase = read_json(os.path.join(d, "phase.json"))
    load = read_json(os.path.join(d, "load.json"))
    dr = read_json(os.path.join(d, "drain.json"))
    db = read_json(os.path.join(d, "db.json"))
    n = phase["events"]
    r = {
        "events": n,
        "load_s": load["load_s"],
        "rss0_mb": round(phase["rss0_kb"] / 1024, 1),
        "rss_mb": round(phase["rss1_kb"] / 1024, 1),
        "peak_rss_mb": round(phase["vmhwm_kb"] / 1024, 1),
        "bytes_per_event": round((phase["rss1_kb"] - phase["rss0_kb"]) * 1024 / n) if n else None,
        "spill_s": phase["spill_s"],
        "drain_s": dr["drain_s"],  # from the restart to the last stored event
        "stored": int(dr["stored"]),
        "wrk_2xx": load["wrk_2xx"],
        "busy": phase.get("busy") or "",
        "server_log_lines": phase.get("server_log_lines", 0),
        "dir": d,
    }
    r.update(db)
    fails = []
    if not load["reached"] or int(load["enqueued"]) != n:
        fails.append(f"accepted {int(load['enqueued'])} events, wanted exactly {n}")
    if int(load["depth"]) != int(load["enqueued"]):
        fails.append(f"queue depth {int(load['depth'])} != accepted {int(load['enqueued'])} with workers off")
    if phase.get("server_exit") not in (0, None):
        fails.append(f"server exit status {phase['server_exit']} after SIGTERM with the backlog")
    if phase.get("restart_exit") not in (0, None):
        fails.append(f"restarted server exit status {phase['restart_exit']} after SIGTERM")
    if dr["drain_timed_out"]:
        fails.append(f"restored backlog not drained within timeout (depth {dr['queue_depth']})")
    if int(dr["stored"]) != n:
        fails.append(f"after the restart {int(dr['stored'])} stored, wanted all {n} of the backlog")
    if db["db_messages"] != n:
        fails.append(f"db messages {db['db_messages']} != backlog {n}")
    if db["db_bad_conversations"] != 0:
        fails.append(f"{db['db_bad_conversations']} conversations with wrong message_count")
    if db.get("db_pending_events"):
        fails.append(f"{db['db_pending_events']} events still in pending_events after the restart")
    if dr["duplicate"] or dr["worker_failed"] or dr["dlq"]:
        fails.append(f"duplicate={int(dr['duplicate'])} worker_failed={int(dr['worker_failed'])} dlq={int(dr['dlq'])}")
    return r, fails


def record(settings_path, run_dir, db, backend, run):
    settings = read_json(settings_path)
    rec = {"db": db, "backend": backend, "run": int(run), "dir": run_dir}
    fails = []
    hz = os.path.join(run_dir, "healthz", "wrk.txt")
    if os.path.exists(hz):
        h = parse_plain_wrk(hz)
        rec.update({f"hz_{k}": v for k, v in h.items()})
        if h["non2xx"] or h["socket_errors"]:
            fails.append(f"healthz: {h['non2xx']} non-2xx responses, {h['socket_errors']} socket errors")
    for kind, prefix in (("saturation", "sat_"), ("fixed", "fix_")):
        d = os.path.join(run_dir, kind)
        if os.path.exists(os.path.join(d, "phase.json")):
            r, f = load_record(d, settings)
            rec.update({prefix + k: v for k, v in r.items()})
            fails += [f"{kind}: {x}" for x in f]
    d = os.path.join(run_dir, "backlog")
    if os.path.exists(os.path.join(d, "phase.json")):
        r, f = backlog_record(d)
        rec.update({"bl_" + k: v for k, v in r.items()})
        fails += [f"backlog: {x}" for x in f]
    if rec.get("sat_e2e_mps") and rec.get("hz_rps"):
        rec["e2e_per_hz"] = round(rec["sat_e2e_mps"] / rec["hz_rps"], 4)
    rec["fails"] = fails
    rec["checks"] = "ok" if not fails else "FAIL"
    print(json.dumps(rec))


def fmt_num(v, spec="{:,.0f}"):
    return "-" if v is None else spec.format(v)


def line(rec):
    """One run as text, printed by run.sh as soon as the run ends."""
    parts = [f"{rec['db']}/{rec['backend']} run {rec['run']}:"]
    if "hz_rps" in rec:
        parts.append(f"healthz {fmt_num(rec['hz_rps'])}/s;")
    if "sat_e2e_mps" in rec:
        frac = f" ({rec['e2e_per_hz']:.3f} of healthz)" if rec.get("e2e_per_hz") else ""
        parts.append(f"saturation 2xx {fmt_num(rec['sat_ok_rps'])}/s, e2e {fmt_num(rec['sat_e2e_mps'])} msg/s{frac}, "
                     f"p50/p99 {rec['sat_p50_ms']:.2f}/{rec['sat_p99_ms']:.1f} ms, "
                     f"CPU {fmt_num(rec['sat_cpu_us_per_msg'])} µs/msg, RSS {rec['sat_peak_rss_mb']:.0f} MB;")
    if "fix_rps" in rec:
        parts.append(f"fixed {fmt_num(rec['fix_rate'])}/s offered, {fmt_num(rec['fix_rps'])}/s answered, "
                     f"p50/p99 {rec['fix_p50_ms']:.2f}/{rec['fix_p99_ms']:.2f} ms;")
    if "bl_rss_mb" in rec:
        parts.append(f"backlog {fmt_num(rec['bl_events'])} events: RSS {rec['bl_rss_mb']:.0f} MB "
                     f"({fmt_num(rec['bl_bytes_per_event'])} B/event), restored and stored in {rec['bl_drain_s']:.1f} s;")
    parts.append(f"checks {rec['checks']}")
    out = [" ".join(parts)] + [f"  !!! FAIL: {f}" for f in rec["fails"]]
    return "\n".join(out)


# --- summary -------------------------------------------------------------------------------

def label(db, backend):
    return {"sqlite": "SQLite", "postgres": "PostgreSQL"}.get(db, db) + " / " + backend


SAT_COLS = [  # (header, key, format)
    ("db", "db", "{}"), ("queue", "backend", "{}"), ("run", "run", "{}"),
    ("healthz/s", "hz_rps", "{:,.0f}"), ("2xx/s", "sat_ok_rps", "{:,.0f}"),
    ("e2e msg/s", "sat_e2e_mps", "{:,.0f}"), ("e2e/healthz", "e2e_per_hz", "{:.3f}"),
    ("p50 ms", "sat_p50_ms", "{:.2f}"), ("p99 ms", "sat_p99_ms", "{:.1f}"),
    ("non-2xx", "sat_non2xx", "{:,.0f}"), ("drain s", "sat_drain_s", "{:.2f}"),
    ("CPU µs/msg", "sat_cpu_us_per_msg", "{:.0f}"), ("RSS MB", "sat_peak_rss_mb", "{:.0f}"),
    ("checks", "checks", "{}"),
]
FIX_COLS = [
    ("db", "db", "{}"), ("queue", "backend", "{}"), ("run", "run", "{}"),
    ("offered/s", "fix_rate", "{:,.0f}"), ("answered/s", "fix_rps", "{:,.0f}"),
    ("p50 ms", "fix_p50_ms", "{:.2f}"), ("p90 ms", "fix_p90_ms", "{:.2f}"), ("p99 ms", "fix_p99_ms", "{:.2f}"),
    ("non-2xx", "fix_non2xx", "{:,.0f}"), ("CPU µs/msg", "fix_cpu_us_per_msg", "{:.0f}"),
    ("RSS MB", "fix_peak_rss_mb", "{:.0f}"),
    ("backlog", "bl_events", "{:,.0f}"), ("backlog RSS MB", "bl_rss_mb", "{:.0f}"),
    ("B/event", "bl_bytes_per_event", "{:,.0f}"), ("restore s", "bl_drain_s", "{:.1f}"),
    ("checks", "checks", "{}"),
]


# Medians the chart needs besides the table columns.
EXTRA_MEDIANS = ["sat_p90_ms", "bl_events"]


def table(cols, rows):
    cells = [[h for h, _, _ in cols]]
    for r in rows:
        cells.append([fmt.format(r[k]) if r.get(k) is not None else "-" for _, k, fmt in cols])
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["| " + " | ".join(c[i].rjust(widths[i]) for i in range(len(cols))) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def groups(recs):
    """(db, backend) -> runs, in the order they ran."""
    out = {}
    for r in recs:
        out.setdefault((r["db"], r["backend"]), []).append(r)
    return out


def medians(recs):
    rows = []
    for (db, backend), rs in groups(recs).items():
        med = {"db": db, "backend": backend, "run": f"median/{len(rs)}",
               "checks": "ok" if all(r["checks"] == "ok" for r in rs) else "FAIL"}
        for k in dict.fromkeys([k for _, k, _ in SAT_COLS[3:-1] + FIX_COLS[3:-1]] + EXTRA_MEDIANS):
            vals = [r[k] for r in rs if r.get(k) is not None]
            med[k] = statistics.median(vals) if vals else None
        rows.append(med)
    return rows


def median_run(rs):
    """The run whose saturation e2e rate is the median (the one the chart shows)."""
    with_rate = [r for r in rs if r.get("sat_e2e_mps") is not None]
    if not with_rate:
        return rs[0]
    ordered = sorted(with_rate, key=lambda r: r["sat_e2e_mps"])
    return ordered[(len(ordered) - 1) // 2]


def notes_for(recs):
    notes = []
    for r in recs:
        who = f"{r['db']}/{r['backend']} run {r['run']}"
        for f in r["fails"]:
            notes.append(f"FAIL {who}: {f}")
        for prefix, phase in (("sat_", "saturation"), ("fix_", "fixed rate"), ("bl_", "backlog")):
            if r.get(prefix + "busy"):
                notes.append(f"note {who}, {phase}: ran while another build was busy ({r[prefix + 'busy']})")
            if r.get(prefix + "retries"):
                notes.append(f"note {who}, {phase}: {int(r[prefix + 'retries'])} retries")
            if r.get(prefix + "non2xx"):
                notes.append(f"note {who}, {phase}: non-2xx by status {r[prefix + 'statuses']}")
            if r.get(prefix + "socket_errors"):
                notes.append(f"note {who}, {phase}: {r[prefix + 'socket_errors']} wrk socket errors")
            if r.get(prefix + "server_log_lines"):
                notes.append(f"note {who}, {phase}: server wrote {r[prefix + 'server_log_lines']} log lines "
                             f"(see {r[prefix + 'dir']}/server.log)")
        if r.get("fix_rate") and r.get("fix_rps") and r["fix_rps"] < 0.95 * r["fix_rate"]:
            notes.append(f"note {who}: fixed rate answered {r['fix_rps']:,.0f}/s of {r['fix_rate']:,.0f}/s offered: "
                         "the server (or wrk) could not keep up, so its latency is not below saturation")
        if r.get("fix_wrk_clock") == "none":
            notes.append(f"note {who}: wrk has no LuaJIT ffi clock; the fixed rate used a plain pause "
                         "(offers a little less than asked)")
        if r.get("sat_nats_cpu_us_per_msg"):
            notes.append(f"note {who}: nats-server used {r['sat_nats_cpu_us_per_msg']:.0f} µs CPU per message "
                         "(whole life of the process, not counted in CPU µs/msg)")
        if r.get("bl_wrk_2xx") is not None and r.get("bl_events") and r["bl_wrk_2xx"] != r["bl_events"]:
            notes.append(f"note {who}: backlog: wrk counted {r['bl_wrk_2xx']} 2xx, the server {r['bl_events']}")
    return notes


def summary(settings_path, runs_path, summary_path, history_path, chart=""):
    """Prints the summary, writes it to SUMMARY_MD, appends it to HISTORY_MD (unless
    "none"); exit status 1 if any check failed."""
    s = read_json(settings_path)
    recs = [json.loads(l) for l in read_text(runs_path).splitlines() if l.strip()]
    med = medians(recs)
    settings = (f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s, "
                f"fixed rate {s['fixed_rate']:,}/s offered, backlog {s['backlog_events']:,} events, "
                f"queue.capacity={s['queue_capacity']}, LOG_LEVEL={s['log_level']}, "
                f"senders={s['senders']}, contacts={s['contacts']}, auth={'on' if s['auth'] else 'off'}, "
                f"phases: {s['phases']}"
                + (f", extra env: {s['extra_env']}" if s.get("extra_env") else ""))
    has_sat = any("sat_e2e_mps" in r or "hz_rps" in r for r in recs)
    has_fix = any("fix_rps" in r or "bl_rss_mb" in r for r in recs)
    out = [f"## {s['date']} — rev {s['git_rev']} — {s['machine']}", "", f"Settings: {settings}."]
    if chart:
        where = os.path.dirname(os.path.abspath(history_path if history_path != "none" else summary_path))
        out += ["", f"Chart: `{os.path.relpath(chart, where)}`"]
    if has_sat:
        out += ["", "Saturation (as fast as answered), medians:", "", table(SAT_COLS, med)]
    if has_fix:
        out += ["", "Fixed rate and backlog, medians:", "", table(FIX_COLS, med)]
    if has_sat:
        out += ["", "Saturation, per run:", "", table(SAT_COLS, recs)]
    if has_fix:
        out += ["", "Fixed rate and backlog, per run:", "", table(FIX_COLS, recs)]
    notes = notes_for(recs)
    if notes:
        out += ["", *[f"- {n}" for n in notes]]
    text = "\n".join(out) + "\n"
    print(text)
    with open(summary_path, "w") as f:
        f.write(text)
    if history_path != "none":
        os.makedirs(os.path.dirname(os.path.abspath(history_path)), exist_ok=True)
        new = not os.path.exists(history_path)
        with open(history_path, "a") as h:
            if new:
                h.write("# Benchmark history\n\nAppended by `bash bench/run.sh`; see bench/README.md.\n\n")
            h.write(text + "\n")
    return 1 if any(r["fails"] for r in recs) else 0


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "freeport":
        freeport()
    elif cmd == "machine":
        machine()
    elif cmd == "wait-ready":
        wait_ready(*args)
    elif cmd == "cpu":
        print(f"{cpu_seconds(args):.2f}")
    elif cmd == "rss":
        print(rss_kb(args[0], args[1:]))
    elif cmd == "sample":
        sample(*args)
    elif cmd == "drain":
        drain(*args)
    elif cmd == "backlog-load":
        backlog_load(*args)
    elif cmd == "dbcheck":
        dbcheck(*args)
    elif cmd == "record":
        record(*args)
    elif cmd == "line":
        print(line(read_json(args[0])))
    elif cmd == "summary":
        sys.exit(summary(*args))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
