"""Waiting calls keep their contracts: timeouts honoured against a busy or
stopped lock holder, version() never a value when the lock is not had,
wait(since=) sees a missing key set and deleted, watch filters in the core
and reports expiry when a TTL passes, and nested calls (signal handlers)
read their own results. Run on both bindings (SHMDICT_PURE=1 for cffi).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import mmap
import os
import signal
import time
from collections.abc import Iterator

import pytest

import header_layout
import shmdict
from conftest import call_with_timeout, dict_path, run_in_child, unique_name
from test_trust import _stopped_holder

MUTEX_OFFSET = header_layout.offset("lock")


# ---- a lock holder that lets go after a while ------------------------------------------


def _hold_lock_for(path: str, seconds: float, wfd: int) -> None:
    """Take the dict's mutex as the library does, tell the parent, hold it, release it."""
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, 8192)
    buf = (ctypes.c_char * 8192).from_buffer(m)
    libc = ctypes.CDLL(None, use_errno=True)
    addr = ctypes.c_void_p(ctypes.addressof(buf) + MUTEX_OFFSET)
    libc.pthread_mutex_lock(addr)
    os.write(wfd, b"x")
    time.sleep(seconds)
    libc.pthread_mutex_unlock(addr)


def _busy_for(name: str, seconds: float) -> int:
    """Fork a process that holds the dict's lock for ``seconds`` (returns once it holds it)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            _hold_lock_for(dict_path(name), seconds, w)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    return pid


@pytest.fixture
def stopped(shm_dir: str) -> Iterator[tuple[shmdict.SharedDict, int]]:
    """A handle with no lock bound of its own (lock_timeout=None), and a stopped lock holder."""
    with _stopped_holder(shm_dir, None) as (_, pid, d):
        yield d, pid


def test_watch_and_awatch_wait_their_whole_timeout_for_a_stopped_holder(stopped):
    """watch(timeout=1) and awatch(timeout=0.6) wait that long for the lock, then raise LockTimeout
    naming the holder (they used to try the lock with a zero timeout and fail at once)."""
    d, pid = stopped
    t0 = time.monotonic()
    with pytest.raises(shmdict.LockTimeout) as e:
        call_with_timeout(lambda: list(d.watch(timeout=1)), 20)
    assert 0.9 <= time.monotonic() - t0 < 5 and e.value.holder == pid

    async def drain() -> None:
        async for _ in d.awatch(timeout=0.6):
            pass

    t0 = time.monotonic()
    with pytest.raises(shmdict.LockTimeout):
        call_with_timeout(lambda: asyncio.run(drain()), 20)
    assert 0.5 <= time.monotonic() - t0 < 5


def test_version_raises_lock_timeout(shm_dir: str):
    """version() of a missing key reads where the event ring stands, under the lock: LockTimeout
    when the lock is not had in time (it used to return 0, "missing"). A present key's version is
    read without the lock, so a stopped holder that is not writing it does not delay it."""
    with _stopped_holder(shm_dir, 0.1) as (_, pid, d):
        assert call_with_timeout(lambda: d.version("k"), 20) > 0
        with pytest.raises(shmdict.LockTimeout) as e:
            call_with_timeout(lambda: d.version("missing"), 20)
        assert e.value.holder == pid


def test_watch_waits_for_a_busy_lock(d):
    """A lock held for 0.3 s delays watch() and awatch(); neither raises (a zero-timeout try used to)."""
    pid = _busy_for(d.name, 0.3)
    assert call_with_timeout(lambda: list(d.watch(timeout=0.5)), 20) == []
    os.waitpid(pid, 0)

    async def first() -> list[shmdict.Event]:
        seen = []
        async for ev in d.awatch(timeout=0.5):
            seen.append(ev)
        return seen

    pid = _busy_for(d.name, 0.3)
    assert call_with_timeout(lambda: asyncio.run(first()), 20) == []
    os.waitpid(pid, 0)


def test_wait_since_a_missing_version_sees_set_then_delete(d):
    """A missing key set and deleted by another process after version() is a change for wait(since=)."""
    v = d.version("k")
    run_in_child(lambda: (shmdict.get(d.name).set("k", 1), shmdict.get(d.name).delete("k")))
    assert d.wait("k", timeout=0, since=v) is None
    v = d.version("k")  # and nothing since: it times out
    with pytest.raises(TimeoutError):
        d.wait("k", timeout=0.05, since=v)


def test_expire_event_when_the_ttl_passes(d):
    """watch() reports expire when a key's TTL passes, with no other writer (it used to wait for a reclaim)."""
    w = d.watch("t*", timeout=3)
    d.set("t1", 1, 0.2)
    t0 = time.monotonic()
    events = []
    for ev in w:
        events.append(ev)
        if ev.op == "expire":
            break
    assert events == [("set", "t1"), ("expire", "t1")]
    assert time.monotonic() - t0 < 1.5
    assert "t1" not in d


