"""The cost of growing a dict: resize(), automatic growth, and the lock hold other processes see.

    python benchmarks/growth.py [--quick] [--out DIR]

For 64 MiB -> 128 MiB and 512 MiB -> 1 GiB (4 MiB -> 8 MiB with --quick), a
dict is filled to 90% of the entries it holds when full (8-byte keys; int
values, then 100-byte str values) and grown with ``d.resize(2 * size)``:

- its wall time;
- the lock hold as another process sees it: a forked process gets keys in a
  tight loop and times every get; its longest get while the resize ran is its
  wait for the lock, and the rest of the resize's time is the part before the
  lock (the ``posix_fallocate`` of the new size). Also the reader's 99th
  percentile and longest get before the resize, and in the 0.2 s after it;
- beside it, LMDB's ``env.set_mapsize`` to twice the map, on a py-lmdb
  environment in the same directory holding the same items.

Automatic growth: a dict created at 64 MiB with ``max_size="512m"`` (1 MiB /
``"4m"`` with --quick) is filled, one ``set`` at a time, to 90% of what the
final size holds; the ``set`` that finds the dict full grows it and holds the
lock meanwhile, ``posix_fallocate`` included. Reported: those inserts, the
longest other insert, and the time spent in ``set`` against the same fill of
a dict created at the final size.

Medians of 3 runs (one with --quick; automatic growth: one). The results are
printed; ``--out DIR`` also writes ``DIR/growth-benchmark.md`` (``--out docs``
updates the published page). Every dict is created in ``SHMDICT_DIR``
(default: a new directory under /dev/shm, removed at the end) and removed
again, also when the run fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import mmap
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from array import array
from collections.abc import Iterator
from typing import Any, Optional

import shmdict

MiB = 1 << 20
NS = time.perf_counter_ns
CHUNK = 100_000
VALUES = {"int": None, "100-byte str": "x" * 100}  # None: the key's number
BASELINE = {False: 0.5, True: 0.2}  # seconds of gets timed before a resize
_names = itertools.count()


def _name() -> str:
    return f"growbench-{os.getpid()}-{next(_names)}"


def items(kind: str, start: int, stop: int) -> Iterator[list[tuple[str, Any]]]:
    """(8-byte key, value) pairs for entries start..stop-1, in chunks."""
    v = VALUES[kind]
    for a in range(start, stop, CHUNK):
        r = range(a, min(a + CHUNK, stop))
        yield [(f"{i:08x}", i) for i in r] if v is None else [(f"{i:08x}", v) for i in r]


def fill(d: shmdict.SharedDict, kind: str, n: int) -> None:
    for chunk in items(kind, 0, n):
        d.set_many(chunk)


_capacity: dict[tuple[int, str], int] = {}


def capacity(size: int, kind: str) -> int:
    """The entries a dict of `size` holds when full (filled in order until Full)."""
    if (size, kind) not in _capacity:
        d = shmdict.new(_name(), size)
        try:
            for chunk in items(kind, 0, 1 << 40):
                try:
                    d.set_many(chunk)
                except shmdict.Full:
                    break  # set_many stores in order up to the first item that does not fit
            _capacity[size, kind] = len(d)
        finally:
            d.close()
    return _capacity[size, kind]


# ---- another process, reading -------------------------------------------------------


def _read_line(fd: int) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        b = os.read(fd, 65536)
        if not b:
            raise RuntimeError("the pipe closed early (the other process ended)")
        buf += b
    return buf


def _reader(name: str, keys: list[str], stop: mmap.mmap, w: int, r: int) -> None:
    d = shmdict.get(name)
    get, ns = d.get, NS
    ts, ds = array("q"), array("q")
    for k in keys:  # warm up: every key's page mapped
        get(k)
    os.write(w, b"ready\n")
    while not stop[0]:
        for k in keys:
            t = ns()
            get(k)
            ds.append(ns() - t)
            ts.append(t)
    windows = json.loads(_read_line(r))
    out = {}
    for label, (a, b) in windows.items():
        lat = sorted(dt for t, dt in zip(ts, ds) if a <= t < b)
        out[label] = {"n": len(lat), "p99": lat[int(0.99 * (len(lat) - 1))] if lat else 0,
                      "max": lat[-1] if lat else 0}
    d.close()
    os.write(w, json.dumps(out).encode() + b"\n")


class Reader:
    """A forked process that gets `keys` of dict `name` in a tight loop and
    times every get (perf_counter_ns: one clock for both processes)."""

    def __init__(self, name: str, keys: list[str]) -> None:
        self.stop = mmap.mmap(-1, mmap.PAGESIZE)
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r1)
                os.close(w2)
                _reader(name, keys, self.stop, w1, r2)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(w1)
        os.close(r2)
        self.pid, self.r, self.w = pid, r1, w2
        _read_line(self.r)

    def latencies(self, windows: dict[str, tuple[int, int]]) -> dict[str, dict[str, int]]:
        """Stop, and the gets' 99th percentile and longest (ns) that started in each window."""
        self.stop[0] = 1
        os.write(self.w, json.dumps(windows).encode() + b"\n")
        return json.loads(_read_line(self.r))

    def close(self) -> None:
        self.stop[0] = 1
        os.close(self.w)  # a reader still waiting for its windows reads EOF and ends
        os.close(self.r)
        os.waitpid(self.pid, 0)
        self.stop.close()


