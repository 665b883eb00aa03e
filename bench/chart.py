#!/usr/bin/env python3
"""Draws the benchmark chart as a self-contained SVG (no plotting library needed).

    python3 bench/chart.py SETTINGS_JSON RUNS_JSONL OUT.svg

Reads what bench/run.sh wrote under bench/results/<stamp>/ and draws, per database and
queue backend: accepted/s and stored/s over time in the saturation run (the run with the
median end-to-end rate), accept latency percentiles (p50/p90/p99) at saturation and at the
fixed offered rate, and a line of medians (healthz ceiling, end-to-end share of it, CPU
per message, backlog memory). Plain SVG so that it renders in a README and diffs as text.
"""
import csv
import json
import math
import os
import sys
from xml.sax.saxutils import escape

# No __pycache__ in bench/ (it is not git-ignored).
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import groups, label, median_run, medians, read_json, read_text  # noqa: E402

ACCEPTED = "#0072B2"   # blue
STORED = "#E69F00"     # orange
REFUSED = "#CC0000"    # red
PCT_COLORS = {"p50": "#56B4E9", "p90": "#0072B2", "p99": "#D55E00"}
GRID = "#e5e5e5"
AXIS = "#444"
FONT = 'font-family="Helvetica, Arial, sans-serif"'

W = 1100
PAD = 30


class Svg:
    def __init__(self):
        self.parts = []

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=12, anchor="start", weight="normal", color="#222", rotate=None):
        tr = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                 f'font-weight="{weight}" fill="{color}"{tr}>{escape(s)}</text>')

    def line(self, x1, y1, x2, y2, color=AXIS, width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                 f'stroke="{color}" stroke-width="{width}"{d}/>')

    def rect(self, x, y, w, h, color, stroke=None):
        s = f' stroke="{stroke}"' if stroke else ""
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(0, w):.1f}" height="{max(0, h):.1f}" fill="{color}"{s}/>')

    def polyline(self, pts, color, width=2, dash=None):
        if len(pts) < 2:
            return
        d = f' stroke-dasharray="{dash}"' if dash else ""
        p = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        self.add(f'<polyline points="{p}" fill="none" stroke="{color}" stroke-width="{width}" '
                 f'stroke-linejoin="round"{d}/>')

    def render(self, height):
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height:.0f}" '
                f'viewBox="0 0 {W} {height:.0f}" {FONT}>\n'
                f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(self.parts) + "\n</svg>\n")


def nice_step(span, target_ticks=5):
    """A 1-2-5 step giving about target_ticks ticks over span."""
    raw = span / max(1, target_ticks)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def si(v):
    """12,345 -> 12k (axis ticks)."""
    if v >= 1000:
        k = v / 1000
        return f"{k:.0f}k" if k == int(k) else f"{k:.1f}k"
    return f"{v:g}"


def read_series(rec):
    """[(seconds since the load started, accepted/s, stored/s, refused/s)] from the 1 Hz samples."""
    path = os.path.join(rec.get("sat_dir", ""), "timeseries.csv")
    if not os.path.exists(path):
        return []
    rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(read_text(path).splitlines())]
    t0 = rec["sat_t_start"]
    out = []
    a = rows[0] if rows else None
    for b in rows[1:]:
        dt = b["t"] - a["t"]
        # Samples bunch up behind a slow scrape (ms apart): a rate over such an interval is
        # one batch divided by nothing. Measure from the last sample at least 0.5 s back.
        if dt < 0.5:
            continue
        out.append(((a["t"] + b["t"]) / 2 - t0, (b["enqueued"] - a["enqueued"]) / dt,
                    (b["stored"] - a["stored"]) / dt, (b["rejected"] - a["rejected"]) / dt))
        a = b
    return out


def timeseries_panel(svg, x, y, w, h, title, series, x_max, y_max, rec):
    px, py, pw, ph = x + 60, y + 36, w - 75, h - 76  # plot area
    svg.text(x + w / 2, y + 14, title, size=13, anchor="middle", weight="bold")
    e2e = rec.get("sat_e2e_mps")
    if e2e:
        note = f"end to end {e2e:,.0f} msg/s"
        if rec.get("e2e_per_hz"):
            note += f" = {rec['e2e_per_hz']:.3f} × the healthz ceiling ({rec['hz_rps']:,.0f} req/s)"
        svg.text(x + w / 2, y + 29, note, size=11, anchor="middle", color="#444")
    sx = lambda t: px + pw * max(0.0, t) / x_max  # noqa: E731
    sy = lambda v: py + ph - ph * min(v, y_max) / y_max  # noqa: E731
    step = nice_step(y_max, 4)
    v = 0.0
    while v <= y_max + 1e-9:
        svg.line(px, sy(v), px + pw, sy(v), GRID)
        svg.text(px - 6, sy(v) + 4, si(v), size=10, anchor="end", color=AXIS)
        v += step
    tstep = nice_step(x_max, 6)
    t = 0.0
    while t <= x_max + 1e-9:
        svg.line(sx(t), py + ph, sx(t), py + ph + 4)
        svg.text(sx(t), py + ph + 16, f"{t:g}", size=10, anchor="middle", color=AXIS)
        t += tstep
    svg.line(px, py + ph, px + pw, py + ph)
    svg.line(px, py, px, py + ph)
    svg.text(px + pw / 2, py + ph + 32, "seconds since the load started", size=11, anchor="middle", color=AXIS)
    svg.text(x + 14, py + ph / 2, "messages/s", size=11, anchor="middle", color=AXIS, rotate=-90)
    if not series:
        svg.text(px + pw / 2, py + ph / 2, "no samples", size=12, anchor="middle", color="#999")
        return
    load_end = rec["sat_t_end"] - rec["sat_t_start"]
    svg.line(sx(load_end), py, sx(load_end), py + ph, "#888", 1, "5,4")
    svg.text(sx(load_end) + 4, py + 12, "load ends", size=10, color="#666")
    svg.polyline([(sx(t), sy(a)) for t, a, _, _ in series], ACCEPTED, 2)
    svg.polyline([(sx(t), sy(s)) for t, _, s, _ in series], STORED, 2, "6,3")
    if any(r for _, _, _, r in series):
        svg.polyline([(sx(t), sy(r)) for t, _, _, r in series], REFUSED, 1.5, "2,2")


