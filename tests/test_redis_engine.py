"""The Redis engine's own behaviour: URLs, encoding, prefix isolation,
connection failures, and the operations beyond the core contract (add,
replace, cas, get_many, set_many, scan, lists, limit, lock, get_or_set)."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
import uuid

import pytest
from redis_fixture import (  # noqa: F401
    redis_available,
    redis_dict,
    redis_server,
    start_redis,
    stop_redis,
    wait_pids,
)

import shmdict
from shmdict import _redis


@pytest.fixture
def d(redis_dict):
    """A RedisDict under a fresh prefix (see redis_fixture)."""
    return redis_dict


# ---- URLs ----------------------------------------------------------------------------


def test_prefix_is_stripped_before_redis_py(redis_server):
    """prefix= is shmdict's: redis-py would reject it as a connection argument."""
    with shmdict.connect(redis_server.url("app:")) as rd:
        rd["k"] = 1
        assert rd.name == "app:"
        assert redis_server.client().get(b"app:k") == b"1"
        rd.flush_all()


@pytest.mark.parametrize("scheme", ["unix", "redis+unix", "valkey+unix"])
def test_unix_socket_schemes(redis_server, scheme):
    """unix://, redis+unix:// and valkey+unix:// all reach the socket."""
    url = redis_server.url("s:").replace("unix://", f"{scheme}://", 1)
    with shmdict.connect(url) as rd:
        rd["k"] = "v"
        assert rd["k"] == "v"
        rd.flush_all()


def test_tcp_and_valkey_schemes(tmp_path):
    """redis:// and valkey:// over 127.0.0.1 reach a server on a free port."""
    redis_available()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_redis(str(tmp_path), ("--port", str(port), "--bind", "127.0.0.1"))
    try:
        for scheme in ("redis", "valkey"):
            with shmdict.connect(f"{scheme}://127.0.0.1:{port}/3?prefix=p:") as rd:
                rd.incr(scheme, init=0)
        import redis

        c = redis.Redis(host="127.0.0.1", port=port, db=3)
        assert c.get(b"p:redis") == b"1" and c.get(b"p:valkey") == b"1"
    finally:
        stop_redis(server.proc)


def test_redis_py_options_pass_through(redis_server):
    """Other query parameters and keyword options reach redis-py."""
    with shmdict.connect(redis_server.url("o:") + "&socket_timeout=5", health_check_interval=1) as rd:
        kw = rd.client.connection_pool.connection_kwargs
        assert kw["socket_timeout"] == 5 and kw["health_check_interval"] == 1
        assert kw["db"] == 0 and "prefix" not in kw


def test_unknown_scheme():
    """An unknown scheme is a ValueError naming the supported ones."""
    with pytest.raises(ValueError, match="shm://"):
        shmdict.connect("memcached://localhost")
    with pytest.raises(TypeError):
        shmdict.connect(b"redis://localhost")


def test_shm_urls(monkeypatch):
    """shm:// attaches or creates (size=), attaches only (no size), and rejects unknown parameters."""
    directory = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    monkeypatch.setenv("SHMDICT_DIR", directory)
    try:
        name = f"u{uuid.uuid4().hex[:8]}"
        with pytest.raises(FileNotFoundError):
            shmdict.connect(f"shm://{name}")
        a = shmdict.connect(f"shm://{name}?size=64k&mode=0o640")
        b = shmdict.connect(f"shmdict:///{name}")
        a["k"] = 1
        assert b["k"] == 1 and not a.owner and a.size == 64 * 1024
        assert os.stat(os.path.join(directory, f"shmdict.{name}")).st_mode & 0o777 == 0o640
        c = shmdict.connect(f"shm://e{name}?size=64k&events=16")
        assert c._info()["events_cap"] > 0
        c.close()
        shmdict.unlink(f"e{name}")
        for bad in (
            f"shm://{name}?size=1m&evil=1",
            f"shm://{name}?mode=600",
            f"shm://{name}?size=1m&mode=9x",
            f"shm://{name}?size=1m&events=x",
            f"shm://{name}?size=1m&size=2m",
            "shm://",
            "shm://a/b",
        ):
            with pytest.raises(ValueError):
                shmdict.connect(bad)
        a.close()
        b.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_shm_urls_grow_and_set_max_size(monkeypatch):
    """shm://NAME?size= grows an existing smaller dict (never shrinks a larger one); max_size= sets the
    automatic-growth limit when connect creates the dict and when it attaches; without size= it is refused."""
    directory = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    monkeypatch.setenv("SHMDICT_DIR", directory)
    try:
        a = shmdict.connect("shm://grow?size=64k&max_size=1m")
        a["k"] = "v"
        assert a.size == 64 << 10 and a.stats()["max_size"] == 1 << 20
        b = shmdict.connect("shm://grow?size=256k")  # an existing smaller dict grows to size
        assert a.size == b.size == 256 << 10 and b["k"] == "v" and a.stats()["growths"] == 1
        with shmdict.connect("shm://grow?size=128k") as c:  # a larger one keeps its size
            assert c.size == 256 << 10
        with shmdict.connect("shm://grow?size=128k&max_size=8m") as c:  # attaching sets the limit too
            assert c.stats()["max_size"] == 8 << 20
        a.set_many([(f"n{i}", "x" * 100) for i in range(5000)])  # more than 256k: it grows itself
        assert 256 << 10 < a.size <= 8 << 20 and len(a) == 5001
        for bad in ("shm://grow?max_size=1g", "shm://grow?size=1m&max_size=512k", "shm://grow?size=1m&max_size=x"):
            with pytest.raises(ValueError):
                shmdict.connect(bad)
        assert a.stats()["max_size"] == 8 << 20
        a.close()
        b.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("query", ["max_size=1g", "size=64m", "evict=1", "mode=600", "events=16", "shared=1",
                                   "lock_timeout=2", "size=64m&max_size=1g"])
