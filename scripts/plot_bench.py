#!/usr/bin/env python3
"""Plot streaming benchmark results (one JSON file per run point).

Usage:
    scripts/plot_bench.py --out DIR [--timeline RESULT.json ...] RESULT.json [RESULT.json ...]

Writes into DIR (created if needed):
  ccdf.png         e2e latency CCDF (log-log), kafka_floor dashed in the same colour;
                   at most 8 runs, taking the highest offered rates of each configuration in turn
  p99_vs_load.png  e2e p99 vs offered rate per configuration; hollow marker = unsustainable;
                   kafka_floor p99 dashed
  timeline.png     per-second e2e p50/p99/max over t_s with the warm-up shaded, for the runs
                   given by --timeline (repeatable), else the highest sustainable rate of
                   each configuration (at most 4 runs)
  rss.png          RSS over t_s for the same runs as timeline.png
and prints a Markdown table (one row per run) to stdout, for BENCHMARKS.md.

A configuration is (workers, processes, broker, devices). Absent fields are skipped.
Needs matplotlib only.
"""
import argparse
import json
import os
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter
except ImportError:
    print("pip install matplotlib", file=sys.stderr)
    sys.exit(2)

MAX_CCDF_RUNS, MAX_TIMELINE_RUNS = 8, 4
COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
GREY = "grey"


# Accessors that tolerate absent fields (None = absent or not a number).
def num(v): return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
def cfg(r, key): return (r.get("config") or {}).get(key)
def rate(r): return num(r.get("rate_offered", cfg(r, "rate_offered"))) or 0
def lat(r, kind, pct): return num(((r.get("latency_ms") or {}).get(kind) or {}).get(pct))
def sustainable(r): return r.get("sustainable") is not False
def config_key(r): return tuple(cfg(r, k) for k in ("workers", "processes", "broker", "devices"))


def sortable(key):
    # Numbers before strings before absent values, so mixed or missing fields still sort.
    return tuple((0, v, "") if num(v) is not None else (1, 0, str(v)) if v is not None
                 else (2, 0, "") for v in key)


def config_label(key, show_devices):  # e.g. "w2 n1 in-process", plus " d2000" if devices vary
    w, n, broker, dev = ("?" if v is None else v for v in key)
    return f"w{w} n{n} {broker}" + (f" d{dev}" if show_devices else "")


def run_label(r, show_devices): return f"{config_label(config_key(r), show_devices)} {rate(r):g}/s"


def unzip(pts):
    return [p[0] for p in pts], [p[1] for p in pts]


def ccdf_points(r, kind):
    # Zero fractions (and non-positive latencies) cannot be drawn on log axes.
    return unzip([p for p in ((r.get("ccdf") or {}).get(kind) or [])
                  if len(p) == 2 and num(p[0]) and num(p[1]) and p[0] > 0 and p[1] > 0])


def series(r, field):
    # Timeline points; seconds without e2e samples have null percentiles and are skipped.
    pts = [(num(e.get("t_s")), num(e.get(field))) for e in r.get("timeline") or []
           if e.get("e2e_count") or not field.startswith("e2e_")]
    return unzip([(t, v) for t, v in pts if t is not None and v is not None and v > 0])


def log_axes(ax, x=True):
    # Log scale with plain tick labels (20, 50, 100) instead of 2x10^1; minor ticks get
    # labels only when the axis spans few decades, so the labels never crowd.
    def minor(axis):
        def f(v, _):
            lo, hi = sorted(axis.get_view_interval())
            digits = "235" if lo > 0 and hi / lo < 10 else "25" if lo > 0 and hi / lo < 100 else ""
            return f"{v:g}" if f"{v:.0e}"[0] in digits else ""
        return FuncFormatter(f)
    for axis, setter in ([(ax.xaxis, ax.set_xscale)] if x else []) + [(ax.yaxis, ax.set_yscale)]:
        setter("log")
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(minor(axis))


def finish(fig, ax, title, xlabel, ylabel, path):
    if title:
        ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def no_data(ax, what):
    ax.text(0.5, 0.5, f"no {what} in the given results", ha="center", transform=ax.transAxes)


