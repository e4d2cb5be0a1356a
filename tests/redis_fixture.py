"""A real redis-server for the tests, and the engine fixtures.

``redis_server`` starts one ``redis-server`` per test session on a Unix
socket in a private directory: no persistence (``--save ""``, no AOF), no TCP
port, and ``KEYS`` renamed away so that any use of it by shmdict fails the
tests (the contract says SCAN, never KEYS), and keyspace notifications on
(``wait``/``watch``). It is killed at teardown.

``redis_cluster`` is a 3-master Redis Cluster on loopback TCP ports and
``redis_sentinel`` a master, its replica and one Sentinel (the same server
options), both once per session; :func:`start_sentinel` gives a test a
Sentinel setup of its own to fail over. The cluster is assigned its slots
with ``CLUSTER ADDSLOTSRANGE`` + ``CLUSTER MEET`` rather than ``redis-cli
--cluster create``, which sleeps whole seconds while the nodes join (4 s
against about 0.3 s).

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
from typing import Any, Optional

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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(what: str, ready: Any, timeout: float = 10.0) -> None:
    """Poll ``ready()`` every 20 ms until it is true; fail after ``timeout``."""
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s")
        time.sleep(0.02)


def start_tcp_redis(workdir: str, port: int, extra: tuple[str, ...] = ()) -> RedisServer:
    """A redis-server (see start_redis) that also listens on 127.0.0.1:``port``."""
    os.makedirs(workdir, exist_ok=True)
    return start_redis(workdir, ("--port", str(port), "--bind", "127.0.0.1", *extra))


class LocalCluster:
    """A running Redis Cluster: ``url(prefix)`` gives a redis+cluster:// URL for it."""

    def __init__(self, nodes: list[RedisServer], ports: list[int]) -> None:
        self.nodes = nodes
        self.ports = ports

    def url(self, prefix: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        proto = f"&protocol={PROTOCOL}" if PROTOCOL else ""
        return f"redis+cluster://{hosts}/?prefix={prefix}{proto}"

    def stop(self) -> None:
        for n in self.nodes:
            stop_redis(n.proc)


def start_cluster(workdir: str, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 10_000) -> LocalCluster:
    """``masters`` cluster nodes on loopback ports, the 16384 slots split
    between them, and ``replicas`` more nodes (replica ``i`` of master ``i %
    masters``), started and joined; returns once every node sees the cluster
    as ok. ``ports`` lists the masters first. A node that does not answer for
    ``node_timeout_ms`` is failed (10 s: a loaded CI machine never fails
    one; a failover test passes less)."""
    import redis

    total = masters + replicas
    ports = [free_port() for _ in range(total)]
    bus = [free_port() for _ in range(total)]  # the default, port + 10000, may be taken or out of range
    nodes: list[RedisServer] = []
    try:
        for i, port in enumerate(ports):
            nodes.append(start_tcp_redis(os.path.join(workdir, f"node{i}"), port, (
                "--cluster-enabled", "yes",
                "--cluster-port", str(bus[i]),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                "--repl-diskless-sync-delay", "0",
            )))  # fmt: skip
        clients = [n.client() for n in nodes]
        per = 16384 // masters
        for i, c in enumerate(clients[:masters]):
            last = 16383 if i == masters - 1 else (i + 1) * per - 1
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
        for c in clients[1:]:
            c.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0], bus[0])

        def joined() -> bool:
            for c in clients:
                info = c.execute_command("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info or f"cluster_known_nodes:{total}" not in info:
                    return False
                if len(c.execute_command("CLUSTER", "SLOTS")) != masters:
                    return False
            return True

        _until("the cluster did not come up", joined)
        if replicas:
            ids = [c.execute_command("CLUSTER", "MYID").decode() for c in clients[:masters]]
            for i, c in enumerate(clients[masters:]):
                c.execute_command("CLUSTER", "REPLICATE", ids[i % masters])

            def synced() -> bool:
                return all(c.info("replication")["master_link_status"] == "up" for c in clients[masters:])

            _until("the cluster's replicas did not sync", synced)
    except BaseException:
        for n in nodes:
            stop_redis(n.proc)
        raise
    return LocalCluster(nodes, ports)


class SentinelSetup:
    """A master, its replica and one Sentinel (quorum 1): ``url(prefix)``
    gives a redis+sentinel:// URL for it."""

    SERVICE = "shmdict"

    def __init__(self, servers: dict[int, RedisServer], sentinel: subprocess.Popen[bytes], sentinel_port: int) -> None:
        self.servers = servers  # port -> server; which one is the master changes with a failover
        self.sentinel = sentinel
        self.sentinel_port = sentinel_port

    def url(self, prefix: str = "", query: str = "") -> str:
        proto = f"&protocol={PROTOCOL}" if PROTOCOL else ""
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.SERVICE}?prefix={prefix}{proto}{query}"

    def sentinel_client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.sentinel_port, socket_timeout=5)

    def master_port(self) -> int:
        return int(self.sentinel_client().sentinel_get_master_addr_by_name(self.SERVICE)[1])

    def stop(self) -> None:
        stop_redis(self.sentinel)
        for s in self.servers.values():
            stop_redis(s.proc)


def start_sentinel(workdir: str, down_after_ms: int = 10_000) -> SentinelSetup:
    """A master and a replica on loopback ports, and a Sentinel that knows
    both and fails the master over once it has not answered for
    ``down_after_ms`` (the session's setup keeps 10 s, so that a loaded CI
    machine never triggers a failover; a failover test passes 300 ms);
    returns once the Sentinel lists the replica, so it can fail over."""
    ports = [free_port(), free_port()]
    sport = free_port()
    servers: dict[int, RedisServer] = {}
    sentinel: Optional[subprocess.Popen[bytes]] = None
    try:
        # No 5 s wait for more replicas before a diskless sync: either may be master after a failover.
        fast = ("--repl-diskless-sync-delay", "0")
        servers[ports[0]] = start_tcp_redis(os.path.join(workdir, "master"), ports[0], fast)
        servers[ports[1]] = start_tcp_redis(
            os.path.join(workdir, "replica"), ports[1], (*fast, "--replicaof", "127.0.0.1", str(ports[0]))
        )
        replica = servers[ports[1]].client()
        _until("the replica did not sync", lambda: replica.info("replication")["master_link_status"] == "up")
        conf = os.path.join(workdir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write(
                f"port {sport}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {SentinelSetup.SERVICE} 127.0.0.1 {ports[0]} 1\n"
                f"sentinel down-after-milliseconds {SentinelSetup.SERVICE} {down_after_ms}\n"
                f"sentinel failover-timeout {SentinelSetup.SERVICE} 5000\n"
            )
        sentinel = subprocess.Popen(
            [SERVER, conf, "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")},
        )
        setup = SentinelSetup(servers, sentinel, sport)
        sc = setup.sentinel_client()
        _until("the Sentinel did not see the replica", lambda: len(sc.sentinel_slaves(SentinelSetup.SERVICE)) == 1)
    except BaseException:
        if sentinel is not None:
            stop_redis(sentinel)
        for s in servers.values():
            stop_redis(s.proc)
        raise
    return setup


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


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """One 3-master Redis Cluster for the whole session, killed at teardown."""
    redis_available()
    workdir = tempfile.mkdtemp(prefix="shmdict-cluster-")
    cluster = start_cluster(workdir)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelSetup]:
    """One master + replica + Sentinel for the whole session, killed at teardown."""
    redis_available()
    workdir = tempfile.mkdtemp(prefix="shmdict-sentinel-")
    setup = start_sentinel(workdir)
    try:
        yield setup
    finally:
        setup.stop()
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
