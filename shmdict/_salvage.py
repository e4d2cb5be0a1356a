"""Salvage and repair: what to do with a dict that can no longer be used.

A dict marked corrupt refuses every operation until ``flush_all()``, which
empties it; a mutex that cannot be recovered refuses even that. ``salvage``
reads the dict without its lock and without writing to it, keeps every
record that is still whole (the C core judges each one from a private copy:
in bounds, its key hashing to its index slot, text valid UTF-8, a list's
elements well formed) and writes them to a snapshot file, which ``load()``
(or ``shmdict load``) stores into a new dict.

``repair`` re-initialises a mutex that can never be taken again (its owner
died and the next locker could not make it consistent): safe against the
processes still attached, since no process can hold such a mutex or sleep on
it (csrc/repair.c).
"""

from __future__ import annotations

from typing import Any

from ._dict import _dir, _path, _trust, _untrusted
from ._lib import ffi, lib, raise_rc
from ._snapshot import FileArg, salvage_handle

__all__ = ["repair", "salvage"]

def _attach_raw(name: str, shared: Any) -> Any:
    """A bare handle: attaching takes no lock, so it works whatever the lock's state."""
    directory = _dir()
    flags, also = _trust(shared)
    p = ffi.new("shmdict_t **")
    why = ffi.new("shmdict_out_t *")
    rc = lib.shmdict_attach(directory.encode(), name.encode(), flags, also, why, p)
    if rc == lib.SHMDICT_EUNTRUSTED:
        raise _untrusted(_path(directory, name), int(why.i), int(why.len))
    if rc:
        raise_rc(rc, path=_path(directory, name))
    return p[0]


def repair(name: str, *, force: bool = False, shared: Any = False) -> bool:
    """Make the dict ``name`` usable again if its lock can never be taken
    (every call raises ``shmdict.Error: the dict's lock is unusable``):
    re-initialise the mutex, then roll back what its dead owner left, as any
    locker would. Safe while other processes stay attached. Returns True if
    it re-initialised the mutex, False if the lock was usable. With
    ``force``, a mutex whose word names an owner thread that does not exist
    (in this PID namespace) is re-initialised too; a lock held by a live
    thread is never taken (``shmdict.Error``).

    .. versionadded:: 0.3
    """
    h = _attach_raw(name, shared)
    try:
        rc = int(lib.shmdict_repair(h, 1 if force else 0))
        if rc < 0:
            raise_rc(rc, path=_path(_dir(), name))
        return rc == 1
    finally:
        lib.shmdict_close(h)


def salvage(name: str, dst: FileArg, *, shared: Any = False) -> tuple[int, int]:
    """Write every item still readable in the dict ``name`` to the snapshot
    file ``dst``, without taking the dict's lock and without changing it;
    returns ``(items, refused)``: the items written and the records refused
    as damaged. It attaches on its own (a dict whose lock cannot be taken
    still opens here). Load the snapshot into a new dict with ``load()``.

    .. versionadded:: 0.3
    """
    h = _attach_raw(name, shared)
    try:
        return salvage_handle(h, dst)
    finally:
        lib.shmdict_close(h)

