"""A hypothesis state machine: two handles on one dict against a plain-dict model.

TTL is modelled on a virtual clock that only moves through ``clock_shift``.
Clock advances are whole seconds and every positive exptime ends in .5, so a
key's deadline is always at least half a second away from "now" and the real
time that passes while an example runs cannot change the outcome.
"""

from __future__ import annotations

import math

import pytest
from conftest import MAX_KEY, unique_name
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import shmdict
from shmdict import _lib

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

keys = st.one_of(
    st.sampled_from(["a", "b", "c", "counter", "ü", "日本", "a\x00b", "k" * 300]),
    st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode("utf-8", "surrogatepass")) <= MAX_KEY),
).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))

values = st.one_of(
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(-1000, 1000),
    st.floats(allow_nan=False),
    st.text(max_size=60).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
    st.binary(max_size=300),
)

# Positive exptimes end in .5; non-positive ones mean "never".
exptimes = st.one_of(
    st.integers(0, 60).map(lambda n: n + 0.5),
    st.sampled_from([0, -1, -0.5, 0.0]),
)

deltas = st.one_of(
    st.integers(-1000, 1000),
    st.sampled_from([INT64_MAX, INT64_MIN, 2**62, -(2**62)]),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)


def _is_num(v: object) -> bool:
    return type(v) in (int, float)


def _same(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isinf(a) and a == b) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300)
    return a == b


class SharedDictMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.name = unique_name("sm")
        self.a = shmdict.new(self.name, "1m")
        self.b = shmdict.get(self.name)
        self.now = 0.0  # virtual seconds since the machine started
        self.model: dict[str, tuple[object, float | None]] = {}  # key -> (value, deadline or None)

    def teardown(self) -> None:
        self.b.close()
        self.a.close()

    # ---- helpers ---------------------------------------------------------------

    def h(self, second: bool) -> shmdict.SharedDict:
        return self.b if second else self.a

    def live(self) -> dict[str, object]:
        return {k: v for k, (v, dl) in self.model.items() if dl is None or dl > self.now}

    def deadline(self, exptime: float) -> float | None:
        return self.now + exptime if exptime > 0 else None

    # ---- rules -------------------------------------------------------------------

    @rule(second=st.booleans(), key=keys, value=values, exptime=st.none() | exptimes, item=st.booleans())
    def set(self, second, key, value, exptime, item):
        d = self.h(second)
        if exptime is None:
            if item:
                d[key] = value
            else:
                d.set(key, value)
            self.model[key] = (value, None)
        else:
            d.set(key, value, exptime)
            self.model[key] = (value, self.deadline(exptime))

    @rule(second=st.booleans(), key=keys)
    def get(self, second, key):
        d = self.h(second)
        live = self.live()
        got = d.get(key, _MISSING)
        if key in live:
            assert _same(got, live[key]), (key, got, live[key])
            assert _same(d[key], live[key])
        else:
            assert got is _MISSING
            with pytest.raises(KeyError):
                d[key]

    @rule(second=st.booleans(), key=keys)
    def contains(self, second, key):
        assert (key in self.h(second)) == (key in self.live())

    @rule(second=st.booleans(), key=keys, item=st.booleans())
    def delete(self, second, key, item):
        d = self.h(second)
        existed = key in self.live()
        if item:
            if existed:
                del d[key]
            else:
                with pytest.raises(KeyError):
                    del d[key]
        else:
            assert d.delete(key) is existed
        self.model.pop(key, None)

    @rule(
        second=st.booleans(),
        key=keys,
        delta=deltas,
        exptime=st.none() | exptimes,
        init=st.none() | st.integers(-100, 100) | st.floats(-100, 100),
        init_ttl=st.none() | exptimes,
    )
    def incr(self, second, key, delta, exptime, init, init_ttl):
        d = self.h(second)
        live = self.live()
        kwargs = {}
        if init is not None:
            kwargs["init"] = init
        if init_ttl is not None:
            kwargs["init_ttl"] = init_ttl

        def call():
            if exptime is None:
                return d.incr(key, delta, **kwargs)
            return d.incr(key, delta, exptime, **kwargs)

        if key in live:
            cur = live[key]
            old_deadline = self.model[key][1]
            if not _is_num(cur):
                with pytest.raises(TypeError):
                    call()
                return
        else:
            if init is None:
                with pytest.raises(KeyError):
                    call()
                return
            cur = init
            old_deadline = self.deadline(init_ttl) if init_ttl is not None else None
        if type(cur) is int and type(delta) is int:
            new = cur + delta
            if not INT64_MIN <= new <= INT64_MAX:
                with pytest.raises(OverflowError):
                    call()
                return
        else:
            new = float(cur) + float(delta)
        got = call()
        assert _same(got, new), (got, new)
        dl = self.deadline(exptime) if exptime is not None else old_deadline
        self.model[key] = (new, dl)

    @rule(second=st.booleans(), key=keys)
    def ttl(self, second, key):
        t = self.h(second).ttl(key)
        if key not in self.live():
            assert t is None
            return
        dl = self.model[key][1]
        if dl is None:
            assert t == 0
        else:
            remaining = dl - self.now
            assert remaining - 0.4 <= t <= remaining + 1e-3, (t, remaining)

    @rule(second=st.booleans(), key=keys, exptime=exptimes)
    def expire(self, second, key, exptime):
        ok = self.h(second).expire(key, exptime)
        if key in self.live():
            assert ok is True
            self.model[key] = (self.model[key][0], self.deadline(exptime))
        else:
            assert ok is False

    @rule(second=st.booleans())
    def flush_all(self, second):
        self.h(second).flush_all()
        self.model.clear()

    @rule(second=st.booleans())
    def length(self, second):
        assert len(self.h(second)) == len(self.live())

    @rule(second=st.booleans(), max_count=st.integers(0, 5))
    def get_keys(self, second, max_count):
        got = self.h(second).get_keys(max_count)
        live = set(self.live())
        assert len(got) == len(set(got))
        if max_count == 0 or max_count >= len(live):
            assert set(got) == live
        else:
            assert len(got) == max_count
            assert set(got) <= live

    @rule(second=st.booleans())
    def items(self, second):
        got = dict(self.h(second).items())
        live = self.live()
        assert set(got) == set(live)
        for k, v in got.items():
            assert _same(v, live[k])

    @rule(seconds=st.integers(1, 40))
    def advance(self, seconds):
        _lib.clock_shift(seconds)
        self.now += seconds

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def advance_past_a_deadline(self, data):
        deadlines = sorted(dl for _, dl in self.model.values() if dl is not None and dl > self.now)
        if deadlines:
            target = data.draw(st.sampled_from(deadlines))
            step = math.ceil(target - self.now)  # whole seconds: lands .5 s past the deadline
            _lib.clock_shift(step)
            self.now += step

    @invariant()
    def consistent(self):
        self.a.check()


_MISSING = object()


def test_shared_dict_state_machine():
    """Random operations on two handles always agree with a dict model and pass check()."""
    run_state_machine_as_test(
        SharedDictMachine,
        settings=settings(
            max_examples=100,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
