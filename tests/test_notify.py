"""Change notification: wait / version / watch, their asyncio forms, and
their behaviour with dead, stopped and interrupted processes."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

import shmdict
from shmdict import Event, _lib

from conftest import run_in_child


def _later(fn, delay=0.05):
    """Run fn in a forked child after delay seconds; returns the pid."""
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(delay)
            fn()
        finally:
            os._exit(0)
    return pid


def _reap(pid):
    os.waitpid(pid, 0)


@pytest.mark.parametrize(
    ("setup", "change", "expected"),
    [
        (lambda d: None, lambda d: d.set("k", "new"), "new"),
        (lambda d: d.set("k", 1), lambda d: d.incr("k", 41), 42),
        (lambda d: d.set("k", 1), lambda d: d.delete("k"), None),
        (lambda d: d.set("k", 1), lambda d: d.flush_all(), None),
        (lambda d: d.set("k", 1), lambda d: d.expire("k", 100), 1),
        (lambda d: d.set("k", b"x"), lambda d: d.pop("k"), None),
    ],
    ids=["set", "incr", "delete", "flush", "expire-call", "pop"],
)
def test_wait_returns_on_each_kind_of_change_from_another_process(d, setup, change, expected):
    """wait() returns the new value (or None) when another process changes the key."""
    setup(d)
    pid = _later(lambda: change(shmdict.get(d.name)))
    try:
        assert d.wait("k", timeout=10) == expected
    finally:
        _reap(pid)


def test_wait_returns_none_when_the_key_expires(d):
    """A key with a TTL wakes its waiter when it expires, with no writer involved."""
    d.set("k", 1, exptime=0.1)
    t0 = time.monotonic()
    assert d.wait("k", timeout=5) is None
    assert time.monotonic() - t0 < 2


def test_wait_times_out(d):
    """wait() raises TimeoutError when nothing changes in time."""
    d["k"] = 1
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        d.wait("k", timeout=0.1)
    assert 0.09 <= time.monotonic() - t0 < 2


def test_since_never_misses_a_change_made_before_waiting(d):
    """A change between version() and wait(since=...) returns at once."""
    d["k"] = 1
    v = d.version("k")
    run_in_child(lambda: shmdict.get(d.name).set("k", 2))
    assert d.wait("k", timeout=0, since=v) == 2


def test_versions_change_with_every_change_and_mark_missing_keys(d):
    """A missing key's version is 2**32 or more (none of a present key's) and any version differs after each change."""
    assert d.version("k") >= 2**32
    seen = set()
    for op in (lambda: d.set("k", 1), lambda: d.incr("k"), lambda: d.expire("k", 5), lambda: d.set("k", "s")):
        op()
        v = d.version("k")
        assert v != 0 and v not in seen
        seen.add(v)
    d.delete("k")
    assert d.version("k") >= 2**32
    d.set("k", 1)
    assert d.version("k") not in seen  # re-created: no old version repeats


def test_wait_arguments_are_checked(d):
    """Bad key, timeout or since raise before waiting."""
    with pytest.raises(TypeError):
        d.wait(1)
    with pytest.raises(ValueError):
        d.wait("k", timeout=-1)
    with pytest.raises(ValueError):
        d.wait("k", timeout=float("nan"))
    with pytest.raises(ValueError):
        d.wait("k", since=-1)


def test_watch_reports_changes_in_order(d):
    """watch() yields (op, key) for each change, in the order applied."""
    w = d.watch()
    d["a"] = 1
    d.incr("a")
    d.set("b", "x")
    del d["a"]
    d.flush_all()
    assert [next(w) for _ in range(5)] == [
        ("set", "a"),
        ("set", "a"),
        ("set", "b"),
        ("delete", "a"),
        ("flush", None),
    ]


def test_watch_reports_reclaimed_expiry(d):
    """An expired item that gets reclaimed is reported as an expire event."""
    d.set("t", 1, exptime=10)
    w = d.watch(timeout=0.2)
    _lib.clock_shift(11)
    assert d.delete("t") is False  # it had expired: reclaimed, not deleted
    assert list(w) == [("expire", "t")]


def test_watch_filters_with_a_glob_and_starts_now(d):
    """watch(match) keeps matching keys only and skips changes made before it started."""
    d["user:0"] = 0
    w = d.watch("user:*", timeout=0.2)
    d["user:1"] = 1
    d["item:1"] = 1
    d["user:2"] = 2
    assert list(w) == [("set", "user:1"), ("set", "user:2")]


def test_watch_keeps_waiting_past_events_that_do_not_match(d):
    """A batch made only of non-matching events is not the end of a watch with a timeout:
    the watch keeps waiting for the rest of its timeout (it used to end at once)."""
    w = d.watch("job:*", timeout=5)
    d["other"] = 1  # the only event pending when the watch first looks
    t = threading.Timer(0.3, d.__setitem__, ("job:a", 1))
    t.start()
    try:
        assert next(w) == ("set", "job:a")
    finally:
        t.cancel()


def test_watch_timeout_counts_from_the_last_matching_event(d):
    """Non-matching events do not extend the watch past its timeout."""
    w = d.watch("job:*", timeout=0.3)
    done = threading.Event()
    t0 = time.monotonic()

    def noise():  # a non-matching change every 20 ms, for up to 3 s
        while not done.is_set() and time.monotonic() - t0 < 3.0:
            d["other"] = 1
            time.sleep(0.02)

    th = threading.Thread(target=noise)
    th.start()
    try:
        assert list(w) == []
        assert time.monotonic() - t0 < 2.5  # ended by its own timeout, not by the noise stopping
    finally:
        done.set()
        th.join()


def test_watch_from_another_process(d):
    """A watcher in this process sees changes made by another process."""
    w = d.watch(timeout=5)
    pid = _later(lambda: [shmdict.get(d.name).set(f"k{i}", i) for i in range(3)])
    try:
        got = [next(w) for _ in range(3)]
    finally:
        _reap(pid)
    assert got == [("set", "k0"), ("set", "k1"), ("set", "k2")]


def test_slow_watcher_gets_lost_event_with_the_count(name):
    """A watcher that falls behind the ring gets ("lost", n), then the newest events."""
    d = shmdict.new(name, "1m", events=16)
    try:
        w = d.watch(timeout=0.1)
        for i in range(200):
            d[f"k{i:03d}"] = i
        evs = list(w)
        assert evs[0].op == "lost" and evs[0].key > 0
        kept = [e.key for e in evs[1:]]
        assert kept == [f"k{i:03d}" for i in range(200 - len(kept), 200)]
        assert evs[0].key + len(kept) == 200  # nothing silently skipped
    finally:
        d.close()


def test_events_zero_disables_the_ring(name):
    """A dict created with events=0 cannot be watched, but wait() still works."""
    d = shmdict.new(name, "64k", events=0)
    try:
        with pytest.raises(ValueError):
            next(d.watch(timeout=0))
        d["k"] = 1
        pid = _later(lambda: shmdict.get(name).set("k", 2))
        try:
            assert d.wait("k", timeout=10) == 2
        finally:
            _reap(pid)
    finally:
        d.close()


def test_killed_waiter_leaves_nothing_behind(d):
    """A waiter SIGKILLed mid-wait neither blocks writers nor other waiters."""
    d["k"] = 0
    pid = os.fork()
    if pid == 0:
        try:
            shmdict.get(d.name).wait("k", timeout=30)
        finally:
            os._exit(0)
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    _reap(pid)
    for i in range(100):
        d["k"] = i
    d.check()
    pid = _later(lambda: shmdict.get(d.name).set("k", "again"))
    try:
        assert d.wait("k", timeout=10) == "again"
    finally:
        _reap(pid)


def test_writers_are_not_slowed_by_a_stopped_watcher(d):
    """A SIGSTOPped watcher does not block writers; the ring just overwrites."""
    pid = os.fork()
    if pid == 0:
        try:
            for _ in shmdict.get(d.name).watch():
                pass
        finally:
            os._exit(0)
    try:
        time.sleep(0.2)
        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        for i in range(20000):
            d[f"k{i % 100}"] = i
        assert time.monotonic() - t0 < 20  # finishes: nothing waits for the reader
        d.check()
    finally:
        os.kill(pid, signal.SIGKILL)
        _reap(pid)


def test_close_wakes_a_waiting_thread(d):
    """Closing a handle makes a thread waiting on it raise ValueError promptly."""
    g = shmdict.get(d.name)
    result = []

    def waiter():
        try:
            g.wait("k", timeout=30)
        except ValueError as e:
            result.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    g.close()
    t.join(5)
    assert not t.is_alive() and result


def test_signal_interrupts_a_wait(d):
    """A signal handler that raises interrupts wait() promptly."""

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        t0 = time.monotonic()
        with pytest.raises(Interrupted):
            d.wait("k", timeout=30)
        assert time.monotonic() - t0 < 5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_rolled_back_operation_leaves_no_event(d):
    """An operation killed after appending its event is rolled back with its event."""
    w = d.watch(timeout=0.2)

    def child():
        _lib.fault_arm("event.appended")
        shmdict.get(d.name).set("ghost", 1)

    assert run_in_child(child).killed
    d.set("real", 1)  # recovers, then appends its own event
    assert list(w) == [("set", "real")]
    assert "ghost" not in d
    d.check()


def test_await_change_does_not_block_the_loop(d):
    """await_change() returns the new value while the event loop keeps running."""

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        tk = asyncio.create_task(ticker())
        pid = _later(lambda: shmdict.get(d.name).set("k", "v"), delay=0.3)
        try:
            value = await d.await_change("k", timeout=10)
        finally:
            _reap(pid)
            tk.cancel()
        return value, ticks

    value, ticks = asyncio.run(main())
    assert value == "v" and ticks > 5


def test_await_change_times_out(d):
    """await_change() raises TimeoutError after its timeout."""

    async def main():
        await d.await_change("k", timeout=0.1)

    with pytest.raises(TimeoutError):
        asyncio.run(main())


def test_awatch_yields_events(d):
    """async for over awatch() yields events in order and ends after its timeout."""

    async def main():
        pid = _later(lambda: [shmdict.get(d.name).set(f"a{i}", i) for i in range(3)], delay=0.1)
        try:
            return [ev async for ev in d.awatch("a*", timeout=1)]
        finally:
            _reap(pid)

    assert asyncio.run(main()) == [Event("set", "a0"), Event("set", "a1"), Event("set", "a2")]
