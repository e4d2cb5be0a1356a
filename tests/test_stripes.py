"""Updates in place under one stripe's lock (csrc/seq.c, csrc/kv.c incr_in_place).

An ``incr`` of a live number that sets no TTL takes only its key's stripe
lock, not the dict lock, and logs its two stores (the number, then the type
word with the version) in the stripe's own undo log. These tests watch the
stripes from outside (their words, read from the file) and check what the
design promises: exact counts with writers of every kind racing, a stopped
updater that blocks only its own stripe (and only for as long as the lock
timeout), a killed updater whose half-done update is undone by whoever takes
the stripe next, events and waiters that still hear of every change.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import signal
import struct
import threading
import time
from collections.abc import Iterator

import pytest
import header_layout
from conftest import call_with_timeout, dict_path, run_in_child, start_child, unique_name, wait_child

import shmdict
from shmdict import _lib

NSTRIPES = 64
STRIPE0 = header_layout.offset("stripes")
STRIDE = header_layout.offset("stripes[1]") - STRIPE0
SEQ = header_layout.offset("stripes[0].seq") - STRIPE0
ULOG_N = header_layout.offset("stripes[0].ulog_n") - STRIPE0
GEN = header_layout.offset("stripes[0].gen") - STRIPE0
HEAD = STRIPE0 + STRIDE * NSTRIPES  # the bytes that hold every stripe


def stripes(name: str) -> list[tuple[int, int, int]]:
    """(seq, ulog_n, gen) of every stripe, as the file holds them now."""
    with open(dict_path(name), "rb") as f:
        head = f.read(HEAD)
    out = []
    for s in range(NSTRIPES):
        base = STRIPE0 + STRIDE * s
        out.append((struct.unpack_from("<I", head, base + SEQ)[0], struct.unpack_from("<Q", head, base + ULOG_N)[0],
                    struct.unpack_from("<Q", head, base + GEN)[0]))
    return out


def stripe_of(d: shmdict.SharedDict, key: str) -> int:
    """The stripe whose update count moves when key is incremented in place (by 0)."""
    before = [g for _, _, g in stripes(d.name)]
    d.incr(key, 0)
    moved = [s for s, (_, _, g) in enumerate(stripes(d.name)) if g != before[s]]
    assert len(moved) == 1, moved
    return moved[0]


def keys_by_stripe(d: shmdict.SharedDict, n: int = 400) -> dict[int, list[str]]:
    """n integer keys, grouped by stripe."""
    by: dict[int, list[str]] = {}
    for i in range(n):
        d[f"k{i}"] = i
        by.setdefault(stripe_of(d, f"k{i}"), []).append(f"k{i}")
    return by


def settled(name: str) -> bool:
    """Every stripe word even and every stripe log empty."""
    return all(seq % 2 == 0 and ulog == 0 for seq, ulog, _ in stripes(name))


# ---- which incr takes which path ------------------------------------------------------------


def test_incr_of_a_live_number_runs_in_place(d: shmdict.SharedDict) -> None:
    """A live number with no TTL to set: its stripe's count moves and the dict's lock is not
    taken; a new key, a TTL to set, or a string goes through the dict lock."""
    d["n"] = 1
    s = stripe_of(d, "n")
    locks = d.stats()["lock_acquisitions"]
    before = stripes(d.name)[s][2]
    for _ in range(100):
        d.incr("n")
    assert d["n"] == 101 and stripes(d.name)[s][2] == before + 100
    d.incr("n", 0.5)  # an int becomes a float in place
    assert d["n"] == 101.5 and isinstance(d["n"], float)
    assert d.stats()["lock_acquisitions"] - locks <= 3  # (the stats calls themselves)
    gens = [g for _, _, g in stripes(d.name)]
    d.incr("n", 1, 100)  # a TTL to set
    d.incr("new", 1, init=0)  # a missing key
    d.set("s", "text")
    with pytest.raises(TypeError):
        d.incr("s")
    assert [g for _, _, g in stripes(d.name)] == gens
    assert d["n"] == 102.5 and 99 < d.ttl("n") <= 100 and d["new"] == 1
    assert settled(d.name)


def test_an_expired_number_is_not_incremented_in_place(d: shmdict.SharedDict) -> None:
    """An expired key is missing: incr with init creates it anew (through the dict lock)."""
    d.set("n", 41, 0.05)
    time.sleep(0.1)
    assert d.incr("n", 1, init=0) == 1
    with pytest.raises(KeyError):
        d.incr("gone", 1)


def test_versions_move_with_every_update_in_place(d: shmdict.SharedDict) -> None:
    """version() moves by one per incr in place, and cas against a value read before an
    incr fails."""
    d["n"] = 0
    v0 = d.version("n")
    for i in range(1, 6):
        d.incr("n")
        assert d.version("n") == v0 + i
    seen = d["n"]
    d.incr("n")
    assert not d.cas("n", seen, 100)  # the incr moved it
    assert d.cas("n", d["n"], 100) and d["n"] == 100


# ---- a stopped updater --------------------------------------------------------------------


def _hold_stripe_and_stop(path: str, s: int) -> int:
    """Take stripe s's mutex as an updater does, then SIGSTOP ourselves."""
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, HEAD)
    buf = (ctypes.c_char * HEAD).from_buffer(m)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.pthread_mutex_lock(ctypes.c_void_p(ctypes.addressof(buf) + STRIPE0 + STRIDE * s)) not in (0, 130):
        return 50
    os.kill(os.getpid(), signal.SIGSTOP)
    return 0


