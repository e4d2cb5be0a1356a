"""A ``shmdict://`` storage for the `limits <https://limits.readthedocs.io>`_
library (5.x), and so for Flask-Limiter and slowapi.

``limits`` has no plugin entry points: a storage scheme exists once its class
has been *imported*. Import this module before the limiter is built::

    import shmdict.contrib.limits  # registers shmdict:// and async+shmdict://
    from flask_limiter import Limiter
    limiter = Limiter(get_remote_address, app=app,
                      storage_uri="shmdict://ratelimit?size=16m")

``shmdict://NAME?size=SIZE`` attaches to the dict ``NAME``, creating it with
``SIZE`` bytes (default ``16m``) if it does not exist yet (``shmdict.open``):
every worker process that builds the same URI shares the same counters, so
``gunicorn -w 4`` enforces the limit once, not four times. A ``size`` given
also grows an existing smaller dict; the default never does.
``&max_size=SIZE`` lets a full dict grow itself up to that size instead of
failing. ``size`` and ``max_size`` may also come from the limiter's
``storage_options``. Keys are stored under the prefix
``LIMITS:`` (``key_prefix=`` changes it) so the dict can be shared with other
data; :meth:`SharedDictStorage.reset` removes only prefixed keys.

All three strategies are supported:

- **fixed window**: one atomic ``incr`` whose TTL is set only when the key is
  created (redis' ``INCRBY`` + ``EXPIRE`` on creation);
- **moving window**: the hit timestamps of a key live in one bytes value
  under ``LIMITS:window:<key>``, updated by one atomic C call (``shmdict_window``) that counts the
  hits inside the window and records new ones under a single hold of the
  lock, so no two workers can both take the last slot;
- **sliding window counter**: the algorithm of limits' own memory storage
  (timestamped keys, ``incr``, re-check and give back on a lost race). Its
  windows are aligned to the clock (they start on multiples of the period),
  which both storages declare to limits as ``TimestampedSlidingWindow``.

``async+shmdict://`` (:class:`AsyncSharedDictStorage`) wraps the sync storage:
the same dict (``.dict``), the same keys, the same limits.

The handle survives ``fork``: a storage built in a gunicorn master started
with ``--preload`` keeps working in every worker.

.. versionadded:: 0.1
"""

from __future__ import annotations

import time
from math import floor
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

import shmdict
from shmdict.contrib._extras import missing

try:
    from limits.aio.storage import MovingWindowSupport as AsyncMovingWindowSupport
    from limits.aio.storage import SlidingWindowCounterSupport as AsyncSlidingWindowCounterSupport
    from limits.aio.storage import Storage as AsyncStorage
    from limits.storage import MovingWindowSupport, SlidingWindowCounterSupport, Storage
    from limits.storage.base import TimestampedSlidingWindow
except ModuleNotFoundError as exc:
    raise missing(exc, "shmdict.contrib.limits", "limits>=5,<6", "limits") from exc

from shmdict._lib import encode_key, give, lib, raise_rc, take
from shmdict.contrib._attach import Size, attach_or_create

__all__ = ["AsyncSharedDictStorage", "SharedDictStorage"]

DEFAULT_SIZE = "16m"


def _parse(uri: str | None, options: dict[str, Any]) -> tuple[str, Optional[Size], Optional[Size], str]:
    """(name, size, max_size, key_prefix) from ``shmdict://NAME?size=...`` and
    options; size and max_size are None where neither gives them."""
    u = urlparse(uri or "shmdict://ratelimit")
    name = u.netloc
    if not name or u.path not in ("", "/"):
        raise ValueError(f"{uri!r}: expected shmdict://NAME?size=16m")
    query = {k: v[-1] for k, v in parse_qs(u.query).items()}
    size = options.get("size", query.get("size"))
    max_size = options.get("max_size", query.get("max_size"))
    prefix = str(options.get("key_prefix", query.get("key_prefix", "LIMITS")))
    return name, size, max_size, prefix


def _window(d: shmdict.SharedDict, key: str, limit: int, expiry: float, amount: int) -> tuple[bool, int, float]:
    """One ``shmdict_window`` call: (acquired, hits in window, age of the oldest)."""
    h = d._handle()
    k = encode_key(key)
    s = take()  # this call's own buffers (see shmdict._lib.take)
    need = 8 * limit
    if s.cap < need:
        s.grow(need)
    rc = lib.shmdict_window(h, k, len(k), limit, float(expiry), amount, s.buf, s.cap, s.out)
    if rc < 0:
        raise_rc(rc, key)
    res = rc == 1, int(s.out.i), float(s.out.f)
    give(s)
    return res


