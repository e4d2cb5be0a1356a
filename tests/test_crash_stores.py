"""Crash states not placed by hand: a kill after every store into the file.

Armed with ``"store"`` (csrc/fault.h ``STORED()``), a process SIGKILLs itself
right after its nth store into a dict's mapping: a logged word, an undo-log
entry, a plain store of a bulk pass (compaction, index rebuild, flush,
growth), a memcpy/memmove/memset into the file. For each operation family
(``FAMILIES``: a starting state and one operation) the sweep counts the
operation's stores T, then for each n in 1..T restores the starting file,
lets a forked child attach and run the operation armed at n, and checks
from this process (a fresh handle, so the first lock repairs): ``check()``
passes, the contents are the state before or after the operation (per key
for the families made of several transactions: eviction, expiry reclaim,
set_many, load), the dict takes a new item, and the event ring read from
its start holds the events of before or after the operation under their
sequence numbers, with no gap (waiters' positions stay consistent).

CI kills at a sample of each family's store counts (the first, the last, and
evenly spread ones); ``SHMDICT_LONG=1`` kills at every one
(``test_every_store``), and with ``SHMDICT_FIGURES`` set reports the counts
per family that docs/reliability.md quotes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
import header_layout
from relutil import LONG, describe, fork, killed, report, unique_name, wait
from test_crash_sweep import (
    SCENARIOS,
    SMALL,
    Op,
    Scenario,
    State,
    candidates,
    fill,
    full_snapshot,
    matches,
    run_op,
)

import shmdict
from shmdict import _lib

__all__: list[str] = []

SAMPLE = 10  # kills per family in the sampled (CI) sweep


@dataclass(frozen=True)
class Family:
    scenario: str  # a SCENARIOS entry of test_crash_sweep: size, setup, its operations
    op: int = 0  # which of the scenario's operations is swept; those before it run in the setup
    per_key: bool = False  # several transactions: each key old or new, none changed otherwise
    ring: bool = False  # also check the event ring: no entry kept by the operation is lost


def _merge_run(d: shmdict.SharedDict) -> None:
    """Free blocks of 64, 31 and 5 units side by side, then a live key D, and the
    dict full behind them: an item of 96 units fits only in the run as a whole.
    A merge pass used to re-carve it as 96 + 4 units, the second piece starting
    one unit after the 5-unit block's start, so a kill between the two header
    writes left a tiling no walk could cross (the whole dict corrupt). The
    pass is gone; compaction gathers the run instead."""
    d["A"] = "a" * (64 * 8 - 25)
    d["B"] = "b" * (31 * 8 - 25)
    d["C"] = "c" * (5 * 8 - 25)
    d["D"] = "live"
    fill(d, "f", 8)
    del d["A"], d["B"], d["C"]


SCENARIOS_HERE = {
    "merge-run": Scenario(SMALL, _merge_run, lambda _: [("set", "X", "x" * (96 * 8 - 25))]),
    "grow-auto-evict": SCENARIOS["grow-evict"],
    "full-borrow": SCENARIOS["borrow"],
}


def _scenario(name: str) -> Any:
    return SCENARIOS_HERE.get(name) or SCENARIOS[name]


FAMILIES: dict[str, Family] = {
    "set (insert)": Family("insert"),
    "set (insert, TTL)": Family("insert-ttl"),
    "set (replace)": Family("overwrite-larger"),
    "set (in place)": Family("overwrite-same-size"),
    "set (number)": Family("overwrite-number"),
    "delete": Family("delete"),
    "delete (backward shift)": Family("delete-shift", op=7),
    "pop": Family("pop"),
    "incr": Family("incr-ttl"),
    "incr (in place)": Family("incr"),
    "incr (in place, int to float)": Family("incr-to-float"),
    "incr (new key)": Family("incr-init"),
    "expire": Family("expire"),
    "cas": Family("cas"),
    "set_many": Family("set-many", per_key=True),
    "lpush (new list)": Family("list-new"),
    "rpush (in place)": Family("list-push"),
    "rpush (list moves)": Family("list-grow", op=2),
    "rpush (list slides)": Family("list-slide", op=0),
    "lpop": Family("list-pop"),
    "expiry reclaim": Family("reclaim", per_key=True),
    "flush_expired": Family("flush-expired", per_key=True),
    "free run 64+31+5 before a live key": Family("merge-run"),
    "compaction (adjacent free pairs)": Family("defrag"),
    "borrow and split": Family("full-borrow"),
    "compaction": Family("compact"),
    "index growth": Family("reindex"),
    "file growth (resize)": Family("resize"),
    "file growth (automatic)": Family("grow-auto"),
    "eviction": Family("evict", per_key=True),
    "growth instead of eviction": Family("grow-auto-evict", per_key=True),
    "flush_all": Family("flush"),
    "event ring append (wrapped)": Family("event-wrap", op=150, ring=True),
    "load": Family("load", per_key=True),
    "recovery (pending undo log)": Family("recover", op=0),
    "recovery (pending compaction)": Family("compact-recover"),
    "recovery (pending index rebuild)": Family("reindex-recover"),
}


# ---- one family ---------------------------------------------------------------------


class Sweep:
    """A family's starting file, its store count and the states around its operation."""

    def __init__(self, family: str) -> None:
        fam = FAMILIES[family]
        sc = _scenario(fam.scenario)
        self.name = unique_name("st")
        self.path = os.path.join(os.environ["SHMDICT_DIR"], f"shmdict.{self.name}")
        self.owner = shmdict.new(self.name, sc.size, evict=sc.evict)
        ops = sc.ops(sc.setup(self.owner))
        for op in ops[: fam.op]:
            run_op(self.owner, op)
        self.op: Op = ops[fam.op]
        self.per_key = fam.per_key
        if sc.pre_kill:  # a dead holder's half-done operation: the family is its recovery
            status = wait(fork(_armed, self.name, sc.pre_kill, 1, self.op))
            assert killed(status), f"pre-kill at {sc.pre_kill}: {describe(status)}"
            self.op = ("get", "s")
        with open(self.path, "rb") as f:
            self.image = f.read()
        self.ring = fam.ring
        self.events_before: Events | None = None
        self.events_after: Events | None = None
        self.before = self._state_before()
        self.stores, self.after = self._count()

    def _state_before(self) -> State:
        d = shmdict.get(self.name)
        try:
            if self.ring:
                self.ring_before = ring(d)
            self.events_before = events(d, self.path)
            return full_snapshot(d)
        finally:
            d.close()
            self.restore()  # the snapshot's lock may have run a recovery: start from the image again

    def restore(self) -> None:
        with open(self.path, "r+b") as f:
            f.write(self.image)
            f.truncate(len(self.image))

    def _count(self) -> tuple[int, State]:
        """The operation's stores, and the state it leaves, run here uninterrupted."""
        _lib.fault_arm("store", 0)
        try:
            d = shmdict.get(self.name)
            try:
                run_op(d, self.op)
            except shmdict.Full:
                pass
            n = _lib.fault_stores()
        finally:
            _lib.fault_arm(None)
        after = full_snapshot(d)
        if self.ring:
            self.ring_after = ring(d)
        self.events_after = events(d, self.path)
        d.close()
        return n, after

    def kill_at(self, n: int) -> bool:
        """Kill the operation after its nth store and check the dict. False: the
        operation completed before n stores."""
        self.restore()
        status = wait(fork(_armed, self.name, "store", n, self.op))
        if not killed(status):
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe(status)
            return False
        d = shmdict.get(self.name)
        try:
            d.check()
            now = full_snapshot(d)
            if self.per_key:
                ok = all(now.get(k) in (self.before.get(k), self.after.get(k))
                         for k in set(now) | set(self.before) | set(self.after))
                ok = ok or any(matches(now, c) for c in candidates(self.before, self.op))
            else:
                ok = matches(now, self.before) or matches(now, self.after) or any(
                    matches(now, c) for c in candidates(self.before, self.op))
            assert ok, f"killed after store {n} of {self.stores}: neither all nor nothing"
            if self.events_before is not None and self.events_after is not None:
                _check_events(events(d, self.path), self.events_before, self.events_after, n)
            if self.ring:
                kept = ring(d)
                # all of it (the new event last), or the old ring's newest entries: at least
                # those the completed append kept, never fewer
                old = self.ring_after[:-1]
                assert kept == self.ring_after or kept[-len(old):] == old and len(kept) >= len(old), (
                    f"killed after store {n}: the ring kept {len(kept)} entries, the append keeps {len(old)}"
                )
            d["after-crash"] = "fine"
            d.check()
        finally:
            d.close()
        return True

    def close(self) -> None:
        self.owner.close()  # the creator's handle: closing it removes the name


