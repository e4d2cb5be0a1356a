"""``SharedDict``: the Python face of one shared-memory dict.

Every method is one C call under the dict's lock: Python only checks
arguments, converts types and raises exceptions. ``get``, ``pop``,
``setdefault``, ``clear`` and ``__contains__`` override the
``MutableMapping`` mixins because the mixins would make two calls (two lock
holds, with another process free to act in between); each override is a
single atomic C call.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import functools
import os
import platform
import re
import struct
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any, NamedTuple, Optional, Union

from . import _lib
from ._lib import INT64_MAX, INT64_MIN, encode_key, ffi, lib, raise_rc, scratch, seconds
from ._pure import PureBase
from ._values import MISSING as _MISSING
from ._values import Value, i64 as _i64, f64 as _f64, read, unpack_list as _unpack_list
from ._values import pack_item as _pack_item, pairs as _pairs, store_args as _store_args, text as _text
from ._values import unpack_value as _unpack_value

__all__ = ["DEFAULT_LOCK_TIMEOUT", "Event", "NamedLock", "SharedDict", "Value", "get", "new", "open", "unlink"]


def _base() -> type:
    """The base class with the hot methods: the C type on CPython, unless
    SHMDICT_PURE is set (to anything but 0); the cffi version on PyPy."""
    if platform.python_implementation() != "CPython" or os.environ.get("SHMDICT_PURE", "0") not in ("", "0"):
        return PureBase
    from . import _speed  # built with the package on CPython: an ImportError here is a broken install

    _speed.bind(int(ffi.cast("uintptr_t", lib.shmdict_api())), raise_rc, _text, _pairs, _unpack_list)
    return _speed.SharedDictBase  # type: ignore[no-any-return]


_Base: Any = _base()

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_BOOL, _INT, _FLOAT = lib.SHMDICT_T_BOOL, lib.SHMDICT_T_INT, lib.SHMDICT_T_FLOAT
_STR, _BYTES = lib.SHMDICT_T_STR, lib.SHMDICT_T_BYTES
_ENOTFOUND, _EEXIST, _ERANGE = lib.SHMDICT_ENOTFOUND, lib.SHMDICT_EEXIST, lib.SHMDICT_ERANGE
_NX, _XX = lib.SHMDICT_SET_NX, lib.SHMDICT_SET_XX
_NULL = ffi.NULL
_c_get, _c_set = lib.shmdict_get, lib.shmdict_set
_u32 = struct.Struct("<I")
_u16 = struct.Struct("<H")
_ETIMEDOUT, _EINTR, _ECLOSED = lib.SHMDICT_ETIMEDOUT, lib.SHMDICT_EINTR, lib.SHMDICT_ECLOSED
_EV_NAMES = {
    lib.SHMDICT_EV_SET: "set",
    lib.SHMDICT_EV_DELETE: "delete",
    lib.SHMDICT_EV_EXPIRE: "expire",
    lib.SHMDICT_EV_EVICT: "evict",
    lib.SHMDICT_EV_FLUSH: "flush",
}
_ASYNC_SLICE = 0.25  # seconds a waiting thread sleeps before re-checking for cancellation

DEFAULT_LOCK_TIMEOUT = 10.0
"""Seconds a handle waits for the dict's lock before raising LockTimeout,
unless ``lock_timeout=`` says otherwise. The lock is normally held for
microseconds; only a holder that is stopped, frozen or stuck -- or a damaged
lock word -- makes anyone wait this long."""

_EUNTRUSTED, _ELOCKTIMEOUT = lib.SHMDICT_EUNTRUSTED, lib.SHMDICT_ELOCKTIMEOUT


# ---- asyncio: blocking waits on short-lived threads ---------------------------
# Each await runs its blocking slice on a thread of its own that ends with the
# slice, so no idle thread outlives an await: nothing for fork() to inherit
# half-alive (a pool's threads vanish in a child and its queue then hangs), and
# no "fork() with threads running" warnings from the library's own threads.


def _deliver(fut: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    if fut.done():  # cancelled meanwhile: the slice's result is dropped
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def run() -> None:
        try:
            result: tuple[bool, Any] = (True, fn(*args))
        except BaseException as e:  # delivered to the awaiting coroutine
            result = (False, e)
        try:
            loop.call_soon_threadsafe(_deliver, fut, *result)
        except RuntimeError:
            pass  # the loop closed while this slice slept: nobody is waiting

    threading.Thread(target=run, name="shmdict-wait", daemon=True).start()
    return await fut


class Event(NamedTuple):
    """One change read by :meth:`SharedDict.watch`: ``op`` is ``"set"``,
    ``"delete"``, ``"expire"``, ``"evict"`` or ``"flush"`` (``key`` is ``None``
    for flush), or ``"lost"``, whose ``key`` is the number of events the
    reader missed because it fell behind.

    .. versionadded:: 0.1
    """

    op: str
    key: Union[str, int, None]


def _timeout(timeout: Optional[float]) -> float:
    """-1.0 for no limit, else a finite number of seconds >= 0."""
    if timeout is None:
        return -1.0
    t = seconds(timeout, "timeout")
    if t < 0:
        raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
    return t


def _dir() -> str:
    return os.environ.get("SHMDICT_DIR") or "/dev/shm"


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be str, not {type(name).__name__}")
    if not _NAME.fullmatch(name) or not name.isascii():
        raise ValueError(f"invalid dict name {name!r}: it must match [A-Za-z0-9][A-Za-z0-9._-]{{0,199}}")
    return name


def _path(directory: str, name: str) -> str:
    return os.path.join(directory, "shmdict." + name)


def _unlink_if_same(path: str, pid: int, dev: int, ino: int) -> None:
    """Unlink the owner's name: only in the creating process, and only if the
    name still refers to the file it created (never a same-named successor)."""
    if os.getpid() != pid:
        return
    try:
        st = os.stat(path, follow_symlinks=False)
        if (st.st_dev, st.st_ino) == (dev, ino):
            os.unlink(path)
    except OSError:
        pass


class SharedDict(_Base, MutableMapping[str, Value]):
    """A dict shared by every process that opens the same name.

    Create one with :func:`shmdict.new`, attach with :func:`shmdict.get`, or
    either with :func:`shmdict.open`. Every operation is atomic across
    processes and threads; values keep their type (bool, int, float, str,
    bytes); keys may carry a TTL.

    .. versionadded:: 0.1
    """

    __slots__ = (
        "_h", "_name", "_dir", "_size", "_owner_pid", "_finalizer", "_lock_timeout", "_shared",
        "_ident", "__weakref__",
    )

    def __init__(
        self,
        handle: Any,
        name: str,
        directory: str,
        owner: bool,
        lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
        shared: Any = False,
    ) -> None:
        # Private: use shmdict.new / get / open.
        self._lock_timeout = lock_timeout
        self._shared = shared
        lib.shmdict_set_lock_timeout(handle, _lib.lock_timeout(lock_timeout))  # before the first lock
        self._h: Any = ffi.gc(handle, lib.shmdict_close)  # munmap once no call holds it
        self._name = name
        # The base's hot methods call the core with this very handle; they keep
        # self._h alive while a call is in flight (see csrc/python/pytype.c, CLOSING).
        self._attach(int(ffi.cast("uintptr_t", handle)), self._h, name)
        self._dir = directory
        info = ffi.new("shmdict_info_t *")
        _lib.check(lib.shmdict_info(self._h, info))
        self._size = int(info.size)
        self._ident = (int(info.dev), int(info.ino))
        self._owner_pid = os.getpid() if owner else 0
        self._finalizer: Optional[weakref.finalize] = None
        if owner:
            self._finalizer = weakref.finalize(
                self, _unlink_if_same, _path(directory, name), os.getpid(), info.dev, info.ino
            )

    # ---- attributes -------------------------------------------------------

    @property
    def name(self) -> str:
        """The dict's name."""
        return self._name

    @property
    def size(self) -> int:
        """The size in bytes it was created with."""
        return self._size

    @property
    def owner(self) -> bool:
        """True for the handle returned by ``new``, in the process that created it."""
        return self._owner_pid == os.getpid()

    @property
    def closed(self) -> bool:
        return self._h is None

    def _handle(self) -> Any:
        h = self._h
        if h is None:
            raise ValueError(f"operation on closed SharedDict {self._name!r}")
        return h

    def __repr__(self) -> str:
        state = "closed" if self._h is None else f"size={self._size}"
        return f"<SharedDict {self._name!r} {state}{' owner' if self.owner else ''}>"

    # ---- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """Release this handle. The owner's close also unlinks the name (only in
        the creating process). Idempotent; other handles are not disturbed.

        .. versionadded:: 0.1
        """
        h = self._h
        if h is None:
            return
        lib.shmdict_interrupt(h)  # waiters on this handle return (ValueError) instead of sleeping on
        self._detach()
        self._h = h = None  # the mapping goes when the last in-flight call returns
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> SharedDict:
        self._handle()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A non-owner reference by name, with the same trust and lock timeout:
        # what a spawn worker needs.
        return (_attach, (self._name, self._dir, self._shared, self._lock_timeout))

    @property
    def lock_timeout(self) -> Optional[float]:
        """Seconds this handle waits for the dict's lock before raising
        :class:`shmdict.LockTimeout` (``None``: no bound)."""
        return self._lock_timeout

    # ---- reads ------------------------------------------------------------

    def _read(self, fn: Any, key: str) -> Any:
        """Run a get-like C call; returns the value or raises KeyError."""
        return read(fn, self._handle(), encode_key(key), key, self._name)

    # get, [], in, pop, set, [] =, del, delete, incr, get_many and set_many
    # come from the base class: shmdict._speed.SharedDictBase (C) on CPython,
    # shmdict._pure.PureBase (the same over cffi) on PyPy or with SHMDICT_PURE=1.

    def ttl(self, key: str) -> Optional[float]:
        """``None`` if ``key`` is missing; ``0`` if it never expires; else the
        remaining seconds (a float > 0).

        .. versionadded:: 0.1
        """
        h = self._handle()
        k = encode_key(key)
        out = scratch.out
        rc = lib.shmdict_ttl(h, k, len(k), out)
        if rc == _ENOTFOUND:
            return None
        if rc < 0:
            raise_rc(rc, key)
        return out.f if out.f > 0 else 0

    # ---- writes -----------------------------------------------------------

    def setdefault(self, key: str, default: Value = None) -> Value:  # type: ignore[assignment]
        """``d[key]`` if present, else store ``default`` and return it (atomic).

        .. versionadded:: 0.1
        """
        h = self._handle()
        k = encode_key(key)
        t, i, f, b, n = _store_args(default)
        while True:
            try:
                return self._read(_c_get, key)  # type: ignore[no-any-return]
            except KeyError:
                pass
            rc = _c_set(h, k, len(k), t, i, f, b, n, 0.0, _NX)
            if rc == 0:
                return default
            if rc != _EEXIST:
                raise_rc(rc, key)

    def expire(self, key: str, exptime: float) -> bool:
        """Set the TTL of ``key`` (``exptime > 0``) or clear it (``<= 0``);
        ``True`` if the key exists.

        .. versionadded:: 0.1
        """
        h = self._handle()
        k = encode_key(key)
        rc = lib.shmdict_expire(h, k, len(k), seconds(exptime))
        if rc == 0:
            return True
        if rc == _ENOTFOUND:
            return False
        raise_rc(rc, key)

    def flush_all(self) -> None:
        """Remove every item.

        .. versionadded:: 0.1
        """
        _lib.check(lib.shmdict_flush_all(self._handle()))

    def clear(self) -> None:
        # One C call instead of MutableMapping's popitem loop.
        self.flush_all()

    # ---- whole-table reads --------------------------------------------------

    def get_keys(self, max_count: int = 0, match: Optional[str] = None) -> list[str]:
        """The live keys (a snapshot); ``max_count > 0`` caps the list;
        ``match`` keeps only keys matching a glob pattern, with the syntax of
        :func:`fnmatch.fnmatchcase` (``*``, ``?``, ``[seq]``, ``[!seq]``).

        Raises:
            TypeError: ``max_count`` not an int, or ``match`` not a str.

        .. versionadded:: 0.1
        """
        if isinstance(max_count, bool) or not isinstance(max_count, int):
            raise TypeError(f"max_count must be an int, not {type(max_count).__name__}")
        if match is not None:
            return [k for k, _ in self._items(match, max_count, False)]
        h = self._handle()
        s = scratch
        while True:
            rc = lib.shmdict_keys(h, s.buf, s.cap, max(max_count, 0), s.out)
            if rc == _ERANGE:
                s.grow(s.out.len + s.out.len // 4)
                continue
            if rc < 0:
                raise_rc(rc)
            data = ffi.buffer(s.buf, s.out.len)[:]
            keys, pos, unpack = [], 0, _u32.unpack_from
            for _ in range(rc):
                (n,) = unpack(data, pos)
                keys.append(_text(data[pos + 4 : pos + 4 + n], self._name))
                pos += 4 + n
            return keys

    def __iter__(self) -> Iterator[str]:
        return iter(self.get_keys())

    def __len__(self) -> int:
        n = lib.shmdict_len(self._handle())
        if n < 0:
            raise_rc(n)
        return int(n)

    # ---- diagnostics --------------------------------------------------------

    def check(self) -> None:
        """Verify the whole table (O(size), under the lock): every slot, record,
        free list and counter.

        Raises:
            shmdict.CorruptError: describing the first inconsistency found.

        .. versionadded:: 0.1
        """
        msg = ffi.new("char[]", 256)
        rc = lib.shmdict_check(self._handle(), msg, 256)
        if rc == lib.SHMDICT_ECORRUPT:
            raise _lib.CorruptError(f"{self._name}: {ffi.string(msg).decode()}")
        _lib.check(rc)

    # ---- notification -------------------------------------------------------

    def version(self, key: str) -> int:
        """The key's version: a number that changes with every change of its
        value or TTL (``0`` while it is missing). Pass it to :meth:`wait` as
        ``since`` so that a change between reading and waiting is never missed.

        .. versionadded:: 0.1
        """
        h = self._handle()
        k = encode_key(key)
        out = scratch.out
        rc = lib.shmdict_version(h, k, len(k), out)
        if rc < 0:
            raise_rc(rc, key)
        return int(out.ver)

    def wait(self, key: str, timeout: Optional[float] = None, *, since: Optional[int] = None) -> Any:
        """Block until ``key`` changes -- set, incr, delete, expiry, eviction,
        flush -- and return its new value, or ``None`` if it went away.

        Without ``since``, waits for the next change after the call; with it,
        returns at once if the key's :meth:`version` already differs. A missing
        key that is set and then deleted -- or set with a TTL that runs out --
        before this call looks again counts as a change (it returns ``None``),
        in dicts with an event ring (the default; see ``events`` in :func:`new`). Waiting
        releases the GIL and costs no CPU (a futex in the shared file); a
        signal such as Ctrl-C interrupts it.

        Raises:
            TimeoutError: nothing changed within ``timeout`` seconds.
            ValueError: the handle was closed (also from another thread while waiting).

        .. versionadded:: 0.1
        """
        return self._wait(key, timeout, self._wait_cursor(since))

    @staticmethod
    def _wait_cursor(since: Optional[int]) -> Any:
        """The C wait cursor: (version it changes from, event ring sequence and position);
        kept across calls so that waiting in slices misses nothing."""
        if since is None:
            return ffi.new("uint64_t[3]", [2**64 - 1, 2**64 - 1, 2**64 - 1])
        if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since < 2**32:
            raise ValueError(f"since must be a version from version(), not {since!r}")
        return ffi.new("uint64_t[3]", [since, 2**64 - 1, 2**64 - 1])

    def _wait(self, key: str, timeout: Optional[float], cursor: Any) -> Any:
        h = self._handle()
        k = encode_key(key)
        t = _timeout(timeout)
        deadline = time.monotonic() + t
        s = scratch
        while True:
            rc = lib.shmdict_wait(h, k, len(k), cursor, t, s.out, s.buf, s.cap)
            if rc == _EINTR:  # signal handlers run here, between the two calls
                if t >= 0:
                    t = max(0.0, deadline - time.monotonic())
                continue
            if rc == _ENOTFOUND:
                return None
            if rc == _ETIMEDOUT:
                raise TimeoutError(f"{key!r} did not change within {timeout} s")
            if rc == _ECLOSED:
                raise ValueError(f"SharedDict {self._name!r} was closed while waiting")
            if (rc == _STR or rc == _BYTES) and s.out.len > s.cap:
                return self.get(key)  # too large for the buffer: read the (newest) value
            if rc < 0:
                raise_rc(rc, key)
            return self._decode(rc, s)

    def _decode(self, rc: int, s: Any) -> Any:
        out = s.out
        if rc == _INT:
            return out.i
        if rc == _FLOAT:
            return out.f
        if rc == _BOOL:
            return out.i != 0
        b = ffi.unpack(s.buf, out.len)
        return _text(b, self._name) if rc == _STR else b

    def _events(self, cursor: Any, match: str, timeout: float) -> list[Event]:
        """One batch of events after ``cursor`` (blocking up to ``timeout``)."""
        h = self._handle()
        s = scratch
        # Events for keys that do not match are consumed but do not count as
        # "an event came": keep waiting for the rest of the timeout.
        deadline = time.monotonic() + timeout if timeout >= 0 else None
        while True:
            rc = lib.shmdict_events(h, cursor, s.buf, s.cap, timeout, s.out)
            if rc == _EINTR:
                continue
            if rc == _ETIMEDOUT:
                return []
            if rc == _ECLOSED:
                raise ValueError(f"SharedDict {self._name!r} was closed while watching")
            if rc == lib.SHMDICT_EINVAL:
                raise ValueError(f"SharedDict {self._name!r} was created with events=0: nothing to watch")
            if rc == _ERANGE:  # the next event (a long key) does not fit: grow, never stall
                s.grow(int(s.out.len))
                continue
            if rc < 0:
                raise_rc(rc)
            events: list[Event] = []
            if s.out.i:
                events.append(Event("lost", int(s.out.i)))
            data = ffi.buffer(s.buf, s.out.len)[:]
            pos = 0
            for _ in range(rc):
                op = data[pos]
                (n,) = _u16.unpack_from(data, pos + 1)
                key = _text(data[pos + 3 : pos + 3 + n], self._name) if op != lib.SHMDICT_EV_FLUSH else None
                pos += 3 + n
                if key is None or match == "*" or fnmatch.fnmatchcase(key, match):
                    events.append(Event(_EV_NAMES.get(op, "set"), key))
            if events:
                return events
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return []

    def _watch_cursor(self) -> Any:
        cursor = ffi.new("uint64_t[2]", [0, 2**64 - 1])
        self._events(cursor, "*", 0.0)  # pins the cursor at "now"
        return cursor

    def watch(self, match: str = "*", *, timeout: Optional[float] = None) -> Iterator[Event]:
        """Iterate over the changes made after this call, in the order they
        were applied, as :class:`Event` ``(op, key)`` pairs, keeping the keys
        that match the glob ``match``. The iteration ends when no event comes
        for ``timeout`` seconds (never, by default).

        Events come from a bounded ring in the shared file (size set by
        ``new(..., events=N)``). A reader that falls behind gets
        ``Event("lost", n)`` -- the number of events it missed -- and then the
        newest ones: never silently wrong data. Resynchronise with ``get``.

        Raises:
            ValueError: the dict was created with ``events=0``, or the handle closed.

        .. versionadded:: 0.1
        """
        if not isinstance(match, str):
            raise TypeError(f"match must be a glob str, not {type(match).__name__}")
        t = _timeout(timeout)
        cursor = self._watch_cursor()

        def gen() -> Iterator[Event]:
            while True:
                batch = self._events(cursor, match, t)
                if not batch and t >= 0:
                    return
                yield from batch

        return gen()

    async def await_change(self, key: str, timeout: Optional[float] = None, *, since: Optional[int] = None) -> Any:
        """:meth:`wait` for asyncio: the event loop keeps running.

        .. versionadded:: 0.1
        """
        _timeout(timeout)
        encode_key(key)
        cursor = self._wait_cursor(since)  # one cursor for every slice: nothing falls between them
        try:
            return self._wait(key, 0, cursor)  # the first look, now: pins the cursor at this call
        except TimeoutError:
            pass
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            step = _ASYNC_SLICE if deadline is None else max(0.0, min(_ASYNC_SLICE, deadline - loop.time()))
            try:
                return await _in_thread(self._wait, key, step, cursor)
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    raise

    async def awatch(self, match: str = "*", *, timeout: Optional[float] = None) -> AsyncIterator[Event]:
        """:meth:`watch` for asyncio: ``async for ev in d.awatch("user:*")``.

        .. versionadded:: 0.1
        """
        if not isinstance(match, str):
            raise TypeError(f"match must be a glob str, not {type(match).__name__}")
        _timeout(timeout)
        cursor = self._watch_cursor()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            step = _ASYNC_SLICE if deadline is None else max(0.0, min(_ASYNC_SLICE, deadline - loop.time()))
            batch = await _in_thread(self._events, cursor, match, step)
            for ev in batch:
                yield ev
            if batch and timeout is not None:
                deadline = loop.time() + timeout
            elif not batch and deadline is not None and loop.time() >= deadline:
                return

    def _info(self) -> dict[str, int]:
        info = ffi.new("shmdict_info_t *")
        _lib.check(lib.shmdict_info(self._handle(), info))
        return {f: int(getattr(info, f)) for f in dir(info)}

    # ---- more operations: ngx.shared.DICT parity and what its users asked for
    # Each is one C call under the dict's lock (get_or_set and lock() add a
    # named lock around such calls).

    def _set_flags(self, key: str, value: Value, exptime: float, flags: int) -> int:
        h = self._handle()
        k = encode_key(key)
        t, i, f, b, n = _store_args(value)
        ex = seconds(exptime) if exptime else 0.0
        return _c_set(h, k, len(k), t, i, f, b, n, ex, flags)  # type: ignore[no-any-return]

    def add(self, key: str, value: Value, exptime: float = 0) -> bool:
        """Store ``value`` only if ``key`` is absent (an expired key counts as
        absent); ``True`` if stored. In an evicting dict it may evict.

        Raises:
            As :meth:`set`.

        .. versionadded:: 0.1
        """
        rc = self._set_flags(key, value, exptime, _NX)
        if rc == _EEXIST:
            return False
        if rc:
            raise_rc(rc, key)
        return True

    def replace(self, key: str, value: Value, exptime: float = 0) -> bool:
        """Store ``value`` only if ``key`` is present (and live); ``True`` if stored.

        Raises:
            As :meth:`set`.

        .. versionadded:: 0.1
        """
        rc = self._set_flags(key, value, exptime, _XX)
        if rc == _ENOTFOUND:
            return False
        if rc:
            raise_rc(rc, key)
        return True

    def safe_set(self, key: str, value: Value, exptime: float = 0) -> None:
        """As :meth:`set`, but never evicts: a full dict raises ``Full`` even
        when it was opened with ``evict=True``.

        Raises:
            As :meth:`set`.

        .. versionadded:: 0.1
        """
        rc = self._set_flags(key, value, exptime, _NOEVICT)
        if rc:
            raise_rc(rc, key)

    def safe_add(self, key: str, value: Value, exptime: float = 0) -> bool:
        """As :meth:`add`, but never evicts (raises ``Full`` instead).

        Raises:
            As :meth:`set`.

        .. versionadded:: 0.1
        """
        rc = self._set_flags(key, value, exptime, _NX | _NOEVICT)
        if rc == _EEXIST:
            return False
        if rc:
            raise_rc(rc, key)
        return True

    def get_stale(self, key: str) -> tuple[Any, bool]:
        """``(value, stale)``: the value even if it has expired but was not yet
        reclaimed (then ``stale`` is ``True``); ``(None, False)`` if there is none.

        Raises:
            TypeError / ValueError: for a bad key.

        .. versionadded:: 0.1
        """
        stale = ffi.new("int *")
        fn = lib.shmdict_get_stale

        def call(h: Any, k: bytes, n: int, out: Any, buf: Any, cap: int) -> int:
            return fn(h, k, n, out, buf, cap, stale)  # type: ignore[no-any-return]

        try:
            return self._read(call, key), bool(stale[0])
        except KeyError:
            return None, False

    def flush_expired(self, max_count: int = 0) -> int:
        """Free expired items (at most ``max_count`` if ``> 0``); returns how many.

        Raises:
            TypeError: ``max_count`` not an int.

        .. versionadded:: 0.1
        """
        n = lib.shmdict_flush_expired(self._handle(), _count(max_count, "max_count"))
        if n < 0:
            raise_rc(n)
        return int(n)

    def stats(self) -> dict[str, Any]:
        """Counters and sizes, to diagnose a full or contended dict.

        Keys: ``size``, ``capacity``, ``free_space`` (as :meth:`free_space`),
        ``entries`` (live items), ``records`` and ``expired_pending`` (expired
        items not reclaimed yet), ``used_bytes`` / ``free_bytes`` (arena bytes
        held by records / not; ``free_bytes`` is a sum over many blocks, not
        the room for one item), ``index_cap`` / ``index_used`` /
        ``index_limit`` (the index takes ``index_limit`` keys, then grows into
        the free space), ``index_growths`` and ``compactions`` (times the
        index grew, and free space scattered in holes was gathered),
        ``hits`` / ``misses`` (keyed reads), ``expired`` (expired items
        reclaimed), ``evictions``, ``lock_acquisitions``, ``lock_waits``
        (acquisitions that had to sleep), ``lock_wait_seconds``,
        ``recoveries`` (dead lock holders repaired, ``EOWNERDEAD``), ``evict``
        (the policy). Counters are since creation, shared by all processes,
        and approximate only in that an operation rolled back after a crash
        may have counted. O(size): it walks the arena for ``free_space``.

        .. versionadded:: 0.1
        """
        st = ffi.new("shmdict_stats_t *")
        _lib.check(lib.shmdict_stats(self._handle(), st))
        out: dict[str, Any] = {f: int(getattr(st, f)) for f in _STAT_FIELDS}
        out["lock_wait_seconds"] = st.lock_wait_ns / 1e9
        out["evict"] = bool(st.evict)
        return out

    def capacity(self) -> int:
        """Bytes of record storage (the arena; ``size`` also pays for the
        header and the index).

        .. versionadded:: 0.1
        """
        info = ffi.new("shmdict_info_t *")  # O(1), unlike stats()
        _lib.check(lib.shmdict_info(self._handle(), info))
        return int(info.capacity)

    def free_space(self) -> int:
        """The largest item a ``set`` of a *new* key could store right now,
        without evicting: a str/bytes item whose key and value together take
        up to this many bytes (UTF-8) fits. It counts what ``set`` would do
        before giving up -- reclaim expired items, merge adjacent free blocks,
        split a larger one -- and is 0 when the index has no slot for a new
        key. O(size): it walks the arena.

        .. versionadded:: 0.1
        """
        st = ffi.new("shmdict_stats_t *")
        _lib.check(lib.shmdict_stats(self._handle(), st))
        return int(st.free_space)

    def cas(self, key: str, expected: Optional[Value], new: Value, exptime: float = 0) -> bool:
        """Compare-and-set: store ``new`` only if the current value equals
        ``expected`` -- same type and equal value (``1`` does not match
        ``1.0`` or ``True``; a NaN never matches) -- or, with ``expected=None``,
        only if the key is absent. ``True`` if stored. The TTL becomes
        ``exptime`` as in :meth:`set`.

        Raises:
            TypeError / OverflowError / ValueError: as :meth:`set`, for
                ``expected`` too.
            shmdict.Full: no room for ``new``; nothing changed.

        .. versionadded:: 0.1
        """
        h = self._handle()
        k = encode_key(key)
        if expected is None:
            et, ei, ef, eb, en = 0, 0, 0.0, _NULL, 0
        else:
            et, ei, ef, eb, en = _store_args(expected)
        t, i, f, b, n = _store_args(new)
        ex = seconds(exptime) if exptime else 0.0
        rc = lib.shmdict_cas(h, k, len(k), et, ei, ef, eb, en, t, i, f, b, n, ex, scratch.out)
        if rc < 0:
            raise_rc(rc, key)
        return bool(rc == 1)

    def _items(self, match: Optional[str], max_count: int, values: bool) -> list[tuple[str, Any]]:
        h = self._handle()
        pat, plen = _pattern(match)
        s = scratch
        while True:
            rc = lib.shmdict_items(h, pat, plen, max(max_count, 0), values, s.buf, s.cap, s.out)
            if rc == _ERANGE:
                s.grow(s.out.len + s.out.len // 4)
                continue
            if rc < 0:
                raise_rc(rc)
            break
        data = ffi.buffer(s.buf, s.out.len)[:]
        out: list[tuple[str, Any]] = []
        pos, unpack = 0, _u32.unpack_from
        for _ in range(rc):
            (n,) = unpack(data, pos)
            key = _text(data[pos + 4 : pos + 4 + n], self._name)
            pos += 4 + n
            v: Any = None
            if values:
                v, pos = _unpack_value(data, pos)
            out.append((key, v))
        return out

    def items(self, match: Optional[str] = None) -> list[tuple[str, Value]]:  # type: ignore[override]
        """A snapshot list of ``(key, value)`` of every live item (``match``:
        a glob, as :meth:`get_keys`), taken in one lock hold. Unlike
        ``dict.items()`` it is a list, not a live view: iterating it never
        races with other processes.

        .. versionadded:: 0.1
        """
        return self._items(match, 0, True)

    def values(self) -> list[Value]:  # type: ignore[override]
        """A snapshot list of every live value, taken in one lock hold.

        .. versionadded:: 0.1
        """
        return [v for _, v in self._items(None, 0, True)]

    def scan(self, cursor: int = 0, count: int = 100, match: Optional[str] = None) -> tuple[int, list[str]]:
        """One batch of an incremental key scan: ``(next_cursor, keys)``.

        Start with ``cursor=0`` and pass each ``next_cursor`` back until it is
        0. The lock is held for one batch only, so scanning a big dict never
        stalls other processes for long. A key present for the whole scan is
        returned at least once (rarely twice); keys added or removed during
        the scan may or may not appear. ``count`` bounds the work per batch:
        a batch examines at least ``count`` live keys unless the scan ends,
        and a few more (it always finishes the probe cluster it is in).
        ``match`` filters them with a glob as :meth:`get_keys`, so filtered
        batches may be short or even empty before the end.

        Raises:
            TypeError / ValueError: ``cursor`` not an int >= 0, ``count`` not
                an int > 0, ``match`` not a str.

        .. versionadded:: 0.1
        """
        cur = _count(cursor, "cursor")
        cnt = _count(count, "count")
        if cnt == 0:
            raise ValueError("count must be > 0")
        h = self._handle()
        pat, plen = _pattern(match)
        s = scratch
        while True:
            rc = lib.shmdict_scan(h, cur, cnt, pat, plen, s.buf, s.cap, s.out)
            if rc == _ERANGE:
                s.grow(s.out.len + s.out.len // 4)
                continue
            if rc < 0:
                raise_rc(rc)
            break
        nxt = int(s.out.i)
        data = ffi.buffer(s.buf, s.out.len)[:]
        keys, pos, unpack = [], 0, _u32.unpack_from
        for _ in range(rc):
            (n,) = unpack(data, pos)
            keys.append(_text(data[pos + 4 : pos + 4 + n], self._name))
            pos += 4 + n
        return nxt, keys

    def limit(self, key: str, rate: float, per: float, burst: int = 0) -> tuple[bool, int, float]:
        """Rate limiting in one atomic call: GCRA (a token bucket) kept in one
        item. The bucket holds ``rate + burst`` requests and refills at
        ``rate`` per ``per`` seconds; each call takes one request.

        Returns:
            ``(allowed, remaining, reset_after)``: whether this request is
            admitted, how many more would be admitted right now, and the
            seconds until the bucket is full again (the item expires then).
            A refused request changes nothing; after one, the next request is
            admitted ``reset_after - (rate + burst - 1) * per / rate`` seconds
            later.

        Raises:
            TypeError: ``rate`` / ``per`` not numbers, ``burst`` not an int, or
                ``key`` holds a value that is not an int (the item stores its
                state as an int).
            ValueError: ``rate <= 0``, ``per <= 0``, ``burst < 0``,
                ``rate + burst < 1``, or values out of range.
            shmdict.Full: no room to create the item.

        .. versionadded:: 0.1
        """
        h = self._handle()
        k = encode_key(key)
        r = seconds(rate, "rate")
        p = seconds(per, "per")
        b = _count(burst, "burst")
        out = scratch.out
        rc = lib.shmdict_limit(h, k, len(k), r, p, float(b), out)
        if rc == lib.SHMDICT_EINVAL:
            raise ValueError(f"limit needs rate > 0, per > 0, burst >= 0 and rate + burst >= 1 (got {rate}, {per}, {burst})")
        if rc < 0:
            raise_rc(rc, key)
        return rc == 1, int(out.i), float(out.f)

    def lock(self, name: str, timeout: Optional[float] = None) -> "NamedLock":
        """A cross-process lock called ``name``, separate from the dict's own
        lock and released by the kernel if its holder dies.

        ``with d.lock("job", timeout=5.0):`` waits at most 5 seconds, then
        raises ``TimeoutError``; ``timeout=None`` waits forever. The object
        also has ``acquire(blocking=True, timeout=None)`` / ``release()`` /
        ``locked()`` like :class:`threading.Lock`. Not reentrant.

        Raises:
            TypeError / ValueError: bad name (a key, see SPEC §3) or timeout.

        .. versionadded:: 0.1
        """
        return NamedLock(self, b"L" + encode_key(name), name, timeout)

    def get_or_set(
        self,
        key: str,
        factory: Callable[[], Value],
        exptime: float = 0,
        lock_timeout: Optional[float] = 30.0,
    ) -> Value:
        """The value of ``key``; if it is missing, exactly one of the
        processes that miss it at the same time calls ``factory()`` and stores
        the result (with ``exptime``); the others wait for it and return it
        (single-flight: no dog-pile).

        Raises:
            TimeoutError: waited more than ``lock_timeout`` seconds for the
                process computing the value.
            Whatever ``factory`` raises (nothing is stored; the next waiter
                calls ``factory`` itself).
            TypeError / ValueError / shmdict.Full: as :meth:`set`.

        .. versionadded:: 0.1
        """
        if lock_timeout is not None:
            lock_timeout = seconds(lock_timeout, "lock_timeout")
        # lock_timeout bounds the waits for the dict's lock too (a stopped holder).
        dl = _lib.deadline(lock_timeout if lock_timeout is not None and lock_timeout >= 0 else None)
        with dl:
            v = self.get(key, _MISSING)
            if v is not _MISSING:
                return v  # type: ignore[no-any-return]
            lk = NamedLock(self, b"G" + encode_key(key), key, lock_timeout)
            if not lk.acquire():
                raise TimeoutError(f"get_or_set({key!r}): no value within {lock_timeout} s")
        try:
            with dl:
                v = self.get(key, _MISSING)
            if v is _MISSING:
                v = factory()
                self.set(key, v, exptime)
            return v  # type: ignore[no-any-return]
        finally:
            lk.release()

    # ---- lists: one record per list, see csrc/list.c

    def _push(self, key: str, value: Value, left: int) -> int:
        h = self._handle()
        k = encode_key(key)
        t, i, f, b, n = _store_args(value)
        out = scratch.out
        rc = lib.shmdict_push(h, k, len(k), left, t, i, f, b, n, out)
        if rc < 0:
            raise_rc(rc, key)
        return int(out.i)

    def lpush(self, key: str, value: Value) -> int:
        """Insert ``value`` at the head of the list ``key`` (created if
        missing or expired); returns the new length. The list keeps its TTL.

        Raises:
            TypeError: ``key`` holds a scalar, or ``value`` is not a scalar
                (bool, int, float, str, bytes).
            OverflowError / ValueError: as :meth:`set`.
            shmdict.Full: no room for the longer list (it is unchanged).

        .. versionadded:: 0.1
        """
        return self._push(key, value, 1)

    def rpush(self, key: str, value: Value) -> int:
        """Append ``value`` at the tail of the list ``key``; as :meth:`lpush`.

        .. versionadded:: 0.1
        """
        return self._push(key, value, 0)

    def _pop_end(self, key: str, left: int) -> Any:
        fn = lib.shmdict_pop_end

        def call(h: Any, k: bytes, n: int, out: Any, buf: Any, cap: int) -> int:
            return fn(h, k, n, left, out, buf, cap)  # type: ignore[no-any-return]

        try:
            return self._read(call, key)
        except KeyError:
            return None

    def lpop(self, key: str) -> Optional[Value]:
        """Remove and return the head of the list ``key``; ``None`` if there
        is no such list. A list whose last element is popped is deleted.

        Raises:
            TypeError: ``key`` holds a scalar.

        .. versionadded:: 0.1
        """
        return self._pop_end(key, 1)  # type: ignore[no-any-return]

    def rpop(self, key: str) -> Optional[Value]:
        """Remove and return the tail of the list ``key``; as :meth:`lpop`.

        .. versionadded:: 0.1
        """
        return self._pop_end(key, 0)  # type: ignore[no-any-return]

    def llen(self, key: str) -> int:
        """The length of the list ``key``; 0 if there is none.

        Raises:
            TypeError: ``key`` holds a scalar.

        .. versionadded:: 0.1
        """
        h = self._handle()
        k = encode_key(key)
        n = lib.shmdict_llen(h, k, len(k))
        if n < 0:
            raise_rc(n, key)
        return int(n)

    def _lock_fd(self) -> int:
        """A new file description of this dict's file (checked to be the same
        file), for named locks."""
        self._handle()  # identity cached at attach: no wait for the dict's lock here
        path = _path(self._dir, self._name)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self._ident:
            os.close(fd)
            raise FileNotFoundError(f"{path} no longer names this dict (unlinked?): named locks need it")
        return fd

    # ---- snapshots (shmdict/_snapshot.py) -------------------------------------

    def dump(self, file: Any) -> int:
        """Write a snapshot of every live item (every type, lists too; TTLs as
        wall-clock deadlines) to ``file``: a path (written to a temporary file
        beside it, mode 0600, and renamed into place once complete) or a binary
        file object. Returns the number of items written.

        Each item is read whole under the lock, in batches of short lock holds:
        an item present for the whole dump is in it exactly once, but writers
        running meanwhile are not paused, so the snapshot is not one instant
        of the whole dict.

        .. versionadded:: 0.1
        """
        from ._snapshot import dump_local

        return dump_local(self, file)

    def load(self, file: Any) -> int:
        """Store the items of a snapshot (from a path or a binary file object),
        as :meth:`set` would: the same keys are overwritten, other keys kept,
        items whose TTL has run out since the dump skipped; the others keep the
        time that remains. Returns the number of items stored.

        Raises:
            shmdict.CorruptError: not a snapshot, or damaged or truncated;
                the whole file is checked first, so nothing was stored.
            shmdict.Full: the snapshot can never fit in this dict (nothing was
                stored); or the dict filled up during the load: the items
                before the one that did not fit (in file order) are stored,
                the rest are not (the exception's ``stored`` says how many).

        .. versionadded:: 0.1
        """
        from ._snapshot import load_local

        return load_local(self, file)


# ---- helpers of the extra operations ---------------------------------------------

_NOEVICT = lib.SHMDICT_SET_NOEVICT
_LIST, _EWRONGTYPE = lib.SHMDICT_T_LIST, lib.SHMDICT_EWRONGTYPE
_tag_q = struct.Struct("<Bq").pack
_tag_d = struct.Struct("<Bd").pack
_tag_u32 = struct.Struct("<BI").pack
_STAT_FIELDS = (
    "size capacity free_space entries records expired_pending used_bytes free_bytes index_cap "
    "index_used index_limit hits misses expired evictions lock_acquisitions lock_waits recoveries "
    "index_growths compactions"
).split()


def _count(value: object, what: str) -> int:
    """A non-negative int argument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, not {value}")
    if value > INT64_MAX:
        raise OverflowError(f"{what} {value} is too large")
    return value


def _pattern(match: Optional[str]) -> tuple[Any, int]:
    if match is None:
        return _NULL, 0
    if not isinstance(match, str):
        raise TypeError(f"match must be a str glob pattern, not {type(match).__name__}")
    b = match.encode()
    return b, len(b)


class NamedLock:
    """A cross-process lock of one :class:`SharedDict`, from :meth:`SharedDict.lock`.

    It is a kernel open-file-description lock on one byte of the dict's file
    (far past its data), so the kernel releases it when the holder's process
    dies, however it dies. Each ``NamedLock`` object holds its own file
    description while it holds the lock: two objects for the same name
    exclude each other even in one process; one object is not reentrant.
    Do not let a forked child release a lock its parent holds.

    .. versionadded:: 0.1
    """

    __slots__ = ("_d", "_off", "_name", "_timeout", "_fd")

    def __init__(self, d: SharedDict, tagged: bytes, name: str, timeout: Optional[float]) -> None:
        if timeout is not None:
            timeout = seconds(timeout, "timeout")  # NaN and inf: ValueError
        self._d = d
        self._off = int(lib.shmdict_lock_offset(d._handle(), tagged, len(tagged)))
        self._name = name
        self._timeout = timeout
        self._fd = -1

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        """Take the lock; ``True`` if taken. ``blocking=False`` tries once;
        else wait up to ``timeout`` seconds (``None``: the timeout given to
        :meth:`SharedDict.lock`; negative: forever).

        Raises:
            RuntimeError: this object already holds the lock (not reentrant).

        .. versionadded:: 0.1
        """
        if self._fd >= 0:
            raise RuntimeError(f"lock {self._name!r} is already held by this object (not reentrant)")
        if timeout is None:
            timeout = self._timeout
        else:
            timeout = seconds(timeout, "timeout")  # NaN would never expire, inf never either
            if timeout >= 0 and not blocking:
                raise ValueError("can't specify a timeout for a non-blocking call")
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        fd = self._d._lock_fd()
        delay = 0.0002
        try:
            while True:
                rc = lib.shmdict_flock(fd, self._off, 1)
                if rc == 0:
                    self._fd, fd = fd, -1
                    return True
                if rc < 0 and ffi.errno != 4:  # EINTR: signal handlers run, then retry
                    raise_rc(rc)
                if rc == 1 and (not blocking or (deadline is not None and time.monotonic() >= deadline)):
                    return False
                # The kernel offers no timed wait for these locks: poll, backing off to 5 ms.
                pause = delay if deadline is None else min(delay, max(deadline - time.monotonic(), 0))
                time.sleep(pause)
                delay = min(delay * 2, 0.005)
        finally:
            if fd >= 0:
                os.close(fd)

    def release(self) -> None:
        """Release the lock.

        Raises:
            RuntimeError: this object does not hold it.

        .. versionadded:: 0.1
        """
        fd = self._fd
        if fd < 0:
            raise RuntimeError(f"release of unheld lock {self._name!r}")
        self._fd = -1
        try:
            lib.shmdict_flock(fd, self._off, 0)
        finally:
            os.close(fd)  # closing the description releases it in any case

    def locked(self) -> bool:
        """Whether some process (this object included) holds the lock now.

        .. versionadded:: 0.1
        """
        if self._fd >= 0:
            return True
        fd = self._d._lock_fd()
        try:
            if lib.shmdict_flock(fd, self._off, 1) == 0:
                lib.shmdict_flock(fd, self._off, 0)
                return False
            return True
        finally:
            os.close(fd)

    def __enter__(self) -> "NamedLock":
        if not self.acquire():
            raise TimeoutError(f"lock {self._name!r} not acquired within {self._timeout} s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<NamedLock {self._name!r} {'held' if self._fd >= 0 else 'free'}>"


# ---- module-level constructors ------------------------------------------------


def _default_events(size: int) -> int:
    # about one event per KiB of dict, 16 to 4096 (a 64m dict keeps 4096: 256 KiB)
    return max(16, min(4096, size // 1024))


def _check_mode(mode: object) -> int:
    """Read/write bits only: setuid, setgid, sticky and execute bits would turn
    a file other processes write into something else entirely."""
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise ValueError(f"mode must be an int permission mask such as 0o600, not {mode!r}")
    if mode < 0 or mode & ~0o666:
        raise ValueError(
            f"mode {oct(mode) if mode >= 0 else mode} has bits other than read/write: a dict file takes "
            "a subset of 0o666 (e.g. 0o600, 0o660, 0o666)"
        )
    return mode


def _trust(shared: object) -> tuple[int, int]:
    """(flags, also_uid) for shmdict_attach from ``shared``: False, True, a
    user name or a uid."""
    if shared is False or shared is None:
        return 0, -1
    if shared is True:
        return lib.SHMDICT_TRUST_SHARED, -1
    if isinstance(shared, int) and not isinstance(shared, bool):
        if not 0 <= shared < 2**32 - 1:
            raise ValueError(f"shared must be True, a user name or a uid >= 0, not {shared!r}")
        return lib.SHMDICT_TRUST_SHARED, shared
    if isinstance(shared, str):
        if shared.isdigit() and shared.isascii():
            return _trust(int(shared))
        import pwd

        try:
            return lib.SHMDICT_TRUST_SHARED, pwd.getpwnam(shared).pw_uid
        except KeyError:
            raise ValueError(f"shared={shared!r}: no such user") from None
    raise TypeError(f"shared must be a bool, a user name or a uid, not {type(shared).__name__}")


def _group(group: object) -> int:
    """A gid for shmdict_create from ``group``: None (-1: the creator's), a group name or a gid."""
    if group is None:
        return -1
    if isinstance(group, int) and not isinstance(group, bool):
        if not 0 <= group < 2**32 - 1:
            raise ValueError(f"group must be a group name or a gid >= 0, not {group!r}")
        return group
    if isinstance(group, str):
        if group.isdigit() and group.isascii():
            return _group(int(group))
        import grp

        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"group={group!r}: no such group") from None
    raise TypeError(f"group must be a group name or a gid, not {type(group).__name__}")


def _user(uid: int) -> str:
    import pwd

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _untrusted(path: str, uid: int, mode: int) -> PermissionError:
    me = os.geteuid()
    if uid not in (me, 0):
        try:
            import pwd

            hint = repr(pwd.getpwuid(uid).pw_name)
        except KeyError:
            hint = str(uid)
        you = "root (you)" if me == 0 else f"you ({_user(me)}) or root"
        msg = (
            f"refusing to attach to {path}: it is owned by {_user(uid)}, not by {you}. "
            "Anyone may create files in that directory, so another user could have planted it to read or "
            f"alter what you store. If the dict is meant to be shared with that user, pass shared={hint} "
            f"(URL: ?shared={hint.strip(chr(39))}, command line: --shared {hint.strip(chr(39))})."
        )
    else:
        who = " and ".join(w for w, bit in (("its group", 0o020), ("other users", 0o002)) if mode & bit)
        msg = (
            f"refusing to attach to {path}: it is writable by {who} (mode {oct(mode & 0o7777)}), so they "
            "could alter or corrupt it. If the dict is meant to be shared between users, pass shared=True "
            "(URL: ?shared=1, command line: --shared)."
        )
    return PermissionError(errno.EACCES, msg)


def new(
    name: str,
    size: Union[int, str],
    *,
    mode: int = 0o600,
    group: Union[str, int, None] = None,
    events: Optional[int] = None,
    evict: bool = False,
    lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
) -> SharedDict:
    """Create the dict ``name`` with ``size`` bytes of storage; the returned
    handle owns the name (closing it unlinks the name, in this process only).
    ``evict=True`` makes the dict evict (CLOCK, an LRU approximation) instead
    of raising ``Full`` when it is full; the policy belongs to the dict.

    ``events`` sizes the ring that :meth:`SharedDict.watch` reads (about that
    many recent changes, 64 bytes each, at most 1/8 of ``size``); ``0``
    disables it. Default: one per KiB of ``size``, from 16 to 4096.

    ``mode`` is the file's permissions: read/write bits only (a subset of
    ``0o666``), default ``0o600``; ``group`` (a group name or gid) gives the
    file that group from the start, for a dict shared with a group of users
    (``mode=0o660``; see :func:`get`'s ``shared``). ``lock_timeout`` bounds every wait of this
    handle for the dict's lock (seconds, or ``None`` for no bound; default
    :data:`DEFAULT_LOCK_TIMEOUT`): past it an operation raises
    :class:`shmdict.LockTimeout` and changes nothing.

    Raises:
        FileExistsError: the name exists.
        ValueError / TypeError: bad name, size, mode or lock_timeout.
        OSError: the directory cannot hold ``size`` bytes (ENOSPC), or another
            system error.

    .. versionadded:: 0.1
    """
    _check_name(name)
    n = _lib.parse_size(size)
    _check_mode(mode)
    gid = _group(group)
    _lib.lock_timeout(lock_timeout)
    if events is None:
        events = _default_events(n)
    elif isinstance(events, bool) or not isinstance(events, int) or events < 0:
        raise ValueError(f"events must be an int >= 0, not {events!r}")
    d = _dir()
    p = ffi.new("shmdict_t **")
    rc = lib.shmdict_create(d.encode(), name.encode(), n, mode, gid, events, p)
    if rc:
        raise_rc(rc, path=_path(d, name))
    sd = SharedDict(p[0], name, d, owner=True, lock_timeout=lock_timeout)
    if evict:
        _lib.check(lib.shmdict_configure(sd._h, 1))
    return sd


def _attach(
    name: str, directory: str, shared: Any = False, lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT
) -> SharedDict:
    flags, also = _trust(shared)
    _lib.lock_timeout(lock_timeout)
    p = ffi.new("shmdict_t **")
    why = ffi.new("shmdict_out_t *")
    rc = lib.shmdict_attach(directory.encode(), name.encode(), flags, also, why, p)
    if rc == _EUNTRUSTED:
        raise _untrusted(_path(directory, name), int(why.i), int(why.len))
    if rc:
        raise_rc(rc, path=_path(directory, name))
    return SharedDict(p[0], name, directory, owner=False, lock_timeout=lock_timeout, shared=shared)


def get(name: str, *, shared: Any = False, lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT) -> SharedDict:
    """Attach to the existing dict ``name`` (not an owner).

    The file must be owned by you or by root and not writable by its group or
    by others: anyone may create files in ``/dev/shm``, so a dict another user
    planted under the name is refused. ``shared=True`` accepts a file writable
    by its group or others (a dict deliberately shared between users);
    ``shared="www-data"`` (a user name or uid) also accepts one owned by that
    user. ``lock_timeout`` as for :func:`new`.

    Raises:
        FileNotFoundError: no such dict.
        PermissionError: the file's owner or mode is not trusted (the message
            says why and how to opt in), or the system refuses access.
        shmdict.CorruptError: the file is not a dict of a compatible layout.

    .. versionadded:: 0.1
    """
    _check_name(name)
    return _attach(name, _dir(), shared, lock_timeout)


def open(  # noqa: A001
    name: str,
    size: Union[int, str],
    *,
    mode: int = 0o600,
    group: Union[str, int, None] = None,
    events: Optional[int] = None,
    evict: bool = False,
    shared: Any = False,
    lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
) -> SharedDict:
    """Attach to ``name`` if it exists, else create it; race-free, and never an
    owner (nobody's close unlinks a dict that several processes opened).
    ``evict=True`` turns eviction on for the dict, whether this call created
    it or attached to it (it stays on); ``False`` leaves the policy alone.
    ``mode``, ``group`` and ``events`` apply when it creates; ``shared`` when it attaches
    (see :func:`get`); ``lock_timeout`` as for :func:`new`.

    .. versionadded:: 0.1
    """
    _check_name(name)
    _lib.parse_size(size)
    _check_mode(mode)
    _group(group)
    _trust(shared)
    _lib.lock_timeout(lock_timeout)
    while True:
        try:
            sd = get(name, shared=shared, lock_timeout=lock_timeout)
            if evict:
                _lib.check(lib.shmdict_configure(sd._h, 1))
            return sd
        except FileNotFoundError:
            pass
        try:
            d = new(name, size, mode=mode, group=group, events=events, evict=evict, lock_timeout=lock_timeout)
        except FileExistsError:
            continue  # someone else created it first: attach to theirs
        if d._finalizer is not None:
            d._finalizer.detach()
        d._owner_pid, d._finalizer = 0, None
        d._shared = shared
        return d


def unlink(name: str) -> None:
    """Remove the name ``name``; handles already attached keep working.

    Raises:
        FileNotFoundError: no such dict.

    .. versionadded:: 0.1
    """
    _check_name(name)
    os.unlink(_path(_dir(), name))
