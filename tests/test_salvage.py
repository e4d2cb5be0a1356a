"""Salvage: the items still whole in a dict that refuses every operation,
read without its lock and without changing it, into a snapshot that loads."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import header_layout
import pytest
from relutil import unique_name

import shmdict
from shmdict import _lib

__all__ = ["shm_dir"]


def _fill(d: shmdict.SharedDict) -> dict[str, object]:
    items: dict[str, object] = {f"k{n:03d}": n for n in range(200)}
    items.update({"s": "text é", "b": b"\x00\xff", "f": 2.5, "t": True, "big": "B" * 5000})
    for k, v in items.items():
        d[k] = v
    d.set("ttl", "later", 1000)
    items["ttl"] = "later"
    for v in (1, "two", b"3"):
        d.rpush("L", v)
    return items


def _poke(shm_dir: str, name: str, off: int, fmt: str, value: int) -> None:
    with open(os.path.join(shm_dir, f"shmdict.{name}"), "r+b") as f:
        f.seek(off)
        f.write(struct.pack(fmt, value))


def _loaded(path: str) -> shmdict.SharedDict:
    d = shmdict.new(unique_name("back"), "1m")
    d.load(path)
    return d


def test_salvage_a_dict_marked_corrupt(shm_dir: str) -> None:
    """Every item of a dict marked corrupt comes back through salvage and load."""
    name = unique_name()
    snap = os.path.join(shm_dir, "salvaged.snap")
    with shmdict.new(name, "1m") as d:
        items = _fill(d)
        _poke(shm_dir, name, header_layout.offset("corrupt"), "<Q", 1)
        with pytest.raises(shmdict.CorruptError):
            d["new"] = 1  # a write takes the lock, which reports the mark (reads need not)
        before = open(os.path.join(shm_dir, f"shmdict.{name}"), "rb").read()
        n, refused = d.salvage(snap)
        assert (n, refused) == (len(items) + 1, 0)
        assert open(os.path.join(shm_dir, f"shmdict.{name}"), "rb").read() == before  # not a byte written
    with _loaded(snap) as back:
        assert {k: back[k] for k in items} == items
        assert [back.lpop("L") for _ in range(3)] == [1, "two", b"3"]
        assert 990 < (back.ttl("ttl") or 0) <= 1000


def test_salvage_leaves_out_damaged_records(shm_dir: str) -> None:
    """A record whose key no longer hashes to its slot, and a slot pointing outside the arena,
    are refused; every other item is kept."""
    name = unique_name()
    snap = os.path.join(shm_dir, "salvaged.snap")
    with shmdict.new(name, "1m") as d:
        items = _fill(d)
        # the index is the file's last index_cap slots: scribble two occupied ones
        size, cap = int(d.size), int(d.stats()["index_bytes"]) // 8
        path = os.path.join(shm_dir, f"shmdict.{name}")
        with open(path, "r+b") as f:
            f.seek(size - cap * 8)
            slots = list(struct.unpack(f"<{cap}Q", f.read(cap * 8)))
        used = [i for i, s in enumerate(slots) if s > 1]
        slots[used[3]] ^= 1 << 40  # another tag: the key does not hash to it
        slots[used[7]] = (slots[used[7]] >> 32) << 32 | 0xFFFFFFF0  # a unit past the arena
        with open(path, "r+b") as f:
            f.seek(size - cap * 8)
            f.write(struct.pack(f"<{cap}Q", *slots))
        n, refused = shmdict.salvage(name, snap)
    assert (n, refused) == (len(items) + 1 - 2, 2)
    with _loaded(snap) as back:
        kept = {k: back[k] for k in items if k in back}
        assert all(items[k] == v for k, v in kept.items())
        assert len(kept) + ("L" in back) == len(items) + 1 - 2


def test_salvage_without_the_lock(shm_dir: str) -> None:
    """A mutex that can never be recovered refuses every operation, not salvage (CLI)."""
    name = unique_name()
    snap = os.path.join(shm_dir, "salvaged.snap")
    with shmdict.new(name, "1m") as d:
        items = _fill(d)
        # glibc: __owner = PTHREAD_MUTEX_NOTRECOVERABLE
        _poke(shm_dir, name, header_layout.offset("lock") + 8, "<I", 0x7FFFFFFE)
        with pytest.raises(shmdict.Error):
            d["new"] = 1  # a write takes the (now unusable) lock
        r = subprocess.run([sys.executable, "-m", "shmdict", "--json", "salvage", name, snap],
                           capture_output=True, text=True, env={**os.environ})
        assert r.returncode == 0, r.stderr
        assert '"items": %d' % (len(items) + 1) in r.stdout
    with _loaded(snap) as back:
        assert {k: back[k] for k in items} == items


def test_salvage_of_a_missing_dict(shm_dir: str) -> None:
    """Salvage attaches like get: no such dict is FileNotFoundError, and no file is written."""
    with pytest.raises(FileNotFoundError):
        shmdict.salvage(unique_name(), os.path.join(shm_dir, "x.snap"))
    assert not os.path.exists(os.path.join(shm_dir, "x.snap"))
    assert _lib.lib.shmdict_salvage  # the C entry point exists in this build


def test_repair_an_unrecoverable_lock(shm_dir: str) -> None:
    """A mutex that can never be taken again is re-initialised in place while a
    handle stays attached; every item is still there and the dict works."""
    name = unique_name()
    with shmdict.new(name, "1m") as d:
        items = _fill(d)
        assert shmdict.repair(name) is False  # a usable lock is left as it is
        _poke(shm_dir, name, header_layout.offset("lock") + 8, "<I", 0x7FFFFFFE)  # glibc: NOTRECOVERABLE
        with pytest.raises(shmdict.Error, match="unusable"):
            d["new"] = 1  # a write takes the (now unusable) lock
        r = subprocess.run([sys.executable, "-m", "shmdict", "repair", name],
                           capture_output=True, text=True, env={**os.environ})
        assert r.returncode == 0 and "re-initialised" in r.stdout, r.stderr
        assert {k: d[k] for k in items} == items  # the handle that stayed attached works again
        d["after"] = 1
        d.check()


def test_repair_never_takes_a_live_holders_lock(shm_dir: str) -> None:
    """A lock word naming a live thread (this one) is left alone, even with force."""
    name = unique_name()
    with shmdict.new(name, "1m") as d:
        d["k"] = "v"
        word = os.gettid() if hasattr(os, "gettid") else os.getpid()
        _poke(shm_dir, name, header_layout.offset("lock"), "<I", word)  # "held" by a live thread
        with pytest.raises(shmdict.Error):
            shmdict.repair(name, force=True)
        _poke(shm_dir, name, header_layout.offset("lock"), "<I", 0)
        assert d["k"] == "v"
