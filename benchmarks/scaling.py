"""Several processes on one store: throughput counted inside the workers, and latency under writers.

    python -m benchmarks.scaling            # 1/2/4 processes, 3 interleaved reps (about a minute)
    python -m benchmarks.scaling --quick    # 1/2 processes, one rep (a few seconds)
    python -m benchmarks.scaling --json F   # also write the raw figures to F

Each worker is forked, puts itself in its own session (``os.setsid()``: the
kernel's autogroups would otherwise share one CPU between all of them), pins
itself to one CPU (worker i on CPU i mod the CPUs this process may use),
attaches to the store, warms up, and reports ready. The parent then hands all
of them one start instant a few milliseconds ahead; each worker spins until
it, runs its loop in chunks for a fixed time, and reports the operations it
completed and the time they took. Aggregate ops/s = the sum of the workers'
rates. Process start-up, attaching and the fork never enter the figure.
Process counts and workloads are interleaved across reps (rep 1 of every
point, then rep 2...), so a noisy neighbour hits all of them alike, and the
tables show medians.

Workloads: ``get`` over 1e3 resident keys (random order), ``incr`` with each
worker over its own 1e3 keys (random order; the parent creates them
interleaved, worker 0's key j beside worker 1's key j), ``incr`` with each
worker on one key of its own (created one after the other: the records are
neighbours in one 64-byte cache line, which the CPUs then pass back and
forth -- false sharing, what two counters that happen to be neighbours
cost), ``incr`` with every worker on one key, and py-lmdb's
read transactions (readers that write nothing shared) beside them; and a
control, ``dict.get`` on each worker's private dict, which shares nothing:
what the machine itself gives N processes (CPU frequency, shared caches, a
hypervisor's idea of a core).

Latency: one process times single calls (``perf_counter_ns`` around each,
the timer's own cost included alike in every column) of ``get`` and ``incr``
alone, then while 3 other processes ``incr`` other keys as fast as they can.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import signal
import statistics
import sys
import time
from typing import Any, Callable, Optional

from .backends import BACKENDS, Backend, Unavailable

MONO = time.monotonic_ns
N_KEYS = 1000
CHUNK = 500  # operations between two clock reads in a worker

# (column, backend, title) of the throughput workloads, in table order
WORKLOADS = [
    ("get", "shmdict", "shmdict `get`, 1e3 keys"),
    ("incr_own", "shmdict", "shmdict `incr`, each process its own 1e3 keys"),
    ("incr_own1", "shmdict", "shmdict `incr`, each process one key of its own (neighbouring records)"),
    ("incr_one", "shmdict", "shmdict `incr`, one shared key"),
    ("lmdb_get", "lmdb", "py-lmdb `get` (read transaction), 1e3 keys"),
    ("dict_get", "dict", "control: `dict.get` on a private dict (nothing shared: the machine's ceiling)"),
]


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return [0]


def _pin(i: int) -> None:
    cpus = _cpus()
    try:
        os.sched_setaffinity(0, {cpus[i % len(cpus)]})
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        pass


def _keys(b: Backend, n: int, prefix: str) -> list[Any]:
    ks = [f"{prefix}{i:06d}" for i in range(n)]
    return [k.encode() for k in ks] if b.bytes_keys else ks


def _body(a: Backend, workload: str, worker: int) -> tuple[Callable[[], None], int]:
    """(loop over one chunk, operations in it) for one worker."""
    if workload in ("get", "lmdb_get", "dict_get"):
        ks = _keys(a, N_KEYS, "key:")
        random.Random(worker).shuffle(ks)
        ks = (ks * (CHUNK // len(ks) + 1))[:CHUNK]
        get = a.get

        def loop() -> None:
            for k in ks:
                get(k)

        return loop, len(ks)
    if workload == "mix":  # 90% get, 10% set over the 1e3 keys
        ks = _keys(a, N_KEYS, "key:")
        rnd = random.Random(worker)
        ops = [(ks[rnd.randrange(len(ks))], rnd.random() < 0.1) for _ in range(CHUNK)]
        get, set_ = a.get, a.set

        def loop_mix() -> None:
            for k, w in ops:
                if w:
                    set_(k, 7)
                else:
                    get(k)

        return loop_mix, len(ops)
    if workload == "incr_own":
        ks = _keys(a, N_KEYS, f"own{worker}:")
        random.Random(worker).shuffle(ks)
        ks = (ks * (CHUNK // len(ks) + 1))[:CHUNK]
        incr = a.incr

        def loop_own() -> None:
            for k in ks:
                incr(k)

        return loop_own, len(ks)
    key = _keys(a, 1, "counter:")[0] if workload == "incr_one" else _keys(a, 1, f"own{worker}:")[0]
    incr = a.incr

    def loop2() -> None:
        for _ in range(CHUNK):
            incr(key)

    return loop2, CHUNK


def _worker(b: Backend, workload: str, i: int, dur_ns: int, ready_w: int, go_r: int, out_w: int) -> None:
    done, elapsed, warm = 0, 0, 0
    ready = False
    try:
        os.setsid()
        _pin(i)
        gc.disable()
        a = b.attach()
        loop, per = _body(a, workload, i)
        loop()  # warm: caches, the mapping, the method lookups
        warm = per
        os.write(ready_w, b"r")
        ready = True
        t0 = int.from_bytes(os.read(go_r, 8), "little")
        while MONO() < t0:
            pass
        end = t0 + dur_ns
        t = t0
        while t < end:
            loop()
            done += per
            t = MONO()
        elapsed = t - t0
    except BaseException as e:  # pragma: no cover - reported, counted as nothing
        print(f"worker {os.getpid()}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    finally:
        if not ready:  # failed while warming up: the parent must not wait for it forever
            os.write(ready_w, b"r")
        os.write(out_w, done.to_bytes(8, "little") + elapsed.to_bytes(8, "little") + warm.to_bytes(8, "little"))
        os._exit(0)


def _fork_workers(b: Backend, workload: str, nproc: int, dur_s: float) -> list[tuple[int, int, int]]:
    """Run nproc workers from one start instant; [(ops, ns, warm-up ops)] per worker."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pids = []
    b.before_fork()
    try:
        for i in range(nproc):
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                signal.alarm(int(dur_s) + 60)
                _worker(b, workload, i, int(dur_s * 1e9), ready_w, go_r, out_w)
            pids.append(pid)
        for _ in pids:
            os.read(ready_r, 1)
        t0 = MONO() + 5_000_000  # 5 ms ahead: every worker is spinning when it comes
        for _ in pids:
            os.write(go_w, t0.to_bytes(8, "little"))
        res = []
        for _ in pids:
            data = os.read(out_r, 24)
            res.append((int.from_bytes(data[:8], "little"), int.from_bytes(data[8:16], "little"),
                        int.from_bytes(data[16:], "little")))
        return res
    finally:
        for pid in pids:
            os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, go_r, go_w, out_r, out_w):
            os.close(fd)
        b.after_fork()


