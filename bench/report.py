#!/usr/bin/env python3
"""Turns the Google Benchmark JSON of bench/run.sh into
   OUT_DIR/latest.json  every figure (median, min, max of the repetitions),
                        with the machine, its load and the command
   OUT_DIR/latest.md    tables, ratios of kura against each alternative,
                        and the issue's targets, met or missed
   OUT_DIR/*.png        plots (report_plots.py)

Usage: report.py RAW_DIR OUT_DIR [--quick]
RAW_DIR holds <program>_<4k|huge>.json, latency.json, load_before.txt and
load_after.txt, as bench/run.sh writes them.
"""
import glob
import json
import os
import platform
import re
import subprocess
import sys

UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
MIB = 1 << 20
LABELS = {"4k": "/dev/shm, 4 KiB pages", "huge": "tmpfs huge=always, 2 MiB pages"}
METHODS = ["kura_share", "kura_in_place", "kura_dispatcher", "boost", "shm_file", "unix_socket",
           "dispatcher_inline"]
ALTERNATIVES = ["unix_socket", "dispatcher_inline", "shm_file", "boost"]
# Alternatives that never touch the region directory run once, on /dev/shm.
DIRLESS = {"unix_socket", "dispatcher_inline"}
DESCRIBE = {
    "kura_share": "kura `share` of the buffer + name",
    "kura_in_place": "kura built in place + name",
    "kura_dispatcher": "kura `share`, name through the dispatcher",
    "boost": "Boost.Interprocess named object",
    "shm_file": "file in the region directory, `write`/`read`",
    "unix_socket": "Unix socket, `write`/`read`",
    "dispatcher_inline": "dispatcher, array as an inline argument",
}


def base_name(run_name):
    parts = [p for p in run_name.split("/")
             if not re.fullmatch(r"(iterations|repeats):\d+|real_time|manual_time", p)]
    return "/".join(parts)