def _flood(name: str, seconds: float, hits: int) -> None:
    """Write other keys as fast as one process can; set "hit" every 0.1 s the first ``hits`` times."""
    d = shmdict.get(name)
    end = time.monotonic() + seconds
    nxt, i = time.monotonic() + 0.1, 0
    while time.monotonic() < end:
        for j in range(32):
            d[f"other{j}"] = i
        if hits and time.monotonic() >= nxt:
            d["hit"] = hits
            hits -= 1
            nxt += 0.1
        i += 1


def test_watch_match_is_filtered_in_the_core(shm_dir: str):
    """Under a flood of writes to other keys, watch("hit*") sees matching changes and only them, and
    ends by its own timeout while the flood goes on ("lost" used to restart the timeout forever)."""
    name = unique_name()
    with shmdict.new(name, "8m", events=4096) as d:
        w = d.watch("hit*", timeout=0.6)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                _flood(name, 2.5, 5)
                code = 0
            finally:
                os._exit(code)
        t0 = time.monotonic()
        events = call_with_timeout(lambda: list(w), 20)
        took = time.monotonic() - t0
        os.waitpid(pid, 0)
    hits = [ev for ev in events if ev.op != "lost"]
    assert hits and all(ev == ("set", "hit") for ev in hits), events[:5]
    assert took < 2.2  # the last hit comes at ~0.5 s: ended by the timeout while the flood went on


# ---- nested calls ---------------------------------------------------------------------------


def test_nested_calls_from_a_signal_handler_return_their_own_values(d):
    """A SIGALRM storm whose handler reads other keys never changes what the interrupted calls return."""
    d["i"] = 1
    d["s"] = "outer"
    d.set("t", 1, 1000)
    d["hi"] = 2
    d["hs"] = "inner-value"
    d.set("ht", 1, 5)
    bad = []

    def handler(signum, frame):
        if d.get("hi") != 2 or d.get("hs") != "inner-value" or not 0 < d.ttl("ht") <= 5:
            bad.append("handler")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
    try:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            for _ in range(200):
                if d.get("i") != 1:
                    bad.append("get int")
                if d.get("s") != "outer":
                    bad.append("get str")
                t = d.ttl("t")
                if not 990 < t <= 1000:
                    bad.append(f"ttl {t}")
                if d.incr("n", init=0) <= 0:
                    bad.append("incr")
                if d.get_many(["i", "s"]) != {"i": 1, "s": "outer"}:
                    bad.append("get_many")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    assert not bad, bad[:10]


def test_str_subclass_keys_are_their_own_utf8(d):
    """A str subclass overriding encode() is stored under the str's own UTF-8 on every path."""

    class Sneaky(str):
        def encode(self, *args: object, **kwargs: object) -> bytes:  # type: ignore[override]
            return b"other"

    k = Sneaky("key")
    d[k] = 1
    assert d.get("key") == 1 and "other" not in d
    assert d.ttl(k) == 0 and d.get(k) == 1 and k in d
    d.set_many({Sneaky("m"): 2})
    assert d.get_many([Sneaky("m"), k]) == {"m": 2, "key": 1}
    assert sorted(d.get_keys()) == ["key", "m"]
    assert d.delete(k) is True and "key" not in d