def log_ticks(lo, hi):
    ticks, k = [], math.floor(math.log10(lo))
    while 10 ** k <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** k
            if lo * 0.9999 <= v <= hi * 1.0001:
                ticks.append(v)
        k += 1
    return ticks


def latency_panel(svg, x, y, w, h, title, groups_, lo, hi):
    """groups_: [(label, {p50: ms, p90: ms, p99: ms})]; log scale from lo to hi ms."""
    px, py, pw, ph = x + 60, y + 24, w - 75, h - 70
    svg.text(x + w / 2, y + 14, title, size=13, anchor="middle", weight="bold")
    sy = lambda v: py + ph - ph * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))  # noqa: E731
    for v in log_ticks(lo, hi):
        svg.line(px, sy(v), px + pw, sy(v), GRID)
        svg.text(px - 6, sy(v) + 4, f"{v:g}", size=10, anchor="end", color=AXIS)
    svg.line(px, py + ph, px + pw, py + ph)
    svg.line(px, py, px, py + ph)
    svg.text(x + 14, py + ph / 2, "accept latency, ms (log scale)", size=11, anchor="middle", color=AXIS, rotate=-90)
    if not groups_:
        svg.text(px + pw / 2, py + ph / 2, "not measured", size=12, anchor="middle", color="#999")
        return
    gw = pw / len(groups_)
    bw = min(28, gw / 4.5)
    for i, (name, pcts) in enumerate(groups_):
        cx = px + gw * (i + 0.5)
        for j, p in enumerate(("p50", "p90", "p99")):
            v = pcts.get(p)
            if v is None:
                continue
            bx = cx + (j - 1.5) * bw
            svg.rect(bx, sy(v), bw - 2, py + ph - sy(v), PCT_COLORS[p])
            svg.text(bx + (bw - 2) / 2, sy(v) - 3, f"{v:.3g}", size=9, anchor="middle", color="#333")
        db, _, backend = name.partition(" / ")
        svg.text(cx, py + ph + 15, db, size=11, anchor="middle")
        svg.text(cx, py + ph + 28, backend + " queue", size=10, anchor="middle", color="#555")


def legend(svg, x, y, items):
    for name, color, kind in items:
        if kind == "line":
            svg.line(x, y - 4, x + 24, y - 4, color, 2)
        elif kind == "dash":
            svg.line(x, y - 4, x + 24, y - 4, color, 2, "6,3")
        elif kind == "dot":
            svg.line(x, y - 4, x + 24, y - 4, color, 1.5, "2,2")
        elif kind == "vline":
            svg.line(x + 12, y - 12, x + 12, y + 3, color, 1, "5,4")
        else:
            svg.rect(x + 6, y - 11, 12, 12, color)
        svg.text(x + 30, y, name, size=11)
        x += 44 + 5.7 * len(name)


