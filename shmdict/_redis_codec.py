"""How RedisDict's values and errors look on the wire: the codec both the
Redis engine (``_redis.py``, ``_redis_topology.py``) and snapshots
(``_snapshot.py``) use, so neither has to import the other.

ENCODING. A value is one Redis string, readable in ``redis-cli``. An ``int``
is its plain decimal form, so ``INCRBY`` works on it natively. Every other
type starts with a tag that a decimal number cannot start with::

    123, -7               int (signed 64-bit)
    f:<%.17g>             float, in the one canonical form both Python and
                          Lua's C printf produce, so a float written by a Lua
                          script compares equal (cas) to one written by Python
    s:<utf-8>             str
    b:<bytes>             bytes
    T / F                 bool

Lists are native Redis lists whose elements are encoded the same way.
"""

from __future__ import annotations

from typing import NoReturn, Union
from urllib.parse import urlsplit, urlunsplit

from ._lib import value_type
from .exceptions import CorruptError, Error, Full, Unavailable

try:  # the optional extra: shmdict[redis]
    import redis as _redis_py
except ImportError:  # pragma: no cover - exercised without redis-py installed
    _redis_py = None  # type: ignore[assignment]

Value = Union[bool, int, float, str, bytes]


# ---- values ------------------------------------------------------------------


def fmt_float(f: float) -> bytes:
    return b"f:" + (b"%.17g" % f)


def encode(value: object) -> bytes:
    """A value as its Redis string (see ENCODING); TypeError / OverflowError
    for other types or out-of-range ints. Subclasses are stored as their base type, as in SharedDict."""
    t = value_type(value)
    if t is int:
        return b"%d" % value  # type: ignore[str-format]
    if t is str:
        return b"s:" + str.encode(value)  # type: ignore[arg-type]
    if t is float:
        return fmt_float(float(value))  # type: ignore[arg-type]
    if t is bytes:
        return b"b:" + bytes(value)  # type: ignore[call-overload,no-any-return]
    return b"T" if value else b"F"


def decode(raw: bytes) -> Value:
    """The value a Redis string encodes (see ENCODING).

    Raises:
        shmdict.CorruptError: the string was not written by shmdict.
    """
    c = raw[:1]
    try:
        if c in b"-0123456789" and c:
            return int(raw)
        if raw[1:2] == b":":
            if c == b"s":
                return raw[2:].decode()
            if c == b"b":
                return raw[2:]
            if c == b"f":
                return float(raw[2:])
        elif raw == b"T":
            return True
        elif raw == b"F":
            return False
    except (ValueError, UnicodeDecodeError):
        pass
    raise CorruptError(f"not a shmdict value: {raw[:40]!r}")



# ---- errors and URLs ------------------------------------------------------------


def _raise(exc: BaseException, key: object = None) -> NoReturn:
    """Map a redis-py exception to the matching shmdict exception."""
    r = _redis_py
    if isinstance(exc, (r.ConnectionError, r.TimeoutError, r.exceptions.ClusterDownError)):
        raise Unavailable(f"Redis connection failed: {exc}") from exc
    if isinstance(exc, r.OutOfMemoryError):
        raise Full(f"Redis is out of memory (maxmemory): {exc}") from exc
    msg = str(exc)
    if isinstance(exc, r.ResponseError):
        if msg.startswith("WRONGTYPE"):
            raise TypeError(f"key {key!r} holds a list, not a value" if key is not None else msg) from exc
        if "exceeds maximum allowed size" in msg:
            raise Full(f"value too large for Redis: {msg}") from exc
    raise Error(f"Redis error: {msg}") from exc


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    u = urlsplit(url)
    if u.password is None:
        return url
    host = u.netloc.rpartition("@")[2]
    user = u.username or ""
    return urlunsplit((u.scheme, f"{user}:***@{host}", u.path, u.query, u.fragment))
