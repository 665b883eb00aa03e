#!/usr/bin/env python3
"""Tests of the benchmark's bookkeeping (no server, no wrk): parsing, the consistency
checks (they must fail when a number is off), the summary and the chart.

    python3 bench/test_report.py
"""
import io
import json
import os
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from contextlib import redirect_stdout

# No __pycache__ in bench/ (it is not git-ignored).
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chart  # noqa: E402
import report  # noqa: E402

HEALTHZ_WRK = """Running 5s test @ http://127.0.0.1:4000/healthz
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   512.34us  300.12us  10.00ms   90.00%
    Req/Sec    60.12k     5.00k   70.00k    70.00%
  Latency Distribution
     50%  450.00us
     75%  600.00us
     90%  800.00us
     99%    1.50ms
  600000 requests in 5.00s, 80.00MB read
Requests/sec: 120000.00
Transfer/sec:     16.00MB
"""

SETTINGS = {"date": "2026-11-27 20:00 UTC", "git_rev": "abc1234", "machine": "Test CPU, 2 cores, 8 GiB RAM",
            "host": "2 cores", "threads": 2, "connections": 64, "duration": 5, "queue_capacity": 10000,
            "log_level": "warn", "senders": 10, "contacts": 1000, "extra_env": "", "auth": 1,
            "fixed_rate": 10000, "backlog_events": 1000, "phases": "healthz saturation fixed backlog", "runs": 1}


def bench_line(requests, non2xx=0, p50=400, p99=2000, duration_us=5_000_000):
    return (f"BENCH requests={requests} duration_us={duration_us} bytes=1 p50_us={p50} p75_us={p50 * 2} "
            f"p90_us={p99 // 2} p99_us={p99} p999_us={p99 * 2} max_us={p99 * 3} non2xx={non2xx} statuses=- "
            "err_connect=0 err_read=0 err_write=0 err_status=0 err_timeout=0 clock=ffi\n")


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text if isinstance(text, str) else json.dumps(text))


def drain_json(stored, enqueued=None, **kw):
    d = {"drain_s": 0.5, "drain_timed_out": False, "queue_depth": 0, "stored": stored, "duplicate": 0,
         "enqueued": stored if enqueued is None else enqueued, "enqueue_rejected": 0, "worker_failed": 0,
         "retries": 0, "dlq": 0, "processing_latency_avg_s": 0.01}
    d.update(kw)
    return d


def make_run(root, db="sqlite", backend="memory", run=1, stored=50000, rate=10000):
    d = os.path.join(root, f"{db}-{backend}-{run}")
    write(f"{d}/healthz/wrk.txt", HEALTHZ_WRK)
    for kind, n, p99 in (("saturation", stored, 120000), ("fixed", rate * 5, 2000)):
        write(f"{d}/{kind}/wrk.txt", "Running...\n" + bench_line(n, p99=p99) + "Requests/sec: 10000.00\n")
        write(f"{d}/{kind}/drain.json", drain_json(n))
        write(f"{d}/{kind}/db.json", {"db_messages": n, "db_conversations": 900, "db_bad_conversations": 0,
                                      "db_pending_events": 0})
        write(f"{d}/{kind}/phase.json", {"kind": kind, "rate": 0 if kind == "saturation" else rate,
                                         "t_start": 1000.0, "t_end": 1005.0, "cpu0_s": 1.0, "cpu1_s": 6.0,
                                         "nats_cpu_s": 0, "vmhwm_kb": 102400, "server_exit": 0, "stop_s": 0.2,
                                         "busy": "", "server_log_lines": 0})
        rows = ["t,enqueued,rejected,stored,depth,cpu_s,rss_kb"]
        for i in range(8):
            acc = min(n, int(n * i / 5))
            rows.append(f"{999.9 + i},{acc},0,{max(0, acc - 5000) if i < 6 else n},0,{i},{50000}")
        write(f"{d}/{kind}/timeseries.csv", "\n".join(rows) + "\n")
    if backend == "memory":
        write(f"{d}/backlog/phase.json", {"kind": "backlog", "events": 1000, "capacity": 1164,
                                          "rss0_kb": 20000, "rss1_kb": 21000, "vmhwm_kb": 21500,
                                          "server_exit": 0, "spill_s": 0.3, "restart_exit": 0, "busy": "",
                                          "server_log_lines": 0})
        write(f"{d}/backlog/load.json", {"reached": True, "load_s": 1.0, "enqueued": 1000, "rejected": 0,
                                         "depth": 1000, "wrk_2xx": 1000, "wrk_non2xx": 0, "statuses": "-"})
        write(f"{d}/backlog/drain.json", drain_json(1000, enqueued=0))
        write(f"{d}/backlog/db.json", {"db_messages": 1000, "db_conversations": 900, "db_bad_conversations": 0,
                                       "db_pending_events": 0})
    return d


def record(root, d, db="sqlite", backend="memory", run=1):
    buf = io.StringIO()
    with redirect_stdout(buf):
        report.record(os.path.join(root, "settings.json"), d, db, backend, str(run))
    return json.loads(buf.getvalue())


class ReportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        write(os.path.join(self.root, "settings.json"), SETTINGS)

    def tearDown(self):
        self.tmp.cleanup()

    def test_parses_healthz_report(self):
        path = os.path.join(self.root, "hz.txt")
        write(path, HEALTHZ_WRK)
        r = report.parse_plain_wrk(path)
        self.assertEqual(r["rps"], 120000.0)
        self.assertAlmostEqual(r["p50_ms"], 0.45)
        self.assertAlmostEqual(r["p99_ms"], 1.5)
        self.assertEqual((r["non2xx"], r["socket_errors"], r["requests"]), (0, 0, 600000))

    def test_consistent_run_passes_and_derives_the_new_figures(self):
        rec = record(self.root, make_run(self.root))
        self.assertEqual(rec["fails"], [])
        self.assertEqual(rec["sat_cpu_us_per_msg"], 100.0)  # 5 s of CPU / 50,000 stored
        self.assertEqual(rec["sat_e2e_mps"], round(50000 / 5.5, 1))
        self.assertAlmostEqual(rec["e2e_per_hz"], round(50000 / 5.5 / 120000, 4))
        self.assertEqual(rec["bl_bytes_per_event"], 1024)  # 1,000 kB more for 1,000 events
        self.assertEqual(rec["fix_p99_ms"], 2.0)

    def test_every_broken_invariant_fails_the_run(self):
        breakages = {
            "saturation/db.json": lambda d: d.update(db_messages=d["db_messages"] - 1),
            "saturation/drain.json": lambda d: d.update(duplicate=1),
            "fixed/drain.json": lambda d: d.update(stored=d["stored"] - 3),
            "fixed/db.json": lambda d: d.update(db_pending_events=2),
            "backlog/load.json": lambda d: d.update(enqueued=999),
            "backlog/drain.json": lambda d: d.update(stored=999),
            "backlog/db.json": lambda d: d.update(db_bad_conversations=1),
            "saturation/phase.json": lambda d: d.update(server_exit=137),
        }
        for i, (name, breaks) in enumerate(breakages.items()):
            with self.subTest(name):
                d = make_run(self.root, run=10 + i)
                path = os.path.join(d, name)
                with open(path) as f:
                    data = json.load(f)
                breaks(data)
                write(path, data)
                rec = record(self.root, d, run=10 + i)
                self.assertEqual(rec["checks"], "FAIL")
                self.assertTrue(rec["fails"], name)

    def test_healthz_errors_fail_the_run(self):
        d = make_run(self.root)
        write(f"{d}/healthz/wrk.txt", HEALTHZ_WRK.replace("Requests/sec", "  Non-2xx or 3xx responses: 12\nRequests/sec"))
        self.assertEqual(record(self.root, d)["checks"], "FAIL")

    def test_summary_has_the_new_columns_and_reports_failure(self):
        runs = os.path.join(self.root, "runs.jsonl")
        with open(runs, "w") as f:
            for run in (1, 2, 3):
                f.write(json.dumps(record(self.root, make_run(self.root, run=run, stored=40000 + run * 1000), run=run)) + "\n")
            f.write(json.dumps(record(self.root, make_run(self.root, "postgres", "nats"), "postgres", "nats")) + "\n")
        history = os.path.join(self.root, "history.md")
        with redirect_stdout(io.StringIO()):
            status = report.summary(os.path.join(self.root, "settings.json"), runs,
                                    os.path.join(self.root, "summary.md"), history)
        self.assertEqual(status, 0)
        with open(history, encoding="utf-8") as f:
            text = f.read()
        for col in ("healthz/s", "e2e/healthz", "CPU µs/msg", "backlog RSS MB", "B/event", "offered/s",
                    "median/3"):
            self.assertIn(col, text)
        bad = make_run(self.root, run=9)
        write(f"{bad}/saturation/drain.json", drain_json(10, enqueued=11))
        with open(runs, "a") as f:
            f.write(json.dumps(record(self.root, bad, run=9)) + "\n")
        with redirect_stdout(io.StringIO()):
            self.assertEqual(report.summary(os.path.join(self.root, "settings.json"), runs,
                                    os.path.join(self.root, "summary.md"), history), 1)

    def test_chart_is_valid_svg_with_a_panel_per_combination(self):
        recs = [record(self.root, make_run(self.root, db, be), db, be)
                for db, be in (("sqlite", "memory"), ("postgres", "memory"), ("postgres", "nats"))]
        svg = chart.draw(SETTINGS, recs)
        root = ET.fromstring(svg)
        texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
        for want in ("SQLite / memory queue", "PostgreSQL / nats queue", "seconds since the load started",
                     "messages/s", "accept latency, ms (log scale)", "p99"):
            self.assertIn(want, texts)
        self.assertTrue(any("Test CPU" in t for t in texts), "the title names the machine")
        self.assertTrue(any("abc1234" in t for t in texts), "the title names the revision")
        self.assertGreaterEqual(len(list(root.iter("{http://www.w3.org/2000/svg}polyline"))), 6)

    def test_nice_steps(self):
        self.assertEqual(chart.nice_step(18000, 4), 5000)
        self.assertEqual(chart.nice_step(23, 6), 5)
        self.assertEqual(chart.log_ticks(0.1, 1000)[:3], [0.1, 0.2, 0.5])


if __name__ == "__main__":
    unittest.main()
