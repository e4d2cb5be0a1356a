"""``SharedDict``: the Python face of one shared-memory dict.

Every method is one C call under the dict's lock: Python only checks
arguments, converts types and raises exceptions. ``get``, ``pop``,
``setdefault``, ``clear`` and ``__contains__`` override the
``MutableMapping`` mixins because the mixins would make two calls (two lock
holds, with another process free to act in between); each override is a
single atomic C call.
"""

from __future__ import annotations

import errno
import functools
import os
import platform
import re
import struct
import weakref
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Optional, Union

from . import _lib
from ._api import DictAPI, Event, implements
from ._lists import Lists
from ._locks import Locks, NamedLock
from ._notify import Notify
from ._lib import INT64_MAX, INT64_MIN, encode_key, ffi, give, lib, raise_rc, seconds, take
from .exceptions import CorruptError
from ._pure import PureBase
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

    # The C type's methods show the contract's docstrings: the same text as
    # PureBase's (shmdict._api composed it with PureBase's notes).
    docs = {n: f.__doc__ for n, f in vars(PureBase).items() if not n.startswith("_") and f.__doc__}
    _speed.bind(raise_rc, _text, _pairs, _unpack_list, docs)  # it asks shmdict._shmdict for the core's table
    return _speed.SharedDictBase


_Base: Any = _base()

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_ENOTFOUND, _EEXIST, _ERANGE = lib.SHMDICT_ENOTFOUND, lib.SHMDICT_EEXIST, lib.SHMDICT_ERANGE
_NX, _XX = lib.SHMDICT_SET_NX, lib.SHMDICT_SET_XX
_NULL = ffi.NULL
_c_get, _c_set, _c_ttl = lib.shmdict_get, lib.shmdict_set, lib.shmdict_ttl
_u32 = struct.Struct("<I")
DEFAULT_LOCK_TIMEOUT = 10.0
"""Seconds a handle waits for the dict's lock before raising LockTimeout,
unless ``lock_timeout=`` says otherwise. The lock is normally held for
microseconds; only a holder that is stopped, frozen or stuck -- or a damaged
lock word -- makes anyone wait this long."""

_EUNTRUSTED, _ELOCKTIMEOUT = lib.SHMDICT_EUNTRUSTED, lib.SHMDICT_ELOCKTIMEOUT


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


