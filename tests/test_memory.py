"""Memory: how densely a dict stores entries, and how its index grows into the arena."""

from __future__ import annotations

import os
import random
import signal
import struct
import time

import pytest
from conftest import dict_path, unique_name
from relutil import fork, wait

import shmdict
from shmdict import _lib

# Entries that fit before Full with the previous fixed split (one index slot per 48 bytes of
# dict, 85% load), by value size (0 = an int), with its 8 KiB header: a dict must never hold
# fewer than these, less what the 8 KiB the header has grown by since (the stripes' locks and
# logs, csrc/layout.h) would hold in the same proportion.
HEADER_GROWTH = 8192
FIXED_SPLIT = {
    "64k": {0: 1160, 1: 1023, 16: 853, 100: 301, 1000: 31, 4000: 9},
    "1m": {0: 18568, 1: 18568, 16: 16639, 100: 5872, 1000: 623, 4000: 194},
}


def count_until_full(d: shmdict.SharedDict, vsize: int, prefix: str = "", klen: int = 8) -> int:
    """Store keys of klen bytes with an int (vsize 0) or vsize-byte values until Full."""
    v: int | bytes = 7 if vsize == 0 else b"x" * vsize
    n = 0
    while True:
        try:
            d[f"{prefix}{n:0{klen - len(prefix)}d}"] = v
        except shmdict.Full:
            return n
        n += 1


def test_density_of_small_entries() -> None:
    """A 16 MiB dict holds 8-byte keys with int values at no more than 42 bytes per entry."""
    with shmdict.new(unique_name(), "16m") as d:
        n = count_until_full(d, 0)
        assert (16 << 20) / n <= 42.0, f"{(16 << 20) / n:.2f} bytes per entry ({n} entries)"
        st = d.stats()
        assert st["index_used"] == n and st["index_cap"] * 7 // 8 >= n
        d.check()


@pytest.mark.parametrize("size", sorted(FIXED_SPLIT))
@pytest.mark.parametrize("vsize", [0, 1, 16, 100, 1000, 4000])
def test_small_dicts_keep_their_capacity(size: str, vsize: int) -> None:
    """64 KiB and 1 MiB dicts hold at least as many items of each size as the fixed split did."""
    with shmdict.new(unique_name(), size) as d:
        n = count_until_full(d, vsize)
        fixed = FIXED_SPLIT[size][vsize]
        assert n >= fixed - fixed * HEADER_GROWTH // _lib.parse_size(size)
        assert len(d) == n
        d.check()


def test_large_items_get_the_bytes_the_index_does_not_need() -> None:
    """With large values the index stays small: most of the dict holds records."""
    with shmdict.new(unique_name(), "1m") as d:
        cap0 = d.stats()["index_cap"]
        n = count_until_full(d, 4000)
        assert d.stats()["index_cap"] == cap0  # a new dict's index: 1/32 of it, never grown here
        assert n * 4000 > 0.85 * (1 << 20)  # the rest: header, event ring, index, record headers


def test_index_grows_with_mixed_sizes_and_every_key_stays_found() -> None:
    """Keys of random sizes, some deleted, while the index grows several times: all found, check passes."""
    rng = random.Random(7)
    with shmdict.new(unique_name(), "2m") as d:
        cap0 = d.stats()["index_cap"]
        model: dict[str, bytes] = {}
        for n in range(40000):
            k = f"m{n}"
            v = b"v" * rng.choice([0, 1, 8, 30, 200])
            try:
                d[k] = v
            except shmdict.Full:
                break
            model[k] = v
            if n % 7 == 0:
                victim = rng.choice(list(model)) if n % 14 == 0 else k
                del d[victim]
                del model[victim]
        assert d.stats()["index_cap"] > 2 * cap0
        assert dict(d.items()) == model
        d.check()
        d.flush_all()  # the index goes back to its first size, the arena gets its top back
        assert d.stats()["index_cap"] == cap0 and len(d) == 0
        d.check()
        assert count_until_full(d, 4000, "b") >= FIXED_SPLIT["1m"][4000] * 2


def test_other_processes_see_a_grown_index() -> None:
    """A process that attached before the index grew finds every key the other one stored."""
    name = unique_name()
    with shmdict.new(name, "1m") as d:
        d["before"] = 1
        cap0 = d.stats()["index_cap"]

        def child() -> int:
            c = shmdict.get(name)
            for n in range(12000):
                c[f"c{n}"] = n
            return 0

        assert wait(fork(child)) == 0
        assert d.stats()["index_cap"] > cap0  # this handle rebinds at its next operation
        assert d["before"] == 1 and all(d[f"c{n}"] == n for n in range(12000))
        d.check()


