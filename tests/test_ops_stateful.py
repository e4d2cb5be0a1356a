"""The extra operations against a Python model (hypothesis stateful testing)."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from ops_support import uname

import shmdict
from shmdict import _lib

KEYS = st.sampled_from([f"k{i}" for i in range(8)] + ["ü", "k[1]"])
VALUES = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.binary(max_size=300),
)
EXPTIME = st.sampled_from([0, 0, 1, 2, 5])  # whole seconds; time moves in k + 0.5 s steps


def same(a: Any, b: Any) -> bool:
    if type(a) is list and type(b) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


class OpsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.d = shmdict.new(uname("st"), "256k")
        self.t = 0.0  # model time: seconds of clock shift so far
        self.model: dict[str, tuple[Any, float]] = {}  # key -> (value, deadline or 0)

    def teardown(self) -> None:
        self.d.close()

    def live(self) -> dict[str, Any]:
        return {k: v for k, (v, dl) in self.model.items() if not dl or dl > self.t}

    def deadline(self, exptime: float) -> float:
        return self.t + exptime if exptime > 0 else 0.0

    @rule(k=KEYS, v=VALUES, e=EXPTIME)
    def set(self, k: str, v: Any, e: int) -> None:
        self.d.set(k, v, e)
        self.model[k] = (v, self.deadline(e))

    @rule(k=KEYS, v=VALUES, e=EXPTIME)
    def add(self, k: str, v: Any, e: int) -> None:
        expect = k not in self.live()
        assert self.d.add(k, v, e) is expect
        if expect:
            self.model[k] = (v, self.deadline(e))

    @rule(k=KEYS, v=VALUES, e=EXPTIME)
    def safe_add(self, k: str, v: Any, e: int) -> None:
        expect = k not in self.live()
        assert self.d.safe_add(k, v, e) is expect
        if expect:
            self.model[k] = (v, self.deadline(e))

    @rule(k=KEYS, v=VALUES, e=EXPTIME)
    def replace(self, k: str, v: Any, e: int) -> None:
        expect = k in self.live()
        assert self.d.replace(k, v, e) is expect
        if expect:
            self.model[k] = (v, self.deadline(e))

    @rule(k=KEYS, v=VALUES)
    def safe_set(self, k: str, v: Any) -> None:
        self.d.safe_set(k, v)
        self.model[k] = (v, 0.0)

    @rule(k=KEYS, v=VALUES, use_current=st.booleans(), other=VALUES, e=EXPTIME)
    def cas(self, k: str, v: Any, use_current: bool, other: Any, e: int) -> None:
        live = self.live()
        expected = live.get(k) if use_current else other
        if type(expected) is list:
            return  # a list is never an expected value
        if expected is None:
            ok = k not in live
        else:
            ok = k in live and same(live[k], expected) and expected == expected
        assert self.d.cas(k, expected, v, e) is ok
        if ok:
            self.model[k] = (v, self.deadline(e))

    @rule(k=KEYS, v=VALUES, left=st.booleans())
    def push(self, k: str, v: Any, left: bool) -> None:
        live = self.live()
        if k in live and type(live[k]) is not list:
            with pytest.raises(TypeError):
                (self.d.lpush if left else self.d.rpush)(k, v)
            return
        cur = list(live.get(k, []))
        cur = [v, *cur] if left else [*cur, v]
        assert (self.d.lpush if left else self.d.rpush)(k, v) == len(cur)
        ttl = self.model[k][1] if k in live else 0.0
        self.model[k] = (cur, ttl)

    @rule(k=KEYS, left=st.booleans())
    def pop_end(self, k: str, left: bool) -> None:
        live = self.live()
        if k in live and type(live[k]) is not list:
            with pytest.raises(TypeError):
                (self.d.lpop if left else self.d.rpop)(k)
            with pytest.raises(TypeError):
                self.d.llen(k)
            return
        got = (self.d.lpop if left else self.d.rpop)(k)
        if k not in live:
            assert got is None
            return
        cur = list(live[k])
        want = cur.pop(0) if left else cur.pop()
        assert same(got, want)
        if cur:
            self.model[k] = (cur, self.model[k][1])
        else:
            del self.model[k]
        assert self.d.llen(k) == len(cur)

    @rule(k=KEYS, e=st.sampled_from([0, 1, 3]))
    def expire(self, k: str, e: int) -> None:
        live = self.live()
        assert self.d.expire(k, e) is (k in live)
        if k in live:
            self.model[k] = (live[k], self.deadline(e))

    @rule(k=KEYS)
    def delete(self, k: str) -> None:
        assert self.d.delete(k) is (k in self.live())
        self.model.pop(k, None)

    @rule(items=st.dictionaries(KEYS, VALUES, max_size=5), e=EXPTIME)
    def set_many(self, items: dict[str, Any], e: int) -> None:
        self.d.set_many(items, e)
        for k, v in items.items():
            self.model[k] = (v, self.deadline(e))

    @rule(k=KEYS)
    def get(self, k: str) -> None:
        live = self.live()
        if k in live and type(live[k]) is list:
            with pytest.raises(TypeError):
                self.d.get(k)
            assert k in self.d
        else:
            assert same(self.d.get(k), live.get(k))

    @rule(keys=st.lists(KEYS, max_size=6))
    def get_many(self, keys: list[str]) -> None:
        got = self.d.get_many(keys)
        live = self.live()
        assert set(got) == {k for k in keys if k in live}
        assert all(same(got[k], live[k]) for k in got)

    @rule(k=KEYS)
    def get_stale(self, k: str) -> None:
        if k in self.model and type(self.model[k][0]) is list:
            return  # get_stale on a list raises TypeError (tested elsewhere)
        v, stale = self.d.get_stale(k)
        if k in self.live():
            assert same(v, self.live()[k]) and stale is False
        elif k in self.model:  # expired: stale until reclaimed
            assert (v, stale) == (None, False) or (same(v, self.model[k][0]) and stale is True)
        else:
            assert (v, stale) == (None, False)

    @rule()
    def flush_expired(self) -> None:
        expired = {k for k in self.model if k not in self.live()}
        assert 0 <= self.d.flush_expired() <= len(expired)
        for k in expired:
            del self.model[k]
            assert self.d.get_stale(k) == (None, False)

    @rule(steps=st.integers(0, 3))
    def advance(self, steps: int) -> None:
        dt = steps + 0.5
        _lib.clock_shift(dt)
        self.t += dt

    @rule(pattern=st.sampled_from(["k*", "k?", "*1*", "[!k]*", "k[[]*", "*"]))
    def match(self, pattern: str) -> None:
        want = sorted(k for k in self.live() if fnmatch.fnmatchcase(k, pattern))
        assert sorted(self.d.get_keys(match=pattern)) == want
        items = dict(self.d.items(pattern))
        assert sorted(items) == want and all(same(items[k], self.live()[k]) for k in want)

    @precondition(lambda self: True)
    @rule(count=st.integers(1, 5))
    def scan(self, count: int) -> None:
        cur, seen = 0, []
        while True:
            cur, keys = self.d.scan(cur, count)
            seen += keys
            if cur == 0:
                break
        assert sorted(seen) == sorted(self.live())

    @invariant()
    def agrees(self) -> None:
        live = self.live()
        assert len(self.d) == len(live)
        vals = dict(self.d.items())
        assert set(vals) == set(live) and all(same(vals[k], live[k]) for k in live)
        assert sorted(map(repr, self.d.values())) == sorted(map(repr, live.values()))


OpsMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_ops_machine = OpsMachine.TestCase
