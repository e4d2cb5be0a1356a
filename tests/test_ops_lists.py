"""Lists: lpush/rpush/lpop/rpop/llen, their types, TTLs, crashes and contention."""

from __future__ import annotations

import collections
import os
import random
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ops_support import exit_code, fork, join, killed, sd, uname  # noqa: F401

import shmdict
from shmdict import _lib

SCALARS = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=30), st.binary(max_size=60)
)


def test_push_pop_order_and_types(sd: shmdict.SharedDict) -> None:
    """Elements keep order and type; the list is deleted when emptied."""
    assert sd.rpush("l", 1) == 1
    assert sd.rpush("l", "two") == 2
    assert sd.lpush("l", b"zero") == 3
    assert sd.rpush("l", 2.5) == 4
    assert sd.rpush("l", False) == 5
    assert sd.llen("l") == 5
    assert sd.get_many(["l"]) == {"l": [b"zero", 1, "two", 2.5, False]}
    assert sd.lpop("l") == b"zero" and sd.rpop("l") is False
    assert [sd.lpop("l"), sd.rpop("l"), sd.lpop("l")] == [1, 2.5, "two"]
    assert sd.lpop("l") is None and sd.rpop("l") is None and sd.llen("l") == 0
    assert "l" not in sd
    sd.check()


def test_list_and_scalar_type_errors(sd: shmdict.SharedDict) -> None:
    """Scalar operations on a list key and list operations on a scalar key raise TypeError."""
    sd.rpush("l", 1)
    sd["s"] = "x"
    for call in (
        lambda: sd["l"],
        lambda: sd.get("l"),
        lambda: sd.pop("l"),
        lambda: sd.incr("l"),
        lambda: sd.get_stale("l"),
        lambda: sd.limit("l", 1, 1),
        lambda: sd.lpush("s", 1),
        lambda: sd.rpush("s", 1),
        lambda: sd.lpop("s"),
        lambda: sd.rpop("s"),
        lambda: sd.llen("s"),
        lambda: sd.rpush("l", None),  # type: ignore[arg-type]
        lambda: sd.rpush("l", [1]),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError):
            call()
    assert sd.llen("l") == 1 and sd["s"] == "x"
    assert "l" in sd and len(sd) == 2 and sorted(sd) == ["l", "s"]
    assert dict(sd.items()) == {"l": [1], "s": "x"}
    with pytest.raises(OverflowError):
        sd.rpush("l", 2**64)
    with pytest.raises(ValueError):
        sd.rpush("", 1)
    assert sd.cas("l", 1, 2) is False
    sd["l"] = "scalar again"  # set replaces a list like any value
    assert sd["l"] == "scalar again"
    assert sd.delete("s") and sd.rpush("s", 1) == 1
    sd.check()


def test_list_ttl(sd: shmdict.SharedDict) -> None:
    """A list respects TTL: expire() sets it, pushes keep it, an expired list is absent."""
    sd.rpush("l", 1)
    assert sd.expire("l", 5)
    for i in range(200):  # pushes that move the list to bigger blocks keep the TTL
        sd.rpush("l", "x" * 50)
    assert 0 < sd.ttl("l") <= 5
    _lib.clock_shift(6)
    assert sd.llen("l") == 0 and sd.lpop("l") is None and "l" not in sd
    assert sd.rpush("l", "fresh") == 1 and sd.ttl("l") == 0
    sd.check()


def test_big_elements_and_long_lists(sd: shmdict.SharedDict) -> None:
    """Elements larger than the scratch buffer and lists that move many times round-trip."""
    big = "é" * 20000
    sd.rpush("b", big)
    sd.rpush("b", b"\0" * 9000)
    assert sd.lpop("b") == big and sd.lpop("b") == b"\0" * 9000
    for i in range(3000):
        sd.rpush("n", i)
    for i in range(3000):
        sd.lpush("n", -i)
    assert sd.llen("n") == 6000
    assert [sd.lpop("n") for _ in range(3)] == [-2999, -2998, -2997]
    assert [sd.rpop("n") for _ in range(3)] == [2999, 2998, 2997]
    sd.check()


def test_queue_stays_in_its_block(sd: shmdict.SharedDict) -> None:
    """A long-running rpush + lpop queue does not grow its record without bound."""
    for i in range(100):
        sd.rpush("q", i)
    used = sd.stats()["used_bytes"]
    for i in range(100, 20000):
        sd.rpush("q", i)
        assert sd.lpop("q") == i - 100
    assert sd.stats()["used_bytes"] <= used * 2
    sd.check()


def test_list_full_leaves_it_unchanged() -> None:
    """A push that finds no room raises Full and leaves the list as it was."""
    with shmdict.new(uname(), "64k") as d:
        with pytest.raises(shmdict.Full):
            for i in range(10**5):
                d.rpush("l", b"x" * 500)
        n = d.llen("l")
        assert n > 10
        with pytest.raises(shmdict.Full):
            d.rpush("l", b"x" * 500)
        assert d.llen("l") == n and d.rpop("l") == b"x" * 500
        d.check()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["lpush", "rpush", "lpop", "rpop"]), SCALARS), max_size=80))
