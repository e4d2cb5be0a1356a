"""Where a RedisDict's keys live: one server, the master a Sentinel names, or a Redis Cluster.

:class:`~shmdict._redis.RedisDict` runs every single-key operation on the
redis-py client this module builds (``Redis``, a Sentinel-managed ``Redis``,
or ``RedisCluster``: each routes a one-key command or script by itself). What
differs between the three is everything that touches more than one key, and
that goes through a :class:`Topology`:

- ``masters()``: a client per master, for ``SCAN``, ``INFO``, ``CONFIG`` and
  the keyspace notifications (a cluster node publishes only the events of its
  own keys, so ``watch`` subscribes on every master, ``wait`` on the key's);
- ``scan()``: one step of a scan over every master, behind one int cursor;
- ``run_grouped()`` / ``set_grouped()``: a script over keys that may lie in
  several hash slots. A Lua script may touch only keys of one slot, so on a
  cluster the keys are grouped by slot and each group is one script, all of
  them sent in one pipeline (one round trip per node). Each group is atomic;
  the whole call is atomic only when every key shares one slot (a prefix with
  a hash tag, ``prefix={app}:``, puts a whole dict in one slot).

SENTINEL. A call that needs a new connection while the master is down (killed,
being replaced) waits up to ``failover_timeout`` seconds for the Sentinels to
name a reachable master, then runs there; past the bound it raises
``Unavailable``. Only the *connecting* is retried: a request already sent when
its connection broke raises ``Unavailable`` at once, since it may have been
applied (resending an ``incr`` would count it twice). When no Sentinel answers
or none knows the service, it raises at once: that is a configuration error,
not a failover.

URLS (their parameters are shmdict's, redis-py's or refused)::

    redis+cluster://[[user]:password@]host:port[,host:port...][/0]?...
    redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/db]?failover_timeout=10&...

``rediss+`` means TLS (to the nodes, and to the Sentinels); ``valkey+`` and
``valkeys+`` are the same. The credentials are the data nodes'; Sentinels with
a password of their own take ``sentinel_kwargs={"password": ...}``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any, Optional
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis as _redis_py
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection

from ._redis_codec import redact

__all__ = ["CLUSTER", "SENTINEL", "Topology", "build"]

# Our spelling -> whether it means TLS. Valkey speaks the same protocol.
CLUSTER = {"redis+cluster": False, "rediss+cluster": True, "valkey+cluster": False, "valkeys+cluster": True}
SENTINEL = {"redis+sentinel": False, "rediss+sentinel": True, "valkey+sentinel": False, "valkeys+sentinel": True}

DEFAULT_FAILOVER_TIMEOUT = 10.0
_UNSET: Any = object()
_CURSOR_NODE_BITS = 16  # a cluster scan cursor: node cursor << 16 | index of the master


def _no_retry() -> Retry:
    # No automatic retry: resending an incr whose reply was lost would apply it twice.
    return Retry(NoBackoff(), 0)


# ---- one server ------------------------------------------------------------------------


class Topology:
    """One server holds every key: a plain URL, or the master a Sentinel names."""

    multi_slot = False

    def __init__(self, client: Any, db: int) -> None:
        self.client = client
        self.db = db

    def masters(self) -> list[Any]:
        """A client per master."""
        return [self.client]

    def master_for(self, key: bytes) -> Any:
        """A client for the master that holds ``key``."""
        return self.client

    def scan(self, cursor: int, match: bytes, count: int) -> tuple[int, list[bytes]]:
        nxt, raws = self.client.scan(cursor=cursor, match=match, count=count)
        return int(nxt), list(raws)

    def scan_iter(self, match: bytes, count: int = 1000) -> Iterator[bytes]:
        for node in self.masters():
            yield from node.scan_iter(match=match, count=count)

    def run_grouped(self, script: Any, keys: list[bytes], args: tuple[Any, ...] = ()) -> list[Any]:
        """The rows of a one-row-per-key ``script`` over ``keys``, in their order."""
        return list(script(keys=keys, args=list(args), client=self.client))

    def set_grouped(self, items: list[tuple[bytes, bytes]], ms: int) -> None:
        """Store every item (``PX ms`` when ``ms``): one ``MULTI``/``EXEC``, so no client sees a part of it."""
        p = self.client.pipeline(transaction=True)
        for k, v in items:
            p.set(k, v, px=ms or None)
        p.execute()

    def close(self) -> None:
        self.client.close()
        self.client.connection_pool.disconnect()


# ---- Sentinel --------------------------------------------------------------------------


class _Sentinel(Sentinel):
    """redis-py's Sentinel, plus the failover bound and the question "is this a failover?"."""

    failover_timeout = DEFAULT_FAILOVER_TIMEOUT

    def service_known(self, service: str) -> tuple[bool, list[str]]:
        """(whether a Sentinel that answers knows ``service``, what each other one said)."""
        said = []
        for s in self.sentinels:
            kw = s.connection_pool.connection_kwargs
            where = f"{kw.get('host')}:{kw.get('port')}"
            try:
                masters = s.sentinel_masters()
            except _redis_py.ResponseError as e:
                said.append(f"{where} is not a Sentinel ({e})")
                continue
            except _redis_py.RedisError as e:
                said.append(f"{where}: {e}")
                continue
            if service in masters:
                return True, said
            said.append(f"{where} does not know the service {service!r}")
        return False, said