@contextlib.contextmanager
def stopped_updater(d: shmdict.SharedDict, s: int) -> Iterator[int]:
    pid = start_child(_hold_stripe_and_stop, dict_path(d.name), s)
    try:
        deadline = time.monotonic() + 10
        while True:
            _, status = os.waitpid(pid, os.WUNTRACED | os.WNOHANG)
            if status and os.WIFSTOPPED(status):
                break
            assert time.monotonic() < deadline, "the holder never stopped"
            time.sleep(0.01)
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
        wait_child(pid)


def test_a_stopped_updater_blocks_only_its_stripe_and_only_until_the_timeout(d: shmdict.SharedDict) -> None:
    by = keys_by_stripe(d)
    s = max(by, key=lambda k: len(by[k]))
    mine, others = by[s], [k for t, ks in by.items() if t != s for k in ks]
    values = {k: d[k] for k in mine + others}
    g = shmdict.get(d.name, lock_timeout=0.2)
    try:
        with stopped_updater(d, s):
            def work() -> None:
                t0 = time.monotonic()
                for k in others:  # other stripes: in place, as if nothing happened
                    assert g.incr(k) == values[k] + 1
                for k in mine:  # the stripe's word is even: reads need no lock
                    assert g[k] == values[k] and k in g and g.version(k) > 0
                d2 = {k: g.get(k) for k in mine}
                assert d2 == {k: values[k] for k in mine}
                g["elsewhere"] = "fine"  # a write that takes no stripe of the stopped one's
                assert time.monotonic() - t0 < 5
            call_with_timeout(work, 20)
            for call in (lambda: g.incr(mine[0]), lambda: g.set(mine[0], 5), lambda: g.delete(mine[0]),
                         lambda: g.items(), lambda: g.check()):
                t0 = time.monotonic()
                with pytest.raises(shmdict.LockTimeout):
                    call_with_timeout(call, 10)
                assert time.monotonic() - t0 < 3  # the lock timeout, not forever
            assert g.get(mine[0]) == values[mine[0]]
        # the holder was SIGKILLed: its stripe comes back EOWNERDEAD and works again
        assert call_with_timeout(lambda: g.incr(mine[0]), 10) == values[mine[0]] + 1
        assert g.set(mine[1], -1) is None and g[mine[1]] == -1
        g.check()
        assert settled(d.name)
    finally:
        g.close()


def _poison_stripe(path: str, s: int) -> int:
    """Leave stripe s's mutex unrecoverable: lock it after its owner died, unlock without
    marking it consistent (what a buggy or killed-mid-recovery locker does)."""
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, HEAD)
    buf = (ctypes.c_char * HEAD).from_buffer(m)
    libc = ctypes.CDLL(None, use_errno=True)
    mu = ctypes.c_void_p(ctypes.addressof(buf) + STRIPE0 + STRIDE * s)
    if libc.pthread_mutex_lock(mu) != 130:  # EOWNERDEAD: the child that locked it is gone
        return 51
    return 0 if libc.pthread_mutex_unlock(mu) == 0 else 52


def _lock_and_die(path: str, s: int) -> int:
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, HEAD)
    buf = (ctypes.c_char * HEAD).from_buffer(m)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.pthread_mutex_lock(ctypes.c_void_p(ctypes.addressof(buf) + STRIPE0 + STRIDE * s))
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