# ---- resize ---------------------------------------------------------------------------


def resize_watched(size: int, kind: str, n: int, quick: bool) -> dict[str, Any]:
    """resize(2 * size) of a dict holding n entries, with a reader process timing its gets."""
    d = shmdict.new(_name(), size)
    try:
        fill(d, kind, n)
        keys = [f"{i * n // 1000:08x}" for i in range(1000)]
        reader = Reader(d.name, keys)
        try:
            a = NS()
            time.sleep(BASELINE[quick])
            t0 = NS()
            d.resize(2 * size)
            t1 = NS()
            time.sleep(0.2)
            lat = reader.latencies({"before": (a, t0), "during": (t0, t1), "after": (t1, NS())})
        finally:
            reader.close()
        check(d, 2 * size, n, kind)
        return {"wall": (t1 - t0) / 1e9, "reader": lat}
    finally:
        d.close()


def check(d: shmdict.SharedDict, size: int, n: int, kind: str) -> None:
    st = d.stats()
    if d.size != size or st["entries"] != n or st["growths"] < 1:
        raise RuntimeError(f"after the growth: size {d.size}, {st['entries']} entries, {st['growths']} growths")
    for i in (0, n // 2, n - 1):
        want = i if VALUES[kind] is None else VALUES[kind]
        if d.get(f"{i:08x}") != want:
            raise RuntimeError(f"entry {i} lost in the growth")


def lmdb_mapsize(size: int, kind: str, n: int, reps: int) -> Optional[dict[str, Any]]:
    """Median time of LMDB's env.set_mapsize(2 * map) on an environment holding the same items."""
    try:
        import lmdb
    except ImportError:
        return None
    tmp = tempfile.mkdtemp(dir=os.environ["SHMDICT_DIR"], prefix="growbench-lmdb-")
    try:
        map_size = size
        while True:  # the smallest doubling of `size` that holds the items
            env = lmdb.open(tmp, map_size=map_size, sync=False, metasync=False, max_dbs=0)
            try:
                for chunk in items(kind, 0, n):
                    with env.begin(write=True) as txn:
                        for k, v in chunk:
                            val = v.to_bytes(8, "little") if isinstance(v, int) else v.encode()
                            txn.put(k.encode(), val, append=True)  # keys come in order: full pages
                break
            except lmdb.MapFullError:
                env.close()
                for f in os.listdir(tmp):
                    os.unlink(os.path.join(tmp, f))
                map_size *= 2
        try:
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                env.set_mapsize(2 * map_size)
                times.append(time.perf_counter() - t)
                env.set_mapsize(map_size)
            with env.begin() as txn:
                if txn.stat()["entries"] != n:
                    raise RuntimeError("lmdb lost entries")
        finally:
            env.close()
        return {"time": statistics.median(times), "map_size": map_size}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- automatic growth ------------------------------------------------------------------


def timed_fill(d: shmdict.SharedDict, kind: str, n: int) -> dict[str, Any]:
    """Fill one set at a time: the time spent in set, the inserts that grew
    the dict and the longest other insert, each with whether the index grew
    in it too."""
    s, ns = d.set, NS
    total, cur, ig, slow = 0, d.size, d.stats()["index_growths"], []
    for chunk in items(kind, 0, n):
        for k, v in chunk:
            t = ns()
            s(k, v)
            dt = ns() - t
            total += dt
            # A growth of either kind takes longer than 10 us (a dict's
            # growth allocates pages, the index's rehashes every key): only
            # then ask for the size, and for stats() (which walks the dict)
            # only when the size changed, the dict is small, or the set took a
            # millisecond (as an index growth in a dict of 64 MiB does).
            if dt > 10_000 and (d.size != cur or cur < 64 * MiB or dt > 1_000_000):
                size, ig_now = d.size, d.stats()["index_growths"]
                slow.append({"from": cur, "to": size, "ns": dt, "index_grew": ig_now > ig})
                cur, ig = size, ig_now
    st = d.stats()
    grew = [x for x in slow if x["to"] != x["from"]]
    other = max((x for x in slow if x["to"] == x["from"]), key=lambda x: x["ns"], default=None)
    if st["entries"] != n or len(grew) != st["growths"]:
        raise RuntimeError(f"{st['entries']} entries of {n}, growths {st['growths']} (seen {len(grew)})")
    return {"total": total / 1e9, "grew": grew, "other": other, "index_growths": st["index_growths"]}


def auto_growth(start: int, final: int, kind: str, n: int) -> dict[str, Any]:
    out = {}
    d = shmdict.new(_name(), start, max_size=final)
    try:
        out["auto"] = timed_fill(d, kind, n)
    finally:
        d.close()
    d = shmdict.new(_name(), final)
    try:
        out["fixed"] = timed_fill(d, kind, n)
    finally:
        d.close()
    return out


# ---- report ------------------------------------------------------------------------------


def fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s * 1e6:.1f} µs" if s < 1e-5 else f"{s * 1e6:.0f} µs"


