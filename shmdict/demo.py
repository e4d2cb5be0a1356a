"""``python -m shmdict.demo``: worker processes sharing counters through one dict.

Four processes (spawned, as uvicorn or a multiprocessing pool would start
them) each count a stream of fake requests into the same dict: a global
counter, a per-worker counter, and a per-client rate limit of the kind a
gunicorn app keeps (``incr`` with ``init`` and ``init_ttl``). The parent then
prints the totals, which add up exactly: no update is ever lost.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import shmdict

WORKERS = 4
REQUESTS = 50_000
CLIENTS = 10
LIMIT = 1_000  # requests per client per window


def worker(d: shmdict.SharedDict, n: int) -> None:
    # The handle arrived pickled: a non-owner reference to the parent's dict.
    allowed = 0
    for i in range(REQUESTS):
        d.incr("requests")
        d.incr(f"worker:{n}", init=0)
        # rate limit: the window starts with a client's first hit and lasts 60 s
        if d.incr(f"client:{i % CLIENTS}", init=0, init_ttl=60) <= LIMIT:
            allowed += 1
    d.incr("allowed", allowed, init=0)


def main() -> None:
    name = f"demo-{os.getpid()}"
    with shmdict.new(name, "1m") as d:
        d["requests"] = 0
        t0 = time.perf_counter()
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=worker, args=(d, n)) for n in range(WORKERS)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - t0
        total = WORKERS * REQUESTS
        print(f"{WORKERS} processes x {REQUESTS} requests, 3 atomic incr each, in {elapsed:.2f} s")
        print(f"  requests counted : {int(d['requests']):>8}  (expected {total})")
        for n in range(WORKERS):
            print(f"  worker:{n}         : {int(d[f'worker:{n}']):>8}")
        print(f"  allowed          : {int(d['allowed']):>8}  (limit {LIMIT} x {CLIENTS} clients = {LIMIT * CLIENTS})")
        ttl = d.ttl("client:0")
        print(f"  client:0 window  : {int(d['client:0'])} hits, resets in {ttl:.1f} s")
        ok = d["requests"] == total and d["allowed"] == LIMIT * CLIENTS
        print("totals exact: no update lost" if ok else "MISMATCH: updates were lost")
        if not ok:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