def test_scan_across_index_growth_misses_no_key() -> None:
    """Scan batches interleaved with inserts that grow the index still return every stable key."""
    with shmdict.new(unique_name(), "1m") as d:  # index: 4096 slots at first
        stable = {f"s{n}" for n in range(3500)}  # at the index's first load limit
        d.set_many({k: 1 for k in stable})
        seen: set[str] = set()
        cur, grown, n = 0, 0, 0
        cap = d.stats()["index_cap"]
        while True:
            cur, keys = d.scan(cur, 100)
            seen.update(keys)
            if cur == 0:
                break
            for _ in range(100):
                d[f"new{n}"] = n
                n += 1
            c = d.stats()["index_cap"]
            grown += c != cap
            cap = c
        assert grown >= 2, grown
        assert stable <= seen


def test_an_older_file_format_is_refused() -> None:
    """A dict file written by a previous layout version raises CorruptError at attach."""
    name = unique_name()
    with shmdict.new(name, "64k") as d:
        d["k"] = 1
        with open(dict_path(name), "r+b") as f:
            f.seek(8)
            assert struct.unpack("<I", f.read(4))[0] >= 2
            f.seek(8)
            f.write(struct.pack("<I", 1))

        def child() -> int:
            try:
                shmdict.get(name)
            except shmdict.CorruptError:
                return 0
            return 1

        assert wait(fork(child)) == 0


