"""The Django cache backend on a Redis URL: the same settings with another
LOCATION move the cache to Redis, with the same semantics."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("django")
pytest.importorskip("redis")

from redis_fixture import redis_server  # noqa: E402,F401  (fixture)

import test_contrib_django  # noqa: E402,F401  (configures Django settings)
from shmdict.contrib.django import SharedDictCache  # noqa: E402


@pytest.fixture
def cache(redis_server):  # noqa: F811
    c = SharedDictCache(redis_server.url(f"dj{uuid.uuid4().hex[:8]}:"), {})
    yield c
    c.clear()


def test_location_url_selects_redis(cache):
    """A LOCATION with a redis URL stores in Redis, not in a local dict."""
    assert type(cache._dict).__name__ == "RedisDict"


def test_values_roundtrip_and_ints_stay_native(cache):
    """Values of any picklable type round-trip; ints stay native so incr is atomic."""
    for v in (1, -5, 2.5, "text", b"bytes", [1, 2], {"a": (1, 2)}, None, True):
        cache.set("k", v)
        assert cache.get("k") == v and type(cache.get("k")) is type(v)
    cache.set("n", 41)
    assert cache.incr("n") == 42
    assert cache.decr("n", 2) == 40


def test_timeouts_add_touch_delete(cache):
    """Timeout 0 does not store, None never expires; add/touch/delete/has_key behave as Django's."""
    cache.set("zero", 1, timeout=0)
    assert cache.get("zero") is None
    cache.set("forever", 1, timeout=None)
    assert cache.get("forever") == 1
    assert cache.add("a", 1) is True
    assert cache.add("a", 2) is False and cache.get("a") == 1
    assert cache.touch("a", 100) is True and cache.touch("missing", 100) is False
    assert cache.has_key("a")
    assert cache.delete("a") is True and cache.delete("a") is False
    with pytest.raises(ValueError):
        cache.incr("missing")


def test_many_and_clear_stay_in_the_prefix(cache, redis_server):  # noqa: F811
    """get_many/set_many/delete_many work, and clear() removes only this cache's prefix."""
    other = SharedDictCache(redis_server.url(f"other{uuid.uuid4().hex[:8]}:"), {})
    try:
        other.set("keep", 1)
        assert cache.set_many({"x": 1, "y": "two"}) == []
        assert cache.get_many(["x", "y", "z"]) == {"x": 1, "y": "two"}
        cache.delete_many(["x"])
        assert cache.get_many(["x", "y"]) == {"y": "two"}
        cache.clear()
        assert cache.get("y") is None
        assert other.get("keep") == 1
    finally:
        other.clear()