def ring(d: shmdict.SharedDict) -> list[tuple[str, str | None]]:
    """Every event the ring holds, oldest first, read from the start."""
    cursor = _lib.ffi.new("uint64_t[2]", [0, 0])
    out: list[tuple[str, str | None]] = []
    while batch := d._events(cursor, "*", 0, None):
        out += [(e.op, e.key) for e in batch if e.op != "lost"]
    return out


Events = tuple[int, list[tuple[str, Any]], int]  # (lost before the first kept, kept, ev_seq)


def events(d: shmdict.SharedDict, path: str) -> Events | None:
    """The event ring as a reader from the very start sees it: how many events it
    reports lost, the events kept, and the header's next sequence number."""
    cursor = _lib.ffi.new("uint64_t[2]", [0, 0])
    lost, kept = 0, []
    try:
        while batch := d._events(cursor, "*", 0, None):
            for e in batch:
                if e.op == "lost":
                    assert not kept, "events lost in the middle of the ring"
                    lost += int(e.key or 0)
                else:
                    kept.append((e.op, e.key))
    except ValueError:  # a dict without an event ring
        return None
    with open(path, "rb") as f:
        f.seek(header_layout.offset("ev_seq"))
        seq = int.from_bytes(f.read(8), "little")
    return lost, kept, seq


