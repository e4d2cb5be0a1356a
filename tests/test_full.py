"""Behaviour when the dict is full, and reuse of freed space."""

from __future__ import annotations

import random

import pytest
from conftest import MIN_SIZE, snapshot, unique_name

import shmdict


def fill(sd: shmdict.SharedDict, size_of, prefix: str = "k", limit: int = 10**6) -> int:
    """Store prefix0, prefix1, ... with values of size_of(i) bytes until Full; returns how many fit."""
    for i in range(limit):
        try:
            sd[f"{prefix}{i}"] = b"v" * size_of(i)
        except shmdict.Full:
            return i
    raise AssertionError(f"never became full after {limit} items")


@pytest.fixture
def small(name):
    sd = shmdict.new(name, MIN_SIZE)
    yield sd
    sd.close()


def test_fill_until_full(small):
    """A minimum-size dict fills up and then raises Full."""
    n = fill(small, lambda i: 100)
    assert 20 < n < MIN_SIZE // 100
    assert len(small) == n
    for i in range(n):
        assert small[f"k{i}"] == b"v" * 100
    small.check()


def test_full_leaves_dict_unchanged(small):
    """Every operation refused with Full leaves the contents unchanged."""
    small.set("t", b"t", 1000)
    fill(small, lambda i: 100)
    before = snapshot(small)
    keys = list(before)
    attempts = [
        lambda: small.set("brand-new", b"x" * 200),
        lambda: small.set("brand-new", b"x" * 200, 50),
        lambda: small.__setitem__("brand-new", "x" * 500),
        lambda: small.set(keys[0], b"x" * 5000),
        lambda: small.set(keys[1], "y" * 5000, 10),
        lambda: small.set("k" * 20000, 1),
    ]
    for attempt in attempts:
        with pytest.raises(shmdict.Full):
            attempt()
        assert snapshot(small) == before
        assert 999 < small.ttl("t") <= 1000
        small.check()


def test_growing_incr_on_full_dict(small):
    """A creating incr on a full dict either creates the key or raises Full, changing nothing."""
    fill(small, lambda i: 24)
    fill(small, lambda i: 1, prefix="tiny")
    before = snapshot(small)
    for i in range(50):
        try:
            assert small.incr(f"c{i}", 1, init=0) == 1
        except shmdict.Full:
            assert snapshot(small) == before
            break
        before = snapshot(small)
    else:
        pytest.fail("incr never raised Full on a full dict")
    small.check()


def test_item_bigger_than_dict_is_full(d):
    """An item larger than the dict could ever hold raises Full, even when empty."""
    with pytest.raises(shmdict.Full):
        d.set("k", b"x" * (2 * d.size))
    with pytest.raises(shmdict.Full):
        d["k"] = "x" * d.size
    assert len(d) == 0
    d.check()
    d["k"] = "fits"
    assert d["k"] == "fits"


def test_key_bigger_than_small_dict_is_full(small):
    """A valid 60000-byte key cannot fit in a 32 KiB dict and raises Full."""
    with pytest.raises(shmdict.Full):
        small["k" * 60000] = 1
    assert len(small) == 0


def test_overwrite_in_full_dict_with_same_size_works(small):
    """A full dict still accepts overwrites that need no more room."""
    n = fill(small, lambda i: 100)
    for i in range(n):
        small[f"k{i}"] = b"w" * 100
    for i in range(n):
        small[f"k{i}"] = b"s" * 10
    assert all(small[f"k{i}"] == b"s" * 10 for i in range(n))
    small.check()


def test_delete_frees_room(small):
    """After deleting from a full dict, new items fit again."""
    n = fill(small, lambda i: 100)
    for i in range(0, n, 2):
        del small[f"k{i}"]
    refill = fill(small, lambda i: 100, prefix="r")
    assert refill >= n // 2
    small.check()


def test_identical_fill_delete_cycles(small):
    """Filling with the same items and deleting them all reaches the same count every time."""
    rng = random.Random(1)
    sizes = [rng.randrange(0, 400) for _ in range(5000)]
    counts = []
    for _ in range(20):
        n = fill(small, lambda i: sizes[i])
        counts.append(n)
        small.check()
        keys = small.get_keys()
        assert len(keys) == n
        rng.shuffle(keys)
        for k in keys:
            assert small.delete(k)
        assert len(small) == 0
        small.check()
    assert min(counts) >= counts[0] - 1, counts


