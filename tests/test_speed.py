"""The two bases of SharedDict agree: the C type (shmdict._speed) and the
pure-Python one (shmdict._pure) give the same results, types, exceptions and
messages for the same operations -- valid or not, on open or closed handles.

Also: the C type is what SharedDict uses on CPython (so the rest of the suite
tests it), a handle closed while calls are in flight on other threads never
crashes, threads and processes contending for the lock lose no increment,
batches longer than one lock hold and values larger than the stack buffer
round-trip.
"""

from __future__ import annotations

import math
import os
import platform
import threading
from typing import Any

import pytest
from conftest import unique_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmdict
from shmdict import _dict, _lib
from shmdict._lib import INT64_MAX, INT64_MIN, ffi, lib
from shmdict._pure import PureBase

PURE_SELECTED = _dict._Base is PureBase

needs_c = pytest.mark.skipif(PURE_SELECTED, reason="the pure base is selected: nothing to compare against")


if not PURE_SELECTED:

    class PureSharedDict(PureBase, shmdict.SharedDict):  # type: ignore[misc]
        """SharedDict with the pure base's hot methods in front of the C type's."""

        __slots__ = ()


def attach_pure(d: shmdict.SharedDict) -> shmdict.SharedDict:
    """Another handle on d's file, whose hot methods are the pure base's."""
    p = ffi.new("shmdict_t **")
    flags, also = _dict._trust(False)
    why = ffi.new("shmdict_out_t *")
    _lib.check(lib.shmdict_attach(d._dir.encode(), d.name.encode(), flags, also, why, p))
    return PureSharedDict(p[0], d.name, d._dir, owner=False)


@needs_c
def test_shareddict_uses_the_c_type_on_cpython() -> None:
    """Unless SHMDICT_PURE is set, CPython's SharedDict has the C base (the suite tests it)."""
    assert platform.python_implementation() == "CPython"
    from shmdict import _speed

    assert shmdict.SharedDict.__mro__[1] is _speed.SharedDictBase
    assert shmdict.SharedDict.get is _speed.SharedDictBase.get


# ---- agreement ------------------------------------------------------------------

keys = st.one_of(
    st.sampled_from(["a", "b", "ключ", "k" * 300]),
    st.sampled_from(["", "\ud800", "x" * (lib.SHMDICT_MAX_KEY + 1)]),
    st.sampled_from([1, None, b"a", 2.5]),
)
values = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([INT64_MIN, INT64_MAX, 2**63, -(2**63) - 1, True, False, 0.5, -0.0, math.inf, math.nan]),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.sampled_from(["é" * 600, b"\x00" * 3000, "\udcff", None, [1], 1j]),
)
seconds_ = st.sampled_from([None, 0, 0.0, 5, 100.5, -1, False, True, "5", math.inf, math.nan, 10**400])
numbers = st.one_of(
    st.integers(-5, 5),
    st.sampled_from([2**63, INT64_MAX, INT64_MIN, 0.5, math.inf, math.nan, True, "1", None]),
)

ops = st.one_of(
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("get_default"), keys, values),
    st.tuples(st.just("getitem"), keys),
    st.tuples(st.just("contains"), keys),
    st.tuples(st.just("set"), keys, values, seconds_),
    st.tuples(st.just("setitem"), keys, values),
    st.tuples(st.just("delitem"), keys),
    st.tuples(st.just("delete"), keys),
    st.tuples(st.just("pop"), keys),
    st.tuples(st.just("pop_default"), keys, values),
    st.tuples(st.just("incr"), keys, numbers, seconds_, numbers, seconds_),
    st.tuples(st.just("incr_plain"), keys),
    st.tuples(st.just("get_many"), st.lists(keys, max_size=5)),
    st.tuples(st.just("set_many"), st.lists(st.tuples(keys, values), max_size=5), seconds_),
    st.tuples(st.just("set_many_pairs"), st.lists(st.tuples(keys, values), max_size=3)),
    st.tuples(st.just("lpush"), keys, values),  # a list value: get-like calls report it
)