def plot_ccdf(runs, groups, show_dev, path):
    # Round-robin over configurations, highest offered rate first, up to MAX_CCDF_RUNS.
    queues = [sorted(g, key=rate, reverse=True) for g in groups.values()]
    chosen = []
    while len(chosen) < MAX_CCDF_RUNS and any(queues):
        chosen += [q.pop(0) for q in queues if q][:MAX_CCDF_RUNS - len(chosen)]
    chosen.sort(key=lambda r: (sortable(config_key(r)), rate(r)))
    fig, ax = plt.subplots(figsize=(10, 6.5))
    floor = False
    for i, r in enumerate(chosen):
        color = COLORS[i % len(COLORS)]
        xs, ys = ccdf_points(r, "e2e")
        ax.plot(xs, ys, color=color, label=run_label(r, show_dev) + ("" if xs else " (no data)"))
        xs, ys = ccdf_points(r, "kafka_floor")
        if xs:
            ax.plot(xs, ys, color=color, linestyle="--", linewidth=1)
            floor = True
    handles, labels = ax.get_legend_handles_labels()
    if floor:
        handles.append(Line2D([], [], color=GREY, linestyle="--"))
        labels.append("kafka floor (dashed, same colour)")
    if floor or any(ccdf_points(r, "e2e")[0] for r in chosen):
        log_axes(ax)
        ax.legend(handles, labels, fontsize=8, loc="lower left")
    else:
        no_data(ax, "CCDF data")
    shown = "all runs" if len(chosen) == len(runs) else \
        f"{len(chosen)} of {len(runs)} runs: highest offered rates per configuration"
    finish(fig, ax, f"End-to-end latency CCDF ({shown})", "latency (ms)",
           "fraction of samples with latency > x", path)


def plot_p99(groups, show_dev, path):
    fig, ax = plt.subplots(figsize=(10, 6.5))
    any_pt = any_floor = any_unsust = False
    for i, (key, g) in enumerate(groups.items()):
        color = COLORS[i % len(COLORS)]
        pts = [(rate(r), lat(r, "e2e", "p99"), sustainable(r)) for r in g
               if rate(r) > 0 and (lat(r, "e2e", "p99") or 0) > 0]
        if pts:
            any_pt = True
            ax.plot(*unzip(pts), color=color, label=config_label(key, show_dev))
            for x, y, ok in pts:
                any_unsust |= not ok
                ax.plot([x], [y], "o", color=color, markersize=7, markeredgewidth=1.5,
                        markerfacecolor=color if ok else "white")
        fl = [(rate(r), lat(r, "kafka_floor", "p99")) for r in g
              if rate(r) > 0 and (lat(r, "kafka_floor", "p99") or 0) > 0]
        if fl:
            any_floor = True
            ax.plot(*unzip(fl), "--x", color=color, linewidth=1)
    if any_pt or any_floor:
        log_axes(ax)
        handles, labels = ax.get_legend_handles_labels()
        if any_unsust:
            handles += [Line2D([], [], marker="o", color=GREY, linestyle=""),
                        Line2D([], [], marker="o", color=GREY, markerfacecolor="white",
                               linestyle="")]
            labels += ["sustainable", "unsustainable (hollow)"]
        if any_floor:
            handles.append(Line2D([], [], color=GREY, linestyle="--", marker="x"))
            labels.append("kafka floor p99 (dashed)")
        ax.legend(handles, labels, fontsize=8)
    else:
        no_data(ax, "p99 data")
    finish(fig, ax, "End-to-end p99 latency vs offered load", "offered rate (records/s)",
           "e2e p99 latency (ms)", path)


def timeline_runs(groups, paths, by_path):
    if paths:
        if len(paths) > MAX_TIMELINE_RUNS:
            print(f"note: drawing the first {MAX_TIMELINE_RUNS} --timeline runs", file=sys.stderr)
        return [by_path[p] for p in paths[:MAX_TIMELINE_RUNS]]
    best = [max((r for r in g if sustainable(r)), key=rate, default=None) for g in groups.values()]
    return [r for r in best if r is not None][:MAX_TIMELINE_RUNS]


def shade_warmup(ax, w):
    if num(w) and w > 0:
        ax.axvspan(0, w, color=GREY, alpha=0.15, label=f"warm-up ({w:g} s)")


