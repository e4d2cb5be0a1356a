"""A Django cache backend in shared memory: one cache for every worker process
of a site on one machine, with no server to run.

Django's local-memory cache is per process, so ``gunicorn -w 4`` keeps four
caches that disagree; this backend keeps one::

    CACHES = {
        "default": {
            "BACKEND": "shmdict.contrib.django.SharedDictCache",
            "LOCATION": "mycache",            # the dict's name
            "OPTIONS": {"size": "64m",        # created with this size if missing
                        "max_size": "1g"},    # optional: when full, grow up to 1g
        }
    }

Semantics follow Django's cache API: ``timeout=None`` never expires, ``0`` (or
negative) stores nothing, no argument uses ``TIMEOUT`` (default 300 s); float
timeouts work and long ones stay relative. Values are pickled, except plain
``int`` (signed 64-bit), which is stored as a number so that ``incr`` /
``decr`` are one atomic C call across processes, and keep the key's TTL.
``add`` is one atomic "set if absent"; ``get_many`` / ``set_many`` take
the lock once for all their keys. ``clear()`` empties the whole dict, as
the Redis backend's FLUSHDB does: give the cache a dict of its own.
``close()`` (called after every request) does nothing: the mapping stays.
``MAX_ENTRIES`` / ``CULL_FREQUENCY`` do not apply; when the dict is full,
expired items are reclaimed first, then a dict with a ``max_size`` grows
(at least doubling, up to ``max_size``), and only then ``set`` raises
``shmdict.Full``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import pickle
import threading
from typing import Any, Iterable, Optional

import shmdict
from shmdict.contrib._extras import missing

try:
    from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache  # type: ignore[import-untyped]
except ModuleNotFoundError as exc:
    raise missing(exc, "shmdict.contrib.django", "Django>=4.2", "django") from exc

from shmdict._dict import _dir
from shmdict._lib import INT64_MAX, INT64_MIN
from shmdict.contrib._attach import attach_or_create

__all__ = ["SharedDictCache"]

DEFAULT_SIZE = "64m"

_handles: dict[tuple[str, str], Any] = {}
_handles_lock = threading.Lock()


def _shared(name: str, size: Any, max_size: Any) -> Any:
    """One handle per (directory, name) per process: Django builds a backend
    object per thread, and they all share this mapping. A LOCATION with a
    scheme (``redis://host/0?prefix=app:``, ``shm://name?size=64m``) goes
    through :func:`shmdict.connect`, so moving the cache to Redis/Valkey is a
    settings change; the URL then says everything and OPTIONS' sizes are
    not used."""
    key = ("", name) if "://" in name else (_dir(), name)
    with _handles_lock:
        d = _handles.get(key)
        if d is None or d.closed:
            d = _handles[key] = (
                shmdict.connect(name) if "://" in name else attach_or_create(name, size, DEFAULT_SIZE, max_size)
            )
        return d


class SharedDictCache(BaseCache):  # type: ignore[misc]
    """Django cache backend over one named :class:`shmdict.SharedDict`.

    Args:
        location: the dict's name (``LOCATION``); default ``"django-cache"``.
        params: Django's cache settings; ``OPTIONS["size"]`` (or ``"SIZE"``)
            is the size to create the dict with if it does not exist
            (default ``"64m"``); given, it also grows an existing smaller
            dict (the default never does). ``OPTIONS["max_size"]`` (or
            ``"MAX_SIZE"``) lets a full dict grow itself up to that size,
            whether this backend created it or attached to it.

    Raises:
        ValueError: a bad name, size or max_size.
        OSError: the dict cannot be created or grown.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2 ``max_size``; the default size no longer grows
       an existing dict.
    """

    pickle_protocol = pickle.HIGHEST_PROTOCOL

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        options = params.get("OPTIONS", {})
        size = options.get("size", options.get("SIZE"))
        max_size = options.get("max_size", options.get("MAX_SIZE"))
        self._dict = _shared(location or "django-cache", size, max_size)

    # ---- encoding ------------------------------------------------------------

    def _encode(self, value: Any) -> Any:
        if type(value) is int and INT64_MIN <= value <= INT64_MAX:
            return value  # stored natively: incr stays one atomic C call
        return pickle.dumps(value, self.pickle_protocol)

    @staticmethod
    def _decode(value: Any) -> Any:
        return pickle.loads(value) if type(value) is bytes else value

    def _exptime(self, timeout: Any) -> Optional[float]:
        """Seconds to live for shmdict (0 = never), or None: do not store."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return 0.0
        return float(timeout) if timeout > 0 else None

    # ---- single keys -----------------------------------------------------------

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        v = self._encode(value)
        ex = self._exptime(timeout)
        if ex is None:
            return key not in self._dict  # as Redis: "would have been added", nothing kept
        return bool(self._dict.add(key, v, ex))

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        v = self._dict.get(key, self._missing_key)
        return default if v is self._missing_key else self._decode(v)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> None:
        key = self.make_and_validate_key(key, version=version)
        v = self._encode(value)
        ex = self._exptime(timeout)
        if ex is None:
            self._dict.delete(key)
        else:
            self._dict.set(key, v, ex)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        ex = self._exptime(timeout)
        if ex is None:
            return bool(self._dict.delete(key))
        return bool(self._dict.expire(key, ex))

    def delete(self, key: Any, version: Any = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return bool(self._dict.delete(key))

    def has_key(self, key: Any, version: Any = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return key in self._dict

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        """Add ``delta`` atomically (across processes); the TTL is kept.

        Raises:
            ValueError: the key does not exist.
            TypeError: the value is not an integer.
        """
        key = self.make_and_validate_key(key, version=version)
        try:
            return self._dict.incr(key, delta)
        except KeyError:
            raise ValueError(f"Key '{key}' not found") from None

    # ---- several keys ------------------------------------------------------------

    def get_many(self, keys: Iterable[Any], version: Any = None) -> dict[Any, Any]:
        """One lock hold for all the keys: a consistent snapshot."""
        made = {self.make_and_validate_key(k, version=version): k for k in keys}
        found = self._dict.get_many(list(made))
        return {made[k]: self._decode(v) for k, v in found.items()}

    def set_many(self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> list[Any]:
        """One lock hold for all the items; every value is pickled before
        anything is stored, so a PickleError stores nothing."""
        items = [(self.make_and_validate_key(k, version=version), self._encode(v)) for k, v in data.items()]
        ex = self._exptime(timeout)
        if ex is None:
            for k, _ in items:
                self._dict.delete(k)
        elif items:
            self._dict.set_many(items, ex)
        return []

    def delete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        for k in keys:
            self.delete(k, version=version)

    def clear(self) -> None:
        """Remove every key of the dict (all prefixes and versions)."""
        self._dict.flush_all()

    def close(self, **kwargs: Any) -> None:
        # Django calls this after every request: the shared mapping must stay.
        pass


