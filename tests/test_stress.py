"""Stress: 16 processes on however few cores, a random mix of operations on a
dict kept nearly full, for a bounded time. No error other than ``Full``;
``check()`` passes during (from the supervisor, under the lock) and after;
the throughput is reported, never asserted.

Short in CI (2 s); ``SHMDICT_LONG=1`` or ``SHMDICT_STRESS_SECONDS=N`` for a
long run.
"""

from __future__ import annotations

import os
import random
import time

from relutil import LONG, describe, fork, promptly, report, unique_name, wait

import shmdict

__all__ = ["shm_dir"]

SECONDS = float(os.environ.get("SHMDICT_STRESS_SECONDS") or (60 if LONG else 2))
PROCS = 16
KEYSPACE = 3000  # more keys than the dict can hold at the sizes below


def worker(name: str, until: float, wfd: int) -> int:
    rng = random.Random(os.getpid())
    d = shmdict.get(name)
    ops = full = 0
    while time.monotonic() < until:
        for _ in range(50):
            k = f"k{rng.randrange(KEYSPACE)}"
            r = rng.random()
            try:
                if r < 0.40:
                    d.get(k)
                elif r < 0.75:
                    d.set(k, rng.choice(["v" * rng.randrange(1, 800), rng.randbytes(rng.randrange(64)),
                                         rng.random(), rng.randrange(-99, 99), True]),
                          rng.choice([0, 0, 0, 0.05, 10]))
                elif r < 0.80:
                    d.incr(f"n{rng.randrange(50)}", 1, init=0)
                elif r < 0.84:
                    d.delete(k)
                elif r < 0.88:
                    d.expire(k, rng.choice([0, 0.02, 5]))
                elif r < 0.93:
                    d.ttl(k)
                elif r < 0.95:
                    d.pop(k, None)
                else:
                    len(d)
            except shmdict.Full:
                full += 1
            except TypeError:
                pass  # incr on a key another process set to a str: a correct refusal
            ops += 1
    os.write(wfd, f"{ops} {full}\n".encode())
    return 0


def test_stress_16_processes(shm_dir: str) -> None:
    """16 processes hammer a nearly full dict: only Full is raised and the table stays consistent."""
    name = unique_name()
    with shmdict.new(name, "256k") as d:
        n = 0
        try:
            while True:
                d[f"k{n}"] = "p" * 100
                n += 1
        except shmdict.Full:
            pass
        assert n > 100
        r, w = os.pipe()
        start = time.monotonic()
        until = start + SECONDS
        pids = [fork(worker, name, until, w, alarm=int(SECONDS) + 60) for _ in range(PROCS)]
        os.close(w)
        checks = 0
        while time.monotonic() < until:
            time.sleep(0.2)
            d.check()  # under the lock, while 16 processes contend for it
            checks += 1
        statuses = [wait(p, timeout=SECONDS + 60) for p in pids]
        elapsed = time.monotonic() - start
        out = b""
        while chunk := os.read(r, 1 << 16):
            out += chunk
        os.close(r)
        for s in statuses:
            assert os.WIFEXITED(s) and os.WEXITSTATUS(s) == 0, describe(s)
        results = [tuple(map(int, line.split())) for line in out.decode().splitlines()]
        assert len(results) == PROCS
        ops = sum(o for o, _ in results)
        full = sum(f for _, f in results)
        promptly(d.check)
        assert full > 0, "the dict never filled up: the stress did not reach the Full path"
        info = d._info()
        report("stress", seconds=round(elapsed, 2), procs=PROCS, cores=os.cpu_count(), ops=ops,
               ops_per_s=round(ops / elapsed), full=full, checks=checks, fill=round(info["used_bytes"] / info["capacity"], 3))
        print(f"stress: {ops} ops in {elapsed:.1f} s by {PROCS} processes ({ops / elapsed:,.0f} ops/s), "
              f"{full} Full, {checks} checks, {os.cpu_count()} cores")
