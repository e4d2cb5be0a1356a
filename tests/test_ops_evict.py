"""CLOCK eviction: evict=True at new/open."""

from __future__ import annotations

import pytest
from ops_support import uname  # noqa: F401

import shmdict


def test_without_evict_full_stays_full() -> None:
    """A dict created without evict=True raises Full when it is full."""
    with shmdict.new(uname(), "64k") as d:
        with pytest.raises(shmdict.Full):
            for i in range(10**5):
                d[f"k{i}"] = b"x" * 100
        assert d.stats()["evictions"] == 0 and d.stats()["evict"] is False


def test_evicting_dict_takes_every_set_and_counts() -> None:
    """An evicting dict never raises Full for an item that fits, and counts evictions."""
    with shmdict.new(uname(), "64k", evict=True) as d:
        for i in range(5000):
            d[f"k{i}"] = b"x" * (i % 500)
            assert d[f"k{i}"] == b"x" * (i % 500)
        st = d.stats()
        assert st["evictions"] > 4000 and st["evictions"] + st["entries"] == 5000
        with pytest.raises(shmdict.Full):
            d["huge"] = b"x" * (1 << 20)  # larger than the dict could ever hold
        d.check()


def test_big_item_evicts_many_small_ones() -> None:
    """An item needing many victims' room gets it (victims merged by a defrag pass)."""
    with shmdict.new(uname(), "64k", evict=True) as d:
        for i in range(2000):
            d[f"k{i}"] = i
        big = b"y" * (d.capacity() // 2)
        d["big"] = big
        assert d["big"] == big
        d.check()


def test_clock_keeps_recently_read_keys() -> None:
    """Keys read between inserts survive eviction far better than unread ones."""
    with shmdict.new(uname(), "64k", evict=True) as d:
        hot = [f"hot{i}" for i in range(50)]
        for k in hot:
            d[k] = b"h" * 64
        for i in range(3000):
            d[f"cold{i}"] = b"c" * 64
            for k in hot[i % 5 :: 5]:
                d.get(k)
        survivors = sum(k in d for k in hot)
        assert survivors >= 45
        d.check()


def test_open_turns_eviction_on() -> None:
    """open(evict=True) turns eviction on for an existing dict; evict=False leaves it."""
    name = uname()
    with shmdict.new(name, "64k") as d:
        assert shmdict.open(name, "64k").stats()["evict"] is False
        e = shmdict.open(name, "64k", evict=True)
        assert d.stats()["evict"] is True and e.stats()["evict"] is True
        assert shmdict.open(name, "64k").stats()["evict"] is True
        for i in range(3000):
            d[f"k{i}"] = b"x" * 100  # the owner's handle evicts too: the policy is the dict's
        e.close()


def test_open_creates_evicting_dict() -> None:
    """open(evict=True) creating the dict creates it evicting."""
    name = uname()
    d = shmdict.open(name, "64k", evict=True)
    try:
        assert d.stats()["evict"] is True
    finally:
        d.close()
        shmdict.unlink(name)


def test_replace_never_evicts_its_own_key() -> None:
    """replace() on a full evicting dict keeps its key (evicts others) and succeeds."""
    with shmdict.new(uname(), "64k", evict=True) as d:
        for i in range(3000):
            d[f"k{i}"] = b"x" * 100
        last = "k2999"
        assert d.replace(last, b"z" * 5000) is True
        assert d[last] == b"z" * 5000
        d.check()



def test_evictions_and_expiry_are_watchable() -> None:
    """watch() reports evictions as 'evict', flush_expired as 'expire', limit as 'set'."""
    from shmdict import _lib

    with shmdict.new(uname(), "64k", evict=True) as d:
        i = 0
        while d.stats()["evictions"] == 0:
            d[f"k{i}"] = b"x" * 100
            i += 1
        d.limit("ip", 5, 60)
        d.set("e", 1, 1)  # (after the limit: storing the limit could have evicted it)
        d.get("e")  # referenced: CLOCK passes over it, so the eviction below
        d.get_stale("ip")  # takes one of the unreferenced k* items, or ip (whatever the seed)
        w = d.watch(timeout=0.2)
        d["one-more"] = b"x" * 100
        _lib.clock_shift(2)
        assert d.flush_expired() == 1
        d.limit("ip", 5, 60)
        events = list(w)
        ops = [e.op for e in events]
        assert "evict" in ops and ("expire", "e") in [(e.op, e.key) for e in events]
        assert ("set", "ip") in [(e.op, e.key) for e in events]
