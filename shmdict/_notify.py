"""Change notification of a ``SharedDict``: key versions, ``wait`` for one
key, ``watch`` the event ring, and their asyncio forms.

``Notify`` is a mixin of ``SharedDict`` (``shmdict/_dict.py``); the futex
words and the event ring it reads are the C core's (``csrc/notify.c``,
``csrc/watch.c``). ``Event`` and the short-lived-thread helper of the async
forms are shared with the Redis engine.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Optional, Union

from . import _lib, _timeouts
from ._api import DictAPI, Event, implements
from ._lib import encode_key, ffi, lib, raise_rc
from ._values import text as _text
from .exceptions import LockTimeout

__all__ = ["Event", "Notify"]

_BOOL, _INT, _FLOAT = lib.SHMDICT_T_BOOL, lib.SHMDICT_T_INT, lib.SHMDICT_T_FLOAT
_STR, _BYTES = lib.SHMDICT_T_STR, lib.SHMDICT_T_BYTES
_ENOTFOUND, _ERANGE = lib.SHMDICT_ENOTFOUND, lib.SHMDICT_ERANGE
_ETIMEDOUT, _EINTR, _ECLOSED = lib.SHMDICT_ETIMEDOUT, lib.SHMDICT_EINTR, lib.SHMDICT_ECLOSED
_u16 = struct.Struct("<H")
_NULL = ffi.NULL
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


_MISSING_BASE = 1 << 32
"""version() of a missing key, in a dict with an event ring, is this plus the
ring's sequence when it was seen missing: wait(since=) then counts an event
for the key after that sequence as a change (a set and a delete in between
are not missed). A present key's version is below it."""


def _quiet_end(last_read: float, timeout: Optional[float]) -> bool:
    """A watch whose lock wait ran into its own deadline ends quietly if it
    read the ring less than ``timeout`` ago: the lock was busy only at the
    very end (ordinary contention), not for the whole timeout. A lock not had
    for a whole timeout is LockTimeout (a stopped holder)."""
    return timeout is not None and time.monotonic() - last_read < timeout


