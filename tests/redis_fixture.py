"""A real redis-server for the tests, and the engine fixtures.

``redis_server`` starts one ``redis-server`` per test session on a Unix
socket in a private directory: no persistence (``--save ""``, no AOF), no TCP
port, and ``KEYS`` renamed away so that any use of it by shmdict fails the
tests (the contract says SCAN, never KEYS), and keyspace notifications on
(``wait``/``watch``). It is killed at teardown.

``SHMDICT_REDIS_SERVER`` names another binary (``valkey-server``).
Without the server (or redis-py) the Redis tests are skipped with the
reason, except under ``CI=true``, where a missing server is a failure: CI
installs it (``.ci/run``).

Test modules import the fixtures they use: ``from redis_fixture import
redis_server, redis_dict`` (pytest picks fixtures up from a module's
namespace).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import shmdict

CI = os.environ.get("CI", "").lower() == "true"
# Another server binary speaking the protocol, e.g. SHMDICT_REDIS_SERVER=valkey-server.
SERVER = os.environ.get("SHMDICT_REDIS_SERVER", "redis-server")
PROTOCOL = os.environ.get("SHMDICT_REDIS_PROTOCOL", "")


def _unavailable(reason: str) -> None:
    if CI:
        pytest.fail(f"{reason} (CI=true: the Redis tests must run; .ci/run installs redis-server)")
    pytest.skip(reason)


class RedisServer:
    """A running redis-server: ``url(prefix)`` gives a shmdict URL for it."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: str, workdir: str) -> None:
        self.proc = proc
        self.sock = sock
        self.workdir = workdir

    def url(self, prefix: str = "", db: int = 0) -> str:
        proto = f"&protocol={PROTOCOL}" if PROTOCOL else ""  # SHMDICT_REDIS_PROTOCOL=3: the suite over RESP3
        return f"unix://{self.sock}?db={db}{proto}" + (f"&prefix={prefix}" if prefix else "")

    def client(self) -> Any:
        import redis

        return redis.Redis(unix_socket_path=self.sock, socket_timeout=10)


def start_redis(workdir: str, extra: tuple[str, ...] = ()) -> RedisServer:
    """Start redis-server on a Unix socket in ``workdir``; wait (bounded) until it answers."""
    sock = os.path.join(workdir, "redis.sock")
    proc = subprocess.Popen(
        [
            SERVER,
            "--port", "0",
            "--unixsocket", sock,
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
            "--rename-command", "KEYS", "",
            "--notify-keyspace-events", "KA",  # for wait/watch
            "--loglevel", "warning",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # The server is not under test: keep CI's sanitizer runtime (LD_PRELOAD) out of it.
        env={k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")},
    )  # fmt: skip
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            if os.path.exists(sock) and redis.Redis(unix_socket_path=sock, socket_timeout=1).ping():
                return RedisServer(proc, sock, workdir)
        except redis.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_redis(proc)
            pytest.fail("redis-server did not start within 10 s")
        time.sleep(0.02)


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def redis_available() -> None:
    """Skip (or fail under CI=true) unless both redis-server and redis-py exist."""
    if shutil.which(SERVER) is None:
        _unavailable(f"{SERVER} is not installed (apt-get install redis-server)")
    try:
        import redis  # noqa: F401
    except ImportError:
        _unavailable("redis-py is not installed (pip install 'shmdict[redis]')")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session, killed at teardown."""
    redis_available()
    workdir = tempfile.mkdtemp(prefix="shmdict-redis-")
    server = start_redis(workdir)
    try:
        yield server
    finally:
        stop_redis(server.proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_dict(redis_server: RedisServer) -> Iterator[shmdict.RedisDict]:
    """A RedisDict under a prefix of its own; its keys are removed afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    d = shmdict.connect(redis_server.url(prefix))
    try:
        yield d
    finally:
        d.close()
        with shmdict.connect(redis_server.url(prefix)) as c:
            c.flush_all()


def wait_pids(pids: list[int], timeout: float = 30.0) -> list[int]:
    """Exit codes of forked children; kill them all and fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    codes: dict[int, int] = {}
    while len(codes) < len(pids):
        for pid in pids:
            if pid in codes:
                continue
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                codes[pid] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        if time.monotonic() > deadline:
            for pid in pids:
                if pid not in codes:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
            pytest.fail(f"children did not finish within {timeout} s")
        time.sleep(0.005)
    return [codes[p] for p in pids]


def fork_children(n: int, fn: Any, *args: Any, alarm: int = 30) -> list[int]:
    """Fork ``n`` children running ``fn(i, *args)``; each exits 0 on success,
    99 if ``fn`` raised."""
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 99
            try:
                signal.alarm(alarm)
                fn(i, *args)
                code = 0
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
    return pids
