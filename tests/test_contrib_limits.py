"""The shmdict:// storage for limits 5.x, driven through limits' own
strategy classes, across forked processes, and under injected crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("limits")

import limits  # noqa: E402
from limits import strategies as strat  # noqa: E402
from limits.aio import strategies as astrat  # noqa: E402
from limits.storage import storage_from_string  # noqa: E402

import shmdict  # noqa: E402
import shmdict._lib as _lib  # noqa: E402
from shmdict.contrib.limits import AsyncSharedDictStorage, SharedDictStorage, _window  # noqa: E402


@pytest.fixture
def storage():
    return storage_from_string("shmdict://lim?size=1m")


ITEM = limits.parse("5/minute")


def test_scheme_registered_and_attach_or_create(shm_dir):
    """shmdict:// builds a SharedDictStorage that creates the dict once and attaches afterwards."""
    a = storage_from_string("shmdict://reg?size=64k")
    b = storage_from_string("shmdict://reg")  # the default size (16m) is for a new dict: it never grows one
    assert isinstance(a, SharedDictStorage) and isinstance(b, SharedDictStorage)
    assert a.dict.size == b.dict.size == 64 << 10
    a.incr("k", 60)
    assert b.get("k") == 1
    c = storage_from_string("shmdict://reg", size="1m")  # a size given grows a smaller dict, as shmdict.open
    assert a.dict.size == c.dict.size == 1 << 20 and c.get("k") == 1
    assert os.listdir(shm_dir) == ["shmdict.reg"]


def test_max_size_lets_the_dict_grow(shm_dir):
    """max_size (in the URI or storage_options) makes a full dict grow instead of failing, whether the
    storage created the dict or attached to it; below the dict's size it is a ValueError."""
    s = storage_from_string("shmdict://grow?size=64k&max_size=4m")
    assert s.dict.stats()["max_size"] == 4 << 20
    for i in range(2000):
        s.incr(f"client-{i}", 60)  # far more counters than 64k holds
    assert s.dict.size > 64 << 10 and s.get("client-0") == 1 and s.get("client-1999") == 1
    with shmdict.open("fixed", "64k") as d:
        t = storage_from_string("shmdict://fixed", max_size="1m")  # attaches: the default size does not apply
        assert t.dict.size == 64 << 10 and d.stats()["max_size"] == 1 << 20
        u = storage_from_string("async+shmdict://fixed?max_size=2m")
        assert u.dict.size == 64 << 10 and d.stats()["max_size"] == 2 << 20
        with pytest.raises(ValueError):
            storage_from_string("shmdict://fixed?max_size=32k")
        assert d.stats()["max_size"] == 2 << 20
    with pytest.raises(ValueError):
        storage_from_string("shmdict://new?size=1m&max_size=64k")
    with pytest.raises(ValueError):
        storage_from_string("shmdict://new?max_size=1m")  # below the default size it would be created with
    assert sorted(os.listdir(shm_dir)) == ["shmdict.fixed", "shmdict.grow"]


@pytest.mark.parametrize("uri", ["shmdict://", "shmdict://bad/name", "shmdict://ok?size=12x"])
def test_bad_uri(uri):
    """A URI without a valid name or size raises ValueError."""
    with pytest.raises(ValueError):
        storage_from_string(uri)


@pytest.mark.parametrize("name", sorted(strat.STRATEGIES))
def test_strategy_allows_exactly_the_limit(storage, name):
    """Each of limits' strategies admits 5 of 8 hits, then reports 0 remaining; clear resets it."""
    limiter = strat.STRATEGIES[name](storage)
    assert [limiter.hit(ITEM, "u") for _ in range(8)] == [True] * 5 + [False] * 3
    assert not limiter.test(ITEM, "u")
    stats = limiter.get_window_stats(ITEM, "u")
    assert stats.remaining == 0
    assert time.time() < stats.reset_time <= time.time() + 61
    assert limiter.hit(ITEM, "other")  # another identifier is independent
    limiter.clear(ITEM, "u")
    assert limiter.test(ITEM, "u") and limiter.get_window_stats(ITEM, "u").remaining == 5


@pytest.mark.parametrize("name", ["moving-window", "sliding-window-counter"])
def test_cost(storage, name):
    """A hit with cost > remaining is refused and consumes nothing."""
    limiter = strat.STRATEGIES[name](storage)
    assert limiter.hit(ITEM, "c", cost=3)
    assert not limiter.hit(ITEM, "c", cost=3)
    assert limiter.hit(ITEM, "c", cost=2)
    assert not limiter.hit(ITEM, "c")
    assert not limiter.hit(ITEM, "d", cost=6)


def test_cost_fixed_window_counts_refused_hits(storage):
    """Fixed window counts a refused hit too, exactly as limits' memory and redis storages do."""
    limiter = strat.FixedWindowRateLimiter(storage)
    assert limiter.hit(ITEM, "c", cost=3)
    assert not limiter.hit(ITEM, "c", cost=3)
    assert not limiter.hit(ITEM, "c", cost=2)
    assert storage.get(ITEM.key_for("c")) == 8


