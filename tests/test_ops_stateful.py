"""The extra operations against a Python model (hypothesis stateful testing)."""

from __future__ import annotations

import fnmatch
from typing import Any

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
        if expected is None:
            ok = k not in live
        else:
            ok = k in live and same(live[k], expected) and expected == expected
        assert self.d.cas(k, expected, v, e) is ok
        if ok:
            self.model[k] = (v, self.deadline(e))

    @rule(k=KEYS)
    def delete(self, k: str) -> None:
        assert self.d.delete(k) is (k in self.live())
        self.model.pop(k, None)

    @rule(items=st.dictionaries(KEYS, VALUES, max_size=5), e=EXPTIME)
    def set_many(self, items: dict[str, Any], e: int) -> None:
        self.d.set_many(items, e)
        for k, v in items.items():
            self.model[k] = (v, self.deadline(e))

    @rule(keys=st.lists(KEYS, max_size=6))
    def get_many(self, keys: list[str]) -> None:
        got = self.d.get_many(keys)
        live = self.live()
        assert set(got) == {k for k in keys if k in live}
        assert all(same(got[k], live[k]) for k in got)

    @rule(k=KEYS)
    def get_stale(self, k: str) -> None:
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
        assert sorted(self.d.values(), key=repr) == sorted(live.values(), key=repr)


OpsMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_ops_machine = OpsMachine.TestCase