def apply(d: shmdict.SharedDict, op: tuple[Any, ...]) -> Any:
    kind, *a = op
    if kind == "get":
        return d.get(a[0])
    if kind == "get_default":
        return d.get(a[0], a[1])
    if kind == "getitem":
        return d[a[0]]
    if kind == "contains":
        return a[0] in d
    if kind == "set":
        return d.set(a[0], a[1]) if a[2] is None else d.set(a[0], a[1], a[2])
    if kind == "setitem":
        d[a[0]] = a[1]
        return None
    if kind == "delitem":
        del d[a[0]]
        return None
    if kind == "delete":
        return d.delete(a[0])
    if kind == "pop":
        return d.pop(a[0])
    if kind == "pop_default":
        return d.pop(a[0], a[1])
    if kind == "incr":
        kw = {k: v for k, v in (("init", a[3]), ("init_ttl", a[4])) if v is not None}
        return d.incr(a[0], a[1], a[2], **kw)
    if kind == "incr_plain":
        return d.incr(a[0])
    if kind == "get_many":
        return d.get_many(a[0])
    if kind == "set_many":
        return d.set_many(dict(a[0]), a[1]) if a[1] is not None else d.set_many(dict(a[0]))
    if kind == "set_many_pairs":
        return d.set_many(iter(a[0]))
    if kind == "lpush":
        return d.lpush(a[0], a[1])
    raise AssertionError(kind)


def outcome(d: shmdict.SharedDict, op: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        r = apply(d, op)
    except Exception as e:  # noqa: BLE001 - the exception is the result compared
        return ("raise", type(e), str(e))
    return ("ok", typed(r))


def typed(v: Any) -> Any:
    """v with the type of every scalar in it, and NaN made comparable."""
    if isinstance(v, dict):
        return {k: typed(x) for k, x in v.items()}
    if isinstance(v, list):
        return [typed(x) for x in v]
    if isinstance(v, float) and math.isnan(v):
        return (float, "nan")
    return (type(v), v)


def contents(d: shmdict.SharedDict) -> Any:
    return typed({k: v for k, v in d.items()})


@needs_c
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=25))
def test_c_type_and_pure_path_agree(seq: list[tuple[Any, ...]]) -> None:
    """Random operations, good and bad, give the same outcome and contents on both bases."""
    with shmdict.new(unique_name(), "1m") as a, shmdict.new(unique_name(), "1m") as b:
        pure = attach_pure(b)
        try:
            for op in seq:
                assert outcome(a, op) == outcome(pure, op), op
                assert contents(a) == contents(pure)
        finally:
            pure.close()


@needs_c
@pytest.mark.parametrize("op", [
    ("get", "a"), ("get_default", "a", 1), ("getitem", "a"), ("contains", "a"), ("contains", 5),
    ("set", "a", 1, None), ("set", 1, 1, 5), ("setitem", "a", 1), ("delitem", "a"), ("delete", "a"),
    ("pop", "a"), ("pop_default", "a", 1), ("incr", "a", 1, None, 0, None), ("incr_plain", ""),
    ("get_many", ["a"]), ("set_many", [("a", 1)], None), ("set_many_pairs", [("a", 1)]),
])
def test_closed_handles_agree(op: tuple[Any, ...]) -> None:
    """Every hot method on a closed handle: the same ValueError on both bases."""
    with shmdict.new(unique_name(), "1m") as a:
        pure = attach_pure(a)
        c = shmdict.get(a.name)
        pure.close()
        c.close()
        got = outcome(c, op)
        assert got == outcome(pure, op)
        assert got[:2] == ("raise", ValueError) and "closed SharedDict" in got[2]


