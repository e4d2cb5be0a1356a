"""How the integrations reach their dict by name: attach to it, or create it.

A size the user configured behaves as in :func:`shmdict.open`: it is the size
of a new dict and grows an existing smaller one. The integration's *default*
size only ever applies to a dict that does not exist yet: a setting left out
must not grow a dict that someone sized on purpose (``shmdict new NAME 1m``).
``max_size`` (the automatic-growth limit) applies whether the dict is created
or attached to, as in :func:`shmdict.open`.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import shmdict
from shmdict._lib import check, lib, parse_size

Size = Union[int, str]


def attach_or_create(name: str, size: Optional[Size], default: Size, max_size: Optional[Size] = None) -> Any:
    """A :class:`shmdict.SharedDict` (never an owner) for ``name``.

    Raises:
        ValueError / TypeError: a bad name, size or max_size, or a max_size
            smaller than the dict's size.
        OSError: the dict cannot be created or grown.
    """
    if size is not None:
        return shmdict.open(name, size, max_size=max_size)
    parse_size(default)
    limit = None if max_size is None else parse_size(max_size)
    try:
        d = shmdict.get(name)
    except FileNotFoundError:
        # If another process creates it between these two calls, open()
        # attaches to theirs, growing it to the default if it is smaller.
        return shmdict.open(name, default, max_size=max_size)
    if limit is not None:
        if limit < d.size:
            d.close()
            raise ValueError(f"max_size {max_size!r} is smaller than the size of {name!r} ({d.size} bytes)")
        check(lib.shmdict_set_max_size(d._handle(), limit))
    return d