class _FailoverConnection(SentinelManagedConnection):
    """A connection to the current master that, while a failover is under way,
    waits for the new master (see SENTINEL above). Connecting sends no request,
    so retrying it can never apply anything twice."""

    def connect(self) -> None:
        pool = self.connection_pool  # redis-py's pool proxy: service name and Sentinel manager
        mgr: _Sentinel = pool.sentinel_manager
        deadline: Optional[float] = None
        delay = 0.02
        while True:
            try:
                return super().connect()  # type: ignore[no-untyped-call,no-any-return]
            except _redis_py.AuthenticationError:
                raise
            except (_redis_py.ConnectionError, _redis_py.TimeoutError) as e:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + mgr.failover_timeout
                known, said = mgr.service_known(pool.service_name)
                if not known:
                    raise _redis_py.ConnectionError(
                        f"no Sentinel knows the master of {pool.service_name!r}: " + "; ".join(said)
                    ) from e
                if now >= deadline:
                    raise _redis_py.ConnectionError(
                        f"no reachable master for {pool.service_name!r} within "
                        f"failover_timeout={mgr.failover_timeout:g} s: {e}"
                    ) from e
                pool.reset()  # ask the Sentinels again
                time.sleep(min(delay, deadline - now))
                delay = min(delay * 2, 0.25)


class _FailoverSSLConnection(_FailoverConnection, SentinelManagedSSLConnection):
    pass


# ---- Redis Cluster --------------------------------------------------------------------


