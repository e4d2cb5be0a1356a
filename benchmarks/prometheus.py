"""shmdict.contrib.prometheus beside prometheus_client's own multiprocess mode.

    python benchmarks/prometheus.py [--quick] [--out DIR]

Two measurements, each in one run for both modes (prometheus_client's files
in a fresh directory under /dev/shm, shmdict's dict in ``SHMDICT_DIR``):

- **updates**: the cost of one ``Counter.inc()``, ``Histogram.observe()``
  (default buckets) and ``Gauge.set()`` (``livesum``) in one process, best
  of 5 runs of N calls; prometheus_client's default in-process values
  (no multiprocess mode) are shown for reference.
- **scrapes**: 10 live worker processes, each with a labelled counter (6
  series), a labelled histogram (2 label sets, default buckets) and a
  ``livesum`` gauge; then workers restart: each restart is a process that
  creates the same metrics, updates them and exits. The parent calls
  ``mark_process_dead(pid)`` for it, as gunicorn's ``child_exit`` hook does.
  Reported after 0, 100 and 1,000 restarts (0, 10, 100 with --quick): the
  time of one ``generate_latest()`` over a registry holding the
  ``MultiProcessCollector`` (median of 7; the first scrape after the
  restarts apart, as it is the one that compacts), and what the mode keeps
  (files and their bytes on disk; keys and bytes in use).

A second shmdict run does the restarts *without* ``mark_process_dead``
(workers that die unseen): the first scrape then drops their live gauges.

The results are printed; ``--out DIR`` also writes
``DIR/prometheus-benchmark.md``. Everything created is removed at the end,
also when the run fails.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest  # noqa: E402
from prometheus_client import multiprocess as prom_mp  # noqa: E402
from prometheus_client import values as prom_values  # noqa: E402

import shmdict  # noqa: E402
from shmdict.contrib import prometheus as ours  # noqa: E402

LIVE = 10


# ---- updates ---------------------------------------------------------------------------


def _per_call(fn: Callable[[], Any], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t)
    return best / n * 1e9


def updates(n: int) -> dict[str, dict[str, float]]:
    """ns per call of inc/observe/set for each value class (metrics built under it)."""
    out: dict[str, dict[str, float]] = {}
    for mode in ("in-process", "prometheus_client files", "shmdict"):
        if mode == "in-process":
            prom_values.ValueClass = prom_values.MutexValue
        elif mode == "shmdict":
            prom_values.ValueClass = ours.MultiProcessValue()
        else:
            prom_values.ValueClass = prom_values.MultiProcessValue()
        c = Counter("bench_c", "c", registry=None)
        h = Histogram("bench_h", "h", registry=None)
        g = Gauge("bench_g", "g", registry=None, multiprocess_mode="livesum")
        out[mode] = {"Counter.inc()": _per_call(c.inc, n),
                     "Histogram.observe()": _per_call(lambda: h.observe(0.3), n),
                     "Gauge.set()": _per_call(lambda: g.set(2.0), n)}
    prom_values.ValueClass = prom_values.MutexValue
    return out


# ---- scrapes -----------------------------------------------------------------------------


def _work(updates: int = 20) -> None:
    """What a worker does: create the metrics, serve some requests."""
    reqs = Counter("http_requests", "Requests", ["method", "status"])
    lat = Histogram("http_request_seconds", "Latency", ["route"])
    busy = Gauge("http_in_progress", "In progress", multiprocess_mode="livesum")
    busy.inc()
    for i in range(updates):
        reqs.labels(("GET", "POST")[i % 2], ("200", "404", "500")[i % 3]).inc()
        lat.labels(("/", "/api")[i % 2]).observe(i / 100)


def _fork(fn: Callable[[], None], hold: Optional[tuple[int, int]] = None) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
            if hold is not None:
                os.close(hold[1])
                os.read(hold[0], 1)  # live until the parent closes its end of the pipe
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def _wait(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"worker {pid} failed")


def _du(path: str) -> tuple[int, int]:
    files = [os.path.join(path, f) for f in os.listdir(path)]
    return len(files), sum(os.stat(f).st_blocks * 512 for f in files)


def scrapes(mode: str, steps: list[int], mark: bool, tmp: str) -> list[dict[str, Any]]:
    """Scrape times after each cumulative number of restarts in steps."""
    files = tempfile.mkdtemp(prefix="files-", dir=tmp)
    name = f"prombench-{os.getpid()}-{'marked' if mark else 'unmarked'}"
    reg = CollectorRegistry()
    d = None
    if mode == "shmdict":
        d = ours.enable(name, "64m")
        coll = ours.MultiProcessCollector(reg)
        dead: Callable[[int], None] = ours.mark_process_dead
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = files
        prom_values.ValueClass = prom_values.MultiProcessValue()
        coll = prom_mp.MultiProcessCollector(reg, files)
        dead = prom_mp.mark_process_dead
    r, w = os.pipe()
    live = [_fork(_work, hold=(r, w)) for _ in range(LIVE)]
    rows = []
    try:
        time.sleep(0.2)  # the live workers have made their metrics
        done = 0
        for target in steps:
            while done < target:
                pid = _fork(_work)
                _wait(pid)
                if mark:
                    dead(pid)
                done += 1
            t = time.perf_counter()
            text = generate_latest(reg)
            first = time.perf_counter() - t
            times = []
            for _ in range(7):
                t = time.perf_counter()
                again = generate_latest(reg)
                times.append(time.perf_counter() - t)
            assert again == text
            row: dict[str, Any] = {"restarts": target, "first": first, "median": statistics.median(times),
                                   "bytes": len(text)}
            if d is not None:
                st = d.stats()
                row["kept"] = f"{st['entries']} keys, {_kib(st['used_bytes'])}"
            else:
                n, size = _du(files)
                row["kept"] = f"{n} files, {_kib(size)}"
            assert b'http_requests_total{method="GET",status="200"}' in text
            assert f"http_in_progress {float(LIVE)}".encode() in text, text[-400:]
            rows.append(row)
    finally:
        os.close(w)
        for pid in live:
            _wait(pid)
        os.close(r)
        if d is not None:
            ours.disable()
            shmdict.unlink(name)
        else:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            prom_values.close_all_multiprocess_files()
            prom_values.ValueClass = prom_values.MutexValue
        reg.unregister(coll)
    return rows


def _kib(b: int) -> str:
    return f"{b / 1024:,.0f} KiB" if b < 10 << 20 else f"{b / (1 << 20):,.1f} MiB"


# ---- report ------------------------------------------------------------------------------


def _t(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.1f} at start")


def report(res: dict[str, Any]) -> str:
    from importlib.metadata import version

    L = ["# Prometheus metrics: shmdict beside prometheus_client's multiprocess mode", "",
         f"Machine: {res['machine']}. Date: {res['date']}. prometheus_client {version('prometheus_client')}. "
         f"Mode: {res['mode']}.", "",
         "## Updates (one process, ns per call)", "",
         "| call | in-process (no multiprocess mode) | prometheus_client files | shmdict | shmdict / files |",
         "| --- | ---: | ---: | ---: | ---: |"]
    u = res["updates"]
    for call in u["shmdict"]:
        a, b, c = u["in-process"][call], u["prometheus_client files"][call], u["shmdict"][call]
        L.append(f"| `{call}` | {a:.0f} | {b:.0f} | {c:.0f} | {c / b:.2f} |")
    L += ["", f"## Scrapes with {LIVE} live workers, after worker restarts", "",
          "`generate_latest()` over the MultiProcessCollector (median of 7 / the first one after the "
          "restarts), and what the mode keeps.", "",
          "| restarts | prometheus_client files: scrape | kept | shmdict: scrape | first scrape | kept "
          "| shmdict, no mark_process_dead: first scrape | then | kept |",
          "| ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for f, s, u2 in zip(res["files"], res["shmdict"], res["unmarked"]):
        L.append(f"| {f['restarts']:,} | {_t(f['median'])} | {f['kept']} | {_t(s['median'])} | {_t(s['first'])} "
                 f"| {s['kept']} | {_t(u2['first'])} | {_t(u2['median'])} | {u2['kept']} |")
    return "\n".join(L) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/prometheus.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer calls and restarts (CI smoke)")
    p.add_argument("--out", default=None, metavar="DIR", help="also write DIR/prometheus-benchmark.md")
    a = p.parse_args(argv)
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="prombench-", dir=base)
    own_dir = "SHMDICT_DIR" not in os.environ
    if own_dir:
        os.environ["SHMDICT_DIR"] = tmp
    os.environ.pop(ours.ENV, None)
    steps = [0, 10, 100] if a.quick else [0, 100, 1000]
    try:
        res: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
                               "mode": "--quick" if a.quick else "full"}
        upd_dir = os.path.join(tmp, "updates")
        os.mkdir(upd_dir)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = upd_dir
        d = ours.enable(f"prombench-{os.getpid()}-updates", "16m")
        try:
            res["updates"] = updates(20_000 if a.quick else 200_000)
        finally:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            prom_values.close_all_multiprocess_files()
            ours.disable()
            shmdict.unlink(d.name)
        res["files"] = scrapes("prometheus_client files", steps, True, tmp)
        res["shmdict"] = scrapes("shmdict", steps, True, tmp)
        res["unmarked"] = scrapes("shmdict", steps, False, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if own_dir:
            os.environ.pop("SHMDICT_DIR", None)
    page = report(res)
    print(page, end="")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "prometheus-benchmark.md"), "w") as f:
            f.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
