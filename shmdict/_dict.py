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
import fnmatch
import functools
import os
import re
import struct
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Optional, Union

from . import _lib
from ._lib import INT64_MAX, INT64_MIN, encode_key, ffi, lib, raise_rc, scratch, seconds

__all__ = ["Event", "SharedDict", "Value", "get", "new", "open", "unlink"]

Value = Union[bool, int, float, str, bytes]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_BOOL, _INT, _FLOAT = lib.SHMDICT_T_BOOL, lib.SHMDICT_T_INT, lib.SHMDICT_T_FLOAT
_STR, _BYTES = lib.SHMDICT_T_STR, lib.SHMDICT_T_BYTES
_ENOTFOUND, _EEXIST, _ERANGE = lib.SHMDICT_ENOTFOUND, lib.SHMDICT_EEXIST, lib.SHMDICT_ERANGE
_NX, _XX = lib.SHMDICT_SET_NX, lib.SHMDICT_SET_XX
_NULL = ffi.NULL
_c_get, _c_set, _c_incr = lib.shmdict_get, lib.shmdict_set, lib.shmdict_incr
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
_ASYNC_SLICE = 0.25  # seconds an executor thread waits before re-checking for cancellation
_executor: Optional[ThreadPoolExecutor] = None
_executor_lock = threading.Lock()


def _wait_executor() -> ThreadPoolExecutor:
    # Waiting threads sleep in the kernel; asyncio's default executor has only
    # cpu+4 of them, so awaiting many keys at once gets its own pool.
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="shmdict-wait")
        return _executor


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
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid dict name {name!r}: it must match [A-Za-z0-9][A-Za-z0-9._-]{{0,199}}")
    return name


def _path(directory: str, name: str) -> str:
    return os.path.join(directory, "shmdict." + name)


def _store_args(value: object) -> tuple[int, int, float, Any, int]:
    """(type, i, f, buffer, length) for shmdict_set. Subclasses of the five
    value types are stored as their base type (an IntEnum comes back an int)."""
    t = type(value)
    if t is not bool and t is not int and t is not float and t is not str and t is not bytes:
        for base in (bool, int, float, str, bytes):
            if isinstance(value, base):
                t = base
                break
        else:
            raise TypeError(f"values must be bool, int, float, str or bytes, not {t.__name__}")
    if t is int:
        if not INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
            raise OverflowError(f"int {value} does not fit in a signed 64-bit integer")
        return _INT, int(value), 0.0, _NULL, 0  # type: ignore[call-overload]
    if t is str:
        b = str.encode(value)  # type: ignore[arg-type]
        return _STR, 0, 0.0, b, len(b)
    if t is float:
        return _FLOAT, 0, float(value), _NULL, 0  # type: ignore[arg-type]
    if t is bytes:
        b = bytes(value)  # type: ignore[call-overload]
        return _BYTES, 0, 0.0, b, len(b)
    return _BOOL, 1 if value else 0, 0.0, _NULL, 0


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


