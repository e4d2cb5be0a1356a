"""The valgrind memcheck subset (.ci/run stage 3): every kind of operation, the
C type's own paths (sizes, long batches, errors, a closed handle), the
compaction and borrow paths, a kill and recovery at one crash point of each
operation, and every hostile file in tests/corpus/ -- small enough to run
under valgrind in about a minute (pytest + hypothesis under valgrind take
tens of seconds per test).

Usage: valgrind ... python .ci/memcheck.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import shmdict
from shmdict import _lib

ROOT = Path(__file__).resolve().parent.parent


def workload(d: shmdict.SharedDict) -> None:
    for n in range(300):
        d.set(f"k{n}", ["s" * (n % 50), b"b" * (n % 30), n, n / 3, n % 2 == 0][n % 5], 100 if n % 4 else 0)
    for n in range(0, 300, 3):
        d.delete(f"k{n}")
    d.incr("c", 5, init=1)
    d.incr("k2", 1.5)
    d.expire("k1", 0)
    d.ttl("k1")
    d.pop("k4", None)
    d.get_keys()
    len(d)
    for n in range(40):
        d.rpush("L", ["e" * n, n, b"b" * n][n % 3])
    for _ in range(30):
        d.lpop("L")
    d.cas("c", 6, 7)
    d.set_many({"m1": 1, "m2": "two", "m3": b"3"})
    d.get_many(["m1", "m2", "m3", "nope"])
    d.limit("rl", 5, 1)
    d.flush_expired()
    d.scan(0, 50)
    d.items()
    d.stats()
    d.check()
    try:
        n = 0
        while True:
            d[f"fill{n}"] = "f" * 64
            n += 1
    except shmdict.Full:
        pass
    for m in range(1, n - 4, 4):
        del d[f"fill{m}"]
        del d[f"fill{m + 1}"]
    d["big"] = "B" * 150  # needs a compaction pass
    for m in range(n):
        d.pop(f"fill{m}", None)  # room again for the crash points' operations
    d.check()


def hot_paths(d: shmdict.SharedDict) -> None:
    """The C type's own paths (shmdict._speed): values around its stack buffer
    and its no-GIL threshold, batches longer than one lock hold, pop's retry,
    argument parsing and every error it raises, and a closed handle."""
    for size in (0, 1023, 1024, 1025, 70_000):
        d["v"] = b"b" * size
        assert d["v"] == b"b" * size and d.get("v") == b"b" * size
        d.set("v", "é" * size, 5)
        assert d.pop("v") == "é" * size
    n = _lib.lib.SHMDICT_BATCH_HOLD + 3
    d.set_many([(f"m{i}", i) for i in range(n)])
    assert len(d.get_many([f"m{i}" for i in range(n)] + ["nope"])) == n
    d.set_many({f"m{i}": "s" for i in range(n)}, 100)
    for i in range(n):
        del d[f"m{i}"]
    d.incr("c2", 2, init=0, init_ttl=5)
    d.incr("c2", 0.5, 10)
    d.set(key="kw", value=1, exptime=0)
    d.get(key="kw", default=None)
    d.pop("kw", default=None)
    "c2" in d
    5 in d
    for bad in (lambda: d.get(1), lambda: d[""], lambda: d.set("x", object()), lambda: d.set("x", 2**64),
                lambda: d.incr("c2", True), lambda: d.set("x", 1, float("nan")), lambda: d.get("\ud800"),
                lambda: d.get_many(["ok", 3]), lambda: d.set_many([("a", [1])]), lambda: d.set_many([1]),
                lambda: d.get(), lambda: d.incr("k1"), lambda: d.pop("nope"), lambda: d.get("L")):
        try:
            bad()
        except (TypeError, ValueError, OverflowError, KeyError, UnicodeError):
            pass
    c = shmdict.get(d.name)
    c.close()
    for closed in (lambda: c.get("a"), lambda: c["a"], lambda: c.set("a", 1), lambda: c.get_many(["a"])):
        try:
            closed()
        except ValueError:
            pass


def growth(name: str) -> None:
    """Growing: resize, a dict that grows itself, and a second handle that
    follows both (it maps the larger file at its next operation)."""
    with shmdict.new(name, "64k", max_size="1m") as d:
        other = shmdict.get(name)
        for n in range(4000):  # more than 64 KiB holds: grows itself, doubling
            d[f"g{n}"] = n
        assert other.size > 64 << 10 and other[f"g{n}"] == n
        d.resize("2m")
        other["after"] = "x" * 3000  # in the room the resize made
        assert d["after"] == "x" * 3000 and d.size == other.size == 2 << 20
        crash(name, "grow.marked", "d.resize('3m')")
        other.check()  # recovered: the index rebuilt at the new end
        assert other.size == 3 << 20 and other["g5"] == 5
        other.close()


def crash(name: str, point: str, op: str) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            _lib.fault_arm(point)
            c = shmdict.get(name)
            exec(op, {"d": c})
        finally:
            os._exit(3)  # the point was not reached
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), f"{point}: child exited {status}"


def hostile(directory: str, blob: bytes) -> None:
    with open(os.path.join(directory, "shmdict.hostile"), "wb") as f:
        f.write(blob)
    try:
        d = shmdict.get("hostile")
    except shmdict.CorruptError:
        return
    for fn in (lambda: d.get_keys(), lambda: d.set("x", "y" * 100), lambda: d.delete("k1"), d.check):
        try:
            fn()
        except (shmdict.CorruptError, shmdict.Full):
            pass
    d.flush_all()
    d.check()
    d.close()


def main() -> int:
    directory = tempfile.mkdtemp(prefix="shmdict-vg-", dir="/dev/shm")
    os.environ["SHMDICT_DIR"] = directory
    try:
        with shmdict.new("vg", "256k") as d:
            workload(d)
        with shmdict.new("vg-hot", "1m") as d:
            hot_paths(d)
        growth("vg-grow")
        with shmdict.new("vg", "256k") as d:
            workload(d)
            for point, op in [
                ("insert.published", "d['new'] = 'v'"),
                ("overwrite.freed", "d['k5'] = 'x' * 300"),
                ("overwrite.backed", "d['k5'] = 'z' * 5"),
                ("overwrite.inplace", "d['k2'] = 7"),
                ("delete.freed", "del d['k7']"),
                ("incr.ttl", "d.incr('c', 1, 100)"),  # a TTL to set: under the dict lock
                ("incr.in_place", "d.incr('c', 1)"),  # under the stripe's lock: its log replayed next
                ("expire.stored", "d.expire('k8', 5)"),
                ("list.pushed", "d.rpush('L', 'x')"),
                ("cas.matched", "d.cas('c', d['c'], 0)"),
                ("flush.cleared", "d.flush_all()"),
            ]:
                crash("vg", point, op)
                d.check()
                workload(d)
        for path in sorted((ROOT / "tests" / "corpus").glob("*.bin")):
            hostile(directory, path.read_bytes())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print("memcheck workload done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