def test_redis_url_refuses_local_parameters(query):
    """A local dict's parameter on a Redis URL is a ValueError at connect(), naming it and why;
    never a late TypeError from redis-py. The same as a keyword option."""
    with pytest.raises(ValueError, match=r"shm:// parameter.*refused on a Redis URL") as info:
        shmdict.connect(f"redis://127.0.0.1:1/0?prefix=p:&{query}")
    for k in dict(kv.split("=") for kv in query.split("&")):
        assert k in str(info.value)
    if "max_size" in query:
        assert "no per-dict size limit" in str(info.value) and "maxmemory" in str(info.value)
    k, v = query.split("&")[0].split("=")
    with pytest.raises(ValueError, match=k):
        shmdict.connect("unix:///nonexistent.sock", **{k: v})


def test_import_does_not_load_redis_py():
    """import shmdict stays free of redis-py until a Redis URL is used."""
    import subprocess
    import sys

    code = "import sys, shmdict; assert 'redis' not in sys.modules; shmdict.RedisDict; assert 'redis' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_missing_redis_py_is_a_clear_importerror(monkeypatch):
    """A Redis URL without redis-py installed names the requirement and the extra."""
    monkeypatch.setattr(_redis, "_redis_py", None)
    with pytest.raises(ImportError, match=r"pip install 'redis>=5' \(the 'redis' extra"):
        shmdict.connect("redis://localhost/0")


def test_url_redacts_password():
    """The url attribute never shows a password."""
    assert _redis.redact("redis://user:secret@h:1/0") == "redis://user:***@h:1/0"
    assert _redis.redact("redis://:secret@h/0") == "redis://:***@h/0"
    assert _redis.redact("redis://h/0") == "redis://h/0"


# ---- encoding and isolation --------------------------------------------------------------


def test_encoding_is_readable(d, redis_server):
    """Ints are plain decimal (INCRBY works on them); other types are tagged."""
    raw = redis_server.client()
    p = d.name.encode()
    for key, value, stored in [
        ("i", -42, b"-42"),
        ("f", 1.5, b"f:1.5"),
        ("s", "é", b"s:\xc3\xa9"),
        ("b", b"\x00", b"b:\x00"),
        ("t", True, b"T"),
        ("n", False, b"F"),
    ]:
        d[key] = value
        assert raw.get(p + key.encode()) == stored
    assert raw.incrby(p + b"i", 2) == -40 and d["i"] == -40


def test_foreign_values(d, redis_server):
    """A string shmdict did not write is CorruptError; a list or hash is TypeError."""
    raw = redis_server.client()
    p = d.name.encode()
    raw.set(p + b"x", b"hello")
    raw.set(p + b"y", b"1.5")
    raw.hset(p + b"h", "a", "b")
    with pytest.raises(shmdict.CorruptError):
        d["x"]
    with pytest.raises(shmdict.CorruptError):
        d.incr("y")
    with pytest.raises(TypeError):
        d["h"]
    with pytest.raises(TypeError):
        d.incr("h")


