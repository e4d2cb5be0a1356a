"""The valgrind memcheck subset (.ci/run stage 3): every operation, the
defrag and borrow paths, a kill and recovery at one crash point of each
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
    d["big"] = "B" * 150  # needs a defrag pass
    for m in range(n):
        d.pop(f"fill{m}", None)  # room again for the crash points' operations
    d.check()


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
            for point, op in [
                ("insert.published", "d['new'] = 'v'"),
                ("overwrite.freed", "d['k5'] = 'x' * 300"),
                ("overwrite.backed", "d['k5'] = 'z' * 5"),
                ("overwrite.inplace", "d['k2'] = 7"),
                ("delete.freed", "del d['k7']"),
                ("incr.ttl", "d.incr('c', 1)"),
                ("expire.stored", "d.expire('k8', 5)"),
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