def test_argument_errors() -> None:
    """Fast-call argument parsing: keywords, missing and surplus arguments."""
    with shmdict.new(unique_name(), "1m") as d:
        d.set(key="k", value=1, exptime=0)
        assert d.get(key="k") == 1 and d.get("nope", default=3) == 3
        assert d.incr("k", delta=2, exptime=None, init=0, init_ttl=5) == 3
        assert d.pop("k", default=None) == 3 and d.pop(key="k", default=9) == 9
        d.set_many(mapping={"x": 1}, exptime=5)
        for call in (lambda: d.get(), lambda: d.get("k", 1, 2), lambda: d.get("k", key="k"),
                     lambda: d.get("k", nope=1), lambda: d.set("k"), lambda: d.incr("k", 1, None, 0),
                     lambda: d.pop(), lambda: d.set_many()):
            with pytest.raises(TypeError):
                call()


# ---- threads, closing, contention --------------------------------------------------


def test_close_while_other_threads_call() -> None:
    """Closing a handle that other threads are using: they get ValueError, never a crash."""
    name = unique_name()
    with shmdict.new(name, "1m") as owner:
        owner["n"] = 0
        for _ in range(20):
            d = shmdict.get(name)
            errors: list[BaseException] = []
            start = threading.Barrier(5)

            def work() -> None:
                start.wait()
                try:
                    for i in range(2000):
                        d.incr("n")
                        d.get("n")
                        d.set_many({f"k{i % 50}": i})
                except ValueError as e:
                    if "closed" not in str(e):
                        errors.append(e)
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)

            ts = [threading.Thread(target=work) for _ in range(4)]
            for t in ts:
                t.start()
            start.wait()
            d.close()
            for t in ts:
                t.join(30)
            assert not errors
            assert not any(t.is_alive() for t in ts)
        owner.check()


def _hammer(name: str, n: int) -> None:
    d = shmdict.get(name)
    for _ in range(n):
        d.incr("c")
    d.close()


def test_threads_and_processes_contending_lose_nothing() -> None:
    """Two processes with three threads each incr one key: every increment lands
    (the GIL is given up while a thread sleeps on the lock, so nothing deadlocks)."""
    from multiprocessing import get_context

    name, n = unique_name(), 3000
    with shmdict.new(name, "1m") as d:
        d["c"] = 0
        ctx = get_context("fork")

        def proc() -> None:
            ts = [threading.Thread(target=_hammer, args=(name, n)) for _ in range(3)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        ps = [ctx.Process(target=proc) for _ in range(2)]
        for p in ps:
            p.start()
        for p in ps:
            p.join(120)
        assert [p.exitcode for p in ps] == [0, 0]
        assert d["c"] == 2 * 3 * n
        d.check()


# ---- sizes --------------------------------------------------------------------------


def test_batches_longer_than_one_lock_hold() -> None:
    """get_many / set_many of more than SHMDICT_BATCH_HOLD keys: every key stored and read."""
    n = 2 * lib.SHMDICT_BATCH_HOLD + 7
    with shmdict.new(unique_name(), "8m") as d:
        d.set_many({f"k{i}": (i if i % 3 else f"v{i}") for i in range(n)})
        got = d.get_many([f"k{i}" for i in range(n)] + ["missing"])
        assert got == {f"k{i}": (i if i % 3 else f"v{i}") for i in range(n)}
        assert len(d) == n


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 5000, 70_000, 300_000])
def test_values_of_every_size(size: int) -> None:
    """str and bytes around the stack buffer and the no-GIL threshold round-trip through get, [] and pop."""
    with shmdict.new(unique_name(), "4m") as d:
        b = os.urandom(size)
        s = "é" * (size // 2)
        d["b"], d["s"] = b, s
        assert d["b"] == b and d.get("s") == s
        assert d.get_many(["b", "s"]) == {"b": b, "s": s}
        assert d.pop("b") == b and d.pop("s") == s
        assert len(d) == 0
