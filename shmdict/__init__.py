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

from ._dict import Event, SharedDict, Value, get, new, open, unlink
from .exceptions import CorruptError, Error, Full

__all__ = ["CorruptError", "Error", "Event", "Full", "SharedDict", "Value", "get", "new", "open", "unlink"]
__version__ = "0.1.0"
