"""The SharedDict contract (keys, values, operations, concurrency, errors), run against both engines.

Every test here takes the parametrized ``d`` fixture: a local shared-memory
dict from ``shmdict.connect("shm://...")``, a Redis dict from
``shmdict.connect("unix://...?prefix=...")``, the same on a 3-master Redis
Cluster (``redis+cluster://``) and behind Sentinel (``redis+sentinel://``),
each server started by the tests (tests/redis_fixture.py). A behaviour that
differs between the engines does not belong here; it goes in the README's
"Scaling out" section and in an engine's own tests.
"""

from __future__ import annotations

import enum
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_fixture import redis_available, redis_cluster, redis_sentinel, redis_server  # noqa: F401

import shmdict

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
MAX_KEY = 65535


@pytest.fixture(params=["shm", "redis", "cluster", "sentinel"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# The session fixture that serves each Redis topology.
SERVERS = {"redis": "redis_server", "cluster": "redis_cluster", "sentinel": "redis_sentinel"}


@pytest.fixture
def d(engine: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh, empty dict on the engine under test, removed afterwards."""
    if engine == "shm":
        directory = tempfile.mkdtemp(prefix="shmdict-contract-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        monkeypatch.setenv("SHMDICT_DIR", directory)
        name = f"c{uuid.uuid4().hex[:12]}"
        sd = shmdict.connect(f"shm://{name}?size=1m")
        try:
            yield sd
        finally:
            sd.close()
            shutil.rmtree(directory, ignore_errors=True)
    else:
        server = request.getfixturevalue(SERVERS[engine])
        prefix = f"c{uuid.uuid4().hex[:12]}:"
        rd = shmdict.connect(server.url(prefix))
        try:
            yield rd
        finally:
            rd.close()
            with shmdict.connect(server.url(prefix)) as c:
                c.flush_all()


def snapshot(d: Any) -> dict[str, tuple[type, Any]]:
    return {k: (type(v), v) for k in d.get_keys() for v in [d.get(k)]}


class Color(enum.IntEnum):
    RED = 1


VALUES = [
    True,
    False,
    0,
    1,
    -1,
    INT64_MAX,
    INT64_MIN,
    2**53 + 1,
    0.0,
    -0.0,
    1.0,
    0.1,
    -2.5e-300,
    1.7976931348623157e308,
    math.inf,
    -math.inf,
    "",
    "text",
    "héllo ☃ \x00 nul",
    "123",
    "f:1",
    b"",
    b"\x00\xff\x01",
    b"123",
    b"T",
]


# ---- §3 keys and values ----------------------------------------------------------


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_value_round_trips_with_its_type(d, value):
    """A stored value comes back equal and with the type it was stored with."""
    d.set("k", value)
    got = d.get("k")
    assert type(got) is type(value)
    assert got == value
    if isinstance(value, float):
        assert math.copysign(1, got) == math.copysign(1, value)


def test_nan_round_trips(d):
    """NaN is a float value like any other."""
    d["k"] = math.nan
    assert math.isnan(d["k"])


def test_subclass_is_stored_as_base_type(d):
    """An IntEnum comes back a plain int; a str subclass a plain str."""

    class S(str):
        pass

    d["e"] = Color.RED
    d["s"] = S("x")
    assert type(d["e"]) is int and d["e"] == 1
    assert type(d["s"]) is str and d["s"] == "x"


@given(st.one_of(st.booleans(), st.integers(INT64_MIN, INT64_MAX), st.floats(allow_nan=False), st.text(), st.binary()))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_value_round_trips(d, value):
    """Every representable value round-trips exactly, type included."""
    d["k"] = value
    got = d["k"]
    assert type(got) is type(value) and got == value


@pytest.mark.parametrize("value", [None, [1], {"a": 1}, (1,), object(), 1j, bytearray(b"x")], ids=repr)
def test_unsupported_value_type_is_typeerror(d, value):
    """A value of another type raises TypeError and stores nothing."""
    d["k"] = 1
    with pytest.raises(TypeError):
        d.set("k", value)
    with pytest.raises(TypeError):
        d.set("new", value)
    assert snapshot(d) == {"k": (int, 1)}


@pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1, 10**30], ids=repr)
def test_int_out_of_range_is_overflowerror(d, value):
    """An int beyond 64 bits raises OverflowError and stores nothing."""
    with pytest.raises(OverflowError):
        d.set("k", value)
    assert "k" not in d


@pytest.mark.parametrize("key", [1, b"k", None, 1.5, ("k",)], ids=repr)
def test_non_str_key_is_typeerror(d, key):
    """Keys must be str."""
    with pytest.raises(TypeError):
        d.set(key, 1)
    with pytest.raises(TypeError):
        d.get(key)
    with pytest.raises(TypeError):
        d.incr(key, init=0)
    assert key not in d


def test_empty_and_oversized_keys_are_valueerror(d):
    """An empty key, or one over 65535 bytes of UTF-8, raises ValueError."""
    for key in ["", "x" * (MAX_KEY + 1), "é" * (MAX_KEY // 2 + 1)]:
        with pytest.raises(ValueError):
            d.set(key, 1)
        with pytest.raises(ValueError):
            d.get(key)
    assert len(d) == 0


def test_longest_key_works(d):
    """A key of exactly 65535 bytes is valid."""
    key = "k" * MAX_KEY
    d[key] = 1
    assert d[key] == 1 and d.get_keys() == [key]


def test_unicode_keys(d):
    """Keys are any non-empty str, glob characters and all."""
    keys = ["é", "☃", "a b", "*", "[x]", "?", "\\", "\x00", "a:b"]
    for i, k in enumerate(keys):
        d[k] = i
    assert sorted(d.get_keys()) == sorted(keys)
    assert {k: d[k] for k in keys} == {k: i for i, k in enumerate(keys)}


# ---- §4 operations ------------------------------------------------------------------


def test_set_get_delete(d):
    """set stores, get reads or returns the default, delete reports existence."""
    assert d.get("k") is None
    assert d.get("k", "dflt") == "dflt"
    d.set("k", "v")
    assert d.get("k") == "v"
    assert d.delete("k") is True
    assert d.delete("k") is False
    assert d.get("k", 0) == 0


def test_set_replaces_value_and_type(d):
    """A second set replaces the value, its type, and its TTL."""
    d.set("k", 1, 100)
    d.set("k", "one")
    assert d["k"] == "one"
    assert d.ttl("k") == 0


def test_mapping_protocol(d):
    """d[k], d[k] = v, del d[k], in, len, iter behave as on a dict."""
    with pytest.raises(KeyError):
        d["missing"]
    with pytest.raises(KeyError):
        del d["missing"]
    d["a"] = 1
    d["b"] = 2
    assert "a" in d and "z" not in d and 5 not in d
    assert len(d) == 2
    assert sorted(d) == ["a", "b"]
    assert dict(d.items()) == {"a": 1, "b": 2}
    del d["a"]
    assert "a" not in d and len(d) == 1
    d.update({"x": 1.5, "y": b"y"})
    assert d.pop("x") == 1.5
    assert d.pop("x", "gone") == "gone"
    with pytest.raises(KeyError):
        d.pop("x")
    assert d.setdefault("y", b"other") == b"y"
    assert d.setdefault("z", 7) == 7 and d["z"] == 7
    d.clear()
    assert len(d) == 0


def test_get_keys_max_count(d):
    """get_keys lists every live key; max_count > 0 caps the list."""
    for i in range(50):
        d[f"k{i}"] = i
    assert sorted(d.get_keys()) == sorted(f"k{i}" for i in range(50))
    assert sorted(d.get_keys(0)) == sorted(d.get_keys(-1)) == sorted(d.get_keys())
    capped = d.get_keys(10)
    assert len(capped) == 10 and set(capped) <= set(d.get_keys())
    with pytest.raises(TypeError):
        d.get_keys("3")


def test_flush_all(d):
    """flush_all removes every item."""
    for i in range(20):
        d.set(f"k{i}", i, 100 if i % 2 else 0)
    d.flush_all()
    assert len(d) == 0 and d.get_keys() == [] and d.get("k1") is None
    d["after"] = 1
    assert d.get_keys() == ["after"]


# ---- TTL ----------------------------------------------------------------------------------


def test_ttl_values(d):
    """ttl is None if missing, 0 if it never expires, else the remaining seconds."""
    assert d.ttl("k") is None
    d["k"] = 1
    assert d.ttl("k") == 0
    d.set("t", 1, 100)
    t = d.ttl("t")
    assert isinstance(t, float) and 99 < t <= 100


def test_exptime_expires(d):
    """An item set with exptime is gone after it."""
    d.set("k", "v", 0.05)
    d.set("keep", "v")
    assert d["k"] == "v"
    time.sleep(0.15)
    assert d.get("k") is None and "k" not in d
    assert d.ttl("k") is None
    assert d.get_keys() == ["keep"] and len(d) == 1
    assert d.delete("k") is False


@pytest.mark.parametrize("exptime", [0, -1, -0.5])
def test_non_positive_exptime_never_expires(d, exptime):
    """exptime <= 0 means never."""
    d.set("k", 1, exptime)
    assert d.ttl("k") == 0


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_exptime_is_valueerror(d, bad):
    """A non-finite exptime raises ValueError and stores nothing."""
    with pytest.raises(ValueError):
        d.set("k", 1, bad)
    d["j"] = 1
    with pytest.raises(ValueError):
        d.expire("j", bad)
    with pytest.raises(ValueError):
        d.incr("j", 1, bad)
    assert snapshot(d) == {"j": (int, 1)} and d.ttl("j") == 0


def test_expire(d):
    """expire sets or clears a TTL and says whether the key exists."""
    assert d.expire("k", 10) is False
    d["k"] = 1
    assert d.expire("k", 10) is True
    assert 9 < d.ttl("k") <= 10
    assert d.expire("k", 0) is True
    assert d.ttl("k") == 0
    assert d.expire("k", 0) is True  # clearing an absent TTL still reports the key exists
    assert d.expire("k", 0.05) is True
    time.sleep(0.15)
    assert "k" not in d and d.expire("k", 10) is False


# ---- incr ---------------------------------------------------------------------------------


def test_incr_missing_key(d):
    """incr on a missing key is KeyError and creates nothing."""
    with pytest.raises(KeyError):
        d.incr("k")
    with pytest.raises(KeyError):
        d.incr("k", 5, 10)
    assert len(d) == 0


def test_incr_int(d):
    """int + int stays int, exact beyond 2**53, default delta 1."""
    d["k"] = 41
    r = d.incr("k")
    assert r == 42 and type(r) is int and type(d["k"]) is int
    assert d.incr("k", -50) == -8
    d["k"] = 2**53
    assert d.incr("k") == 2**53 + 1 == d["k"]
    d["k"] = INT64_MAX - 10
    assert d.incr("k", 10) == INT64_MAX
    d["k"] = INT64_MIN + 3
    assert d.incr("k", -3) == INT64_MIN


@pytest.mark.parametrize(("start", "delta"), [(INT64_MAX, 1), (INT64_MIN, -1), (1, INT64_MAX), (-2, INT64_MIN)])
def test_incr_overflow_leaves_value(d, start, delta):
    """int overflow raises OverflowError and leaves value and TTL unchanged."""
    d.set("k", start, 100)
    with pytest.raises(OverflowError):
        d.incr("k", delta, 5)
    assert d["k"] == start and type(d["k"]) is int
    assert d.ttl("k") > 99


def test_incr_float_promotion(d):
    """A float on either side gives a float, stored as a float, even if integral."""
    d["i"] = 1
    r = d.incr("i", 0.5)
    assert r == 1.5 and type(r) is float and type(d["i"]) is float
    d["f"] = 1.0
    r = d.incr("f", 1)
    assert r == 2.0 and type(r) is float and type(d["f"]) is float
    d["g"] = 0.1
    assert d.incr("g", 0.2) == 0.1 + 0.2 == d["g"]
    d["big"] = 2**60
    assert d.incr("big", 1.0) == float(2**60) + 1.0
    d["h"] = 1e308
    with pytest.raises(OverflowError):  # a float that overflows is refused, as an int is
        d.incr("h", 1e308)
    assert d["h"] == 1e308
    with pytest.raises(OverflowError):
        d.incr("new-h", -1e308, init=-1e308)
    assert "new-h" not in d


@pytest.mark.parametrize("value", [True, False, "1", "x", b"1", b""], ids=repr)
def test_incr_non_number_is_typeerror(d, value):
    """incr on bool/str/bytes raises TypeError and changes nothing."""
    d["k"] = value
    with pytest.raises(TypeError):
        d.incr("k")
    with pytest.raises(TypeError):
        d.incr("k", init=0)
    assert d["k"] == value and type(d["k"]) is type(value)


@pytest.mark.parametrize("delta", [True, "1", None, b"1", [1]], ids=repr)
def test_incr_bad_delta_is_typeerror(d, delta):
    """delta must be an int or float; bool is not."""
    d["k"] = 1
    with pytest.raises(TypeError):
        d.incr("k", delta)
    if delta is not None:  # init=None means "no init"
        with pytest.raises(TypeError):
            d.incr("n", 1, init=delta)
    assert snapshot(d) == {"k": (int, 1)}


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_incr_non_finite_is_valueerror(d, bad):
    """Non-finite delta, init or init_ttl raise ValueError."""
    d["k"] = 1
    with pytest.raises(ValueError):
        d.incr("k", bad)
    with pytest.raises(ValueError):
        d.incr("n", 1, init=bad)
    with pytest.raises(ValueError):
        d.incr("n", 1, init=0, init_ttl=bad)
    assert snapshot(d) == {"k": (int, 1)}


def test_incr_init(d):
    """init creates a missing key as init + delta with init_ttl; an existing key ignores both."""
    assert d.incr("k", 5, init=10) == 15
    assert d.ttl("k") == 0
    assert d.incr("k", 1, init=100, init_ttl=5) == 16
    assert d.ttl("k") == 0  # init_ttl applies only on creation
    r = d.incr("w", 1, init=0, init_ttl=60)
    assert r == 1 and 59 < d.ttl("w") <= 60
    assert d.incr("w", 1, init=0, init_ttl=1) == 2 and d.ttl("w") > 59
    r = d.incr("f", 1, init=0.5)
    assert r == 1.5 and type(r) is float
    r = d.incr("g", 0.5, init=1)
    assert r == 1.5 and type(r) is float
    with pytest.raises(OverflowError):
        d.incr("o", 1, init=INT64_MAX)
    assert "o" not in d


def test_incr_init_ttl_expires(d):
    """A key created by incr with init_ttl expires, then starts again at init."""
    assert d.incr("w", 1, init=0, init_ttl=0.05) == 1
    assert d.incr("w", 1, init=0, init_ttl=0.05) == 2
    time.sleep(0.15)
    assert d.incr("w", 1, init=0, init_ttl=0.05) == 1


def test_incr_exptime(d):
    """exptime given replaces the TTL (<= 0 clears it); omitted keeps it; it wins over init_ttl."""
    d.set("k", 1, 100)
    d.incr("k")
    assert 99 < d.ttl("k") <= 100
    d.incr("k", 1, 10)
    assert 9 < d.ttl("k") <= 10
    d.incr("k", 1, 0)
    assert d.ttl("k") == 0
    d.incr("k", 1.5, 20)
    assert 19 < d.ttl("k") <= 20
    d.incr("k", 1.5)
    assert 19 < d.ttl("k") <= 20
    d.incr("n", 1, 30, init=0, init_ttl=5)
    assert 29 < d.ttl("n") <= 30
    d.incr("m", 1, 0, init=0, init_ttl=5)
    assert d.ttl("m") == 0


# ---- §2 close, §6 exceptions ------------------------------------------------------------------


def test_closed_handle(d):
    """Every operation on a closed handle raises ValueError; close is idempotent."""
    d["k"] = 1
    d.close()
    d.close()
    assert d.closed
    for op in (lambda: d.get("k"), lambda: d.set("k", 1), lambda: d.incr("k"), lambda: len(d), lambda: d.get_keys(),
               lambda: d.resize("2m")):
        with pytest.raises(ValueError):
            op()


def test_context_manager(d):
    """A dict is a context manager that closes on exit."""
    with d as same:
        assert same is d
        d["k"] = 1
    assert d.closed


def test_exception_tree():
    """The library's exceptions subclass both Error and their builtin."""
    assert issubclass(shmdict.Full, shmdict.Error) and issubclass(shmdict.Full, MemoryError)
    assert issubclass(shmdict.CorruptError, shmdict.Error) and issubclass(shmdict.CorruptError, ValueError)
    assert issubclass(shmdict.Unavailable, shmdict.Error) and issubclass(shmdict.Unavailable, ConnectionError)


def test_attributes(d, engine):
    """name, size, owner and closed exist on both engines."""
    assert isinstance(d.name, str) and isinstance(d.size, int)
    assert d.owner is False  # connect() never returns an owner
    assert d.closed is False


def test_resize_keeps_every_item(d):
    """resize to a larger size keeps every item and its TTL; a malformed size is a ValueError (a wrong type
    a TypeError) and changes nothing. What size reads afterwards is the engine's (the new size on shm://,
    0 on Redis)."""
    d.set_many([("a", 1), ("b", "two"), ("c", b"\x00")])
    d.set("t", 1.5, 100)
    before = snapshot(d)
    for bad in ("12q", "", 1):
        with pytest.raises(ValueError):
            d.resize(bad)
    with pytest.raises(TypeError):
        d.resize(2.5)
    d.resize("2m")
    d.resize(2 << 20)  # the same size: nothing to do
    assert snapshot(d) == before and 99 < d.ttl("t") <= 100
    assert d.size in (0, 2 << 20)


# ---- a random walk against a model ----------------------------------------------------------


OPS = st.lists(
    st.tuples(
        st.sampled_from(["set", "get", "delete", "incr", "incr_init", "pop", "setdefault", "expire0", "len"]),
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.integers(-5, 5), st.floats(-5, 5), st.booleans(), st.text(max_size=3), st.binary(max_size=3)),
    ),
    max_size=30,
)


@given(OPS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_matches_a_dict_model(d, ops):
    """Any sequence of operations leaves both engines exactly where a dict model is."""
    d.flush_all()
    model: dict[str, Any] = {}
    for op, k, v in ops:
        if op == "set":
            d.set(k, v)
            model[k] = v
        elif op == "get":
            got = d.get(k)
            assert (type(got), got) == (type(model.get(k)), model.get(k))
        elif op == "delete":
            assert d.delete(k) is (k in model)
            model.pop(k, None)
        elif op in ("incr", "incr_init"):
            delta = v if isinstance(v, (int, float)) and not isinstance(v, bool) else 1
            cur = model.get(k)
            try:
                r = d.incr(k, delta, init=0) if op == "incr_init" else d.incr(k, delta)
            except KeyError:
                assert cur is None and op == "incr"
                continue
            except TypeError:
                assert isinstance(cur, (bool, str, bytes))
                continue
            expect = (0 if cur is None else cur) + delta
            assert (type(r), r) == (type(expect), expect)
            model[k] = expect
        elif op == "pop":
            assert d.pop(k, None) == model.pop(k, None)
        elif op == "setdefault":
            got = d.setdefault(k, v)
            expect = model.setdefault(k, v)
            assert (type(got), got) == (type(expect), expect)
        elif op == "expire0":
            assert d.expire(k, 0) is (k in model)
        else:
            assert len(d) == len(model)
    assert snapshot(d) == {k: (type(v), v) for k, v in model.items()}


# ---- the other operations: both engines have every one (tests/test_api.py) ------------------


def test_add_replace_contract(d):
    """add stores only if absent (expired counts as absent), replace only if present."""
    assert d.add("k", 1) is True and d.add("k", 2) is False and d["k"] == 1
    assert d.replace("k", "x", 10) is True and d["k"] == "x" and 9 < d.ttl("k") <= 10
    assert d.replace("nope", 1) is False and "nope" not in d
    d.set("e", 1, 0.05)
    time.sleep(0.15)
    assert d.replace("e", 2) is False and d.add("e", 3) is True and d["e"] == 3
    with pytest.raises(TypeError):
        d.add("n", None)
    with pytest.raises(OverflowError):
        d.replace("k", 2**64)
    assert d["k"] == "x"


def test_cas_contract(d):
    """cas matches type and value; None means absent; NaN matches nothing."""
    assert d.cas("k", 1, 2) is False and "k" not in d
    assert d.cas("k", None, 1) is True and d.cas("k", None, 5) is False and d["k"] == 1
    assert d.cas("k", 1.0, 2) is False and d.cas("k", True, 2) is False
    assert d.cas("k", 1, 2, 10) is True and d["k"] == 2 and 9 < d.ttl("k") <= 10
    d["f"] = 0.1
    d.incr("f", 0.2)
    assert d.cas("f", 0.1 + 0.2, "done") is True and d["f"] == "done"
    d["nan"] = math.nan
    assert d.cas("nan", math.nan, 1) is False
    d["z"] = -0.0
    assert d.cas("z", 0.0, "zero") is True  # floats compare as numbers
    d.rpush("L", 1)
    assert d.cas("L", 1, 2) is False and d.cas("L", None, 2) is False  # a list never matches
    assert d.lpop("L") == 1
    with pytest.raises(TypeError):
        d.cas("k", 2, None)
    assert d["k"] == 2


def test_get_many_set_many_contract(d):
    """get_many returns the present keys; set_many validates everything before storing."""
    d.set_many({"a": 1, "b": "two", "c": 3.0}, exptime=10)
    d.set_many([("d", b"4")])
    assert d.get_many(["a", "b", "zz", "c", "d", "a"]) == {"a": 1, "b": "two", "c": 3.0, "d": b"4"}
    assert 9 < d.ttl("b") <= 10 and d.ttl("d") == 0
    assert d.get_many([]) == {}
    for one_key in ("ab", b"ab"):  # a single str is one key, not an iterable of keys: refused alike
        with pytest.raises(TypeError):
            d.get_many(one_key)
    with pytest.raises(TypeError):
        d.set_many({"x": 1, "y": None})
    with pytest.raises(ValueError):
        d.set_many({"x": 1, "": 2})
    assert "x" not in d


def test_scan_and_match_contract(d):
    """A full scan returns every key present throughout; match uses fnmatch syntax."""
    keys = {f"k{i}" for i in range(200)}
    for k in keys:
        d[k] = 1
    seen: set[str] = set()
    cursor = 0
    for step in range(1, 10_000):
        cursor, batch = d.scan(cursor, count=30)
        seen.update(batch)
        if cursor == 0:
            break
        if step % 2:  # writes and deletes of other keys during the scan
            d[f"tmp{step}"] = 1
            d.delete(f"tmp{step - 2}")
    assert keys <= seen and seen - keys <= {f"tmp{i}" for i in range(step)}
    assert sorted(d.get_keys(match="k1?")) == sorted(f"k1{i}" for i in range(10))
    assert sorted(d.get_keys(match="k19*")) == ["k19"] + [f"k19{i}" for i in range(10)]
    assert sorted(d.get_keys(match="k[!0-8]")) == ["k9"]
    with pytest.raises(ValueError):
        d.scan(0, count=0)
    with pytest.raises(ValueError):
        d.scan(-1)
    with pytest.raises(TypeError):
        d.get_keys(match=1)
    with pytest.raises(TypeError):
        d.get_keys(match=b"k*")


def test_items_values_contract(d):
    """items and values list the live items."""
    d["a"] = 1
    d["b"] = "x"
    assert sorted(d.items()) == [("a", 1), ("b", "x")]
    assert sorted(d.items(match="a*")) == [("a", 1)]
    assert sorted(map(repr, d.values())) == ["'x'", "1"]


def test_stale_safe_flush_expired_contract(d):
    """get_stale of a live or missing key; safe_set / safe_add store as set / add."""
    d["a"] = 1
    assert d.get_stale("a") == (1, False) and d.get_stale("zz") == (None, False)
    d.safe_set("s", 1)
    assert d.safe_add("s", 2) is False and d["s"] == 1 and d.safe_add("t", 2) is True
    assert isinstance(d.flush_expired(), int)
    with pytest.raises(ValueError):
        d.flush_expired(-1)
    with pytest.raises(TypeError):
        d.flush_expired(1.5)


def test_limit_contract(d):
    """limit: a bucket of rate + burst, refilled at rate per per, exact numbers."""
    results = [d.limit("ip", rate=2, per=1, burst=1) for _ in range(5)]
    assert [r[0] for r in results] == [True, True, True, False, False]
    assert [r[1] for r in results] == [2, 1, 0, 0, 0]
    for r, full_in in zip(results, [0.5, 1.0, 1.5, 1.5, 1.5]):
        assert full_in - 0.3 < r[2] <= full_in + 1e-6  # less only by the time the calls took
    assert type(d["ip"]) is int and 1.0 < d.ttl("ip") <= 1.5
    time.sleep(0.6)  # one request refilled
    assert d.limit("ip", rate=2, per=1, burst=1)[0] is True
    assert d.limit("ip", rate=2, per=1, burst=1)[0] is False
    with pytest.raises(TypeError):
        d.limit("x", 1, 1, burst=1.5)
    for bad in [(0, 1, 0), (1, 0, 0), (1, 1, -1), (0.5, 1, 0)]:
        with pytest.raises(ValueError):
            d.limit("x", *bad)
    d["s"] = "text"
    with pytest.raises(TypeError):
        d.limit("s", 1, 1)


def test_lock_contract(d):
    """A named lock excludes another holder, times out, and is not reentrant."""
    a, b = d.lock("job", timeout=0.05), d.lock("job", timeout=0.05)
    with a:
        assert a.locked() and b.locked()
        assert b.acquire() is False
        assert b.acquire(blocking=False) is False
        with pytest.raises(TimeoutError):
            with b:
                pass
        with pytest.raises(RuntimeError):
            b.release()
        with pytest.raises(RuntimeError):
            a.acquire(blocking=False)
    assert not a.locked() and b.acquire(blocking=False) is True
    b.release()
    with pytest.raises(ValueError):
        a.acquire(blocking=False, timeout=1)
    assert "job" not in d and d.get_keys() == []


def test_get_or_set_contract(d):
    """get_or_set calls the factory on a miss only; a failing factory stores nothing."""
    calls: list[int] = []
    assert d.get_or_set("k", lambda: calls.append(1) or 42, exptime=10) == 42
    assert d.get_or_set("k", lambda: calls.append(1) or 43) == 42
    assert calls == [1] and 9 < d.ttl("k") <= 10
    with pytest.raises(ZeroDivisionError):
        d.get_or_set("n", lambda: 1 / 0)
    with pytest.raises(TypeError):
        d.get_or_set("n", lambda: None)
    assert "n" not in d and d.get_or_set("n", lambda: 1) == 1  # a failed factory leaves no lock behind


def test_lists_contract(d):
    """Lists keep element types and order and refuse scalar keys."""
    assert d.lpop("L") is None and d.llen("L") == 0
    assert d.rpush("L", 1) == 1 and d.rpush("L", "two") == 2 and d.lpush("L", b"zero") == 3
    assert d.lpop("L") == b"zero" and d.rpop("L") == "two" and d.rpop("L") == 1
    d["s"] = 1
    with pytest.raises(TypeError):
        d.lpush("s", 1)
    d.rpush("L2", True)
    d.rpush("L2", 2.5)
    for op in (lambda: d.get("L2"), lambda: d["L2"], lambda: d.pop("L2"), lambda: d.incr("L2"), lambda: d.limit("L2", 1, 1)):
        with pytest.raises(TypeError):
            op()
    assert d.get_many(["L2", "s"]) == {"L2": [True, 2.5], "s": 1}  # a list comes back as a list
    assert sorted(d.items(), key=lambda kv: kv[0]) == [("L2", [True, 2.5]), ("s", 1)]
    assert d.cas("L2", None, 1) is False and d.add("L2", 1) is False
    assert "L2" in d and len(d) == 2 and d.ttl("L2") == 0
    assert d.expire("L2", 10) is True and d.rpush("L2", 3) == 3 and 9 < d.ttl("L2") <= 10  # push keeps the TTL
    assert d.replace("L2", "scalar") is True and d["L2"] == "scalar"  # set/replace replace a list
    d.rpush("L3", 1)
    assert d.rpop("L3") == 1 and "L3" not in d  # popping the last element deletes the list
    with pytest.raises(TypeError):
        d.llen("s")
    d.rpush("L4", 1)
    assert d.expire("L4", 0.05) is True
    time.sleep(0.15)
    assert d.llen("L4") == 0 and d.lpop("L4") is None  # an expired list is no list


def test_version_wait_watch_contract(d):
    """version moves on change; wait(since=) returns the new value; watch reports changes."""
    missing = d.version("k")  # 0, or (shared memory) a mark of when it was seen missing
    d["k"] = 1
    v = d.version("k")
    assert v not in (0, missing)
    d["k"] = 2
    assert d.version("k") != v
    v = d.version("k")
    d.incr("k")
    assert d.wait("k", timeout=5, since=v) == 3
    with pytest.raises(TimeoutError):
        d.wait("k", timeout=0.05)
    w = d.watch("j*", timeout=0.2)
    d["j1"] = 1
    d["other"] = 1
    del d["j1"]
    events = list(w)
    assert ("set", "j1") in events and events[-1] == ("delete", "j1")
    assert all(e.key == "j1" for e in events)


def test_huge_exptime_is_effectively_never(d):
    """An absurdly long exptime stores the item with a long, positive TTL."""
    d.set("k", 1, 1e300)
    assert d.ttl("k") > 1e9
    d.incr("n", 1, 1e300, init=0)
    assert d.ttl("n") > 1e9
    assert d.expire("k", 1e18) is True and d.ttl("k") > 1e9


def test_async_notifications_contract(d):
    """await_change returns the new value; awatch yields later changes."""
    import asyncio

    async def main() -> list[Any]:
        d["k"] = 1
        v = d.version("k")
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, d.incr, "k")
        assert await d.await_change("k", timeout=10, since=v) == 2
        seen = []
        loop.call_later(0.2, d.set, "a1", 1)
        async for ev in d.awatch("a*", timeout=0.5):
            seen.append(ev)
        return seen

    assert ("set", "a1") in asyncio.run(main())


def test_stats_contract(d):
    """stats() has the common figures under the same names on both engines."""
    d["a"] = 1
    d.get("a")
    d.get("missing")
    s = d.stats()
    for name in ("entries", "used_bytes", "capacity", "hits", "misses", "expired", "evictions"):
        assert isinstance(s[name], int) and s[name] >= 0, name
    assert s["entries"] == 1 and s["hits"] >= 1 and s["misses"] >= 1


@pytest.mark.parametrize("bad", [-2, -0.5, -1e-9, math.nan, math.inf, -math.inf, 2**63, 1e308, 1e10])
def test_one_timeout_rule(d, bad):
    """Every timeout argument raises ValueError naming itself for a negative, NaN, infinite or absurd value,
    before waiting for anything (negative values used to wait forever; 2**63 raised OverflowError)."""
    import asyncio

    async def drain_awatch() -> None:
        async for _ in d.awatch(timeout=bad):
            pass

    calls = {
        "timeout": [
            lambda: d.wait("k", timeout=bad),
            lambda: d.watch(timeout=bad),
            lambda: asyncio.run(drain_awatch()),
            lambda: asyncio.run(d.await_change("k", timeout=bad)),
            lambda: d.lock("L", timeout=bad),
            lambda: d.lock("L").acquire(timeout=bad),
        ],
        "lock_timeout": [lambda: d.get_or_set("k", lambda: 1, lock_timeout=bad)],
    }
    for what, fns in calls.items():
        for fn in fns:
            with pytest.raises(ValueError, match=what):
                fn()
    assert "k" not in d  # no factory ran


def test_timeout_rule_accepts_none_zero_and_positive(d):
    """None, 0 and a positive number are timeouts; a str is a TypeError."""
    lk = d.lock("L", timeout=0)
    assert lk.acquire(timeout=0) is True
    assert d.lock("L").acquire(timeout=0.01) is False
    lk.release()
    lk2 = d.lock("L", timeout=None)
    assert lk2.acquire() is True
    lk2.release()
    with pytest.raises(TimeoutError):
        d.wait("k", timeout=0)
    assert list(d.watch(timeout=0)) == []
    assert d.get_or_set("k", lambda: 7, lock_timeout=0) == 7
    with pytest.raises(TypeError):
        d.wait("k", timeout="1")
