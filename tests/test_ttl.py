"""Deterministic expiry through the clock_shift test seam."""

from __future__ import annotations

import pytest
from conftest import MIN_SIZE, run_in_child, snapshot, typed

import shmdict
from shmdict import _lib

shift = _lib.clock_shift


def test_set_with_exptime_expires(d):
    """A key set with exptime is live before the deadline and gone after it."""
    d.set("k", "v", 10)
    assert d["k"] == "v"
    shift(9.9)
    assert d["k"] == "v"
    assert "k" in d
    shift(0.2)
    assert "k" not in d
    assert d.get("k") is None
    assert d.get("k", 5) == 5
    with pytest.raises(KeyError):
        d["k"]


def test_fractional_exptime(d):
    """exptime may be a float with sub-second precision."""
    d.set("k", 1, 0.5)
    shift(0.4)
    assert "k" in d
    shift(0.2)
    assert "k" not in d


@pytest.mark.parametrize("exptime", [0, -1, -0.001, 0.0, -1e9])
def test_non_positive_exptime_never_expires(d, exptime):
    """exptime <= 0 stores a key that never expires."""
    d.set("k", 1, exptime)
    assert d.ttl("k") == 0
    shift(10**6)
    assert d["k"] == 1


def test_set_without_exptime_clears_ttl(d):
    """Plain set and item assignment store without a TTL, replacing any earlier one."""
    d.set("k", 1, 10)
    d.set("k", 2)
    assert d.ttl("k") == 0
    d.set("j", 1, 10)
    d["j"] = 2
    assert d.ttl("j") == 0
    shift(20)
    assert d["k"] == 2
    assert d["j"] == 2


def test_set_replaces_ttl(d):
    """Setting again with another exptime replaces the TTL."""
    d.set("k", 1, 10)
    d.set("k", 2, 100)
    shift(50)
    assert d["k"] == 2
    assert 49 < d.ttl("k") <= 50


