"""``shmdict.connect(url)``: one URL chooses the engine.

``shm://name?size=64m`` is a local shared-memory dict (:func:`shmdict.open`);
``redis://``, ``rediss://``, ``unix://`` and their Valkey spellings are a
:class:`~shmdict._redis.RedisDict` over redis-py; ``redis+cluster://`` and
``redis+sentinel://`` (and ``rediss+`` / ``valkey+`` / ``valkeys+``) are the
same dict on a Redis Cluster or behind Sentinel (shmdict/_redis_topology.py
builds those clients). Moving an app from one host to several is then a
configuration change.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

if TYPE_CHECKING:
    from ._dict import SharedDict
    from ._redis import RedisDict

__all__ = ["connect"]

_SHM = ("shm", "shmdict")
# Our spelling -> the scheme redis-py understands (Valkey speaks the same protocol).
_REDIS = {
    "redis": "redis",
    "rediss": "rediss",
    "unix": "unix",
    "redis+unix": "unix",
    "valkey": "redis",
    "valkeys": "rediss",
    "valkey+unix": "unix",
    # Cluster and Sentinel: shmdict/_redis_topology.py parses the rest.
    "redis+cluster": "redis+cluster",
    "rediss+cluster": "rediss+cluster",
    "valkey+cluster": "redis+cluster",
    "valkeys+cluster": "rediss+cluster",
    "redis+sentinel": "redis+sentinel",
    "rediss+sentinel": "rediss+sentinel",
    "valkey+sentinel": "redis+sentinel",
    "valkeys+sentinel": "rediss+sentinel",
}
_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_REDIS_PARAMS = frozenset({"prefix"})  # shmdict's own: never reach redis-py
# Why each parameter of a local dict has no place on a Redis URL (redis-py
# would take it for a connection argument and fail at the first operation).
_LOCAL_ONLY = {
    "size": "a Redis dict has no size of its own (the server's maxmemory bounds it)",
    "max_size": "a Redis dict has no per-dict size limit (the server's maxmemory bounds it, "
                "and the dict already grows that far)",
    "evict": "eviction is the server's maxmemory-policy",
    "mode": "a Redis dict is not a file",
    "group": "a Redis dict is not a file",
    "events": "watch() uses the server's keyspace notifications",
    "shared": "the server's ACLs decide who may use a Redis dict",
    "lock_timeout": "a Redis dict has no dict-wide lock (socket_timeout bounds each call)",
}


def connect(url: str, **options: Any) -> Union[SharedDict, RedisDict]:
    """A dict with the SharedDict API on the engine ``url`` names.

    - ``shm://NAME?size=64m[&max_size=1g][&mode=600][&group=G][&events=N][&evict=1][&lock_timeout=S][&shared=1|USER]``:
      attach to the local dict ``NAME``, or create it with that size and
      those options (:func:`shmdict.open`): an existing dict smaller than
      ``size`` grows to it, and ``max_size`` (a full dict grows itself up to
      it) and ``evict=1`` apply whether it attaches or creates. Without
      ``size``, attach only (:func:`shmdict.get`, which takes
      ``lock_timeout`` and ``shared``). ``lock_timeout=none`` removes the
      bound. ``shmdict://`` is the same.
    - ``redis://[[user]:password@]host[:port][/db]?prefix=myapp:``,
      ``rediss://`` (TLS), ``unix:///path/redis.sock?db=0&prefix=...``, and
      ``valkey://``, ``valkeys://``, ``valkey+unix://``: a
      :class:`RedisDict` over the keys starting with ``prefix`` (default: the
      whole database) — needs redis-py (the ``redis`` extra). Other query
      parameters (``socket_timeout``, ``protocol``, ...) and ``options`` go to
      ``redis.Redis.from_url``, except the local dict's (``size``,
      ``max_size``, ``evict``, ``mode``, ...), which are refused: the
      server's ``maxmemory`` bounds a Redis dict.
    - ``redis+cluster://[[user]:password@]host:port[,host:port...]/?prefix=app:``
      (and ``rediss+cluster://``, ``valkey+cluster://``,
      ``valkeys+cluster://``): the same dict on a Redis Cluster, its keys
      spread over every master (``prefix={app}:``, a hash tag, keeps them in
      one slot). ``connect`` contacts the nodes to learn the slots.
    - ``redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/db]?prefix=app:[&failover_timeout=10]``
      (and ``rediss+sentinel://``, ``valkey+sentinel://``,
      ``valkeys+sentinel://``): the master the Sentinels name for
      ``SERVICE``, followed across failovers; a call that needs a connection
      while the master is being replaced waits up to ``failover_timeout``
      seconds (default 10) for the new one.

    Args:
        url: the engine and dict, as above.
        options: keyword arguments for ``redis.Redis.from_url`` (Redis URLs only).

    Returns:
        A :class:`SharedDict` (never an owner) or a :class:`RedisDict`.

    Raises:
        ValueError: an unknown scheme, a missing name or Sentinel service,
            an unknown or malformed shmdict parameter, a local dict's
            parameter (``size``, ``max_size``, ...) on a Redis URL, or a
            cluster URL naming a server that is not a cluster node.
        shmdict.Unavailable: a cluster URL none of whose nodes answers.
        ImportError: a Redis URL without redis-py installed.
        FileNotFoundError: ``shm://NAME`` without ``size`` and no such dict.

    .. versionadded:: 0.1
    .. versionchanged:: 0.3 ``redis+cluster://`` and ``redis+sentinel://`` URLs.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    bad = next((c for c in url if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        # urlsplit silently drops tabs and newlines: "shm://a\nb" would open "ab".
        raise ValueError(f"control character {bad!r} in URL {url!r}: percent-encode it or remove it")
    u = urlsplit(url)
    scheme = u.scheme.lower()
    params = parse_qsl(u.query, keep_blank_values=True)
    if scheme in _SHM:
        return _connect_shm(url, u.netloc, u.path, params, options)
    if scheme in _REDIS:
        local = sorted({k for k, _ in params if k in _LOCAL_ONLY} | {k for k in options if k in _LOCAL_ONLY})
        if local:
            raise ValueError("; ".join(f"{k} is a shm:// parameter, refused on a Redis URL: {_LOCAL_ONLY[k]}"
                                       for k in local))
        if "failover_timeout" in {k for k, _ in params} | set(options) and "sentinel" not in scheme:
            raise ValueError(f"failover_timeout is a redis+sentinel:// parameter, refused on {u.scheme}:// "
                             "(which has no failover to wait for)")
        ours = {k: v for k, v in params if k in _REDIS_PARAMS}
        rest = [(k, v) for k, v in params if k not in _REDIS_PARAMS]
        # Built by hand: urlunsplit drops the "//" of "unix:///path" when the host is empty.
        query = urlencode(rest)
        redis_url = f"{_REDIS[scheme]}://{u.netloc}{u.path}" + (f"?{query}" if query else "")
        from ._redis import RedisDict

        return RedisDict(redis_url, ours.get("prefix", ""), **options)
    raise ValueError(
        f"unsupported URL scheme {u.scheme!r} in {url!r}: use shm://, redis://, rediss://, unix://, valkey://, "
        "valkeys://, redis+cluster:// or redis+sentinel://"
    )


def _connect_shm(
    url: str, netloc: str, path: str, params: list[tuple[str, str]], options: dict[str, Any]
) -> SharedDict:
    from ._dict import get, open

    if options:
        raise TypeError(f"shm:// URLs take no keyword options, got {sorted(options)}")
    name = unquote(netloc or path.lstrip("/"))
    if not name or (netloc and path not in ("", "/")):
        raise ValueError(f"expected shm://NAME?size=64m, got {url!r}")
    q = dict(params)
    accepted = set(inspect.signature(open).parameters) - {"name"}  # what this build's open() takes
    unknown = set(q) - accepted
    if unknown or len(q) != len(params):
        raise ValueError(f"unknown or repeated parameter(s) {sorted(unknown) or 'repeated'} in {url!r}")
    kw: dict[str, Any] = {}
    for k, v in q.items():
        if k == "mode":
            try:
                kw[k] = int(v, 8)
            except ValueError:
                raise ValueError(f"mode must be octal such as 600 or 0o600, not {v!r}") from None
            if kw[k] & ~0o666 or kw[k] < 0:
                raise ValueError(f"mode must hold read/write bits only (a subset of 666), not {v!r}")
        elif k == "lock_timeout":
            if v.lower() in ("none", ""):
                kw[k] = None
            else:
                try:
                    kw[k] = float(v)
                except ValueError:
                    raise ValueError(f"lock_timeout must be seconds such as 5 or 0.5, or none, not {v!r}") from None
        elif k == "shared":
            kw[k] = _BOOLS[v.lower()] if v.lower() in _BOOLS else v  # yes/no, or a user name or uid
        elif k == "events":
            if not v.isdigit():
                raise ValueError(f"events must be a count such as 1024, not {v!r}")
            kw[k] = int(v)
        elif k == "evict":
            if v.lower() not in _BOOLS:
                raise ValueError(f"evict must be 1/0, true/false or yes/no, not {v!r}")
            kw[k] = _BOOLS[v.lower()]
        elif k != "size":
            kw[k] = v
    if "size" not in q:
        extra = set(kw) - {"lock_timeout", "shared"}
        if extra:
            raise ValueError(f"{sorted(extra)} need size= too (the size to create the dict with, or grow it to): "
                             f"without size, shm://NAME only attaches")
        return get(name, **kw)
    # open() creates the dict with this size, or attaches to it and grows it
    # to this size if it is smaller (a larger dict keeps its size).
    return open(name, q["size"], **kw)
