"""The engine-neutral API of a shmdict dict: every public method's signature
and docstring, written once.

``DictAPI`` (and ``LockAPI``, for what ``lock()`` returns) is the contract
that both engines implement -- ``SharedDict``
(shared memory, ``shmdict/_dict.py``) and ``RedisDict`` (``shmdict/_redis.py``).
It is never instantiated nor inherited: :func:`implements` gives each engine
method the contract's docstring, and ``tests/test_api.py`` checks that
both engines expose the same names with compatible signatures.

An engine method carries no copy of the contract's text. Its own docstring,
if it has one, is an engine-specific note: :func:`implements` inserts it
after the contract's text (before the ``versionadded`` line), so
``help(SharedDict.get)`` and ``help(RedisDict.get)`` show the contract first
and then what is particular to that engine.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, Optional, TypeVar, Union

__all__ = ["DictAPI", "Event", "LockAPI", "contract_doc", "implements", "names", "notes"]

Value = Union[bool, int, float, str, bytes]
_MISSING: Any = object()  # pop's "no default" (each engine has its own sentinel)
_T = TypeVar("_T", bound=type)
_VERSIONADDED = "\n\n.. versionadded::"


class Event(NamedTuple):
    """One change read by :meth:`SharedDict.watch`: ``op`` is ``"set"``,
    ``"delete"``, ``"expire"``, ``"evict"`` or ``"flush"`` (``key`` is ``None``
    for flush), or ``"lost"``, whose ``key`` is the number of events the
    reader missed because it fell behind.

    .. versionadded:: 0.1
    """

    op: str
    key: Union[str, int, None]


class DictAPI:
    """What every shmdict dict does, whichever engine stores it."""

    # ---- attributes and lifecycle ---------------------------------------------

    @property
    def name(self) -> str:
        """The dict's name."""
        raise NotImplementedError

    @property
    def size(self) -> int:
        """The dict's size in bytes now: as created, or as grown since (by
        :meth:`resize`, by :func:`shmdict.open` with a larger size, or by
        itself up to ``max_size``), whichever process grew it."""
        raise NotImplementedError

    def resize(self, size: Union[int, str]) -> None:
        """Grow the dict to ``size`` bytes (an int, or a string such as
        ``"128m"``), keeping every item; every process using it sees the new
        size from its next operation. The same size does nothing.

        Raises:
            ValueError: ``size`` is smaller than the dict's size now, or not a
                valid size.
            OSError: there is no room for it (``ENOSPC``); the dict is unchanged.

        .. versionadded:: 0.2
        """
        raise NotImplementedError

    @property
    def owner(self) -> bool:
        """Whether closing this handle removes the dict's name."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called on this handle."""
        raise NotImplementedError

    def close(self) -> None:
        """Release this handle. Idempotent; other handles are not disturbed.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def __enter__(self) -> DictAPI:
        """The handle itself (``with`` closes it at the end of the block)."""
        raise NotImplementedError

    def __exit__(self, *exc: object) -> None:
        """:meth:`close`."""
        raise NotImplementedError

    # ---- the mapping protocol -----------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it is missing or expired.

        Raises:
            TypeError / ValueError: for a key that is not a non-empty str.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def __getitem__(self, key: str) -> Value:
        """``d[key]``: the value; ``KeyError`` if it is missing or expired."""
        raise NotImplementedError

    def __setitem__(self, key: str, value: Value) -> None:
        """``d[key] = value``: :meth:`set` without a TTL."""
        raise NotImplementedError

    def __delitem__(self, key: str) -> None:
        """``del d[key]``; ``KeyError`` if it is missing or expired."""
        raise NotImplementedError

    def __contains__(self, key: object) -> bool:
        """``key in d``: whether ``key`` is present and live (a non-str is never in it)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        """An iterator over the live keys (of a list taken first: :meth:`get_keys`)."""
        raise NotImplementedError

    def __len__(self) -> int:
        """The number of live items."""
        raise NotImplementedError

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value, atomically.

        Raises:
            KeyError: if it is missing and no default is given.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def setdefault(self, key: str, default: Value = None) -> Value:  # type: ignore[assignment]
        """``d[key]`` if present, else store ``default`` and return it (atomic).

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def clear(self) -> None:
        """Remove every item: :meth:`flush_all`."""
        raise NotImplementedError

    def items(self, match: Optional[str] = None) -> list[tuple[str, Value]]:
        """A list of ``(key, value)`` of every live item (``match``: a glob,
        as :meth:`get_keys`). Unlike ``dict.items()`` it is a list, not a live
        view.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def values(self) -> list[Value]:
        """A list of every live value (see :meth:`items`).

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    # ---- keyed writes and TTLs ----------------------------------------------------

    def set(self, key: str, value: Value, exptime: float = 0) -> None:
        """Store ``value`` under ``key``; ``exptime > 0`` makes it expire after
        that many seconds, ``<= 0`` never.

        Raises:
            TypeError: for a value that is not bool, int, float, str or bytes.
            OverflowError: for an int outside the signed 64-bit range.
            ValueError: for a non-finite ``exptime`` or a bad key.
            shmdict.Full: no room for the item.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def delete(self, key: str, /) -> bool:
        """Remove ``key``; ``True`` if it existed (and had not expired).

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def ttl(self, key: str) -> Optional[float]:
        """``None`` if ``key`` is missing; ``0`` if it never expires; else the
        remaining seconds (a float > 0).

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def expire(self, key: str, exptime: float) -> bool:
        """Set the TTL of ``key`` (``exptime > 0``) or clear it (``<= 0``);
        ``True`` if the key exists.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

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
        raise NotImplementedError

    # ---- ngx.shared.DICT parity ---------------------------------------------------

    def add(self, key: str, value: Value, exptime: float = 0) -> bool:
        """Store ``value`` only if ``key`` is absent (an expired key counts as
        absent); ``True`` if stored.

        Raises:
            As :meth:`set`.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def replace(self, key: str, value: Value, exptime: float = 0) -> bool:
        """Store ``value`` only if ``key`` is present (and live); ``True`` if stored.

        Raises:
            As :meth:`set`.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def safe_set(self, key: str, value: Value, exptime: float = 0) -> None:
        """As :meth:`set`, but where the engine can, raises ``shmdict.Full``
        rather than evict another item to make room.

        Raises:
            As :meth:`set`.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def safe_add(self, key: str, value: Value, exptime: float = 0) -> bool:
        """As :meth:`add`, but not evicting: see :meth:`safe_set`.

        Raises:
            As :meth:`set`.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def get_stale(self, key: str) -> tuple[Any, bool]:
        """``(value, stale)``: the value even if it has expired but was not yet
        reclaimed (then ``stale`` is ``True``); ``(None, False)`` if there is none.

        Raises:
            TypeError / ValueError: for a bad key.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def flush_all(self) -> None:
        """Remove every item.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def flush_expired(self, max_count: int = 0) -> int:
        """Free expired items (at most ``max_count`` if ``> 0``); returns how many.

        Raises:
            TypeError / ValueError: ``max_count`` not an int >= 0.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Counters and sizes, to diagnose a full or contended dict.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

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
        raise NotImplementedError

    # ---- batches --------------------------------------------------------------------

    def get_many(self, keys: Iterable[str], /) -> dict[str, Value]:
        """``{key: value}`` for the keys that are present; a list comes back
        as a Python ``list`` (a copy).

        Raises:
            TypeError / ValueError: for a bad key (nothing is read).

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def set_many(self, mapping: Union[Mapping[str, Value], Iterable[tuple[str, Value]]], exptime: float = 0) -> None:
        """Store every item (a mapping or ``(key, value)`` pairs), in order,
        all with ``exptime``.

        Raises:
            TypeError / OverflowError / ValueError: for any bad key or value
                (checked first: then nothing is stored).
            shmdict.Full: no room for an item.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    # ---- keys: list, scan -------------------------------------------------------------

    def get_keys(self, max_count: int = 0, match: Optional[str] = None) -> list[str]:
        """The live keys; ``max_count > 0`` caps the list; ``match`` keeps
        only keys matching a glob pattern, with the syntax of
        :func:`fnmatch.fnmatchcase` (``*``, ``?``, ``[seq]``, ``[!seq]``).

        Raises:
            TypeError: ``max_count`` not an int, or ``match`` not a str.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def scan(self, cursor: int = 0, count: int = 100, match: Optional[str] = None) -> tuple[int, list[str]]:
        """One batch of an incremental key scan: ``(next_cursor, keys)``.

        Start with ``cursor=0`` and pass each ``next_cursor`` back until it is
        0. A key present for the whole scan is returned at least once (rarely
        twice); keys added or removed during the scan may or may not appear.
        ``match`` filters them with a glob as :meth:`get_keys`, so filtered
        batches may be short or even empty before the end.

        Raises:
            TypeError / ValueError: ``cursor`` not an int >= 0, ``count`` not
                an int > 0, ``match`` not a str.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    # ---- change notification ---------------------------------------------------------

    def version(self, key: str) -> int:
        """The key's version: a number that changes when its value or TTL
        changes. A missing key's version is ``0``, or (shared memory, with an
        event ring) a number of ``2**32`` or more that marks when it was seen
        missing; compare versions, do not test them for truth. Pass it to
        :meth:`wait` as ``since`` so that a change between reading and waiting
        -- even a missing key set and deleted again -- is never missed.

        Raises:
            shmdict.LockTimeout: the dict's lock was not had in time (never a
                version in its place).

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def wait(self, key: str, timeout: Optional[float] = None, *, since: Optional[int] = None) -> Any:
        """Block until ``key`` changes -- set, incr, delete, expiry, eviction,
        flush -- and return its new value, or ``None`` if it went away.

        Without ``since``, waits for the next change after the call; with it
        (a :meth:`version`), returns at once if the key's version already
        differs.

        Raises:
            TimeoutError: nothing changed within ``timeout`` seconds
                (``shmdict.LockTimeout``, a ``TimeoutError``, if the dict's
                lock was not had within it).
            ValueError: the handle was closed (also from another thread while
                waiting), or a timeout against the one rule (docs/api.md#timeouts).

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def watch(self, match: str = "*", *, timeout: Optional[float] = None) -> Iterator[Event]:
        """Iterate over the changes made after this call as :class:`Event`
        ``(op, key)`` pairs, keeping the keys that match the glob ``match``.
        The iteration ends when no event comes for ``timeout`` seconds (never,
        by default).

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    async def await_change(self, key: str, timeout: Optional[float] = None, *, since: Optional[int] = None) -> Any:
        """:meth:`wait` for asyncio: the event loop keeps running (the wait
        runs in a thread, in slices, so cancelling is prompt).

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    async def awatch(self, match: str = "*", *, timeout: Optional[float] = None) -> AsyncIterator[Event]:
        """:meth:`watch` for asyncio: ``async for ev in d.awatch("user:*")``.

        .. versionadded:: 0.1
        """
        raise NotImplementedError
        yield  # an async generator, as the engines' are

    # ---- lists ---------------------------------------------------------------------------

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
        raise NotImplementedError

    def rpush(self, key: str, value: Value) -> int:
        """Append ``value`` at the tail of the list ``key``; as :meth:`lpush`.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def lpop(self, key: str) -> Optional[Value]:
        """Remove and return the head of the list ``key``; ``None`` if there
        is no such list. A list whose last element is popped is deleted.

        Raises:
            TypeError: ``key`` holds a scalar.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def rpop(self, key: str) -> Optional[Value]:
        """Remove and return the tail of the list ``key``; as :meth:`lpop`.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def llen(self, key: str) -> int:
        """The length of the list ``key``; 0 if there is none.

        Raises:
            TypeError: ``key`` holds a scalar.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    # ---- rate limiting, locks, single-flight -------------------------------------------

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
        raise NotImplementedError

    def lock(self, name: str, timeout: Optional[float] = None) -> Any:
        """A lock called ``name`` shared by every handle of the dict, separate
        from the items (a lock is not an item).

        ``with d.lock("job", timeout=5.0):`` waits at most 5 seconds, then
        raises ``TimeoutError``; ``timeout=None`` waits forever. The object
        also has ``acquire(blocking=True, timeout=None)`` / ``release()`` /
        ``locked()`` like :class:`threading.Lock`. Not reentrant.

        Raises:
            TypeError / ValueError: bad name (a key-like str) or timeout.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def get_or_set(
        self,
        key: str,
        factory: Callable[[], Value],
        exptime: float = 0,
        lock_timeout: Optional[float] = 30.0,
    ) -> Value:
        """The value of ``key``; if it is missing, exactly one of the callers
        that miss it at the same time calls ``factory()`` and stores the result
        (with ``exptime``); the others wait for it and return it
        (single-flight: no dog-pile).

        Raises:
            TimeoutError: waited more than ``lock_timeout`` seconds (``None``:
                forever) for the caller computing the value.
            Whatever ``factory`` raises (nothing is stored; the next waiter
                calls ``factory`` itself).
            TypeError / ValueError / shmdict.Full: as :meth:`set`.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    # ---- snapshots ---------------------------------------------------------------------------

    def dump(self, file: Any) -> int:
        """Write a snapshot of every live item (every type, lists too; TTLs as
        wall-clock deadlines) to ``file``: a path (written to a temporary file
        beside it, mode 0600, and renamed into place once complete) or a binary
        file object. Returns the number of items written. The format is the
        same for both engines: a snapshot loads into either. A path that exists
        must be a regular file: a symbolic link, FIFO, device or directory
        there raises ``OSError`` and is left as it is. A temporary file that a
        killed dump left behind is removed by the next dump to the same path.

        .. versionadded:: 0.2
        """
        raise NotImplementedError

    def load(self, file: Any) -> int:
        """Store the items of a snapshot (from a path or a binary file object),
        as :meth:`set` would: the same keys are overwritten, other keys kept,
        items whose TTL has run out since the dump skipped; the others keep the
        time that remains. Returns the number of items stored.

        Raises:
            shmdict.CorruptError: not a snapshot, or damaged or truncated;
                the whole file is checked first, so nothing was stored.
            shmdict.Full: no room: the items stored before it are counted by
                the exception's ``stored``.

        .. versionadded:: 0.2
        """
        raise NotImplementedError


class LockAPI:
    """What the object that :meth:`DictAPI.lock` returns does, on either engine."""

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        """Take the lock; ``True`` if taken. ``blocking=False`` tries once;
        else wait up to ``timeout`` seconds (``None``: the timeout given to
        ``lock()``, which is ``None`` -- forever -- by default).

        Raises:
            RuntimeError: this object already holds the lock (not reentrant).
            ValueError: a timeout with ``blocking=False``, or a negative, NaN,
                infinite or absurd timeout.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def release(self) -> None:
        """Release the lock.

        Raises:
            RuntimeError: this object does not hold it.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def locked(self) -> bool:
        """Whether anyone (this object included) holds the lock now.

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    def __enter__(self) -> LockAPI:
        """:meth:`acquire`, waiting up to the timeout given to ``lock()``;
        ``TimeoutError`` if the lock was not acquired in that time."""
        raise NotImplementedError

    def __exit__(self, *exc: object) -> None:
        """:meth:`release`."""
        raise NotImplementedError


# ---- giving the engines the contract's docstrings -------------------------------------------

_NOTES: dict[tuple[str, str], str] = {}  # (engine class's qualified name, method) -> its own note


def names(contract: type = DictAPI) -> list[str]:
    """The contract's method and property names, dunders included, sorted."""
    return sorted(n for n, v in vars(contract).items() if callable(v) or isinstance(v, property) if n != "__init__")


def contract_doc(name: str, contract: type = DictAPI) -> str:
    """The contract's docstring of ``name``, cleaned (as ``help`` shows it)."""
    return inspect.cleandoc(_target(vars(contract)[name]).__doc__ or "")


def notes(cls: type) -> dict[str, str]:
    """The engine-specific notes that :func:`implements` found on ``cls`` and
    its bases (the first in the MRO wins, as for the method itself)."""
    out: dict[str, str] = {}
    for c in reversed(cls.__mro__):
        owner = f"{c.__module__}.{c.__qualname__}"
        out.update({m: n for (o, m), n in _NOTES.items() if o == owner})
    return out


def compose(contract: str, note: Optional[str]) -> str:
    """The contract's text, then the engine's note (before ``versionadded``)."""
    if not note:
        return contract
    head, sep, tail = contract.rpartition(_VERSIONADDED)
    if not sep:
        return f"{contract}\n\n{note}"
    return f"{head}\n\n{note}{sep}{tail}"


def _target(attr: Any) -> Any:
    """The object whose ``__doc__`` is the attribute's docstring."""
    return attr.fget if isinstance(attr, property) else attr


def implements(contract: type) -> Callable[[_T], _T]:
    """Class decorator: give each method of ``contract`` that the class itself
    defines in Python the contract's docstring, followed by the method's own
    docstring as an engine-specific note. Methods the class inherits are left
    to the class that defines them (a C type's methods get theirs at import:
    see ``shmdict._dict``)."""

    def decorate(cls: _T) -> _T:
        _give_docs(cls, contract)
        return cls

    return decorate


def _give_docs(cls: type, contract: type) -> None:
    owner = f"{cls.__module__}.{cls.__qualname__}"
    for name in names(contract):
        attr = vars(cls).get(name)
        if attr is None:
            continue
        doc = contract_doc(name, contract)
        own = attr.__doc__ if not isinstance(attr, property) else attr.fget.__doc__
        note = inspect.cleandoc(own) if own else None
        if note:
            _NOTES[(owner, name)] = note
        full = compose(doc, note)
        if isinstance(attr, property):
            attr.fget.__doc__ = full
            setattr(cls, name, property(attr.fget, attr.fset, attr.fdel, full))
        else:
            attr.__doc__ = full
