"""Semantics and error cases of the ngx.shared.DICT-parity operations."""

from __future__ import annotations

import math

import pytest
from ops_support import sd, uname  # noqa: F401

import shmdict
from shmdict import _lib


def test_add_stores_only_when_absent(sd: shmdict.SharedDict) -> None:
    """add() stores a missing key and leaves a present one alone."""
    assert sd.add("k", 1) is True
    assert sd.add("k", 2) is False
    assert sd["k"] == 1


def test_add_treats_expired_as_absent(sd: shmdict.SharedDict) -> None:
    """add() on an expired key stores the new value."""
    sd.set("k", "old", 1)
    _lib.clock_shift(2)
    assert sd.add("k", "new") is True
    assert sd["k"] == "new" and sd.ttl("k") == 0


def test_replace_only_when_present(sd: shmdict.SharedDict) -> None:
    """replace() refuses a missing or expired key and replaces a live one, TTL included."""
    assert sd.replace("k", 1) is False
    assert "k" not in sd
    sd["k"] = 1
    assert sd.replace("k", "two", 5) is True
    assert sd["k"] == "two" and 0 < sd.ttl("k") <= 5
    sd.set("e", 1, 1)
    _lib.clock_shift(2)
    assert sd.replace("e", 2) is False


@pytest.mark.parametrize("op", ["add", "replace", "safe_set", "safe_add"])
def test_bad_input_raises_and_changes_nothing(sd: shmdict.SharedDict, op: str) -> None:
    """The set-like operations reject bad keys, values and exptimes."""
    sd["k"] = 1
    fn = getattr(sd, op)
    with pytest.raises(TypeError):
        fn("k", None)
    with pytest.raises(TypeError):
        fn(1, 1)
    with pytest.raises(ValueError):
        fn("", 1)
    with pytest.raises(OverflowError):
        fn("k", 2**64)
    with pytest.raises(ValueError):
        fn("k", 2, math.inf)
    assert dict(sd.items()) == {"k": 1}


def test_safe_set_and_add_raise_full_in_an_evicting_dict() -> None:
    """safe_set / safe_add never evict: Full, and the dict unchanged."""
    with shmdict.new(uname(), "64k", evict=True) as d:
        i = 0
        while True:
            try:
                d.safe_set(f"k{i}", b"x" * 200)
            except shmdict.Full:
                break
            i += 1
        before = dict(d.items())
        with pytest.raises(shmdict.Full):
            d.safe_add("new", b"x" * 200)
        assert dict(d.items()) == before
        d.set("new", b"x" * 200)  # plain set evicts instead
        assert d["new"] == b"x" * 200 and d.stats()["evictions"] >= 1
        d.check()


def test_get_stale(sd: shmdict.SharedDict) -> None:
    """get_stale returns live values as fresh and expired-unreclaimed ones as stale."""
    assert sd.get_stale("k") == (None, False)
    sd.set("k", 1.5, 1)
    assert sd.get_stale("k") == (1.5, False)
    _lib.clock_shift(2)
    assert sd.get("k") is None
    assert sd.get_stale("k") == (1.5, True)
    sd.set("big", "é" * 5000, 1)
    _lib.clock_shift(2)
    assert sd.get_stale("big") == ("é" * 5000, True)
    assert sd.flush_expired() == 2
    assert sd.get_stale("k") == (None, False)