class _ClusterClient(RedisCluster):
    """RedisCluster whose own errors are redis-py errors, like every other
    client's: an unreachable cluster is a ConnectionError, keys of several
    slots in one command a ResponseError."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisClusterException as e:
            raise _cluster_error(e) from e


def _cluster_error(e: RedisClusterException) -> _redis_py.RedisError:
    if "same key slot" in str(e) or "same slot" in str(e):
        return _redis_py.ResponseError(str(e))
    return _redis_py.ConnectionError(f"Redis Cluster: {e}")


class ClusterTopology(Topology):
    """A Redis Cluster: keys spread over the masters by hash slot."""

    multi_slot = True

    def __init__(self, client: Any) -> None:
        super().__init__(client, 0)

    def masters(self) -> list[Any]:
        r = self.client
        return [r.get_redis_connection(n) for n in sorted(r.get_primaries(), key=lambda n: n.name)]

    def master_for(self, key: bytes) -> Any:
        r = self.client
        return r.get_redis_connection(r.get_node_from_key(key))

    def scan(self, cursor: int, match: bytes, count: int) -> tuple[int, list[bytes]]:
        # The cursor names a master (its index among the masters, sorted by
        # address) and that master's own cursor; 0 is the start and the end.
        # A master added or removed during a scan may make it skip or repeat keys.
        nodes = self.masters()
        i, cur = cursor & ((1 << _CURSOR_NODE_BITS) - 1), cursor >> _CURSOR_NODE_BITS
        if i >= len(nodes):
            return 0, []
        nxt, raws = nodes[i].scan(cursor=cur, match=match, count=count)
        nxt = int(nxt)
        if nxt == 0:
            i, nxt = i + 1, 0
            if i == len(nodes):
                return 0, list(raws)
        return nxt << _CURSOR_NODE_BITS | i, list(raws)

    def _groups(self, keys: list[bytes]) -> list[list[int]]:
        slots: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            slots.setdefault(self.client.keyslot(k), []).append(i)
        return list(slots.values())

    def _eval_grouped(self, script: str, keys: list[bytes], per_group_args: Any) -> list[tuple[list[int], Any]]:
        groups = self._groups(keys)
        try:
            p = self.client.pipeline(transaction=False)
            for g in groups:
                gk = [keys[i] for i in g]
                # EVAL, not EVALSHA: a node that never saw the script (new, failed over) needs no second round trip.
                p.execute_command("EVAL", script, len(gk), *gk, *per_group_args(g))
            return list(zip(groups, p.execute()))
        except RedisClusterException as e:
            raise _cluster_error(e) from e

    def run_grouped(self, script: Any, keys: list[bytes], args: tuple[Any, ...] = ()) -> list[Any]:
        out: list[Any] = [None] * len(keys)
        for g, rows in self._eval_grouped(script.script, keys, lambda g: args):
            for i, row in zip(g, rows):
                out[i] = row
        return out

    def set_grouped(self, items: list[tuple[bytes, bytes]], ms: int) -> None:
        """One script per hash slot: atomic per slot, not across slots."""
        keys = [k for k, _ in items]
        self._eval_grouped(_SET_MANY, keys, lambda g: [ms, *(items[i][1] for i in g)])

    def close(self) -> None:
        self.client.close()


# ARGV[1]: PX milliseconds (0: none); ARGV[i + 1]: the value of KEYS[i].
_SET_MANY = """
for i, k in ipairs(KEYS) do
  if ARGV[1] == '0' then redis.call('SET', k, ARGV[i + 1])
  else redis.call('SET', k, ARGV[i + 1], 'PX', ARGV[1]) end
end
return 1
"""


# ---- building a client from a URL --------------------------------------------------------


def _nodes(netloc: str, default_port: int, url: str) -> tuple[str, list[tuple[str, int]]]:
    """(userinfo with its "@" or "", [(host, port), ...]) from ``user:pw@h1:p1,h2:p2``."""
    userinfo, _, hosts = netloc.rpartition("@")
    out = []
    for h in hosts.split(","):
        u = urlsplit("//" + h)
        try:
            port = u.port or default_port
        except ValueError:
            raise ValueError(f"bad port in {h!r} of {redact(url)!r}") from None
        if not u.hostname:
            raise ValueError(f"expected host:port[,host:port...] in {redact(url)!r}, got {h!r}")
        out.append((u.hostname, port))
    return (userinfo + "@" if userinfo else ""), out


def _kwargs(userinfo: str, query: list[tuple[str, str]], db: int) -> dict[str, Any]:
    """Connection keyword arguments from the credentials and query, converted
    as redis-py converts a plain URL's."""
    from redis.connection import parse_url

    kw: dict[str, Any] = parse_url(  # type: ignore[no-untyped-call]
        f"redis://{userinfo}localhost/{db}" + (f"?{urlencode(query)}" if query else ""))
    for k in ("host", "port"):
        kw.pop(k, None)
    return kw


def build(url: str, options: dict[str, Any]) -> Topology:
    """The topology, and its client, that ``url`` names; ``options`` go to redis-py.

    Raises:
        ValueError: a malformed URL, or a cluster URL naming a server that is not a cluster node.
        redis.ConnectionError: no cluster node could be reached.
    """
    u = urlsplit(url)
    scheme = u.scheme.lower()
    if scheme in CLUSTER:
        return _build_cluster(url, u, CLUSTER[scheme], options)
    if scheme in SENTINEL:
        return _build_sentinel(url, u, SENTINEL[scheme], options)
    client = _redis_py.Redis.from_url(url, **options)
    return Topology(client, int(client.connection_pool.connection_kwargs.get("db") or 0))