def throughput(b: Backend, workload: str, nproc: int, dur_s: float, size: int = 64 << 20) -> dict[str, Any]:
    """Aggregate ops/s of nproc workers on a fresh store: {ops_s, done, final}."""
    b.open(size)
    try:
        if workload in ("get", "lmdb_get", "dict_get", "mix"):
            keys = _keys(b, N_KEYS, "key:")
            b.fill(keys, list(range(len(keys))))
        elif workload == "incr_one":
            b.fill(_keys(b, 1, "counter:"), [0])
        elif workload == "incr_own":  # interleaved: worker 0's key j, worker 1's key j, ...
            sets = [_keys(b, N_KEYS, f"own{i}:") for i in range(nproc)]
            b.fill([k for ks in zip(*sets) for k in ks], [0] * (N_KEYS * nproc))
        else:
            b.fill([_keys(b, 1, f"own{i}:")[0] for i in range(nproc)], [0] * nproc)
        res = _fork_workers(b, workload, nproc, dur_s)
        # done: every operation made, the warm-up included (the lost-update check compares it with the counter)
        out: dict[str, Any] = {"ops_s": sum(n / (ns / 1e9) for n, ns, _ in res if ns),
                               "done": sum(n + w for n, _, w in res)}
        if workload == "incr_one":
            v = b.get(_keys(b, 1, "counter:")[0])
            out["final"] = int(v) if v is not None else 0
        return out
    finally:
        b.close()