def fresh_count(size, sizes: list[int]) -> int:
    """How many of these items a brand-new dict of this size holds."""
    with shmdict.new(unique_name("fresh"), size) as sd:
        return fill(sd, lambda i: sizes[i])


def test_random_fill_delete_cycles(name):
    """Twenty cycles of random-size fills and full deletes each hold about what a fresh dict holds."""
    rng = random.Random(2)
    ratios = []
    with shmdict.new(name, "128k") as sd:
        for _ in range(20):
            sizes = [rng.randrange(0, 600) for _ in range(5000)]
            n = fill(sd, sizes.__getitem__)
            ratios.append(n / fresh_count("128k", sizes))
            sd.check()
            keys = sd.get_keys()
            rng.shuffle(keys)
            for k in keys:
                del sd[k]
            assert len(sd) == 0
            sd.check()
    assert min(ratios) >= 0.75, ratios


def test_flush_all_restores_full_capacity(small):
    """After flush_all a full dict holds as many items as when fresh."""
    n = fill(small, lambda i: 100)
    small.flush_all()
    assert fill(small, lambda i: 100) == n
    small.check()


def test_space_freed_by_small_items_serves_large_ones(name):
    """Space freed by deleting many small items can hold large items afterwards."""
    with shmdict.new(name, "256k") as sd:
        fresh_large = fill(sd, lambda i: 4000, prefix="L")
        sd.flush_all()
        fill(sd, lambda i: 40, prefix="s")
        for k in sd.get_keys():
            del sd[k]
        assert len(sd) == 0
        again = fill(sd, lambda i: 4000, prefix="L")
        assert again >= fresh_large // 2, (again, fresh_large)
        sd.check()


def test_space_freed_by_large_items_serves_small_ones(name):
    """Space freed by deleting large items can hold many small items afterwards."""
    with shmdict.new(name, "256k") as sd:
        fresh_small = fill(sd, lambda i: 40, prefix="s")
        sd.flush_all()
        fill(sd, lambda i: 4000, prefix="L")
        for k in sd.get_keys():
            del sd[k]
        again = fill(sd, lambda i: 40, prefix="s")
        assert again >= fresh_small // 2, (again, fresh_small)
        sd.check()


def test_growing_values_in_place(small):
    """Growing and shrinking values of a full dict either succeeds or raises Full leaving the old value."""
    n = fill(small, lambda i: 50)
    model = {f"k{i}": b"v" * 50 for i in range(n)}
    rng = random.Random(3)
    fulls = 0
    for _ in range(500):
        k = f"k{rng.randrange(n)}"
        new = b"g" * rng.randrange(0, 300)
        try:
            small[k] = new
        except shmdict.Full:
            fulls += 1
        else:
            model[k] = new
        assert small[k] == model[k]
    assert fulls > 0
    assert dict(small.items()) == model
    small.check()


@pytest.mark.slow
def test_many_random_fill_delete_cycles(name):
    """Two hundred mixed cycles on a 64 KiB dict never drift towards spurious Full."""
    rng = random.Random(4)
    choices = [0, 8, 30, 100, 300, 1000, 3000]
    ratios = []
    with shmdict.new(name, "64k") as sd:
        for cycle in range(200):
            sizes = [rng.choice(choices) for _ in range(5000)]
            if len(sd) == 0:
                ratios.append(fill(sd, sizes.__getitem__) / fresh_count("64k", sizes))
            else:
                fill(sd, sizes.__getitem__, prefix=f"{cycle}-")
            keys = sd.get_keys()
            rng.shuffle(keys)
            cut = len(keys) if cycle % 5 == 4 else len(keys) * rng.randrange(3, 10) // 10
            for k in keys[:cut]:
                del sd[k]
            if cycle % 10 == 0:
                sd.check()
        sd.check()
    assert len(ratios) >= 30
    assert min(ratios) >= 0.75, ratios
