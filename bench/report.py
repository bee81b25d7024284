#!/usr/bin/env python3
"""Turns Google Benchmark JSON (with repetitions) into a markdown table of
medians, the ratios the issues ask for, and a PNG plot (gnuplot).

Usage: report.py RESULTS.json OUT_DIR
"""
import json
import os
import shutil
import subprocess
import sys

UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def medians(path):
    with open(path) as f:
        data = json.load(f)
    out = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        name = b["run_name"]
        secs = b["real_time"] * UNIT[b["time_unit"]]
        out[name] = (secs, b)
    return data["context"], out


def human(secs):
    if secs >= 1:
        return f"{secs:.2f} s"
    if secs >= 1e-3:
        return f"{secs * 1e3:.1f} ms"
    return f"{secs * 1e6:.2f} µs"


def main():
    path, out_dir = sys.argv[1], sys.argv[2]
    context, med = medians(path)
    reps = next(iter(med.values()))[1].get("repetitions", "?") if med else "?"
    lines = [f"Medians of {reps} repetitions on {context.get('num_cpus')} CPUs "
             f"({context.get('date', '')}).", ""]

    curve = sorted((int(n.split("/")[1]), s) for n, (s, _) in med.items()
                   if n.startswith("BM_MapReadScalar/"))
    if curve:
        lines += ["`map` + read one scalar at `[2,3]`:", "",
                  "| region size | median time |", "|---:|---:|"]
        for size, secs in curve:
            lines.append(f"| {size / 2**20:g} MiB | {human(secs)} |")
        lines.append(f"\nlargest / smallest region: {curve[-1][1] / curve[0][1]:.2f}x\n")

    memcpy = med.get("BM_Memcpy1GiB/iterations:1/real_time")
    share = med.get("BM_Share1GiB/iterations:1/real_time")
    inplace = med.get("BM_InPlace1GiB/iterations:1/real_time")
    if memcpy and share:
        lines += ["Handing over 1 GiB of f64:", "",
                  "| how | median time | vs memcpy | bytes copied by kura |", "|---|---:|---:|---:|",
                  f"| memcpy into fresh memory | {human(memcpy[0])} | 1.00x | - |",
                  f"| share (copy-in, hashed) | {human(share[0])} | {share[0] / memcpy[0]:.2f}x | 1 GiB |"]
        if inplace:
            copied = int(inplace[1].get("bytes_copied", -1))
            lines.append(f"| in place (producer fills the region, hashed) | {human(inplace[0])} | "
                         f"{inplace[0] / memcpy[0]:.2f}x | {copied} |")
        lines.append("")
    text = "\n".join(lines)
    with open(os.path.join(out_dir, "shm.md"), "w") as f:
        f.write(text + "\n")
    print(text)

    if curve and shutil.which("gnuplot"):
        dat = os.path.join(out_dir, "map_read.dat")
        with open(dat, "w") as f:
            for size, secs in curve:
                f.write(f"{size / 2**20} {secs * 1e6}\n")
        png = os.path.join(out_dir, "map_read.png")
        script = f"""
set terminal pngcairo size 720,420
set output '{png}'
set logscale x 2
set xlabel 'region size (MiB)'
set ylabel 'map + read [2,3] (µs, median)'
set yrange [0:*]
set grid
plot '{dat}' using 1:2 with linespoints title 'kura map'
"""
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        os.remove(dat)
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
