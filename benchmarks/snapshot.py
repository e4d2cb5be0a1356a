"""Snapshot speed: dump and load of a million small items, and the longest lock hold.

    python benchmarks/snapshot.py [--quick] [--items N]

A dict of N items (``key:<i>`` -> int, default 1e6) is dumped to memory and
loaded into an empty dict (and again over itself: every key overwritten),
in interleaved repetitions; medians in seconds, and as a ratio to pickling
and unpickling a plain ``dict`` of the same items (the cost of the simplest
way a Python program saves a dict). The longest lock hold is the longest
single C call of the dump (one export batch) and of the load (one stored
batch): other processes wait at most that long for the dict while a
snapshot runs. A second run uses 100-byte str values.
"""

from __future__ import annotations

import atexit
import io
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import shmdict
from shmdict import _snapshot


class _Timed:
    """Stands in for the cffi lib inside _snapshot: times each export/import call."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self.holds: dict[str, list[float]] = {"shmdict_export": [], "shmdict_import": []}

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._lib, name)
        if name not in self.holds:
            return fn

        def timed(*args: Any) -> Any:
            t = time.perf_counter()
            rc = fn(*args)
            dt = time.perf_counter() - t
            if name == "shmdict_export" or args[6] == 1:  # import: only the storing calls lock
                self.holds[name].append(dt)
            return rc

        return timed


def run(n: int, value: Any, reps: int) -> None:
    size = max(64 << 20, n * (200 if isinstance(value, str) else 80))
    src = shmdict.new(f"bench-snap-src-{os.getpid()}", size)
    src.set_many([(f"key:{i}", value if value is not None else i) for i in range(n)])
    plain = dict(src.items())
    timer = _Timed(_snapshot.lib)
    _snapshot.lib = timer  # type: ignore[assignment]
    res: dict[str, list[float]] = {k: [] for k in ("dump", "load", "reload", "pickle", "unpickle")}
    nbytes = 0
    try:
        for rep in range(reps):
            b = io.BytesIO()
            t = time.perf_counter()
            src.dump(b)
            res["dump"].append(time.perf_counter() - t)
            raw = b.getvalue()
            nbytes = len(raw)
            dst = shmdict.new(f"bench-snap-dst-{os.getpid()}-{rep}", size)
            t = time.perf_counter()
            dst.load(io.BytesIO(raw))
            res["load"].append(time.perf_counter() - t)
            t = time.perf_counter()
            dst.load(io.BytesIO(raw))
            res["reload"].append(time.perf_counter() - t)
            assert len(dst) == n
            dst.close()
            p = io.BytesIO()
            t = time.perf_counter()
            pickle.dump(plain, p, protocol=pickle.HIGHEST_PROTOCOL)
            res["pickle"].append(time.perf_counter() - t)
            t = time.perf_counter()
            pickle.loads(p.getvalue())
            res["unpickle"].append(time.perf_counter() - t)
    finally:
        _snapshot.lib = timer._lib
        src.close()
    med = {k: statistics.median(v) for k, v in res.items()}
    kind = "int" if value is None else f"{len(value)}-byte str"
    print(f"{n:,} items ({kind} values), snapshot {nbytes / 1e6:.1f} MB, median of {reps}:")
    print(f"  dump            {med['dump']:6.3f} s   ({med['dump'] / med['pickle']:.2f} x pickle.dump of a dict)")
    print(f"  load (empty)    {med['load']:6.3f} s   ({med['load'] / med['unpickle']:.2f} x pickle.loads)")
    print(f"  load (overwrite){med['reload']:6.3f} s")
    for label, name in (("dump", "shmdict_export"), ("load", "shmdict_import")):
        h = sorted(timer.holds[name])
        print(f"  lock holds of a {label}: median {h[len(h) // 2] * 1e3:.2f} ms, "
              f"99th percentile {h[int(len(h) * 0.99)] * 1e3:.2f} ms, longest {h[-1] * 1e3:.2f} ms ({len(h)} holds)")


def main() -> None:
    quick = "--quick" in sys.argv
    n = 100_000 if quick else 1_000_000
    if "--items" in sys.argv:
        n = int(sys.argv[sys.argv.index("--items") + 1])
    if "SHMDICT_DIR" not in os.environ:  # a private directory, removed at exit
        tmp = tempfile.mkdtemp(prefix="shmdict-bench-", dir="/dev/shm")
        atexit.register(shutil.rmtree, tmp, True)
        os.environ["SHMDICT_DIR"] = tmp
    reps = 3 if quick else 5
    run(n, None, reps)
    run(n, "x" * 100, reps)


if __name__ == "__main__":
    main()