def load(raw):
    """{(name, label): row} and {label: context} from every program's JSON."""
    rows, contexts = {}, {}
    for path in sorted(glob.glob(os.path.join(raw, "*_*.json"))):
        m = re.fullmatch(r"(\w+?)_(4k|huge)\.json", os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            data = json.load(f)
        label = m.group(2)
        contexts.setdefault(label, {}).update(data["context"])
        for b in data["benchmarks"]:
            agg = b.get("aggregate_name")
            if agg not in ("median", "min", "max"):
                continue
            name = base_name(b["run_name"])
            row = rows.setdefault((name, label), {"name": name, "dir": label, "time": {}, "counters": {},
                                                  "repetitions": b.get("repetitions")})
            row["time"][agg] = b["real_time"] * UNIT[b["time_unit"]]
            for k, v in b.items():
                if k in ("bytes_per_second", "items_per_second") or (
                        isinstance(v, (int, float)) and k not in (
                            "family_index", "per_family_instance_index", "repetitions", "threads",
                            "iterations", "real_time", "cpu_time", "repetition_index")):
                    row["counters"].setdefault(k, {})[agg] = v
    return rows, contexts


def machine(raw, contexts):
    def read(path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return ""

    cpu = ""
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = subprocess.run(["git", "-C", top, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    ctx = contexts.get("4k", {})
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "kernel": platform.release(),
        "date": ctx.get("date", ""),
        "commit": commit,
        "hash_build": ctx.get("hash_build", ""),
        "benchmark_library_build": ctx.get("library_build_type", ""),
        "load_before": read(os.path.join(raw, "load_before.txt")),
        "load_per_program": read(os.path.join(raw, "load.txt")).splitlines(),
        "load_after": read(os.path.join(raw, "load_after.txt")),
        "region_directories": {label: {k: c.get(k) for k in (
            "region_dir", "region_fs", "region_huge", "region_page_size", "boost_segment", "skipped")}
            for label, c in contexts.items()},
    }


def ms(secs):
    if secs is None:
        return "-"
    if secs >= 1:
        return f"{secs:,.2f} s"
    if secs >= 1e-3:
        v = secs * 1e3
        return f"{v:.0f} ms" if v >= 100 else f"{v:.1f} ms"
    if secs >= 1e-6:
        return f"{secs * 1e6:.1f} µs"
    return f"{secs * 1e9:.0f} ns"


def span(t):
    """'123 ms (118-140)'."""
    if not t or "median" not in t:
        return "-"
    lo, hi = t.get("min"), t.get("max")
    text = ms(t["median"])
    if lo is not None and hi is not None:
        unit = text.split()[-1]
        scale = {"s": 1, "ms": 1e3, "µs": 1e6, "ns": 1e9}[unit]
        fmt = (lambda x: f"{x * scale:,.2f}") if unit == "s" else (
            lambda x: f"{x * scale:.0f}" if x * scale >= 100 else f"{x * scale:.1f}")
        text += f" ({fmt(lo)}-{fmt(hi)})"
    return text


def size_name(mib):
    return f"{mib // 1024} GiB" if mib >= 1024 and mib % 1024 == 0 else f"{mib} MiB"


def human_bytes(n):
    if n is None:
        return "-"
    if n == 0:
        return "0"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def median(row, key=None):
    if row is None:
        return None
    if key is None:
        return row["time"].get("median")
    return row["counters"].get(key, {}).get("median")


def ratio(a, b):
    return f"{a / b:.1f}x" if a and b else "-"


class Report:
    def __init__(self, rows, contexts, quick):
        self.rows, self.contexts, self.quick = rows, contexts, quick
        self.lines = []
        self.targets = []

    def get(self, name, label):
        return self.rows.get((name, label))

    def handoff(self, method, mib, n, label):
        if method in DIRLESS:
            label = "4k"
        return self.get(f"handoff/{method}/{mib}/{n}", label)

    def sizes(self, prefix):
        out = set()
        for (name, _) in self.rows:
            if name.startswith(prefix):
                out.add(int(name.split("/")[2]))
        return sorted(out)

    def labels(self):
        return [lb for lb in ("4k", "huge") if any(k[1] == lb for k in self.rows)]

    def add(self, *lines):
        self.lines.extend(lines)

    def table(self, header, rows):
        self.add("| " + " | ".join(header) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        for r in rows:
            self.add("| " + " | ".join(r) + " |")
        self.add("")

    # --- sections -------------------------------------------------------------------------

    def handoff_ratios(self):
        sizes = self.sizes("handoff/")
        consumers = sorted({int(n.split("/")[3]) for (n, _) in self.rows if n.startswith("handoff/")})
        if not sizes:
            return
        n = max(consumers)
        self.add("### Hand-off: how many times faster kura is",
                 "",
                 f"Time until all {n} consumers have their sum, for each alternative divided by kura's "
                 "(`share` of the existing buffer, then the name); above 1.0x kura is faster. "
                 "Medians of the repetitions; the first row is kura's own time.",
                 "")
        for label in self.labels():
            header = [f"{LABELS[label]}, {n} consumers"] + [size_name(s) for s in sizes]
            rows = [["kura `share` (time)"] + [span(self.handoff("kura_share", s, n, label) and
                                                     self.handoff("kura_share", s, n, label)["time"])
                                               for s in sizes]]
            for alt in ["kura_in_place", "kura_dispatcher"] + ALTERNATIVES:
                cells = []
                for s in sizes:
                    k = median(self.handoff("kura_share", s, n, label))
                    a = median(self.handoff(alt, s, n, label))
                    cells.append(ratio(a, k))
                note = " (run on /dev/shm)" if alt in DIRLESS and label == "huge" else ""
                rows.append([DESCRIBE[alt] + note] + cells)
            self.table(header, rows)

    def handoff_full(self):
        sizes = self.sizes("handoff/")
        if not sizes:
            return
        consumers = sorted({int(n.split("/")[3]) for (n, _) in self.rows if n.startswith("handoff/")})
        self.add("### Hand-off: every figure",
                 "",
                 "All sums done and first byte: from the moment the producer starts handing over until the "
                 "last consumer has its sum / has read its first element (median, and the range of the "
                 "repetitions). Copied: copies of the array the hand-off made (each full copy counts its "
                 "size). PSS: the consumers' proportional set size above their idle size while all of "
                 "them hold the data, each and all together.",
                 "")
        for label in self.labels():
            for s in sizes:
                rows = []
                for n in consumers:
                    for m in METHODS:
                        if m in DIRLESS and label == "huge":
                            continue
                        r = self.handoff(m, s, n, label)
                        if r is None:
                            continue
                        c = r["counters"]
                        rows.append([f"{m}", str(n), span(r["time"]),
                                     span({k: v / 1e3 for k, v in c.get("first_byte_ms", {}).items()}),
                                     human_bytes(median(r, "copied_bytes")),
                                     f"{median(r, 'pss_mib'):.1f} MiB", f"{median(r, 'pss_total_mib'):.0f} MiB"])
                if rows:
                    self.add(f"{size_name(s)}, {LABELS[label]}:", "")
                    self.table(["method", "consumers", "all sums done", "first byte", "copied", "PSS each",
                                "PSS total"], rows)

    def round_trip(self):
        raw = self.get("rtt/raw_socket/any", "4k")
        if raw is None:
            return
        self.add("### Round trip of a small task", "",
                 "64 bytes there and back (p50 and p99 of each repetition's samples; median over the "
                 "repetitions, range in brackets). /any: processes free to run on both cores; /pinned: "
                 "every process and thread on CPU 0. raw_relay: client, relay process and echo "
                 "process with blocking calls, the floor of any design with a broker.", "")
        rows = []
        for where in ("any", "pinned"):
            base = median(self.get(f"rtt/raw_socket/{where}", "4k"), "p50_us")
            floor = median(self.get(f"rtt/raw_relay/{where}", "4k"), "p50_us")
            for m in ("raw_socket", "raw_relay", "libuv_pipe", "dispatcher"):
                r = self.get(f"rtt/{m}/{where}", "4k")
                if r is None:
                    continue
                p50 = r["counters"]["p50_us"]
                p99 = r["counters"]["p99_us"]
                rows.append([f"{m} /{where}", f"{p50['median']:.1f} µs ({p50['min']:.1f}-{p50['max']:.1f})",
                             f"{p99['median']:.1f} µs ({p99['min']:.1f}-{p99['max']:.1f})",
                             ratio(p50["median"], base), ratio(p50["median"], floor)])
        self.table(["", "p50", "p99", "p50 / raw socket", "p50 / raw relay"], rows)
        rows = []
        for name, label in (("throughput/raw_socket", "64-byte messages, raw socket, pipelined"),
                            ("throughput/dispatcher", "echo tasks through the dispatcher, 2 workers"),
                            ("throughput/dispatcher/window",
                             "the same, worker window 16 (tasks wait on workers)")):
            r = self.get(name, "4k")
            if r:
                a = r["counters"]["items_per_second"]
                rows.append([label, f"{a['median']:,.0f} ({a['min']:,.0f}-{a['max']:,.0f})"])
        if rows:
            self.table(["throughput", "per second (median, range)"], rows)

    def scheduler(self):
        ro = self.get("scheduler/remove_1m/in_order", "4k")
        rm = self.get("scheduler/remove_1m/shuffled", "4k")
        dl = self.get("scheduler/deadlines_160k", "4k")
        cy = self.get("scheduler/cycle_10k_idle", "4k")
        if not (ro and rm and dl and cy):
            return
        self.add("### The dispatcher's scheduler", "",
                 "ipc/scheduler.hpp alone, no I/O (median over the repetitions).", "")
        self.table(["", "time", "per item"],
                   [["remove 1,000,000 queued tasks in submit order", ms(median(ro)),
                     f"{median(ro, 'remove_ns'):.0f} ns"],
                    ["remove 1,000,000 queued tasks in a shuffled order", ms(median(rm)),
                     f"{median(rm, 'remove_ns'):.0f} ns"],
                    ["160,000 deadlines set, then popped in slices of 4096", ms(median(dl)),
                     f"longest slice {ms(median(dl, 'slice_max_ms') / 1e3)}"],
                    ["submit, start, finish with 10,000 idle workers, 100,000 times", ms(median(cy)),
                     f"{median(cy, 'cycle_ns'):.0f} ns"]])

    def lookup(self):
        sizes = self.sizes("lookup/kura_map/")
        if not sizes:
            return
        depths = sorted({int(n.split("/")[3]) for (n, _) in self.rows if n.startswith("lookup/kura_map/")})
        self.add("### Path lookup", "",
                 "`map` of a name such as `/kura_.._..[4,1,1,1]` (open, map, check the header and the nodes "
                 "on the path, read the f64 there, unmap) in regions of each size, against "
                 "Boost.Interprocess opening a segment of the same size and `find`ing a named double; "
                 "`map` again with its cache of mappings on (a region this process mapped before: one "
                 "`fstatat` to honour removal, then the walk), as the mean and as the median of single "
                 "iterations (p50); and each without the open (a region or segment already mapped), with "
                 "the walk's time over Boost's `find` measured in the same run. Medians of the "
                 "repetitions.", "")
        deepest = str(depths[-1])
        for label in self.labels():
            rows = []
            for d in depths:
                rows.append(self.lookup_row(f"kura `map`, depth {d}", "lookup/kura_map/{}/" + str(d), sizes,
                                            label))
            rows.append(self.lookup_row("Boost open + `find`", "lookup/boost_open_find/{}", sizes, label))
            for d in depths:
                rows.append(self.lookup_row(f"kura `map`, cached, depth {d}", "lookup/kura_map_cached/{}/" +
                                            str(d), sizes, label))
            rows.append(self.lookup_row(f"kura `map`, cached, depth {deepest}, p50 of iterations",
                                        "lookup/kura_map_cached/{}/" + deepest, sizes, label, "p50_us"))
            rows.append(self.ratio_row(f"uncached / cached `map`, depth {deepest}",
                                       "lookup/kura_map/{}/" + deepest, "lookup/kura_map_cached/{}/" + deepest,
                                       sizes, label))
            rows.append(self.lookup_row(f"kura walk in a mapped region, depth {deepest}",
                                        "lookup/kura_walk/{}/" + deepest, sizes, label))
            rows.append(self.lookup_row("Boost `find` in an open segment", "lookup/boost_find/{}", sizes, label))
            rows.append(self.ratio_row(f"kura walk, depth {deepest} / Boost `find`",
                                       "lookup/kura_walk/{}/" + deepest, "lookup/boost_find/{}", sizes, label))
            self.table([LABELS[label]] + [size_name(s) for s in sizes] + ["largest / smallest"], rows)
            self.syscall_floor(label)

    def syscall_floor(self, label):
        calls = [("`getppid`", "getppid"), ("`fstat` of a kept descriptor", "fstat"),
                 ("`fstatat` of the region's name (what a cached `map` makes)", "fstatat")]
        found = [(what, self.get(f"lookup/syscall_floor/{call}", label)) for what, call in calls]
        found = [(what, r) for what, r in found if r]
        if found:
            self.add("One system call in the same run, the floor of a cached `map` (it must make one to "
                     "honour removal): " + "; ".join(f"{what} {span(r['time'])}" for what, r in found) + ".",
                     "")

    def ratio_row(self, title, top, bottom, sizes, label):
        vals = [(median(self.get(top.format(s), label)), median(self.get(bottom.format(s), label)))
                for s in sizes]
        return [title] + [ratio(a, b) for a, b in vals] + [""]

    def lookup_row(self, title, pattern, sizes, label, counter=None):
        # A counter is in microseconds, the time in seconds.
        vals = [median(self.get(pattern.format(s), label), counter) for s in sizes]
        if counter:
            vals = [v / 1e6 if v is not None else None for v in vals]
        grow = ratio(vals[-1], vals[0]) if vals and vals[0] and vals[-1] else "-"
        return [title] + [ms(v) for v in vals] + [grow]

    def churn(self):
        names = sorted({n for (n, _) in self.rows if n.startswith("churn/")})
        if not names:
            return
        self.add("### Region churn", "",
                 "A region created (space reserved), filled in place by the producer, published and "
                 "released (unlinked), in a loop; per region, median of the repetitions (range), and each "
                 "phase's median.", "")
        rows = []
        for name in names:
            for label in self.labels():
                r = self.get(name, label)
                if r is None:
                    continue
                c = r["counters"]
                rows.append([f"{size_name(int(name.split('/')[1]))}, {LABELS[label]}", span(r["time"])] +
                            [f"{c[k]['median']:.2f} ms" for k in ("create_ms", "fill_ms", "publish_ms",
                                                                  "release_ms")])
        self.table(["", "per region", "create", "fill", "publish", "release"], rows)

    def copy(self):
        names = sorted({n for (n, _) in self.rows if n.startswith("copy/memcpy_warm/")})
        if not names:
            return
        mib = int(names[0].split("/")[2])
        self.add(f"### Copying {size_name(mib)}", "",
                 "`memcpy` into memory already touched (warm) and into fresh memory; `share` of the same "
                 "bytes into a new region (hashed, as by default, and not), and the region built in place; "
                 "medians (range). Release: unlinking the shared region.", "")
        rows = []
        for label in self.labels():
            g = lambda k: self.get(f"copy/{k}/{mib}", label)
            sh = g("share_hashed")
            rel = sh["counters"].get("release_ms") if sh else None
            rows.append([LABELS[label], span(g("memcpy_warm") and g("memcpy_warm")["time"]),
                         span(g("memcpy_fresh") and g("memcpy_fresh")["time"]),
                         span(sh and sh["time"]),
                         span(g("share_unhashed") and g("share_unhashed")["time"]),
                         span(g("in_place") and g("in_place")["time"]),
                         f"{rel['median']:.1f} ms ({rel['min']:.1f}-{rel['max']:.1f})" if rel else "-",
                         ratio(median(sh), median(g("memcpy_warm")))])
        self.table(["", "memcpy warm", "memcpy fresh", "share, hashed", "share, unhashed", "in place",
                    "release", "share hashed / memcpy warm"], rows)

    def hashing(self):
        builds = sorted({n.split("/")[1] for (n, _) in self.rows if n.startswith("hash/")})
        if not builds:
            return
        self.add("### XXH3 builds", "",
                 f"Hashing speed of each build this CPU runs (GiB/s, median); kura uses "
                 f"`{self.contexts.get('4k', {}).get('hash_build', '?')}`.", "")
        rows = []
        for b in builds:
            cells = []
            for mib in (1, 256):
                r = self.get(f"hash/{b}/{mib}", "4k")
                v = r["counters"]["bytes_per_second"]["median"] if r else None
                cells.append(f"{v / (1 << 30):.1f}" if v else "-")
            rows.append([b] + cells)
        self.table(["build", "1 MiB (from cache)", "256 MiB (from memory)"], rows)

    # --- targets ----------------------------------------------------------------------------

    def check_targets(self):
        t = self.targets
        mib = next((int(n.split("/")[2]) for (n, _) in self.rows if n.startswith("copy/memcpy_warm/")), None)
        if mib is not None and self.get(f"copy/share_hashed/{mib}", "huge"):
            r = median(self.get(f"copy/share_hashed/{mib}", "huge")) / median(self.get(f"copy/memcpy_warm/{mib}",
                                                                                          "huge"))
            t.append((f"`share` of {size_name(mib)} on huge pages, hashed, within 1.5x of a warm `memcpy`",
                      f"{r:.2f}x", r <= 1.5))
            rel = self.get(f"copy/share_hashed/{mib}", "huge")["counters"]["release_ms"]["median"]
            t.append((f"unlinking that region under 10 ms", f"{rel:.1f} ms", rel < 10))
        s = 256 if 256 in self.sizes("handoff/") else None
        if s:
            n = 4
            for label in self.labels():
                k = self.handoff("kura_share", s, n, label)
                u = self.handoff("unix_socket", s, n, label)
                if k and u:
                    r = median(u) / median(k)
                    goal = label == "huge"
                    t.append((f"256 MiB to 4 consumers, {LABELS[label]}: kura by name "
                              + ("at least 10x faster than the Unix-socket copy" if goal else
                                 "against the Unix-socket copy (reported)"),
                              f"{r:.1f}x", r >= 10 if goal else None))
                    kp = median(k, "pss_total_mib") / s
                    up = median(u, "pss_total_mib") / s
                    t.append((f"consumers' total PSS, {LABELS[label]}: kura about 1x the data, the copy about 4x",
                              f"{kp:.2f}x and {up:.2f}x", kp < 1.2 if goal else None))
        raw = median(self.get("rtt/raw_socket/any", "4k"), "p50_us")
        disp = median(self.get("rtt/dispatcher/any", "4k"), "p50_us")
        if raw and disp:
            t.append(("dispatcher round trip, median, under 3x the raw socket ping-pong",
                      f"{disp / raw:.2f}x", disp / raw < 3))
        rm = self.get("scheduler/remove_1m/shuffled", "4k")
        if rm:
            t.append(("dispatcher: removing 1,000,000 queued tasks (shuffled) under 1 s", ms(median(rm)),
                      median(rm) < 1))
        sizes = self.sizes("lookup/kura_map/")
        if len(sizes) >= 2:
            for label in self.labels():
                worst = 0
                for (name, lb) in self.rows:
                    if lb == label and name.startswith(f"lookup/kura_map/{sizes[0]}/"):
                        d = name.split("/")[3]
                        a = median(self.get(f"lookup/kura_map/{sizes[0]}/{d}", label))
                        b = median(self.get(f"lookup/kura_map/{sizes[-1]}/{d}", label))
                        if a and b:
                            worst = max(worst, b / a)
                t.append((f"path lookup flat in region size, {LABELS[label]}: within 2x from "
                          f"{size_name(sizes[0])} to {size_name(sizes[-1])}", f"{worst:.2f}x", worst <= 2))
        depths = sorted({int(n.split("/")[3]) for (n, _) in self.rows if n.startswith("lookup/kura_walk/")})
        for label in self.labels() if depths else []:
            d = depths[-1]
            walks = [(median(self.get(f"lookup/kura_walk/{s}/{d}", label)),
                      median(self.get(f"lookup/boost_find/{s}", label))) for s in sizes]
            walks = [a / b for a, b in walks if a and b]
            if walks:
                t.append((f"depth-{d} walk in a mapped region within 2x Boost `find` in an open segment, "
                          f"{LABELS[label]} (worst size)", f"{max(walks):.2f}x", max(walks) <= 2))
            p50 = [median(self.get(f"lookup/kura_map_cached/{s}/{d}", label), "p50_us") for s in sizes]
            p50 = [v for v in p50 if v]
            if p50:
                t.append((f"cached `map` + read at most 1 µs at p50, flat in region size, {LABELS[label]} "
                          f"(worst size; largest / smallest)", f"{max(p50):.2f} µs; {p50[-1] / p50[0]:.2f}x",
                          max(p50) <= 1 and p50[-1] / p50[0] <= 2))

    def targets_table(self):
        if not self.targets:
            return
        self.add("### Targets", "")
        rows = [[what, got, "met" if ok else ("**missed**" if ok is False else "reported")]
                for what, got, ok in self.targets]
        self.table(["target", "this run", ""], rows)


def header(m, quick):
    dirs = m["region_directories"]
    pages = ", ".join(f"{lb}: {d.get('region_fs')} huge={d.get('region_huge')}, "
                      f"{int(d.get('region_page_size') or 0) // 1024} KiB pages" for lb, d in dirs.items())
    lines = [
        "# Benchmark results" + (" (quick run: small sizes, proof that the benchmarks run)" if quick else ""),
        "",
        f"`tools/run bench{' --quick' if quick else ''}` at commit {m['commit']}, {m['date']}.",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_bytes'] / (1 << 30):.1f} GiB of memory, "
        f"Linux {m['kernel']}; region directories: {pages}; XXH3 build {m['hash_build']}.",
        f"Load before: `{m['load_before']}`; after: `{m['load_after']}`; as each program started: "
        + "; ".join(f"{ln.split(':', 1)[0]} {ln.split('load average:')[-1].strip()}"
                    for ln in m["load_per_program"] if "load average:" in ln) + ".",
    ]
    if m["benchmark_library_build"] == "debug":
        lines.append("(Debian's libbenchmark says it was built as debug; that affects only its own "
                     "bookkeeping, not the code measured.)")
    skipped = [d.get("skipped") for d in dirs.values() if d.get("skipped")]
    if skipped:
        lines.append(f"Not run: {skipped[0]}.")
    if "huge" not in dirs:
        lines.append("**No huge-page directory was available: those runs are missing.**")
    return lines + [""]


def main():
    raw, out = sys.argv[1], sys.argv[2]
    quick = "--quick" in sys.argv[3:]
    rows, contexts = load(raw)
    m = machine(raw, contexts)
    rep = Report(rows, contexts, quick)
    rep.lines = header(m, quick)
    rep.handoff_ratios()
    rep.round_trip()
    rep.scheduler()
    rep.copy()
    rep.lookup()
    rep.churn()
    rep.hashing()
    rep.check_targets()
    rep.targets_table()
    rep.handoff_full()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "latest.md"), "w") as f:
        f.write("\n".join(rep.lines) + "\n")
    with open(os.path.join(out, "latest.json"), "w") as f:
        json.dump({"machine": m,
                   "command": "tools/run bench" + (" --quick" if quick else ""),
                   "targets": [{"target": a, "result": b, "met": c} for a, b, c in rep.targets],
                   "results": sorted(rows.values(), key=lambda r: (r["name"], r["dir"]))}, f, indent=1)
    print("\n".join(rep.lines))
    import report_plots  # here: it imports this module's constants
    report_plots.plot_all(rep, raw, out)


if __name__ == "__main__":
    main()
