"""The only module that imports the compiled cffi extension.

It holds the error mapping (one table, one ``check``), argument conversions
shared by every operation, the scratch buffers of calls in flight, and the private
test seams (crash points, the TTL clock shift). ``_dict.py`` calls ``lib``
functions directly on its hot paths: a Python wrapper per call would cost
about as much as the C work itself.
"""

from __future__ import annotations

import math
import os
import threading
import time
from builtins import open as builtins_open
from typing import NoReturn

from . import _timeouts
from ._shmdict import ffi, lib
from .exceptions import CorruptError, Error, Full, LockTimeout

__all__ = ["ffi", "lib"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_ERRORS: dict[int, type[BaseException]] = {
    lib.SHMDICT_EFULL: Full,
    lib.SHMDICT_ETOOBIG: Full,
    lib.SHMDICT_ECORRUPT: CorruptError,
    lib.SHMDICT_EVERSION: CorruptError,
    lib.SHMDICT_ENOTNUM: TypeError,
    lib.SHMDICT_EOVERFLOW: OverflowError,
    lib.SHMDICT_EINVAL: ValueError,
    lib.SHMDICT_EWRONGTYPE: TypeError,
}


def strerror(rc: int) -> str:
    return ffi.string(lib.shmdict_strerror(rc)).decode()


def lock_timeout_error(what: str = "") -> LockTimeout:
    """The LockTimeout for this thread's last ELOCKTIMEOUT, naming the holder.

    The C core reports the holder's thread id from the mutex word; the process
    is that thread's thread group (``/proc/<tid>/status``). A thread id that is
    no live task here means another PID namespace or a damaged lock word."""
    tid = int(lib.shmdict_lock_holder())
    pid = None
    if tid > 0:
        try:
            with builtins_open(f"/proc/{tid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Tgid:"):
                        pid = int(line.split()[1])
                        break
        except (OSError, ValueError):
            pid = None
    prefix = f"{what}: " if what else ""
    if pid is not None:
        state = _proc_state(pid)
        who = f"process {pid}" + (f" ({state})" if state else "")
        return LockTimeout(f"{prefix}timed out waiting for the dict's lock, held by {who}", pid)
    if tid > 0:
        return LockTimeout(
            f"{prefix}timed out waiting for the dict's lock; the lock word names thread {tid}, which is not "
            "a live process here (another PID namespace, or a damaged lock)",
            None,
        )
    return LockTimeout(f"{prefix}timed out waiting for the dict's lock (holder unknown)", None)


def _proc_state(pid: int) -> str:
    """'stopped', 'traced', ... from /proc/<pid>/stat, '' if unknown or running."""
    try:
        with builtins_open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        state = data[data.rindex(b")") + 2 : data.rindex(b")") + 3].decode()
    except (OSError, ValueError):
        return ""
    return {"T": "stopped", "t": "stopped by a debugger", "D": "in uninterruptible sleep", "Z": "a zombie"}.get(state, "")


def raise_rc(rc: int, key: object = None, path: str | None = None) -> NoReturn:
    """Raise the exception for a negative return code."""
    if rc == lib.SHMDICT_ENOTFOUND:
        raise KeyError(key)
    if rc == lib.SHMDICT_ELOCKTIMEOUT:
        raise lock_timeout_error()
    if rc == lib.SHMDICT_ESYS:
        e = ffi.errno
        raise OSError(e, os.strerror(e), path)
    if rc == lib.SHMDICT_EVERSION and path is not None:
        raise CorruptError(incompatible(path))
    raise _ERRORS.get(rc, Error)(strerror(rc))


def _abi_text(abi: int) -> str:
    libc = {ord("G"): "glibc", ord("M"): "musl (or another non-glibc C library)"}.get(abi >> 24)
    arch = {1: "x86-64", 2: "arm64", 3: "x86", 4: "arm", 5: "ppc64", 6: "s390x", 7: "riscv"}.get(abi & 0xFF, "?")
    if libc is None:
        return f"an unknown C library (ABI stamp {abi:#010x}, from an older shmdict?)"
    return f"{libc} on {arch}, {((abi >> 8) & 0xFF) * 8}-bit pointers, {(abi >> 16) & 0xFF}-byte mutexes"


def incompatible(path: str) -> str:
    """Why attach refused ``path`` with EVERSION, read from its first bytes."""
    import stat
    import struct

    head = b""
    try:  # never blocks on a FIFO, never follows a symlink, reads only a regular file
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                head = os.pread(fd, 32, 0)
        finally:
            os.close(fd)
    if len(head) < 32 or head[:7] != b"SHMDICT":
        return f"{path}: not a shmdict file"
    version, abi, endian = struct.unpack_from("<I", head, 8)[0], *struct.unpack_from("<II", head, 24)
    ours = int(lib.SHMDICT_LAYOUT_VERSION)
    if version != ours:
        return (
            f"{path}: made with file layout {version}, this shmdict reads layout {ours}: recreate the dict "
            "(a snapshot dumped by the version that made it loads into a new one)"
        )
    if endian != 0x01020304:
        return f"{path}: made on a machine of the other byte order"
    mine = int(lib.shmdict_abi())
    if abi != mine:
        return (
            f"{path}: made by a process with {_abi_text(abi)}; this process has {_abi_text(mine)}. "
            "Their mutexes differ, so they cannot share the dict's lock: use the same C library "
            "(e.g. glibc-based images on both sides, not Alpine/musl on one)"
        )
    return f"{path}: {strerror(lib.SHMDICT_EVERSION)}"


def check(rc: int, key: object = None) -> int:
    if rc < 0:
        raise_rc(rc, key)
    return rc


# ---- argument conversion ---------------------------------------------------


def encode_key(key: object) -> bytes:
    """A key as UTF-8 bytes: a non-empty str of at most SHMDICT_MAX_KEY bytes (TypeError / ValueError otherwise)."""
    if not isinstance(key, str):
        raise TypeError(f"keys must be str, not {type(key).__name__}")
    k = str.encode(key)  # the str's own UTF-8, as the C type reads it: never a subclass's encode()
    if not k or len(k) > lib.SHMDICT_MAX_KEY:
        raise ValueError(
            "key must not be empty" if not k else f"key is {len(k)} bytes; the limit is {lib.SHMDICT_MAX_KEY}"
        )
    return k


def lock_timeout(value: object) -> float:
    """A handle's ``lock_timeout`` for C, checked by the one timeout rule
    (``shmdict._timeouts``): ``None`` is -1.0 (no bound)."""
    return _timeouts.or_forever(value, "lock_timeout")


class deadline:
    """``with deadline(seconds):`` bounds this thread's waits for any dict's
    lock (C: shmdict_deadline) until the block ends; nested blocks keep the
    earlier deadline. ``None`` adds no bound; ``at=`` gives the deadline as a
    ``time.monotonic()`` time instead (the same clock as the C core's)."""

    __slots__ = ("_abs", "_prev")

    def __init__(self, timeout: float | None = None, *, at: float | None = None) -> None:
        if at is not None:
            self._abs = max(1, int(at * 1e9))
        else:
            self._abs = 0 if timeout is None else time.monotonic_ns() + max(1, int(timeout * 1e9))
        self._prev = 0

    def __enter__(self) -> "deadline":
        if self._abs:
            prev = int(lib.shmdict_deadline(self._abs))
            if prev and prev < self._abs:
                lib.shmdict_deadline(prev)
            self._prev = prev
        return self

    def __exit__(self, *exc: object) -> None:
        if self._abs:
            lib.shmdict_deadline(self._prev)


def value_type(value: object) -> type:
    """The value type a value is stored as: bool, int, float, str or bytes
    (a subclass is stored as its base type, so an IntEnum comes back an int).
    TypeError for any other type, OverflowError for an int outside int64."""
    t = type(value)
    if t is not bool and t is not int and t is not float and t is not str and t is not bytes:
        for base in (bool, int, float, str, bytes):
            if isinstance(value, base):
                t = base
                break
        else:
            raise TypeError(f"values must be bool, int, float, str or bytes, not {t.__name__}")
    if t is int and not INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
        raise OverflowError(f"int {value} does not fit in a signed 64-bit integer")
    return t


def seconds(value: object, what: str = "exptime") -> float:
    """A finite number of seconds (TypeError / ValueError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"{what} must be finite, not {value!r}")
    return f


def number(value: object, what: str) -> tuple[int, int, float]:
    """(type, int, float) for an incr operand: int (not bool) or float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be an int or float, not {type(value).__name__}")
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise OverflowError(f"{what} {value} does not fit in a signed 64-bit integer")
        return lib.SHMDICT_T_INT, int(value), 0.0
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"{what} must be finite, not {value!r}")
    return lib.SHMDICT_T_FLOAT, 0, f