def _check_events(now: Events | None, before: Events, after: Events, n: int) -> None:
    """Waiters' positions stay consistent: every event the ring still holds is the
    one the same sequence number named before the kill (an old one) or after the
    completed operation (a new one), and none is missing between the first kept
    and the newest."""
    assert now is not None
    lost, kept, seq = now
    assert lost + len(kept) == seq, f"store {n}: {lost} lost + {len(kept)} kept != {seq} events ever"
    for idx, ev in enumerate(kept):
        s = lost + idx
        ref = before if s < before[2] else after
        assert ref[0] <= s < ref[0] + len(ref[1]) or s < ref[0], f"store {n}: event {s} unknown"
        if s >= ref[0]:
            assert ev == ref[1][s - ref[0]], f"store {n}: event {s} is {ev}, was {ref[1][s - ref[0]]}"


def _armed(name: str, point: str, nth: int, op: Op) -> int:
    _lib.fault_arm(point, nth)  # before attaching: attaching may run the recovery
    d = shmdict.get(name)
    try:
        run_op(d, op)
    except shmdict.Full:
        pass
    return 0


def sample(total: int, k: int = SAMPLE) -> list[int]:
    """k store counts spread over 1..total, the first and the last included."""
    if total <= k:
        return list(range(1, total + 1))
    return sorted({1 + round(j * (total - 1) / (k - 1)) for j in range(k)})


# ---- the tests ------------------------------------------------------------------------


def test_free_run_before_a_live_key_survives_a_kill_at_each_store() -> None:
    """The 64+31+5 free run before a live key D, and a put that needs the whole
    run: a kill after every store of that put leaves a dict that check()
    accepts with every item (D above all)."""
    sw = Sweep("free run 64+31+5 before a live key")
    try:
        assert "X" in sw.after and "D" in sw.after, "the put must succeed, by gathering the run"
        assert sw.stores > 20
        for n in sample(sw.stores, 40):  # every one: test_every_store (SHMDICT_LONG=1)
            assert sw.kill_at(n)
        d = shmdict.get(sw.name)
        assert d["D"] == "live"
        d.close()
    finally:
        sw.close()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sampled_stores(family: str) -> None:
    """A sample of each family's crash states: every kill recovers to check()-clean,
    all-or-nothing contents."""
    sw = Sweep(family)
    try:
        assert sw.stores > 0, "the operation stores nothing: the family sweeps nothing"
        killed_at = [n for n in sample(sw.stores) if sw.kill_at(n)]
        assert killed_at, "no kill landed inside the operation"
        assert not sw.kill_at(sw.stores + 1), "the store count is not the operation's"
    finally:
        sw.close()


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="the full store sweep runs with SHMDICT_LONG=1")
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_store(family: str) -> None:
    """Every crash state of the family: a kill after each of its stores."""
    sw = Sweep(family)
    try:
        n = 0
        for n in range(1, sw.stores + 1):
            assert sw.kill_at(n), f"the operation finished before its store {n} of {sw.stores}"
        report("store_sweep", family=family, states=n)
    finally:
        sw.close()