# ---- latency ------------------------------------------------------------------------


def _writer(b: Backend, i: int, stop_r: int, ready_w: int) -> None:
    ready = False
    try:  # pragma: no cover - child
        os.setsid()
        _pin(i)
        gc.disable()
        a = b.attach()
        incr = a.incr
        key = _keys(a, 1, f"writer{i}:")[0]
        a.set(key, 0)
        os.set_blocking(stop_r, False)
        os.write(ready_w, b"r")
        ready = True
        while True:
            for _ in range(CHUNK):
                incr(key)
            try:
                if os.read(stop_r, 1):
                    break
            except BlockingIOError:
                pass
    except BaseException as e:
        print(f"writer {os.getpid()}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    finally:
        if not ready:  # the parent waits for every writer to be ready
            os.write(ready_w, b"r")
        os._exit(0)


def latency(op: str, writers: int, n: int, size: int = 64 << 20) -> dict[str, float]:
    """p50/p99/p99.9 ns of n single `op` calls (get or incr over 1e3 keys) in a
    process pinned to the first CPU, with `writers` processes incrementing other keys."""
    b = BACKENDS["shmdict"]().open(size)
    pids: list[int] = []
    stop_r, stop_w = os.pipe()
    ready_r, ready_w = os.pipe()
    try:
        keys = _keys(b, N_KEYS, "key:")
        b.fill(keys, list(range(len(keys))))
        for i in range(writers):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                signal.alarm(120)
                _writer(b, i + 1, stop_r, ready_w)
            pids.append(pid)
        for _ in pids:
            os.read(ready_r, 1)
        prev = os.sched_getaffinity(0)
        _pin(0)
        try:
            f = b.get if op == "get" else b.incr
            order = [keys[j] for j in random.Random(1).choices(range(len(keys)), k=n)]
            pc = time.perf_counter_ns
            lat = [0] * n
            for k in order[:2000]:
                f(k)
            gc.disable()
            try:
                for j, k in enumerate(order):
                    t = pc()
                    f(k)
                    lat[j] = pc() - t
            finally:
                gc.enable()
        finally:
            os.sched_setaffinity(0, prev)
        lat.sort()
        return {"p50": lat[n // 2], "p99": lat[int(n * 0.99)], "p999": lat[int(n * 0.999)]}
    finally:
        os.write(stop_w, b"s" * max(1, writers))
        for pid in pids:
            os.waitpid(pid, 0)
        for fd in (stop_r, stop_w, ready_r, ready_w):
            os.close(fd)
        b.close()


# ---- a run ----------------------------------------------------------------------------


def run(quick: bool, reps: Optional[int] = None, dur_s: Optional[float] = None,
        log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Every point, reps interleaved; the raw figures."""
    reps = reps or (1 if quick else 3)
    dur = dur_s or (0.2 if quick else 1.0)
    procs = [1, 2] if quick else [1, 2, 4]
    n_lat = 20_000 if quick else 200_000
    data: dict[str, Any] = {"procs": procs, "reps": reps, "dur_s": dur, "cpus": len(_cpus()),
                            "throughput": {}, "latency": {}, "skipped": []}
    unavailable: set[str] = set()
    points = [(w, p) for p in procs for w, _, _ in WORKLOADS]
    for rep in range(reps):
        order = points[rep % len(points):] + points[:rep % len(points)]
        for w, p in order:
            backend = next(bk for c, bk, _ in WORKLOADS if c == w)
            if backend in unavailable:
                continue
            log(f"scaling rep {rep + 1}/{reps}: {w}, {p} process{'es' if p > 1 else ''}")
            try:
                r = throughput(BACKENDS[backend](), w, p, dur)
            except Unavailable as e:
                unavailable.add(backend)
                data["skipped"].append(f"{backend}: {e}")
                continue
            data["throughput"].setdefault(w, {}).setdefault(str(p), []).append(r)
        for op in ("get", "incr"):
            for wr in (0, 3):
                log(f"scaling rep {rep + 1}/{reps}: {op} latency, {wr} writers")
                data["latency"].setdefault(f"{op}/{wr}", []).append(latency(op, wr, n_lat))
    return data


def _med_ops(data: dict[str, Any], w: str, p: int) -> Optional[float]:
    reps = data["throughput"].get(w, {}).get(str(p))
    return statistics.median(r["ops_s"] for r in reps) if reps else None


def _med_lat(data: dict[str, Any], key: str, q: str) -> Optional[float]:
    reps = data["latency"].get(key)
    return statistics.median(r[q] for r in reps) if reps else None


def table(data: dict[str, Any]) -> list[str]:
    """The markdown tables of a run."""
    procs = data["procs"]
    lines = [f"Several processes on one store, each pinned to its own CPU ({data['cpus']} CPUs here; "
             f"beyond that, workers share CPUs), operations counted inside the workers over "
             f"{data['dur_s']:g} s after a common start; aggregate M ops/s, median of {data['reps']} "
             f"interleaved reps:", "",
             "| workload | " + " | ".join(f"{p} process{'es' if p > 1 else ''}" for p in procs) +
             " | 2 ÷ 1 |", "|---|" + "---|" * (len(procs) + 1)]
    for w, _, title in WORKLOADS:
        if w not in data["throughput"]:
            continue
        cells = [f"{v / 1e6:.2f}" if (v := _med_ops(data, w, p)) else "-" for p in procs]
        one, two = _med_ops(data, w, 1), _med_ops(data, w, 2)
        lines.append(f"| {title} | " + " | ".join(cells) + f" | {two / one:.2f}× |" if one and two else
                     f"| {title} | " + " | ".join(cells) + " | - |")
    if data["latency"]:
        lines += ["", "Latency of single calls, ns (p50 / p99 / p99.9; the timer's own cost, about "
                  "40 ns, included), alone and while 3 other processes `incr` other keys:", "",
                  "| op | alone | with 3 writers | p99 ratio |", "|---|---|---|---|"]
        for op in ("get", "incr"):
            cells = []
            for wr in (0, 3):
                qs = [_med_lat(data, f"{op}/{wr}", q) for q in ("p50", "p99", "p999")]
                cells.append(" / ".join(f"{q:,.0f}" for q in qs if q is not None))
            a, b = _med_lat(data, f"{op}/0", "p99"), _med_lat(data, f"{op}/3", "p99")
            lines.append(f"| {op} | {cells[0]} | {cells[1]} | {b / a:.2f}× |" if a and b else
                         f"| {op} | {cells[0]} | {cells[1]} | - |")
    return lines


def targets(data: dict[str, Any]) -> list[tuple[str, float, str, bool]]:
    """(target, figure, shown, met) for the several-process targets."""
    rows = []
    for w, need, what in (("get", 1.7, "get"), ("incr_own", 1.3, "incr, each its own keys"),
                          ("incr_one", 0.7, "incr, one shared key")):
        one, two = _med_ops(data, w, 1), _med_ops(data, w, 2)
        if one and two:
            rows.append((f"2 processes ÷ 1, {what} ≥ {need:g}×", two / one, f"{two / one:.2f}×", two / one >= need))
    a, b = _med_lat(data, "get/0", "p99"), _med_lat(data, "get/3", "p99")
    if a and b:
        rows.append(("get p99 with 3 writers ≤ 2× alone", b / a, f"{b / a:.2f}×", b / a <= 2))
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 and 2 processes, one short rep")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--dur", type=float, default=None, help="seconds per throughput point")
    p.add_argument("--json", default=None, help="write the raw figures here")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    data = run(a.quick, a.reps, a.dur,
               lambda m: print(f"[{time.monotonic() - t0:6.1f}s] {m}", file=sys.stderr, flush=True))
    data["load"] = os.getloadavg()
    print("\n".join(table(data)))
    for what, _, shown, ok in targets(data):
        print(f"- {what}: {shown} ({'met' if ok else 'not met'})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(data, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
