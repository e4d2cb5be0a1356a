"""incr semantics: types, overflow, init and TTLs."""

from __future__ import annotations

import pytest
from conftest import snapshot, typed

from shmdict import _lib

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def test_missing_key_is_keyerror(d):
    """incr on a missing key raises KeyError and creates nothing."""
    with pytest.raises(KeyError):
        d.incr("k")
    with pytest.raises(KeyError):
        d.incr("k", 5, 10)
    assert "k" not in d
    assert len(d) == 0


def test_default_delta_is_one(d):
    """incr without delta adds 1."""
    d["k"] = 41
    assert d.incr("k") == 42
    assert d["k"] == 42


def test_int_plus_int_stays_int(d):
    """int + int returns and stores an int."""
    d["k"] = 10
    r = d.incr("k", 5)
    assert r == 15 and type(r) is int
    assert type(d["k"]) is int
    assert d.incr("k", -20) == -5
    assert d["k"] == -5


def test_int_arithmetic_is_exact_beyond_2_53(d):
    """Counters are exact 64-bit integers, not doubles."""
    d["k"] = 2**53
    assert d.incr("k", 1) == 2**53 + 1
    assert d["k"] == 2**53 + 1
    d["k"] = INT64_MAX - 10
    assert d.incr("k", 10) == INT64_MAX
    d["k"] = INT64_MIN + 3
    assert d.incr("k", -3) == INT64_MIN


def test_float_value_gives_float(d):
    """float + int gives a float."""
    d["k"] = 1.5
    r = d.incr("k", 2)
    assert r == 3.5 and type(r) is float
    assert type(d["k"]) is float


def test_float_delta_promotes(d):
    """int + float gives a float, and the stored value becomes a float."""
    d["k"] = 1
    r = d.incr("k", 0.5)
    assert r == 1.5 and type(r) is float
    assert d["k"] == 1.5 and type(d["k"]) is float
    r = d.incr("k", 1)
    assert r == 2.5 and type(r) is float


def test_integral_float_stays_float(d):
    """A float that happens to be integral stays a float."""
    d["k"] = 1.0
    assert type(d.incr("k", 1)) is float
    assert d["k"] == 2.0 and type(d["k"]) is float
    d["j"] = 1
    assert type(d.incr("j", 1.0)) is float


@pytest.mark.parametrize("value", [True, False, "1", "x", b"1", b""], ids=repr)
def test_non_number_value_is_typeerror(d, value):
    """incr on a bool, str or bytes value raises TypeError and leaves it unchanged."""
    d["k"] = value
    with pytest.raises(TypeError):
        d.incr("k", 1)
    with pytest.raises(TypeError):
        d.incr("k", 1, init=0)
    assert snapshot(d) == typed({"k": value})


@pytest.mark.parametrize("delta", [True, False, "1", b"1", None, [1], 1j], ids=repr)
def test_non_number_delta_is_typeerror(d, delta):
    """A delta that is not an int or float (bool included) raises TypeError."""
    d["k"] = 1
    with pytest.raises(TypeError):
        d.incr("k", delta)
    with pytest.raises(TypeError):
        d.incr("new", delta, init=0)
    assert snapshot(d) == typed({"k": 1})


@pytest.mark.parametrize("init", [True, "0", b"0", [0]], ids=repr)
def test_non_number_init_is_typeerror(d, init):
    """An init that is not an int or float raises TypeError and creates nothing."""
    with pytest.raises(TypeError):
        d.incr("k", 1, init=init)
    assert "k" not in d


@pytest.mark.parametrize(
    ("start", "delta"),
    [
        (INT64_MAX, 1),
        (INT64_MAX, INT64_MAX),
        (INT64_MIN, -1),
        (INT64_MIN, INT64_MIN),
        (INT64_MAX - 5, 6),
        (INT64_MIN + 5, -6),
    ],
)
def test_int_overflow_is_overflowerror_and_unchanged(d, start, delta):
    """An int64 overflow raises OverflowError and leaves the value unchanged."""
    d.set("k", start, 100)
    ttl = d.ttl("k")
    with pytest.raises(OverflowError):
        d.incr("k", delta)
    with pytest.raises(OverflowError):
        d.incr("k", delta, 5)
    assert snapshot(d) == typed({"k": start})
    assert d.ttl("k") == pytest.approx(ttl, abs=1)


@pytest.mark.parametrize("delta", [2**63, -(2**63) - 1, 10**30])
def test_delta_outside_int64_is_overflowerror(d, delta):
    """An int delta outside signed 64 bits raises OverflowError."""
    d["k"] = 0
    with pytest.raises(OverflowError):
        d.incr("k", delta)
    assert snapshot(d) == typed({"k": 0})


