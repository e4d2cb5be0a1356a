"""Growing a live dict: ``resize``, ``open`` with a larger size, ``max_size``.

What this file owns: a growth keeps every item (type, value, TTL) and gives
the arena the new room; bad sizes change nothing; ``size`` and the
``stats()`` keys that describe the split (``index_bytes``, ``capacity``,
``hole_bytes``, ``fragmentation``, ``growths``, ``max_size``) add up; a full
dict with a ``max_size`` grows (doubling) before it evicts or raises
``Full``; other processes and threads follow a growth from their next
operation, through many remaps; a full filesystem (ENOSPC) and a scribbled
``size`` header word are errors, never a crash. The crash points of a growth
are swept in tests/test_crash_sweep.py and tests/test_crash.py, and the kill
torture grows its dict (tests/test_torture.py).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import LONG, MIN_SIZE, dict_path, run_in_child, start_child, unique_name, wait_child
from header_layout import offset
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import shmdict

PAGE = 4096
KiB, MiB = 1 << 10, 1 << 20
RESERVED_UNITS = 2 * 8  # arena units 0 and 1 are never used (8 bytes each)


def pages(n: int) -> int:
    return -(-n // PAGE) * PAGE


def fill(d: shmdict.SharedDict, prefix: str, vlen: int = 100, limit: int = 1_000_000) -> list[str]:
    """Store prefix-numbered values of vlen bytes until the dict is Full."""
    keys = []
    for n in range(limit):
        k = f"{prefix}{n}"
        try:
            d[k] = value_of(k, vlen)
        except shmdict.Full:
            return keys
        keys.append(k)
    raise AssertionError("never became full")  # pragma: no cover


def value_of(key: str, vlen: int) -> str:
    return (key + "|" + "v" * vlen)[: max(vlen, len(key) + 1)]


def header_word(name: str, field: str) -> int:
    with open(dict_path(name), "rb") as f:
        f.seek(offset(field))
        return int(struct.unpack("<Q", f.read(8))[0])


def poke_header(name: str, field: str, value: int) -> None:
    with open(dict_path(name), "r+b") as f:
        f.seek(offset(field))
        f.write(struct.pack("<Q", value))


def overhead(d: shmdict.SharedDict) -> int:
    """Bytes of the dict that are neither index nor arena: header, event ring
    and the two reserved arena units. A growth must not change it."""
    st_ = d.stats()
    return int(d._info()["file_size"]) - st_["capacity"] - st_["index_bytes"]


def every_type(d: shmdict.SharedDict) -> dict[str, Any]:
    items: dict[str, Any] = {
        "s": "text ü",
        "b": b"\x00\xff" * 30,
        "i": -(2**62),
        "f": 2.5,
        "t": True,
        "big": "B" * 5000,
    }
    for k, v in items.items():
        d[k] = v
    d.set("ttl", "expires later", 1000)
    return items


def snapshot(d: shmdict.SharedDict) -> dict[str, tuple[type, Any]]:
    """The live scalar items as {key: (type, value)} (lists are read with pop_all)."""
    out: dict[str, tuple[type, Any]] = {}
    for k in d.get_keys():
        try:
            v = d.get(k)
        except TypeError:
            continue
        if v is not None:
            out[k] = (type(v), v)
    return out


def pop_all(d: shmdict.SharedDict, key: str) -> list[Any]:
    out = []
    while (x := d.lpop(key)) is not None:
        out.append(x)
    return out


# ---- resize: one process ------------------------------------------------------------


def test_resize_keeps_every_item_its_type_and_ttl(name: str) -> None:
    """A growth keeps every value (each type, a list, a TTL) and gives the arena the new room."""
    with shmdict.new(name, "64k") as d:
        every_type(d)
        for v in (1, "two", b"3", 4.5):
            d.rpush("L", v)
        keys = fill(d, "k", 100)
        before = snapshot(d)
        ttl = d.ttl("ttl")
        st0 = d.stats()
        d.resize("1m")
        assert d.size == MiB
        assert snapshot(d) == before
        assert ttl is not None and 990 < (d.ttl("ttl") or 0) <= ttl
        assert d.ttl("s") == 0
        d.check()
        st_ = d.stats()
        assert st_["growths"] == 1 and st_["index_bytes"] == st0["index_bytes"]
        assert st_["capacity"] == st0["capacity"] + MiB - 64 * KiB  # all of the new room is the arena's
        more = fill(d, "m", 100)
        assert len(more) > 10 * len(keys)  # and it is usable
        assert snapshot(d).items() >= before.items()
        assert pop_all(d, "L") == [1, "two", b"3", 4.5]
        d.check()


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ("32k", ValueError),  # smaller
        (65535, ValueError),  # one byte smaller
        (MIN_SIZE - 1, ValueError),
        (0, ValueError),
        (-1, ValueError),
        ("12x", ValueError),
        ("", ValueError),
        ("64g", ValueError),  # above the maximum
        (1.5, TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_resize_to_a_bad_size_raises_and_changes_nothing(name: str, bad: Any, error: type) -> None:
    """A smaller or invalid size raises; size, contents, geometry and the growth counter stay."""
    with shmdict.new(name, "64k") as d:
        every_type(d)
        before, st0 = snapshot(d), d.stats()
        file0 = os.path.getsize(dict_path(name))
        with pytest.raises(error):
            d.resize(bad)
        assert d.size == 64 * KiB
        assert snapshot(d) == before
        st1 = d.stats()
        for k in ("size", "capacity", "index_bytes", "growths", "used_bytes"):
            assert st1[k] == st0[k], k
        assert os.path.getsize(dict_path(name)) == file0
        d.check()


def test_resize_to_the_same_size_does_nothing(name: str) -> None:
    with shmdict.new(name, "64k") as d:
        d["k"] = 1
        st0 = d.stats()
        d.resize("64k")
        d.resize(65536)
        st1 = d.stats()
        assert d.size == 64 * KiB and st1["growths"] == 0 and st1["capacity"] == st0["capacity"]
        assert header_word(name, "size") == 64 * KiB
        d.resize("128k")
        with pytest.raises(ValueError, match="smaller"):
            d.resize("64k")  # the size now is what counts, not the size at creation
        assert d.size == 128 * KiB


def test_sizes_that_are_not_a_page_multiple(name: str) -> None:
    """size reports what was asked; the file and the geometry use whole pages."""
    with shmdict.new(name, 40_000) as d:
        assert d.size == 40_000 and d._info()["file_size"] == pages(40_000)
        d["k"] = "v"
        d.resize(65_537)
        assert d.size == 65_537 and d._info()["file_size"] == 69_632
        cap = d.stats()["capacity"]
        assert d.stats()["growths"] == 1
        d.resize(69_000)  # inside the page the dict already has: no growth, only the size
        assert d.size == 69_000 and d.stats()["capacity"] == cap and d.stats()["growths"] == 1
        with pytest.raises(ValueError):
            d.resize(68_000)  # smaller than the size now, though the same page
        assert d.size == 69_000
        d.resize(69_632)
        assert d.size == 69_632 and d.stats()["growths"] == 1
        d.resize(69_633)
        assert d._info()["file_size"] == 73_728 and d.stats()["growths"] == 2
        assert d["k"] == "v"
        d.check()
        with shmdict.get(name) as g:
            assert g.size == 69_633


def test_stats_describe_the_split(name: str) -> None:
    """index_bytes + capacity + a fixed overhead is the file's size, before and after each
    growth (automatic ones and index growths included); size and growths follow."""
    with shmdict.new(name, "64k", max_size="2m") as d:
        fixed = overhead(d)
        assert fixed == header_word(name, "arena_off") + RESERVED_UNITS
        st0 = d.stats()
        assert st0["size"] == d.size == 64 * KiB
        assert st0["index_bytes"] == 8 * st0["index_cap"]
        assert st0["growths"] == 0 and st0["max_size"] == 2 * MiB
        assert st0["free_bytes"] == st0["capacity"] - st0["used_bytes"]
        seen = {64 * KiB}
        for n in range(20_000):
            d[f"k{n}"] = n  # small items: the index grows too
            if d.size not in seen:
                seen.add(d.size)
                st_ = d.stats()
                assert overhead(d) == fixed
                assert st_["size"] == d.size == d._info()["file_size"] == header_word(name, "size")
                assert st_["growths"] == len(seen) - 1
        st_ = d.stats()
        assert st_["index_growths"] >= 1 and st_["index_bytes"] > st0["index_bytes"]
        assert overhead(d) == fixed
        d.resize(3 * MiB + 100)
        assert overhead(d) == fixed and d.stats()["growths"] == len(seen)
        d.check()


def test_fragmentation(name: str) -> None:
    """hole_bytes counts free bytes between records; fragmentation is their share of the free bytes."""
    with shmdict.new(name, "1m") as d:
        st0 = d.stats()
        assert st0["hole_bytes"] == 0 and st0["fragmentation"] == 0.0
        for n in range(200):
            d[f"k{n:03d}"] = "v" * 300
        st1 = d.stats()
        assert st1["hole_bytes"] == 0 and st1["fragmentation"] == 0.0
        for n in range(0, 199, 2):
            del d[f"k{n:03d}"]
        st2 = d.stats()
        assert st2["hole_bytes"] == st1["used_bytes"] - st2["used_bytes"] > 0
        assert 0 < st2["fragmentation"] <= 1
        assert st2["fragmentation"] == round(st2["hole_bytes"] / st2["free_bytes"], 4)
        d.resize("2m")  # a growth adds free bytes, not holes
        st3 = d.stats()
        assert st3["hole_bytes"] == st2["hole_bytes"] and 0 < st3["fragmentation"] < st2["fragmentation"]
        d.clear()
        st4 = d.stats()
        assert st4["hole_bytes"] == 0 and st4["fragmentation"] == 0.0


def test_fragmentation_of_a_full_dict_stays_in_range(name: str) -> None:
    with shmdict.new(name, "64k") as d:
        keys = fill(d, "k", 60)
        for k in keys[:-1:3]:
            del d[k]
        st_ = d.stats()
        assert 0 < st_["fragmentation"] <= 1 and st_["hole_bytes"] <= st_["free_bytes"]


# ---- max_size: automatic growth -------------------------------------------------------


def test_a_full_dict_doubles_up_to_max_size_then_raises_full(name: str) -> None:
    with shmdict.new(name, "64k", max_size="1m") as d:
        sizes = [d.size]
        n = 0
        while True:
            try:
                d[f"k{n}"] = "x" * 100
            except shmdict.Full:
                break
            n += 1
            if d.size != sizes[-1]:
                sizes.append(d.size)
        assert sizes == [64 * KiB, 128 * KiB, 256 * KiB, 512 * KiB, MiB]
        st_ = d.stats()
        assert st_["growths"] == 4 and st_["max_size"] == MiB and st_["evictions"] == 0
        assert len(d) == n and d["k0"] == "x" * 100
        assert d._info()["file_size"] == MiB
        d.check()
        d.resize("2m")  # an explicit resize may go past max_size
        d["more"] = 1
        assert d.size == 2 * MiB and d.stats()["max_size"] == MiB


def test_max_size_that_is_not_a_doubling(name: str) -> None:
    """The last step stops at max_size (whole pages): never past it."""
    with shmdict.new(name, "64k", max_size=200_000) as d:
        fill(d, "k")
        assert d.size == 200_000 // PAGE * PAGE
        assert d._info()["file_size"] <= 200_000


def test_evicting_dict_grows_first_then_evicts(name: str) -> None:
    with shmdict.new(name, "64k", max_size="256k", evict=True) as d:
        n = 0
        while d.size < 256 * KiB:
            d[f"k{n}"] = "v" * 100
            n += 1
            assert d.stats()["evictions"] == 0, f"evicted at size {d.size}"
        assert len(d) == n  # nothing was evicted on the way
        for m in range(n, 4 * n):
            d[f"k{m}"] = "v" * 100
        st_ = d.stats()
        assert st_["evictions"] > 0 and d.size == 256 * KiB and st_["growths"] == 2
        assert d[f"k{4 * n - 1}"] == "v" * 100
        d.check()


def test_an_item_larger_than_the_dict_is_stored_by_growing(name: str) -> None:
    with shmdict.new(name, "64k", max_size="1m") as d:
        d["small"] = 1
        d["big"] = "x" * 200_000  # three times the dict's size: grows at once, past a doubling
        assert d["big"] == "x" * 200_000 and d["small"] == 1
        assert 200_000 < d.size <= MiB and d.stats()["growths"] == 1
        with pytest.raises(shmdict.Full):
            d["huge"] = "x" * (2 * MiB)  # larger than max_size: refused, nothing grows
        assert "huge" not in d and d.stats()["growths"] == 1
        d.check()
    with shmdict.new(unique_name(), "64k") as d:  # without max_size it is too big
        with pytest.raises(shmdict.Full):
            d["big"] = "x" * 200_000
        assert d.size == 64 * KiB


def test_a_list_grows_the_dict_too(name: str) -> None:
    with shmdict.new(name, "64k", max_size="1m") as d:
        for n in range(2000):
            d.rpush("L", "e" * 100 + str(n))
        assert d.size > 64 * KiB and d.llen("L") == 2000
        d.check()
        assert pop_all(d, "L") == ["e" * 100 + str(n) for n in range(2000)]


def test_load_into_a_dict_that_can_grow(name: str, shm_dir: str) -> None:
    """A snapshot larger than the dict but within its max_size loads by growing it; one
    larger than max_size is refused whole."""
    path = os.path.join(shm_dir, "snap.bin")
    with shmdict.new(unique_name(), "1m") as src:
        for n in range(100):
            src[f"s{n}"] = value_of(f"s{n}", 500)
        src.dump(path)
    with shmdict.new(name, "64k", max_size="1m") as d:
        d["mine"] = 1
        assert d.load(path) == 100
        assert d.size > 64 * KiB and d["s99"] == value_of("s99", 500) and d["mine"] == 1
        d.check()
    with shmdict.new(unique_name(), "64k", max_size="72k") as d:
        with pytest.raises(shmdict.Full, match="nothing was loaded"):
            d.load(path)
        assert len(d) == 0 and d.size == 64 * KiB


@pytest.mark.parametrize("max_size", ["32k", 65535, "12x", 1.5])
def test_max_size_below_size_or_bad_is_refused(name: str, max_size: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        shmdict.new(name, "64k", max_size=max_size)
    assert not os.path.exists(dict_path(name))
    with pytest.raises((ValueError, TypeError)):
        shmdict.open(name, "64k", max_size=max_size)
    assert not os.path.exists(dict_path(name))


def test_max_size_equal_to_size_never_grows(name: str) -> None:
    with shmdict.new(name, "64k", max_size="64k") as d:
        fill(d, "k")
        assert d.size == 64 * KiB and d.stats()["growths"] == 0


def test_max_size_belongs_to_the_dict(name: str) -> None:
    """A limit set by one process (open with max_size) grows the dict for every process."""
    with shmdict.new(name, "64k") as d:
        assert d.stats()["max_size"] is None
        with shmdict.open(name, "64k", max_size="512k") as o:
            assert o.stats()["max_size"] == 512 * KiB
        fill(d, "k")  # the creator's handle grows it
        assert d.size == 512 * KiB and d.stats()["max_size"] == 512 * KiB


# ---- open() with a larger or smaller size ---------------------------------------------


def test_open_with_a_larger_size_grows_and_a_smaller_keeps(name: str) -> None:
    with shmdict.new(name, "64k") as d:
        items = every_type(d)
        with shmdict.open(name, "256k") as o:
            assert o.size == 256 * KiB and d.size == 256 * KiB
            assert all(o[k] == v for k, v in items.items())
        with shmdict.open(name, "128k") as o:
            assert o.size == 256 * KiB  # a larger dict keeps its size
        with shmdict.open(name, "256k") as o:
            assert o.size == 256 * KiB and o.stats()["growths"] == 1
        assert all(d[k] == v for k, v in items.items())
        d.check()


# ---- several processes ------------------------------------------------------------


def test_a_process_attached_before_a_growth_follows_it(name: str) -> None:
    """It sees the new size and every key from its next operation, and inserts into the new room."""
    with shmdict.new(name, "64k") as d:
        keys = fill(d, "a")
        attached_r, attached_w = os.pipe()
        grown_r, grown_w = os.pipe()

        def child() -> int:
            c = shmdict.get(name)
            assert c.size == 64 * KiB
            with pytest.raises(shmdict.Full):
                c["b-first"] = "x" * 100
            os.write(attached_w, b"a")
            assert os.read(grown_r, 1) == b"g"
            assert c.size == 512 * KiB  # the lock-free read already sees it
            assert sorted(c.get_keys()) == sorted(keys)
            assert all(c[k] == value_of(k, 100) for k in keys)
            extra = fill(c, "b")
            assert len(extra) > 4 * len(keys)
            c.check()
            return 0

        pid = start_child(child)
        assert os.read(attached_r, 1) == b"a"
        d.resize("512k")
        os.write(grown_w, b"g")
        res = wait_child(pid)
        assert res.exitcode == 0, res
        assert len(d) > 5 * len(keys) and all(d[k] == value_of(k, 100) for k in keys)
        d.check()


def _grower(name: str, w: int, n: int, seed: int) -> int:
    import random

    rng = random.Random(seed)
    d = shmdict.get(name)
    for i in range(n):
        k = f"w{w}-{i}"
        d[k] = value_of(k, rng.choice([10, 100, 700]))
        d.incr("count", 1)
        if i % 40 == 0:
            try:
                d.resize(d.size + rng.choice([1, PAGE, 3 * PAGE + 5, 64 * KiB]))
            except ValueError:
                pass  # another process grew it past that meanwhile
        if i % 97 == 0:
            d.check()
    d.check()
    return 0


def test_processes_growing_and_inserting_at_once_end_consistent(name: str) -> None:
    """Explicit resizes and automatic growths from several processes at once: exact
    counters, every item whole, check() passes in every process."""
    workers, n = 4, 500
    with shmdict.new(name, "64k", max_size="8m") as d:
        d["count"] = 0
        pids = [start_child(_grower, name, w, n, 1000 + w, alarm=60) for w in range(workers)]
        for pid in pids:
            res = wait_child(pid, 60)
            assert res.exitcode == 0, res
        assert d["count"] == workers * n
        assert len(d) == workers * n + 1
        for w in range(workers):
            for i in range(n):
                k = f"w{w}-{i}"
                v = d[k]
                assert v.startswith(k + "|"), k
        st_ = d.stats()
        assert st_["growths"] >= 2 and d.size > 64 * KiB
        assert overhead(d) == overhead(shmdict.get(name))
        d.check()
        assert run_in_child(lambda: shmdict.get(name).check()).exitcode == 0


def test_an_old_handle_keeps_working_after_many_growths(name: str) -> None:
    """64 KiB to 32 MiB in doublings: a handle used after every growth, one used only at
    the end and a process attached at the start all read, write and check()."""
    with shmdict.new(name, "64k") as d:
        idle = shmdict.get(name)  # untouched until the end: one jump across every growth
        step_r, step_w = os.pipe()
        ack_r, ack_w = os.pipe()

        def follower() -> int:
            c = shmdict.get(name)
            seen = 0
            while (b := os.read(step_r, 8)) != b"end":
                size = int(b.decode())
                assert c.size == size
                seen += 1
                c[f"child{seen}"] = size
                for j in range(seen):
                    assert c[f"parent{j}"] == j
                os.write(ack_w, b"k")
            c.check()
            return 0 if seen == 9 else 5

        pid = start_child(follower, alarm=120)
        size = 64 * KiB
        for j in range(9):
            d[f"parent{j}"] = j
            size *= 2
            d.resize(size)
            assert d.size == size
            os.write(step_w, f"{size:8d}".encode())
            assert os.read(ack_r, 1) == b"k"
        os.write(step_w, b"end")
        res = wait_child(pid, 120)
        assert res.exitcode == 0, res
        assert size == 32 * MiB and d.stats()["growths"] == 9
        assert idle.size == 32 * MiB
        assert idle["child9"] == 32 * MiB and idle["parent8"] == 8
        for i in range(20_000):  # 20 MB: most of it lies past every older mapping
            idle[f"idle{i}"] = value_of(f"idle{i}", 1000)
        assert d["idle19999"] == value_of("idle19999", 1000)
        assert idle.stats()["capacity"] > 31 * MiB
        idle.check()
        d.check()
        idle.close()


def test_threads_of_one_process_grow_while_others_read_and_write(name: str) -> None:
    """One handle, several threads: one resizes in steps while the others write and read."""
    with shmdict.new(name, "64k") as d:
        errors: list[BaseException] = []
        stop = threading.Event()

        def grow() -> None:
            try:
                size = d.size
                for _ in range(40):
                    size += 16 * KiB + 1
                    d.resize(size)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
            finally:
                stop.set()

        def work(t: int) -> None:
            try:
                i = 0
                while not stop.is_set() or i < 200:
                    k = f"t{t}-{i % 300}"
                    try:
                        d[k] = value_of(k, 50)
                    except shmdict.Full:
                        pass
                    v = d.get(k)
                    assert v is None or v == value_of(k, 50)
                    i += 1
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=grow)] + [threading.Thread(target=work, args=(t,)) for t in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors
        assert d.size == 64 * KiB + 40 * (16 * KiB + 1) and d.stats()["growths"] == 40
        d.check()


def test_a_waiter_wakes_across_a_growth(name: str) -> None:
    """A thread and a process blocked in wait() before a growth wake on a change made after
    it, through a newer mapping of the file (the futex is the file's, not an address)."""
    with shmdict.new(name, "64k") as d:
        d["key"] = "old"
        v0 = d.version("key")  # waits count from it: none misses the change, however late it starts
        ready_r, ready_w = os.pipe()

        def child() -> int:
            c = shmdict.get(name)
            os.write(ready_w, b"r")
            return 0 if c.wait("key", timeout=20, since=v0) == "new" else 7

        pid = start_child(child)
        assert os.read(ready_r, 1) == b"r"
        other = shmdict.get(name)
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(other.wait("key", timeout=20, since=v0)))
        t.start()
        time.sleep(0.1)  # (so that both most likely block before the growth; not needed to pass)
        fill(d, "pad", 100)
        for size in ("128k", "1m", "8m"):
            d.resize(size)
        d["key"] = "new"
        t.join(30)
        assert got == ["new"]
        res = wait_child(pid)
        assert res.exitcode == 0, res
        other.close()


