"""Plots of report.py's figures (gnuplot): hand-off time against size per
method (log-log), round-trip latency distribution, path lookup against
region size."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from report import DIRLESS, LABELS, METHODS


def gnuplot(script):
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def plot_handoff(rep, out, tmp):
    sizes = rep.sizes("handoff/")
    if len(sizes) < 2:
        return None
    n = max(int(k[0].split("/")[3]) for k in rep.rows if k[0].startswith("handoff/"))
    labels = rep.labels()
    png = os.path.join(out, "handoff.png")
    panels = []
    for label in labels:
        plots = []
        for m in METHODS:
            path = os.path.join(tmp, f"h_{label}_{m}.dat")
            with open(path, "w") as f:
                for s in sizes:
                    r = rep.handoff(m, s, n, label)
                    if r:
                        f.write(f"{s} {r['time']['median'] * 1e3} {r['time']['min'] * 1e3} "
                                f"{r['time']['max'] * 1e3}\n")
            title = m + (" (run on /dev/shm)" if m in DIRLESS and label == "huge" else "")
            plots.append(f"'{path}' using 1:2:3:4 with yerrorlines lt {METHODS.index(m) + 1} lw 2 title '{title}'")
        panels.append(f"set title '{LABELS[label]}, {n} consumers: until every sum is done'\n"
                      f"plot {', '.join(plots)}\n")
    gnuplot(f"""
set terminal pngcairo noenhanced size {560 * len(labels)},460 font ',10'
set output '{png}'
set multiplot layout 1,{len(labels)}
set logscale xy
set xrange [0.7:1500]
set xlabel 'array (MiB)'
set ylabel 'ms (median; bars: range)'
set key top left
set grid
{''.join(panels)}
unset multiplot
""")
    return png


def plot_rtt(raw, out, tmp):
    path = os.path.join(raw, "latency.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        samples = json.load(f)
    png = os.path.join(out, "round_trip.png")
    plots = []
    for name, xs in sorted(samples.items()):
        xs = sorted(xs)
        dat = os.path.join(tmp, name.replace("/", "_") + ".dat")
        with open(dat, "w") as f:
            step = max(1, len(xs) // 500)
            for i in range(0, len(xs), step):
                f.write(f"{xs[i]} {(i + 1) / len(xs)}\n")
            f.write(f"{xs[-1]} 1\n")
        style = "dashtype 2" if name.endswith("pinned") else "dashtype 1"
        plots.append(f"'{dat}' using 1:2 with lines lw 2 {style} title '{name[4:]}'")
    gnuplot(f"""
set terminal pngcairo noenhanced size 720,420 font ',10'
set output '{png}'
set logscale x
set xlabel 'round trip (µs)'
set ylabel 'fraction of round trips at most this long'
set key bottom right
set grid
set yrange [0:1]
plot {', '.join(plots)}
""")
    return png


def plot_lookup(rep, out, tmp):
    sizes = rep.sizes("lookup/kura_map/")
    if len(sizes) < 2:
        return None
    png = os.path.join(out, "lookup.png")
    plots = []
    depths = sorted({int(n.split("/")[3]) for (n, _) in rep.rows if n.startswith("lookup/kura_map/")})
    for label in rep.labels():
        series = [(f"kura map, depth {d}", f"lookup/kura_map/{{}}/{d}") for d in (depths[0], depths[-1])]
        series.append(("Boost open + find", "lookup/boost_open_find/{}"))
        series.append((f"kura map, cached, depth {depths[-1]}", f"lookup/kura_map_cached/{{}}/{depths[-1]}"))
        for title, pattern in series:
            dat = os.path.join(tmp, f"l_{label}_{len(plots)}.dat")
            with open(dat, "w") as f:
                for s in sizes:
                    r = rep.get(pattern.format(s), label)
                    if r:
                        f.write(f"{s} {r['time']['median'] * 1e6}\n")
            plots.append(f"'{dat}' using 1:2 with linespoints title '{title} ({label})'")
    gnuplot(f"""
set terminal pngcairo noenhanced size 720,420 font ',10'
set output '{png}'
set logscale x 2
set xlabel 'region size (MiB)'
set ylabel 'µs (median)'
set yrange [0:*]
set key top left
set grid
plot {', '.join(plots)}
""")
    return png


def plot_all(rep, raw, out):
    """Every plot of report `rep` (raw JSON in `raw`) into `out`, when gnuplot is there."""
    if not shutil.which("gnuplot"):
        print("report.py: gnuplot not found: no plots", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for png in (plot_handoff(rep, out, tmp), plot_rtt(raw, out, tmp), plot_lookup(rep, out, tmp)):
            if png:
                print(f"plot: {png}")
