"""The crash-point sweep: every named crash point, killed, recovered, checked.

Each row of ``SWEEP`` is one (operation, step) point: a setup run in this
process, a list of operations run by a forked child that has armed the crash
point (it SIGKILLs itself the nth time it reaches that step, holding the
lock), and nothing else. The child reports the start and the outcome of every
operation through a pipe, so the parent knows which operation was cut short.
Then, from another process: the next operation returns promptly, ``check()``
passes, and the live contents equal the model either before or after the
interrupted operation -- all or nothing.

``test_every_point_is_swept`` fails as soon as a crash point exists that no
row reaches: adding a step to FAULT_POINTS in csrc/fault.h means adding a
row to SWEEP (one line: scenario, point, nth), and a SCENARIOS entry if no
existing setup reaches it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from relutil import describe, fork, killed, promptly, report, unique_name, wait

import shmdict
from shmdict import _lib

__all__ = ["shm_dir"]

POINTS = _lib.fault_points()
LONG_TTL = 1000.0
ANY: Any = ("any",)
LIMIT = (1, 100, 5)  # rate, per, burst: one request per 100 s, so the state never expires mid-test
WINDOW = (10, 100.0)  # moving window: 10 hits per 100 s
Op = tuple[Any, ...]
State = dict[str, tuple[type, Any, bool]]


# ---- operations and their model ------------------------------------------------------


def run_op(d: shmdict.SharedDict, op: Op) -> None:
    kind = op[0]
    if kind == "set":
        d.set(op[1], op[2], op[3] if len(op) > 3 else 0)
    elif kind == "delete":
        d.delete(op[1])
    elif kind == "pop":
        d.pop(op[1], None)
    elif kind == "incr":
        d.incr(op[1], op[2], op[3], init=op[4])
    elif kind == "expire":
        d.expire(op[1], op[2])
    elif kind == "flush":
        d.flush_all()
    elif kind == "get":
        d.get(op[1])
    elif kind == "set_many":
        d.set_many(op[1])
    elif kind == "cas":
        d.cas(op[1], op[2], op[3])
    elif kind == "limit":
        d.limit(op[1], *LIMIT)
    elif kind == "window":
        from shmdict.contrib.limits import _window

        _window(d, op[1], 10, 1000.0, 1)
    elif kind == "flush_expired":
        d.flush_expired()
    elif kind == "len":
        len(d)
    elif kind in ("lpush", "rpush"):
        getattr(d, kind)(op[1], op[2])
    elif kind in ("lpop", "rpop"):
        getattr(d, kind)(op[1])
    elif kind == "window":
        window(d, op[1], op[2])
    elif kind == "load":
        d.load(op[1])
    elif kind == "resize":
        d.resize(op[1])
    else:  # pragma: no cover
        raise AssertionError(kind)


def window(d: shmdict.SharedDict, key: str, amount: int) -> bool:
    """One moving-window acquire (shmdict_window, what shmdict.contrib.limits
    calls): up to WINDOW[0] hits per WINDOW[1] seconds."""
    k = key.encode()
    buf = _lib.ffi.new("char[]", 8 * WINDOW[0])
    out = _lib.ffi.new("shmdict_out_t *")
    rc = _lib.lib.shmdict_window(d._handle(), k, len(k), WINDOW[0], WINDOW[1], amount, buf, 8 * WINDOW[0], out)
    _lib.check(rc, key)
    return rc == 1


def model_apply(state: State, op: Op) -> State:
    """The live contents after op succeeded on state."""
    m = dict(state)
    kind = op[0]
    if kind == "set":
        v = op[2]
        m[op[1]] = (type(v), v, len(op) > 3 and op[3] > 0)
    elif kind in ("delete", "pop"):
        m.pop(op[1], None)
    elif kind == "incr":
        _, k, delta, exptime, init = op
        if k in m:
            _, old, has_ttl = m[k]
        else:
            old, has_ttl = init, False
        v = old + delta
        m[k] = (type(v), v, has_ttl if exptime is None else exptime > 0)
    elif kind == "expire":
        if op[1] in m:
            t, v, _ = m[op[1]]
            m[op[1]] = (t, v, op[2] > 0)
    elif kind == "flush":
        m.clear()
    elif kind == "resize":
        pass  # a growth keeps every item as it is
    elif kind == "load":  # op[2]: the snapshot's (key, value, has_ttl), in file order
        for k, v, has_ttl in op[2]:
            m[k] = (list, tuple(v), has_ttl) if isinstance(v, list) else (type(v), v, has_ttl)
    elif kind == "set_many":
        for k, v in op[1]:
            m[k] = (type(v), v, False)
    elif kind == "cas":
        _, k, expected, new = op
        cur = m.get(k)
        if (expected is None and cur is None) or (
            cur is not None and cur[0] is type(expected) and cur[1] == expected
        ):
            m[k] = (type(new), new, False)
    elif kind == "window":
        m[op[1]] = ANY  # a bytes list of hit timestamps: present, whatever the clock said
    elif kind == "limit":
        # GCRA: an existing bucket's arrival time (an int, ns) advances by per / rate
        cur = m.get(op[1])
        m[op[1]] = ANY if cur is None else (int, cur[1] + int(LIMIT[1] / LIMIT[0] * 1e9), True)
    elif kind == "window":
        # the key's bytes are hit timestamps (ns): their exact value is not modelled
        # (tests/test_contrib_limits.py checks old-or-new byte for byte)
        m[op[1]] = ANY
    elif kind in ("lpush", "rpush"):
        _, k, v = op
        _, items, has_ttl = m.get(k, (list, (), False))
        m[k] = (list, (v, *items) if kind == "lpush" else (*items, v), has_ttl)
    elif kind in ("lpop", "rpop") and op[1] in m:
        _, items, has_ttl = m[op[1]]
        rest = items[1:] if kind == "lpop" else items[:-1]
        if rest:
            m[op[1]] = (list, rest, has_ttl)
        else:
            del m[op[1]]
    return m


def candidates(before: State, op: Op) -> list[State]:
    """The states an interrupted op may leave: all of it or nothing -- except
    set_many and load, whose items are separate transactions (any prefix)."""
    if op[0] == "set_many":
        return [model_apply(before, ("set_many", op[1][:j])) for j in range(len(op[1]) + 1)]
    if op[0] == "load":
        return [model_apply(before, ("load", op[1], op[2][:j])) for j in range(len(op[2]) + 1)]
    return [before, model_apply(before, op)]


def matches(now: State, model: State) -> bool:
    """now equals model; a model value ANY (a rate limiter's state) only
    requires the key to exist."""
    if set(now) != set(model):
        return False
    return all(model[k] is ANY or now[k] == model[k] for k in now)


def full_snapshot(d: shmdict.SharedDict) -> State:
    """snapshot() plus lists, read by popping them from a copy of the file
    (nothing else runs: the copy is consistent, and the original untouched)."""
    out: State = {}
    lists = []
    for k in d.get_keys():
        try:
            v = d.get(k, _MISSING)
        except TypeError:
            lists.append(k)
            continue
        t = d.ttl(k)
        if v is not _MISSING and t is not None:
            out[k] = (type(v), v, t > 0)
    if lists:
        src = os.path.join(os.environ["SHMDICT_DIR"], f"shmdict.{d.name}")
        cname = unique_name("copy")
        shutil.copyfile(src, os.path.join(os.environ["SHMDICT_DIR"], f"shmdict.{cname}"))
        c = shmdict.get(cname)
        try:
            for k in lists:
                items = []
                while (x := c.lpop(k)) is not None:
                    items.append(x)
                out[k] = (list, tuple(items), (d.ttl(k) or 0) > 0)
        finally:
            c.close()
            shmdict.unlink(cname)
    return out


_MISSING = object()


# ---- setups ------------------------------------------------------------------------


def fill(d: shmdict.SharedDict, prefix: str, vlen: int, limit: int = 100_000) -> list[str]:
    """Insert prefix-numbered str values of vlen bytes until the dict is Full."""
    keys = []
    for n in range(limit):
        k = f"{prefix}{n:05d}"
        try:
            d[k] = chr(97 + n % 26) * vlen
        except shmdict.Full:
            return keys
        keys.append(k)
    raise AssertionError("never became full")  # pragma: no cover


def basic(d: shmdict.SharedDict) -> None:
    """A handful of keys of every type, one with a TTL."""
    d["s"] = "x" * 40
    d["b"] = b"\x00\xff" * 10
    d["i"] = 41
    d["f"] = 1.5
    d["t"] = True
    d.set("ttl", "expiring later", LONG_TTL)


@dataclass(frozen=True)
class Scenario:
    """A setup (in the parent) and the operations the armed child runs."""

    size: int
    setup: Callable[[shmdict.SharedDict], Any]
    ops: Callable[[Any], list[Op]]
    pre_kill: str | None = None  # crash point a first child dies at (recover.*)
    evict: bool = False
    grows_to: tuple[int, ...] = ()  # sizes a growth in ops may leave besides `size`


def _basic(ops: list[Op], size: int = 1 << 20) -> Scenario:
    return Scenario(size, basic, lambda _: ops)


def _many_keys(d: shmdict.SharedDict) -> list[str]:
    keys = [f"k{n:04d}" for n in range(450)]  # 66% of a 32 KiB dict's index: long probe runs
    for n, k in enumerate(keys):
        d[k] = n
    return keys


def _expiring(d: shmdict.SharedDict) -> None:
    for n in range(300):
        d.set(f"e{n:04d}", n, 0.02)
    d["stays"] = "here"
    time.sleep(0.05)  # real time: the child's clock must see them expired


def _fragmented(d: shmdict.SharedDict) -> None:
    """Full of 64-byte values; every second pair deleted: free runs of two
    adjacent blocks, which only a compaction pass turns into room for a larger
    item (free blocks never merge)."""
    keys = fill(d, "f", 64)
    for n, k in enumerate(keys[:-4]):
        if n % 4 in (1, 2):
            del d[k]


def _borrowable(d: shmdict.SharedDict) -> None:
    """Full, first of large records then of small ones; one large record
    deleted: the only free block is of a larger class, so a small insert must
    borrow it and split it."""
    big = fill(d, "L", 1000)
    fill(d, "s", 40)
    del d[big[len(big) // 2]]


def _lists(d: shmdict.SharedDict) -> None:
    basic(d)
    for v in (1, "two", b"3", 4.5):
        d.rpush("L", v)


def _queue(d: shmdict.SharedDict) -> None:
    """A queue whose live part has drifted right: the next rpushes run out of
    room on the right while the left is free, so the list slides."""
    for n in range(12):
        d.rpush("Q", n)
    for _ in range(10):
        d.lpop("Q")


def _evicting(d: shmdict.SharedDict) -> None:
    for n in range(900):  # more than a 64 KiB dict holds: it is full and has evicted
        d[f"e{n:04d}"] = "v" * 100


def _index_at_limit(d: shmdict.SharedDict) -> None:
    """Small keys until the index has grown once and is at its load limit
    again with more than 4096 entries: the next new key makes it grow."""
    n = 0
    while True:
        st = d.stats()
        if st["index_used"] == st["index_limit"] and st["index_used"] > 4096:
            return
        for _ in range(max(1, st["index_limit"] - st["index_used"])):
            d[f"x{n:05d}"] = n
            n += 1


def _holes(d: shmdict.SharedDict) -> None:
    """Full of (small, large) pairs, the small ones deleted: holes smaller than
    the records after them, so a big item needs compaction, moving in chunks."""
    n = 0
    while True:
        try:
            d[f"{'sL'[n % 2]}{n:05d}"] = "s" * 16 if n % 2 == 0 else "L" * 300
        except shmdict.Full:
            break
        n += 1
    for i in range(0, n, 2):
        del d[f"s{i:05d}"]


def _snapshot_load(d: shmdict.SharedDict) -> tuple[str, list[tuple[str, Any, bool]]]:
    """A snapshot of basic() plus a list, then the dict changed so that
    loading it back inserts, rewrites in place, stores a number in place and
    replaces a list."""
    _lists(d)
    path = os.path.join(os.environ["SHMDICT_DIR"], f"snap-{d.name}.bin")
    d.dump(path)
    items = [(k, v, ttl > 0) for k, v, ttl in shmdict.read_snapshot(path)]
    d["s"] = "y" * 40
    d.delete("b")
    d["i"] = 99
    d.rpop("L")
    d.rpush("L", "changed")
    d["extra"] = "kept"
    return path, items


def _grow_limit(d: shmdict.SharedDict, max_size: int) -> None:
    """Automatic growth up to max_size from now on (what new(max_size=) sets)."""
    _lib.check(_lib.lib.shmdict_set_max_size(d._handle(), max_size))


def _full_can_grow(d: shmdict.SharedDict) -> None:
    """Full of 100-byte values, then allowed to grow: the next insert doubles it."""
    basic(d)
    fill(d, "g", 100)
    _grow_limit(d, 1 << 20)


def _evicting_can_grow(d: shmdict.SharedDict) -> None:
    """An evicting dict that is full and has evicted, then allowed to grow: the next insert
    grows it instead of evicting."""
    _evicting(d)
    _grow_limit(d, 1 << 20)


def _many_records(d: shmdict.SharedDict) -> None:
    """More than 4096 records: an index rebuild passes reindex.inserted at least once."""
    basic(d)
    for n in range(5000):
        d[f"m{n:05d}"] = n


SMALL = 48 << 10  # a small index makes probe clusters (the smallest dict, 32 KiB, is half header)

SCENARIOS: dict[str, Scenario] = {
    "insert": _basic([("set", "new", "value")]),
    "insert-ttl": _basic([("set", "new", 7, LONG_TTL)]),
    "overwrite-larger": _basic([("set", "s", "y" * 400)]),
    "overwrite-smaller": _basic([("set", "s", "z")]),
    "overwrite-number": _basic([("set", "i", 2.5, LONG_TTL)]),
    "overwrite-same-size": _basic([("set", "s", "q" * 40, LONG_TTL)]),
    "overwrite-type": _basic([("set", "s", b"w" * 40)]),
    "delete": _basic([("delete", "s")]),
    "delete-ttl": _basic([("delete", "ttl")]),
    "pop": _basic([("pop", "b")]),
    "delete-shift": Scenario(SMALL, _many_keys, lambda keys: [("delete", k) for k in keys]),
    "incr": _basic([("incr", "i", 1, None, None)]),
    "incr-ttl": _basic([("incr", "i", 5, LONG_TTL, None)]),
    "incr-float": _basic([("incr", "f", 2, 0, None)]),
    "incr-to-float": _basic([("incr", "i", 0.5, None, None)]),  # in place, the type changes
    "incr-init": _basic([("incr", "n", 3, None, 10)]),
    "expire": _basic([("expire", "s", LONG_TTL)]),
    "expire-clear": _basic([("expire", "ttl", 0)]),
    "reclaim": Scenario(
        SMALL, _expiring, lambda _: [("set", f"n{n:03d}", n) for n in range(400)]
    ),
    "defrag": Scenario(1 << 16, _fragmented, lambda _: [("set", "big", "B" * 150)]),
    "borrow": Scenario(1 << 16, _borrowable, lambda _: [("set", "small", "t" * 30)]),
    "reindex": Scenario(1 << 20, _index_at_limit, lambda _: [("set", "new", "v"), ("set", "new2", 2)]),
    "reindex-recover": Scenario(1 << 20, _index_at_limit, lambda _: [("set", "new", "v")],
                                pre_kill="reindex.inserted"),
    "compact": Scenario(1 << 16, _holes, lambda _: [("set", "big", "B" * 1500), ("set", "big2", "b" * 1500)]),
    "compact-recover": Scenario(1 << 16, _holes, lambda _: [("set", "big", "B" * 1500)],
                                pre_kill="compact.chunk"),
    "flush": _basic([("flush",)]),
    "flush-expired": Scenario(SMALL, _expiring, lambda _: [("flush_expired",)]),
    "len-reclaim": Scenario(SMALL, _expiring, lambda _: [("len",)]),
    "evict": Scenario(1 << 16, _evicting, lambda _: [("set", "new", "n" * 300)], evict=True),
    "cas": _basic([("cas", "i", 41, "swapped")]),
    "cas-absent": _basic([("cas", "fresh", None, 1)]),
    "set-many": _basic([("set_many", [("m1", 1), ("s", "over"), ("m3", b"3"), ("i", 2.0)])]),
    "limit": Scenario(1 << 20, lambda d: (basic(d), d.limit("rl", *LIMIT)), lambda _: [("limit", "rl")]),
    "limit-new": _basic([("limit", "fresh")]),
    "window": _basic([("window", "W")]),
    "window-again": Scenario(1 << 20, lambda d: (basic(d), run_op(d, ("window", "W"))), lambda _: [("window", "W")]),
    "window": Scenario(1 << 20, lambda d: (basic(d), window(d, "mw", 1)), lambda _: [("window", "mw", 2)]),
    "list-new": _basic([("lpush", "N", "first")]),
    "list-push": Scenario(1 << 20, _lists, lambda _: [("rpush", "L", 5), ("lpush", "L", "zero")]),
    "list-grow": Scenario(1 << 20, _lists, lambda _: [("rpush", "L", "x" * n) for n in range(40)]),
    "list-pop": Scenario(1 << 20, _lists, lambda _: [("lpop", "L"), ("rpop", "L"), ("rpop", "L"), ("lpop", "L")]),
    "list-slide": Scenario(1 << 20, _queue, lambda _: [("rpush", "Q", 100 + n) for n in range(20)]),
    "load": Scenario(1 << 20, _snapshot_load, lambda r: [("load", r[0], r[1])]),
    "event-wrap": Scenario(SMALL, lambda d: None, lambda _: [("set", f"w{n:03d}", n) for n in range(200)]),
    "recover": Scenario(1 << 20, basic, lambda _: [("set", "s", "r" * 300), ("set", "new", 1)],
                        pre_kill="overwrite.counted"),
    "resize": Scenario(1 << 20, basic, lambda _: [("resize", 2 << 20), ("set", "new", 1), ("resize", (3 << 20) + 100)],
                       grows_to=(2 << 20, (3 << 20) + 100)),
    "grow-auto": Scenario(1 << 16, _full_can_grow, lambda _: [("set", "new", "n" * 300), ("set", "new2", 2)],
                          grows_to=(1 << 17,)),
    "grow-evict": Scenario(1 << 16, _evicting_can_grow, lambda _: [("set", "new", "n" * 300)], evict=True,
                           grows_to=(1 << 17,)),
    # a first child dies inside the growth, a second inside the recovery's index rebuild
    "grow-recover": Scenario(1 << 20, _many_records, lambda _: [("resize", 2 << 20)], pre_kill="grow.marked",
                             grows_to=(2 << 20,)),
    "grow-recover-moved": Scenario(1 << 20, _many_records, lambda _: [("resize", 2 << 20)], pre_kill="grow.moved",
                                   grows_to=(2 << 20,)),
}

# (scenario, crash point, nth time the point is reached): one row per (operation, step)
SWEEP: list[tuple[str, str, int]] = [
    ("insert", "insert.allocated", 1),
    ("insert", "insert.filled", 1),
    ("insert", "insert.published", 1),
    ("insert", "insert.counted", 1),
    ("insert-ttl", "insert.counted", 1),
    ("overwrite-larger", "overwrite.allocated", 1),
    ("overwrite-larger", "overwrite.filled", 1),
    ("overwrite-larger", "overwrite.published", 1),
    ("overwrite-larger", "overwrite.freed", 1),
    ("overwrite-larger", "overwrite.counted", 1),
    ("overwrite-smaller", "overwrite.published", 1),
    ("overwrite-smaller", "overwrite.freed", 1),
    ("overwrite-type", "overwrite.backed", 1),
    ("overwrite-type", "overwrite.rewritten", 1),
    ("overwrite-same-size", "overwrite.backed", 1),
    ("overwrite-same-size", "overwrite.rewritten", 1),
    ("overwrite-number", "overwrite.inplace", 1),
    ("overwrite-number", "overwrite.counted", 1),
    ("delete", "delete.tombed", 1),
    ("delete", "delete.freed", 1),
    ("delete", "delete.counted", 1),
    ("delete-ttl", "delete.counted", 1),
    ("pop", "delete.freed", 1),
    ("delete-shift", "delete.shifted", 1),
    ("delete-shift", "delete.shifted", 2),
    ("delete-shift", "delete.shifted", 7),
    ("incr", "incr.in_place", 1),  # a live number, no TTL: under its stripe's lock alone
    ("incr-to-float", "incr.in_place", 1),
    ("incr-ttl", "incr.stored", 1),
    ("incr-ttl", "incr.ttl", 1),
    ("incr-float", "incr.ttl", 1),
    ("incr-init", "insert.published", 1),
    ("incr-init", "insert.counted", 1),
    ("expire", "expire.stored", 1),
    ("expire-clear", "expire.stored", 1),
    ("reclaim", "reclaim.deleted", 1),
    ("reclaim", "reclaim.deleted", 3),
    ("defrag", "compact.marked", 1),
    ("defrag", "compact.moved", 5),
    ("defrag", "insert.allocated", 1),
    ("defrag", "insert.counted", 1),
    ("borrow", "insert.allocated", 1),
    ("borrow", "insert.filled", 1),
    ("borrow", "insert.counted", 1),
    ("reindex", "reindex.marked", 1),
    ("reindex", "reindex.cleared", 1),
    ("reindex", "reindex.inserted", 1),
    ("reindex", "insert.counted", 1),
    ("reindex-recover", "reindex.cleared", 1),  # the recovery's redo of the rebuild dies too
    ("compact", "compact.marked", 1),
    ("compact", "compact.chunk", 1),
    ("compact", "compact.chunk", 2),
    ("compact", "compact.chunk", 9),
    ("compact", "compact.moved", 1),
    ("compact", "compact.moved", 40),
    ("compact", "insert.counted", 1),
    ("compact-recover", "compact.chunk", 1),  # the recovery's redo of the pass dies too
    ("compact-recover", "compact.moved", 3),
    ("flush", "flush.marked", 1),
    ("flush", "flush.cleared", 1),
    ("insert", "event.appended", 1),
    ("overwrite-larger", "event.appended", 1),
    ("delete", "event.appended", 1),
    ("incr", "event.appended", 1),
    ("expire", "event.appended", 1),
    ("flush", "event.appended", 1),
    ("event-wrap", "event.appended", 150),  # the ring has wrapped: old entries dropped
    ("flush-expired", "flush_expired.deleted", 1),
    ("flush-expired", "flush_expired.deleted", 4),
    ("len-reclaim", "len.reclaimed", 1),
    ("evict", "evict.deleted", 1),
    ("cas", "cas.matched", 1),
    ("cas-absent", "cas.matched", 1),
    ("set-many", "set_many.item", 1),
    ("set-many", "set_many.item", 3),
    ("load", "import.item", 1),
    ("load", "import.item", 4),
    ("load", "insert.published", 1),
    ("load", "overwrite.rewritten", 1),
    ("load", "overwrite.inplace", 1),
    ("load", "overwrite.published", 1),
    ("limit", "limit.stored", 1),
    ("limit", "limit.ttl", 1),
    ("limit-new", "insert.counted", 1),
    ("window", "window.built", 1),
    ("window-again", "window.built", 1),
    ("window-again", "overwrite.published", 1),
    ("window", "window.built", 1),
    ("window", "overwrite.published", 1),
    ("list-new", "list.allocated", 1),
    ("list-new", "list.filled", 1),
    ("list-new", "list.published", 1),
    ("list-push", "list.pushed", 1),
    ("list-push", "list.pushed", 2),
    ("list-grow", "list.allocated", 1),
    ("list-grow", "list.published", 1),
    ("list-pop", "list.popped", 1),
    ("list-pop", "list.popped", 3),
    ("list-slide", "list.slid", 1),
    ("recover", "recover.restored", 1),
    ("resize", "grow.allocated", 1),
    ("resize", "grow.marked", 1),
    ("resize", "grow.moved", 1),
    ("resize", "grow.allocated", 2),  # the second growth, past a page boundary
    ("resize", "grow.moved", 2),
    ("grow-auto", "grow.allocated", 1),
    ("grow-auto", "grow.marked", 1),
    ("grow-auto", "grow.moved", 1),
    ("grow-auto", "insert.counted", 1),  # the insert after the growth
    ("grow-evict", "grow.marked", 1),
    ("grow-evict", "grow.moved", 1),
    ("grow-recover", "reindex.cleared", 1),  # the recovery's redo of the growth dies too
    ("grow-recover", "reindex.inserted", 1),
    ("grow-recover-moved", "reindex.inserted", 1),
]


# ---- the sweep ----------------------------------------------------------------------


def _child(name: str, point: str, nth: int, ops: list[Op], wfd: int) -> int:
    _lib.fault_arm(point, nth)  # before attaching: attaching may already run a recovery
    d = shmdict.get(name)
    for k, op in enumerate(ops):
        os.write(wfd, f"S{k}\n".encode())
        try:
            run_op(d, op)
            outcome = "ok"
        except shmdict.Full:
            outcome = "full"
        os.write(wfd, f"D{k} {outcome}\n".encode())
    return 0


def _run_armed(name: str, point: str, nth: int, ops: list[Op]) -> tuple[int, dict[int, str], int | None]:
    """Run ops in a child armed at point. Returns (wait status, {op: outcome},
    index of the operation that was running when the child died)."""
    r, w = os.pipe()
    pid = fork(_child, name, point, nth, ops, w)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    status = wait(pid)
    done: dict[int, str] = {}
    started = None
    for line in b"".join(chunks).decode().splitlines():
        if line.startswith("S"):
            started = int(line[1:])
        else:
            k, outcome = line[1:].split()
            done[int(k)] = outcome
    interrupted = started if started is not None and started not in done else None
    return status, done, interrupted


def _state_after(start: State, ops: list[Op], done: dict[int, str], upto: int) -> State:
    m = start
    for k in range(upto):
        if done.get(k) == "ok":
            m = model_apply(m, ops[k])
    return m


@pytest.mark.parametrize(("scenario", "point", "nth"), SWEEP, ids=[f"{r[0]}:{r[1]}#{r[2]}" for r in SWEEP])
def test_crash_point(scenario: str, point: str, nth: int) -> None:
    """The op killed at this step leaves a dict that recovers promptly, passes check() and is all-or-nothing."""
    sc = SCENARIOS[scenario]
    name = unique_name()
    with shmdict.new(name, sc.size, evict=sc.evict) as d:
        ops = sc.ops(sc.setup(d))
        if point.startswith("event."):
            list(d.watch(timeout=0))  # a listener: writers append events (csrc/notify.c), not only count them
        start = full_snapshot(d)
        split = _overhead(d)
        if sc.pre_kill:
            # A first child dies mid-operation, leaving a non-empty undo log...
            status, done, k = _run_armed(name, sc.pre_kill, 1, ops)
            assert killed(status) and k is not None, f"pre-kill at {sc.pre_kill}: {describe(status)}"
            # ... and a second one dies inside the recovery of it.
            status2, _, k2 = _run_armed(name, point, nth, [("get", "s")])
            # (attaching takes the lock for info(), so it dies there, before op 0)
            assert killed(status2) and k2 is None, f"{point} was never reached: child {describe(status2)}"
        else:
            status, done, k = _run_armed(name, point, nth, ops)
            assert killed(status), f"{point} (#{nth}) was never reached: child {describe(status)}"
            assert k is not None
        before = _state_after(start, ops, done, k)

        d2 = shmdict.get(name)  # "a fresh process": a new mapping, and the check runs in a child too
        promptly(lambda: len(d2))
        promptly(d2.check)
        now = full_snapshot(d2)
        ok = any(matches(now, c) for c in candidates(before, ops[k]))
        if sc.evict and not ok:
            # A victim is deleted in its own transaction, and a long backward shift commits its
            # first part (a valid state) before the crash point: an evicting dict may have lost
            # a few evictable keys, never changed one.
            ok = any(set(now) <= set(c) and len(c) - len(now) <= 8 and matches(now, {x: c[x] for x in now})
                     for c in candidates(before, ops[k]))
        assert ok, (
            f"{scenario} killed at {point}: neither all nor nothing"
        )
        # The size is one a growth in ops could leave (or the first one), and the index and
        # arena fill it: a growth happened entirely or not at all.
        assert d2.size == d.size and d2.size in (sc.size, *sc.grows_to), f"size {d2.size}"
        assert _overhead(d2) == split, "the index and arena do not fill the dict's size"
        # The dict stays fully usable.
        d2["after-crash"] = "fine"
        assert d2["after-crash"] == "fine"
        d2.check()
        assert d2._info()["recoveries"] >= 1
        d2.close()


def _overhead(d: shmdict.SharedDict) -> int:
    """The dict's bytes outside the index and the arena (header, event ring): a growth
    gives every new byte to one of the two, so this never changes."""
    st = d.stats()
    return int(d._info()["file_size"]) - st["capacity"] - st["index_bytes"]


def test_every_point_is_swept() -> None:
    """Every crash point in the C core has at least one sweep row (new points must add one)."""
    covered = {point for _, point, _ in SWEEP}
    assert covered == set(POINTS), f"not swept: {sorted(set(POINTS) - covered)}; unknown: {sorted(covered - set(POINTS))}"
    pairs = {(scenario, point) for scenario, point, _ in SWEEP}
    assert len(pairs) >= len(POINTS)
    report("crash_sweep", points=len(POINTS), pairs=len(pairs), rows=len(SWEEP))


def test_the_sweep_goes_through_the_binding_in_use() -> None:
    """The sweep's operations run SharedDict's hot methods: on CPython the C type's
    entry points (shmdict._speed), on PyPy or with SHMDICT_PURE=1 the cffi ones; CI runs both,
    so a process killed inside either binding's call is recovered and checked."""
    from shmdict import _dict
    from shmdict._pure import PureBase

    import platform

    pure = platform.python_implementation() != "CPython" or os.environ.get("SHMDICT_PURE", "0") not in ("", "0")
    if pure:
        assert _dict._Base is PureBase
    else:
        from shmdict import _speed

        assert _dict._Base is _speed.SharedDictBase
        for name in ("get", "set", "delete", "pop", "incr", "set_many", "get_many", "__setitem__"):
            assert getattr(shmdict.SharedDict, name) is getattr(_speed.SharedDictBase, name), name


def test_borrow_scenario_needs_the_split() -> None:
    """The borrow setup leaves no room for a small record except inside the one free larger block."""
    with shmdict.new(unique_name(), 1 << 16) as d:
        big = fill(d, "L", 1000)
        fill(d, "s", 40)
        with pytest.raises(shmdict.Full):
            d["small"] = "t" * 30
        del d[big[len(big) // 2]]
        d["small"] = "t" * 30  # only a split of the freed large block can hold it
        d["small2"] = "t" * 30  # and the split left more pieces behind
        d.check()


def test_defrag_scenario_needs_a_compaction() -> None:
    """Free blocks never merge: adjacent pairs of free blocks, like isolated ones, take
    a larger item only once a compaction pass has gathered them."""
    for pairs in (False, True):
        with shmdict.new(unique_name(), 1 << 16) as d:
            keys = fill(d, "f", 64)
            for n, k in enumerate(keys[:-4]):
                if (n % 4 in (1, 2)) if pairs else n % 2 == 1:
                    del d[k]
            d["big"] = "B" * 150
            assert d.stats()["compactions"] == 1
            d.check()


def test_compact_scenario_moves_records_in_chunks() -> None:
    """The compact setup leaves holes smaller than the records after them, and no other room."""
    with shmdict.new(unique_name(), 1 << 16) as d:
        _holes(d)
        assert d.free_space() >= 1500 and d.stats()["compactions"] == 0
        d["big"] = "B" * 1500
        assert d.stats()["compactions"] == 1
        d.check()
