"""Reads without the lock (csrc/optread.c, csrc/seq.c): get, [], in, ttl and version
never wait for a lock holder that is not writing their key, never return a value a
writer has half written (killed mid-write, or racing with writers, deletes that shift
other keys' slots, growth and compaction), and their statistics still add up."""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import random
import signal
import struct
import time
from collections.abc import Iterator

import header_layout
import pytest
from conftest import call_with_timeout, dict_path, unique_name

import shmdict
from shmdict import _lib

NSTRIPES = 64
SEQ0 = header_layout.offset("stripes[0].seq")
STRIDE = header_layout.offset("stripes[1].seq") - SEQ0
BULK = header_layout.offset("seq_bulk")
MUTEX = header_layout.offset("lock")


def seq_words(name: str) -> tuple[int, list[int]]:
    """(seq_bulk, every stripe's sequence word) as the file holds them now."""
    with open(dict_path(name), "rb") as f:
        head = f.read(SEQ0 + STRIDE * NSTRIPES)
    return struct.unpack_from("<I", head, BULK)[0], [
        struct.unpack_from("<I", head, SEQ0 + STRIDE * s)[0] for s in range(NSTRIPES)
    ]


# ---- a stopped lock holder ------------------------------------------------------------------


def _hold_and_stop(path: str, odd_stripes: bool) -> int:
    """Take the dict's mutex as the library does (optionally making every stripe word odd,
    as a writer in the middle of its stores would), then SIGSTOP ourselves."""
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, SEQ0 + STRIDE * NSTRIPES)
    buf = (ctypes.c_char * (SEQ0 + STRIDE * NSTRIPES)).from_buffer(m)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.pthread_mutex_lock(ctypes.c_void_p(ctypes.addressof(buf) + MUTEX)) not in (0, 130):
        return 50
    if odd_stripes:
        for s in range(NSTRIPES):
            (w,) = struct.unpack_from("<I", m, SEQ0 + STRIDE * s)
            struct.pack_into("<I", m, SEQ0 + STRIDE * s, w | 1)
    os.kill(os.getpid(), signal.SIGSTOP)
    return 0


@contextlib.contextmanager
def stopped_holder(odd_stripes: bool) -> Iterator[tuple[shmdict.SharedDict, shmdict.SharedDict, int]]:
    """(owner, a handle with lock_timeout=0.1, holder pid) while a stopped process holds the lock."""
    name = unique_name()
    owner = shmdict.new(name, "1m")
    for i in range(200):
        owner[f"k{i}"] = i
    owner.set("t", "text", 100)
    d = shmdict.get(name, lock_timeout=0.1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 99
        try:
            code = _hold_and_stop(dict_path(name), odd_stripes)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), status
    try:
        yield owner, d, pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        # the next locker recovers; every word is even again and the dict is unchanged
        assert owner.get("k7") == 7 and len(owner) == 201
        owner.check()
        bulk, stripes = seq_words(name)
        assert bulk % 2 == 0 and all(w % 2 == 0 for w in stripes), (bulk, stripes)
        d.close()
        owner.close()


def test_stopped_lock_holder_does_not_block_reads() -> None:
    """A SIGSTOPped process holding the lock (not writing) blocks writes that need the dict lock,
    not get/[]/in/ttl/version/keys/scan, nor an incr of a live number (an update in place)."""
    with stopped_holder(odd_stripes=False) as (_, d, pid):
        def reads() -> None:
            t0 = time.monotonic()
            for i in range(200):
                assert d.get(f"k{i}") == i and d[f"k{i}"] == i and f"k{i}" in d
                assert d.version(f"k{i}") > 0 and d.ttl(f"k{i}") == 0
            assert d.get("missing") is None and "missing" not in d and d.ttl("missing") is None
            keys = [f"k{i}" for i in range(200)] + ["missing", "t"]
            assert d.get_many(keys) == {**{f"k{i}": i for i in range(200)}, "t": "text"}
            assert d.get("t") == "text" and 99 < d.ttl("t") <= 100
            assert sorted(d.get_keys()) == sorted([f"k{i}" for i in range(200)] + ["t"])  # keys too
            assert sorted(d.get_keys(match="k1?")) == sorted(f"k1{i}" for i in range(10))
            assert sum(1 for _ in d) == 201 and len(d.get_keys(max_count=7)) == 7  # (len(d) takes the lock)
            cur, scanned = 0, []
            while True:  # and scan batches
                cur, batch = d.scan(cur, 16)
                scanned += batch
                if not cur:
                    break
            assert sorted(scanned) == sorted(d.get_keys())
            assert time.monotonic() - t0 < 5  # no read waited for the 0.1 s lock timeout
        call_with_timeout(reads, 20)
        assert call_with_timeout(lambda: d.incr("k1", 10), 10) == 11
        assert d.get("k1") == 11
        with pytest.raises(shmdict.LockTimeout) as e:
            call_with_timeout(lambda: d.set("k1", 1), 10)
        assert e.value.holder == pid
        with pytest.raises(shmdict.LockTimeout):  # a TTL to set: the dict lock
            call_with_timeout(lambda: d.incr("k2", 1, 5), 10)