def test_prefixes_are_isolated(redis_server):
    """Two prefixes never see each other's keys; flush_all removes only its own."""
    raw = redis_server.client()
    raw.set(b"outside", b"1")
    raw.set(b"a:*", b"1")  # glob characters in keys must not leak through SCAN MATCH
    with shmdict.connect(redis_server.url("a*")) as a, shmdict.connect(redis_server.url("ab")) as b:
        a["k"] = 1
        b["k"] = 2
        b["k2"] = 3
        assert a.get_keys() == ["k"] and sorted(b.get_keys()) == ["k", "k2"]
        assert len(a) == 1 and len(b) == 2
        a.flush_all()
        assert len(a) == 0 and b["k"] == 2 and raw.get(b"outside") == b"1" and raw.get(b"a:*") == b"1"
        b.flush_all()
    raw.delete(b"outside", b"a:*")


def test_internal_keys_are_hidden(d):
    """Locks live beside the items but never show up as keys, and flush_all keeps them."""
    with d.lock("job"):
        assert d.get_keys() == [] and len(d) == 0 and "job" not in d
        d["job"] = 1  # the same name as a lock is a different key
        d.flush_all()
        assert d.lock("job").acquire(blocking=False) is False
    assert d.lock("job").acquire(blocking=False) is True


# ---- connection failures --------------------------------------------------------------------


def test_refused_connection_is_unavailable():
    """A server that is not there raises shmdict.Unavailable (a ConnectionError)."""
    redis_available()
    rd = shmdict.connect("unix:///nonexistent/redis.sock?prefix=x:")
    with pytest.raises(shmdict.Unavailable):
        rd.get("k")
    with pytest.raises(ConnectionError):
        rd.incr("k", init=0)


def test_lost_server_is_unavailable_then_recovers(tmp_path):
    """Killing the server makes calls raise Unavailable; a restarted server is used again."""
    redis_available()
    server = start_redis(str(tmp_path))
    try:
        rd = shmdict.connect(server.url("x:"))
        rd["k"] = 1
        stop_redis(server.proc)
        with pytest.raises(shmdict.Unavailable):
            rd.incr("k")
        server = start_redis(str(tmp_path))
        assert rd.get("k") is None  # no persistence: a fresh, empty server
        assert rd.incr("k", init=0) == 1
        rd.close()
    finally:
        stop_redis(server.proc)


def test_out_of_memory_is_full(tmp_path):
    """A server at maxmemory with noeviction makes writes raise shmdict.Full."""
    redis_available()
    server = start_redis(str(tmp_path), ("--maxmemory", "2mb", "--maxmemory-policy", "noeviction"))
    try:
        with shmdict.connect(server.url("m:")) as rd:
            with pytest.raises(shmdict.Full):
                for i in range(1000):
                    rd.set(f"k{i}", b"x" * 100_000)
            assert rd.get("k0") == b"x" * 100_000
    finally:
        stop_redis(server.proc)


# ---- handles ---------------------------------------------------------------------------------


def test_pickle_reconnects(d):
    """A RedisDict pickles as its URL and prefix and reconnects."""
    d["k"] = 1
    other = pickle.loads(pickle.dumps(d))
    assert other is not d and other["k"] == 1 and other.name == d.name
    other.close()


def test_survives_fork(d):
    """A forked child uses the inherited handle (fresh connections); so does the parent."""
    d["n"] = 0
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            d.incr("n", 10)
            code = 0
        finally:
            os._exit(code)
    assert wait_pids([pid]) == [0]
    assert d.incr("n") == 11


# ---- the other operations: what is particular to Redis -----------------------------------------
# Their shared behaviour is tested on both engines by tests/test_contract.py.


def test_resize_checks_its_size_and_changes_nothing(d, redis_server):
    """On Redis, size is 0 and resize() validates its argument, then does nothing: neither the keys nor the
    server's memory settings change. A bad size is a ValueError (TypeError for a wrong type), as on shm://;
    a closed dict is a ValueError."""
    d.set_many([("a", 1), ("b", "two")])
    client = redis_server.client()
    before = (client.config_get("maxmemory"), client.config_get("maxmemory-policy"), client.dbsize())
    for size in ("64m", 1 << 30, "32g"):
        assert d.resize(size) is None
    assert d.size == 0 and sorted(d.items()) == [("a", 1), ("b", "two")]
    assert (client.config_get("maxmemory"), client.config_get("maxmemory-policy"), client.dbsize()) == before
    for bad in ("12q", "", "-1m", 100, "33g"):
        with pytest.raises(ValueError):
            d.resize(bad)
    for wrong in (1.5, None, b"64m", True):
        with pytest.raises(TypeError):
            d.resize(wrong)
    d.close()
    with pytest.raises(ValueError, match="closed"):
        d.resize("64m")


def test_get_many_refuses_a_str(d):
    """A str is not taken for an iterable of one-letter keys."""
    with pytest.raises(TypeError):
        d.get_many("ab")


