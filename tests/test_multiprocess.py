"""Atomicity across processes and threads, and handles across fork."""

from __future__ import annotations

import multiprocessing
import os
import threading

from conftest import run_in_child, start_child, wait_child

import shmdict

N = 2000


def test_concurrent_incr_across_processes(d):
    """Four processes incrementing one key lose no update."""
    d["n"] = 0
    nproc = 4

    def worker() -> int:
        for _ in range(N):
            d.incr("n", 1)
        return 0

    pids = [start_child(worker) for _ in range(nproc)]
    results = [wait_child(p, 60) for p in pids]
    assert [r.exitcode for r in results] == [0] * nproc, results
    assert d["n"] == nproc * N
    d.check()


def test_concurrent_incr_with_init_across_processes(d, name):
    """Processes attaching by name and creating the counter with init lose no update."""
    nproc = 4

    def worker() -> int:
        g = shmdict.get(name)
        for _ in range(N):
            g.incr("n", 1, init=0)
        g.close()
        return 0

    pids = [start_child(worker) for _ in range(nproc)]
    results = [wait_child(p, 60) for p in pids]
    assert [r.exitcode for r in results] == [0] * nproc, results
    assert d["n"] == nproc * N


def test_concurrent_float_incr_across_processes(d):
    """Concurrent float increments are exact when every partial sum is representable."""
    d["f"] = 0.0

    def worker() -> int:
        for _ in range(1000):
            d.incr("f", 0.5)
        return 0

    pids = [start_child(worker) for _ in range(3)]
    assert [wait_child(p, 60).exitcode for p in pids] == [0, 0, 0]
    assert d["f"] == 1500.0


def test_concurrent_incr_across_threads(d):
    """Eight threads incrementing through one handle lose no update."""
    d["n"] = 0
    nthreads = 8
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(N):
                d.incr("n", 1)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert d["n"] == nthreads * N


def test_threads_with_mixed_operations(d):
    """Threads doing set, get, delete and incr on shared keys keep the dict consistent."""
    d["n"] = 0
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(500):
                k = f"k{(i * 7 + t) % 50}"
                d[k] = b"x" * (i % 200)
                v = d.get(k)
                assert v is None or (type(v) is bytes and set(v) <= {ord("x")})
                d.delete(f"k{(i * 3 + t) % 50}")
                d.incr("n", 1)
                assert len(d.get_keys()) <= 51
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert d["n"] == 6 * 500
    d.check()


def test_processes_and_threads_together(d):
    """Two processes with three threads each lose no increment."""
    d["n"] = 0

    def worker() -> int:
        def loop() -> None:
            for _ in range(1000):
                d.incr("n", 1)

        ts = [threading.Thread(target=loop) for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return 0

    pids = [start_child(worker) for _ in range(2)]
    assert [wait_child(p, 60).exitcode for p in pids] == [0, 0]
    assert d["n"] == 6000


def test_whole_values_never_torn(d):
    """A reader in another process only ever sees whole values written by a writer."""
    values = [bytes([i]) * (100 + 37 * i) for i in range(20)]
    d["v"] = values[0]

    def writer() -> int:
        for r in range(300):
            d["v"] = values[r % len(values)]
        return 0

    pid = start_child(writer)
    seen = set()
    while True:
        v = d["v"]
        assert v in values
        seen.add(v)
        wpid, _ = os.waitpid(pid, os.WNOHANG)
        if wpid:
            break
    assert d["v"] == values[299 % len(values)]


def test_fork_after_creation(d):
    """After fork, parent and child use the same dict concurrently."""
    d["n"] = 0
    d["from_parent"] = "p"

    def child() -> int:
        assert d["from_parent"] == "p"
        for _ in range(N):
            d.incr("n", 1)
        d["from_child"] = os.getpid()
        return 0

    pid = start_child(child)
    for _ in range(N):
        d.incr("n", 1)
    assert wait_child(pid, 60).exitcode == 0
    assert d["n"] == 2 * N
    assert d["from_child"] == pid


def test_fork_of_fork(d):
    """A grandchild process still shares the dict."""

    def child() -> int:
        return run_in_child(lambda: d.set("deep", os.getpid())).exitcode or 0

    assert run_in_child(child).exitcode == 0
    assert isinstance(d["deep"], int)
    assert d["deep"] != os.getpid()


def _spawn_incr(sd, n):
    for _ in range(n):
        sd.incr("n", 1)
    return sd.owner


def test_spawn_workers_with_pickled_handle(d):
    """spawn-started pool workers receive pickled handles and lose no update."""
    d["n"] = 0
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        owners = pool.starmap(_spawn_incr, [(d, 500)] * 4)
    assert owners == [False] * 4
    assert d["n"] == 2000
    assert os.path.exists(os.path.join(os.environ["SHMDICT_DIR"], f"shmdict.{d.name}"))


def _gil_probe(sd: shmdict.SharedDict) -> int:
    """In a child: stop a lock-hungry grandchild, find a moment it holds the lock, and check
    that a thread blocked on that lock still lets this thread run Python code."""
    import random
    import signal
    import time

    def hammer() -> int:
        while True:
            sd.incr("n", 1)

    g = start_child(hammer, alarm=60)
    rng = random.Random(5)
    try:
        for _ in range(2000):
            time.sleep(rng.uniform(0, 0.002))
            os.kill(g, signal.SIGSTOP)
            done = threading.Event()
            t = threading.Thread(target=lambda ev=done: (sd.get("n"), ev.set()), daemon=True)
            t.start()
            if done.wait(0.05):  # the stopped process did not hold the lock: try again
                t.join()
                os.kill(g, signal.SIGCONT)
                continue
            # t is blocked inside the C lock call; this thread must still run.
            spins = 0
            end = time.monotonic() + 0.05
            while time.monotonic() < end:
                spins += 1
            assert not done.is_set()
            os.kill(g, signal.SIGCONT)
            assert done.wait(10), "the waiter never got the lock back"
            return 0 if spins > 0 else 3
        return 2  # never caught the grandchild holding the lock
    finally:
        os.kill(g, signal.SIGKILL)
        os.waitpid(g, 0)


def test_waiting_for_the_lock_releases_the_gil(d):
    """A thread blocked on the dict's lock lets other threads of its process run."""
    d["n"] = 0
    res = run_in_child(_gil_probe, d, timeout=60)
    assert res.exitcode == 0, res
    d.check()