def test_flush_expired_counts_and_caps(sd: shmdict.SharedDict) -> None:
    """flush_expired frees expired items only, at most max_count of them."""
    for i in range(10):
        sd.set(f"e{i}", i, 1)
    sd.set("live", 1)
    sd.set("later", 1, 100)
    _lib.clock_shift(2)
    assert sd.flush_expired(3) == 3
    assert sd.stats()["records"] == 9
    assert sd.flush_expired() == 7
    assert sd.flush_expired() == 0
    assert sorted(sd) == ["later", "live"]
    with pytest.raises(TypeError):
        sd.flush_expired(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sd.flush_expired(-1)
    sd.check()


def test_len_counts_live_keys_with_ttls(sd: shmdict.SharedDict) -> None:
    """len() is exact with TTLs: expired items are not counted."""
    for i in range(20):
        sd.set(f"k{i}", i, 1 + i)
    sd["forever"] = 1
    assert len(sd) == 21
    _lib.clock_shift(5.5)  # deadlines 1..5 passed
    assert len(sd) == 16
    assert len(sd) == 16
    _lib.clock_shift(100)
    assert len(sd) == 1
    sd.check()


def test_stats_counts(sd: shmdict.SharedDict) -> None:
    """stats() counts hits, misses, expiries, lock acquisitions and sizes."""
    st0 = sd.stats()
    sd["a"] = 1
    sd.get("a")
    sd.get("b")
    sd.get_many(["a", "b", "c"])
    sd.set("e", 1, 1)
    _lib.clock_shift(2)
    sd.flush_expired()
    st = sd.stats()
    assert st["hits"] - st0["hits"] == 2
    assert st["misses"] - st0["misses"] == 3
    assert st["expired"] - st0["expired"] == 1
    assert st["lock_acquisitions"] > st0["lock_acquisitions"]
    assert st["entries"] == 1 and st["records"] == 1
    assert st["capacity"] == sd.capacity() and st["size"] == sd.size == 1 << 20
    assert 0 < st["free_space"] <= st["free_bytes"] <= st["capacity"]
    assert st["used_bytes"] + st["free_bytes"] == st["capacity"]
    assert st["evictions"] == 0 and st["recoveries"] == 0 and st["evict"] is False
    assert st["index_used"] == 1 and st["index_limit"] < st["index_cap"]


def test_capacity_is_the_arena() -> None:
    """capacity() is fixed and below size; free_space() of an empty dict is most of it."""
    with shmdict.new(uname(), "1m") as d:
        assert 0.5 * d.size < d.capacity() < d.size
        assert 0.5 * d.capacity() < d.free_space() <= d.capacity()


def test_cas(sd: shmdict.SharedDict) -> None:
    """cas stores only on an exact (type and value) match; None expects absence."""
    assert sd.cas("k", 1, 2) is False and "k" not in sd
    assert sd.cas("k", None, 1) is True and sd["k"] == 1
    assert sd.cas("k", None, 5) is False
    assert sd.cas("k", 1.0, 5) is False  # 1 != 1.0 here: types are kept
    assert sd.cas("k", True, 5) is False
    assert sd.cas("k", 1, "s") is True and sd["k"] == "s"
    assert sd.cas("k", "s", b"b", 10) is True and sd["k"] == b"b" and 0 < sd.ttl("k") <= 10
    assert sd.cas("k", b"c", 1) is False
    assert sd.cas("k", b"b", 2.5) is True
    assert sd.cas("k", 2.5, True) is True and sd["k"] is True
    sd["n"] = math.nan
    assert sd.cas("n", math.nan, 1) is False
    sd.set("e", 1, 1)
    _lib.clock_shift(2)
    assert sd.cas("e", 1, 2) is False
    assert sd.cas("e", None, 2) is True and sd["e"] == 2
    with pytest.raises(TypeError):
        sd.cas("k", [], 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sd.cas("k", True, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sd.cas("k", True, 1, math.nan)
    assert sd["k"] is True


def test_cas_full_leaves_the_value() -> None:
    """cas that needs more room than there is raises Full and changes nothing."""
    with shmdict.new(uname(), "64k") as d:
        d["k"] = "small"
        with pytest.raises(shmdict.Full):
            d.cas("k", "small", b"x" * 10**6)
        assert d["k"] == "small"


def test_get_many_set_many(sd: shmdict.SharedDict) -> None:
    """set_many stores every type; get_many returns the present keys with their types."""
    items = {"i": -(2**63), "f": -0.0, "s": "ß" * 3, "b": b"\0\1", "t": True, "F": False, "e": ""}
    sd.set_many(items)
    got = sd.get_many([*items, "missing"])
    assert got == items and {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in items.items()}
    sd.set_many([("x", 1), ("x", 2)], exptime=10)
    assert sd["x"] == 2 and 0 < sd.ttl("x") <= 10
    big = {f"k{i}": "v" * (i % 300) for i in range(500)}
    sd.set_many(big)
    assert sd.get_many(big) == big
    assert sd.get_many([]) == {}
    sd.set_many({})


def test_set_many_bad_input_changes_nothing(sd: shmdict.SharedDict) -> None:
    """A bad key or value anywhere in set_many stores nothing."""
    sd["a"] = 1
    with pytest.raises(TypeError):
        sd.set_many({"b": 1, "c": None})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        sd.set_many({"b": 1, "": 2})
    with pytest.raises(OverflowError):
        sd.set_many({"b": 1, "c": 2**70})
    with pytest.raises(shmdict.Full):
        sd.set_many({"b": 1, "c": b"x" * (2 << 20)})  # can never fit: nothing stored
    with pytest.raises(TypeError):
        sd.get_many(["a", 3])  # type: ignore[list-item]
    assert dict(sd.items()) == {"a": 1}


def test_set_many_full_keeps_prefix() -> None:
    """On Full, set_many keeps the items stored before the one that did not fit."""
    with shmdict.new(uname(), "64k") as d:
        items = {f"k{i:03}": b"x" * 1000 for i in range(200)}
        with pytest.raises(shmdict.Full):
            d.set_many(items)
        keys = sorted(d)
        assert keys == sorted(items)[: len(keys)] and 0 < len(keys) < 200
        d.check()


def test_items_values_keys_match(sd: shmdict.SharedDict) -> None:
    """items()/values() are snapshots; get_keys(match=) filters by glob."""
    data = {"user:1": 1, "user:2": "b", "sess:1": 2.0, "üser:3": b"z"}
    sd.update(data)
    sd.set("user:gone", 1, 1)
    _lib.clock_shift(2)
    assert dict(sd.items()) == data
    assert sorted(sd.values(), key=repr) == sorted(data.values(), key=repr)
    assert sorted(sd.get_keys(match="user:*")) == ["user:1", "user:2"]
    assert sorted(sd.get_keys(match="?ser:[0-9]")) == ["user:1", "user:2", "üser:3"]
    assert sd.get_keys(match="nothing*") == []
    assert len(sd.get_keys(1, match="*")) == 1
    assert dict(sd.items(match="sess:*")) == {"sess:1": 2.0}
    with pytest.raises(TypeError):
        sd.get_keys(match=b"x")  # type: ignore[arg-type]


def test_free_space_is_honest_on_empty_and_full() -> None:
    """An item of exactly free_space bytes fits; one byte more does not."""
    with shmdict.new(uname(), "64k") as d:
        fs = d.free_space()
        with pytest.raises(shmdict.Full):
            d["k"] = b"x" * fs  # key 'k' + fs bytes = fs + 1
        d["k"] = b"x" * (fs - 1)
        assert d.free_space() < fs
        d.check()


def test_closed_handle_raises(sd: shmdict.SharedDict) -> None:
    """Every new operation on a closed handle raises ValueError."""
    sd.close()
    for call in (
        lambda: sd.add("k", 1),
        lambda: sd.get_stale("k"),
        lambda: sd.flush_expired(),
        lambda: sd.stats(),
        lambda: sd.cas("k", 1, 2),
        lambda: sd.get_many(["k"]),
        lambda: sd.set_many({"k": 1}),
        lambda: sd.scan(),
        lambda: sd.items(),
        lambda: sd.limit("k", 1, 1),
        lambda: sd.lock("k"),
        lambda: sd.free_space(),
    ):
        with pytest.raises(ValueError):
            call()


def test_limit_bucket_and_refill(sd: shmdict.SharedDict) -> None:
    """limit admits rate + burst at once, refills at rate/per, and a refusal writes nothing."""
    results = [sd.limit("ip", 3, 60, burst=2) for _ in range(6)]
    assert [r[0] for r in results] == [True] * 5 + [False]
    assert [r[1] for r in results] == [4, 3, 2, 1, 0, 0]
    assert 99 < results[4][2] <= 100  # 5 requests x 20 s each until full
    state = sd["ip"]
    assert sd.limit("ip", 3, 60, burst=2)[0] is False and sd["ip"] == state
    _lib.clock_shift(20.5)  # one request's worth
    assert sd.limit("ip", 3, 60, burst=2)[:2] == (True, 0)
    assert sd.limit("ip", 3, 60, burst=2)[0] is False
    _lib.clock_shift(101)  # full again: the item expired
    assert "ip" not in sd
    assert sd.limit("ip", 3, 60, burst=2)[:2] == (True, 4)


def test_limit_bad_arguments(sd: shmdict.SharedDict) -> None:
    """limit rejects bad rates, periods, bursts and non-int items."""
    for args in [(0, 1), (-1, 1), (1, 0), (1, -5), (0.5, 1), (float("inf"), 1), (1, float("nan"))]:
        with pytest.raises(ValueError):
            sd.limit("k", *args)
    with pytest.raises(ValueError):
        sd.limit("k", 1, 1, -1)
    with pytest.raises(TypeError):
        sd.limit("k", "1", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sd.limit("k", 1, 1, 1.5)  # type: ignore[arg-type]
    sd["s"] = "text"
    with pytest.raises(TypeError):
        sd.limit("s", 1, 1)
    assert sd["s"] == "text" and "k" not in sd
    assert sd.limit("half", 0.5, 1, burst=1)[0] is True  # rate + burst >= 1 is enough


def test_free_space_is_zero_when_the_index_is_full() -> None:
    """A dict full of tiny items reports free_space 0, refuses a new key, still takes an update."""
    with shmdict.new(uname(), "64k") as d:
        i = 0
        while True:
            try:
                d[f"{i}"] = True
            except shmdict.Full:
                break
            i += 1
        st = d.stats()
        assert st["index_used"] <= st["index_limit"]
        assert d.free_space() == 0
        with pytest.raises(shmdict.Full):
            d["x"] = True
        d.set("0", b"update!")  # the same record size: rewritten in place