def test_an_unrecoverable_stripe_mutex_is_refused_then_repaired(d: shmdict.SharedDict) -> None:
    """A stripe mutex that can never be taken again makes the calls on its keys fail with the
    lock-is-unusable error (nothing changed, the other stripes unaffected); shmdict.repair
    re-initialises it and every item is still there."""
    by = keys_by_stripe(d)
    s = max(by, key=lambda k: len(by[k]))
    mine, other = by[s][0], next(k for t, ks in by.items() if t != s for k in ks)
    before = {k: d[k] for ks in by.values() for k in ks}
    assert run_in_child(_lock_and_die, dict_path(d.name), s).signal == signal.SIGKILL
    assert run_in_child(_poison_stripe, dict_path(d.name), s).exitcode == 0
    for call in (lambda: d.incr(mine), lambda: d.set(mine, 1), lambda: d.items(), lambda: d.flush_all()):
        with pytest.raises(shmdict.Error, match="unusable"):
            call_with_timeout(call, 10)
    assert d.incr(other) == before[other] + 1  # another stripe: in place as ever
    assert d[mine] == before[mine]  # reads take no lock
    assert shmdict.repair(d.name) is True
    assert d.incr(mine) == before[mine] + 1
    before[mine] += 1
    before[other] += 1
    assert {k: d[k] for k in before} == before
    d.check()
    assert shmdict.repair(d.name) is False  # usable now: nothing to do


# ---- a killed updater ---------------------------------------------------------------------


def _incr_armed(name: str, key: str, n: int) -> None:
    h = shmdict.get(name)
    _lib.fault_arm("store", n)
    h.incr(key, 5)
    _lib.fault_arm(None)


def _count_stores(d: shmdict.SharedDict, key: str) -> int:
    _lib.fault_arm("store", 0)
    try:
        d.incr(key, 0)
        return _lib.fault_stores()
    finally:
        _lib.fault_arm(None)


# What comes next after the kill: each takes the stripe by another way, and repairs it.
NEXT = {
    "incr in place": lambda h, k: h.incr(k, 1),
    "locked read": lambda h, k: h.get_stale(k),
    "locked write": lambda h, k: h.set(k + "-neighbour", 1),
    "check": lambda h, k: h.check(),
    "lock-free read": lambda h, k: h.get(k),
}


@pytest.mark.parametrize("after", list(NEXT))
def test_a_killed_updater_is_undone_by_whoever_comes_next(d: shmdict.SharedDict, after: str) -> None:
    """Killed after each of its stores, an update in place is wholly applied or not at all:
    the value and the version move together, the next taker of the stripe repairs it, and
    every word is settled afterwards."""
    d["n"] = 10
    d.set("t", "other", 100)
    total = _count_stores(d, "n")
    assert total >= 6  # the two logged stores, their log entries, the commit
    for n in range(1, total + 1):
        d["n"] = 10
        v0 = d.version("n")
        res = run_in_child(_incr_armed, d.name, "n", n)
        assert res.signal == signal.SIGKILL, (n, res)
        h = shmdict.get(d.name, lock_timeout=5)
        try:
            got = call_with_timeout(lambda: NEXT[after](h, "n"), 10)
            value, version = h.get("n"), h.version("n")
            bumped = 1 if after == "incr in place" else 0
            assert (value, version) in ((10 + bumped, v0 + bumped), (15 + bumped, v0 + 1 + bumped)), (n, value, version)
            if after == "locked read":
                assert got[0] in (10, 15)
            h.check()
            assert h["t"] == "other"
            h.incr("n")  # and it is usable in place again
            assert settled(d.name), (n, stripes(d.name))
        finally:
            h.close()


def test_a_scribbled_stripe_log_is_refused_not_replayed(d: shmdict.SharedDict) -> None:
    """A stripe log left with a count whose stamp is not its gen's is corruption: the dict
    says so (CorruptError) instead of writing old words back; flush_all clears it."""
    d["n"] = 10
    s = stripe_of(d, "n")
    d.incr("n", 1)  # the log's entries now name n's words (with their old values)
    with open(dict_path(d.name), "r+b") as f:
        off = STRIPE0 + STRIDE * s
        f.seek(off + SEQ)
        f.write(struct.pack("<I", 1))  # as a dead updater leaves it: odd
        f.seek(off + ULOG_N)
        f.write(struct.pack("<Q", (0xDEAD << 32) | 2))
    with pytest.raises(shmdict.CorruptError):
        d.set("n", 5)
    with pytest.raises(shmdict.CorruptError):
        d.get("n")
    d.flush_all()
    d["n"] = 1
    assert d.incr("n") == 2 and settled(d.name)


# ---- racing -------------------------------------------------------------------------------


