"""Named locks of a ``SharedDict`` and what is built on them: ``lock``
(``NamedLock``) and the single-flight ``get_or_set``.

``Locks`` is a mixin of ``SharedDict`` (``shmdict/_dict.py``). A named lock
is a kernel open-file-description lock on one byte of the dict's file, far
past its data: it is never the dict's own lock, and the kernel releases it
when its holder dies.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from . import _lib
from ._api import DictAPI, LockAPI, implements
from . import _timeouts
from ._lib import encode_key, ffi, lib, raise_rc
from ._values import MISSING as _MISSING
from ._values import Value

__all__ = ["Locks", "NamedLock"]


@implements(DictAPI)
class Locks:
    """lock, get_or_set."""

    __slots__ = ()

    if TYPE_CHECKING:

        def _handle(self) -> Any: ...

        def _lock_fd(self) -> int: ...

        def get(self, key: str, default: Any = None) -> Any: ...

        def set(self, key: str, value: Value, exptime: float = 0) -> None: ...

    def lock(self, name: str, timeout: Optional[float] = None) -> "NamedLock":
        """A kernel lock on one byte of the dict's file: released by the kernel if its holder dies, however it dies."""
        return NamedLock(self, b"L" + encode_key(name), name, timeout)

    def get_or_set(
        self,
        key: str,
        factory: Callable[[], Value],
        exptime: float = 0,
        lock_timeout: Optional[float] = 30.0,
    ) -> Value:
        lock_timeout = _timeouts.check(lock_timeout, "lock_timeout")
        # lock_timeout bounds the whole call's waits, the dict's lock's too (a
        # stopped holder): one deadline, taken now, for every step below.
        at = _timeouts.deadline(lock_timeout)
        dl = _lib.deadline(at=at)
        with dl:
            v = self.get(key, _MISSING)
            if v is not _MISSING:
                return v  # type: ignore[no-any-return]
            lk = NamedLock(self, b"G" + encode_key(key), key, lock_timeout)
            if not lk.acquire(timeout=None if at is None else _timeouts.remaining(at)):
                raise TimeoutError(f"get_or_set({key!r}): no value within {lock_timeout} s")
        try:
            with dl:
                v = self.get(key, _MISSING)
            if v is _MISSING:
                v = factory()
                with dl:  # (a get may answer without the lock: the store is what waits for it)
                    self.set(key, v, exptime)
            return v  # type: ignore[no-any-return]
        finally:
            lk.release()


@implements(LockAPI)
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

    def __init__(self, d: Locks, tagged: bytes, name: str, timeout: Optional[float]) -> None:
        timeout = _timeouts.check(timeout, "timeout")
        self._d = d
        self._off = int(lib.shmdict_lock_offset(d._handle(), tagged, len(tagged)))
        self._name = name
        self._timeout = timeout
        self._fd = -1

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        if self._fd >= 0:
            raise RuntimeError(f"lock {self._name!r} is already held by this object (not reentrant)")
        if timeout is None:
            timeout = self._timeout
        else:
            timeout = _timeouts.check(timeout, "timeout")
            if not blocking:
                raise ValueError("can't specify a timeout for a non-blocking call")
        deadline = _timeouts.deadline(timeout)
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
        fd = self._fd
        if fd < 0:
            raise RuntimeError(f"release of unheld lock {self._name!r}")
        self._fd = -1
        try:
            lib.shmdict_flock(fd, self._off, 0)
        finally:
            os.close(fd)  # closing the description releases it in any case

    def locked(self) -> bool:
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