def test_limit_counts_microseconds(d):
    """The limiter's state is microseconds of the server's clock: at most a million per second."""
    with pytest.raises(ValueError):
        d.limit("ip", 10**7, 1, 0)
    assert d.limit("ip", 10**6, 1, 0)[0] is True


def test_lock_lease_expires(d):
    """A holder that never releases loses the lock after its lease."""
    a = d.lock("job", lease=0.05)
    assert a.acquire(blocking=False)
    assert d.lock("job", timeout=2).acquire() is True  # waits out the lease
    with pytest.raises(RuntimeError, match="lease"):
        a.release()


def test_stats(d):
    """stats reports the entries under the prefix and the server's figures."""
    d["a"] = 1
    s = d.stats()
    assert s["engine"] == "redis" and s["entries"] == 1 and s["used_bytes"] > 0
    assert d.flush_expired() == 0


# ---- change notifications ---------------------------------------------------------------------


def _later(fn, delay=0.1):
    import threading

    t = threading.Timer(delay, fn)
    t.start()
    return t


def test_version(d):
    """version is 0 while missing and changes when the value or TTL changes."""
    assert d.version("k") == 0
    d["k"] = 1
    v1 = d.version("k")
    assert 0 < v1 < 2**32
    d["k"] = 2
    v2 = d.version("k")
    assert v2 != v1
    d.expire("k", 100)
    assert d.version("k") not in (v2, 0)
    del d["k"]
    assert d.version("k") == 0


def test_wait(d):
    """wait returns the new value after a change, None after a delete, and times out."""
    d["k"] = 1
    t = _later(lambda: d.incr("k"))
    assert d.wait("k", timeout=10) == 2
    t.join()
    t = _later(lambda: d.delete("k"))
    assert d.wait("k", timeout=10) is None
    t.join()
    with pytest.raises(TimeoutError):
        d.wait("k", timeout=0.1)
    v = d.version("k")
    d["k"] = "changed before the wait"
    assert d.wait("k", timeout=0, since=v) == "changed before the wait"
    with pytest.raises(ValueError):
        d.wait("k", since=-1)


def test_wait_across_processes(d):
    """A change made by another process wakes a waiter."""
    import os

    d["job"] = "pending"
    v = d.version("job")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            time.sleep(0.1)
            d["job"] = "done"
            code = 0
        finally:
            os._exit(code)
    assert d.wait("job", timeout=10, since=v) == "done"
    assert wait_pids([pid]) == [0]


def test_watch(d):
    """watch reports later changes of matching keys, in order, and ends after timeout."""
    d["old"] = 1
    w = d.watch("job*", timeout=0.3)
    d.incr("jobs", init=0)
    d["other"] = 1
    del d["jobs"]
    d.set("job2", "x", 0.05)
    time.sleep(0.3)  # job2 expires; Redis notices on access or in its active cycle
    d.get("job2")
    raw = list(w)
    events = [e for i, e in enumerate(raw) if i == 0 or raw[i - 1] != e]  # one op may send two
    assert events[:2] == [("set", "jobs"), ("delete", "jobs")]
    assert ("set", "job2") in events and ("expire", "job2") in events
    assert all(e.key.startswith("job") for e in events)
    with d.lock("job9"):  # internal keys never show up
        pass
    assert list(d.watch(timeout=0.1)) == []


def test_notifications_off_is_a_clear_error(tmp_path):
    """Without notify-keyspace-events, wait/watch raise shmdict.Error saying what to set."""
    redis_available()
    server = start_redis(str(tmp_path), ("--notify-keyspace-events", ""))
    try:
        with shmdict.connect(server.url("n:")) as rd:
            with pytest.raises(shmdict.Error, match="notify-keyspace-events"):
                rd.wait("k", timeout=0.1)
            with pytest.raises(shmdict.Error, match="notify-keyspace-events"):
                rd.watch()
    finally:
        stop_redis(server.proc)


def test_await_change_and_awatch(d):
    """The asyncio forms see the same changes as wait and watch."""
    import asyncio

    async def main():
        d["k"] = 1
        v = d.version("k")
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, d.incr, "k")
        assert await d.await_change("k", timeout=10, since=v) == 2
        with pytest.raises(TimeoutError):
            await d.await_change("k", timeout=0.1)
        seen = []
        loop.call_later(0.3, d.set, "a1", 1)
        loop.call_later(0.35, d.delete, "a1")
        async for ev in d.awatch("a*", timeout=0.6):
            seen.append(ev)
        return seen

    events = asyncio.run(main())
    assert events[0] == ("set", "a1") and events[-1] == ("delete", "a1")
