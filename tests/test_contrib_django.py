"""SharedDictCache against real Django: the cache API's semantics, atomic incr
across processes, and (when Django's own tests are available) BaseCacheTests."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        CACHES={"default": {"BACKEND": "shmdict.contrib.django.SharedDictCache", "LOCATION": "djsettings",
                            "OPTIONS": {"size": "1m"}}},
    )

import shmdict  # noqa: E402
import shmdict._lib as _lib  # noqa: E402
from shmdict.contrib.django import SharedDictCache  # noqa: E402


def make(**params):
    params.setdefault("OPTIONS", {"size": "1m"})
    return SharedDictCache("djcache", params)


class Unpicklable:
    def __getstate__(self):
        raise pickle.PickleError("no")


def test_configured_through_caches_setting():
    """CACHES with BACKEND/LOCATION/OPTIONS builds the backend on a dict of that name and size."""
    from django.core.cache import caches

    c = caches["default"]
    assert isinstance(c, SharedDictCache)
    c.set("k", {"a": [1, 2]})
    with shmdict.get("djsettings") as d:
        assert d.size == 1 << 20 and len(d) == 1
    assert c.get("k") == {"a": [1, 2]}
    c.clear()


def test_values_roundtrip_and_ints_stay_native():
    """Any picklable value round-trips; plain ints are stored as numbers, everything else pickled."""
    c = make()
    values = {"i": 41, "big": 2**70, "b": True, "f": 1.5, "s": "héllo", "raw": b"\x00\xff", "none": None,
              "obj": {"x": (1, 2), "y": {3}}}
    for k, v in values.items():
        c.set(k, v)
    for k, v in values.items():
        got = c.get(k)
        assert got == v and type(got) is type(v)
    assert c._dict[":1:i"] == 41  # default key_func: "<prefix>:<version>:<key>"
    assert type(c._dict[":1:b"]) is bytes and type(c._dict[":1:big"]) is bytes
    assert c.get("missing", "dflt") == "dflt"
    c.set("none", None)
    assert c.get("none", "dflt") is None


def test_timeouts():
    """None never expires, 0 and negative store nothing, the default is TIMEOUT, floats work."""
    c = make(TIMEOUT=60)
    c.set("default", 1)
    assert 59 < c._dict.ttl(":1:default") <= 60
    c.set("forever", 1, None)
    assert c._dict.ttl(":1:forever") == 0
    c.set("float", 1, 100.2)
    assert 100 < c._dict.ttl(":1:float") <= 100.2
    c.set("month", 1, 60 * 60 * 24 * 30 + 1)  # stays relative (no memcached absolute-time rule)
    assert c.get("month") == 1
    c.set("zero", 1, 0)
    c.set("neg", 1, -5)
    assert c.get("zero") is None and c.get("neg") is None
    c.set("gone", 1)
    c.set("gone", 2, 0)  # a zero timeout also removes an existing value
    assert not c.has_key("gone")
    assert c.add("z", 1, 0) is True and c.get("z") is None
    c.set("short", "x", 1)
    _lib.clock_shift(1.5)
    try:
        assert c.get("short") is None and not c.has_key("short")
    finally:
        _lib.clock_shift(-1.5)


def test_add_touch_delete_has_key():
    """add only stores absent keys; touch resets or removes the TTL; delete reports existence."""
    c = make(TIMEOUT=60)
    assert c.add("a", "first") is True
    assert c.add("a", "second") is False and c.get("a") == "first"
    assert c.touch("a", None) is True and c._dict.ttl(":1:a") == 0
    assert c.touch("a", 5) is True and 4 < c._dict.ttl(":1:a") <= 5
    assert c.touch("nope") is False
    assert c.touch("a", 0) is True and c.get("a") is None
    assert c.has_key("a") is False and "a" not in c
    c.set("d", 1)
    assert c.delete("d") is True and c.delete("d") is False
    with pytest.raises(pickle.PickleError):
        c.add("u", Unpicklable())
    with pytest.raises(pickle.PickleError):
        c.set("u", Unpicklable())
    assert not c.has_key("u")


def test_incr_decr():
    """incr/decr add atomically and keep the TTL; missing keys give ValueError, non-ints TypeError."""
    c = make(TIMEOUT=60)
    c.set("n", 41)
    assert c.incr("n") == 42 and c.decr("n", 10) == 32 and c.get("n") == 32
    assert 59 < c._dict.ttl(":1:n") <= 60
    with pytest.raises(ValueError):
        c.incr("missing")
    c.set("s", "text")
    with pytest.raises(TypeError):
        c.incr("s")
    c.set("none", None)
    with pytest.raises(TypeError):
        c.decr("none")


def test_many_and_clear():
    """get_many/set_many/delete_many act per key; set_many reports no failures; clear empties the dict."""
    c = make()
    assert c.set_many({"a": 1, "b": "two", "c": [3]}) == []
    assert c.get_many(["a", "b", "c", "x"]) == {"a": 1, "b": "two", "c": [3]}
    c.delete_many(["a", "c", "x"])
    assert c.get_many(["a", "b", "c"]) == {"b": "two"}
    c.clear()
    assert c.get_many(["b"]) == {} and len(c._dict) == 0


def test_versions_prefix_and_key_func():
    """Versions, KEY_PREFIX and KEY_FUNCTION separate keys in one dict; incr_version moves a value."""
    a = make(KEY_PREFIX="app")
    v2 = make(KEY_PREFIX="app", VERSION=2)
    custom = make(KEY_FUNCTION=lambda key, prefix, version: f"custom|{key}")
    a.set("k", "v1")
    v2.set("k", "v2")
    custom.set("k", "c")
    assert a.get("k") == "v1" and v2.get("k") == "v2" and a.get("k", version=2) == "v2"
    assert custom.get("k") == "c" and custom._dict["custom|k"]
    assert a.incr_version("k") == 2
    assert a.get("k") is None and a.get("k", version=2) == "v1"
    assert sorted(a._dict.get_keys()) == ["app:2:k", "custom|k"]


def test_close_keeps_the_mapping_and_threads_share_it():
    """close() after a request leaves the cache usable; backends built per thread share one handle."""
    c = make()
    c.set("k", 1)
    c.close()
    assert c.get("k") == 1
    handles = []
    t = threading.Thread(target=lambda: handles.append(make()._dict))
    t.start()
    t.join()
    assert handles[0] is c._dict


def test_incr_is_atomic_across_processes():
    """Forked workers incrementing one key never lose an update (the base class's get+set would)."""
    c = make()
    c.set("hits", 0, None)
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(2000):
                    c.incr("hits")
            finally:
                os._exit(0)
        pids.append(pid)
    for p in pids:
        os.waitpid(p, 0)
    assert c.get("hits") == 8000
    c._dict.check()


def test_visible_to_another_process():
    """A value set in one process is read by a separate interpreter configured the same way."""
    c = make()
    c.set("shared", {"answer": 42})
    code = ("from shmdict.contrib.django import SharedDictCache as C;"
            "c = C('djcache', {'OPTIONS': {'size': '1m'}}); print(c.get('shared')['answer'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "42"


def test_max_size_grows_a_full_cache():
    """OPTIONS max_size lets a full cache grow instead of raising Full, whether the backend created the
    dict or attached to it; without size, the default (64m) never grows an existing dict."""
    c = make(OPTIONS={"size": "64k", "max_size": "4m"})
    for i in range(500):
        c.set(f"page:{i}", "x" * 500)  # about 250k: four times what the dict was created with
    assert c._dict.size > 64 << 10 and c.get("page:0") == "x" * 500 and c.get("page:499") == "x" * 500
    assert c._dict.stats()["max_size"] == 4 << 20
    with shmdict.open("sized", "64k") as d:
        a = SharedDictCache("sized", {})  # the default size is for a new dict only
        assert a._dict.size == 64 << 10 and d.stats()["max_size"] is None
        _handles_forget("sized")
        b = SharedDictCache("sized", {"OPTIONS": {"MAX_SIZE": "1m"}})
        assert b._dict.size == 64 << 10 and d.stats()["max_size"] == 1 << 20
        _handles_forget("sized")
        with pytest.raises(ValueError):
            SharedDictCache("sized", {"OPTIONS": {"max_size": "32k"}})  # below the dict's size
        with pytest.raises(ValueError):
            SharedDictCache("other", {"OPTIONS": {"size": "1m", "max_size": "lots"}})


def _handles_forget(name: str) -> None:
    """Drop the process's shared handle for ``name``, so the next backend attaches afresh."""
    from shmdict.contrib import django as backend

    with backend._handles_lock:
        backend._handles.pop((shmdict._dict._dir(), name), None)


def _django_tests_dir() -> str | None:
    d = os.environ.get("DJANGO_TESTS_DIR")
    if d:
        return d
    cached = Path.home() / ".cache" / "shmdict" / f"django-{django.get_version()}-tests"
    return str(cached) if (cached / "cache" / "tests.py").exists() else None


@pytest.mark.skipif(_django_tests_dir() is None,
                    reason="Django's tests/ is not in the wheel: set DJANGO_TESTS_DIR or run "
                           "`python tests/django_cache_suite.py --fetch` once")
def test_django_base_cache_tests():
    """Django's own BaseCacheTests pass against SharedDictCache (run in a fresh interpreter)."""
    script = Path(__file__).with_name("django_cache_suite.py")
    p = subprocess.run([sys.executable, str(script), _django_tests_dir()], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "failures 0, errors 0" in p.stdout
