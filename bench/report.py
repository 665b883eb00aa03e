#!/usr/bin/env python3
"""Helpers for bench/run.sh: everything that is easier in Python than in bash.

Subcommands (all print to stdout; run.sh stores the output in the run directory):
  freeport                          a free TCP port on 127.0.0.1
  wait-ready URL TIMEOUT PID        poll GET URL until 200 (fails if PID dies first)
  drain BASE_URL TIMEOUT T_END [API_URL]   poll /metrics until the queue is drained -> JSON
                                    (nats: BASE_URL is the worker, API_URL the API process)
  dbcheck sqlite PATH | postgres URL   row counts and the conversation invariant -> JSON
  record RUN_DIR                    combine a run's files into one JSON line (+ table row)
  summary RUNS_JSONL HISTORY_MD     table of runs, medians per database, append history
"""
import json
import os
import re
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


def freeport():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


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


def drain(base, timeout, t_end, api_base=None):
    """Poll every 50 ms until queue depth is 0 and the stored counter stopped moving.

    The drain time is taken at the first poll that showed the final state, measured
    from T_END (wall clock when wrk exited); its resolution is the 50 ms poll interval.
    With NATS (API_URL given) the depth is the consumer's, read by the worker every
    second, so the final state must hold for 1.5 s, and the enqueue counters come from
    the API process.
    """
    stored_key = 'messaging_worker_processed_total{outcome="stored"}'
    hold = 1.5 if api_base else 0.0
    t_end = float(t_end)
    deadline = time.time() + float(timeout)
    prev, first_final_at, timed_out, m = None, None, False, {}
    while True:
        now = time.time()
        m = scrape(base)
        depth, stored = m.get("messaging_queue_depth", -1), m.get(stored_key, 0)
        state = (depth, stored)
        if depth == 0:
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
        "queue_depth": m.get("messaging_queue_depth"),
        "stored": m.get(stored_key, 0),
        "duplicate": m.get('messaging_worker_processed_total{outcome="duplicate"}', 0),
        "enqueued": api.get("messaging_queue_enqueued_total", 0),
        "enqueue_rejected": api.get("messaging_queue_enqueue_rejected_total", 0),
        "worker_failed": metric_sum(m, "messaging_worker_failed_total"),
        "retries": m.get("messaging_retries_total", 0),
        "dlq": m.get("messaging_dlq_total", 0),
        "processing_latency_avg_s": (m.get("messaging_processing_latency_seconds_sum", 0)
                                     / max(1, m.get("messaging_processing_latency_seconds_count", 0))),
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
                      "db_bad_conversations": q(INVARIANT_SQL)}))


def parse_wrk(path):
    """The BENCH line printed by sms.lua's done(), plus wrk's own Requests/sec."""
    text = open(path).read()
    line = next((l for l in text.splitlines() if l.startswith("BENCH ")), None)
    if line is None:
        sys.exit(f"no BENCH line in {path} (did wrk fail?)")
    d = dict(kv.split("=", 1) for kv in line.split()[1:])
    r = {k: (v if k == "statuses" else int(v)) for k, v in d.items()}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps"] = float(m.group(1)) if m else r["requests"] / (r["duration_us"] / 1e6)
    return r


def record(run_dir):
    meta = json.load(open(os.path.join(run_dir, "meta.json")))
    wrk = parse_wrk(os.path.join(run_dir, "wrk.txt"))
    dr = json.load(open(os.path.join(run_dir, "drain.json")))
    db = json.load(open(os.path.join(run_dir, "db.json")))
    dur = wrk["duration_us"] / 1e6
    ok2xx = wrk["requests"] - wrk["non2xx"]
    rec = dict(meta)
    rec.update({
        "rps": round(wrk["rps"], 1),
        "ok_rps": round(ok2xx / dur, 1),
        "p50_ms": wrk["p50_us"] / 1000, "p90_ms": wrk["p90_us"] / 1000,
        "p99_ms": wrk["p99_us"] / 1000, "max_ms": wrk["max_us"] / 1000,
        "requests": wrk["requests"], "non2xx": wrk["non2xx"], "statuses": wrk["statuses"],
        "socket_errors": wrk["err_connect"] + wrk["err_read"] + wrk["err_write"] + wrk["err_timeout"],
        "wrk_duration_s": round(dur, 3),
    })
    rec.update(dr)
    rec.update(db)
    persisted = int(dr["stored"])
    rec["persisted"] = persisted
    rec["e2e_mps"] = round(persisted / (dur + dr["drain_s"]), 1)
    rec["peak_rss_mb"] = round(meta["vmhwm_kb"] / 1024, 1)

    # Checks: the metric agrees with the database, nothing accepted was lost or
    # duplicated, and the conversation counters are consistent.
    fails = []
    if dr["drain_timed_out"]:
        fails.append(f"queue not drained within timeout (depth {dr['queue_depth']})")
    if db["db_messages"] != persisted:
        fails.append(f"db messages {db['db_messages']} != stored metric {persisted}")
    if db["db_bad_conversations"] != 0:
        fails.append(f"{db['db_bad_conversations']} conversations with wrong message_count")
    if persisted != int(dr["enqueued"]):
        fails.append(f"stored {persisted} != enqueued {int(dr['enqueued'])}")
    # wrk drops responses still in flight when its timer ends, so the server may have
    # accepted up to one request per connection more than wrk counted.
    if not (ok2xx <= dr["enqueued"] <= ok2xx + meta["connections"]):
        fails.append(f"enqueued {int(dr['enqueued'])} vs wrk 2xx {ok2xx} (allowed +{meta['connections']})")
    if dr["duplicate"] or dr["worker_failed"] or dr["dlq"]:
        fails.append(f"duplicate={int(dr['duplicate'])} worker_failed={int(dr['worker_failed'])} dlq={int(dr['dlq'])}")
    if meta.get("server_exit") not in (0, None):
        fails.append(f"server exit status {meta['server_exit']} after SIGTERM")
    rec["fails"] = fails
    print(json.dumps(rec))