def plot_timeline(sel, show_dev, path):
    fig, axes = plt.subplots(max(len(sel), 1), 1, squeeze=False,
                             figsize=(10, 3.2 * max(len(sel), 1) + 0.6))
    for ax, r in zip(axes[:, 0], sel):
        shade_warmup(ax, cfg(r, "warmup_s"))
        drawn = False
        for field, color in (("e2e_p50", COLORS[0]), ("e2e_p99", COLORS[1]), ("e2e_max", COLORS[3])):
            xs, ys = series(r, field)
            drawn |= bool(xs)
            ax.plot(xs, ys, marker=".", color=color, label=field[4:])
        if drawn:
            log_axes(ax, x=False)
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        else:
            no_data(ax, "timeline percentiles")
        ax.set_title(run_label(r, show_dev) + ("" if sustainable(r) else " (unsustainable)"),
                     fontsize=10)
        ax.set_ylabel("e2e latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
    if not sel:
        no_data(axes[0, 0], "runs selected")
    fig.suptitle("End-to-end latency over the run (per-second percentiles)")
    finish(fig, axes[-1, 0], None, "time since start (s)", "e2e latency (ms)", path)


def plot_rss(sel, show_dev, path):
    fig, ax = plt.subplots(figsize=(10, 5.5))
    warmups = {cfg(r, "warmup_s") for r in sel}
    if len(warmups) == 1:
        shade_warmup(ax, warmups.pop())  # only when all the runs share one warm-up length
    for i, r in enumerate(sel):
        ax.plot(*series(r, "rss_mib"), color=COLORS[i % len(COLORS)], label=run_label(r, show_dev))
    if any(series(r, "rss_mib")[0] for r in sel):
        ax.legend(fontsize=8)
    else:
        no_data(ax, "RSS samples")
    ax.set_ylim(bottom=0)
    finish(fig, ax, "Resident set size over the run", "time since start (s)", "RSS (MiB)", path)


def fmt(v):
    if v is None or isinstance(v, bool):
        return {None: "-", True: "yes", False: "no"}[v]
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def print_table(groups):
    cols = ("workers|processes|broker|devices|rate offered (/s)|rate achieved (/s)|e2e p50 (ms)|"
            "e2e p99 (ms)|e2e p99.9 (ms)|e2e max (ms)|dataflow p99 (ms)|kafka floor p99 (ms)|"
            "lag at end|sustainable").split("|")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" if c == "broker" else "---:" for c in cols) + "|")
    for key, g in groups.items():
        for r in g:
            row = [fmt(v) for v in key] + [
                fmt(rate(r) or None), fmt(num(r.get("rate_achieved"))),
                *(fmt(lat(r, "e2e", p)) for p in ("p50", "p99", "p999", "max")),
                fmt(lat(r, "dataflow", "p99")), fmt(lat(r, "kafka_floor", "p99")),
                fmt(num(r.get("lag_end"))), fmt(r.get("sustainable"))]
            print("| " + " | ".join(row) + " |")


def main():
    ap = argparse.ArgumentParser(description="Plot benchmark result JSON files.")
    ap.add_argument("--out", required=True, help="output directory for the PNGs")
    ap.add_argument("--timeline", action="append", default=[], metavar="FILE",
                    help="run to show in timeline.png and rss.png (repeatable, max 4)")
    ap.add_argument("results", nargs="+", metavar="RESULT.json")
    a = ap.parse_args()
    by_path = {}  # realpath -> parsed result; --timeline files need not be among the results
    for p in a.results + a.timeline:
        rp = os.path.realpath(p)
        if rp not in by_path:
            with open(p) as f:
                by_path[rp] = json.load(f)
    runs = [by_path[p] for p in dict.fromkeys(os.path.realpath(p) for p in a.results)]
    groups = {}
    for r in sorted(runs, key=rate):
        groups.setdefault(config_key(r), []).append(r)
    groups = {k: groups[k] for k in sorted(groups, key=sortable)}
    show_dev = len({cfg(r, "devices") for r in runs}) > 1  # label devices only if they vary
    os.makedirs(a.out, exist_ok=True)
    plot_ccdf(runs, groups, show_dev, os.path.join(a.out, "ccdf.png"))
    plot_p99(groups, show_dev, os.path.join(a.out, "p99_vs_load.png"))
    sel = timeline_runs(groups, list(dict.fromkeys(os.path.realpath(p) for p in a.timeline)),
                        by_path)
    plot_timeline(sel, show_dev, os.path.join(a.out, "timeline.png"))
    plot_rss(sel, show_dev, os.path.join(a.out, "rss.png"))
    print_table(groups)


if __name__ == "__main__":
    main()
