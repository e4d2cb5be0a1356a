"""The exception tree: which error each misuse raises, and that it changes nothing."""

from __future__ import annotations

import os
import pickle
import random

import pytest
from conftest import dict_path, run_in_child
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmdict


def test_error_is_an_exception():
    """shmdict.Error is the library's base exception."""
    assert issubclass(shmdict.Error, Exception)


def test_full_is_error_and_memoryerror():
    """shmdict.Full is both a shmdict.Error and a MemoryError."""
    assert issubclass(shmdict.Full, shmdict.Error)
    assert issubclass(shmdict.Full, MemoryError)


def test_corrupt_is_error_and_valueerror():
    """shmdict.CorruptError is both a shmdict.Error and a ValueError."""
    assert issubclass(shmdict.CorruptError, shmdict.Error)
    assert issubclass(shmdict.CorruptError, ValueError)


@pytest.mark.parametrize("exc", [shmdict.Error, shmdict.Full, shmdict.CorruptError])
def test_exceptions_pickle(exc):
    """Each exception survives a pickle round trip with its type and message."""
    e = pickle.loads(pickle.dumps(exc("boom")))
    assert type(e) is exc
    assert "boom" in str(e)


def test_full_from_set_is_catchable_as_memoryerror(name):
    """A Full raised by set is caught by 'except MemoryError'."""
    with shmdict.new(name, shmdict._lib.lib.SHMDICT_MIN_SIZE) as d:
        with pytest.raises(MemoryError) as info:
            d.set("k", b"x" * (4 * shmdict._lib.lib.SHMDICT_MIN_SIZE))
        assert isinstance(info.value, shmdict.Full)
        assert str(info.value)


# ---- bad input never crashes -----------------------------------------------------------

ALLOWED = (TypeError, ValueError, KeyError, OverflowError, shmdict.Full)

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.lists(st.integers(), max_size=2),
    st.just(object()),
    st.just("k" * 70000),
)
key_like = st.one_of(st.sampled_from(["a", "b", "n", "s"]), anything)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bad_arguments_raise_only_documented_exceptions(d, data):
    """Arbitrary arguments to every method raise only the documented exceptions and corrupt nothing."""
    d["n"] = 1
    d["s"] = "text"
    calls = [
        lambda: d.set(data.draw(key_like), data.draw(anything), data.draw(anything)),
        lambda: d.set(data.draw(key_like), data.draw(anything)),
        lambda: d.get(data.draw(key_like), data.draw(anything)),
        lambda: d[data.draw(key_like)],
        lambda: d.__setitem__(data.draw(key_like), data.draw(anything)),
        lambda: d.__delitem__(data.draw(key_like)),
        lambda: d.delete(data.draw(key_like)),
        lambda: d.incr(data.draw(key_like), data.draw(anything)),
        lambda: d.incr(data.draw(key_like), data.draw(anything), data.draw(anything)),
        lambda: d.incr(
            data.draw(key_like), data.draw(anything), init=data.draw(anything), init_ttl=data.draw(anything)
        ),
        lambda: d.ttl(data.draw(key_like)),
        lambda: d.expire(data.draw(key_like), data.draw(anything)),
        lambda: d.get_keys(data.draw(anything)),
        lambda: data.draw(key_like) in d,
    ]
    for _ in range(5):
        call = data.draw(st.sampled_from(calls))
        try:
            call()
        except ALLOWED:
            pass
    d.check()


def _flip_and_use(path: str, seed: int) -> int:
    """In a child: flip random bytes past the header, then use the dict; any crash or hang fails."""
    rng = random.Random(seed)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for _ in range(rng.choice([1, 4, 32])):
            off = rng.randrange(HEADER_BYTES, size)
            f.seek(off)
            f.write(bytes([rng.randrange(256)]))
    try:
        g = shmdict.get(os.path.basename(path)[len("shmdict.") :])
    except shmdict.CorruptError:
        return 0
    for _ in range(300):
        k = f"k{rng.randrange(120)}"
        try:
            r = rng.random()
            if r < 0.3:
                g.get(k)
            elif r < 0.5:
                g.set(k, rng.choice([1, "s" * rng.randrange(100), b"b" * rng.randrange(300)]))
            elif r < 0.6:
                g.delete(k)
            elif r < 0.7:
                g.incr("counter", 1, init=0)
            elif r < 0.8:
                g.get_keys()
            elif r < 0.9:
                len(g)
            else:
                g.check()
        except (*ALLOWED, shmdict.Error):
            pass
    try:
        g.check()
    except shmdict.CorruptError:
        pass
    return 0


HEADER_BYTES = 16384  # csrc/layout.h HEADER_SIZE: the mutexes live there, and a wedged futex word is out of scope


def test_corrupted_contents_never_crash(name):
    """A dict whose index and records hold garbage raises errors, never crashes or hangs."""
    failures = []
    for seed in range(40):
        nm = f"{name}-{seed}"
        with shmdict.new(nm, "64k") as src:
            for i in range(100):
                src[f"k{i}"] = ["s" * i, b"b" * (2 * i), i, float(i), True][i % 5]
            src.set("t", 1, 100)
            res = run_in_child(_flip_and_use, dict_path(nm), seed, timeout=20)
            if res.exitcode != 0:
                failures.append((seed, res))
    assert failures == []