@pytest.mark.parametrize("exptime", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_exptime_is_valueerror(d, exptime):
    """A non-finite exptime raises ValueError from set and expire, changing nothing."""
    d.set("k", 1, 100)
    with pytest.raises(ValueError):
        d.set("k", 2, exptime)
    with pytest.raises(ValueError):
        d.set("new", 2, exptime)
    with pytest.raises(ValueError):
        d.expire("k", exptime)
    with pytest.raises(ValueError):
        d.expire("missing", exptime)
    assert snapshot(d) == typed({"k": 1})
    assert 99 < d.ttl("k") <= 100


@pytest.mark.parametrize("exptime", ["10", b"10", [10]])
def test_non_number_exptime_is_typeerror(d, exptime):
    """An exptime that is not a number raises TypeError and stores nothing."""
    with pytest.raises(TypeError):
        d.set("k", 1, exptime)
    with pytest.raises(TypeError):
        d.expire("k", exptime)
    assert len(d) == 0


def test_huge_exptime_never_crashes(d):
    """A huge finite exptime either stores a live key or raises ValueError/OverflowError."""
    for e in (1e300, 2.0**64, 2**70):
        try:
            d.set("k", 1, e)
        except (ValueError, OverflowError):
            assert "k" not in d
        else:
            assert d["k"] == 1
            assert d.ttl("k") == 0 or d.ttl("k") > 10**9
            shift(10**6)
            assert d["k"] == 1
        d.check()


def test_ttl_values(d):
    """ttl is None if missing, 0 if never expiring, else the remaining seconds."""
    assert d.ttl("missing") is None
    d["forever"] = 1
    assert d.ttl("forever") == 0
    d.set("k", 1, 100)
    t = d.ttl("k")
    assert isinstance(t, float)
    assert 99 < t <= 100
    shift(40)
    assert 59 < d.ttl("k") <= 60
    shift(60.5)
    assert d.ttl("k") is None


def test_ttl_counts_down_with_sub_second_precision(d):
    """ttl reflects fractional seconds remaining."""
    d.set("k", 1, 2)
    shift(1.75)
    assert 0.15 < d.ttl("k") <= 0.25


def test_expire_sets_ttl(d):
    """expire(key, exptime > 0) gives an existing key a TTL and returns True."""
    d["k"] = 1
    assert d.expire("k", 10) is True
    assert 9 < d.ttl("k") <= 10
    shift(10.5)
    assert "k" not in d


def test_expire_replaces_ttl(d):
    """expire replaces an existing TTL, shorter or longer."""
    d.set("k", 1, 10)
    assert d.expire("k", 100) is True
    shift(50)
    assert d["k"] == 1
    assert d.expire("k", 1) is True
    shift(1.5)
    assert "k" not in d


@pytest.mark.parametrize("exptime", [0, -1, -0.5])
def test_expire_clears_ttl(d, exptime):
    """expire(key, exptime <= 0) removes the TTL and returns True."""
    d.set("k", 1, 10)
    assert d.expire("k", exptime) is True
    assert d.ttl("k") == 0
    shift(100)
    assert d["k"] == 1


def test_expire_missing_returns_false(d):
    """expire on a missing or expired key returns False and creates nothing."""
    assert d.expire("missing", 10) is False
    assert d.expire("missing", 0) is False
    assert "missing" not in d
    d.set("k", 1, 1)
    shift(2)
    assert d.expire("k", 100) is False
    assert d.expire("k", 0) is False
    assert "k" not in d


def test_expire_keeps_value(d):
    """expire changes only the TTL, not the value or its type."""
    d["k"] = b"bytes"
    d.expire("k", 10)
    assert d["k"] == b"bytes"
    d.expire("k", 0)
    assert type(d["k"]) is bytes


def test_expired_keys_are_invisible(d):
    """Expired keys vanish from get, in, len, get_keys, iteration and delete."""
    for i in range(10):
        d.set(f"short{i}", i, 5)
        d.set(f"long{i}", i, 500)
        d[f"forever{i}"] = i
    assert len(d) == 30
    shift(6)
    assert len(d) == 20
    live = {f"long{i}" for i in range(10)} | {f"forever{i}" for i in range(10)}
    assert set(d.get_keys()) == live
    assert set(d) == live
    assert len(d.get_keys(100)) == 20
    assert "short3" not in d
    assert d.get("short3") is None
    assert d.ttl("short3") is None
    assert d.delete("short3") is False
    with pytest.raises(KeyError):
        del d["short4"]
    assert d.pop("short5", "gone") == "gone"
    shift(500)
    assert set(d.get_keys()) == {f"forever{i}" for i in range(10)}
    assert len(d) == 10
    d.check()


def test_expired_key_can_be_set_again(d):
    """Setting an expired key stores a fresh value with its own TTL."""
    d.set("k", "old", 5)
    shift(6)
    d.set("k", "new")
    assert d["k"] == "new"
    assert d.ttl("k") == 0
    assert len(d) == 1


def test_ttl_shared_between_handles(d, name):
    """A TTL set through one handle governs the key for every handle."""
    g = shmdict.get(name)
    d.set("k", 1, 10)
    assert 9 < g.ttl("k") <= 10
    shift(11)
    assert "k" not in g
    g.close()


def test_forked_child_inherits_clock_shift(d):
    """A forked child shares the TTL clock, shifted the same way."""
    d.set("k", 1, 10)
    shift(5)

    def child() -> int:
        t = d.ttl("k")
        return 0 if 4 < t <= 5 else 1

    assert run_in_child(child).exitcode == 0


def test_full_dict_reclaims_expired_items(name):
    """When full, expired items are reclaimed before Full is raised."""
    with shmdict.new(name, MIN_SIZE) as sd:
        n = 0
        with pytest.raises(shmdict.Full):
            for n in range(100000):  # noqa: B007
                sd.set(f"ttl{n}", b"x" * 100, 10)
        assert n > 10
        with pytest.raises(shmdict.Full):
            sd.set(f"ttl{n}", b"y" * 100)  # the same item, without a TTL, still does not fit
        shift(11)
        for i in range(n):
            sd.set(f"new{i}", b"y" * 100)
        assert len(sd) == n
        assert all(k.startswith("new") for k in sd.get_keys())
        sd.check()


def test_reclaim_spares_live_items(name):
    """Reclaiming expired items never drops live ones."""
    with shmdict.new(name, MIN_SIZE) as sd:
        for i in range(10):
            sd[f"keep{i}"] = f"value{i}"
        with pytest.raises(shmdict.Full):
            for n in range(100000):
                sd.set(f"ttl{n}", b"x" * 64, 10 if n % 2 else 1000)
        shift(11)
        added = 0
        try:
            for i in range(100000):
                sd.set(f"new{i}", b"z" * 64)
                added += 1
        except shmdict.Full:
            pass
        assert added > 5
        for i in range(10):
            assert sd[f"keep{i}"] == f"value{i}"
        long_lived = [k for k in sd.get_keys() if k.startswith("ttl")]
        assert long_lived
        assert all(int(k[3:]) % 2 == 0 for k in long_lived)
        sd.check()


def test_incr_init_reclaims_expired_items(name):
    """A growing incr reclaims expired items before raising Full."""
    with shmdict.new(name, MIN_SIZE) as sd:
        with pytest.raises(shmdict.Full):
            for n in range(100000):
                sd.set(f"ttl{n}", b"x" * 40, 3)
        shift(4)
        for i in range(50):
            assert sd.incr(f"c{i}", 1, init=0) == 1
        sd.check()