COLS = [  # (header, key, format)
    ("db", "db", "{}"), ("run", "run", "{}"), ("req/s", "rps", "{:.0f}"),
    ("2xx/s", "ok_rps", "{:.0f}"), ("p50 ms", "p50_ms", "{:.2f}"), ("p99 ms", "p99_ms", "{:.2f}"),
    ("non-2xx", "non2xx", "{:.0f}"), ("persisted", "persisted", "{:.0f}"),
    ("e2e msg/s", "e2e_mps", "{:.0f}"), ("drain s", "drain_s", "{:.2f}"),
    ("RSS MB", "peak_rss_mb", "{:.1f}"), ("checks", "checks", "{}"),
]


def table(rows):
    cells = [[h for h, _, _ in COLS]]
    for r in rows:
        cells.append([fmt.format(r[k]) if r.get(k) is not None else "-" for _, k, fmt in COLS])
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLS))]
    lines = ["| " + " | ".join(c[i].rjust(widths[i]) for i in range(len(COLS))) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def row(rec):
    """One run as a table row (printed by run.sh after each run)."""
    rec = dict(rec, checks="ok" if not rec["fails"] else "FAIL")
    return "\n".join([table([rec]).splitlines()[-1]] + [f"  !!! FAIL: {f}" for f in rec["fails"]])


def summary(runs_path, history_path):
    recs = [json.loads(l) for l in open(runs_path) if l.strip()]
    for r in recs:
        r["checks"] = "ok" if not r["fails"] else "FAIL"
    meta = recs[0]
    medians = []
    for db in dict.fromkeys(r["db"] for r in recs):
        rs = [r for r in recs if r["db"] == db]
        med = {"db": db, "run": f"median/{len(rs)}",
               "checks": "ok" if all(r["checks"] == "ok" for r in rs) else "FAIL"}
        for _, k, _ in COLS[2:-1]:
            med[k] = statistics.median(r[k] for r in rs)
        medians.append(med)
    settings = (f"wrk -t2 -c{meta['connections']} -d{meta['duration']}s, queue.capacity={meta['queue_capacity']}, "
                f"LOG_LEVEL={meta['log_level']}, senders={meta['senders']}, contacts={meta['contacts']}"
                + (f", offered rate {meta['rate']}/s" if meta.get("rate") else ", offered rate: saturation")
                + (f", extra env: {meta['extra_env']}" if meta.get("extra_env") else ""))
    notes = []
    for r in recs:
        for f in r["fails"]:
            notes.append(f"FAIL {r['db']} run {r['run']}: {f}")
        if r.get("busy"):
            notes.append(f"note {r['db']} run {r['run']}: ran while another build was busy ({r['busy']})")
        if r["retries"]:
            notes.append(f"note {r['db']} run {r['run']}: {int(r['retries'])} retries")
        if r["non2xx"]:
            notes.append(f"note {r['db']} run {r['run']}: non-2xx by status {r['statuses']}")
        if r.get("server_log_lines"):
            notes.append(f"note {r['db']} run {r['run']}: server wrote {r['server_log_lines']} log lines "
                         f"at {r['log_level']} (see {r['dir']}/server.log)")
        if r["socket_errors"]:
            notes.append(f"note {r['db']} run {r['run']}: {r['socket_errors']} wrk socket errors")
    out = [
        f"## {meta['date']} — rev {meta['git_rev']} — {meta['host']}",
        "",
        f"Settings: {settings}.",
        "",
        "Per run:",
        "",
        table(recs),
        "",
        "Median per database:",
        "",
        table(medians),
    ]
    if notes:
        out += ["", *[f"- {n}" for n in notes]]
    text = "\n".join(out) + "\n"
    print(text)
    os.makedirs(os.path.dirname(history_path), exist_ok=True)
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
    elif cmd == "wait-ready":
        wait_ready(*args)
    elif cmd == "drain":
        drain(*args)
    elif cmd == "dbcheck":
        dbcheck(*args)
    elif cmd == "record":
        record(*args)
    elif cmd == "row":
        print(row(json.loads(open(args[0]).read())))
    elif cmd == "header":
        print("\n".join(table([]).splitlines()[:2]))
    elif cmd == "summary":
        sys.exit(summary(*args))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
