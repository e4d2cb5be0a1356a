"""Redis Cluster and Sentinel beyond the shared contract (which tests/test_contract.py
runs on both): where a cluster dict's keys live, notifications from every master,
the URL forms and their errors (each within a time bound: never a hang), a
Sentinel failover followed without reconnecting, and Django on a cluster URL."""

from __future__ import annotations

import pickle
import signal
import time
import uuid

import pytest
from redis_fixture import (  # noqa: F401
    free_port,
    redis_available,
    redis_cluster,
    redis_sentinel,
    start_sentinel,
    stop_redis,
)

import shmdict


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def cd(redis_cluster):  # noqa: F811
    """A cluster dict under a fresh prefix, flushed afterwards."""
    d = shmdict.connect(redis_cluster.url(_prefix()))
    yield d
    if d.closed:
        d = shmdict.connect(redis_cluster.url(d.name))
    d.flush_all()
    d.close()


def _node_counts(cluster, prefix: str) -> list[int]:
    """How many keys under ``prefix`` each cluster node holds."""
    import redis

    out = []
    for port in cluster.ports:
        c = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        out.append(sum(1 for _ in c.scan_iter(match=prefix.encode() + b"*")))
        c.close()
    return out


# ---- Redis Cluster -----------------------------------------------------------------------------


def test_cluster_keys_spread_over_every_master(cd, redis_cluster):  # noqa: F811
    """A dict's keys spread over all three masters, and len/get_keys/items/scan see all of them."""
    cd.set_many({f"k{i}": i for i in range(60)})
    counts = _node_counts(redis_cluster, cd.name)
    assert len(counts) == 3 and all(c > 0 for c in counts) and sum(counts) == 60
    assert len(cd) == 60 and sorted(cd.get_keys()) == sorted(f"k{i}" for i in range(60))
    assert dict(cd.items()) == {f"k{i}": i for i in range(60)}
    seen, cur = set(), 0
    while True:
        cur, batch = cd.scan(cur, count=7)
        seen.update(batch)
        if cur == 0:
            break
    assert seen == {f"k{i}" for i in range(60)}
    cd.flush_all()
    assert _node_counts(redis_cluster, cd.name) == [0, 0, 0] and len(cd) == 0


def test_cluster_hash_tag_prefix_keeps_a_dict_on_one_master(redis_cluster):  # noqa: F811
    """A prefix with a hash tag ({app}:) puts every key of the dict in one slot, so on one master."""
    prefix = "{" + uuid.uuid4().hex[:8] + "}:"
    with shmdict.connect(redis_cluster.url(prefix)) as d:
        d.set_many({f"k{i}": i for i in range(30)})
        assert d._topo._groups([d._k(f"k{i}") for i in range(30)]) == [list(range(30))]  # one script, atomic
        assert sorted(_node_counts(redis_cluster, prefix)) == [0, 0, 30]
        assert d.get_many(["k1", "k29", "zz"]) == {"k1": 1, "k29": 29}
        d.flush_all()


def test_cluster_multi_key_calls_across_slots(cd):
    """get_many, set_many (with a TTL) and dump/load work on keys of many slots, lists included."""
    import io

    keys = [f"key-{i}" for i in range(40)]
    cd.set_many({k: k.upper() for k in keys}, exptime=50)
    cd.rpush("list", 1)
    cd.rpush("list", "two")
    got = cd.get_many([*keys, "list", "missing"])
    assert got == {**{k: k.upper() for k in keys}, "list": [1, "two"]}
    assert all(49 < cd.ttl(k) <= 50 for k in keys[:5])
    buf = io.BytesIO()
    assert cd.dump(buf) == 41
    cd.flush_all()
    buf.seek(0)
    assert cd.load(buf) == 41 and cd.get_many(["list", "key-7"]) == {"list": [1, "two"], "key-7": "KEY-7"}
    assert 49 < cd.ttl("key-7") <= 50


def test_cluster_watch_hears_every_master(cd):
    """watch subscribes on every master: changes of keys on each of them arrive."""
    rc = cd.client
    by_node: dict[str, str] = {}
    i = 0
    while len(by_node) < 3:
        k = f"w{i}"
        by_node.setdefault(rc.get_node_from_key(cd._k(k)).name, k)
        i += 1
    w = cd.watch("w*", timeout=0.3)
    for k in by_node.values():
        cd[k] = 1
    events = list(w)
    assert {e.key for e in events if e.op == "set"} == set(by_node.values())


