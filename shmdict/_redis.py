"""``RedisDict``: the SharedDict API over Redis or Valkey, through redis-py.

Every operation is one Redis command or one Lua script, so it is atomic on
the server with respect to every client, on every host. The dict is the set
of keys that start with ``prefix`` in one Redis database.

ENCODING: shmdict/_redis_codec.py (one Redis string per value, readable in
redis-cli; ints plain, so ``INCRBY`` works on them).

INTERNAL KEYS. Locks and single-flight markers live at ``prefix + b"\\xff"
+ ...``. No UTF-8 string starts with the byte 0xff, so no user key can ever
collide with them; scans skip them.

CLUSTER AND SENTINEL. The key names are the same on every topology: no
script touches a second key (a version, an event log), so no key has to
share a hash tag with another, and a dict moves between ``redis://`` and
``redis+cluster://`` unchanged. shmdict/_redis_topology.py builds the client
and runs what touches several keys (scans, ``get_many``, ``set_many``,
subscriptions) on every master or per hash slot.

TIME. TTLs are Redis's own (``PX``/``PTTL``, millisecond resolution, the
server's clock). ``limit`` reads the server's ``TIME``, so every client shares
one clock.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, MutableMapping
from fnmatch import fnmatchcase
from typing import Any, Callable, NoReturn, Optional, Union
from urllib.parse import urlsplit, urlunsplit

from ._api import DictAPI, Event, LockAPI, implements
from . import _timeouts
from ._notify import _in_thread
from ._lib import encode_key, number, parse_size, seconds, value_type
from ._redis_codec import _raise, decode, encode, fmt_float, redact
from .exceptions import CorruptError, Error, Full, Unavailable

try:  # the optional extra: shmdict[redis]
    import redis as _redis_py
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - exercised only without the extra
    _redis_py = None  # type: ignore[assignment]

__all__ = ["RedisDict", "RedisLock"]

Value = Union[bool, int, float, str, bytes]

_MISSING: Any = object()
_ASYNC_SLICE = 0.25  # seconds an executor thread waits before the loop checks for cancellation
_INTERNAL = b"\xff"  # see INTERNAL KEYS above
_MAX_MS = 1 << 62  # PX beyond this overflows Redis's absolute deadline: treat as "very long"
_GLOB_SPECIAL = {ord(c): "\\" + c for c in "*?[]\\"}


def _ms(exptime: object, what: str = "exptime") -> int:
    """Milliseconds for PX: 0 means no expiry; a positive exptime is at least
    1 ms (rounded up: a key never expires before it was asked to)."""
    f = seconds(exptime, what)
    if f <= 0:
        return 0
    ms = f * 1000.0
    return _MAX_MS if ms >= _MAX_MS else max(1, math.ceil(ms))


def _count(value: object, what: str) -> int:
    """A non-negative int argument (as SharedDict checks them)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, not {value}")
    return value


def _num_arg(value: object, what: str) -> tuple[bytes, bytes]:
    """(type tag, text) of an incr operand, validated as SharedDict.incr does."""
    t, i, f = number(value, what)
    if isinstance(value, int):
        return b"i", b"%d" % i
    return b"f", b"%.17g" % f


# ---- Lua scripts ---------------------------------------------------------------
# Each touches one key (plus the server clock), so each is atomic and
# cluster-safe -- except _GET_MANY, which reads many, and which a Redis
# Cluster therefore runs once per hash slot (shmdict/_redis_topology.py).
# Results travel as strings: Lua numbers are doubles and would round an int64.

_INCR = """
local k = KEYS[1]
local delta, dt, it, init, init_ms, ex = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local t = redis.call('TYPE', k)['ok']
local ttl_ms
if t == 'none' then
  if it == '' then return {0} end
  if it == 'i' and dt == 'i' then
    redis.call('SET', k, init)
    local r = redis.pcall('INCRBY', k, delta)
    if type(r) == 'table' and r['err'] then
      redis.call('DEL', k)
      return {2}
    end
  else
    local a, d = tonumber(init), tonumber(delta)
    local s = a + d
    if math.abs(a) ~= math.huge and math.abs(d) ~= math.huge and math.abs(s) == math.huge then return {2} end
    redis.call('SET', k, 'f:' .. string.format('%.17g', s))
  end
  ttl_ms = init_ms
  if ex ~= '' then ttl_ms = ex end
  if ttl_ms ~= '0' then redis.call('PEXPIRE', k, ttl_ms) end
  return {1, redis.call('GET', k)}
end
if t ~= 'string' then return {3} end
local v = redis.call('GET', k)
local isint = string.find(v, '^%-?%d+$') ~= nil
if isint and dt == 'i' then
  local r = redis.pcall('INCRBY', k, delta)
  if type(r) == 'table' and r['err'] then
    if string.find(r['err'], 'overflow') then return {2} end
    return {4, v}
  end
elseif isint or string.sub(v, 1, 2) == 'f:' then
  local a
  if isint then a = tonumber(v) else a = tonumber(string.sub(v, 3)) end
  if a == nil then return {4, v} end
  local d = tonumber(delta)
  local s = a + d
  if math.abs(a) ~= math.huge and math.abs(d) ~= math.huge and math.abs(s) == math.huge then return {2} end
  redis.call('SET', k, 'f:' .. string.format('%.17g', s), 'KEEPTTL')
else
  local tag = string.sub(v, 1, 2)
  if tag == 's:' or tag == 'b:' or v == 'T' or v == 'F' then return {3} end
  return {4, v}
end
if ex ~= '' then
  if ex == '0' then redis.call('PERSIST', k) else redis.call('PEXPIRE', k, ex) end
end
return {1, redis.call('GET', k)}
"""