def _build_cluster(url: str, u: Any, tls: bool, options: dict[str, Any]) -> Topology:
    if u.path not in ("", "/", "/0"):
        raise ValueError(f"a Redis Cluster has only database 0, so {redact(url)!r} may name no other path")
    userinfo, nodes = _nodes(u.netloc, 6379, url)
    kw = _kwargs(userinfo, parse_qsl(u.query, keep_blank_values=True), 0)
    kw.pop("db", None)
    kw.pop("connection_class", None)
    if tls:
        kw["ssl"] = True
    kw = {**options, **kw}  # the URL wins over keyword options, as in redis-py's from_url
    kw.pop("retry", None)  # RedisCluster takes its own, below
    try:
        client = _ClusterClient(
            startup_nodes=[ClusterNode(h, p) for h, p in nodes],  # type: ignore[no-untyped-call]
            retry=_no_retry(),
            require_full_coverage=False,
            **kw,
        )
    except RedisClusterException as e:
        if "Cluster mode is not enabled" in str(e):
            raise ValueError(
                f"{redact(url)!r} names a server that is not a Redis Cluster node: "
                "use redis://host:port for a single server"
            ) from e
        raise _cluster_error(e) from e
    return ClusterTopology(client)


def _build_sentinel(url: str, u: Any, tls: bool, options: dict[str, Any]) -> Topology:
    parts = [unquote(p) for p in u.path.split("/")[1:] if p != ""]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(
            f"expected redis+sentinel://host:port[,host:port...]/SERVICE[/db], got {redact(url)!r}: "
            "the path names the Sentinel service (the master's name in sentinel.conf)"
        )
    service, db = parts[0], int(parts[1]) if len(parts) == 2 else 0
    userinfo, sentinels = _nodes(u.netloc, 26379, url)
    query = parse_qsl(u.query, keep_blank_values=True)
    failover: object = _UNSET
    rest = []
    for k, v in query:
        if k == "failover_timeout":
            failover = v
        else:
            rest.append((k, v))
    kw = _kwargs(userinfo, rest, db)
    kw.pop("connection_class", None)
    kw = {**options, **kw}  # the URL wins over keyword options, as in redis-py's from_url
    failover = _failover_timeout(failover if failover is not _UNSET else kw.pop("failover_timeout", DEFAULT_FAILOVER_TIMEOUT))
    kw.pop("failover_timeout", None)
    sentinel_kwargs = dict(kw.pop("sentinel_kwargs", None) or {})
    for k in ("socket_connect_timeout", "socket_timeout"):
        sentinel_kwargs.setdefault(k, kw.get(k))
    if tls:
        sentinel_kwargs.setdefault("ssl", True)
    mgr = _Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
    mgr.failover_timeout = failover
    client = mgr.master_for(
        service,
        connection_pool_class=SentinelConnectionPool,
        connection_class=_FailoverSSLConnection if tls else _FailoverConnection,
        **kw,
    )
    return _SentinelTopology(client, db, mgr)


def _failover_timeout(v: object) -> float:
    """``failover_timeout``, from the URL (a str) or a keyword option: seconds from 0 to a day."""
    try:
        f = float(v) if isinstance(v, (str, int, float)) and not isinstance(v, bool) else math.nan
    except ValueError:
        f = math.nan
    if not 0 <= f <= 86400:  # NaN too
        raise ValueError(f"failover_timeout must be seconds from 0 to 86400, not {v!r}")
    return f


class _SentinelTopology(Topology):
    def __init__(self, client: Any, db: int, mgr: _Sentinel) -> None:
        super().__init__(client, db)
        self.sentinel = mgr

    def close(self) -> None:
        super().close()
        self.sentinel.close()


# ---- notifications -------------------------------------------------------------------------


class PubSubs:
    """Several pub/sub connections (a cluster's masters) read as one, in turn."""

    def __init__(self, subs: list[Any]) -> None:
        self.subs = subs
        self._next = 0

    def get_message(self, ignore_subscribe_messages: bool = False, timeout: float = 0.0) -> Optional[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        n = len(self.subs)
        while True:
            for j in range(n):
                i = (self._next + j) % n
                msg = self.subs[i].get_message(ignore_subscribe_messages=ignore_subscribe_messages, timeout=0)
                if msg is not None:
                    self._next = (i + 1) % n  # the others' turn next: no master starves another
                    return msg  # type: ignore[no-any-return]
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(0.005, left))

    def close(self) -> None:
        for ps in self.subs:
            ps.close()