class SharedDictStorage(Storage, MovingWindowSupport, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """Rate-limit storage in a shmdict shared by every process on the host.

    Args:
        uri: ``shmdict://NAME?size=16m[&max_size=256m]``.
        wrap_exceptions: re-raise storage errors as ``limits.errors.StorageError``.
        **options: ``size`` and ``max_size`` (override the URI's),
            ``key_prefix`` (default ``LIMITS``).

    Raises:
        ValueError: a malformed URI, name or size, or a ``max_size`` smaller
            than the dict's size.
        OSError: the dict cannot be created or grown (e.g. ``/dev/shm`` is full).

    .. versionchanged:: 0.2 ``max_size``; a default size no longer grows an
       existing dict.

    .. versionadded:: 0.1
    """

    STORAGE_SCHEME = ["shmdict"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any) -> None:
        name, size, max_size, self.prefix = _parse(uri, options)
        self.dict = attach_or_create(name, size, DEFAULT_SIZE, max_size)
        super().__init__(uri, wrap_exceptions=wrap_exceptions)

    def _k(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def _wk(self, key: str) -> str:
        # Moving-window lists live apart from counters, as in limits' memory
        # storage, so one key can be used by several strategies.
        return f"{self.prefix}:window:{key}"

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return (shmdict.Error, OSError)

    # ---- fixed window ---------------------------------------------------

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add ``amount``; the key expires ``expiry`` s after it was created."""
        return int(self.dict.incr(self._k(key), amount, init=0, init_ttl=expiry))

    def get(self, key: str) -> int:
        v = self.dict.get(self._k(key), 0)
        return v if type(v) is int else 0

    def get_expiry(self, key: str) -> float:
        """The epoch time at which ``key`` resets (now if it does not exist)."""
        ttl = self.dict.ttl(self._k(key))
        return time.time() + (ttl or 0)

    def check(self) -> bool:
        try:
            self.dict.get(f"{self.prefix}:__check__")
            return True
        except Exception:
            return False

    def reset(self) -> int | None:
        """Delete every key under this storage's prefix; returns how many."""
        glob = "".join(f"[{c}]" if c in "*?[]" else c for c in self.prefix) + ":*"
        return int(sum(self.dict.delete(k) for k in self.dict.get_keys(match=glob)))

    def clear(self, key: str) -> None:
        self.dict.delete(self._k(key))
        self.dict.delete(self._wk(key))

    # ---- moving window --------------------------------------------------

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Record ``amount`` hits if the last ``expiry`` s hold at most
        ``limit - amount``; atomic across processes."""
        if amount > limit or limit <= 0:
            return False
        return _window(self.dict, self._wk(key), limit, expiry, amount)[0]

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(epoch time of the oldest hit in the window, hits in the window)."""
        if limit <= 0:
            return time.time(), 0
        _, n, age = _window(self.dict, self._wk(key), limit, expiry, 0)
        return time.time() - age, n

    # ---- sliding window counter -------------------------------------------

    def _decr(self, key: str, amount: int) -> None:
        try:
            self.dict.incr(self._k(key), -amount)
        except KeyError:
            pass  # the window expired meanwhile: nothing to give back

    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        prev_key, cur_key = self.sliding_window_keys(key, expiry, now)
        prev_count, prev_ttl, cur_count, _ = self._sliding_info(prev_key, cur_key, expiry, now)
        if floor(prev_count * prev_ttl / expiry + cur_count) + amount > limit:
            return False
        cur_count = self.incr(cur_key, 2 * expiry, amount)
        if floor(prev_count * prev_ttl / expiry + cur_count) > limit:
            self._decr(cur_key, amount)  # another process took the last slot first
            return False
        return True

    def _sliding_info(self, prev_key: str, cur_key: str, expiry: int, now: float) -> tuple[int, float, int, float]:
        prev_count = self.get(prev_key)
        cur_count = self.get(cur_key)
        prev_ttl = 0.0 if prev_count == 0 else (1 - (((now - expiry) / expiry) % 1)) * expiry
        cur_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return prev_count, prev_ttl, cur_count, cur_ttl

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        now = time.time()
        return self._sliding_info(*self.sliding_window_keys(key, expiry, now), expiry, now)

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        for k in self.sliding_window_keys(key, expiry, time.time()):
            self.clear(k)


class AsyncSharedDictStorage(
    AsyncStorage, AsyncMovingWindowSupport, AsyncSlidingWindowCounterSupport, TimestampedSlidingWindow
):
    """The ``async+shmdict://`` variant for ``limits.aio``. Each operation
    takes microseconds and never blocks on I/O, so it runs inline rather
    than in a thread.

    It takes the same URI and options as :class:`SharedDictStorage` and
    shares its dict and keys: a sync and an async storage built on the same
    name enforce the same limits. ``.dict`` is that :class:`shmdict.SharedDict`.

    .. versionadded:: 0.1
    """

    STORAGE_SCHEME = ["async+shmdict"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any) -> None:
        if uri and uri.startswith("async+"):
            uri = uri[len("async+") :]
        self.sync = SharedDictStorage(uri, wrap_exceptions=False, **options)
        self.dict = self.sync.dict
        self.prefix = self.sync.prefix
        super().__init__(uri, wrap_exceptions=wrap_exceptions)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return (shmdict.Error, OSError)

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.sync.incr(key, expiry, amount)

    async def get(self, key: str) -> int:
        return self.sync.get(key)

    async def get_expiry(self, key: str) -> float:
        return self.sync.get_expiry(key)

    async def check(self) -> bool:
        return self.sync.check()

    async def reset(self) -> int | None:
        return self.sync.reset()

    async def clear(self, key: str) -> None:
        self.sync.clear(key)

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return self.sync.acquire_entry(key, limit, expiry, amount)

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        return self.sync.get_moving_window(key, limit, expiry)

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return self.sync.acquire_sliding_window_entry(key, limit, expiry, amount)

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        return self.sync.get_sliding_window(key, expiry)

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        self.sync.clear_sliding_window(key, expiry)
