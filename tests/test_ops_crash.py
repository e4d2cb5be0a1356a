"""Fault injection: a process SIGKILLed inside each new mutating operation.

The child arms one named crash point and runs the operation; it dies holding
the lock. The parent's next call must return promptly, check() must pass, and
the dict must hold the state from before or after the operation -- never a
mix (multi-item operations: each item all-or-nothing, as documented).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from ops_support import contents, fork, join, killed, uname  # noqa: F401

import shmdict
from shmdict import _lib

NEW_POINTS = [
    "flush_expired.deleted",
    "len.reclaimed",
    "evict.deleted",
    "cas.matched",
    "set_many.item",
    "limit.stored",
    "limit.ttl",
]


def test_new_points_are_registered() -> None:
    """Every new crash point is known to the C core."""
    assert set(NEW_POINTS) <= set(_lib.fault_points())


def prompt(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.setdefault("v", fn()), daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the next operation after the crash hung"
    return box.get("v")


def crash(d: shmdict.SharedDict, point: str, op: Callable[[shmdict.SharedDict], Any], nth: int = 1) -> None:
    """Run op in a child that dies at the nth hit of point; then recover in the parent."""

    def child() -> int:
        _lib.fault_arm(point, nth)
        op(d)
        return 3  # the crash point was not reached

    status = join(fork(child))
    assert killed(status), f"{point} not reached (status {status})"
    prompt(lambda: d.get("anything"))
    d.check()
    assert d.stats()["recoveries"] >= 1


def fresh(size: str = "1m", evict: bool = False) -> shmdict.SharedDict:
    return shmdict.new(uname(), size, evict=evict)


@pytest.mark.parametrize("nth", [1, 3])
def test_flush_expired_killed(nth: int) -> None:
    """flush_expired killed mid-way: live items intact, every expired one reclaimable."""
    with fresh() as d:
        d.set_many({f"live{i}": i for i in range(20)})
        d.set_many({f"exp{i}": i for i in range(10)}, exptime=1)
        _lib.clock_shift(2)
        before = contents(d)
        crash(d, "flush_expired.deleted", lambda d: d.flush_expired(), nth)
        assert contents(d) == before
        freed = d.flush_expired()
        assert 10 - nth <= freed <= 10
        assert d.stats()["records"] == 20


def test_len_killed_after_reclaiming() -> None:
    """len() killed after its reclaim: the count is still right."""
    with fresh() as d:
        d.set_many({f"k{i}": i for i in range(10)}, exptime=1)
        d["stay"] = 1
        _lib.clock_shift(2)
        crash(d, "len.reclaimed", len)
        assert len(d) == 1


@pytest.mark.parametrize("point", ["evict.deleted", "insert.allocated", "insert.published"])
def test_evicting_set_killed(point: str) -> None:
    """A set killed while evicting: the new key is absent or whole; others intact or evicted."""
    with fresh("64k", evict=True) as d:
        i = 0
        while d.stats()["evictions"] == 0:
            d[f"k{i}"] = b"v" * 100
            i += 1
        before = contents(d)
        crash(d, point, lambda d: d.set("new", b"n" * 3000))
        after = contents(d)
        new = after.pop("new", None)
        assert new in (None, (bytes, b"n" * 3000))
        assert all(before[k] == v for k, v in after.items())
        assert set(after) <= set(before)


@pytest.mark.parametrize(
    "point", ["cas.matched", "overwrite.allocated", "overwrite.published", "overwrite.freed", "overwrite.counted"]
)
def test_cas_killed(point: str) -> None:
    """cas killed anywhere: the old value or the new one, whole."""
    with fresh() as d:
        d["k"] = "old"
        d["other"] = 1
        crash(d, point, lambda d: d.cas("k", "old", "n" * 500, 10))
        assert d["k"] in ("old", "n" * 500)
        if d["k"] == "old":
            assert d.ttl("k") == 0
        assert d["other"] == 1


@pytest.mark.parametrize("point", ["overwrite.backed", "overwrite.rewritten", "overwrite.inplace"])
def test_cas_in_place_killed(point: str) -> None:
    """cas rewriting in place killed: the old value or the new one."""
    with fresh() as d:
        if point == "overwrite.inplace":
            d["k"], old, new = 1, 1, 2
        else:
            d["k"], old, new = "aaaa", "aaaa", "bbbb"
        crash(d, point, lambda d: d.cas("k", old, new))
        assert d["k"] in (old, new)


@pytest.mark.parametrize("nth", [1, 4])
def test_set_many_killed_between_items(nth: int) -> None:
    """set_many killed after nth items: exactly a prefix is stored."""
    with fresh() as d:
        items = {f"k{i}": f"v{i}" for i in range(10)}
        crash(d, "set_many.item", lambda d: d.set_many(items), nth)
        assert dict(d.items()) == {k: items[k] for k in list(items)[:nth]}


@pytest.mark.parametrize("point", ["insert.filled", "insert.counted", "overwrite.published"])
def test_set_many_killed_inside_an_item(point: str) -> None:
    """set_many killed inside its first item: that item is all or nothing, the rest absent."""
    with fresh() as d:
        d["k0"] = "old"
        items = {"k0": "new-value-longer", "k1": 1, "k2": 2}
        crash(d, point, lambda d: d.set_many(items))
        got = dict(d.items())
        assert got.get("k0") in ("old", "new-value-longer")
        if got.get("k0") == "old":
            assert set(got) == {"k0"}


@pytest.mark.parametrize("point", ["limit.stored", "limit.ttl"])
def test_limit_killed(point: str) -> None:
    """limit killed before commit: the bucket is exactly as before."""
    with fresh() as d:
        d.limit("ip", 10, 3600)
        state = d["ip"], d.ttl("ip")
        crash(d, point, lambda d: d.limit("ip", 10, 3600))
        assert d["ip"] == state[0]
        ok, remaining, _ = d.limit("ip", 10, 3600)
        assert ok and remaining == 8


@pytest.mark.parametrize("point", ["insert.published", "insert.counted"])
def test_limit_new_key_killed(point: str) -> None:
    """limit creating its item killed: the item is absent or whole."""
    with fresh() as d:
        crash(d, point, lambda d: d.limit("ip", 10, 3600))
        assert "ip" not in d or d.limit("ip", 10, 3600)[1] == 8


@pytest.mark.parametrize("op", ["add", "replace", "safe_set", "safe_add"])
def test_set_variants_killed(op: str) -> None:
    """add/replace/safe_set/safe_add killed mid-store: before or after, whole."""
    with fresh() as d:
        if op == "replace":
            d["k"] = "old"
        point = "overwrite.published" if op == "replace" else "insert.published"
        crash(d, point, lambda d: getattr(d, op)("k", "x" * 300))
        assert d.get("k") in (None, "old", "x" * 300)


def test_get_or_set_holder_killed() -> None:
    """A get_or_set whose computing process dies: the lock frees and the next caller computes."""
    with fresh() as d:
        crash(d, "insert.published", lambda d: d.get_or_set("page", lambda: "first"))
        assert "page" not in d
        assert prompt(lambda: d.get_or_set("page", lambda: "second", lock_timeout=5)) == "second"