# ---- the event ring's bounds ---------------------------------------------------------------

EV_HEAD = header_layout.offset("ev_head")


def test_scribbled_ring_bounds_are_reported_lost_at_once(d):
    """A head far past the tail (more than the ring holds) is reported as lost, without walking it."""
    w = d.watch(timeout=0.5)
    d["a"] = 1
    with open(dict_path(d.name), "r+b") as f:
        f.seek(EV_HEAD)
        head = int.from_bytes(f.read(8), "little")
        f.seek(EV_HEAD)
        f.write((head + (1 << 40)).to_bytes(8, "little"))
    t0 = time.monotonic()
    first = call_with_timeout(lambda: next(w), 10)
    assert first.op == "lost" and time.monotonic() - t0 < 1
    assert call_with_timeout(lambda: list(w), 10) == []  # reported once, not at every look
    w2 = d.watch(timeout=0.3)
    d["b"] = 1  # the next append starts the ring over: watching goes on
    assert call_with_timeout(lambda: list(w2), 10) == [("set", "b")]


# ---- dump's target ------------------------------------------------------------------------


def test_dump_refuses_a_target_that_is_not_a_regular_file(d, tmp_path):
    """A FIFO, a directory or a symbolic link at the path is refused (OSError) and left as it was."""
    d["k"] = 1
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = tmp_path / "real"
    target.write_bytes(b"keep")
    link = tmp_path / "link"
    link.symlink_to(target)
    for p in (fifo, tmp_path, link):
        with pytest.raises(OSError):
            d.dump(str(p))
    assert stat_kind(fifo) == "fifo" and link.is_symlink() and target.read_bytes() == b"keep"
    assert sorted(os.listdir(tmp_path)) == ["fifo", "link", "real"]  # no temporary file left
    assert d.dump(str(tmp_path / "ok")) == 1


def stat_kind(p: object) -> str:
    import stat

    m = os.lstat(p).st_mode  # type: ignore[arg-type]
    return "fifo" if stat.S_ISFIFO(m) else "reg" if stat.S_ISREG(m) else "other"


def test_a_killed_dumps_temporary_file_goes_at_the_next_dump(d, tmp_path):
    """The temporary file of a dump killed midway is removed by the next dump to the same path."""
    for i in range(2000):
        d[f"k{i}"] = "x" * 200
    path = str(tmp_path / "snap")

    def dump_and_die() -> None:
        from shmdict import _snapshot

        real = _snapshot.Writer.block

        def block(self, count, payload):  # type: ignore[no-untyped-def]
            real(self, count, payload)
            os.kill(os.getpid(), signal.SIGKILL)  # after the first block is written

        _snapshot.Writer.block = block  # type: ignore[method-assign]
        shmdict.get(d.name).dump(path)

    assert run_in_child(dump_and_die).killed
    left = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert left, "the child died before its temporary file existed"
    assert d.dump(path) == 2000
    assert os.listdir(tmp_path) == ["snap"]


# ---- the CLI and a stopped lock holder ----------------------------------------------------------


def test_cli_ls_never_waits_and_stats_names_the_holder(shm_dir: str):
    """ls reads headers without the lock (it used to wait ~10 s per stuck dict); stats gives up after
    its short default lock timeout and names the stopped holder."""
    from test_trust import _cli

    with _stopped_holder(shm_dir, None) as (name, pid, _):
        t0 = time.monotonic()
        r = _cli("ls", "--json")
        assert r.returncode == 0 and time.monotonic() - t0 < 5, r.stderr
        rows = {row["name"]: row for row in json.loads(r.stdout)}
        assert rows[name]["records"] == 1 and "error" not in rows[name]
        t0 = time.monotonic()
        r = _cli("stats", name)
        took = time.monotonic() - t0
        assert r.returncode == 3 and str(pid) in r.stderr and "stopped" in r.stderr, r.stderr
        assert took < 6  # the default lock timeout of stats is 1 s (plus the interpreter's start)