def test_lists_match_a_deque(sd: shmdict.SharedDict, ops: list[tuple[str, Any]]) -> None:
    """Any sequence of pushes and pops agrees with collections.deque."""
    sd.flush_all()
    model: collections.deque[Any] = collections.deque()
    for op, v in ops:
        if op == "lpush":
            model.appendleft(v)
            assert sd.lpush("k", v) == len(model)
        elif op == "rpush":
            model.append(v)
            assert sd.rpush("k", v) == len(model)
        else:
            got = (sd.lpop if op == "lpop" else sd.rpop)("k")
            want = (model.popleft() if op == "lpop" else model.pop()) if model else None
            assert type(got) is type(want) and got == want
        assert sd.llen("k") == len(model)
    assert sd.get_many(["k"]).get("k", []) == list(model)
    sd.check()


POINTS = ["list.pushed", "list.slid", "list.popped", "list.allocated", "list.filled", "list.published"]


def _setup_for(point: str, d: shmdict.SharedDict) -> tuple[Any, Any]:
    """Prepare a list so that the next op passes point; returns (op, key)."""
    if point == "list.slid":  # a queue whose right side is full but whose left gap is large
        for i in range(40):
            d.rpush("l", i)
        i = 40
        while True:  # pop from the left until a push would slide
            d.lpop("l")
            d.rpush("l", i)
            i += 1
            if i > 200:
                break
        return ("queue", "l")
    for i in range(5):
        d.rpush("l", i)
    if point in ("list.allocated", "list.filled", "list.published"):
        return ("rpush-big", "l")
    if point == "list.popped":
        return ("lpop", "l")
    return ("rpush", "l")


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("nth", [1, 2])
def test_list_ops_killed(point: str, nth: int) -> None:
    """A list operation killed at any step leaves the list before or after it, whole."""
    with shmdict.new(uname(), "1m") as d:
        d["other"] = "kept"
        op, key = _setup_for(point, d)
        before = d.get_many([key])[key]

        def child() -> int:
            _lib.fault_arm(point, nth)
            for _ in range(3000):  # repeat until the point is reached
                if op == "lpop":
                    d.lpop(key)
                elif op == "queue":
                    d.lpop(key)
                    d.rpush(key, 999)
                elif op == "rpush-big":
                    d.rpush(key, "x" * 3000)
                else:
                    d.rpush(key, 999)
            return 3

        status = join(fork(child))
        assert killed(status), f"{point} not reached"
        got = d.get_many([key]).get(key, [])
        d.check()
        assert d["other"] == "kept"
        # Each completed op changed the list by one element at the known end: the
        # state is a valid sequence of whole operations, the interrupted one whole or absent.
        if op == "lpop":
            assert got == before[len(before) - len(got) :]
        elif op == "queue":  # m whole (lpop, rpush) rounds, maybe one more lpop
            k = sum(1 for x in got if x == 999)
            assert got in (before[k:] + [999] * k, before[k + 1 :] + [999] * k)
        elif op == "rpush-big":
            assert got[: len(before)] == before and all(x == "x" * 3000 for x in got[len(before) :])
        else:
            k = len(got) - len(before)
            assert k >= 0 and got[: len(before)] == before and got[len(before) :] == [999] * k
        assert d.llen(key) == len(got)
        if got:
            d.rpush(key, "after")
            assert d.rpop(key) == "after"


def test_queue_across_processes() -> None:
    """Producers rpush and consumers lpop concurrently: every item arrives exactly once."""
    name = uname()
    n_prod, n_cons, per = 2, 2, 400
    with shmdict.new(name, "1m") as d:

        def producer(p: int) -> int:
            d = shmdict.get(name)
            for i in range(per):
                d.rpush("q", f"{p}:{i}")
            return 0

        def consumer(c: int) -> int:
            d = shmdict.get(name)
            deadline = time.monotonic() + 20
            got = 0
            while time.monotonic() < deadline and d.get("done", 0) < n_prod or d.llen("q"):
                v = d.lpop("q")
                if v is None:
                    time.sleep(0.0005)
                    continue
                d.rpush(f"got{c}", v)
                got += 1
            return 0

        pids = [fork(producer, p) for p in range(n_prod)]
        cons = [fork(consumer, c) for c in range(n_cons)]
        assert [exit_code(join(p)) for p in pids] == [0] * n_prod
        d.incr("done", n_prod, init=0)
        assert [exit_code(join(p)) for p in cons] == [0] * n_cons
        seen = []
        for c in range(n_cons):
            seen += d.get_many([f"got{c}"]).get(f"got{c}", [])
        assert sorted(seen) == sorted(f"{p}:{i}" for p in range(n_prod) for i in range(per))
        # order per producer is kept within each consumer's share
        for c in range(n_cons):
            mine = d.get_many([f"got{c}"]).get(f"got{c}", [])
            for p in range(n_prod):
                idx = [int(x.split(":")[1]) for x in mine if x.startswith(f"{p}:")]
                assert idx == sorted(idx)
        d.check()