def parse_size(size: object) -> int:
    """Bytes from an int or a string with a k/m/g suffix, as nginx's
    ``lua_shared_dict``: ``"512k"``, ``"64m"``, ``"1g"``."""
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise TypeError(f"size must be an int or a str such as '64m', not {type(size).__name__}")
    if isinstance(size, str):
        s = size.strip().lower()
        mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(s[-1:], 1)
        digits = s[:-1] if mult > 1 else s
        if not digits.isdigit() or not digits.isascii():
            raise ValueError(f"malformed size {size!r}: expected e.g. 65536, '512k', '64m' or '1g'")
        n = int(digits) * mult
    else:
        n = size
    if n < lib.SHMDICT_MIN_SIZE:
        raise ValueError(f"size {size!r} is below the minimum of {lib.SHMDICT_MIN_SIZE} bytes")
    if n > lib.SHMDICT_MAX_SIZE_MB << 20:
        raise ValueError(f"size {size!r} is above the maximum of {lib.SHMDICT_MAX_SIZE_MB >> 10} GiB")
    return n


# ---- scratch buffers, one per call in flight ----------------------------------------
# A C call fills an out-struct and a value buffer that Python reads after it
# returns. Between the two, Python may run other code on the same thread: a
# signal handler, a finalizer (__del__, weakref callbacks), a trace function.
# If that code uses a SharedDict, it must not write into the buffers the outer
# call has yet to read. So each call takes a Scratch of its own from this
# thread's free list (take) and puts it back once it has read its result
# (give): a nested call finds the list empty, or holding other buffers, and
# never shares. A call that raises simply does not give its buffer back. The
# lists are per thread (the GIL is released inside C calls, and a
# free-threaded build has none).


