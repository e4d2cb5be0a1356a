"""shmdict: a dict shared by the processes of one machine.

A C hash table with per-key TTL and a robust process-shared mutex lives in an
``mmap(MAP_SHARED)`` file under ``/dev/shm``; every operation is atomic across
processes, and a process killed at any instant never leaves it locked or
corrupt.

>>> import shmdict
>>> with shmdict.new("doctest-init", "1m") as d:
...     d.incr("hits", init=0)
1
"""

from typing import Any

from ._connect import connect
from ._dict import DEFAULT_LOCK_TIMEOUT, Event, NamedLock, SharedDict, Value, get, new, open, unlink
from ._salvage import repair, salvage
from ._snapshot import read_snapshot
from .exceptions import CorruptError, Error, Full, LockTimeout, Unavailable

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "CorruptError",
    "Error",
    "Event",
    "Full",
    "LockTimeout",
    "NamedLock",
    "RedisDict",
    "SharedDict",
    "Unavailable",
    "Value",
    "connect",
    "get",
    "new",
    "open",
    "read_snapshot",
    "repair",
    "salvage",
    "unlink",
]


def __getattr__(name: str) -> Any:
    # RedisDict is imported on first use, so that ``import shmdict`` never pays
    # for importing redis-py.
    if name == "RedisDict":
        from ._redis import RedisDict

        return RedisDict
    raise AttributeError(f"module 'shmdict' has no attribute {name!r}")
__version__ = "0.4.0"