def test_reads_of_a_stripe_being_written_wait_for_the_lock() -> None:
    """While the stopped holder's stripe words are odd (a write in flight), readers do not trust
    what they see: they take the lock, and time out like any locked call."""
    with stopped_holder(odd_stripes=True) as (_, d, pid):
        for call in (lambda: d.get("k1"), lambda: d["k2"], lambda: "k3" in d, lambda: d.ttl("k4"),
                     lambda: d.get_many(["k5", "k6"])):
            with pytest.raises(shmdict.LockTimeout) as e:
                call_with_timeout(call, 10)
            assert e.value.holder == pid


# ---- a writer killed mid-write -------------------------------------------------------------

# (crash point, what the killed child does, key it writes): each stops after a store that a
# reader without the lock would otherwise see
KILLED = [
    ("incr.stored", lambda d: d.incr("n", 5, 0), "n"),  # a TTL to set (none): the dict lock
    ("incr.in_place", lambda d: d.incr("n", 5), "n"),  # under the stripe's lock alone
    ("overwrite.inplace", lambda d: d.__setitem__("n", 99), "n"),
    ("overwrite.rewritten", lambda d: d.__setitem__("s", "B" * 40), "s"),
    ("overwrite.published", lambda d: d.__setitem__("s", "C" * 300), "s"),
    ("delete.tombed", lambda d: d.delete("n"), "n"),
    # whether one delete shifts depends on the hash seed: delete until one does
    ("delete.shifted", lambda d: [d.delete(k) for k in ["n"] + [f"o{i}" for i in range(850)]], None),
    ("expire.stored", lambda d: d.expire("n", 0.001), "n"),
]


@pytest.mark.parametrize(("point", "op", "key"), KILLED, ids=[k[0] for k in KILLED])
def test_a_writer_killed_mid_write_is_never_observed(point: str, op, key: str | None) -> None:
    """A reader attached before the crash sees the value as it was (the recovery's undo),
    never the dead writer's half-done store; other keys read right throughout; the words are
    even again afterwards."""
    name = unique_name()
    with shmdict.new(name, "256k") as d:
        d["n"] = 1
        d["s"] = "A" * 40
        for i in range(850):  # crowded probe paths (83% load): a delete shifts other keys' slots
            d[f"o{i}"] = i
        reader = shmdict.get(name)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                w = shmdict.get(name)
                _lib.fault_arm(point)
                op(w)
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{point} not reached"
        bulk, stripes = seq_words(name)
        assert sum(w % 2 for w in stripes) >= 1  # the dead writer left its stripe odd
        expect = {"n": 1, "s": "A" * 40, **{f"o{i}": i for i in range(850)}}
        if key is not None:
            assert reader.get(key) == expect[key] and reader[key] == expect[key] and key in reader
            assert reader.ttl("n") == 0
            assert all(reader.get(f"o{i}") == i for i in range(850))
        else:  # the deletes before the killed one are applied, the killed one and the rest are not
            order = ["n"] + [f"o{i}" for i in range(850)]
            present = [reader.get(k) == expect[k] for k in order]
            gone = [reader.get(k) is None for k in order]
            j = present.index(True)
            assert all(gone[:j]) and all(present[j:]), (j, present.count(True))
        bulk, stripes = seq_words(name)
        assert bulk % 2 == 0 and all(w % 2 == 0 for w in stripes)
        reader.check()
        reader.close()


# ---- racing readers and writers ---------------------------------------------------------------


def _value(key: str, n: int) -> str:
    """A value that says which key and which write it belongs to, in a length that varies."""
    return f"{key}={n};" * (1 + n % 13)


def _writer(name: str, seed: int, seconds: float) -> int:
    rnd = random.Random(seed)
    d = shmdict.get(name)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        r = rnd.random()
        k = f"s{rnd.randrange(300)}"
        if r < 0.05:
            d.set_many({"pair:a": n, "pair:b": n})  # one lock hold: readers see both or neither
        elif r < 0.45:
            d[k] = _value(k, n)
        elif r < 0.6:
            d.delete(k)  # backward shifts move other keys' slots
        elif r < 0.9:
            d.incr(f"c{rnd.randrange(8)}", 1, init=0)
        else:  # new keys, big values: index growth, automatic growth, compaction
            d.set(f"g{seed}.{n}", "x" * rnd.randrange(1, 2000), 0.05)
    d.close()
    return 0