def test_fixed_window_expiry_only_on_creation(storage):
    """incr sets the TTL when it creates the key and keeps it afterwards; get_expiry is absolute."""
    assert storage.incr("k", 60) == 1
    exp = storage.get_expiry("k")
    assert time.time() + 59 < exp <= time.time() + 60
    _lib.clock_shift(30)
    try:
        assert storage.incr("k", 60, amount=4) == 5
        assert 29 < storage.get_expiry("k") - time.time() <= 30
        _lib.clock_shift(31)
        assert storage.get("k") == 0
        assert storage.incr("k", 60) == 1
    finally:
        _lib.clock_shift(-61)
    assert time.time() - 1 < storage.get_expiry("missing") <= time.time()


def test_reset_removes_only_prefixed_keys(storage):
    """reset() deletes every limit of this storage, counts them, and leaves other keys alone."""
    storage.dict["app:config"] = "keep"
    limiter = strat.MovingWindowRateLimiter(storage)
    limiter.hit(ITEM, "a")
    storage.incr("b", 60)
    storage.incr("c", 60)
    assert storage.reset() == 3
    assert storage.dict.get_keys() == ["app:config"]
    assert storage.check()


def test_moving_window_slides(storage):
    """Hits leave the moving window exactly `expiry` seconds after they were made."""
    limiter = strat.MovingWindowRateLimiter(storage)
    item = limits.parse("3/minute")
    try:
        assert limiter.hit(item, "s")
        _lib.clock_shift(20)
        assert limiter.hit(item, "s") and limiter.hit(item, "s")
        assert not limiter.hit(item, "s")
        start, n = storage.get_moving_window(item.key_for("s"), 3, 60)
        assert n == 3 and time.time() - 21 < start < time.time() - 19
        _lib.clock_shift(40.5)  # the first hit is now 60.5 s old
        assert limiter.get_window_stats(item, "s").remaining == 1
        assert limiter.hit(item, "s")
        assert not limiter.hit(item, "s")
    finally:
        _lib.clock_shift(-60.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 4)), max_size=40))
def test_moving_window_matches_model(steps):
    """The C window agrees with a list model over any sequence of (advance, acquire) steps."""
    d = shmdict.open("mwmodel", "256k")
    d.flush_all()
    limit, expiry = 5, 10.0
    model: list[float] = []  # hit times, newest first
    t = 0.0
    try:
        for advance, amount in steps:
            t += advance / 2
            _lib.clock_shift(advance / 2)
            inside = [x for x in model if t - x < expiry]
            ok = 0 < amount <= limit - len(inside)
            if ok:
                model = [t] * amount + inside
            got, n, age = _window(d, "k", limit, expiry, amount)
            assert got == ok
            inside = [x for x in model if t - x < expiry]
            assert n == len(inside)
            assert age == pytest.approx(t - inside[-1] if inside else 0, abs=0.2)
    finally:
        _lib.clock_shift(-t)
        d.close()


def test_window_bad_arguments(storage):
    """The primitive rejects a zero limit and a non-positive expiry, and a key holding another value."""
    with pytest.raises(ValueError):
        _window(storage.dict, "k", 0, 10, 1)
    with pytest.raises(ValueError):
        _window(storage.dict, "k", 3, 0, 1)
    storage.dict["x"] = 1
    with pytest.raises(TypeError):
        _window(storage.dict, "x", 3, 10, 1)
    assert storage.dict["x"] == 1


def _children(n, fn):
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fn(i)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    return [os.waitpid(p, 0)[1] for p in pids]


@pytest.mark.parametrize("name", sorted(strat.STRATEGIES))
def test_forked_workers_share_one_limit(storage, name):
    """A storage built before fork (gunicorn --preload) admits exactly the limit across 4 workers."""
    item = limits.parse("50/minute")
    limiter = strat.STRATEGIES[name](storage)
    storage.dict["admitted"] = 0

    def work(_):
        n = sum(limiter.hit(item, "shared") for _ in range(40))
        storage.dict.incr("admitted", n)

    assert _children(4, work) == [0] * 4
    assert storage.dict["admitted"] == 50
    storage.dict.check()


def test_async_variant(shm_dir):
    """async+shmdict:// registers the aio storage; it shares the dict with the sync one."""
    a = storage_from_string("async+shmdict://lim?size=1m")
    s = storage_from_string("shmdict://lim")
    assert isinstance(a, AsyncSharedDictStorage)

    async def run():
        out = {}
        for name, cls in astrat.STRATEGIES.items():
            lim = cls(a)
            out[name] = [await lim.hit(ITEM, name) for _ in range(6)]
            stats = await lim.get_window_stats(ITEM, name)
            assert stats.remaining == 0
        assert await a.check()
        assert await a.get_expiry("nope") <= time.time()
        return out, await a.reset()

    out, removed = asyncio.run(run())
    assert all(v == [True] * 5 + [False] for v in out.values())
    assert removed == 3  # one key per strategy: counter, window list, current sliding window
    assert s.dict.get_keys() == []