def draw(settings, recs):
    svg = Svg()
    groups_ = groups(recs)
    med = {(m["db"], m["backend"]): m for m in medians(recs)}
    runs = {k: median_run(rs) for k, rs in groups_.items()}
    n_runs = max(len(rs) for rs in groups_.values())

    svg.text(PAD, 30, f"messaging-server load benchmark — rev {settings['git_rev']}, {settings['date']}",
             size=18, weight="bold")
    svg.text(PAD, 50, f"Machine: {settings['machine']} (wrk, the server and the database share it). "
             f"wrk -t{settings['threads']} -c{settings['connections']} -d{settings['duration']}s, "
             f"LOG_LEVEL={settings['log_level']}.", size=12, color="#444")
    y = 70

    # Row 1: accepted/s and stored/s over time, one panel per database/backend.
    sat = [(k, runs[k]) for k in groups_ if runs[k].get("sat_dir")]
    if sat:
        which = f"median run of {n_runs}" if n_runs > 1 else "one run"
        svg.text(PAD, y + 12, f"Throughput over time at saturation (as fast as the server answers; {which}, "
                 "sampled every second)", size=14, weight="bold")
        series = {k: read_series(r) for k, r in sat}
        items = [("accepted/s (202 from the API)", ACCEPTED, "line"),
                 ("stored/s (persisted by the workers)", STORED, "dash"),
                 ("load ends (wrk stops; then the queue drains)", "#888", "vline")]
        if any(r for ser in series.values() for _, _, _, r in ser):
            items.append(("refused/s (503, queue full)", REFUSED, "dot"))
        legend(svg, PAD, y + 32, items)
        y += 42
        x_max = max([t for s in series.values() for t, _, _, _ in s] + [1.0]) * 1.03
        # The 98th percentile, not the maximum: a NATS worker's stored counter moves in
        # bursts that would flatten every other curve; a point above is drawn at the top.
        rates = sorted(max(a, s) for ser in series.values() for _, a, s, _ in ser) or [1.0]
        y_max = max(rates[min(len(rates) - 1, int(len(rates) * 0.98))], 1.0) * 1.1
        y_max = math.ceil(y_max / nice_step(y_max, 4)) * nice_step(y_max, 4)
        cols = 2 if len(sat) > 1 else 1
        pw = (W - 2 * PAD) / cols
        ph = 262
        for i, (k, r) in enumerate(sat):
            timeseries_panel(svg, PAD + (i % cols) * pw, y + (i // cols) * ph, pw - 10, ph - 10,
                             label(*k) + " queue", series[k], x_max, y_max, r)
        y += math.ceil(len(sat) / cols) * ph + 10

    # Row 2: latency percentiles at saturation and at the fixed offered rate.
    panels = []
    for prefix, title in (("sat_", "Accept latency at saturation"),
                          ("fix_", f"Accept latency at {settings['fixed_rate']:,} requests/s offered")):
        bars = [(label(*k), {p: med[k].get(f"{prefix}{p}_ms") for p in ("p50", "p90", "p99")})
                for k in groups_ if med[k].get(f"{prefix}p50_ms") is not None]
        if bars:
            panels.append((title, bars))
    if panels:
        svg.text(PAD, y + 12, "Accept latency percentiles (wrk, medians of the runs)", size=14, weight="bold")
        legend(svg, PAD, y + 32, [(p, PCT_COLORS[p], "bar") for p in ("p50", "p90", "p99")])
        y += 42
        vals = [v for _, bars in panels for _, pc in bars for v in pc.values() if v]
        lo = 10 ** math.floor(math.log10(min(vals))) if vals else 0.1
        hi = 10 ** math.ceil(math.log10(max(vals) * 1.5)) if vals else 1000
        pw = (W - 2 * PAD) / len(panels)
        for i, (title, bars) in enumerate(panels):
            latency_panel(svg, PAD + i * pw, y, pw - 10, 270, title, bars, lo, hi)
        y += 280

    # Row 3: the figures of the summary table that the panels do not show.
    runs_note = f"medians of {n_runs} runs" if n_runs > 1 else "one run"
    svg.text(PAD, y + 12, f"Figures per database and queue ({runs_note})", size=14, weight="bold")
    y += 36
    cols = [  # header, median key, format, x offset of the column's right edge
        ("database / queue", None, None, 0),
        ("healthz req/s", "hz_rps", "{:,.0f}", 270), ("e2e msg/s", "sat_e2e_mps", "{:,.0f}", 360),
        ("e2e / healthz", "e2e_per_hz", "{:.3f}", 460), ("CPU µs/msg", "sat_cpu_us_per_msg", "{:,.0f}", 550),
        ("peak RSS MB", "sat_peak_rss_mb", "{:,.0f}", 645), ("backlog events", "bl_events", "{:,.0f}", 760),
        ("backlog RSS MB", "bl_rss_mb", "{:,.0f}", 880), ("B/event", "bl_bytes_per_event", "{:,.0f}", 950),
        ("checks", "checks", "{}", 1030),
    ]
    for head, _, _, dx in cols:
        svg.text(PAD + dx, y, head, size=11, anchor="end" if dx else "start", weight="bold", color="#444")
    svg.line(PAD, y + 5, PAD + 1035, y + 5, "#bbb")
    y += 20
    for k in groups_:
        m = med[k]
        for head, key, fmt, dx in cols:
            if key is None:
                svg.text(PAD, y, label(*k) + " queue", size=12)
                continue
            v = m.get(key)
            color = "#C00" if key == "checks" and v != "ok" else "#222"
            svg.text(PAD + dx, y, "-" if v is None else fmt.format(v), size=12, anchor="end", color=color)
        y += 18
    return svg.render(y + 12)


def main():
    settings_path, runs_path, out = sys.argv[1:4]
    settings = read_json(settings_path)
    recs = [json.loads(l) for l in read_text(runs_path).splitlines() if l.strip()]
    if not recs:
        sys.exit("no runs to draw")
    with open(out, "w") as f:
        f.write(draw(settings, recs))


if __name__ == "__main__":
    main()
