"""The extra operations under contention from several processes."""

from __future__ import annotations

import os
import random
import time

import pytest
from ops_support import exit_code, fork, join, killed, sd, uname  # noqa: F401

import shmdict

NPROC = 4


def _barrier(d: shmdict.SharedDict, n: int) -> None:
    d.incr("ready", init=0)
    deadline = time.monotonic() + 20
    while d["ready"] < n:
        if time.monotonic() > deadline:
            raise TimeoutError("barrier")
        time.sleep(0.001)


def test_cas_loop_never_loses_an_update() -> None:
    """Concurrent read-modify-cas loops on one str counter lose no update."""
    name = uname()
    with shmdict.new(name, "1m") as d:
        d["c"] = "0"

        def worker() -> int:
            d = shmdict.get(name)
            _barrier(d, NPROC)
            for _ in range(300):
                while True:
                    cur = d["c"]
                    if d.cas("c", cur, str(int(cur) + 1)):
                        break
            return 0

        pids = [fork(worker) for _ in range(NPROC)]
        assert [exit_code(join(p)) for p in pids] == [0] * NPROC
        assert d["c"] == str(NPROC * 300)
        d.check()


def test_limit_admits_exactly_capacity_across_processes() -> None:
    """Many processes hitting one limit are admitted exactly rate + burst times in total."""
    name = uname()
    rate, burst, per = 50, 13, 3600.0  # refill: one request per 72 s, none during the test
    with shmdict.new(name, "1m") as d:

        def worker() -> int:
            d = shmdict.get(name)
            _barrier(d, NPROC)
            for _ in range(60):
                allowed, remaining, reset = d.limit("ip", rate, per, burst)
                assert remaining >= 0 and reset > 0
                if allowed:
                    d.incr("admitted", init=0)
            return 0

        pids = [fork(worker) for _ in range(NPROC)]
        assert [exit_code(join(p)) for p in pids] == [0] * NPROC
        assert d["admitted"] == rate + burst
        assert d.limit("ip", rate, per, burst)[0] is False
        d.check()


def test_lock_serialises_read_modify_write() -> None:
    """A non-atomic get/set inside d.lock() from many processes loses no update."""
    name = uname()
    with shmdict.new(name, "1m") as d:
        d["n"] = 0

        def worker() -> int:
            d = shmdict.get(name)
            _barrier(d, NPROC)
            for _ in range(100):
                with d.lock("counter", timeout=20):
                    v = d["n"]
                    if random.random() < 0.1:
                        time.sleep(0.0005)
                    d["n"] = v + 1
            return 0

        pids = [fork(worker) for _ in range(NPROC)]
        assert [exit_code(join(p)) for p in pids] == [0] * NPROC
        assert d["n"] == NPROC * 100


def test_lock_released_when_holder_dies(sd: shmdict.SharedDict) -> None:
    """A lock whose holder is SIGKILLed is free again at once."""

    def holder() -> int:
        lk = sd.lock("job")
        assert lk.acquire()
        sd["held"] = 1
        os.kill(os.getpid(), 9)
        return 1

    pid = fork(holder)
    assert killed(join(pid))
    assert sd["held"] == 1
    lk = sd.lock("job", timeout=2)
    assert lk.acquire(timeout=2)
    lk.release()


def test_lock_timeout_and_api(sd: shmdict.SharedDict) -> None:
    """Timeouts raise TimeoutError in with, return False from acquire; release checks ownership."""
    a, b = sd.lock("x", timeout=0.05), sd.lock("x", timeout=0.05)
    assert not a.locked()
    with a:
        assert a.locked() and b.locked()
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            with b:
                pass
        assert time.monotonic() - t0 >= 0.05
        assert b.acquire(blocking=False) is False
        assert b.acquire(timeout=0.01) is False
        with pytest.raises(RuntimeError):
            a.acquire()
        assert sd.lock("other").acquire(blocking=False)  # names are independent
    assert not b.locked()
    with pytest.raises(RuntimeError):
        a.release()
    with pytest.raises(ValueError):
        sd.lock("")
    with pytest.raises(TypeError):
        sd.lock("x", timeout="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        b.acquire(blocking=False, timeout=1)


def test_lock_waits_until_release_in_another_process(sd: shmdict.SharedDict) -> None:
    """A blocked acquire returns once the holder in another process releases."""

    def holder() -> int:
        with sd.lock("w"):
            sd["in"] = 1
            time.sleep(0.3)
        return 0

    pid = fork(holder)
    while sd.get("in") != 1:
        time.sleep(0.001)
    t0 = time.monotonic()
    with sd.lock("w", timeout=10):
        waited = time.monotonic() - t0
    assert exit_code(join(pid)) == 0
    assert waited > 0.05


def test_get_or_set_calls_factory_exactly_once() -> None:
    """Processes that miss one key together make exactly one factory call and all see its value."""
    name = uname()
    n = 6
    with shmdict.new(name, "1m") as d:

        def worker() -> int:
            d = shmdict.get(name)
            _barrier(d, n)

            def factory() -> str:
                d.incr("calls", init=0)
                time.sleep(0.2)
                return f"made-by-{os.getpid()}"

            v = d.get_or_set("page", factory, exptime=60)
            d.set(f"saw-{os.getpid()}", v)
            return 0

        pids = [fork(worker) for _ in range(n)]
        assert [exit_code(join(p)) for p in pids] == [0] * n
        assert d["calls"] == 1
        seen = {d[k] for k in d.get_keys(match="saw-*")}
        assert seen == {d["page"]} and len(d.get_keys(match="saw-*")) == n


def test_get_or_set_factory_error_and_timeout(sd: shmdict.SharedDict) -> None:
    """A failing factory stores nothing; a waiter times out while another computes."""

    def boom() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        sd.get_or_set("k", boom)
    assert "k" not in sd
    assert sd.get_or_set("k", lambda: 7) == 7
    assert sd.get_or_set("k", boom) == 7

    def slow() -> int:
        def factory() -> int:
            sd["computing"] = 1
            time.sleep(1.0)
            return 1

        sd.get_or_set("slow", factory)
        return 0

    pid = fork(slow)
    while sd.get("computing") != 1:
        time.sleep(0.001)
    with pytest.raises(TimeoutError):
        sd.get_or_set("slow", lambda: 2, lock_timeout=0.05)
    assert exit_code(join(pid)) == 0
    assert sd["slow"] == 1


def test_eviction_under_contention() -> None:
    """Several processes overfilling an evicting dict never see Full, and it stays consistent."""
    name = uname()
    with shmdict.new(name, "64k", evict=True) as d:

        def worker(seed: int) -> int:
            d = shmdict.get(name)
            rng = random.Random(seed)
            for i in range(1500):
                d.set(f"{seed}-{i}", b"x" * rng.randrange(1, 400))
                if rng.random() < 0.3:
                    d.get(f"{seed}-{rng.randrange(i + 1)}")
            return 0

        pids = [fork(worker, s) for s in range(3)]
        assert [exit_code(join(p)) for p in pids] == [0] * 3
        st = d.stats()
        assert st["evictions"] > 0 and st["evict"] is True
        assert st["entries"] == len(d) > 0
        d.check()