def test_readers_never_see_torn_or_wrong_values() -> None:
    """Three writers (overwrites of varying size, deletes, incr, a growing dict with
    expiring items) race one lock-free reader: every value read belongs to its key and is
    whole, counters never go backward, versions never go backward while a key lives."""
    name = unique_name()
    with shmdict.new(name, "64k", max_size="16m") as d:
        for i in range(300):
            d[f"s{i}"] = _value(f"s{i}", 0)
        seconds = 2.0
        pids = []
        for w in range(3):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                code = 1
                try:
                    code = _writer(name, w, seconds)
                finally:
                    os._exit(code)
            pids.append(pid)
        rnd = random.Random(7)
        last_count = [0] * 8
        reads = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            reads += 1
            k = f"s{rnd.randrange(300)}"
            v = d.get(k)
            if v is not None:
                head, sep, _ = v.partition(";")
                assert sep and head.startswith(k + "=") and v == _value(k, int(head.split("=")[1])), (k, v)
            c = rnd.randrange(8)
            got = d.get(f"c{c}", 0)
            assert got >= last_count[c], (c, got, last_count[c])
            last_count[c] = got
            t = d.ttl(k)
            assert t is None or t == 0
            pair = d.get_many(["pair:a", "pair:b", k])
            assert pair.get("pair:a") == pair.get("pair:b"), pair  # one snapshot, as one lock hold
            assert k not in pair or pair[k].startswith(k + "="), pair
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        s = d.stats()
        assert s["growths"] >= 1 and s["index_growths"] >= 1, s
        d.check()
        assert reads > 1000


def test_statistics_of_lock_free_reads_reach_stats() -> None:
    """Hits and misses counted in another process reach stats() when it closes its handle."""
    name = unique_name()
    with shmdict.new(name, "1m") as d:
        d["a"] = 1
        before = d.stats()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                with shmdict.get(name) as c:
                    for _ in range(10):
                        c.get("a")
                        c.get("b")
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        after = d.stats()
        assert after["hits"] - before["hits"] == 10
        assert after["misses"] - before["misses"] == 10


def _churn_keys(name: str, seconds: float) -> int:
    d = shmdict.get(name)
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n += 1
        d[f"w{n:07d}"] = n  # new keys: inserts, and now and then an index growth
        if n > 50:
            d.delete(f"w{n - 50:07d}")  # deletes: backward shifts move other keys' slots
        if n % 7 == 0:
            d.incr("w-counter", 1, init=0)  # updates in place
    return 0


@contextlib.contextmanager
def _churning(name: str, seconds: float = 2.0) -> Iterator[float]:
    """A child that inserts and deletes keys for `seconds`; yields when to stop looking."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            code = _churn_keys(name, seconds)
        finally:
            os._exit(code)
    try:
        yield time.monotonic() + seconds
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _well_formed(keys: set[str]) -> bool:
    return all(len(k) == 8 and k[0] == "w" and k[1:].isdigit() for k in keys)


def test_keys_without_the_lock_are_one_instants_keys() -> None:
    """While a writer inserts and deletes keys (moving other keys' slots, growing the index),
    get_keys() -- read without the lock whenever a pass holds still -- lists every key present
    throughout, each once, none torn, and never more than one instant holds."""
    name = unique_name()
    with shmdict.new(name, "4m") as d:
        stable = {f"s{i:05d}" for i in range(300)}
        for k in stable:
            d[k] = 1
        passes = 0
        with _churning(name) as end:
            while time.monotonic() < end:
                keys = d.get_keys()
                passes += 1
                got = set(keys)
                assert len(got) == len(keys), "a key listed twice"
                assert stable <= got, f"missing: {sorted(stable - got)[:5]}"
                moving = got - stable - {"w-counter"}
                assert _well_formed(moving), sorted(moving)[:5]
                assert len(moving) <= 51  # the writer keeps at most 51 of its keys at any instant
        assert passes > 10
        d.check()


def test_keys_take_no_lock_when_nothing_writes() -> None:
    """get_keys (with or without a pattern) and scan read without the lock when no write gets
    in its way; items (values) takes it."""
    name = unique_name()
    with shmdict.new(name, "1m") as d:
        for i in range(100):
            d[f"k{i}"] = i
        base = d.stats()["lock_acquisitions"]
        for _ in range(20):
            assert len(d.get_keys()) == 100 and len(d.get_keys(match="k1*")) == 11
        cur, n = 0, 0
        while True:
            cur, batch = d.scan(cur, 10, match="k*")
            n += len(batch)
            if not cur:
                break
        assert n == 100
        assert d.stats()["lock_acquisitions"] - base == 1  # the stats() call itself
        d.items()
        assert d.stats()["lock_acquisitions"] - base == 3


def test_a_scan_without_the_lock_misses_no_key_present_throughout() -> None:
    """While a writer inserts and deletes other keys (moving slots, growing the index), a full
    scan -- its batches read without the lock whenever they hold still -- returns every key
    present throughout, none torn."""
    name = unique_name()
    with shmdict.new(name, "4m") as d:
        stable = {f"s{i:05d}" for i in range(400)}
        for k in stable:
            d[k] = 1
        scans = 0
        with _churning(name) as end:
            while time.monotonic() < end:
                cur, seen = 0, []
                while True:
                    cur, batch = d.scan(cur, 25)
                    seen += batch
                    if not cur:
                        break
                scans += 1
                assert stable <= set(seen), f"missing: {sorted(stable - set(seen))[:5]}"
                assert _well_formed(set(seen) - stable - {"w-counter"})
        assert scans > 3
