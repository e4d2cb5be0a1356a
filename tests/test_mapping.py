"""The MutableMapping contract, and the keyed operations other than incr and TTL."""

from __future__ import annotations

import math
from collections.abc import MutableMapping

import pytest
from conftest import MAX_KEY, snapshot, typed

import shmdict

# ---- keys ------------------------------------------------------------------------


@pytest.mark.parametrize("key", [b"k", 1, None, 1.5, ("k",), bytearray(b"k")])
def test_non_str_key_is_typeerror(d, key):
    """Keys other than str raise TypeError from every keyed operation."""
    d["other"] = 1
    for op in (
        lambda: d.set(key, 1),
        lambda: d.__setitem__(key, 1),
        lambda: d.get(key),
        lambda: d[key],
        lambda: d.delete(key),
        lambda: d.__delitem__(key),
        lambda: d.incr(key, 1, init=0),
        lambda: d.ttl(key),
        lambda: d.expire(key, 10),
    ):
        with pytest.raises(TypeError):
            op()
    assert snapshot(d) == typed({"other": 1})


def test_contains_non_str_key(d):
    """'in' with a non-str key raises TypeError or answers False, never crashes."""
    try:
        assert (b"k" in d) is False
    except TypeError:
        pass


def test_empty_key_is_valueerror(d):
    """The empty key raises ValueError from every keyed operation."""
    for op in (
        lambda: d.set("", 1),
        lambda: d.__setitem__("", 1),
        lambda: d.get(""),
        lambda: d[""],
        lambda: d.delete(""),
        lambda: d.incr("", 1, init=0),
        lambda: d.ttl(""),
        lambda: d.expire("", 1),
    ):
        with pytest.raises(ValueError):
            op()
    assert len(d) == 0