# ---- private entry points take no addresses ------------------------------------------------


def test_attach_takes_a_handle_object_not_an_address(d):
    """SharedDictBase._attach refuses anything but a cffi handle (an int address used to segfault)."""
    base = type(d).__mro__[1]
    if base.__module__ != "shmdict._speed":
        pytest.skip("the pure base has no handle of its own to take")
    for bad in ((1, "x"), (object(), "x"), (shmdict._lib.ffi.new("int *"), "x"), (1, None, "x")):
        with pytest.raises(TypeError):
            base()._attach(*bad)
    from shmdict import _speed

    with pytest.raises(TypeError):  # bind(api_address, ...) is gone: the module asks the core itself
        _speed.bind(1, None, None, None, None, {})


# ---- the wake after a repair that ends in an error ----------------------------------------


def _lock_mark_corrupt_and_die(path: str) -> None:
    """Take the dict's mutex, mark the table corrupt, and die holding it (SIGKILL)."""
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, 8192)
    buf = (ctypes.c_char * 8192).from_buffer(m)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.pthread_mutex_lock(ctypes.c_void_p(ctypes.addressof(buf) + MUTEX_OFFSET))
    m[CORRUPT_OFFSET : CORRUPT_OFFSET + 8] = (1).to_bytes(8, "little")
    os.kill(os.getpid(), signal.SIGKILL)


CORRUPT_OFFSET = header_layout.offset("corrupt")


def test_a_repair_that_fails_still_wakes_the_waiters(d):
    """A locker that repairs after a dead holder and then finds the dict corrupt wakes the dict's
    waiters at once (the wake used to be left in a thread-local mask for some later unlock)."""
    import threading

    d["k"] = 1
    raised: list[float] = []

    def waiter() -> None:
        try:
            d.wait("k", timeout=10)
        except shmdict.CorruptError:
            raised.append(time.monotonic())

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.15)  # the waiter sleeps now, for up to a 1 s slice
    assert run_in_child(_lock_mark_corrupt_and_die, dict_path(d.name)).killed
    t0 = time.monotonic()
    with pytest.raises(shmdict.CorruptError):
        d.set("x", 1)  # a locker: EOWNERDEAD, repair (wakes every word), then the corrupt mark: CorruptError
    t.join(10)
    assert raised and raised[0] - t0 < 0.5, [r - t0 for r in raised]
    d.flush_all()  # repairs the table


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf"), 2**63, 1e308, 1e10])
def test_handle_lock_timeout_follows_the_rule(d, bad):
    """lock_timeout of new/get/open/connect and the CLI's --lock-timeout follow the one timeout rule."""
    from test_trust import _cli

    for call in (
        lambda: shmdict.get(d.name, lock_timeout=bad),
        lambda: shmdict.open(d.name, "64k", lock_timeout=bad),
        lambda: shmdict.new(unique_name(), "64k", lock_timeout=bad),
    ):
        with pytest.raises(ValueError, match="lock_timeout"):
            call()
    if bad == -1:
        with pytest.raises(ValueError):
            shmdict.connect(f"shm://{d.name}?lock_timeout=-1")
        assert _cli("get", d.name, "k", "--lock-timeout", "-1").returncode == 2
        assert _cli("get", d.name, "k", "--lock-timeout", "1e10").returncode == 2


def test_timeout_zero_looks_once(d):
    """watch(timeout=0) and awatch(timeout=0) return what is there now, without waiting."""
    w = d.watch(timeout=0)
    d["a"] = 1

    async def drain() -> list[shmdict.Event]:
        seen = []
        async for ev in d.awatch(timeout=0):
            seen.append(ev)
        return seen

    assert list(w) == [("set", "a")]
    assert asyncio.run(drain()) == []
