"""The examples run for real: gunicorn (4 forked workers, Flask-Limiter) and
uvicorn (4 spawned workers, slowapi) on 127.0.0.1 with shmdict:// storage; the
global limit holds exactly, also across a SIGKILLed worker."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import shmdict

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LIMIT = 60
START_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, path: str = "/") -> tuple[int, int]:
    """(status, worker pid), or (0, 0) if the connection broke."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status, int(r.headers.get("X-Worker-Pid", 0))
    except (ConnectionError, http.client.HTTPException):
        return 0, 0
    finally:
        c.close()


class Server:
    def __init__(self, shm_dir: str, strategy: str, preload: bool = False, server: str = "gunicorn") -> None:
        pytest.importorskip(server)
        pytest.importorskip("flask_limiter" if server == "gunicorn" else "slowapi")
        self.port = free_port()
        self.name = f"rl-{uuid.uuid4().hex[:8]}"
        env = dict(os.environ, SHMDICT_DIR=shm_dir, RATELIMIT_NAME=self.name, RATELIMIT=f"{LIMIT}/hour",
                   RATELIMIT_STRATEGY=strategy, BIND=f"127.0.0.1:{self.port}", WORKERS="4")
        if server == "gunicorn":
            cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                   *(["--preload"] if preload else []), "app:app"]
        else:
            cmd = [sys.executable, "-m", "uvicorn", "app:app", "--workers", "4", "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, cwd=EXAMPLES / f"{server}_ratelimit", env=env, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_ready(self, workers: int = 4) -> set[int]:
        """Wait until every worker answers /health (exempt from the limit); returns their pids.
        Until then the first worker up would serve everything."""
        deadline = time.monotonic() + START_TIMEOUT
        seen: set[int] = set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited: {self.proc.stderr.read().decode()[-2000:]}")
            with ThreadPoolExecutor(8) as ex:
                seen |= {p for s, p in ex.map(lambda _: request(self.port, "/health"), range(16)) if s == 200}
            if len(seen) >= workers:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"only {len(seen)} of {workers} workers answered in time")

    def burst(self, n: int, threads: int = 8) -> list[tuple[int, int]]:
        with ThreadPoolExecutor(threads) as ex:
            return list(ex.map(lambda _: request(self.port), range(n)))

    def stop(self) -> int:
        """SIGTERM the master (graceful: on_exit runs); SIGKILL the group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> int:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # master and workers: the session we started
        except ProcessLookupError:
            pass
        return self.proc.wait(timeout=20)


def _gone_or_zombie(pid: int) -> bool:
    """Whether a killed process has died (reaped, or a zombie not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:  # reaped, even between an exists() and the open() or the read()
        return True


@pytest.mark.parametrize("strategy,preload", [("moving-window", False), ("fixed-window", True),
                                              ("sliding-window-counter", False)])
def test_global_limit_holds_across_workers_and_a_killed_worker(shm_dir, strategy, preload):
    """4 workers admit exactly LIMIT requests between them, before and after one is SIGKILLed
    and replaced; the master removes the dict on exit."""
    srv = Server(shm_dir, strategy, preload)
    try:
        workers = srv.wait_ready()  # 4 workers, each seen answering
        assert os.path.exists(os.path.join(shm_dir, f"shmdict.{srv.name}"))

        # 1. a burst below the limit
        first = srv.burst(LIMIT // 2)
        assert [s for s, _ in first] == [200] * (LIMIT // 2)
        assert {p for _, p in first} <= workers

        # 2. SIGKILL an (idle) worker: gunicorn replaces it
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and not _gone_or_zombie(victim):
            time.sleep(0.05)

        # 3. the rest of the traffic: exactly LIMIT 200s in total, the rest 429
        rest = srv.burst(LIMIT + 20)
        statuses = [s for s, _ in first + rest]
        assert statuses.count(200) == LIMIT
        assert statuses.count(429) == len(statuses) - LIMIT
        assert victim not in {p for _, p in rest}

        # 4. the CLI sees the same counters from outside
        with shmdict.get(srv.name) as d:
            assert any(k.startswith("LIMITS:") for k in d.get_keys())
            d.check()
    finally:
        code = srv.stop()
    assert code == 0
    assert not os.path.exists(os.path.join(shm_dir, f"shmdict.{srv.name}")), "on_exit removes the dict"


def test_worker_killed_mid_traffic_never_over_admits(shm_dir):
    """SIGKILLing a worker while requests are in flight loses at most its own request and never lets
    more than LIMIT through; the server keeps answering (no stuck lock)."""
    srv = Server(shm_dir, "moving-window", preload=False)
    try:
        workers = srv.wait_ready()
        with ThreadPoolExecutor(8) as ex:
            futs = [ex.submit(request, srv.port) for _ in range(LIMIT + 40)]
            time.sleep(0.05)
            done = [f.result() for f in futs[:10]]
            os.kill(next(p for _, p in done if p in workers), signal.SIGKILL)
            results = [f.result() for f in futs]
        statuses = [s for s, _ in results]
        assert LIMIT - 1 <= statuses.count(200) <= LIMIT
        assert statuses.count(0) <= 1  # only the request the killed worker was serving
        assert [request(srv.port)[0] for _ in range(5)] == [429] * 5
        assert request(srv.port, "/health")[0] == 200
    finally:
        assert srv.stop() == 0


def test_uvicorn_spawned_workers_share_the_limit(shm_dir):
    """uvicorn --workers 4 (spawn, no master hooks) with slowapi admits exactly LIMIT requests;
    the workers attached to one dict, which stays after exit (nothing removes it)."""
    srv = Server(shm_dir, "moving-window", server="uvicorn")
    try:
        assert len(srv.wait_ready()) == 4  # 4 spawned processes, each seen answering
        results = srv.burst(LIMIT + 30)
        statuses = [s for s, _ in results]
        assert statuses.count(200) == LIMIT and statuses.count(429) == 30
    finally:
        assert srv.stop() == 0
    with shmdict.get(srv.name) as d:
        d.check()