# One row per key: {0} missing (or not ours), {1, value}, {2, elements...} a list.
_GET_MANY = """
local out = {}
for i, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k)['ok']
  if t == 'string' then
    out[i] = {1, redis.call('GET', k)}
  elseif t == 'list' then
    local e = redis.call('LRANGE', k, 0, -1)
    table.insert(e, 1, 2)
    out[i] = e
  else
    out[i] = {0}
  end
end
return out
"""

_EXPIRE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '0' then redis.call('PERSIST', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""

_SETDEFAULT = """
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

# 1 swapped, 0 not swapped (a list never matches, as in C). ARGV[4] == '1':
# swap only if absent (expected=None). Floats compare as numbers, as in C: -0.0
# matches 0.0 and NaN matches nothing.
_CAS = """
local t = redis.call('TYPE', KEYS[1])['ok']
if ARGV[4] == '1' then
  if t ~= 'none' then return 0 end
else
  if t ~= 'string' then return 0 end
  local v, e = redis.call('GET', KEYS[1]), ARGV[1]
  if string.sub(v, 1, 2) == 'f:' and string.sub(e, 1, 2) == 'f:' then
    if tonumber(string.sub(v, 3)) ~= tonumber(string.sub(e, 3)) then return 0 end
  elseif v ~= e then
    return 0
  end
end
if ARGV[3] == '0' then redis.call('SET', KEYS[1], ARGV[2])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
"""

# GCRA, the same algorithm as the C core's shmdict_limit (csrc/limit.c): the
# key holds the theoretical arrival time TAT as a plain int (microseconds of
# the server's TIME) and expires at TAT, when the bucket is full again. With
# emission interval T = per / rate and a bucket of L = (rate + burst) * T, a
# request at `now` is admitted iff max(TAT, now) + T - now <= L; then TAT
# advances by T. A refused request writes nothing. ARGV: T, L (integer
# microseconds). Returns {admitted, remaining, reset_after_us}, or {-1} when
# the key holds something other than an int.
_LIMIT = """
local k = KEYS[1]
local T, L = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local tat = now
local t = redis.call('TYPE', k)['ok']
if t == 'string' then
  local v = redis.call('GET', k)
  if not string.find(v, '^%-?%d+$') then return {-1} end
  local stored = tonumber(v)
  if stored > now then tat = stored end
elseif t ~= 'none' then
  return {-1}
end
local nxt = tat + T
if nxt - now > L then return {0, 0, string.format('%.0f', tat - now)} end
redis.call('SET', k, string.format('%.0f', nxt), 'PX', string.format('%.0f', math.ceil((nxt - now) / 1000)))
return {1, math.floor((L - (nxt - now)) / T), string.format('%.0f', nxt - now)}
"""

# A key's version: 0 while missing, else 28 bits of a SHA-1 of its content
# (DUMP: value and type) and absolute expiry, plus 1. Redis keeps no change
# counter, so this changes whenever the value or TTL differs -- but not when
# the same value is stored again.
_VERSION = """
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return 0 end
local e = redis.pcall('PEXPIRETIME', k)
if type(e) == 'table' then e = '' end
return tonumber(string.sub(redis.sha1hex(redis.call('DUMP', k) .. '|' .. e), 1, 7), 16) + 1
"""

# Keyspace-notification event -> the op SharedDict.watch reports.
_EVENT_OPS = {b"del": "delete", b"rename_from": "delete", b"expired": "expire", b"evicted": "evict"}

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


# ---- errors ----------------------------------------------------------------------


def _glob_escape(b: bytes) -> bytes:
    return b.decode("latin-1").translate(_GLOB_SPECIAL).encode("latin-1")


# ---- the dict ---------------------------------------------------------------------


@implements(DictAPI)
class RedisDict(MutableMapping[str, Value]):
    """The SharedDict API over one Redis/Valkey database and key prefix.

    Create one with :func:`shmdict.connect`. Every operation is one Redis
    command or one Lua script, atomic for every client of the server; values
    keep their type; keys may carry a TTL. Safe to share between threads; a
    forked child gets fresh connections (redis-py's pool checks the pid).

    .. versionadded:: 0.1
    """

    def __init__(self, url: str, prefix: str = "", **options: Any) -> None:
        # Private: use shmdict.connect(url). ``url`` has shmdict's own
        # parameters stripped already; ``options`` go to redis-py.
        if _redis_py is None:
            raise ImportError("shmdict.connect('redis://...') needs redis-py, which is not installed: "
                              "pip install 'redis>=5' (the 'redis' extra of shmdict: pip install '.[redis]' "
                              "from shmdict's source folder)")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        self._url = url
        self._options = options
        self._prefix = prefix
        self._p = prefix.encode()
        self._ip = self._p + _INTERNAL
        self._match = _glob_escape(self._p)
        options.setdefault("socket_connect_timeout", 5.0)
        options.setdefault("socket_timeout", 30.0)
        # No automatic retry: resending an incr whose reply was lost would
        # apply it twice. A failed call raises Unavailable; the next call
        # reconnects.
        options.setdefault("retry", Retry(NoBackoff(), 0))
        from ._redis_topology import build

        # One server, a Sentinel's master or a Cluster (shmdict/_redis_topology.py):
        # single-key calls go to its client, multi-key ones through the topology.
        try:
            self._topo = build(url, options)
        except _redis_py.RedisError as e:
            _raise(e)
        r = self._topo.client
        self._r: Any = r
        self._incr = r.register_script(_INCR)
        self._expire = r.register_script(_EXPIRE)
        self._setdefault = r.register_script(_SETDEFAULT)
        self._cas = r.register_script(_CAS)
        self._limit = r.register_script(_LIMIT)
        self._unlock = r.register_script(_UNLOCK)
        self._version = r.register_script(_VERSION)
        self._get_many = r.register_script(_GET_MANY)
        self._notify_ok = False
        self._extend = r.register_script(_EXTEND)

    # ---- attributes -------------------------------------------------------

    @property
    def name(self) -> str:
        """On Redis: the key prefix that names this dict inside the database."""
        return self._prefix

    @property
    def url(self) -> str:
        """The server URL, password redacted."""
        return redact(self._url)

    @property
    def size(self) -> int:
        """On Redis: always ``0``; a Redis dict has no fixed size (the server's ``maxmemory`` bounds it)."""
        return 0

    def resize(self, size: Union[int, str]) -> None:
        """On Redis: checks ``size`` and does nothing else. A Redis dict has no
        size of its own: it already grows as far as the server's ``maxmemory``
        lets it, which is what a resize asks for. (A ``max_size`` limit has no
        Redis counterpart: ``redis://`` URLs refuse it.)"""
        self._c()
        parse_size(size)

    @property
    def owner(self) -> bool:
        """On Redis: always ``False``; nobody's close removes a Redis dict."""
        return False

    @property
    def closed(self) -> bool:
        return self._r is None

    @property
    def client(self) -> Any:
        """The underlying redis-py client (for what shmdict does not wrap): a
        ``redis.Redis``, or a ``redis.cluster.RedisCluster`` for a cluster URL."""
        return self._c()

    def __repr__(self) -> str:
        state = "closed" if self._r is None else self.url
        return f"<RedisDict {self._prefix!r} {state}>"

    def _c(self) -> Any:
        r = self._r
        if r is None:
            raise ValueError(f"operation on closed RedisDict {self._prefix!r}")
        return r

    def _k(self, key: object) -> bytes:
        return self._p + encode_key(key)

    def _user_key(self, raw: bytes) -> Optional[str]:
        """The user's key for a scanned Redis key, or None to skip it
        (internal keys; keys that are not UTF-8, which shmdict never writes)."""
        rest = raw[len(self._p) :]
        if not raw.startswith(self._p) or not rest or rest[:1] == _INTERNAL:
            return None
        try:
            return rest.decode()
        except UnicodeDecodeError:
            return None

    # ---- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """On Redis: closes this handle's connections; the data stays."""
        r, self._r = self._r, None
        if r is not None:
            self._topo.close()

    def __enter__(self) -> RedisDict:
        self._c()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Reconnect by URL in the receiving process (the URL carries any password).
        return (_reconnect, (self._url, self._prefix))

    # ---- reads ------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """On Redis: a key that holds a list raises ``TypeError``."""
        k = self._k(key)
        try:
            raw = self._c().get(k)
        except _redis_py.RedisError as e:
            _raise(e, key)
        return default if raw is None else decode(raw)

    def __getitem__(self, key: str) -> Value:
        v = self.get(key, _MISSING)
        if v is _MISSING:
            raise KeyError(key)
        return v  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        k = self._k(key)
        try:
            return bool(self._c().exists(k))
        except _redis_py.RedisError as e:
            _raise(e, key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """On Redis: one Lua script reads them all, a consistent snapshot of those
        keys; on a Redis Cluster, one script per hash slot (all sent at once), so
        each key is read whole but keys of different slots at slightly different
        instants."""
        if isinstance(keys, (str, bytes)):
            raise TypeError("get_many takes an iterable of keys, not a single str")
        names = list(dict.fromkeys(keys))
        ks = [self._k(k) for k in names]
        if not ks:
            self._c()
            return {}
        try:
            self._c()
            rows = self._topo.run_grouped(self._get_many, ks)
        except _redis_py.RedisError as e:
            _raise(e)
        out: dict[str, Any] = {}
        for n, row in zip(names, rows):
            if row[0] == 1:
                out[n] = decode(row[1])
            elif row[0] == 2:
                out[n] = [decode(x) for x in row[1:]]
        return out

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """On Redis: one ``GETDEL``."""
        k = self._k(key)
        try:
            raw = self._c().getdel(k)
        except _redis_py.RedisError as e:
            _raise(e, key)
        if raw is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return decode(raw)

    def ttl(self, key: str) -> Optional[float]:
        """On Redis: millisecond resolution (``PTTL``)."""
        k = self._k(key)
        try:
            ms = self._c().pttl(k)
        except _redis_py.RedisError as e:
            _raise(e, key)
        if ms == -2:
            return None
        if ms == -1:
            return 0
        return max(int(ms), 1) / 1000.0  # 0 ms left still means "expires", never "never"

    # ---- writes -----------------------------------------------------------

    def set(self, key: str, value: Value, exptime: float = 0) -> None:
        """On Redis: ``shmdict.Full`` means the server is at ``maxmemory`` (with ``noeviction``)."""
        self._set(key, value, exptime)

    def _set(self, key: str, value: Value, exptime: float, nx: bool = False, xx: bool = False) -> bool:
        k = self._k(key)
        v = encode(value)
        ms = _ms(exptime) if exptime else 0
        try:
            return bool(self._c().set(k, v, px=ms or None, nx=nx, xx=xx))
        except _redis_py.RedisError as e:
            _raise(e, key)

    def __setitem__(self, key: str, value: Value) -> None:
        self._set(key, value, 0)

    def add(self, key: str, value: Value, exptime: float = 0) -> bool:
        """On Redis: one ``SET NX``."""
        return self._set(key, value, exptime, nx=True)

    def replace(self, key: str, value: Value, exptime: float = 0) -> bool:
        """On Redis: one ``SET XX``."""
        return self._set(key, value, exptime, xx=True)

    def cas(self, key: str, expected: Optional[Value], new: Value, exptime: float = 0) -> bool:
        """On Redis: one Lua script; a list never matches."""
        k = self._k(key)
        e = b"" if expected is None else encode(expected)
        n = encode(new)
        ms = _ms(exptime) if exptime else 0
        try:
            rc = self._cas(client=self._c(), keys=[k], args=[e, n, ms, 1 if expected is None else 0])
        except _redis_py.RedisError as exc:
            _raise(exc, key)
        return bool(rc == 1)

    def set_many(self, mapping: Union[Mapping[str, Value], Iterable[tuple[str, Value]]], exptime: float = 0) -> None:
        """On Redis: one ``MULTI``/``EXEC`` transaction, so no client sees a part
        of it; but when the server refuses an item at ``maxmemory``
        (``shmdict.Full``), the items before it may be stored (a transaction
        is not rolled back). On a Redis Cluster: one script per hash slot, all
        sent at once: atomic per slot (so per key), not across slots.
        """
        pairs = mapping.items() if isinstance(mapping, Mapping) else mapping
        items = [(self._k(k), encode(v)) for k, v in pairs]
        ms = _ms(exptime) if exptime else 0
        if not items:
            self._c()
            return
        try:
            self._c()
            self._topo.set_grouped(items, ms)
        except _redis_py.RedisError as e:
            _raise(e)

    def safe_set(self, key: str, value: Value, exptime: float = 0) -> None:
        """On Redis: the same as :meth:`set`. Redis cannot be told not to evict for one command: eviction is the server's ``maxmemory-policy``."""
        self._set(key, value, exptime)

    def safe_add(self, key: str, value: Value, exptime: float = 0) -> bool:
        """On Redis: the same as :meth:`add` (see :meth:`safe_set`)."""
        return self._set(key, value, exptime, nx=True)

    def get_stale(self, key: str) -> tuple[Any, bool]:
        """On Redis: ``stale`` is always ``False``; Redis drops expired keys, so there is never a stale value to return."""
        return self.get(key), False

    def setdefault(self, key: str, default: Value = None) -> Value:  # type: ignore[assignment]
        k = self._k(key)
        v = encode(default)
        try:
            raw = self._setdefault(client=self._c(), keys=[k], args=[v])
        except _redis_py.RedisError as e:
            _raise(e, key)
        return decode(raw)

    def delete(self, key: str) -> bool:
        k = self._k(key)
        try:
            return bool(self._c().unlink(k))
        except _redis_py.RedisError as e:
            _raise(e, key)

    def __delitem__(self, key: str) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def incr(
        self,
        key: str,
        delta: Union[int, float] = 1,
        exptime: Optional[float] = None,
        *,
        init: Union[int, float, None] = None,
        init_ttl: Optional[float] = None,
    ) -> Union[int, float]:
        """On Redis: ``int + int`` uses Redis's own ``INCRBY`` (exact,
        overflow-checked); a float on either side is added in Lua as a double
        and stored as a float.
        """
        k = self._k(key)
        dt, dv = _num_arg(delta, "delta")
        if init is None:
            it, iv = b"", b""
        else:
            it, iv = _num_arg(init, "init")
        ims = b"0" if init_ttl is None else b"%d" % _ms(init_ttl, "init_ttl")
        ex = b"" if exptime is None else b"%d" % _ms(exptime)
        try:
            r = self._incr(client=self._c(), keys=[k], args=[dv, dt, it, iv, ims, ex])
        except _redis_py.RedisError as e:
            _raise(e, key)
        rc = r[0]
        if rc == 1:
            return decode(r[1])  # type: ignore[return-value]
        if rc == 0:
            raise KeyError(key)
        if rc == 2:
            raise OverflowError("overflow in incr: the result does not fit its type; the value is unchanged")
        if rc == 3:
            raise TypeError("value is not a number")
        raise CorruptError(f"not a shmdict value: {r[1][:40]!r}")

    def expire(self, key: str, exptime: float) -> bool:
        k = self._k(key)
        ms = _ms(exptime)
        try:
            return bool(self._expire(client=self._c(), keys=[k], args=[ms]))
        except _redis_py.RedisError as e:
            _raise(e, key)

    def flush_expired(self, max_count: int = 0) -> int:
        """On Redis: always ``0``; Redis reclaims expired keys itself, so none is ever held."""
        _count(max_count, "max_count")
        self._c()
        return 0

    def flush_all(self) -> None:
        """On Redis: ``SCAN`` + ``UNLINK`` in batches under the prefix (on every
        master of a cluster). Not atomic: a key written by another client while
        the scan runs may survive. Locks are not items and are left alone.
        """
        r = self._c()
        batch: list[bytes] = []
        try:
            for raw in self._topo.scan_iter(self._match + b"*"):
                if self._user_key(raw) is not None:
                    batch.append(raw)
                    if len(batch) >= 500:
                        r.unlink(*batch)
                        batch.clear()
            if batch:
                r.unlink(*batch)
        except _redis_py.RedisError as e:
            _raise(e)

    def clear(self) -> None:
        # SCAN + UNLINK instead of MutableMapping's popitem loop.
        self.flush_all()

    # ---- whole-dict reads ------------------------------------------------------

    def _pattern(self, match: Optional[str]) -> tuple[bytes, Optional[str]]:
        """(Redis MATCH pattern, fnmatch pattern to filter with). ``match``
        has :func:`fnmatch.fnmatchcase` syntax, as on SharedDict; Redis's glob
        differs (``[^a]``, backslash escapes), so Redis only narrows the scan
        to the pattern's literal head and Python applies the real pattern."""
        if match is None:
            return self._match + b"*", None
        if not isinstance(match, str):
            raise TypeError(f"match must be a str glob pattern, not {type(match).__name__}")
        head = match
        for i, ch in enumerate(match):
            if ch in "*?[":
                head = match[:i]
                break
        return _glob_escape(self._p + head.encode()) + b"*", match

    def _keys_of(self, raws: Iterable[bytes], match: Optional[str]) -> Iterator[str]:
        for raw in raws:
            k = self._user_key(raw)
            if k is not None and (match is None or fnmatchcase(k, match)):
                yield k

    def scan(self, cursor: int = 0, count: int = 100, match: Optional[str] = None) -> tuple[int, list[str]]:
        """On Redis: one ``SCAN`` step over the prefix; ``count`` is a hint, and a
        key may be returned more than once (dedupe if it matters). On a Redis
        Cluster the cursor walks the masters one after the other.
        """
        cur = _count(cursor, "cursor")
        if _count(count, "count") == 0:
            raise ValueError("count must be > 0")
        pat, fn = self._pattern(match)
        try:
            self._c()
            nxt, raws = self._topo.scan(cur, pat, count)
        except _redis_py.RedisError as e:
            _raise(e)
        return nxt, list(self._keys_of(raws, fn))

    def get_keys(self, max_count: int = 0, match: Optional[str] = None) -> list[str]:
        """On Redis: ``SCAN``, never ``KEYS``. Not a snapshot: keys written during the scan may or may not appear."""
        if isinstance(max_count, bool) or not isinstance(max_count, int):
            raise TypeError(f"max_count must be an int, not {type(max_count).__name__}")
        pat, fn = self._pattern(match)
        seen: dict[str, None] = {}
        try:
            self._c()
            for k in self._keys_of(self._topo.scan_iter(pat), fn):
                seen[k] = None
                if 0 < max_count <= len(seen):
                    break
        except _redis_py.RedisError as e:
            _raise(e)
        return list(seen)

    def items(self, match: Optional[str] = None) -> list[tuple[str, Value]]:  # type: ignore[override]
        """On Redis: ``SCAN`` then ``MGET`` in batches. Not a snapshot: an item
        changed meanwhile may show its old or new value, and one deleted
        meanwhile is left out.
        """
        keys = self.get_keys(match=match)
        out: list[tuple[str, Value]] = []
        for i in range(0, len(keys), 500):
            got = self.get_many(keys[i : i + 500])
            out.extend((k, got[k]) for k in keys[i : i + 500] if k in got)
        return out

    def values(self) -> list[Value]:  # type: ignore[override]
        """On Redis: not a snapshot (see :meth:`items`)."""
        return [v for _, v in self.items()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.get_keys())

    def __len__(self) -> int:
        # O(n): Redis counts keys per database, not per prefix.
        return len(self.get_keys())

    def stats(self) -> dict[str, Any]:
        """On Redis: the entries under the prefix, plus the server-wide figures
        Redis keeps (``INFO``) under SharedDict's names: ``used_bytes``
        (``used_memory``), ``capacity`` (``maxmemory``, 0: no limit),
        ``hits``, ``misses``, ``expired``, ``evictions`` -- for the whole
        server, not only this prefix (on a cluster: summed over the masters)
        -- and ``engine`` (``"redis"``), ``server_version``.
        """
        try:
            self._c()
            info = _sum_info([m.info() for m in self._topo.masters()])
        except _redis_py.RedisError as e:
            _raise(e)
        out: dict[str, Any] = {"engine": "redis", "size": 0, "entries": len(self)}
        for ours, theirs in (
            ("used_bytes", "used_memory"),
            ("capacity", "maxmemory"),
            ("hits", "keyspace_hits"),
            ("misses", "keyspace_misses"),
            ("expired", "expired_keys"),
            ("evictions", "evicted_keys"),
            ("server_version", "redis_version"),
        ):
            if theirs in info:
                out[ours] = info[theirs]
        return out

    # ---- change notifications (keyspace notifications over pub/sub) -------------------

    def version(self, key: str) -> int:
        """On Redis: a hash of the value and TTL (Redis keeps no change counter),
        so storing the same value again keeps the version.
        """
        k = self._k(key)
        try:
            return int(self._version(client=self._c(), keys=[k]))
        except _redis_py.RedisError as e:
            _raise(e, key)

    def _subscribe(self, pattern: bytes, glob: bool) -> Any:
        """A pub/sub connection subscribed to ``pattern`` (confirmed by the
        server, so nothing published afterwards is missed). A server publishes
        the events of its own keys only: on a Redis Cluster ``wait`` (a key)
        listens on that key's master, ``watch`` (a pattern) on every master."""
        self._c()
        try:
            nodes = self._topo.masters() if glob else [self._topo.master_for(pattern)]
        except _redis_py.RedisError as e:
            _raise(e)
        if not self._notify_ok:
            for node in nodes:
                self._check_notifications(node)
            self._notify_ok = True
        channel = b"__keyspace@%d__:" % self._topo.db + pattern
        subs: list[Any] = []
        try:
            for node in nodes:
                ps = node.pubsub()
                subs.append(ps)
                (ps.psubscribe if glob else ps.subscribe)(channel)
                deadline = time.monotonic() + 10
                while ps.get_message(timeout=1.0) is None:
                    if time.monotonic() > deadline:
                        raise Unavailable("Redis did not confirm the subscription within 10 s")
        except BaseException as e:
            for ps in subs:
                ps.close()
            if isinstance(e, _redis_py.RedisError):
                _raise(e)
            raise
        from ._redis_topology import PubSubs

        return subs[0] if len(subs) == 1 else PubSubs(subs)

    def _check_notifications(self, node: Any) -> None:
        """shmdict.Error unless ``node`` publishes keyspace notifications."""
        try:
            flags = node.config_get("notify-keyspace-events").get("notify-keyspace-events", "")
        except _redis_py.ResponseError:
            flags = None  # CONFIG is disabled (managed Redis): trust the operator
        except _redis_py.RedisError as e:
            _raise(e)
        if flags is not None and ("K" not in flags or not ("A" in flags or set("g$lxe") <= set(flags))):
            raise Error(
                "wait/watch on Redis need keyspace notifications: set notify-keyspace-events to "
                f"'KA' (or at least 'Kg$lxe') in the server's configuration (it is {flags!r})"
            )

    def wait(self, key: str, timeout: Optional[float] = None, *, since: Optional[int] = None) -> Any:
        """On Redis: through keyspace notifications; the server must have
        ``notify-keyspace-events`` ``KA``, else ``shmdict.Error``. A bad
        ``since`` raises ``ValueError``.
        """
        k = self._k(key)
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or not 0 <= since < 2**32):
            raise ValueError(f"since must be a version from version(), not {since!r}")
        t = _timeouts.or_forever(timeout)  # the one timeout rule (shmdict/_timeouts.py)
        ps = self._subscribe(k, glob=False)
        try:
            if since is not None and self.version(key) != since:
                return self.get(key)
            deadline = math.inf if t < 0 else time.monotonic() + t
            while True:
                if self._r is None:
                    raise ValueError(f"RedisDict {self._prefix!r} was closed while waiting")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{key!r} did not change within {timeout} s")
                try:
                    msg = ps.get_message(ignore_subscribe_messages=True, timeout=min(left, 0.25))
                except _redis_py.RedisError as e:
                    _raise(e, key)
                if msg is not None and msg.get("type") == "message":
                    return self.get(key)
        finally:
            ps.close()

    def watch(self, match: str = "*", *, timeout: Optional[float] = None) -> Iterator[Event]:
        """On Redis: through keyspace notifications (pub/sub), with these
        differences: every deleted key is its own ``"delete"`` event
        (``flush_all`` sends no ``"flush"``); a ``set`` with a TTL, an
        ``expire()`` or an ``incr`` that creates an int may send two events;
        and a subscriber that falls too far behind is disconnected by the
        server (``Unavailable``), never told how many events it lost.
        Keyspace notifications off on the server raise ``shmdict.Error``.
        """
        t = _timeouts.or_forever(timeout)  # the one timeout rule (shmdict/_timeouts.py)
        sub = self._watch_sub(match)

        def gen() -> Iterator[Event]:
            try:
                while True:
                    batch = self._poll(sub, t)
                    if not batch:
                        return
                    yield from batch
            finally:
                sub[0].close()

        return gen()

    def _watch_sub(self, match: str) -> tuple[Any, int, Optional[str]]:
        """(pub/sub connection, length of the channel's ``__keyspace@N__:``
        head, fnmatch pattern) for watching ``match``."""
        if not isinstance(match, str):
            raise TypeError(f"match must be a glob str, not {type(match).__name__}")
        pat, fn = self._pattern(match)
        ps = self._subscribe(pat, glob=True)
        return ps, len(b"__keyspace@%d__:" % self._topo.db), fn

    def _poll(self, sub: tuple[Any, int, Optional[str]], step: float) -> list[Event]:
        """The events that arrive within ``step`` seconds (``< 0``: until
        one does): returns as soon as it has some and no more are pending."""
        ps, head, fn = sub
        deadline = math.inf if step < 0 else time.monotonic() + step
        events: list[Event] = []
        while True:
            if self._r is None:
                raise ValueError(f"RedisDict {self._prefix!r} was closed while watching")
            left = deadline - time.monotonic()
            if not events and left <= 0:
                return events
            try:
                msg = ps.get_message(ignore_subscribe_messages=True, timeout=0 if events else min(left, 0.25))
            except _redis_py.RedisError as e:
                _raise(e)
            if msg is None:
                if events:
                    return events
                continue
            if msg.get("type") != "pmessage":
                continue
            key = self._user_key(msg["channel"][head:])
            if key is not None and (fn is None or fnmatchcase(key, fn)):
                events.append(Event(_EVENT_OPS.get(msg["data"], "set"), key))

    async def await_change(self, key: str, timeout: Optional[float] = None, *, since: Optional[int] = None) -> Any:
        _timeouts.check(timeout)  # the one timeout rule (shmdict/_timeouts.py)
        if since is None:
            since = self.version(key)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            step = _ASYNC_SLICE if deadline is None else max(0.0, min(_ASYNC_SLICE, deadline - loop.time()))
            try:
                return await _in_thread(functools.partial(self.wait, key, step, since=since))
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    raise

    async def awatch(self, match: str = "*", *, timeout: Optional[float] = None) -> AsyncIterator[Event]:
        _timeouts.check(timeout)  # the one timeout rule (shmdict/_timeouts.py)
        sub = self._watch_sub(match)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while True:
                step = _ASYNC_SLICE if deadline is None else max(0.0, min(_ASYNC_SLICE, deadline - loop.time()))
                batch = await _in_thread(self._poll, sub, step)
                for ev in batch:
                    yield ev
                if batch and timeout is not None:
                    deadline = loop.time() + timeout
                elif not batch and deadline is not None and loop.time() >= deadline:
                    return
        finally:
            sub[0].close()

    # ---- lists -------------------------------------------------------------------

    def _list(self, op: str, key: str, *args: bytes) -> Any:
        k = self._k(key)
        try:
            return getattr(self._c(), op)(k, *args)
        except _redis_py.ResponseError as e:
            if str(e).startswith("WRONGTYPE"):
                raise TypeError(f"key {key!r} holds a value, not a list") from e
            _raise(e, key)
        except _redis_py.RedisError as e:
            _raise(e, key)

    def lpush(self, key: str, value: Value) -> int:
        return int(self._list("lpush", key, encode(value)))

    def rpush(self, key: str, value: Value) -> int:
        return int(self._list("rpush", key, encode(value)))

    def lpop(self, key: str) -> Optional[Value]:
        raw = self._list("lpop", key)
        return None if raw is None else decode(raw)

    def rpop(self, key: str) -> Optional[Value]:
        raw = self._list("rpop", key)
        return None if raw is None else decode(raw)

    def llen(self, key: str) -> int:
        return int(self._list("llen", key))

    # ---- rate limiting, locks, single-flight ---------------------------------------

    def limit(self, key: str, rate: float, per: float, burst: int = 0) -> tuple[bool, int, float]:
        """On Redis: one Lua script on the server's clock, so exact for any number
        of clients on any number of hosts. The state is an int of microseconds
        of the server's clock, so more than a million requests per second raise
        ``ValueError``.
        """
        k = self._k(key)
        r = seconds(rate, "rate")
        p = seconds(per, "per")
        if isinstance(burst, bool) or not isinstance(burst, int):
            raise TypeError(f"burst must be an int, not {type(burst).__name__}")
        t_us = p * 1e6 / r if r > 0 and p > 0 else 0.0
        lim_us = (r + burst) * t_us
        if not (r > 0 and p > 0 and burst >= 0 and r + burst >= 1 and 1 <= t_us <= 4e15 and lim_us <= 4e15):
            raise ValueError(
                f"limit needs rate > 0, per > 0, burst >= 0, rate + burst >= 1 and at most "
                f"10**6 requests per second (got {rate}, {per}, {burst})"
            )
        try:
            res = self._limit(client=self._c(), keys=[k], args=[int(t_us), int(lim_us)])
        except _redis_py.RedisError as e:
            _raise(e, key)
        if res[0] == -1:
            raise TypeError(f"key {key!r} holds a value that is not an int, so not a rate limiter's state")
        return res[0] == 1, int(res[1]), int(res[2]) / 1e6

    def lock(self, name: str, timeout: Optional[float] = None, *, lease: float = 30.0) -> RedisLock:
        """On Redis: the holder is identified by a random token. Redis cannot see
        a process die, so the lock also frees itself ``lease`` seconds after it
        was taken (:meth:`RedisLock.extend` renews it); a bad ``lease`` raises
        ``ValueError``.
        """
        return RedisLock(self, name, timeout, lease)

    def get_or_set(
        self,
        key: str,
        factory: Callable[[], Value],
        exptime: float = 0,
        lock_timeout: Optional[float] = 30.0,
    ) -> Value:
        """On Redis: the computing client holds a lock with a lease of
        ``max(lock_timeout, 30)`` seconds: a factory that runs longer may be
        called a second time.
        """
        v = self.get(key, _MISSING)
        if v is not _MISSING:
            return v  # type: ignore[no-any-return]
        wait = _timeouts.check(lock_timeout, "lock_timeout")  # the one timeout rule
        lk = RedisLock(self, key, wait, max(wait or 0.0, 30.0), kind=b"flight:")
        deadline = None if wait is None else time.monotonic() + wait
        delay = 0.001
        while True:
            # Poll the value as well as the lock: waiters return as soon as the
            # value appears instead of queueing for the lock one by one.
            if lk.acquire(blocking=False):
                try:
                    v = self.get(key, _MISSING)
                    if v is _MISSING:
                        v = factory()
                        self.set(key, v, exptime)
                    return v  # type: ignore[no-any-return]
                finally:
                    lk.release()
            v = self.get(key, _MISSING)
            if v is not _MISSING:
                return v  # type: ignore[no-any-return]
            left = math.inf if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"get_or_set({key!r}): no value within {wait} s")
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)

    # ---- snapshots (shmdict/_snapshot.py): the format SharedDict uses --------

    def dump(self, file: Any) -> int:
        """On Redis: every item under the prefix, each read whole (a script per
        batch of keys found by ``SCAN``); not one instant of the whole database.
        """
        from ._snapshot import dump_redis

        return dump_redis(self, file)

    def load(self, file: Any) -> int:
        """On Redis: each item whole, in ``MULTI``/``EXEC`` batches; ``shmdict.Full``
        means the server reached ``maxmemory``: earlier batches are stored
        (``stored`` on the exception counts them).
        """
        from ._snapshot import load_redis

        return load_redis(self, file)


def _sum_info(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``INFO`` from the masters' (a cluster's figures are the sum of its masters')."""
    out = dict(infos[0])
    for info in infos[1:]:
        for k in ("used_memory", "maxmemory", "keyspace_hits", "keyspace_misses", "expired_keys", "evicted_keys"):
            if isinstance(out.get(k), int) and isinstance(info.get(k), int):
                # maxmemory 0 is "no limit": a master without one leaves the cluster unbounded
                out[k] = 0 if k == "maxmemory" and 0 in (out[k], info[k]) else out[k] + info[k]
    return out


def _reconnect(url: str, prefix: str) -> RedisDict:
    return RedisDict(url, prefix)


@implements(LockAPI)
class RedisLock:
    """A lock held in one Redis key: ``SET NX PX`` with a random owner token,
    released by a Lua compare-and-delete, so only the holder can release it.
    Waiting polls with backoff (1 ms up to 50 ms).

    Like ``threading.Lock``: ``acquire(blocking=True, timeout=None) -> bool``
    (timeouts follow shmdict's one rule: ``None`` waits forever, a negative one
    is a ``ValueError``),
    ``release()``, ``locked()``, and ``with lock:`` which raises
    ``TimeoutError`` after the lock's ``timeout``. Not re-entrant.

    .. versionadded:: 0.1
    """

    def __init__(self, d: RedisDict, name: str, timeout: Optional[float], lease: float, kind: bytes = b"lock:") -> None:
        self._d = d
        self.name = name
        self._key = d._ip + kind + encode_key(name)
        self.timeout = _timeouts.check(timeout)  # the one timeout rule
        self._lease = _ms(lease, "lease")
        if self._lease <= 0:
            raise ValueError("lease must be > 0")
        self._token: Optional[bytes] = None

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        """On Redis: ``shmdict.Unavailable`` if the server cannot be reached."""
        if self._token is not None:
            raise RuntimeError(f"lock {self.name!r} is already held by this object (not reentrant)")
        if timeout is None:
            timeout = self.timeout
        else:
            timeout = _timeouts.check(timeout)  # the one timeout rule
            if not blocking:
                raise ValueError("can't specify a timeout for a non-blocking call")
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        token = uuid.uuid4().hex.encode() + b":%d" % os.getpid()
        delay = 0.001
        r = self._d._c()
        while True:
            try:
                if r.set(self._key, token, nx=True, px=self._lease):
                    self._token = token
                    return True
            except _redis_py.RedisError as e:
                _raise(e)
            left = deadline - time.monotonic()
            if not blocking or left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)

    def release(self) -> None:
        """On Redis: ``RuntimeError`` also if the lease expired, so that someone else may have taken the lock."""
        token, self._token = self._token, None
        if token is None:
            raise RuntimeError(f"release of lock {self.name!r}, which this handle does not hold")
        try:
            ok = self._d._unlock(client=self._d._c(), keys=[self._key], args=[token])
        except _redis_py.RedisError as e:
            _raise(e)
        if not ok:
            raise RuntimeError(f"lock {self.name!r} was lost: its lease expired before release")

    def extend(self, lease: Optional[float] = None) -> bool:
        """Restart the lease (``lease`` seconds, default the original); ``False``
        if the lock is no longer ours.

        .. versionadded:: 0.1
        """
        if self._token is None:
            return False
        ms = self._lease if lease is None else _ms(lease, "lease")
        try:
            return bool(self._d._extend(client=self._d._c(), keys=[self._key], args=[self._token, ms]))
        except _redis_py.RedisError as e:
            _raise(e)

    def locked(self) -> bool:
        try:
            return bool(self._d._c().exists(self._key))
        except _redis_py.RedisError as e:
            _raise(e)

    def __enter__(self) -> RedisLock:
        if not self.acquire():
            raise TimeoutError(f"lock {self.name!r} not acquired within {self.timeout} s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<RedisLock {self.name!r} {'held' if self._token is not None else 'free'}>"
