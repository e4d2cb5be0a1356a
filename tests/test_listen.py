"""Writers skip the event ring while nobody reads it (csrc/notify.c, NOBODY LISTENING), and a
watcher that was away learns how many events it did not get: never silently nothing."""

from __future__ import annotations

import struct

import header_layout
from conftest import dict_path, unique_name

import shmdict

UNTIL = header_layout.offset("ev_listen_until")
SKIPPED = header_layout.offset("ev_skipped")
HEAD = header_layout.offset("ev_head")
SEQ = header_layout.offset("ev_seq")


def word(name: str, off: int) -> int:
    with open(dict_path(name), "rb") as f:
        f.seek(off)
        return int(struct.unpack("<Q", f.read(8))[0])


def test_writes_nobody_listens_to_are_counted_not_appended() -> None:
    name = unique_name()
    with shmdict.new(name, "1m") as d:
        for i in range(100):
            d[f"k{i}"] = i
        assert word(name, HEAD) == 0 and word(name, SKIPPED) == 100
        w = d.watch(timeout=0.2)  # a listener from now on: the next writes are appended
        d["a"] = 1
        d.delete("k0")
        assert word(name, SKIPPED) == 0 and word(name, SEQ) == 102 and word(name, HEAD) > 0
        assert [tuple(e) for e in w] == [("set", "a"), ("delete", "k0")]


def test_a_watcher_that_was_away_learns_what_it_lost() -> None:
    """A watcher that did not come back for a while (its registration lapsed) gets
    Event('lost', n) for the events writers only counted and those it had not read."""
    name = unique_name()
    with shmdict.new(name, "1m") as d:
        w = d.watch(timeout=0.2)
        d["a"] = 1
        with open(dict_path(name), "r+b") as f:  # the registration lapses
            f.seek(UNTIL)
            f.write(struct.pack("<Q", 0))
        d["b"] = 2
        d["c"] = 3
        assert word(name, SKIPPED) == 2
        # a (still unread: the ring is emptied when counted events are settled), b and c
        assert [tuple(e) for e in w] == [("lost", 3)]
        d["d"] = 4  # registered again by that read
        assert [tuple(e) for e in d.watch(timeout=0.1)] == []  # (a new cursor starts now)
        assert word(name, SKIPPED) == 0


def test_waiting_for_a_missing_key_sees_it_come_and_go() -> None:
    """A waiter on a missing key needs the ring (set, then deleted again, is a change): it listens."""
    name = unique_name()
    with shmdict.new(name, "1m") as d:
        import threading

        got: list[object] = []
        since = d.version("x")  # where the ring stands now: the waiter cannot start too late
        t = threading.Thread(target=lambda: got.append(d.wait("x", since=since, timeout=5)))
        t.start()
        import time

        time.sleep(0.2)
        with shmdict.get(name) as other:
            other["x"] = 1
            other.delete("x")
        t.join(10)
        assert got == [None]  # it changed (came and went): wait returns, the key is missing
