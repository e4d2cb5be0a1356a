"""shmdict against its peers, side by side in one run.

    python -m benchmarks              # full run (about 5-10 minutes on 2 cores)
    python -m benchmarks --quick      # smoke run for CI (well under a minute)
    python -m benchmarks --out docs   # full run that updates the published docs/
    python -m benchmarks --only memory   # one section: single, multi or memory

Every backend runs the same tight loops (bound methods, keys built before
timing, the garbage collector off) and reports ns per operation. Repetitions
are interleaved -- rep 1 of every backend, then rep 2... -- so a noisy
neighbour hits all backends alike; the table shows medians and the ratio to a
plain ``dict`` timed in the same run. A workload that hits its time cap
reports ns/op over the operations it did (marked ``*``). The table is printed;
``benchmarks.md`` (table), ``benchmarks.png`` (chart) and ``benchmarks.json``
go to a new temporary directory, or to ``--out DIR`` -- the published figures
in ``docs/`` change only when asked with ``--out docs``. The memory section
(bytes per entry for several key/value sizes: benchmarks/memory.py) measures
shmdict, lmdb, Redis and ``dict``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import textwrap
import time
from typing import Any, Callable, Optional

from . import memory, scaling
from .backends import BACKENDS, Backend, Unavailable, shutdown_servers

NS = time.perf_counter_ns

# the parts of a run, in run order (--only picks some)
SECTIONS = ["single", "multi", "memory"]

# (column, title) of the single-process workloads, in table order
WORKLOADS = [
    ("set_int", "set, 100k new keys, small int"),
    ("get_hit", "get hit"),
    ("get_miss", "get miss"),
    ("get_many", "get_many, 100 keys a call (per key)"),
    ("set_many", "set_many, 100 items a call (per item)"),
    ("set_over", "set, overwrite, small int"),
    ("set_str", "set, 100-byte str"),
    ("set_bytes", "set, 100-byte bytes"),
    ("get_bytes", "get, 100-byte bytes"),
    ("incr", "incr, 1k hot keys"),
    ("incr_init", "incr(init=0, init_ttl=60), 1k hot keys"),
    ("delete", "delete"),
    ("get_1e3", "get, 1e3 keys resident"),
    ("get_1e5", "get, 1e5 keys resident"),
    ("get_1e6", "get, 1e6 keys resident"),
]


def keys_for(b: Backend, n: int, prefix: str = "key:") -> list[Any]:
    ks = [f"{prefix}{i:08d}" for i in range(n)]
    return [k.encode() for k in ks] if b.bytes_keys else ks


class Capped:
    """Runs a loop body over items in chunks until done or out of time."""

    def __init__(self, cap_s: float) -> None:
        self.cap_ns = int(cap_s * 1e9)

    def run(self, body: Callable[[list[Any]], None], items: list[Any]) -> tuple[float, int, bool]:
        """Returns (ns/op, ops done, capped)."""
        chunk = 1000
        done, t_total = 0, 0
        gc.disable()
        try:
            while done < len(items):
                part = items[done:done + chunk]
                t0 = NS()
                body(part)
                t_total += NS() - t0
                done += len(part)
                if t_total > self.cap_ns and done < len(items):
                    return t_total / done, done, True
            return t_total / max(done, 1), done, False
        finally:
            gc.enable()


def single_process(b: Backend, name: str, n: int, cap: Capped, size: int) -> dict[str, Any]:
    """Time every single-process workload on a fresh store; {column: (ns, capped)}."""
    res: dict[str, Any] = {}
    rnd = random.Random(1)
    keys = keys_for(b, n)
    ints = list(range(1000, 1000 + n))
    s100 = ["x" * 90 + f"{i:010d}" for i in range(n)]
    b.open(size)
    try:
        set_, get, incr, delete = b.set, b.get, b.incr, b.delete

        def do_set(items: list[Any]) -> None:
            for k, v in items:
                set_(k, v)

        def do_get(items: list[Any]) -> None:
            for k in items:
                get(k)

        def do_incr(items: list[Any]) -> None:
            for k in items:
                incr(k)

        def do_delete(items: list[Any]) -> None:
            for k in items:
                delete(k)

        ns, done, capped = cap.run(do_set, list(zip(keys, ints)))
        res["set_int"] = (ns, capped)
        present = keys[:done]
        order = present[:]
        rnd.shuffle(order)
        res["get_hit"] = cap.run(do_get, order)[::2]
        missing = keys_for(b, n, prefix="nokey:")
        res["get_miss"] = cap.run(do_get, missing)[::2]
        pairs = list(zip(present, ints))
        if b.get_many is not None and b.set_many is not None:
            gm, sm = b.get_many, b.set_many

            def do_get_many(items: list[Any]) -> None:
                for batch in items:
                    gm(batch)

            def do_set_many(items: list[Any]) -> None:
                for batch in items:
                    sm(batch)

            ns, _, capped = cap.run(do_get_many, [order[i:i + 100] for i in range(0, len(order), 100)])
            res["get_many"] = (ns / 100, capped)
            ns, _, capped = cap.run(do_set_many, [pairs[i:i + 100] for i in range(0, len(pairs), 100)])
            res["set_many"] = (ns / 100, capped)
        ns, _, capped = cap.run(do_set, [(k, v + 1) for k, v in zip(order, ints)])
        res["set_over"] = (ns, capped)
        ns, _, capped = cap.run(do_set, list(zip(present, s100)))
        res["set_str"] = (ns, capped)
        b100 = [s.encode() for s in s100]
        ns, _, capped = cap.run(do_set, list(zip(present, b100)))
        res["set_bytes"] = (ns, capped)
        res["get_bytes"] = cap.run(do_get, order)[::2]
        hot = keys_for(b, 1000, prefix="hot:")
        b.fill(hot, [0] * len(hot))
        hot_order = [hot[rnd.randrange(1000)] for _ in range(n)]
        res["incr"] = cap.run(do_incr, hot_order)[::2]
        incr_init = b.incr_init or b.incr

        def do_incr_init(items: list[Any]) -> None:
            for k in items:
                incr_init(k)

        res["incr_init"] = cap.run(do_incr_init, hot_order)[::2]
        res["delete"] = cap.run(do_delete, order)[::2]
    finally:
        b.close()
    return res


def resident(b: Backend, n_keys: int, n_ops: int, cap: Capped, size: int,
             fill_cap_s: float) -> Optional[tuple[float, bool]]:
    """get over n_ops random keys of a fresh store holding n_keys."""
    if n_keys > b.max_keys:
        return None
    keys = keys_for(b, n_keys)
    b.open(size)
    try:
        t0 = time.monotonic()
        for i in range(0, n_keys, 50000):
            b.fill(keys[i:i + 50000], list(range(i, i + len(keys[i:i + 50000]))))
            if time.monotonic() - t0 > fill_cap_s:
                return None
        rnd = random.Random(2)
        order = [keys[rnd.randrange(n_keys)] for _ in range(n_ops)]
        get = b.get

        def do_get(items: list[Any]) -> None:
            for k in items:
                get(k)

        return cap.run(do_get, order)[::2]
    finally:
        b.close()


# ---- several processes ----------------------------------------------------------


def multi_process(b: Backend, mode: str, nproc: int, cap_s: float, size: int) -> Optional[dict[str, Any]]:
    """nproc workers on one store, counted inside the workers over cap_s seconds after a
    common start (benchmarks/scaling.py); {ops_s, done, final} (final: the counter, for incr)."""
    if not (b.shared and b.forks):
        return None
    return scaling.throughput(b, "incr_one" if mode == "incr" else "mix", nproc, cap_s, size)


# ---- reporting --------------------------------------------------------------------


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; load average {load:.1f} at start")


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.1f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:.0f} µs"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def fmt_ratio(r: float) -> str:
    return f"{r:.1f}×" if r < 100 else f"{r:,.0f}×"


def median_cell(samples: list[tuple[float, bool]]) -> tuple[float, bool]:
    return statistics.median(s[0] for s in samples), any(s[1] for s in samples)


def spread(samples: list[tuple[float, bool]]) -> float:
    """Half the range of the reps, in % of their median."""
    xs = [x[0] for x in samples]
    return (max(xs) - min(xs)) / 2 / statistics.median(xs) * 100


def targets(data: dict[str, Any]) -> list[str]:
    """Each performance target of the C type, met or not, with the measured figure."""
    res, multi = data["results"], data["multi"]

    def med(name: str, col: str) -> Optional[float]:
        s = res.get(name, {}).get(col)
        return median_cell(s)[0] if s else None

    rows: list[tuple[str, Optional[float], str, bool]] = []  # (target, figure, shown, met)

    def add(what: str, value: Optional[float], shown: str, met: bool) -> None:
        rows.append((what, value, shown, met))

    for col, limit in (("get_hit", 120), ("get_1e3", 120), ("get_1e5", 120), ("set_over", 150),
                       ("set_int", 150), ("incr", 150), ("incr_init", 150)):
        v = med("shmdict", col)
        if v is not None:
            add(f"{col} ≤ {limit} ns", v, fmt_ns(v), v <= limit)
    g, dg = med("shmdict", "get_hit"), med("dict", "get_hit")
    if g and dg:
        add("get ≤ 4× dict.get", g / dg, fmt_ratio(g / dg), g / dg <= 4)
    single = ["get_hit", "get_miss", "set_int", "set_over", "incr", "delete", "set_bytes", "get_bytes"]
    for peer, need in (("lmdb", 4.0), ("redis", 300.0)):
        for col in single:
            v, p = med("shmdict", col), med(peer, col)
            if v and p:
                add(f"{col}: ≥ {need:g}× {peer}", p / v, fmt_ratio(p / v), p / v >= need)
    v, p = med("shmdict", "get_1e6"), med("lmdb", "get_1e6")
    if v and p:
        add("get at 1e6 keys: ≥ 2× lmdb", p / v, fmt_ratio(p / v), p / v >= 2)
    for many, one in (("get_many", "get_hit"), ("set_many", "set_over")):
        v, o = med("shmdict", many), med("shmdict", one)
        if v and o:
            add(f"{many} per key ≤ 0.5× {one}", v / o, f"{v / o:.2f}×", v / o <= 0.5)
    if data.get("scaling"):  # counted inside the workers over a fixed time (benchmarks/scaling.py)
        for row in scaling.targets(data["scaling"]):
            add(*row)
    b8 = memory.per_entry(data.get("memory", {}), "shmdict", "k8_int")
    if b8 is not None:
        add("≤ 42 bytes per entry for 8-byte keys and ints", b8, f"{b8:.1f} B", b8 <= 42)
    return [f"| {w} | {shown} | {'met' if ok else '**not met**'} |" for w, _, shown, ok in rows]


def report(data: dict[str, Any], out_dir: str) -> str:
    date = f" Date: {data['date']}." if data.get("date") else ""
    lines = [f"Machine: {data['machine']}.{date} Mode: {data['mode']}; sections: {', '.join(data['sections'])}."]
    lines += speed_tables(data)
    mem = memory.table(data.get("memory", {}))
    if mem:
        lines += ["", "## Bytes per entry", ""] + mem
    goals = targets(data)
    if goals:
        lines += ["", "shmdict's performance targets, as measured in the run above:", "", "| target | measured | |",
                  "|---|---|---|"] + goals
    if data["notes"]:
        lines += ["", "Notes:", ""] + [f"- {x}" for x in data["notes"]]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "benchmarks.md"), "w") as f:
        f.write(text)
    return text


def speed_tables(data: dict[str, Any]) -> list[str]:
    """The ns/op table of the single-process workloads and the several-process
    one, each where its section ran."""
    res = data["results"]
    names = [n for n in data["backends"] if res.get(n)]
    lines: list[str] = []
    if names:
        lines += single_table(data, names)
    names = [n for n in data["backends"] if data["multi"].get(n)]
    if names:
        lines += multi_table(data, names)
    if data.get("scaling"):
        lines += [""] + scaling.table(data["scaling"])
    return lines


def single_table(data: dict[str, Any], names: list[str]) -> list[str]:
    res = data["results"]
    lines = ["", f"{data['reps']} interleaved reps, n = {data['n']:,}. Median ns/op (ratio to `dict` in the same "
             f"run); `*` = hit the {data['cap']} s cap; `-` = not run (see notes).", ""]
    cols = [c for c, _ in WORKLOADS]
    lines.append("| backend | " + " | ".join(t for _, t in WORKLOADS) + " |")
    lines.append("|---|" + "---|" * len(cols))
    dict_med = {c: median_cell(res["dict"][c])[0] for c in cols if res.get("dict", {}).get(c)}
    for n in names:
        row = [f"**{n}**" if n == "shmdict" else n]
        for c in cols:
            s = res[n].get(c)
            if not s:
                row.append("-")
                continue
            ns, capped = median_cell(s)
            cell = fmt_ns(ns) + ("*" if capped else "")
            if len(s) > 1:
                cell += f" ±{spread(s):.0f}%"
            if n != "dict" and c in dict_med:
                cell += f" ({fmt_ratio(ns / dict_med[c])})"
            row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    return lines


def multi_table(data: dict[str, Any], names: list[str]) -> list[str]:
    lines = ["", "Several processes on one key / one 1k-key set (aggregate ops/s counted inside the workers "
             "over a fixed time after a common start, each pinned to a CPU; median of reps; "
             "lost = increments made minus the final counter, summed over reps):", "",
             "| backend | incr model | 1 proc incr ops/s | 2 procs incr ops/s | lost | 4 procs incr ops/s | "
             "lost | 4 procs 90/10 get/set ops/s |", "|---|---|---|---|---|---|---|---|"]
    for n in names:
        mp = data["multi"].get(n, {})
        row = [f"**{n}**" if n == "shmdict" else n, data["incr_kind"][n]]
        reps = mp.get("incr1") or []
        row.append(f"{statistics.median(r['ops_s'] for r in reps):,.0f}" if reps else "-")
        for k in ("incr2", "incr4"):
            reps = mp.get(k) or []
            if not reps:
                row += ["-", "-"]
                continue
            row.append(f"{statistics.median(r['ops_s'] for r in reps):,.0f}")
            lost = sum(r["done"] - r["final"] for r in reps)
            row.append("none" if lost == 0 else f"**LOST {lost:,} of {sum(r['done'] for r in reps):,}**")
        reps = mp.get("mix4") or []
        row.append(f"{statistics.median(r['ops_s'] for r in reps):,.0f}" if reps else "-")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def chart(data: dict[str, Any], out_dir: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    res = data["results"]
    names = [n for n in data["backends"] if res.get(n)]
    if not names:  # only the memory section ran
        return None
    cols = [(c, t) for c, t in WORKLOADS if any(res[n].get(c) for n in names)]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(18, 6), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / max(len(names), 1)
    for j, n in enumerate(names):
        xs, ys = [], []
        for i, (c, _) in enumerate(cols):
            if res[n].get(c):
                xs.append(i + (j - len(names) / 2 + 0.5) * width)
                ys.append(median_cell(res[n][c])[0])
        ax.bar(xs, ys, width, label=n, edgecolor="black" if n == "shmdict" else None)
    ax.set_yscale("log")
    ax.set_ylabel("ns per operation (log scale, lower is better)")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([textwrap.fill(t, 13) for _, t in cols], fontsize=7)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_title("Single process: median ns/op")
    mp = data["multi"]
    bars = [(n, statistics.median(r["ops_s"] for r in mp[n]["incr2"])) for n in names
            if mp.get(n, {}).get("incr2")]
    ax2.barh([b[0] for b in bars], [b[1] for b in bars], color="tab:green")
    ax2.set_xscale("log")
    ax2.set_xlabel("ops/s (log scale, higher is better)")
    ax2.set_title("2 processes incr one key")
    ax2.grid(axis="x", which="both", alpha=0.3)
    fig.suptitle(f"shmdict vs peers ({data['mode']} run) — {data['machine']}", fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, "benchmarks.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- main -------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="10x fewer ops, 1 rep, no 1e6 workloads, 50x fewer entries for memory (CI smoke)")
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default: all)")
    p.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 3; quick 1)")
    p.add_argument("--cap", type=float, default=None, help="seconds per timed workload (default 1.5; quick 0.3)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for benchmarks.md/.json/.png (default: a new temporary directory; "
                        "--out docs updates the published figures)")
    p.add_argument("--only", default=",".join(SECTIONS), metavar="SECTIONS",
                   help="comma-separated sections to run: single (one process, ns/op), multi (several "
                        "processes), memory (bytes per entry for several key/value sizes); default: all")
    a = p.parse_args(argv)
    sections = [x for x in a.only.split(",") if x]
    for x in sections:
        if x not in SECTIONS:
            p.error(f"unknown section {x!r}; known: {', '.join(SECTIONS)}")
    if a.out is None:
        a.out = tempfile.mkdtemp(prefix="shmdict-bench-")
    quick = a.quick
    n = 10_000 if quick else 100_000
    reps = a.reps or (1 if quick else 3)
    cap_s = a.cap or (0.15 if quick else 1.5)
    size = 64 << 20 if quick else 256 << 20
    cap = Capped(cap_s)
    names = [x for x in a.backends.split(",") if x]
    for x in names:
        if x not in BACKENDS:
            p.error(f"unknown backend {x!r}; known: {', '.join(BACKENDS)}")
    if "dict" not in names:
        names.insert(0, "dict")
    os.makedirs(a.out, exist_ok=True)
    data: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "mode": "quick" if quick else "full", "reps": reps, "n": n,
                            "cap": cap_s, "sections": sections, "backends": names,
                            "results": {x: {} for x in names},
                            "multi": {x: {} for x in names}, "memory": {}, "notes": [],
                            "incr_kind": {x: BACKENDS[x].incr_kind for x in names}}
    unavailable: set[str] = set()
    resident_sizes = [(10**3, "get_1e3"), (10**5, "get_1e5")] + ([] if quick else [(10**6, "get_1e6")])
    t_start = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        for rep in range(reps if "single" in sections or "multi" in sections else 0):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for x in order:
                if x in unavailable:
                    continue
                b = BACKENDS[x]()
                try:
                    if "single" in sections:
                        log(f"rep {rep + 1}/{reps} {x}: single-process workloads")
                        for c, v in single_process(b, x, n, cap, size).items():
                            data["results"][x].setdefault(c, []).append(v)
                        for nk, c in resident_sizes:
                            r = resident(BACKENDS[x](), nk, n, cap, size if nk < 10**6 else 256 << 20,
                                         fill_cap_s=5 if quick else 30)
                            if r:
                                data["results"][x].setdefault(c, []).append(r)
                    if b.shared and "multi" in sections:
                        log(f"rep {rep + 1}/{reps} {x}: several processes")
                        mcap = 0.2 if quick else 1.0
                        for key, mode, k in (("incr1", "incr", 1), ("incr2", "incr", 2), ("incr4", "incr", 4),
                                             ("mix4", "mix", 4)):
                            r2 = multi_process(BACKENDS[x](), mode, k, mcap, size)
                            if r2:
                                data["multi"][x].setdefault(key, []).append(r2)
                except Unavailable as e:
                    unavailable.add(x)
                    data["notes"].append(f"{x}: skipped: {e}")
                    log(f"{x}: skipped: {e}")
        if "multi" in sections and "shmdict" in names:
            data["scaling"] = scaling.run(quick, reps, log=log)
        if "memory" in sections:
            data["memory"], skipped = memory.run([x for x in names if x not in unavailable], quick, log)
            data["notes"] += skipped
    finally:
        shutdown_servers()
    for x in names:
        if x in unavailable:
            continue
        cls = BACKENDS[x]
        if cls.max_keys < 10**6 and not quick and "single" in sections:
            data["notes"].append(f"{x}: resident sets above {cls.max_keys:,} keys not run (fill too slow).")
    if "manager" in names and "multi" in sections:
        data["notes"].append("manager: several-process workloads not run: workers forked from the "
                             "benchmark process hang on the Manager proxies.")
    if "single" in sections or "multi" in sections:
        data["notes"] += [
            "Loops call bound methods over pre-built keys with the GC off; ns/op includes the Python loop "
            "(about 20-30 ns, the same for every backend). ±N% = half the range of the reps over their median.",
            "shmdict = the C type (csrc/python/pytype.c); shmdict-pure = the same methods in Python over cffi "
            "(PyPy, SHMDICT_PURE=1); shmdict-gil-released = the C type releasing the GIL around every call.",
            "lmdb: one transaction per operation (writemap, no sync), bytes keys, values stored as decimal "
            "bytes and returned raw; redis: redis-py over a Unix socket to a private redis-server "
            "(no persistence), returns raw bytes.",
            "incr on peers without an atomic increment is the read-modify-write a user would write; "
            "UNLOCKED ones lose updates by design, which the 'lost' column shows.",
        ]
    if data["memory"]:
        data["notes"] += memory.NOTES
    data["elapsed_s"] = round(time.monotonic() - t_start, 1)
    with open(os.path.join(a.out, "benchmarks.json"), "w") as f:
        json.dump(data, f, indent=1, default=str)
    text = report(data, a.out)
    png = chart(data, a.out)
    print(text)
    print(f"written: {a.out}/benchmarks.md, benchmarks.json" + (f", {png}" if png else " (no matplotlib: no chart)"))
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
