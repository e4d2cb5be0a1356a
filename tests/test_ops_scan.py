"""Glob matching, scan cursors and the honesty of free_space, property-tested."""

from __future__ import annotations

import fnmatch
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ops_support import sd, uname  # noqa: F401

import shmdict
from shmdict import _lib

ALPHABET = "ab-[]!*?^é\\"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.text(ALPHABET, max_size=8), key=st.text("ab-[]!^é\\", min_size=1, max_size=8))
def test_glob_matches_fnmatchcase(sd: shmdict.SharedDict, pattern: str, key: str) -> None:
    """get_keys(match=) agrees with fnmatch.fnmatchcase on tricky patterns."""
    sd.flush_all()
    sd[key] = 1
    assert (sd.get_keys(match=pattern) == [key]) == fnmatch.fnmatchcase(key, pattern)


def full_scan(d: shmdict.SharedDict, count: int, match: str | None = None) -> list[str]:
    cur, out = 0, []
    for _ in range(100000):
        cur, keys = d.scan(cur, count, match)
        out += keys
        if cur == 0:
            return out
    raise AssertionError("scan did not terminate")


@pytest.mark.parametrize("count", [1, 7, 100, 10**6])
def test_scan_returns_every_key_once_when_static(sd: shmdict.SharedDict, count: int) -> None:
    """On an unchanging dict a full scan returns each live key exactly once."""
    keys = {f"k{i}" for i in range(3000)}
    sd.set_many({k: 1 for k in keys})
    got = full_scan(sd, count)
    assert sorted(got) == sorted(keys)
    assert sorted(full_scan(sd, count, "k1*")) == sorted(k for k in keys if k.startswith("k1"))


def test_scan_batches_respect_count(sd: shmdict.SharedDict) -> None:
    """A batch holds at least count keys (unless the scan ends) and not many more."""
    sd.set_many({f"k{i}": i for i in range(1000)})
    cur, keys = sd.scan(0, 10)
    assert cur != 0 and 10 <= len(keys) < 40


def test_scan_arguments(sd: shmdict.SharedDict) -> None:
    """scan rejects bad cursors, counts and patterns."""
    with pytest.raises(ValueError):
        sd.scan(0, 0)
    with pytest.raises(ValueError):
        sd.scan(-1)
    with pytest.raises(TypeError):
        sd.scan("0")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sd.scan(0, 10, 5)  # type: ignore[arg-type]
    assert sd.scan(2**40) == (0, [])  # a cursor past the end ends the scan


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), count=st.integers(1, 30))
def test_scan_never_misses_a_key_present_throughout(seed: int, count: int) -> None:
    """Deletes (backward shifts) and inserts between batches never hide a stable key."""
    rng = random.Random(seed)
    with shmdict.new(uname(), "32k") as d:  # a small, crowded index: long clusters
        cap = d.stats()["index_limit"]
        stable = {f"s{i}" for i in range(cap // 3)}
        churn = [f"c{i}" for i in range(cap // 2)]
        d.set_many({k: 1 for k in stable})
        live = set()
        for k in churn:
            if rng.random() < 0.8:
                d[k] = 1
                live.add(k)
        seen: list[str] = []
        cur = 0
        for _ in range(100000):
            cur, keys = d.scan(cur, count)
            seen += keys
            for _ in range(rng.randrange(0, 12)):  # churn between batches
                k = rng.choice(churn)
                if k in live:
                    del d[k]
                    live.discard(k)
                else:
                    try:
                        d[k] = 1
                        live.add(k)
                    except shmdict.Full:
                        pass
            if cur == 0:
                break
        assert stable <= set(seen)
        d.check()


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["set", "del", "ttl"]), st.integers(0, 60), st.integers(0, 3000)),
        max_size=150,
    ),
    shift=st.booleans(),
)
def test_free_space_tells_the_truth(ops: list[tuple[str, int, int]], shift: bool) -> None:
    """A new item of exactly free_space() bytes (key + value) fits; one byte more does not."""
    with shmdict.new(uname(), "32k") as d:
        for op, k, n in ops:
            key = f"k{k}"
            try:
                if op == "set":
                    d[key] = b"v" * n
                elif op == "ttl":
                    d.set(key, b"t" * n, 1)
                else:
                    d.pop(key, None)
            except shmdict.Full:
                pass
        if shift:
            _lib.clock_shift(2)
        fs = d.free_space()
        assert fs >= 0
        key = "new-key"
        if fs + 1 >= len(key):
            with pytest.raises(shmdict.Full):
                d[key] = b"x" * (fs + 1 - len(key))
        if fs >= len(key):
            d[key] = b"x" * (fs - len(key))
        d.check()


def test_scan_with_match_bounds_work_per_batch(sd: shmdict.SharedDict) -> None:
    """With a rare match, batches stay small (count bounds keys examined), some empty."""
    sd.set_many({f"k{i}": i for i in range(2000)})
    sd["needle"] = 1
    cur, batches, found = 0, 0, []
    while True:
        cur, keys = sd.scan(cur, 50, "need*")
        batches += 1
        found += keys
        if cur == 0:
            break
    assert found == ["needle"] and batches > 20