def test_cluster_wait_on_any_master(cd):
    """wait on keys held by different masters returns on each change."""
    import threading

    for k in ("a", "b", "c", "d"):
        cd[k] = 0
        v = cd.version(k)
        t = threading.Timer(0.05, cd.incr, (k,))
        t.start()
        assert cd.wait(k, 5, since=v) == 1
        t.join()


def test_cluster_pickle_and_url_spellings(cd, redis_cluster):  # noqa: F811
    """A cluster dict pickles by URL; valkey+cluster:// reaches the same cluster; the URL hides a password."""
    cd["k"] = "v"
    clone = pickle.loads(pickle.dumps(cd))
    try:
        assert clone["k"] == "v" and clone.url == cd.url
    finally:
        clone.close()
    with shmdict.connect(redis_cluster.url(cd.name).replace("redis+cluster://", "valkey+cluster://")) as v:
        assert v["k"] == "v"
    assert type(cd.client).__name__ == "_ClusterClient"


def test_cluster_locks_and_limits_across_processes(cd):
    """Named locks and the rate limiter work on a cluster from several processes."""
    from redis_fixture import fork_children, wait_pids

    url = cd._url
    prefix = cd.name

    def child(i: int) -> None:
        d = shmdict._redis.RedisDict(url, prefix)
        for _ in range(20):
            with d.lock("job", timeout=10):
                d.incr("inside", init=0)
                assert d["inside"] == 1
                d.incr("inside", -1)
            d.incr("total", init=0)
        d.limit("api", rate=5, per=60)

    assert wait_pids(fork_children(3, child)) == [0, 0, 0]
    assert cd["total"] == 60 and cd["inside"] == 0
    assert cd.limit("api", rate=5, per=60)[1] == 1  # 3 of 5 used by the children, this is the 4th


@pytest.mark.slow
def test_cluster_master_failover_is_followed(tmp_path):
    """A cluster master with a replica is SIGKILLed: calls fail with Unavailable (never anything
    else) until the cluster promotes the replica, then the same handle works again, the
    replicated data included."""
    from redis_fixture import start_cluster

    redis_available()
    cluster = start_cluster(str(tmp_path), masters=3, replicas=1, node_timeout_ms=2000)
    try:
        d = shmdict.connect(cluster.url(_prefix()))
        node0 = f"127.0.0.1:{cluster.ports[0]}"
        keys = [k for k in (f"k{i}" for i in range(200)) if d.client.get_node_from_key(d._k(k)).name == node0]
        d.set_many({k: 1 for k in keys})
        assert cluster.nodes[0].client().execute_command("WAIT", 1, 2000) == 1  # the replica has them
        cluster.nodes[0].proc.send_signal(signal.SIGKILL)
        cluster.nodes[0].proc.wait()
        t = time.monotonic()
        while True:
            try:
                assert d.incr(keys[0]) == 2
                break
            except shmdict.Unavailable:
                assert time.monotonic() - t < 20, "no failover within 20 s"
                time.sleep(0.1)
        assert d.get_many(keys) == {keys[0]: 2, **{k: 1 for k in keys[1:]}}
        assert len(d) == len(keys)
        d.close()
    finally:
        cluster.stop()


def test_cluster_url_options_reach_every_node(redis_cluster):  # noqa: F811
    """Query parameters (converted as on a redis:// URL) and keyword options reach the
    connections to every node; a password in the URL is redacted from ``url``."""
    with shmdict.connect(redis_cluster.url(_prefix()) + "&socket_timeout=7", socket_keepalive=True) as d:
        d["k"] = 1
        for node in d.client.get_primaries():
            kw = d.client.get_redis_connection(node).connection_pool.connection_kwargs
            assert kw["socket_timeout"] == 7.0 and kw["socket_keepalive"] is True
        d.flush_all()
    url = redis_cluster.url("p:").replace("redis+cluster://", "redis+cluster://:secret@")
    with shmdict.connect(url) as d:  # (the nodes need no password: this checks what url shows)
        assert "secret" not in d.url and "secret" not in repr(d) and "***" in d.url