class Scratch:
    """An out-struct and a value buffer. ``view`` is a memoryview of ``buf``:
    slicing and decoding it is several times cheaper than ``ffi.unpack``.
    ``all`` = (out, buf, cap, view)."""

    __slots__ = ("out", "cap", "buf", "view", "all")

    def __init__(self) -> None:
        self.out = ffi.new("shmdict_out_t *")
        self._alloc(4096)

    def _alloc(self, cap: int) -> None:
        self.cap = cap
        self.buf = ffi.new("char[]", cap)
        self.view = memoryview(ffi.buffer(self.buf))
        self.all = (self.out, self.buf, cap, self.view)

    def grow(self, need: int) -> None:
        self._alloc(max(need, 2 * self.cap))


class _Free(threading.local):
    """This thread's free Scratch objects (``free.list``)."""

    def __init__(self) -> None:
        self.list: list[Scratch] = []
        # An out-struct for calls that read only the return code: never read,
        # so a nested call may write it too.
        self.sink = ffi.new("shmdict_out_t *")


free = _Free()


def take() -> Scratch:
    """A Scratch for one call: this thread's, or a new one when every one of
    them is in use by calls further out (nesting)."""
    lst = free.list
    return lst.pop() if lst else Scratch()


def give(s: Scratch) -> None:
    """Back to this thread's free list, once its contents have been read."""
    free.list.append(s)


# ---- test seams (private) -------------------------------------------------------


def fault_points() -> list[str]:
    """Names of every crash point, as ``"<operation>.<step>"``."""
    return [ffi.string(lib.shmdict_fault_name(i)).decode() for i in range(lib.shmdict_fault_count())]


def fault_arm(name: str | None, nth: int = 1) -> None:
    """Make this process SIGKILL itself the nth time it reaches crash point
    ``name`` (``None`` disarms). ``"store"``: right after the nth store into
    any dict's mapping (``nth=0``: only count them, see fault_stores)."""
    rc = lib.shmdict_fault_arm(ffi.NULL if name is None else name.encode(), nth)
    if rc:
        raise ValueError(f"unknown crash point {name!r}")


def fault_stores() -> int:
    """Stores into a mapping counted since ``fault_arm("store", ...)``."""
    return int(lib.shmdict_fault_stores())


# The sum of every shift so far, so clock_reset() can undo them all. Every
# shift goes through clock_shift(); a forked child inherits both this and the
# C-side offset, so the two stay equal there too.
_clock_shifted_ns = 0


def clock_shift(secs: float) -> None:
    """Advance this process's TTL clock by ``secs`` (cumulative)."""
    global _clock_shifted_ns
    ns = int(secs * 1e9)
    lib.shmdict_clock_shift(ns)
    _clock_shifted_ns += ns


def clock_reset() -> None:
    """Undo every clock_shift() of this process: the TTL clock is real time again."""
    global _clock_shifted_ns
    lib.shmdict_clock_shift(-_clock_shifted_ns)
    _clock_shifted_ns = 0