@implements(DictAPI)
class SharedDict(_Base, Notify, Lists, Locks, MutableMapping[str, Value]):  # type: ignore[misc]  # _Base: C type or Python
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
        self._attach(self._h, name)  # the cffi handle itself: never its address as a number
        self._dir = directory
        info = ffi.new("shmdict_info_t *")
        _lib.check(lib.shmdict_info(self._h, info))
        self._size = int(info.size)
        self._ident = (int(info.dev), int(info.ino))
        self._owner_pid = os.getpid() if owner else 0
        self._finalizer: Optional[weakref.finalize[Any, Any]] = None
        if owner:
            self._finalizer = weakref.finalize(
                self, _unlink_if_same, _path(directory, name), os.getpid(), info.dev, info.ino
            )

    # ---- attributes -------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        h = self._h
        if h is not None:
            self._size = int(lib.shmdict_size(h))  # another process may have grown it
        return self._size

    def resize(self, size: Union[int, str]) -> None:
        n = _lib.parse_size(size)
        now = self.size
        if n < now:
            raise ValueError(f"size {size!r} is smaller than the dict's size now ({now} bytes): a dict never shrinks")
        rc = lib.shmdict_resize(self._handle(), n)
        if rc == _lib.lib.SHMDICT_EINVAL:  # another process grew it past n meanwhile
            raise ValueError(f"size {size!r} is smaller than the dict's size now ({self.size} bytes)")
        if rc:
            raise_rc(rc, path=_path(self._dir, self._name))

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
        state = "closed" if self._h is None else f"size={self.size}"
        return f"<SharedDict {self._name!r} {state}{' owner' if self.owner else ''}>"

    # ---- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """The owner's close also unlinks the name (only in the creating process)."""
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
        h = self._handle()
        k = encode_key(key)
        fl = _lib.free.list  # this call's own out-struct: never a nested call's (see _lib.take)
        s = fl.pop() if fl else _lib.Scratch()
        out = s.out
        rc = _c_ttl(h, k, len(k), out)
        f = out.f
        fl.append(s)
        if rc == _ENOTFOUND:
            return None
        if rc < 0:
            raise_rc(rc, key)
        return f if f > 0 else 0

    # ---- writes -----------------------------------------------------------

    def setdefault(self, key: str, default: Value = None) -> Value:  # type: ignore[assignment, override]
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
        h = self._handle()
        k = encode_key(key)
        rc = lib.shmdict_expire(h, k, len(k), seconds(exptime))
        if rc == 0:
            return True
        if rc == _ENOTFOUND:
            return False
        raise_rc(rc, key)

    def flush_all(self) -> None:
        _lib.check(lib.shmdict_flush_all(self._handle()))

    def clear(self) -> None:
        # One C call instead of MutableMapping's popitem loop.
        self.flush_all()

    # ---- whole-table reads --------------------------------------------------

    def get_keys(self, max_count: int = 0, match: Optional[str] = None) -> list[str]:
        """The list is a snapshot, taken in one lock hold."""
        if isinstance(max_count, bool) or not isinstance(max_count, int):
            raise TypeError(f"max_count must be an int, not {type(max_count).__name__}")
        if match is not None:
            return [k for k, _ in self._items(match, max_count, False)]
        h = self._handle()
        s = take()
        while True:
            rc = lib.shmdict_keys(h, s.buf, s.cap, max(max_count, 0), s.out)
            if rc == _ERANGE:
                s.grow(s.out.len + s.out.len // 4)
                continue
            if rc < 0:
                raise_rc(rc)
            data = ffi.buffer(s.buf, s.out.len)[:]
            give(s)
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
            raise CorruptError(f"{self._name}: {ffi.string(msg).decode()}")
        _lib.check(rc)

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
        """In an evicting dict it may evict."""
        rc = self._set_flags(key, value, exptime, _NX)
        if rc == _EEXIST:
            return False
        if rc:
            raise_rc(rc, key)
        return True

    def replace(self, key: str, value: Value, exptime: float = 0) -> bool:
        rc = self._set_flags(key, value, exptime, _XX)
        if rc == _ENOTFOUND:
            return False
        if rc:
            raise_rc(rc, key)
        return True

    def safe_set(self, key: str, value: Value, exptime: float = 0) -> None:
        """A full dict raises ``Full`` even when it was opened with ``evict=True``."""
        rc = self._set_flags(key, value, exptime, _NOEVICT)
        if rc:
            raise_rc(rc, key)

    def safe_add(self, key: str, value: Value, exptime: float = 0) -> bool:
        rc = self._set_flags(key, value, exptime, _NX | _NOEVICT)
        if rc == _EEXIST:
            return False
        if rc:
            raise_rc(rc, key)
        return True

    def get_stale(self, key: str) -> tuple[Any, bool]:
        stale = ffi.new("int *")
        fn = lib.shmdict_get_stale

        def call(h: Any, k: bytes, n: int, out: Any, buf: Any, cap: int) -> int:
            return fn(h, k, n, out, buf, cap, stale)  # type: ignore[no-any-return]

        try:
            return self._read(call, key), bool(stale[0])
        except KeyError:
            return None, False

    def flush_expired(self, max_count: int = 0) -> int:
        n = lib.shmdict_flush_expired(self._handle(), _count(max_count, "max_count"))
        if n < 0:
            raise_rc(n)
        return int(n)

    def stats(self) -> dict[str, Any]:
        """Keys: ``size``, ``capacity``, ``free_space`` (as :meth:`free_space`),
        ``entries`` (live items), ``records`` and ``expired_pending`` (expired
        items not reclaimed yet), ``used_bytes`` / ``free_bytes`` (arena bytes
        held by records / not; ``free_bytes`` is a sum over many blocks, not
        the room for one item), ``index_cap`` / ``index_used`` /
        ``index_limit`` (the index takes ``index_limit`` keys, then grows into
        the free space), ``index_growths`` and ``compactions`` (times the
        index grew, and free space scattered in holes was gathered),
        ``index_bytes`` (the index's share of ``size``; ``capacity`` is the
        records'), ``hole_bytes`` and ``fragmentation`` (free bytes lying in
        holes between records, and their share of ``free_bytes``: what a
        compaction would gather), ``growths`` (times the dict grew) and
        ``max_size`` (its automatic-growth limit, or ``None``),
        ``hits`` / ``misses`` (keyed reads), ``expired`` (expired items
        reclaimed), ``evictions``, ``lock_acquisitions``, ``lock_waits``
        (acquisitions that had to sleep), ``lock_wait_seconds``,
        ``recoveries`` (dead lock holders repaired, ``EOWNERDEAD``), ``evict``
        (the policy). Counters are since creation, shared by all processes,
        and approximate only in that an operation rolled back after a crash
        may have counted. O(size): it walks the arena for ``free_space``.
        """
        st = ffi.new("shmdict_stats_t *")
        _lib.check(lib.shmdict_stats(self._handle(), st))
        out: dict[str, Any] = {f: int(getattr(st, f)) for f in _STAT_FIELDS}
        out["lock_wait_seconds"] = st.lock_wait_ns / 1e9
        out["evict"] = bool(st.evict)
        out["max_size"] = out["max_size"] or None
        free = out["free_bytes"]
        out["fragmentation"] = round(out["hole_bytes"] / free, 4) if free else 0.0
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
        h = self._handle()
        k = encode_key(key)
        if expected is None:
            et, ei, ef, eb, en = 0, 0, 0.0, _NULL, 0
        else:
            et, ei, ef, eb, en = _store_args(expected)
        t, i, f, b, n = _store_args(new)
        ex = seconds(exptime) if exptime else 0.0
        rc = lib.shmdict_cas(h, k, len(k), et, ei, ef, eb, en, t, i, f, b, n, ex, _lib.free.sink)
        if rc < 0:
            raise_rc(rc, key)
        return bool(rc == 1)

    def _items(self, match: Optional[str], max_count: int, values: bool) -> list[tuple[str, Any]]:
        h = self._handle()
        pat, plen = _pattern(match)
        s = take()
        while True:
            rc = lib.shmdict_items(h, pat, plen, max(max_count, 0), values, s.buf, s.cap, s.out)
            if rc == _ERANGE:
                s.grow(s.out.len + s.out.len // 4)
                continue
            if rc < 0:
                raise_rc(rc)
            break
        data = ffi.buffer(s.buf, s.out.len)[:]
        give(s)
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
        """Taken in one lock hold: a snapshot, so iterating it never races with other processes."""
        return self._items(match, 0, True)

    def values(self) -> list[Value]:  # type: ignore[override]
        """Taken in one lock hold: a snapshot."""
        return [v for _, v in self._items(None, 0, True)]

    def scan(self, cursor: int = 0, count: int = 100, match: Optional[str] = None) -> tuple[int, list[str]]:
        """The lock is held for one batch only, so scanning a big dict never
        stalls other processes for long. ``count`` bounds the work per batch:
        a batch examines at least ``count`` live keys unless the scan ends,
        and a few more (it always finishes the probe cluster it is in).
        """
        cur = _count(cursor, "cursor")
        cnt = _count(count, "count")
        if cnt == 0:
            raise ValueError("count must be > 0")
        h = self._handle()
        pat, plen = _pattern(match)
        s = take()
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
        give(s)
        keys, pos, unpack = [], 0, _u32.unpack_from
        for _ in range(rc):
            (n,) = unpack(data, pos)
            keys.append(_text(data[pos + 4 : pos + 4 + n], self._name))
            pos += 4 + n
        return nxt, keys

    def limit(self, key: str, rate: float, per: float, burst: int = 0) -> tuple[bool, int, float]:
        h = self._handle()
        k = encode_key(key)
        r = seconds(rate, "rate")
        p = seconds(per, "per")
        b = _count(burst, "burst")
        s = take()  # this call's own out-struct (see _lib.take)
        rc = lib.shmdict_limit(h, k, len(k), r, p, float(b), s.out)
        res = rc == 1, int(s.out.i), float(s.out.f)
        give(s)
        if rc == lib.SHMDICT_EINVAL:
            raise ValueError(f"limit needs rate > 0, per > 0, burst >= 0 and rate + burst >= 1 (got {rate}, {per}, {burst})")
        if rc < 0:
            raise_rc(rc, key)
        return res

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
        """Each item is read whole under the lock, in batches of short lock holds:
        an item present for the whole dump is in it exactly once, but writers
        running meanwhile are not paused, so the snapshot is not one instant
        of the whole dict.
        """
        from ._snapshot import dump_local

        return dump_local(self, file)

    def salvage(self, file: Any) -> tuple[int, int]:
        """Like ``dump``, for a dict that raises ``CorruptError``: every item
        still whole, read without the lock and without changing the dict;
        returns ``(items, refused)`` (see :func:`shmdict.salvage`).

        .. versionadded:: 0.3
        """
        from ._snapshot import salvage_handle

        return salvage_handle(self._handle(), file)

    def load(self, file: Any) -> int:
        """A snapshot that can never fit in this dict raises ``shmdict.Full``
        before anything is stored; if the dict fills up during the load, the
        items before the one that did not fit (in file order) are stored, the
        rest are not.
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
    "index_growths compactions index_bytes hole_bytes growths max_size"
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
    b = str.encode(match)
    return b, len(b)


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
    max_size: Union[int, str, None] = None,
    lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
) -> SharedDict:
    """Create the dict ``name`` with ``size`` bytes of storage; the returned
    handle owns the name (closing it unlinks the name, in this process only).
    ``evict=True`` makes the dict evict (CLOCK, an LRU approximation) instead
    of raising ``Full`` when it is full; the policy belongs to the dict.

    ``max_size`` (bytes, or a string such as ``"1g"``) lets a full dict grow
    itself instead: it at least doubles, up to ``max_size``, and only then
    evicts (``evict=True``) or raises ``Full``. It belongs to the dict too.

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
        ValueError / TypeError: bad name, size, max_size (smaller than
            size), mode or lock_timeout.
        OSError: the directory cannot hold ``size`` bytes (ENOSPC), or another
            system error.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2 ``max_size``.
    """
    _check_name(name)
    n = _lib.parse_size(size)
    limit = _max_size(max_size, n)
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
    if limit:
        _lib.check(lib.shmdict_set_max_size(sd._h, limit))
    return sd


def _max_size(max_size: object, size: int) -> int:
    """max_size in bytes (0: none), not below size."""
    if max_size is None:
        return 0
    n = _lib.parse_size(max_size)
    if n < size:
        raise ValueError(f"max_size {max_size!r} is smaller than size ({size} bytes)")
    return n


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
    max_size: Union[int, str, None] = None,
    shared: Any = False,
    lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
) -> SharedDict:
    """Attach to ``name`` if it exists, else create it; race-free, and never an
    owner (nobody's close unlinks a dict that several processes opened).
    An existing dict smaller than ``size`` grows to ``size`` (as
    :meth:`SharedDict.resize`); a larger one keeps its size.
    ``evict=True`` turns eviction on for the dict, whether this call created
    it or attached to it (it stays on); ``False`` leaves the policy alone.
    ``max_size`` likewise sets the dict's automatic-growth limit (see
    :func:`new`) either way; ``None`` leaves it alone.
    ``mode``, ``group`` and ``events`` apply when it creates; ``shared`` when it attaches
    (see :func:`get`); ``lock_timeout`` as for :func:`new`.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2 a larger ``size`` grows an existing dict; ``max_size``.
    """
    _check_name(name)
    n = _lib.parse_size(size)
    limit = _max_size(max_size, n)
    _check_mode(mode)
    _group(group)
    _trust(shared)
    _lib.lock_timeout(lock_timeout)
    while True:
        try:
            sd = get(name, shared=shared, lock_timeout=lock_timeout)
            if evict:
                _lib.check(lib.shmdict_configure(sd._h, 1))
            if limit:
                _lib.check(lib.shmdict_set_max_size(sd._h, limit))
            if n > sd.size:
                try:
                    sd.resize(n)
                except ValueError:
                    pass  # another process grew it past n meanwhile: larger is fine
            return sd
        except FileNotFoundError:
            pass
        try:
            d = new(name, size, mode=mode, group=group, events=events, evict=evict, max_size=max_size,
                    lock_timeout=lock_timeout)
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
