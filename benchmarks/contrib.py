"""Per-call cost of the integrations, against the in-process stores they replace.

    python benchmarks/contrib.py [--quick]

limits: one ``hit()`` of each strategy with ``shmdict://`` and ``memory://``
(fixed and sliding: a limit high enough never to refuse; moving window: a
1000/s limit, so most hits are refused), then the moving window's accepted
hits by limit size. Django: ``get`` / ``set`` / ``incr``
with SharedDictCache and LocMemCache. Medians of interleaved repetitions, in
microseconds per call, single process. memory:// and LocMemCache are per
process, so they are the cost floor, not an alternative across workers.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time


def _loop(fn, n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n / 1000


def _median(fns: dict[str, object], n: int, reps: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            runs[k].append(_loop(fn, n))
    return {k: statistics.median(v) for k, v in runs.items()}


def main() -> None:
    quick = "--quick" in sys.argv
    n, reps = (2000, 3) if quick else (20000, 7)
    os.environ["SHMDICT_DIR"] = tempfile.mkdtemp(prefix="shmdict-bench-", dir="/dev/shm")

    import limits
    from limits.storage import storage_from_string
    from limits.strategies import STRATEGIES

    import shmdict.contrib.limits  # noqa: F401

    item = limits.parse("1000000000/hour")  # never refuses
    mw_item = limits.parse("1000/second")  # moving window: mostly refused hits (see the table below)
    fns = {}
    for uri in ("shmdict://bench?size=64m", "memory://"):
        st = storage_from_string(uri)
        for name, cls in STRATEGIES.items():
            lim = cls(st)
            it = mw_item if name == "moving-window" else item
            fns[f"{name:24s} {uri.split(':')[0]}"] = (lambda lim=lim, it=it: lim.hit(it, "client"))
    print(f"limits hit(), us/call (median of {reps} x {n})")
    for k, v in sorted(_median(fns, n, reps).items()):
        print(f"  {k:34s} {v:7.2f}")

    # moving window: each accepted hit rewrites the key's list of stamps, so its
    # cost grows with the hits already in the window (limit L: L accepted hits)
    print("moving-window accepted hits, us/call, by limit L (mean over L hits into an empty window)")
    for lim_n in (10, 100, 1000, 10000):
        it = limits.parse(f"{lim_n}/hour")
        res = {}
        for uri in ("shmdict://bench?size=64m", "memory://"):
            st = storage_from_string(uri)
            lim = STRATEGIES["moving-window"](st)
            ts = []
            for r in range(reps):
                lim.clear(it, f"mw{r}")
                t0 = time.perf_counter_ns()
                for _ in range(lim_n):
                    lim.hit(it, f"mw{r}")
                ts.append((time.perf_counter_ns() - t0) / lim_n / 1000)
            res[uri.split(":")[0]] = statistics.median(ts)
        print(f"  L={lim_n:<6d} shmdict {res['shmdict']:8.2f}   memory {res['memory']:8.2f}")

    from django.conf import settings

    settings.configure()
    from django.core.cache.backends.locmem import LocMemCache

    from shmdict.contrib.django import SharedDictCache

    caches = {"shmdict": SharedDictCache("bench-django", {"OPTIONS": {"size": "64m"}}),
              "locmem": LocMemCache("bench", {})}
    fns = {}
    for cname, c in caches.items():
        c.set("n", 0, None)
        c.set("obj", {"user": 42, "roles": ["a", "b"]}, None)
        fns[f"get (dict value)   {cname}"] = lambda c=c: c.get("obj")
        fns[f"set (dict value)   {cname}"] = lambda c=c: c.set("obj", {"user": 42, "roles": ["a", "b"]})
        fns[f"incr               {cname}"] = lambda c=c: c.incr("n")
    print(f"Django cache, us/call (median of {reps} x {n})")
    for k, v in sorted(_median(fns, n, reps).items()):
        print(f"  {k:34s} {v:7.2f}")

    d = os.environ["SHMDICT_DIR"]
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    os.rmdir(d)


if __name__ == "__main__":
    main()