def _hammer(name: str, keys: list[str], rounds: int) -> None:
    h = shmdict.get(name)
    for _ in range(rounds):
        for k in keys:
            h.incr(k)


def _churn(name: str, seconds: float) -> None:
    """Writes of every kind through the dict lock: inserts, deletes (backward shifts), big
    values (compactions, growth), a flush of another dict's worth of keys, reads of values."""
    h = shmdict.get(name)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        h[f"churn{n % 500}"] = "x" * (n % 300)
        if n % 3 == 0:
            h.delete(f"churn{(n * 7) % 500}")
        if n % 97 == 0:
            h.items()
            h.get_many([f"c{i}" for i in range(8)])
        if n % 501 == 0:
            h.check()


def test_racing_updates_in_place_lose_nothing(name: str) -> None:
    """Four processes increment shared and private counters in place while another writes
    through the dict lock (inserts, deletes, compactions, index growth, scans): every
    increment is there at the end."""
    with shmdict.new(name, "256k", max_size="4m") as d:
        shared = [f"c{i}" for i in range(8)]
        for k in shared:
            d[k] = 0
        own = {w: [f"w{w}-{i}" for i in range(16)] for w in range(4)}
        for ks in own.values():
            for k in ks:
                d[k] = 0
        rounds = 300
        churn = start_child(_churn, name, 3.0, alarm=60)
        kids = [start_child(_hammer, name, shared + own[w], rounds, alarm=60) for w in range(4)]
        for pid in kids + [churn]:
            res = wait_child(pid, 60)
            assert res.exitcode == 0, res
        assert {k: d[k] for k in shared} == {k: 4 * rounds for k in shared}
        assert all(d[k] == rounds for ks in own.values() for k in ks)
        d.check()
        assert settled(name)


def _kill_loop(name: str, keys: list[str]) -> None:
    h = shmdict.get(name)
    while True:
        for k in keys:
            h.incr(k)


def test_updaters_sigkilled_at_random_lose_at_most_their_last_increment(name: str) -> None:
    """Processes incrementing four counters round-robin in place, SIGKILLed at random
    instants: every increment is applied wholly or not at all -- each counter's version moved
    exactly as often as its value, and the counters keep the round-robin's order."""
    with shmdict.new(name, "1m") as d:
        keys = [f"c{i}" for i in range(4)]
        for k in keys:
            d[k] = 0
        v0 = {k: d.version(k) for k in keys}
        kills = 0
        for _ in range(25):
            pid = start_child(_kill_loop, name, keys, alarm=30)
            time.sleep(0.002 + (kills % 7) * 0.003)
            os.kill(pid, signal.SIGKILL)
            wait_child(pid)
            kills += 1
        # each kill may leave one update half done: undone by the next taker of its stripe
        vals = call_with_timeout(lambda: [d[k] for k in keys], 10)
        assert all(d.version(k) - v0[k] == v for k, v in zip(keys, vals)), (vals, [d.version(k) - v0[k] for k in keys])
        # each run adds 1 to a prefix of c0..c3 more than to the rest
        assert vals == sorted(vals, reverse=True) and vals[0] - vals[-1] <= kills, vals
        assert vals[-1] > 0
        d.check()
        assert settled(name)


# ---- events and waiters -------------------------------------------------------------------


def test_a_waiter_is_woken_by_an_update_in_place(d: shmdict.SharedDict) -> None:
    d["n"] = 0
    v = d.version("n")

    def bump() -> None:
        time.sleep(0.2)
        h = shmdict.get(d.name)
        h.incr("n")
        h.close()

    pid = start_child(bump)
    t0 = time.monotonic()
    assert d.wait("n", since=v, timeout=5) is not None
    assert time.monotonic() - t0 < 3
    assert d["n"] == 1
    wait_child(pid)


def test_a_watcher_gets_every_event_of_updates_made_while_it_listens(d: shmdict.SharedDict) -> None:
    """While a watcher listens, incr goes through the dict lock and appends its event."""
    d["n"] = 0
    d.incr("n")  # nobody listens yet: in place, counted
    w = d.watch("n", timeout=2)

    def later() -> None:
        time.sleep(0.2)
        h = shmdict.get(d.name)
        for _ in range(5):
            h.incr("n")
        h.close()

    t = threading.Thread(target=later)
    t.start()
    sets = []
    for e in w:
        if e.op == "set":
            sets.append(e)
        if len(sets) == 5:
            break
    t.join()
    assert sets == [shmdict.Event("set", "n")] * 5
    assert d["n"] == 6