@pytest.mark.parametrize("path", ["/1", "/0/x"])
def test_cluster_url_with_a_database_is_valueerror(path):
    """A cluster has only database 0: another path is refused before any I/O."""
    redis_available()
    with pytest.raises(ValueError, match="database 0"):
        shmdict.connect(f"redis+cluster://127.0.0.1:{free_port()}{path}?prefix=p:")


def test_unreachable_cluster_is_unavailable_quickly():
    """No node answers: Unavailable from connect, at once."""
    redis_available()
    t = time.monotonic()
    with pytest.raises(shmdict.Unavailable, match="cannot be connected|Connection refused"):
        shmdict.connect(f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/?prefix=p:")
    assert time.monotonic() - t < 3


def test_plain_server_as_cluster_is_valueerror_quickly(tmp_path):
    """A single server named by a cluster URL: a ValueError that says so, at once."""
    redis_available()
    from redis_fixture import start_tcp_redis

    port = free_port()
    server = start_tcp_redis(str(tmp_path), port)
    try:
        t = time.monotonic()
        with pytest.raises(ValueError, match="not a Redis Cluster node"):
            shmdict.connect(f"redis+cluster://127.0.0.1:{port}/?prefix=p:")
        assert time.monotonic() - t < 3
    finally:
        stop_redis(server.proc)


def test_bad_node_lists_are_valueerror():
    """An empty host or a bad port in the node list is a ValueError."""
    redis_available()
    for url in ("redis+cluster://127.0.0.1:1,/", "redis+cluster://127.0.0.1:x/", "redis+sentinel://h:99999/svc"):
        with pytest.raises(ValueError):
            shmdict.connect(url)


def test_django_cache_on_a_cluster_url(redis_cluster):  # noqa: F811
    """The Django backend builds its dict through connect(): a cluster URL as LOCATION works."""
    pytest.importorskip("django")
    import test_contrib_django  # noqa: F401  (configures Django settings)
    from shmdict.contrib.django import SharedDictCache

    cache = SharedDictCache(redis_cluster.url(_prefix()), {})
    try:
        assert type(cache._dict.client).__name__ == "_ClusterClient"
        assert cache.set_many({f"x{i}": i for i in range(20)}) == []
        assert cache.get_many(["x1", "x19", "nope"]) == {"x1": 1, "x19": 19}
        cache.set("n", 41)
        assert cache.incr("n") == 42
        cache.clear()
        assert cache.get("x1") is None
    finally:
        cache.clear()


# ---- Sentinel ----------------------------------------------------------------------------------


def test_sentinel_reaches_the_master(redis_sentinel):  # noqa: F811
    """Writes through a sentinel URL land on the master and reach the replica."""
    import redis

    prefix = _prefix()
    with shmdict.connect(redis_sentinel.url(prefix)) as d:
        d["k"] = 1
        master = redis.Redis(host="127.0.0.1", port=redis_sentinel.master_port())
        assert master.get(f"{prefix}k".encode()) == b"1"
        assert master.role()[0] == b"master"
        with shmdict.connect(redis_sentinel.url(prefix).replace("redis+sentinel", "valkey+sentinel")) as v:
            assert v["k"] == 1
        d.flush_all()


@pytest.mark.parametrize("url", ["redis+sentinel://127.0.0.1:1/", "redis+sentinel://127.0.0.1:1",
                                 "redis+sentinel://127.0.0.1:1/svc/x", "redis+sentinel://127.0.0.1:1/svc/0/1"])
def test_sentinel_url_without_service_is_valueerror(url):
    """A sentinel URL names its service: without one (or with a bad db) it is a ValueError, before any I/O."""
    redis_available()
    with pytest.raises(ValueError, match="SERVICE"):
        shmdict.connect(url + "?prefix=p:")


@pytest.mark.parametrize("bad", ["-1", "nan", "x", "1e9", ""])
def test_sentinel_bad_failover_timeout_is_valueerror(bad):
    """failover_timeout is seconds from 0 to a day, in the URL or as a keyword option;
    other URLs refuse it."""
    redis_available()
    with pytest.raises(ValueError, match="failover_timeout"):
        shmdict.connect(f"redis+sentinel://127.0.0.1:1/svc?failover_timeout={bad}")
    with pytest.raises(ValueError, match="failover_timeout"):
        shmdict.connect("redis+sentinel://127.0.0.1:1/svc", failover_timeout=bad)
    for url in ("redis://127.0.0.1:1/0?failover_timeout=1", f"redis+cluster://127.0.0.1:{free_port()}/?failover_timeout=1"):
        with pytest.raises(ValueError, match="redis\\+sentinel"):
            shmdict.connect(url)
    with shmdict.connect("redis+sentinel://127.0.0.1:1/svc", failover_timeout=2.5) as d:
        assert d._topo.sentinel.failover_timeout == 2.5


def test_sentinel_errors_are_unavailable_quickly(redis_sentinel, tmp_path):  # noqa: F811
    """No Sentinel answering, an unknown service, or a plain server given as a Sentinel:
    Unavailable at the first call, at once (not after failover_timeout), saying why."""
    from redis_fixture import start_tcp_redis

    plain_port = free_port()
    plain = start_tcp_redis(str(tmp_path), plain_port)
    try:
        for url, why in [
            (f"redis+sentinel://127.0.0.1:{free_port()}/svc", "refused|connecting"),
            (f"redis+sentinel://127.0.0.1:{redis_sentinel.sentinel_port}/nosuch", "does not know the service"),
            (f"redis+sentinel://127.0.0.1:{plain_port}/svc", "is not a Sentinel"),
        ]:
            d = shmdict.connect(url + "?prefix=p:&failover_timeout=30")
            t = time.monotonic()
            with pytest.raises(shmdict.Unavailable, match=why):
                d.get("k")
            assert time.monotonic() - t < 3, url
            d.close()
    finally:
        stop_redis(plain.proc)


def test_sentinel_failover_is_followed_without_reconnecting(tmp_path):
    """The master is SIGKILLed. A request in flight at that moment raises Unavailable at once (it may
    have been applied); the next call on the same handle waits for the Sentinel to promote the
    replica and works there, with the replicated data; with failover_timeout=0 a call made during
    the failover raises Unavailable at once instead; with no master left, a call gives up after
    failover_timeout."""
    import threading

    redis_available()
    setup = start_sentinel(str(tmp_path), down_after_ms=300)
    try:
        prefix = _prefix()
        d = shmdict.connect(setup.url(prefix))
        impatient = shmdict.connect(setup.url(prefix, "&failover_timeout=0"))
        brief = shmdict.connect(setup.url(prefix, "&failover_timeout=0.5"))
        d.set_many({f"k{i}": i for i in range(50)})
        d.incr("n", init=0)
        assert impatient["n"] == 1 and brief["n"] == 1
        old = setup.master_port()
        assert d.client.execute_command("WAIT", 1, 2000) == 1  # the replica has every write
        master = setup.servers[old].proc

        in_flight = shmdict.connect(setup.url(prefix))
        in_flight["x"] = 0  # connected
        outcome: list[object] = []

        def call() -> None:
            try:
                outcome.append(in_flight.incr("x"))
            except BaseException as e:
                outcome.append(e)
            outcome.append(time.monotonic())

        master.send_signal(signal.SIGSTOP)  # the request is sent, the reply never comes
        th = threading.Thread(target=call)
        th.start()
        time.sleep(0.1)
        killed = time.monotonic()
        master.send_signal(signal.SIGKILL)
        master.wait()
        th.join(10)
        assert isinstance(outcome[0], shmdict.Unavailable) and outcome[1] - killed < 1  # type: ignore[operator]

        t = time.monotonic()
        with pytest.raises(shmdict.Unavailable):
            impatient.get("n")
        assert time.monotonic() - t < 1

        t = time.monotonic()
        assert d.incr("n") == 2  # waits for the new master, no reconnect by the caller
        assert time.monotonic() - t < 10
        new = setup.master_port()
        assert new != old
        assert d.get_many([f"k{i}" for i in range(50)]) == {f"k{i}": i for i in range(50)}
        assert impatient["n"] == 2 and in_flight["x"] in (0, 1)  # the handles find the new master too

        setup.servers[new].proc.send_signal(signal.SIGKILL)  # no replica left to promote
        setup.servers[new].proc.wait()
        t = time.monotonic()
        with pytest.raises(shmdict.Unavailable, match="failover_timeout=0.5"):
            brief.get("n")
        assert 0.4 < time.monotonic() - t < 3
        for h in (d, impatient, brief, in_flight):
            h.close()
    finally:
        setup.stop()