@implements(DictAPI)
class Notify:
    """version, wait, watch, await_change, awatch."""

    __slots__ = ()

    if TYPE_CHECKING:
        _name: str

        def _handle(self) -> Any: ...

        def get(self, key: str, default: Any = None) -> Any: ...

    def version(self, key: str) -> int:
        """It changes with every change of the key's value or TTL. A missing key's
        version is 0 in a dict without an event ring; with one (the default)
        it is a number of 2**32 or more that remembers when the key was seen
        missing, so that ``wait(key, since=version)`` also sees the key set and
        deleted again in between (compare versions; do not test them for truth).
        """
        h = self._handle()
        k = encode_key(key)
        out = ffi.new("shmdict_out_t *")  # this call's own: a nested call cannot overwrite it
        rc = lib.shmdict_version(h, k, len(k), out)
        if rc < 0:
            raise_rc(rc, key)
        if out.ver:
            return int(out.ver)
        return _MISSING_BASE + int(out.i) if out.len else 0

    def wait(self, key: str, timeout: Optional[float] = None, *, since: Optional[int] = None) -> Any:
        """A missing key that is set and then deleted -- or set with a TTL that runs
        out -- after ``since`` (or after this call looks first) counts as a
        change (it returns ``None``), in dicts with an event ring (the default;
        see ``events`` in :func:`new`). Waiting releases the GIL and costs no
        CPU (a futex in the shared file); a signal such as Ctrl-C interrupts it.
        """
        t = _timeouts.check(timeout)
        encode_key(key)
        return self._wait(key, t, self._wait_cursor(since), _timeouts.deadline(t))

    @staticmethod
    def _wait_cursor(since: Optional[int]) -> Any:
        """The C wait cursor: (version it changes from, event ring sequence and position);
        kept across calls so that waiting in slices misses nothing."""
        if since is None:
            return ffi.new("uint64_t[3]", [2**64 - 1, 2**64 - 1, 2**64 - 1])
        if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since < _MISSING_BASE + 2**63:
            raise ValueError(f"since must be a version from version(), not {since!r}")
        if since >= _MISSING_BASE:  # missing, as of that ring sequence
            return ffi.new("uint64_t[3]", [0, since - _MISSING_BASE, 2**64 - 1])
        return ffi.new("uint64_t[3]", [since, 2**64 - 1, 2**64 - 1])

    def _wait(self, key: str, step: Optional[float], cursor: Any, at: Optional[float]) -> Any:
        """One wait of at most ``step`` seconds (None: no limit) for a change
        after ``cursor``; ``at`` is the caller's deadline (time.monotonic()),
        which bounds the waits for the dict's lock in every slice."""
        h = self._handle()
        k = encode_key(key)
        end = _timeouts.deadline(step)
        out = ffi.new("shmdict_out_t *")  # this call's own out-struct and buffer: a signal
        cap = 4096  # handler or finalizer running a nested call cannot overwrite them
        buf = ffi.new("char[]", cap)
        with _lib.deadline(at=at):
            while True:
                rc = lib.shmdict_wait(h, k, len(k), cursor, _timeouts.remaining(end), out, buf, cap)
                if rc == _EINTR:  # signal handlers run here, between the two calls
                    if end is not None and time.monotonic() >= end:
                        rc = _ETIMEDOUT
                    else:
                        continue
                if rc == _ENOTFOUND:
                    return None
                if rc == _ETIMEDOUT:
                    raise TimeoutError(f"{key!r} did not change within {step} s")
                if rc == _ECLOSED:
                    raise ValueError(f"SharedDict {self._name!r} was closed while waiting")
                if (rc == _STR or rc == _BYTES) and out.len > cap:
                    return self.get(key)  # too large for the buffer: read the (newest) value
                if rc < 0:
                    raise_rc(rc, key)
                return self._decode(rc, out, buf)

    def _decode(self, rc: int, out: Any, buf: Any) -> Any:
        if rc == _INT:
            return out.i
        if rc == _FLOAT:
            return out.f
        if rc == _BOOL:
            return out.i != 0
        b = ffi.unpack(buf, out.len)
        return _text(b, self._name) if rc == _STR else b

    def _events(self, cursor: Any, match: str, step: Optional[float], at: Optional[float]) -> list[Event]:
        """One batch of events after ``cursor`` for keys matching ``match``,
        waiting up to ``step`` seconds (None: no limit; 0: none) for one;
        ``at`` bounds the waits for the dict's lock (see ``_wait``). The glob
        is matched in C, under the lock: events for other keys are never
        copied out, so they cannot make this reader fall behind."""
        h = self._handle()
        pat = str.encode(match) if match != "*" else _NULL
        plen = len(pat) if match != "*" else 0
        out = ffi.new("shmdict_out_t *")  # this call's own, as in _wait
        cap = 4096
        buf = ffi.new("char[]", cap)
        end = _timeouts.deadline(step)
        with _lib.deadline(at=at):
            while True:
                rc = lib.shmdict_events(h, cursor, pat, plen, buf, cap, _timeouts.remaining(end), out)
                if rc == _EINTR:
                    if end is not None and time.monotonic() >= end:
                        return []
                    continue
                if rc == _ETIMEDOUT:
                    return []
                if rc == _ECLOSED:
                    raise ValueError(f"SharedDict {self._name!r} was closed while watching")
                if rc == lib.SHMDICT_EINVAL:
                    raise ValueError(f"SharedDict {self._name!r} was created with events=0: nothing to watch")
                if rc == _ERANGE:  # the next event (a long key) does not fit: grow, never stall
                    cap = max(int(out.len), 2 * cap)
                    buf = ffi.new("char[]", cap)
                    continue
                if rc < 0:
                    raise_rc(rc)
                events: list[Event] = []
                if out.i:
                    events.append(Event("lost", int(out.i)))
                data = ffi.buffer(buf, out.len)[:]
                pos = 0
                for _ in range(rc):
                    op = data[pos]
                    (n,) = _u16.unpack_from(data, pos + 1)
                    key = _text(data[pos + 3 : pos + 3 + n], self._name) if op != lib.SHMDICT_EV_FLUSH else None
                    pos += 3 + n
                    events.append(Event(_EV_NAMES.get(op, "set"), key))
                return events

    def _watch_cursor(self, at: Optional[float]) -> Any:
        """A cursor pinned at "now" (the ring's head). Pinning takes the dict's
        lock, waiting up to the caller's deadline ``at`` (and the handle's
        lock_timeout) -- never a zero timeout of its own."""
        cursor = ffi.new("uint64_t[2]", [0, 2**64 - 1])
        self._events(cursor, "*", 0.0, at)  # no event is read: the cursor starts at the head
        return cursor

    def watch(self, match: str = "*", *, timeout: Optional[float] = None) -> Iterator[Event]:
        """Events come in the order they were applied, from a bounded ring in the
        shared file (size set by ``new(..., events=N)``). The glob is matched
        in the core: events for other keys are passed over under the lock,
        never copied out, so they neither fill a batch nor restart the
        timeout. A reader that falls behind the ring (by more than it holds)
        gets ``Event("lost", n)`` -- the number of events, of any key,
        overwritten before it read them -- and then the newest ones: never
        silently wrong data. Resynchronise with ``get``. An ``expire`` event comes when a
        key's TTL passes (the watcher reclaims the expired item). Raises
        ``ValueError`` if the dict was created with ``events=0`` or the handle
        is closed; ``shmdict.LockTimeout`` if the dict's lock cannot be had
        within ``timeout`` (or the handle's ``lock_timeout``).
        """
        if not isinstance(match, str):
            raise TypeError(f"match must be a glob str, not {type(match).__name__}")
        t = _timeouts.check(timeout)
        cursor = self._watch_cursor(_timeouts.deadline(t))

        def gen() -> Iterator[Event]:
            at = _timeouts.deadline(t)
            last_read = time.monotonic()  # the pin read the ring
            while True:
                left = _timeouts.remaining(at)
                if at is not None and left <= 0 and t:
                    return  # the deadline passed: no zero-timeout look (timeout=0 looks once)
                try:
                    batch = self._events(cursor, match, None if at is None else left, at)
                except LockTimeout:
                    if _quiet_end(last_read, t):
                        return
                    raise
                last_read = time.monotonic()
                if not batch:
                    return
                if any(ev.op != "lost" for ev in batch):
                    at = _timeouts.deadline(t)  # the timeout counts from the last event, not a "lost"
                elif t == 0:
                    at = _timeouts.deadline(t)
                yield from batch

        return gen()

    async def await_change(self, key: str, timeout: Optional[float] = None, *, since: Optional[int] = None) -> Any:
        t = _timeouts.check(timeout)
        encode_key(key)
        at = _timeouts.deadline(t)
        cursor = self._wait_cursor(since)  # one cursor for every slice: nothing falls between them
        try:
            return self._wait(key, 0.0, cursor, at)  # the first look, now: pins the cursor at this call
        except TimeoutError as e:
            if isinstance(e, LockTimeout):
                raise
        while True:
            left = _timeouts.remaining(at)
            if at is not None and left <= 0:
                raise TimeoutError(f"{key!r} did not change within {timeout} s")
            step = _ASYNC_SLICE if at is None else min(_ASYNC_SLICE, left)
            try:
                return await _in_thread(self._wait, key, step, cursor, at)
            except LockTimeout:
                raise
            except TimeoutError:
                pass

    async def awatch(self, match: str = "*", *, timeout: Optional[float] = None) -> AsyncIterator[Event]:
        if not isinstance(match, str):
            raise TypeError(f"match must be a glob str, not {type(match).__name__}")
        t = _timeouts.check(timeout)
        at = _timeouts.deadline(t)
        cursor = await _in_thread(self._watch_cursor, at)
        last_read = time.monotonic()
        while True:
            left = _timeouts.remaining(at)
            if at is not None and left <= 0 and t:
                return  # the deadline passed: never a slice of 0 s (timeout=0 looks once)
            step = _ASYNC_SLICE if at is None else min(_ASYNC_SLICE, left)
            try:
                batch = await _in_thread(self._events, cursor, match, step, at)
            except LockTimeout:
                if _quiet_end(last_read, t):
                    return
                raise
            last_read = time.monotonic()
            for ev in batch:
                yield ev
            if t == 0 and not batch:
                return  # looked once: nothing (more) now
            if t == 0 or any(ev.op != "lost" for ev in batch):
                at = _timeouts.deadline(t)  # the timeout counts from the last event, not a "lost"
