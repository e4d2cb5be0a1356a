"""shmdict's exceptions.

The tree::

    Error(Exception)                      base of the library's own exceptions
      Full(Error, MemoryError)            no room, even after reclaiming expired items
      CorruptError(Error, ValueError)     not a dict file of this layout, or an inconsistent one
      Unavailable(Error, ConnectionError) a Redis/Valkey engine cannot be reached (refused, lost, timed out)
      LockTimeout(Error, TimeoutError)    the dict's lock was not acquired within the handle's lock_timeout

Everything else uses the standard exception that fits: a missing key is a
plain ``KeyError(key)``; bad arguments are ``TypeError`` / ``ValueError`` /
``OverflowError``; files raise ``FileExistsError``, ``FileNotFoundError``,
``PermissionError`` or ``OSError``.
"""

from __future__ import annotations

__all__ = ["CorruptError", "Error", "Full", "LockTimeout", "Unavailable"]


class Error(Exception):
    """Base class of shmdict's own exceptions.

    .. versionadded:: 0.1
    """


class Full(Error, MemoryError):
    """The dict has no room for the item, even after reclaiming expired ones.

    The dict is unchanged. Also raised for an item larger than the dict could
    ever hold.

    .. versionadded:: 0.1
    """


class CorruptError(Error, ValueError):
    """The file is not a shmdict of a compatible layout, or is inconsistent.

    .. versionadded:: 0.1
    """


class Unavailable(Error, ConnectionError):
    """The Redis/Valkey server behind :func:`shmdict.connect` cannot be reached:
    the connection was refused, lost or timed out.

    An operation whose connection was lost after its request was sent may or
    may not have been applied (never half-applied: each one is a single
    command or script). The next call reconnects.

    .. versionadded:: 0.1
    """


class LockTimeout(Error, TimeoutError):
    """The dict's lock was not acquired in time: another process holds it and
    does not let go (stopped by ``SIGSTOP`` or a debugger, frozen, or the lock
    word in the file was damaged). The operation changed nothing.

    The bound is the handle's ``lock_timeout`` (see :func:`shmdict.open`), or
    the ``timeout`` of a call that waits (``wait``, ``watch``, ``lock``,
    ``get_or_set``) when that is shorter. ``holder`` is the process id of the
    holder when it is known, else ``None``; the message names it too.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, holder: "int | None" = None) -> None:
        super().__init__(message)
        self.holder = holder