# ---- a full filesystem ------------------------------------------------------------------


@pytest.fixture
def small_fs(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An 8 MiB tmpfs as SHMDICT_DIR (needs the right to mount: root)."""
    path = tempfile.mkdtemp(prefix="shmdict-enospc-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", path], capture_output=True, text=True)
    except OSError as e:
        os.rmdir(path)
        pytest.skip(f"cannot run mount to make a small filesystem: {e}")
    if r.returncode != 0:
        os.rmdir(path)
        pytest.skip(f"cannot mount a small tmpfs (needs root): {r.stderr.strip()}")
    monkeypatch.setenv("SHMDICT_DIR", path)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def _eat(path: str, nbytes: int) -> None:
    """Take nbytes of the filesystem with another file."""
    with open(os.path.join(path, "ballast"), "wb") as f:
        os.posix_fallocate(f.fileno(), 0, nbytes)


def test_resize_without_room_raises_enospc_and_changes_nothing(small_fs: str) -> None:
    name = unique_name()
    with shmdict.new(name, "2m") as d:
        items = every_type(d)
        keys = fill(d, "k", 300)
        before, st0 = snapshot(d), d.stats()
        with pytest.raises(OSError) as ei:
            d.resize("16m")
        assert ei.value.errno == errno.ENOSPC
        assert d.size == 2 * MiB and snapshot(d) == before
        st1 = d.stats()
        for k in ("capacity", "index_bytes", "growths", "used_bytes", "entries"):
            assert st1[k] == st0[k], k
        assert header_word(name, "size") == 2 * MiB
        assert os.path.getsize(dict_path(name)) == 2 * MiB
        d.check()
        with shmdict.get(name) as g:  # another process's view too
            assert g.size == 2 * MiB and g[keys[-1]] == value_of(keys[-1], 300)
        del d[keys[0]]
        d[keys[0]] = "back"  # still usable
        d.resize("4m")  # a growth that fits works
        assert d.size == 4 * MiB and all(d[k] == v for k, v in items.items())
        d.check()


def test_automatic_growth_without_room_raises_enospc_and_changes_nothing(small_fs: str) -> None:
    name = unique_name()
    with shmdict.new(name, "1m", max_size="32m") as d:
        _eat(small_fs, 5 * MiB + MiB // 2)  # 1.5 MiB left: room to grow to 2 MiB, not 4
        keys: list[str] = []
        n = 0
        with pytest.raises(OSError) as ei:
            while True:
                k = f"k{n}"
                d[k] = value_of(k, 300)
                keys.append(k)
                n += 1
        assert ei.value.errno == errno.ENOSPC
        assert d.size == 2 * MiB and f"k{n}" not in d and d.stats()["growths"] == 1
        assert os.path.getsize(dict_path(name)) == 2 * MiB  # the failed growth left no longer file
        assert all(d[k] == value_of(k, 300) for k in keys)
        d.check()
        del d[keys[0]]
        d[f"k{n}"] = "fits now"
        d.check()


def test_evicting_dict_evicts_when_the_filesystem_cannot_grow_it(small_fs: str) -> None:
    """A cache keeps working when /dev/shm is full: a growth that finds no room makes it evict."""
    name = unique_name()
    with shmdict.new(name, "1m", max_size="32m", evict=True) as d:
        _eat(small_fs, 5 * MiB + MiB // 2)
        for n in range(20_000):
            d[f"k{n}"] = "v" * 300  # a cache keeps working: evicts once it cannot grow
        assert d.size == 2 * MiB and d.stats()["evictions"] > 0
        d.check()


# ---- a scribbled size --------------------------------------------------------------------


def _exit_code(fn: Any) -> int:
    """Run fn in a child; fail on a signal (SIGBUS: a mapping past the file's end)."""
    res = run_in_child(fn, timeout=20)
    assert res.signal is None, f"killed by {signal.Signals(res.signal).name}"
    return res.exitcode or 0


@pytest.mark.parametrize(
    ("grown", "scribble"),
    [
        (False, lambda size: size + MiB),  # more than the file holds
        (False, lambda size: size + 100),  # not a page multiple
        (False, lambda size: 1 << 60),  # absurd
        (True, lambda size: size + PAGE),  # more than the file holds, after a growth
    ],
    ids=["past-the-file", "not-a-page", "absurd", "past-the-grown-file"],
)
def test_a_scribbled_size_is_corruption_never_sigbus(name: str, grown: bool, scribble: Any) -> None:
    """Both a handle attached before the scribble and a fresh attach get CorruptError."""
    with shmdict.new(name, "64k") as d:
        d["k"] = "v"
        if grown:
            d.resize("128k")
        size = d._info()["file_size"]
        assert os.path.getsize(dict_path(name)) == size

        def child() -> int:
            held = shmdict.get(name)
            assert held["k"] == "v"
            poke_header(name, "size", scribble(size))
            with pytest.raises(shmdict.CorruptError):
                held.get("k")
            with pytest.raises(shmdict.CorruptError):
                shmdict.get(name)
            return 0

        assert _exit_code(child) == 0


def test_a_size_scribbled_below_the_creation_size_is_corruption(name: str) -> None:
    """A handle attached before the size was scribbled below the creation size refuses it
    (CorruptError), never binding its index inside the arena."""
    with shmdict.new(name, "64k") as d:
        for n in range(50):
            d[f"k{n}"] = "v" * 300

        def child() -> int:
            held = shmdict.get(name)
            assert held["k1"] == "v" * 300
            poke_header(name, "size", 32 * KiB)
            with pytest.raises(shmdict.CorruptError):
                shmdict.get(name)  # attaching checks it against the size at creation
            with pytest.raises(shmdict.CorruptError):
                held.get("k1")  # so must a handle that follows the size
            return 0

        assert _exit_code(child) == 0


def test_a_size_scribbled_below_the_creation_size_stops_a_fresh_attach(name: str) -> None:
    with shmdict.new(name, "64k") as d:
        d["k"] = 1
        poke_header(name, "size", 32 * KiB)
        with pytest.raises(shmdict.CorruptError):
            shmdict.get(name)


# ---- a property test -------------------------------------------------------------------


class GrowthMachine(RuleBasedStateMachine):
    """set / delete / resize / filling past the size, on two handles, against a dict model."""

    @initialize(max_size=st.sampled_from([0, 256 * KiB, MiB, 300_000]), size=st.sampled_from([MIN_SIZE, 40_000, 64 * KiB]))
    def create(self, max_size: int, size: int) -> None:
        self.name = unique_name("g")
        self.d = shmdict.new(self.name, size, max_size=max_size or None)
        self.other = shmdict.get(self.name)  # a second handle, remapping on its own
        self.model: dict[str, Any] = {}
        self.limit = max_size // PAGE * PAGE  # automatic growth stops at whole pages
        self.size = size
        self.filled = 0

    def handle(self, other: bool) -> shmdict.SharedDict:
        return self.other if other else self.d

    def file_size(self) -> int:
        return int(self.d._info()["file_size"])

    @rule(k=st.integers(0, 30), v=st.one_of(st.integers(-(2**63), 2**63 - 1), st.binary(max_size=3000), st.text(max_size=200)),
          other=st.booleans())
    def set(self, k: int, v: Any, other: bool) -> None:
        key = f"k{k}"
        try:
            self.handle(other)[key] = v
        except shmdict.Full:
            # only where growth is off or at its limit: a dict with room to grow never refuses
            assert self.file_size() >= self.limit
            return
        self.model[key] = v
        self.follow_growth(self.handle(other).size)

    def follow_growth(self, now: int) -> None:
        """The size after automatic growth: doublings of the bytes in use, the last one
        cut at the limit."""
        while now != self.size:
            cur = pages(self.size)
            assert self.limit > cur, f"size {now}, model {self.size}, limit {self.limit}"
            self.size = self.limit if cur > self.limit // 2 else 2 * cur

    @rule(k=st.integers(0, 30), other=st.booleans())
    def delete(self, k: int, other: bool) -> None:
        key = f"k{k}"
        assert self.handle(other).delete(key) == (key in self.model)
        self.model.pop(key, None)

    @rule(delta=st.one_of(st.integers(-70_000, -1), st.just(0), st.integers(1, 300_000)), other=st.booleans())
    @precondition(lambda self: self.size < 2 * MiB)
    def resize(self, delta: int, other: bool) -> None:
        h = self.handle(other)
        want = self.size + delta
        if delta < 0:
            with pytest.raises((ValueError, OverflowError)):
                h.resize(want)
            return
        h.resize(want)
        self.size = want

    @rule(vlen=st.sampled_from([50, 1000]), other=st.booleans())
    @precondition(lambda self: self.filled < 2)
    def fill_up(self, vlen: int, other: bool) -> None:
        """Insert until Full: a dict with a max_size grows on the way, to exactly its limit."""
        h = self.handle(other)
        self.filled += 1
        grows = self.limit > self.file_size()
        for k in fill(h, f"f{self.filled}-", vlen, limit=200_000):
            self.model[k] = value_of(k, vlen)
        self.follow_growth(h.size)
        if grows:
            assert self.size == self.limit

    @invariant()
    def agrees(self) -> None:
        assert self.d.size == self.other.size == self.size
        assert self.file_size() == pages(self.size)
        assert self.d.stats()["entries"] == len(self.model)
        for k in ("k0", "k7", "k30"):
            assert self.other.get(k) == self.model.get(k)

    def teardown(self) -> None:
        if hasattr(self, "d"):
            assert {k: self.d[k] for k in self.d.get_keys()} == self.model
            self.d.check()
            self.other.check()
            self.other.close()
            self.d.close()


def test_growth_state_machine() -> None:
    """Random set/delete/resize/fill on two handles agree with a dict model; check() passes."""
    run_state_machine_as_test(
        GrowthMachine,
        settings=settings(
            max_examples=120 if LONG else 20,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.mark.slow
def test_growth_from_the_smallest_to_a_gigabyte_in_doublings(name: str) -> None:
    """Every doubling from 32 KiB to 1 GiB keeps a few thousand items; check() at each."""
    with shmdict.new(name, MIN_SIZE, max_size="1g") as d:
        holder = shmdict.get(name)
        n = 0
        while d.size < 1 << 30:
            size = d.size
            while d.size == size:
                d[f"k{n}"] = value_of(f"k{n}", 4000)
                n += 1
            assert holder[f"k{n - 1}"] == value_of(f"k{n - 1}", 4000)
        assert d.stats()["growths"] == 15
        holder.check()
        assert all(d[f"k{i}"] == value_of(f"k{i}", 4000) for i in range(0, n, 97))
        holder.close()