def test_a_scribbled_index_capacity_is_corruption_not_a_crash() -> None:
    """An index_cap that would put the index outside the file is refused at attach, and by a
    handle already attached at its next operation (flush_all restores the dict)."""
    name = unique_name()
    with shmdict.new(name, "64k") as d:
        d["k"] = 1
        raw = open(dict_path(name), "rb").read()
        off = 384 + 8 * (14 + 18 + 168)  # header: gen .. free_head[], then index_cap
        cap = struct.unpack_from("<Q", raw, off)[0]
        assert cap == d.stats()["index_cap"]
        for bad in (0, 1 << 40, (64 << 10) // 8):
            with open(dict_path(name), "r+b") as f:
                f.seek(off)
                f.write(struct.pack("<Q", bad))

            def child() -> int:
                try:
                    shmdict.get(name)
                except shmdict.CorruptError:
                    return 0
                return 1

            assert wait(fork(child)) == 0
            with pytest.raises(shmdict.CorruptError):
                d["k"]
            d.flush_all()
            d["k"] = 2
            assert d["k"] == 2 and d.stats()["index_cap"] == cap
            d.check()
    assert not os.path.exists(dict_path(name))


# ---- reuse: compaction ----------------------------------------------------------------


def _churned(d: shmdict.SharedDict) -> int:
    """Fill with 100-byte values, delete every other one; returns the value bytes freed."""
    n = 0
    while True:
        try:
            d[f"k{n:08d}"] = b"v" * 100
        except shmdict.Full:
            break
        n += 1
    for i in range(0, n, 2):
        del d[f"k{i:08d}"]
    return (n + 1) // 2 * 100


def test_freed_bytes_take_large_values() -> None:
    """After deleting every other 100-byte value, 1000-byte values use at least 80% of the bytes freed."""
    with shmdict.new(unique_name(), "16m") as d:
        freed = _churned(d)
        assert d.free_space() >= 1000
        m = count_until_full(d, 1000, "big")
        assert m * 1000 >= 0.8 * freed, f"{m} values of 1000 bytes in {freed} bytes freed"
        assert all(d[f"k{i:08d}"] == b"v" * 100 for i in range(1, 2 * m, 2))
        d.check()


@pytest.mark.parametrize("vsize", [300, 1000, 10_000, 60_000, (1 << 20) // 4 - 100])
def test_freed_bytes_take_items_up_to_a_quarter_of_the_dict(vsize: int) -> None:
    """Any item size up to a quarter of the dict fits in the holes churn left (>= 80% of them)."""
    with shmdict.new(unique_name(), "1m") as d:
        freed = _churned(d)
        m = count_until_full(d, vsize, "big")
        assert m >= int(0.8 * freed) // vsize and m >= 1
        d.check()


def test_free_space_counts_what_compaction_gathers() -> None:
    """free_space() reports the item a set would store after gathering the holes, and it fits."""
    with shmdict.new(unique_name(), "1m") as d:
        _churned(d)
        fs = d.free_space()
        assert fs > 100_000
        d["x"] = b"y" * (fs - len("x"))  # free_space counts the key too
        d.check()
        assert d.free_space() < fs


def test_an_evicting_dict_compacts_only_when_the_holes_are_worth_it() -> None:
    """With eviction on, a large item evicts rather than compacting for a few small holes,
    but gathers a large amount of freed space instead of evicting live items."""
    with shmdict.new(unique_name(), "1m", evict=True) as d:
        n = 0
        while d.stats()["evictions"] == 0:  # full: the next insert had to evict
            d[f"k{n:08d}"] = b"v" * 100
            n += 1
        evicted = d.stats()["evictions"]
        for i in range(2, 7, 2):  # a few small holes: a large item evicts instead of compacting
            del d[f"k{i:08d}"]
        d["big"] = b"B" * 1000
        assert d["big"] == b"B" * 1000 and d.stats()["evictions"] > evicted
        freed = 0
        for i in range(8, n, 2):  # holes worth gathering: items take them, nothing is evicted
            freed += 100 * d.delete(f"k{i:08d}")
        evicted = d.stats()["evictions"]
        for m in range(int(0.8 * freed) // 1000):
            d[f"big{m}"] = b"B" * 1000
        assert d.stats()["evictions"] == evicted and d.stats()["compactions"] >= 1
        d.check()


def test_compaction_is_seen_by_other_processes() -> None:
    """Records moved by a compaction in one process are found at their new place by another."""
    name = unique_name()
    with shmdict.new(name, "1m") as d:
        freed = _churned(d)

        def child() -> int:
            c = shmdict.get(name)
            c["quarter"] = b"q" * (freed // 2)  # needs the holes gathered
            return 0

        assert wait(fork(child)) == 0
        assert d["quarter"] == b"q" * (freed // 2)
        assert all(d[f"k{i:08d}"] == b"v" * 100 for i in range(1, 2001, 2))
        d.check()


def test_lists_survive_compaction() -> None:
    """A list pushed to after a compaction moved it keeps every element."""
    with shmdict.new(unique_name(), "1m") as d:
        for n in range(50):
            d.rpush("L", n)
        freed = _churned(d)
        d["big"] = b"B" * (freed // 2)
        for n in range(50, 60):
            d.rpush("L", n)
        assert [d.lpop("L") for _ in range(60)] == list(range(60))
        d.check()


# ---- both bulk steps under random SIGKILLs ----------------------------------------


def _churn_forever(name: str, wfd: int, seed: int) -> int:
    """Mixed-size churn over a key space that makes the index grow and the
    free space scatter, so index rebuilds and compactions run all the time;
    every committed incr of "counter" is reported through the pipe."""
    sd = shmdict.get(name)
    rng = random.Random(seed)
    while True:
        r = rng.random()
        k = f"k{rng.randrange(3000)}"
        try:
            if r < 0.45:
                sd[k] = rng.choice([1, b"s" * rng.randrange(40), b"m" * 300, b"L" * rng.randrange(1000, 9000)])
            elif r < 0.8:
                sd.delete(k)
            elif r < 0.97:
                sd.incr("counter", 1)
                os.write(wfd, b".")
            else:
                for n in range(rng.randrange(500)):
                    sd.delete(f"k{n}")
        except shmdict.Full:
            pass


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_sigkill_during_index_growth_and_compaction(seed: int) -> None:
    """Processes killed at random instants while the index grows and compactions run leave a
    dict that passes check() and an exact counter."""
    rng = random.Random(seed)
    name = unique_name()
    with shmdict.new(name, "256k") as d:
        d["counter"] = 0
        expected, kills = 0, 0
        for _ in range(60):
            r, w = os.pipe()
            pid = fork(_churn_forever, name, w, rng.randrange(2**32), alarm=30)
            os.close(w)
            time.sleep(rng.uniform(0.002, 0.04))
            os.kill(pid, signal.SIGKILL)
            assert os.WIFSIGNALED(wait(pid))
            kills += 1
            done = 0
            while b := os.read(r, 65536):
                done += len(b)
            os.close(r)
            d.check()
            value = d["counter"]
            assert value in (expected + done, expected + done + 1), (value, expected, done)
            expected = value
            if kills % 10 == 0:
                d.flush_all()  # the index back to its first size: it grows again
                d["counter"] = expected
        st = d.stats()
        assert st["index_growths"] > 0 and st["compactions"] > 0 and st["recoveries"] > 0