def fmt_size(b: int) -> str:
    return f"{b >> 30} GiB" if b >= 1 << 30 and not b % (1 << 30) else f"{b >> 20} MiB"


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.1f} at start")


def _ms(x: dict[str, Any]) -> str:
    return fmt_s(x["ns"] / 1e9) + ("*" if x["index_grew"] else "")


def report(res: dict[str, Any]) -> str:
    L = [
        "# The cost of growing a dict",
        "",
        f"Machine: {res['machine']}. Mode: {res['mode']}; {res['runs']}.",
        "",
        "## `resize()`",
        "",
        "A dict filled to 90% of the entries it holds when full (8-byte keys), grown with "
        "`d.resize(2 * size)` while another process reads it: that process gets keys in a tight loop "
        "and times each `get`. `resize()` first reserves the new space (`posix_fallocate`) without the "
        "dict's lock, so other processes go on meanwhile; then, under the lock, it maps the larger file "
        "and moves the hash index to the new end (records never move). The *lock hold* is the reading "
        "process's longest `get` during the resize (it waited that long for the lock); *before the "
        "lock* is the rest of the resize's time, its `posix_fallocate` (approximately: the reader's "
        "longest `get` also holds its wake-up and its mapping of the larger file). LMDB: `env.set_mapsize` to "
        "twice the map, on a py-lmdb environment in the same directory holding the same items, its map "
        "the dict's size.",
        "",
        "| growth | values | entries | `resize()` | before the lock | "
        "lock hold | LMDB `set_mapsize` | `resize()` / `set_mapsize` |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["resize"]:
        lm = r["lmdb"]
        lm_s = (fmt_s(lm["time"]) + ("" if lm["map_size"] == r["size"] else f" (map {fmt_size(lm['map_size'])})")
                if lm else "not installed")
        ratio = f"{r['wall'] / lm['time']:,.0f}×" if lm else "-"
        hold, space = (fmt_s(r[x]) if r[x] is not None else "-" for x in ("hold", "space"))
        L.append(f"| {fmt_size(r['size'])} → {fmt_size(2 * r['size'])} | {r['kind']} | {r['n']:,} | "
                 f"{fmt_s(r['wall'])} | {space} | {hold} | {lm_s} | {ratio} |")
    L += [
        "",
        "The reading process in detail: 99th percentile / longest `get` among those that started in the "
        f"{res['baseline']} s before the resize, during it, and in the 0.2 s after it (its first operation "
        "after a growth follows it: it maps the larger file or checks its length, and the moved index is "
        "pages it has not touched yet). "
        "The longest before the resize is what the machine's scheduler costs without any growth.",
        "",
        "| growth | values | before: p99 / longest | during: p99 / longest | after: p99 / longest |",
        "|---|---|---|---|---|",
    ]
    for r in res["resize"]:
        cells = [f"{fmt_s(r['reader'][w]['p99'] / 1e9)} / {fmt_s(r['reader'][w]['max'] / 1e9)}"
                 if r["reader"][w]["n"] else "no get started" for w in ("before", "during", "after")]
        L.append(f"| {fmt_size(r['size'])} → {fmt_size(2 * r['size'])} | {r['kind']} | " + " | ".join(cells) + " |")
    L += [
        "",
        "## Automatic growth (`max_size`)",
        "",
        "A dict created at the first size with `max_size` set to the final size, filled one `set` at "
        "a time to 90% of what the final size holds, against the same fill of a dict created at the "
        "final size. The `set` that finds the dict full grows it (at least doubling) and holds the "
        "dict's lock throughout, **posix_fallocate included**: unlike `resize()`, it cannot allocate "
        "before it takes the lock. `*`: that `set` also grew the hash index (rehashing every key, "
        "under the lock), which a dict full of small items needs soon after each growth. *Longest "
        "other `set`*: the longest that did not grow the dict (an index growth, in both dicts). "
        "*Time in `set`*: the sum of the `set` calls.",
        "",
        "| sizes | values | entries | each growing `set` | longest other `set`: auto / created at final size | "
        "index growths | time in `set`: auto / created at final size |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["auto"]:
        a, f = r["auto"], r["fixed"]
        grew = ", ".join(f"{fmt_size(x['from'])} → {fmt_size(x['to'])}: {_ms(x)}" for x in a["grew"])
        other = " / ".join(_ms(x["other"]) if x["other"] else "-" for x in (a, f))
        L.append(f"| {fmt_size(r['start'])} → {fmt_size(r['final'])} | {r['kind']} | {r['n']:,} | {grew} | "
                 f"{other} | {a['index_growths']} / {f['index_growths']} | "
                 f"{fmt_s(a['total'])} / {fmt_s(f['total'])} ({a['total'] / f['total']:.2f}×) |")
    L += [
        "",
        "## Peers",
        "",
        "LMDB's `set_mapsize` only maps a larger address range: its file grows page by page as "
        "transactions write, so no space is reserved (a full disk shows later, as a failed write), "
        "and every other process must call it too (or gets `MDB_MAP_RESIZED`). Redis is not measured: "
        "it has no size to grow. Its `maxmemory` is a limit on the memory it allocates key by key as "
        "they arrive (`CONFIG SET maxmemory` changes a number), so no step of it corresponds to a growth.",
        "",
        "Reproduce with `python benchmarks/growth.py --out DIR` (about 90 s on 2 cores; `--quick` runs the "
        "same steps on small dicts in seconds).",
    ]
    return "\n".join(L) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/growth.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small dicts, one run each (CI smoke)")
    p.add_argument("--out", default=None, metavar="DIR", help="also write DIR/growth-benchmark.md")
    a = p.parse_args(argv)
    quick = a.quick
    pairs = [4 * MiB] if quick else [64 * MiB, 512 * MiB]
    auto = (1 * MiB, 4 * MiB) if quick else (64 * MiB, 512 * MiB)
    reps, reps_big = (1, 1) if quick else (3, 3)
    own_dir = None
    if not os.environ.get("SHMDICT_DIR"):
        own_dir = os.environ["SHMDICT_DIR"] = tempfile.mkdtemp(dir="/dev/shm", prefix="shmdict-growbench-")
    runs = ", ".join(f"resizes of {fmt_size(x)}: " + (f"median of {k} runs" if k > 1 else "one run")
                     for x, k in zip(pairs, (reps, reps_big))) + ", automatic growth: one run"
    res: dict[str, Any] = {"machine": machine(), "mode": "quick" if quick else "full", "runs": runs,
                           "baseline": BASELINE[quick], "resize": [], "auto": []}
    t_start = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        for size in pairs:
            for kind in VALUES:
                n = int(0.9 * capacity(size, kind))
                k = reps if size == pairs[0] else reps_big
                log(f"resize {fmt_size(size)} -> {fmt_size(2 * size)}, {kind} values, {n:,} entries, {k} runs")
                watched = [resize_watched(size, kind, n, quick) for _ in range(k)]
                reader = {w: {x: statistics.median(r["reader"][w][x] for r in watched) for x in ("n", "p99", "max")}
                          for w in ("before", "during", "after")}
                # the lock hold is the reader's longest get during the resize; the rest of the
                # resize, before it took the lock, its posix_fallocate (runs where no get started: none)
                seen = [r for r in watched if r["reader"]["during"]["n"]]
                hold = [r["reader"]["during"]["max"] / 1e9 for r in seen]
                space = [max(r["wall"] - h, 0.0) for r, h in zip(seen, hold)]
                res["resize"].append({
                    "size": size, "kind": kind, "n": n,
                    "wall": statistics.median(w["wall"] for w in watched),
                    "hold": statistics.median(hold) if hold else None,
                    "space": statistics.median(space) if space else None,
                    "reader": reader,
                    "lmdb": lmdb_mapsize(size, kind, n, 5),
                })
        for kind in VALUES:
            start, final = auto
            n = int(0.9 * capacity(final, kind))
            log(f"automatic growth {fmt_size(start)} -> {fmt_size(final)}, {kind} values, {n:,} entries")
            res["auto"].append({"start": start, "final": final, "kind": kind, "n": n,
                                **auto_growth(start, final, kind, n)})
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
    text = report(res)
    print(text)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "growth-benchmark.md"), "w") as f:
            f.write(text)
        log(f"wrote {os.path.join(a.out, 'growth-benchmark.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