class SharedDict(MutableMapping[str, Value]):
    """A dict shared by every process that opens the same name.

    Create one with :func:`shmdict.new`, attach with :func:`shmdict.get`, or
    either with :func:`shmdict.open`. Every operation is atomic across
    processes and threads; values keep their type (bool, int, float, str,
    bytes); keys may carry a TTL.

    .. versionadded:: 0.1
    """

    __slots__ = ("_h", "_name", "_dir", "_size", "_owner_pid", "_finalizer", "__weakref__")

    def __init__(self, handle: Any, name: str, directory: str, owner: bool) -> None:
        # Private: use shmdict.new / get / open.
        self._h: Any = ffi.gc(handle, lib.shmdict_close)  # munmap once no call holds it
        self._name = name
        self._dir = directory
        info = ffi.new("shmdict_info_t *")
        _lib.check(lib.shmdict_info(self._h, info))
        self._size = int(info.size)
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
        self._h = h = None  # the mapping goes when the last in-flight call returns
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> SharedDict:
        self._handle()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        # A non-owner reference by name: what a spawn worker needs.
        return (_attach, (self._name, self._dir))

    # ---- reads ------------------------------------------------------------

    def _read(self, fn: Any, key: str) -> Any:
        """Run a get-like C call; returns the value or raises KeyError."""
        h = self._handle()
        k = encode_key(key)
        s = scratch
        while True:
            out = s.out
            rc = fn(h, k, len(k), out, s.buf, s.cap)
            if rc == _INT:
                return out.i
            if rc == _FLOAT:
                return out.f
            if rc == _STR or rc == _BYTES:
                n = out.len
                if n > s.cap:
                    s.grow(n)
                    continue
                b = ffi.unpack(s.buf, n)
                return b.decode() if rc == _STR else b
            if rc == _BOOL:
                return out.i != 0
            if rc == _ERANGE:
                s.grow(out.len)
                continue
            raise_rc(rc, key)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it is missing or expired.

        Raises:
            TypeError / ValueError: for a key that is not a non-empty str.

        .. versionadded:: 0.1
        """
        try:
            return self._read(_c_get, key)
        except KeyError:
            return default

    def __getitem__(self, key: str) -> Value:
        return self._read(_c_get, key)  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        h = self._handle()
        if not isinstance(key, str):
            return False
        k = encode_key(key)
        rc = _c_get(h, k, len(k), scratch.out, _NULL, 0)
        if rc > 0:
            return True
        if rc == _ENOTFOUND:
            return False
        raise_rc(rc, key)

    def pop(self, key: str, *default: Any) -> Any:
        """Remove ``key`` and return its value, atomically.

        Raises:
            KeyError: if it is missing and no default is given.

        .. versionadded:: 0.1
        """
        try:
            return self._read(lib.shmdict_pop, key)
        except KeyError:
            if default:
                return default[0]
            raise

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

    def set(self, key: str, value: Value, exptime: float = 0) -> None:
        """Store ``value`` under ``key``; ``exptime > 0`` makes it expire after
        that many seconds, ``<= 0`` never.

        Raises:
            TypeError: for a value that is not bool, int, float, str or bytes.
            OverflowError: for an int outside the signed 64-bit range.
            ValueError: for a non-finite ``exptime`` or a bad key.
            shmdict.Full: if there is no room even after reclaiming expired items.

        .. versionadded:: 0.1
        """
        h = self._handle()
        k = encode_key(key)
        t, i, f, b, n = _store_args(value)
        ex = seconds(exptime) if exptime else 0.0
        rc = _c_set(h, k, len(k), t, i, f, b, n, ex, 0)
        if rc:
            raise_rc(rc, key)

    def __setitem__(self, key: str, value: Value) -> None:
        self.set(key, value)

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

    def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` if it existed (and had not expired).

        .. versionadded:: 0.1
        """
        h = self._handle()
        k = encode_key(key)
        rc = lib.shmdict_delete(h, k, len(k))
        if rc == 0:
            return True
        if rc == _ENOTFOUND:
            return False
        raise_rc(rc, key)

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
        """Atomically add ``delta`` to the number under ``key``; returns the new value.

        A missing key raises ``KeyError`` unless ``init`` is given: then it is
        created as ``init + delta`` expiring after ``init_ttl`` seconds (the
        rate-limiting idiom: the window starts with the first hit). ``exptime``
        given replaces the TTL (``<= 0`` clears it), and wins over ``init_ttl``
        for a key this call creates; omitted, the TTL is kept.

        Raises:
            KeyError: missing key and no ``init``.
            TypeError: the stored value, ``delta`` or ``init`` is not a number (bool is not).
            OverflowError: int result outside 64 bits; the value is unchanged.
            ValueError: non-finite ``delta``, ``init``, ``exptime`` or ``init_ttl``.
            shmdict.Full: no room to create the key.

        .. versionadded:: 0.1
        """
        h = self._handle()
        k = encode_key(key)
        if type(delta) is int and INT64_MIN <= delta <= INT64_MAX:
            dt, di, df = _INT, delta, 0.0
        else:
            dt, di, df = _lib.number(delta, "delta")
        if init is None:
            it, ii, fi = 0, 0, 0.0
        else:
            it, ii, fi = _lib.number(init, "init")
        ittl = 0.0 if init_ttl is None else seconds(init_ttl, "init_ttl")
        ex = 0.0 if exptime is None else seconds(exptime)
        out = scratch.out
        rc = _c_incr(h, k, len(k), dt, di, df, it, ii, fi, ittl, exptime is not None, ex, out)
        if rc == _INT:
            return out.i  # type: ignore[no-any-return]
        if rc == _FLOAT:
            return out.f  # type: ignore[no-any-return]
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

    def get_keys(self, max_count: int = 0) -> list[str]:
        """The live keys (a snapshot); ``max_count > 0`` caps the list.

        .. versionadded:: 0.1
        """
        if isinstance(max_count, bool) or not isinstance(max_count, int):
            raise TypeError(f"max_count must be an int, not {type(max_count).__name__}")
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
                keys.append(data[pos + 4 : pos + 4 + n].decode())
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
        returns at once if the key's :meth:`version` already differs. Waiting
        releases the GIL and costs no CPU (a futex in the shared file); a
        signal such as Ctrl-C interrupts it.

        Raises:
            TimeoutError: nothing changed within ``timeout`` seconds.
            ValueError: the handle was closed (also from another thread while waiting).

        .. versionadded:: 0.1
        """
        h = self._handle()
        k = encode_key(key)
        t = _timeout(timeout)
        if since is None:
            since = self.version(key)
        elif isinstance(since, bool) or not isinstance(since, int) or not 0 <= since < 2**32:
            raise ValueError(f"since must be a version from version(), not {since!r}")
        deadline = time.monotonic() + t
        s = scratch
        while True:
            rc = lib.shmdict_wait(h, k, len(k), since, t, s.out, s.buf, s.cap)
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
        return b.decode() if rc == _STR else b

    def _events(self, cursor: Any, match: str, timeout: float) -> list[Event]:
        """One batch of events after ``cursor`` (blocking up to ``timeout``)."""
        h = self._handle()
        s = scratch
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
                key = data[pos + 3 : pos + 3 + n].decode() if op != lib.SHMDICT_EV_FLUSH else None
                pos += 3 + n
                if key is None or match == "*" or fnmatch.fnmatchcase(key, match):
                    events.append(Event(_EV_NAMES.get(op, "set"), key))
            return events

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
        if since is None:
            since = self.version(key)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            step = _ASYNC_SLICE if deadline is None else max(0.0, min(_ASYNC_SLICE, deadline - loop.time()))
            try:
                return await loop.run_in_executor(
                    _wait_executor(), functools.partial(self.wait, key, step, since=since)
                )
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
            batch = await loop.run_in_executor(_wait_executor(), self._events, cursor, match, step)
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


# ---- module-level constructors ------------------------------------------------


def _default_events(size: int) -> int:
    # about one event per KiB of dict, 16 to 4096 (a 64m dict keeps 4096: 256 KiB)
    return max(16, min(4096, size // 1024))


def new(name: str, size: Union[int, str], *, mode: int = 0o600, events: Optional[int] = None) -> SharedDict:
    """Create the dict ``name`` with ``size`` bytes of storage; the returned
    handle owns the name (closing it unlinks the name, in this process only).

    ``events`` sizes the ring that :meth:`SharedDict.watch` reads (about that
    many recent changes, 64 bytes each, at most 1/8 of ``size``); ``0``
    disables it. Default: one per KiB of ``size``, from 16 to 4096.

    Raises:
        FileExistsError: the name exists.
        ValueError / TypeError: bad name or size.
        OSError: the directory cannot hold ``size`` bytes (ENOSPC), or another
            system error.

    .. versionadded:: 0.1
    """
    _check_name(name)
    n = _lib.parse_size(size)
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ValueError(f"mode must be an int permission mask such as 0o600, not {mode!r}")
    if events is None:
        events = _default_events(n)
    elif isinstance(events, bool) or not isinstance(events, int) or events < 0:
        raise ValueError(f"events must be an int >= 0, not {events!r}")
    d = _dir()
    p = ffi.new("shmdict_t **")
    rc = lib.shmdict_create(d.encode(), name.encode(), n, mode, events, p)
    if rc:
        raise_rc(rc, path=_path(d, name))
    return SharedDict(p[0], name, d, owner=True)


def _attach(name: str, directory: str) -> SharedDict:
    p = ffi.new("shmdict_t **")
    rc = lib.shmdict_attach(directory.encode(), name.encode(), p)
    if rc:
        raise_rc(rc, path=_path(directory, name))
    return SharedDict(p[0], name, directory, owner=False)


def get(name: str) -> SharedDict:
    """Attach to the existing dict ``name`` (not an owner).

    Raises:
        FileNotFoundError: no such dict.
        shmdict.CorruptError: the file is not a dict of a compatible layout.

    .. versionadded:: 0.1
    """
    _check_name(name)
    return _attach(name, _dir())


def open(  # noqa: A001
    name: str, size: Union[int, str], *, mode: int = 0o600, events: Optional[int] = None
) -> SharedDict:
    """Attach to ``name`` if it exists, else create it; race-free, and never an
    owner (nobody's close unlinks a dict that several processes opened).

    .. versionadded:: 0.1
    """
    _check_name(name)
    _lib.parse_size(size)
    while True:
        try:
            return get(name)
        except FileNotFoundError:
            pass
        try:
            d = new(name, size, mode=mode, events=events)
        except FileExistsError:
            continue  # someone else created it first: attach to theirs
        if d._finalizer is not None:
            d._finalizer.detach()
        d._owner_pid, d._finalizer = 0, None
        return d


def unlink(name: str) -> None:
    """Remove the name ``name``; handles already attached keep working.

    Raises:
        FileNotFoundError: no such dict.

    .. versionadded:: 0.1
    """
    _check_name(name)
    os.unlink(_path(_dir(), name))
