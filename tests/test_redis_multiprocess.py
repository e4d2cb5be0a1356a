"""Several processes on one Redis dict: no lost update, exact limits, one
factory call, mutual exclusion. Forked children, bounded by a timeout."""

from __future__ import annotations

import time

import pytest
from redis_fixture import fork_children, redis_dict, redis_server, wait_pids  # noqa: F401

PROCS = 4


@pytest.fixture
def d(redis_dict):
    """A RedisDict under a fresh prefix (see redis_fixture)."""
    return redis_dict


def _start_together(d, i):
    """Each child checks in, then waits (bounded) for all of them: maximal contention."""
    d.incr("ready", init=0)
    deadline = time.monotonic() + 10
    while d.get("ready", 0) < PROCS and time.monotonic() < deadline:
        time.sleep(0.001)


def test_concurrent_incr_loses_nothing(d):
    """4 processes x 250 int and float incrs give exact totals."""

    def work(i):
        _start_together(d, i)
        for _ in range(250):
            d.incr("n", init=0)
            d.incr("f", 0.5, init=0.0)

    assert wait_pids(fork_children(PROCS, work)) == [0] * PROCS
    assert d["n"] == PROCS * 250 and type(d["n"]) is int
    assert d["f"] == PROCS * 125.0 and type(d["f"]) is float


def test_concurrent_limit_admits_exactly_the_burst(d):
    """4 processes x 40 requests against 1/hour with burst 24: exactly 25 pass."""

    def work(i):
        _start_together(d, i)
        for _ in range(40):
            allowed, remaining, reset_after = d.limit("api", rate=1, per=3600, burst=24)
            assert remaining >= 0 and reset_after > 0
            if allowed:
                d.incr("allowed", init=0)

    assert wait_pids(fork_children(PROCS, work)) == [0] * PROCS
    assert d["allowed"] == 25


def test_lock_excludes_across_processes(d):
    """A read-modify-write under d.lock loses no update across 4 processes."""
    d["n"] = 0

    def work(i):
        _start_together(d, i)
        for _ in range(40):
            with d.lock("n", timeout=10):
                v = d["n"]
                d["n"] = v + 1

    assert wait_pids(fork_children(PROCS, work)) == [0] * PROCS
    assert d["n"] == PROCS * 40


def test_get_or_set_calls_the_factory_once(d):
    """4 processes missing the same key at once: exactly one runs the factory."""

    def factory():
        d.incr("calls", init=0)
        time.sleep(0.2)  # long enough for every other process to miss and wait
        return "computed"

    def work(i):
        _start_together(d, i)
        assert d.get_or_set("cache", factory, exptime=60, lock_timeout=10) == "computed"

    assert wait_pids(fork_children(PROCS, work)) == [0] * PROCS
    assert d["calls"] == 1 and d["cache"] == "computed"


def test_lock_of_a_killed_holder_frees_after_its_lease(d):
    """A holder SIGKILLed while holding a lock blocks others only until its lease ends."""
    import os
    import signal

    def work(i):
        lk = d.lock("job", lease=1.0)
        assert lk.acquire(blocking=False)
        d["held"] = 1
        os.kill(os.getpid(), signal.SIGKILL)

    pids = fork_children(1, work)
    assert wait_pids(pids) == [128 + signal.SIGKILL]
    assert d["held"] == 1
    assert d.lock("job").locked()  # the dead holder still has it...
    with d.lock("job", timeout=10):  # ...until its lease ends (else: TimeoutError)
        pass
