"""Change notification of a ``SharedDict``: key versions, ``wait`` for one
key, ``watch`` the event ring, and their asyncio forms.

``Notify`` is a mixin of ``SharedDict`` (``shmdict/_dict.py``); the futex
words and the event ring it reads are the C core's (``csrc/notify.c``,
``csrc/watch.c``). ``Event`` and the short-lived-thread helper of the async
forms are shared with the Redis engine.
"""

from __future__ import annotations

import asyncio
import fnmatch
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Union

from ._api import DictAPI, implements
from ._lib import encode_key, ffi, lib, raise_rc, scratch, seconds
from ._values import text as _text

__all__ = ["Event", "Notify"]

_BOOL, _INT, _FLOAT = lib.SHMDICT_T_BOOL, lib.SHMDICT_T_INT, lib.SHMDICT_T_FLOAT
_STR, _BYTES = lib.SHMDICT_T_STR, lib.SHMDICT_T_BYTES
_ENOTFOUND, _ERANGE = lib.SHMDICT_ENOTFOUND, lib.SHMDICT_ERANGE
_ETIMEDOUT, _EINTR, _ECLOSED = lib.SHMDICT_ETIMEDOUT, lib.SHMDICT_EINTR, lib.SHMDICT_ECLOSED
_u16 = struct.Struct("<H")
_EV_NAMES = {
    lib.SHMDICT_EV_SET: "set",
    lib.SHMDICT_EV_DELETE: "delete",
    lib.SHMDICT_EV_EXPIRE: "expire",
    lib.SHMDICT_EV_EVICT: "evict",
    lib.SHMDICT_EV_FLUSH: "flush",
}
_ASYNC_SLICE = 0.25  # seconds a waiting thread sleeps before re-checking for cancellation

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


@implements(DictAPI)
class Notify:
    """version, wait, watch, await_change, awatch."""

    __slots__ = ()

    if TYPE_CHECKING:
        _name: str

        def _handle(self) -> Any: ...

        def get(self, key: str, default: Any = None) -> Any: ...

    def version(self, key: str) -> int:
        """It changes with every change of the key's value or TTL."""
        h = self._handle()
        k = encode_key(key)
        out = scratch.out
        rc = lib.shmdict_version(h, k, len(k), out)
        if rc < 0:
            raise_rc(rc, key)
        return int(out.ver)

    def wait(self, key: str, timeout: Optional[float] = None, *, since: Optional[int] = None) -> Any:
        """A missing key that is set and then deleted -- or set with a TTL that runs
        out -- before this call looks again counts as a change (it returns
        ``None``), in dicts with an event ring (the default; see ``events`` in
        :func:`new`). Waiting releases the GIL and costs no CPU (a futex in the
        shared file); a signal such as Ctrl-C interrupts it.
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
        """Events come in the order they were applied, from a bounded ring in the
        shared file (size set by ``new(..., events=N)``). A reader that falls
        behind gets ``Event("lost", n)`` -- the number of events it missed -- and
        then the newest ones: never silently wrong data. Resynchronise with
        ``get``. Raises ``ValueError`` if the dict was created with ``events=0``
        or the handle is closed.
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
