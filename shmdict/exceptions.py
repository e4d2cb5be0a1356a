"""shmdict's exceptions.

The tree::

    Error(Exception)                      base of the library's own exceptions
      Full(Error, MemoryError)            no room, even after reclaiming expired items
      CorruptError(Error, ValueError)     not a dict file of this layout, or an inconsistent one
      Unavailable(Error, ConnectionError) a Redis/Valkey engine cannot be reached (refused, lost, timed out)

Everything else uses the standard exception that fits: a missing key is a
plain ``KeyError(key)``; bad arguments are ``TypeError`` / ``ValueError`` /
``OverflowError``; files raise ``FileExistsError``, ``FileNotFoundError``,
``PermissionError`` or ``OSError``.
"""

from __future__ import annotations

__all__ = ["CorruptError", "Error", "Full", "Unavailable"]


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