def test_longest_key_works(d):
    """A key of exactly SHMDICT_MAX_KEY UTF-8 bytes is stored and found."""
    key = "k" * MAX_KEY
    d[key] = 1
    assert d[key] == 1
    assert key in d
    assert d.get_keys() == [key]
    ukey = "é" * (MAX_KEY // 2) + "k"  # 2 bytes each + 1 = 65535 bytes
    assert len(ukey.encode()) == MAX_KEY
    d[ukey] = "u"
    assert d[ukey] == "u"
    assert d.delete(key)
    d.check()


@pytest.mark.parametrize("key", ["k" * (MAX_KEY + 1), "é" * (MAX_KEY // 2 + 1), "€" * 30000])
def test_oversized_key_is_valueerror(d, key):
    """A key over SHMDICT_MAX_KEY UTF-8 bytes raises ValueError and stores nothing."""
    assert len(key.encode()) > MAX_KEY
    with pytest.raises(ValueError):
        d.set(key, 1)
    with pytest.raises(ValueError):
        d[key] = 1
    with pytest.raises(ValueError):
        d.get(key)
    with pytest.raises(ValueError):
        d.incr(key, 1, init=0)
    assert len(d) == 0
    d.check()


def test_unencodable_key_never_crashes(d):
    """A key with a lone surrogate either round-trips or raises ValueError."""
    key = "a\ud800b"
    try:
        d[key] = 1
    except ValueError:
        assert len(d) == 0
    else:
        assert d[key] == 1


@pytest.mark.parametrize(
    "key", ["a", "é", "日本語", "🎉", "a\x00b", "\x00", " ", "key with spaces", "\n", "ключ", "k" * 300]
)
def test_unicode_keys_round_trip(d, key):
    """Any non-empty str works as a key, including NUL and non-ASCII."""
    d[key] = key
    assert d[key] == key
    assert key in d
    assert d.get_keys() == [key]
    assert list(d) == [key]


def test_keys_with_nul_are_distinct(d):
    """Keys differing only after a NUL byte are different keys."""
    d["a"] = 1
    d["a\x00"] = 2
    d["a\x00b"] = 3
    assert (d["a"], d["a\x00"], d["a\x00b"]) == (1, 2, 3)
    assert len(d) == 3


def test_keys_are_case_sensitive(d):
    """Keys compare exactly."""
    d["K"] = 1
    d["k"] = 2
    assert d["K"] == 1
    assert d["k"] == 2


# ---- values ------------------------------------------------------------------------

VALUES = [
    True,
    False,
    0,
    1,
    -1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    -(2**63),
    0.0,
    1.0,
    -2.5,
    1e308,
    5e-324,
    float("inf"),
    float("-inf"),
    "",
    "text",
    "ünïcødé 🎉",
    "a\x00b",
    b"",
    b"bytes",
    b"\x00\xff" * 100,
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_value_round_trips_with_its_type(d, value):
    """A stored value comes back equal and of the same type."""
    d["k"] = value
    got = d["k"]
    assert type(got) is type(value)
    assert got == value
    assert d.get("k") == value
    d.set("k2", value)
    assert type(d["k2"]) is type(value)


def test_nan_round_trips(d):
    """A NaN float is stored and comes back as NaN."""
    d["k"] = float("nan")
    got = d["k"]
    assert type(got) is float
    assert math.isnan(got)


def test_negative_zero_keeps_its_sign(d):
    """-0.0 comes back with its sign."""
    d["k"] = -0.0
    assert math.copysign(1.0, d["k"]) == -1.0


def test_bool_int_float_are_distinct(d):
    """True, 1 and 1.0 keep their own types."""
    d["b"] = True
    d["i"] = 1
    d["f"] = 1.0
    assert d["b"] is True
    assert type(d["i"]) is int
    assert type(d["f"]) is float
    d["b"] = False
    assert d["b"] is False


def test_str_and_bytes_are_distinct(d):
    """'x' and b'x' keep their own types."""
    d["s"] = "x"
    d["b"] = b"x"
    assert d["s"] == "x" and type(d["s"]) is str
    assert d["b"] == b"x" and type(d["b"]) is bytes


@pytest.mark.parametrize(
    "value",
    [None, [1], (1,), {"a": 1}, {1}, object(), bytearray(b"x"), memoryview(b"x"), 1j, Ellipsis],
    ids=repr,
)
def test_unsupported_value_is_typeerror_and_stores_nothing(d, value):
    """Values of other types raise TypeError and leave the dict unchanged."""
    d["k"] = "old"
    before = snapshot(d)
    with pytest.raises(TypeError):
        d.set("k", value)
    with pytest.raises(TypeError):
        d["k"] = value
    with pytest.raises(TypeError):
        d["new"] = value
    assert snapshot(d) == before
    d.check()


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64, 10**100, -(10**100)])
def test_int_outside_int64_is_overflowerror(d, value):
    """An int outside signed 64 bits raises OverflowError and leaves the dict unchanged."""
    d["k"] = 7
    with pytest.raises(OverflowError):
        d.set("k", value)
    with pytest.raises(OverflowError):
        d["new"] = value
    assert snapshot(d) == typed({"k": 7})


def test_large_value(d):
    """A 100 KB bytes value and a 100 KB str fit in a 1 MiB dict and round-trip."""
    big = bytes(range(256)) * 400
    d["big"] = big
    assert d["big"] == big
    text = "ü" * 50000
    d["text"] = text
    assert d["text"] == text
    d["big"] = b"small"
    assert d["big"] == b"small"
    d.check()


def test_values_grow_and_shrink(d):
    """Overwriting a key with larger and smaller values keeps the latest one."""
    for n in [0, 1, 10, 100, 1000, 10000, 100, 1, 50000, 0, 7]:
        d["k"] = b"x" * n
        assert d["k"] == b"x" * n
        d["s"] = "y" * n
        assert d["s"] == "y" * n
    assert len(d) == 2
    d.check()


def test_overwrite_changes_type(d):
    """Overwriting a key may change the type of its value."""
    for v in [1, "one", b"one", 1.0, True, 2, b"", ""]:
        d["k"] = v
        assert type(d["k"]) is type(v)
        assert d["k"] == v
    assert len(d) == 1


# ---- get / set / delete -------------------------------------------------------------


def test_get_default(d):
    """get returns None or the given default for a missing key."""
    assert d.get("missing") is None
    assert d.get("missing", 5) == 5
    sentinel = object()
    assert d.get("missing", sentinel) is sentinel
    assert d.get("missing", default=3) == 3
    d["k"] = 0
    assert d.get("k", 5) == 0
    d["f"] = False
    assert d.get("f", True) is False


def test_set_returns_none_and_stores(d):
    """set stores the value, replacing any earlier one."""
    assert d.set("k", 1) is None
    assert d["k"] == 1
    d.set("k", "two")
    assert d["k"] == "two"
    assert len(d) == 1


def test_delete_return_value(d):
    """delete returns True if the key existed, else False."""
    d["k"] = 1
    assert d.delete("k") is True
    assert d.delete("k") is False
    assert d.delete("never") is False
    assert "k" not in d
    assert len(d) == 0


def test_getitem_missing_is_keyerror(d):
    """d[k] raises KeyError naming the key."""
    with pytest.raises(KeyError) as info:
        d["missing"]
    assert info.value.args[0] == "missing"


def test_delitem(d):
    """del d[k] removes the key, or raises KeyError if missing."""
    d["k"] = 1
    del d["k"]
    assert "k" not in d
    with pytest.raises(KeyError):
        del d["k"]


def test_contains(d):
    """'in' is True only for stored keys."""
    assert "k" not in d
    d["k"] = 0
    assert "k" in d
    d["f"] = False
    assert "f" in d
    d["e"] = b""
    assert "e" in d
    del d["k"]
    assert "k" not in d


def test_len(d):
    """len counts stored keys."""
    assert len(d) == 0
    for i in range(100):
        d[f"k{i}"] = i
        assert len(d) == i + 1
    d["k0"] = "again"
    assert len(d) == 100
    for i in range(50):
        del d[f"k{i}"]
    assert len(d) == 50


def test_many_keys(d):
    """Thousands of keys are stored, found and deleted."""
    n = 3000
    for i in range(n):
        d[f"key-{i}"] = i
    assert len(d) == n
    for i in range(n):
        assert d[f"key-{i}"] == i
    assert sorted(d.get_keys()) == sorted(f"key-{i}" for i in range(n))
    for i in range(0, n, 2):
        assert d.delete(f"key-{i}")
    assert len(d) == n // 2
    for i in range(n):
        assert (f"key-{i}" in d) == (i % 2 == 1)
    d.check()


# ---- get_keys / flush_all / iteration ------------------------------------------------


def test_get_keys(d):
    """get_keys lists every live key once, and max_count caps the list."""
    keys = {f"k{i}" for i in range(20)}
    for k in keys:
        d[k] = 1
    got = d.get_keys()
    assert isinstance(got, list)
    assert len(got) == 20
    assert set(got) == keys
    assert set(d.get_keys(0)) == keys
    capped = d.get_keys(5)
    assert len(capped) == 5
    assert set(capped) <= keys
    assert len(set(capped)) == 5
    assert d.get_keys(1)[0] in keys
    assert set(d.get_keys(20)) == keys
    assert set(d.get_keys(1000)) == keys
    assert set(d.get_keys(max_count=3)) <= keys
    assert set(d.get_keys(-1)) == keys


def test_get_keys_empty(d):
    """get_keys on an empty dict is an empty list."""
    assert d.get_keys() == []
    assert d.get_keys(5) == []


def test_flush_all(d):
    """flush_all removes every item and the dict stays usable."""
    for i in range(500):
        d[f"k{i}"] = "v" * i
    assert d.flush_all() is None
    assert len(d) == 0
    assert d.get_keys() == []
    assert "k1" not in d
    d.check()
    d["k1"] = 1
    assert d["k1"] == 1
    assert len(d) == 1
    d.flush_all()
    d.flush_all()
    assert len(d) == 0


def test_flush_all_is_seen_by_other_handles(d, name):
    """flush_all through one handle empties the dict for every handle."""
    g = shmdict.get(name)
    d["k"] = 1
    g.flush_all()
    assert "k" not in d
    g.close()


def test_iteration_is_over_a_snapshot(d):
    """iter(d) yields the keys present when iteration starts, despite later changes."""
    keys = {f"k{i}" for i in range(50)}
    for k in keys:
        d[k] = 1
    it = iter(d)
    first = next(it)
    d["added"] = 1
    rest = list(it)
    assert {first, *rest} == keys
    assert len(rest) == 49


def test_delete_while_iterating(d):
    """Deleting every key while iterating works and empties the dict."""
    for i in range(100):
        d[f"k{i}"] = i
    seen = []
    for k in d:
        seen.append(k)
        del d[k]
    assert len(seen) == 100
    assert len(d) == 0


# ---- MutableMapping mixins ----------------------------------------------------------


def test_is_a_mutable_mapping(d):
    """SharedDict registers as a MutableMapping."""
    assert isinstance(d, MutableMapping)


def test_keys_items_values(d):
    """keys, items and values views match the contents."""
    data = {"a": 1, "b": "two", "c": b"3", "d": 4.0, "e": True}
    for k, v in data.items():
        d[k] = v
    assert set(d.keys()) == set(data)
    assert dict(d.items()) == data
    assert sorted(map(repr, d.values())) == sorted(map(repr, data.values()))
    assert "a" in d.keys()
    assert ("b", "two") in d.items()
    assert dict(d) == data
    assert d == data
    assert d != {"a": 1}


def test_pop(d):
    """pop returns and removes a value, or the default, or raises KeyError."""
    d["k"] = "v"
    assert d.pop("k") == "v"
    assert "k" not in d
    with pytest.raises(KeyError):
        d.pop("k")
    assert d.pop("k", 7) == 7
    assert d.pop("k", None) is None


def test_popitem(d):
    """popitem removes and returns some pair, then KeyError when empty."""
    d["a"] = 1
    d["b"] = 2
    got = dict([d.popitem(), d.popitem()])
    assert got == {"a": 1, "b": 2}
    assert len(d) == 0
    with pytest.raises(KeyError):
        d.popitem()


def test_setdefault(d):
    """setdefault stores the default only when the key is missing."""
    assert d.setdefault("k", 1) == 1
    assert d.setdefault("k", 2) == 1
    assert d["k"] == 1
    with pytest.raises(TypeError):
        d.setdefault("n")  # None is not a storable value
    assert "n" not in d


def test_update(d):
    """update accepts a mapping, pairs and keyword arguments."""
    d.update({"a": 1})
    d.update([("b", 2)])
    d.update(c=3)
    d.update({"a": 10}, e=5)
    assert dict(d) == {"a": 10, "b": 2, "c": 3, "e": 5}


def test_clear(d):
    """clear empties the dict."""
    for i in range(30):
        d[f"k{i}"] = i
    d.clear()
    assert len(d) == 0
    assert list(d) == []


def test_two_handles_see_the_same_data(d, name):
    """Writes through one handle are visible through another at once."""
    g = shmdict.get(name)
    d["a"] = 1
    assert g["a"] == 1
    g["a"] = "changed"
    assert d["a"] == "changed"
    del g["a"]
    assert "a" not in d
    g.close()


def test_failing_calls_change_nothing(d):
    """Every rejected call leaves the contents exactly as they were."""
    d["i"] = 5
    d["s"] = "text"
    d.set("t", b"ttl", 100)
    before = snapshot(d)
    ttl_before = d.ttl("t")
    bad_calls = [
        (TypeError, lambda: d.set("i", None)),
        (TypeError, lambda: d.set("new", [1])),
        (OverflowError, lambda: d.set("i", 2**64)),
        (ValueError, lambda: d.set("i", 1, float("nan"))),
        (ValueError, lambda: d.set("new", 1, float("inf"))),
        (ValueError, lambda: d.set("", 1)),
        (TypeError, lambda: d.set(b"i", 1)),
        (TypeError, lambda: d.incr("s", 1)),
        (KeyError, lambda: d.incr("missing", 1)),
        (ValueError, lambda: d.incr("i", float("nan"))),
        (ValueError, lambda: d.incr("i", 1, float("inf"))),
        (OverflowError, lambda: d.incr("i", 2**63 - 1)),
        (ValueError, lambda: d.expire("i", float("nan"))),
        (KeyError, lambda: d["missing"]),
        (KeyError, lambda: d.__delitem__("missing")),
        (shmdict.Full, lambda: d.set("huge", b"x" * (4 * 2**20))),
        (shmdict.Full, lambda: d.set("i", b"x" * (4 * 2**20))),
    ]
    for exc, call in bad_calls:
        with pytest.raises(exc):
            call()
        assert snapshot(d) == before
    assert d.ttl("i") == 0
    assert d.ttl("t") == pytest.approx(ttl_before, abs=1)
    d.check()


def test_check_passes_on_fresh_and_used_dict(d):
    """check returns None on a consistent dict."""
    assert d.check() is None
    for i in range(200):
        d[f"k{i}"] = b"x" * i
    for i in range(0, 200, 3):
        del d[f"k{i}"]
    assert d.check() is None