def test_async_storage_exposes_its_dict(shm_dir):
    """async+shmdict:// has the sync storage's .dict and prefix: the same SharedDict, the same keys."""
    a = storage_from_string("async+shmdict://lim?size=1m", key_prefix="rl")
    s = storage_from_string("shmdict://lim", key_prefix="rl")
    assert isinstance(a.dict, shmdict.SharedDict)
    assert a.dict is a.sync.dict and a.prefix == s.prefix == "rl"
    assert a.dict.size == s.dict.size == 1 << 20

    async def run():
        await a.incr("k", 60, amount=3)
        return await a.get("k")

    assert asyncio.run(run()) == 3
    assert a.dict["rl:k"] == 3 and s.get("k") == 3
    a.dict["rl:k"] = 7
    assert s.get("k") == 7


def test_docs_limits_examples_run(shm_dir):
    """The python blocks of docs/limits.md run as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "limits.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        env: dict = {}
        exec(compile(block, "docs/limits.md", "exec"), env)
    storage = env["storage"]
    assert isinstance(storage, AsyncSharedDictStorage) and storage.dict.name == "ratelimit"
    assert os.listdir(shm_dir) == ["shmdict.ratelimit"]


def _next_multiple(t, step):
    return (int(t // step) + 1) * step


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sliding_window_counter_resets_on_clock_aligned_windows(shm_dir, kind):
    """Both storages use clock-aligned windows (limits' TimestampedSlidingWindow), and say so:
    after one hit the reset time is the next multiple of the period, for sync and async alike."""
    from limits.storage.base import TimestampedSlidingWindow

    item = limits.parse("2/hour")
    if kind == "sync":
        storage = storage_from_string("shmdict://sw?size=1m")
        limiter = strat.SlidingWindowCounterRateLimiter(storage)

        def call(fn, *a):
            return fn(*a)
    else:
        storage = storage_from_string("async+shmdict://sw?size=1m")
        limiter = astrat.SlidingWindowCounterRateLimiter(storage)

        def call(fn, *a):
            return asyncio.run(fn(*a))

    assert isinstance(storage, TimestampedSlidingWindow)
    t0 = time.time()
    assert call(limiter.hit, item, "u")
    stats = call(limiter.get_window_stats, item, "u")
    t1 = time.time()
    assert stats.remaining == 1
    # The window boundary may fall between t0 and t1: either boundary is right.
    ends = {_next_multiple(t0, 3600), _next_multiple(t1, 3600)}
    assert any(abs(stats.reset_time - e) < 0.01 for e in ends), (stats.reset_time, ends)
    prev, cur = storage.sliding_window_keys(item.key_for("u"), 3600, t1)
    assert storage.dict.get(f"LIMITS:{cur}", 0) + storage.dict.get(f"LIMITS:{prev}", 0) == 1


_PATHS = {  # how put() stores the new list, and the crash points on that path
    "insert": (0, 0, ["insert.allocated", "insert.filled", "insert.published", "insert.counted"]),
    "grow": (1, 0, ["overwrite.allocated", "overwrite.filled", "overwrite.published", "overwrite.freed",
                    "overwrite.counted"]),
    "inplace": (2, 61, ["overwrite.backed", "overwrite.rewritten"]),  # old hits left the window: same size
}
_CASES = [(path, pt) for path, (_, _, pts) in _PATHS.items() for pt in ["window.built", *pts]]


@pytest.mark.parametrize("path,point", _CASES)
def test_window_crash_is_all_or_nothing(storage, path, point):
    """A worker SIGKILLed at any step of a moving-window acquire leaves the old list or the new one."""
    assert point in _lib.fault_points()
    before, shift, _ = _PATHS[path]
    d = storage.dict
    for _ in range(before):
        assert _window(d, "w", 10, 60, 1)[0]
    old = d.get("w", b"")
    pid = os.fork()
    if pid == 0:
        try:
            _lib.clock_shift(shift)
            _lib.fault_arm(point)
            _window(d, "w", 10, 60, 2)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    t0 = time.monotonic()
    _window(d, "w", 10, 60, 0)  # takes the lock: recovers if the child died holding it
    assert time.monotonic() - t0 < 5
    d.check()
    new = d.get("w", b"")
    if point == "window.built":
        assert new == old
    elif new != old:  # applied: two new hits in front of the old ones still in the window
        kept = old if shift == 0 else b""
        assert len(new) == 16 + len(kept) and new[:8] == new[8:16] and new[16:] == kept
    # the dict goes on working
    assert _window(d, "w", 10, 60, 1)[0]