@pytest.mark.parametrize("delta", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_delta_is_valueerror(d, delta):
    """A non-finite delta raises ValueError and changes nothing."""
    d["k"] = 1.5
    with pytest.raises(ValueError):
        d.incr("k", delta)
    with pytest.raises(ValueError):
        d.incr("new", delta, init=0)
    assert snapshot(d) == typed({"k": 1.5})


@pytest.mark.parametrize("exptime", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_exptime_is_valueerror(d, exptime):
    """A non-finite exptime or init_ttl raises ValueError and changes nothing."""
    d["k"] = 1
    with pytest.raises(ValueError):
        d.incr("k", 1, exptime)
    with pytest.raises(ValueError):
        d.incr("new", 1, init=0, init_ttl=exptime)
    with pytest.raises(ValueError):
        d.incr("new", 1, exptime, init=0)
    assert snapshot(d) == typed({"k": 1})
    assert d.ttl("k") == 0


def test_init_creates_missing_key(d):
    """With init, a missing key is created as init + delta and never expires by default."""
    assert d.incr("k", 5, init=10) == 15
    assert d["k"] == 15 and type(d["k"]) is int
    assert d.ttl("k") == 0
    assert d.incr("j", init=0) == 1


def test_init_is_ignored_for_existing_key(d):
    """init has no effect when the key exists."""
    d["k"] = 100
    assert d.incr("k", 1, init=0) == 101


def test_init_float_gives_float(d):
    """A float init or delta creates a float."""
    r = d.incr("a", 1, init=0.5)
    assert r == 1.5 and type(r) is float
    r = d.incr("b", 0.25, init=1)
    assert r == 1.25 and type(r) is float
    assert type(d["a"]) is float and type(d["b"]) is float


def test_init_overflow(d):
    """init + delta outside int64 raises OverflowError and creates nothing."""
    with pytest.raises(OverflowError):
        d.incr("k", 1, init=INT64_MAX)
    assert "k" not in d
    with pytest.raises(OverflowError):
        d.incr("k", 1, init=2**63)
    assert "k" not in d


def test_init_ttl_applies_on_creation(d):
    """init_ttl sets the TTL of a key incr creates."""
    d.incr("k", 1, init=0, init_ttl=100)
    assert 99 < d.ttl("k") <= 100
    _lib.clock_shift(101)
    assert "k" not in d


def test_init_ttl_ignored_for_existing_key(d):
    """init_ttl does not touch the TTL of an existing key."""
    d["k"] = 1
    d.incr("k", 1, init=0, init_ttl=100)
    assert d.ttl("k") == 0
    d.set("t", 1, 50)
    d.incr("t", 1, init=0, init_ttl=100)
    assert 49 < d.ttl("t") <= 50


def test_init_ttl_non_positive_means_never(d):
    """init_ttl <= 0 creates a key that never expires."""
    d.incr("a", 1, init=0, init_ttl=0)
    d.incr("b", 1, init=0, init_ttl=-5)
    assert d.ttl("a") == 0
    assert d.ttl("b") == 0


def test_exptime_wins_over_init_ttl_on_creation(d):
    """When both are given to a creating call, exptime sets the TTL."""
    d.incr("k", 1, 20, init=0, init_ttl=100)
    assert 19 < d.ttl("k") <= 20
    d.incr("j", 1, exptime=0, init=0, init_ttl=100)
    assert d.ttl("j") == 0
    d.incr("m", 1, exptime=-1, init=0, init_ttl=100)
    assert d.ttl("m") == 0


def test_exptime_replaces_ttl(d):
    """exptime > 0 replaces the existing TTL."""
    d.set("k", 1, 100)
    assert d.incr("k", 1, 10) == 2
    assert 9 < d.ttl("k") <= 10
    d["never"] = 1
    d.incr("never", 1, exptime=30)
    assert 29 < d.ttl("never") <= 30


@pytest.mark.parametrize("exptime", [0, -1, 0.0, -0.5])
def test_non_positive_exptime_clears_ttl(d, exptime):
    """exptime <= 0 removes the TTL."""
    d.set("k", 1, 100)
    d.incr("k", 1, exptime)
    assert d.ttl("k") == 0
    _lib.clock_shift(200)
    assert d["k"] == 2


def test_omitted_exptime_keeps_ttl(d):
    """Without exptime the TTL is kept, and the key still expires on time."""
    d.set("k", 1, 50)
    d.incr("k", 1)
    d.incr("k", 1, None)
    assert 49 < d.ttl("k") <= 50
    _lib.clock_shift(30)
    assert d.incr("k", 1) == 4
    assert 19 < d.ttl("k") <= 20
    _lib.clock_shift(21)
    assert "k" not in d
    with pytest.raises(KeyError):
        d.incr("k")


def test_incr_on_expired_key(d):
    """An expired key counts as missing for incr: KeyError, or re-created from init."""
    d.set("k", 100, 10)
    _lib.clock_shift(11)
    with pytest.raises(KeyError):
        d.incr("k", 1)
    assert d.incr("k", 1, init=0) == 1
    assert d.ttl("k") == 0
    d.set("j", 100, 10)
    _lib.clock_shift(11)
    assert d.incr("j", 1, init=0, init_ttl=5) == 1
    assert 4 < d.ttl("j") <= 5


def test_incr_keyword_arguments(d):
    """incr accepts delta and exptime by keyword and init/init_ttl only by keyword."""
    assert d.incr("k", delta=2, exptime=10, init=1, init_ttl=99) == 3
    assert 9 < d.ttl("k") <= 10
    with pytest.raises(TypeError):
        d.incr("k", 1, None, 0)  # init is keyword-only


def test_incr_returns_what_is_stored(d):
    """Every incr returns the value a following get sees."""
    d["k"] = 0
    total = 0
    for delta in [1, -3, 1000, 2**40, -(2**40), 7]:
        total += delta
        assert d.incr("k", delta) == total
        assert d["k"] == total


def test_incr_visible_to_other_handle(d, name):
    """An incr through one handle is seen by another."""
    import shmdict

    g = shmdict.get(name)
    d.incr("k", 1, init=0)
    assert g.incr("k", 1) == 2
    assert d["k"] == 2
    g.close()
