"""The hot methods' edge cases, on whichever binding is in use (the C type, or
the pure-cffi base with SHMDICT_PURE=1): ints at the ends of int64 (including
the range an earlier cffi fast path reserved for codes), incr fallbacks,
bad keys, closed handles, and a kill inside incr.
"""

from __future__ import annotations

import signal

import pytest
from conftest import call_with_timeout, run_in_child

import shmdict
from shmdict import _lib
from shmdict._lib import INT64_MAX, INT64_MIN

CODES = 64  # an earlier fast path reserved [INT64_MIN, INT64_MIN + 64) for codes
RESERVED = [INT64_MIN, INT64_MIN + 1, INT64_MIN + 5, INT64_MIN + 33, INT64_MIN + CODES - 1]
EDGE = [INT64_MIN + CODES, -1, 0, 1, INT64_MAX]


@pytest.mark.parametrize("v", RESERVED + EDGE)
def test_ints_round_trip_including_the_reserved_range(d: shmdict.SharedDict, v: int) -> None:
    """Every int64, reserved codes included, reads back exactly through get, [] and in."""
    d["k"] = v
    assert d.get("k") == v and type(d.get("k")) is int
    assert d["k"] == v
    assert "k" in d


@pytest.mark.parametrize("v", [True, False, 1.5, "txt", b"\x00bin", "", b""])
def test_other_types_take_the_general_path(d: shmdict.SharedDict, v: object) -> None:
    """Non-int values come back with their type through get, [] and in."""
    d["k"] = v  # type: ignore[assignment]
    assert d.get("k") == v and type(d.get("k")) is type(v)
    assert d["k"] == v and type(d["k"]) is type(v)
    assert "k" in d


def test_missing_keys(d: shmdict.SharedDict) -> None:
    """A missing key: default, KeyError, False, and no change from incr."""
    assert d.get("nope") is None
    assert d.get("nope", 7) == 7
    with pytest.raises(KeyError):
        d["nope"]
    assert "nope" not in d
    with pytest.raises(KeyError):
        d.incr("nope")
    assert len(d) == 0


def test_incr_falls_back_exactly_once(d: shmdict.SharedDict) -> None:
    """A fallback never applies an increment twice: floats, reserved results, overflow."""
    d["f"] = 1.5
    assert d.incr("f") == 2.5 and d["f"] == 2.5
    d["r"] = INT64_MIN + CODES
    assert d.incr("r", -1) == INT64_MIN + CODES - 1  # lands in the reserved range
    assert d["r"] == INT64_MIN + CODES - 1
    assert d.incr("r", 1) == INT64_MIN + CODES  # and leaves it
    d["o"] = INT64_MAX
    with pytest.raises(OverflowError):
        d.incr("o")
    assert d["o"] == INT64_MAX
    d["s"] = "x"
    with pytest.raises(TypeError):
        d.incr("s")
    assert d.incr("new", 5, init=10) == 15
    with pytest.raises(OverflowError):
        d.incr("new", 2**64)
    assert d["new"] == 15


def test_incr_keeps_ttl_and_bumps_nothing_else(d: shmdict.SharedDict) -> None:
    """The fast incr keeps a TTL, and an expired key counts as missing."""
    d.set("t", 1, exptime=100)
    assert d.incr("t") == 2
    ttl = d.ttl("t")
    assert ttl is not None and 90 < ttl <= 100
    d.set("e", 1, exptime=1)
    _lib.clock_shift(2)
    with pytest.raises(KeyError):
        d.incr("e")
    assert d.incr("e", init=0) == 1
    d.check()


@pytest.mark.parametrize("key", [b"k", 1, None, ("k",)])
def test_bad_key_types(d: shmdict.SharedDict, key: object) -> None:
    """Non-str keys: TypeError from every hot method, False from `in`."""
    for call in (d.get, d.__getitem__, d.incr, d.delete, lambda k: d.set(k, 1), lambda k: d.__setitem__(k, "v")):
        with pytest.raises(TypeError):
            call(key)
    assert key not in d  # type: ignore[operator]


@pytest.mark.parametrize("key", ["", "x" * 65536])
def test_bad_key_lengths(d: shmdict.SharedDict, key: str) -> None:
    """Empty or oversized keys: ValueError from every hot method, nothing stored."""
    for call in (d.get, d.__getitem__, d.incr, d.delete, lambda k: d.set(k, 1), lambda k: d.__setitem__(k, b"v")):
        with pytest.raises(ValueError):
            call(key)
    assert len(d) == 0


def test_out_of_range_int_values(d: shmdict.SharedDict) -> None:
    """An int beyond 64 bits raises OverflowError from set and [] = and stores nothing."""
    for v in (2**63, -(2**63) - 1):
        with pytest.raises(OverflowError):
            d["k"] = v
        with pytest.raises(OverflowError):
            d.set("k", v)
    assert "k" not in d


def test_closed_handle(name: str) -> None:
    """Every hot method on a closed handle raises ValueError (no crash on the NULL handle)."""
    sd = shmdict.new(name, "1m")
    sd["k"] = 1
    sd.close()
    for call in (sd.get, sd.__getitem__, sd.__contains__, sd.incr, sd.delete, lambda k: sd.set(k, 1),
                 lambda k: sd.__setitem__(k, "v")):
        with pytest.raises(ValueError):
            call("k")


def _crash_in_fast_incr(name: str, point: str) -> None:
    sd = shmdict.get(name)
    _lib.fault_arm(point)
    sd.incr("c")


@pytest.mark.parametrize("point", ["incr.in_place"])
def test_fast_incr_is_all_or_nothing_when_killed(name: str, point: str) -> None:
    """A process killed inside the fast incr leaves the counter at n or n + 1, never torn."""
    sd = shmdict.new(name, "1m")
    try:
        sd.set("c", 41, exptime=100)
        res = run_in_child(_crash_in_fast_incr, name, point)
        assert res.signal == signal.SIGKILL
        v = call_with_timeout(lambda: sd.get("c"))
        assert v in (41, 42)
        sd.check()
        ttl = sd.ttl("c")
        assert ttl is not None and ttl > 90
        assert sd.incr("c") == v + 1
    finally:
        sd.close()
