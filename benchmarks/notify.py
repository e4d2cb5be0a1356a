"""Cost of change notification to writers, and wake-up latency.

    python benchmarks/notify.py [--quick]

Writers: set / incr in tight loops on a dict with the event ring (default)
and without (events=0), interleaved repetitions, medians in ns/op. Nobody
waits, which is the case that must stay cheap. Latency: a forked writer sets
a key carrying its perf_counter_ns; the parent's wait() returns it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time

import shmdict


def _loop(fn, n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n


def main() -> None:
    quick = "--quick" in sys.argv
    n, reps = (20_000, 3) if quick else (200_000, 9)
    if "SHMDICT_DIR" not in os.environ:  # a private directory, removed at exit
        tmp = tempfile.mkdtemp(prefix="shmdict-bench-", dir="/dev/shm")
        atexit.register(shutil.rmtree, tmp, True)
        os.environ["SHMDICT_DIR"] = tmp
    on = shmdict.new(f"bench-on-{os.getpid()}", "64m")
    off = shmdict.new(f"bench-off-{os.getpid()}", "64m", events=0)
    results: dict[str, list[float]] = {}
    for _ in range(reps):
        for label, d in (("events", on), ("no events", off)):
            s, inc = d.set, d.incr
            d["c"] = 0
            results.setdefault(f"set     {label}", []).append(_loop(lambda: s("k", 1), n))
            results.setdefault(f"set str {label}", []).append(_loop(lambda: s("s", "x" * 20), n))
            results.setdefault(f"incr    {label}", []).append(_loop(lambda: inc("c"), n))
    print(f"writers, nobody waiting ({n} ops x {reps} interleaved reps, median ns/op):")
    for op in ("set    ", "set str", "incr   "):
        a = statistics.median(results[f"{op} events"])
        b = statistics.median(results[f"{op} no events"])
        print(f"  {op}  events on {a:7.0f}   off {b:7.0f}   ratio {a / b:5.2f}")

    lat = []
    for _ in range(30 if quick else 300):
        v = on.version("t")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.read(r, 1)
            on["t"] = time.perf_counter_ns()
            os._exit(0)
        os.write(w, b"x")
        sent = on.wait("t", timeout=5, since=v)
        lat.append((time.perf_counter_ns() - sent) / 1000)
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
    lat.sort()
    print(f"wake-up latency, set in one process -> wait() returns in another ({len(lat)} runs):")
    print(f"  median {statistics.median(lat):.0f} us   p90 {lat[int(len(lat) * 0.9)]:.0f} us")
    on.close()
    off.close()


if __name__ == "__main__":
    main()
