"""Trust, tried the way a hostile local user would: planted files, modes that
smuggle bits, a lock holder that stops itself, a damaged lock word, and the
waits that must end anyway (who may open a dict; waits that always end)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import header_layout
import pytest
from conftest import call_with_timeout, run_in_child, unique_name

import shmdict
from shmdict import _lib

NOBODY = 65534
NOGROUP = 65534
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root to plant files owned by another uid")
NAN, INF = float("nan"), float("inf")


def _path(shm_dir: str, name: str) -> str:
    return os.path.join(shm_dir, f"shmdict.{name}")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shmdict", *args], capture_output=True, text=True, timeout=60)


# ---- who may open a dict -------------------------------------------------------------


def _plant_as_nobody(name: str) -> int:
    """What a squatter does: create the service's name before it starts."""
    os.setgroups([])
    os.setresgid(NOGROUP, NOGROUP, NOGROUP)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    shmdict.open(name, "64k")  # 0600, owned by nobody
    return 0


@needs_root
def test_squatted_name_is_refused(shm_dir: str) -> None:
    """A dict another user created first is refused by get, open, connect and the CLI; nothing is written to it."""
    os.chmod(shm_dir, 0o1777)  # like /dev/shm: world-writable, sticky
    name = unique_name()
    assert run_in_child(_plant_as_nobody, name).exitcode == 0
    assert os.stat(_path(shm_dir, name)).st_uid == NOBODY
    for attach in (lambda: shmdict.get(name), lambda: shmdict.open(name, "64k"),
                   lambda: shmdict.connect(f"shm://{name}"), lambda: shmdict.connect(f"shm://{name}?size=64k")):
        with pytest.raises(PermissionError, match=r"owned by uid 65534.*shared="):
            attach()
    r = _cli("get", name, "api_token")
    assert r.returncode == 3 and "owned by uid 65534" in r.stderr
    # The planter's file is untouched: nothing was stored in it.
    os.chown(_path(shm_dir, name), 0, 0)  # (only so that this root test may look inside)
    with shmdict.get(name) as d:
        assert len(d) == 0


@needs_root
def test_foreign_owner_opt_in(shm_dir: str) -> None:
    """shared=<user> (name or uid) trusts that one other owner; URL ?shared= and CLI --shared too."""
    os.chmod(shm_dir, 0o1777)
    name = unique_name()
    assert run_in_child(_plant_as_nobody, name).exitcode == 0
    for who in ("nobody", NOBODY, str(NOBODY)):
        with shmdict.get(name, shared=who) as d:
            d["k"] = 1
    with shmdict.connect(f"shm://{name}?shared=nobody") as d:
        assert d["k"] == 1
    assert _cli("get", name, "k", "--shared", "nobody").stdout.strip() == "1"
    with pytest.raises(PermissionError):
        shmdict.get(name, shared=True)  # True opens up the mode, not the owner
    with pytest.raises(ValueError, match="no such user"):
        shmdict.get(name, shared="no-such-user-xyz")
    with pytest.raises(TypeError):
        shmdict.get(name, shared=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666, 0o660])
def test_group_or_world_writable_needs_opt_in(shm_dir: str, mode: int) -> None:
    """A file writable by its group or others is refused unless shared=True (get, open, connect, CLI)."""
    name = unique_name()
    with shmdict.new(name, "64k", mode=mode) as owner:
        owner["k"] = "v"
        for attach in (lambda: shmdict.get(name), lambda: shmdict.open(name, "64k"),
                       lambda: shmdict.connect(f"shm://{name}")):
            with pytest.raises(PermissionError, match=r"writable by .*shared=True"):
                attach()
        with shmdict.get(name, shared=True) as d:
            assert d["k"] == "v"
        with shmdict.open(name, "64k", shared=True) as d:
            assert d["k"] == "v"
        with shmdict.connect(f"shm://{name}?shared=1") as d:
            assert d["k"] == "v"
        assert _cli("get", name, "k").returncode == 3
        assert _cli("get", name, "k", "--shared").stdout.strip() == "v"


def test_read_only_for_others_needs_no_opt_in(shm_dir: str) -> None:
    """0o644 / 0o640: readable by others, writable only by the owner -- trusted without opt-in."""
    for mode in (0o644, 0o640, 0o600, 0o400 | 0o200):
        name = unique_name()
        with shmdict.new(name, "64k", mode=mode), shmdict.get(name) as d:
            d["k"] = 1


def test_check_is_on_the_descriptor(shm_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C core itself refuses (fstat on what it opened): bypassing Python changes nothing."""
    name = unique_name()
    with shmdict.new(name, "64k", mode=0o666):
        p = _lib.ffi.new("shmdict_t **")
        why = _lib.ffi.new("shmdict_out_t *")
        rc = _lib.lib.shmdict_attach(shm_dir.encode(), name.encode(), 0, -1, why, p)
        assert rc == _lib.lib.SHMDICT_EUNTRUSTED
        assert why.i == os.geteuid() and why.len & 0o777 == 0o666
        assert _lib.lib.shmdict_attach(shm_dir.encode(), name.encode(), _lib.lib.SHMDICT_TRUST_SHARED, -1,
                                       _lib.ffi.NULL, p) == 0
        _lib.lib.shmdict_close(p[0])


def _worker_as_www_data(name: str, shared: bool) -> int:
    os.setgroups([])
    os.setresgid(NOGROUP, NOGROUP, NOGROUP)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    try:
        d = shmdict.get(name, shared=shared)
    except PermissionError:
        return 13
    d.incr("hits", init=0)
    return 0


@needs_root
def test_multi_user_recipe(shm_dir: str) -> None:
    """The documented recipe: a root master creates the dict 0o660 for the workers' group; workers attach with shared=True."""
    os.chmod(shm_dir, 0o1777)
    name = unique_name()
    with shmdict.new(name, "64k", mode=0o660, group="nogroup" if _has_group("nogroup") else NOGROUP) as d:
        assert os.stat(_path(shm_dir, name)).st_gid == NOGROUP
        assert run_in_child(_worker_as_www_data, name, False).exitcode == 13  # no opt-in: refused
        assert run_in_child(_worker_as_www_data, name, True).exitcode == 0
        assert run_in_child(_worker_as_www_data, name, True).exitcode == 0
        assert d["hits"] == 2


def _has_group(name: str) -> bool:
    import grp

    try:
        return grp.getgrnam(name).gr_gid == NOGROUP
    except KeyError:
        return False


def test_group_at_creation(shm_dir: str) -> None:
    """group= (name or gid) gives the file its group from the start: new, open, URL and CLI."""
    gid = os.getegid()
    for n, make in enumerate([
        lambda nm: shmdict.new(nm, "64k", mode=0o660, group=gid),
        lambda nm: shmdict.open(nm, "64k", mode=0o640, group=str(gid)),
        lambda nm: shmdict.connect(f"shm://{nm}?size=64k&mode=660&group={gid}"),
    ]):
        name = f"g{n}{unique_name()}"
        with make(name):
            assert os.stat(_path(shm_dir, name)).st_gid == gid
    assert _cli("new", "gcli", "64k", "--mode", "660", "--group", str(gid)).returncode == 0
    assert os.stat(_path(shm_dir, "gcli")).st_gid == gid
    with pytest.raises(ValueError, match="no such group"):
        shmdict.new(unique_name(), "64k", group="no-such-group-xyz")
    with pytest.raises(TypeError):
        shmdict.new(unique_name(), "64k", group=1.5)  # type: ignore[arg-type]


def test_pickle_keeps_trust_and_timeout(shm_dir: str) -> None:
    """A pickled handle re-attaches with the same shared= and lock_timeout."""
    import pickle

    name = unique_name()
    with shmdict.new(name, "64k", mode=0o660):
        d = shmdict.get(name, shared=True, lock_timeout=2.5)
        e = pickle.loads(pickle.dumps(d))
        assert e.lock_timeout == 2.5 and e._shared is True
        e.close()
        d.close()


# ---- modes ---------------------------------------------------------------------------

BAD_MODES = [0o4777, 0o4600, 0o2600, 0o1600, 0o700, 0o610, 0o601, 0o777, 0o10000, -1]


@pytest.mark.parametrize("mode", BAD_MODES)
def test_modes_are_read_write_only(shm_dir: str, mode: int) -> None:
    """setuid, setgid, sticky and execute bits raise ValueError and create nothing: new, open, URL, CLI, C."""
    name = unique_name()
    with pytest.raises(ValueError):
        shmdict.new(name, "1m", mode=mode)
    with pytest.raises(ValueError):
        shmdict.open(name, "1m", mode=mode)
    if mode >= 0:
        with pytest.raises(ValueError):
            shmdict.connect(f"shm://{name}?size=1m&mode={mode:o}")
        r = _cli("new", name, "1m", "--mode", f"{mode:o}")
        assert r.returncode == 2, r.stderr
        p = _lib.ffi.new("shmdict_t **")
        assert _lib.lib.shmdict_create(shm_dir.encode(), name.encode(), 1 << 20, mode, -1, 0, p) == _lib.lib.SHMDICT_EINVAL
    assert os.listdir(shm_dir) == []


# ---- names and URLs --------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a\nb", "a\tb", "a\rb", "a\x00b", "a\x7fb", "a\x1bb", "\nab"])
def test_control_characters(shm_dir: str, bad: str) -> None:
    """Control characters in names and URLs raise ValueError (urlsplit would silently drop some)."""
    for call in (lambda: shmdict.new(bad, "64k"), lambda: shmdict.get(bad), lambda: shmdict.open(bad, "64k"),
                 lambda: shmdict.connect(f"shm://{bad}?size=64k"), lambda: shmdict.connect(f"shm://{bad}"),
                 lambda: shmdict.connect(f"shm://ab?size=64k{bad}"), lambda: shmdict.connect(f"redis://h{bad}/0")):
        with pytest.raises(ValueError):
            call()
    assert os.listdir(shm_dir) == []
    p = _lib.ffi.new("shmdict_t **")
    raw = bad.encode()
    if "\x00" not in bad:  # (a NUL ends a C string: that case is Python's alone)
        assert _lib.lib.shmdict_create(shm_dir.encode(), raw, 1 << 16, 0o600, -1, 0, p) == _lib.lib.SHMDICT_EINVAL
        assert _lib.lib.shmdict_attach(shm_dir.encode(), raw, 0, -1, _lib.ffi.NULL, p) == _lib.lib.SHMDICT_EINVAL


def test_newline_url_opens_nothing(shm_dir: str) -> None:
    """The report's case: shm://a<newline>b?size=64k used to open the dict 'ab'."""
    with pytest.raises(ValueError, match="control character"):
        shmdict.connect("shm://a\nb?size=64k")
    with pytest.raises(ValueError):
        shmdict.connect("shm://a%0Ab?size=64k")  # percent-encoded: still not a valid name
    assert not os.path.exists(_path(shm_dir, "ab"))


# ---- non-finite timeouts -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_non_finite_timeouts(d: shmdict.SharedDict, bad: float) -> None:
    """Every timeout a caller gives rejects NaN and infinities with ValueError, before waiting."""
    name = d.name
    calls = [
        lambda: d.wait("k", timeout=bad),
        lambda: d.watch(timeout=bad),
        lambda: d.lock("n", timeout=bad),
        lambda: d.lock("n").acquire(timeout=bad),
        lambda: d.get_or_set("k", lambda: 1, lock_timeout=bad),
        lambda: shmdict.get(name, lock_timeout=bad),
        lambda: shmdict.open(name, "64k", lock_timeout=bad),
        lambda: shmdict.new(unique_name(), "64k", lock_timeout=bad),
        lambda: shmdict.connect(f"shm://{name}?lock_timeout={bad}"),
        lambda: asyncio.run(d.await_change("k", timeout=bad)),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call_with_timeout(call, 10)
    assert _cli("get", name, "k", "--lock-timeout", str(bad)).returncode == 2


def test_lock_timeout_arguments(shm_dir: str) -> None:
    """lock_timeout: seconds >= 0 or None; the default is DEFAULT_LOCK_TIMEOUT."""
    name = unique_name()
    with shmdict.new(name, "64k") as d:
        assert d.lock_timeout == shmdict.DEFAULT_LOCK_TIMEOUT == 10.0
        assert shmdict.get(name, lock_timeout=None).lock_timeout is None
        assert shmdict.connect(f"shm://{name}?lock_timeout=none").lock_timeout is None
        assert shmdict.connect(f"shm://{name}?lock_timeout=0.5").lock_timeout == 0.5
        with pytest.raises(ValueError):
            shmdict.get(name, lock_timeout=-1)
        with pytest.raises(TypeError):
            shmdict.get(name, lock_timeout="5")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            shmdict.connect(f"shm://{name}?lock_timeout=soon")
    assert issubclass(shmdict.LockTimeout, shmdict.Error) and issubclass(shmdict.LockTimeout, TimeoutError)


# ---- a lock holder that stops itself ------------------------------------------------------

MUTEX_OFFSET = header_layout.offset("lock")


def _hold_lock_and_stop(path: str) -> int:
    """Take the dict's own mutex exactly as the library does, then SIGSTOP ourselves."""
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, 8192)
    buf = (ctypes.c_char * 8192).from_buffer(m)
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.pthread_mutex_lock(ctypes.c_void_p(ctypes.addressof(buf) + MUTEX_OFFSET))
    if rc not in (0, 130):  # 130: EOWNERDEAD is fine too
        return 50
    os.kill(os.getpid(), signal.SIGSTOP)
    return 0


@contextlib.contextmanager
def _stopped_holder(shm_dir: str, lock_timeout: float | None) -> Iterator[tuple[str, int, shmdict.SharedDict]]:
    """A dict (with k = 1) whose lock is held by a stopped process: (name, its pid, a handle
    attached before it stopped, with this lock_timeout). Afterwards the holder is killed and
    the dict must be unchanged and sound."""
    name = unique_name()
    owner = shmdict.new(name, "1m")
    owner["k"] = 1
    early = shmdict.get(name, lock_timeout=lock_timeout)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 99
        try:
            code = _hold_lock_and_stop(_path(shm_dir, name))
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), status
    try:
        yield name, pid, early
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        # The kernel marks the mutex owner-died: the next locker recovers, nothing was changed.
        assert owner["k"] == 1
        owner.check()
        early.close()
        owner.close()


@pytest.fixture
def stopped_holder(shm_dir: str) -> Iterator[tuple[str, int, shmdict.SharedDict]]:
    """A stopped lock holder, and a handle attached before it stopped with lock_timeout=0.1."""
    with _stopped_holder(shm_dir, 0.1) as held:
        yield held


def test_lock_timeout_names_the_stopped_holder(stopped_holder: tuple[str, int, shmdict.SharedDict]) -> None:
    """Attaching (its first call takes the lock) raises LockTimeout naming the stopped holder's PID; so does the CLI."""
    name, pid, _ = stopped_holder
    with pytest.raises(shmdict.LockTimeout) as e:
        call_with_timeout(lambda: shmdict.get(name, lock_timeout=0.1), 10)
    assert e.value.holder == pid and str(pid) in str(e.value) and "stopped" in str(e.value)
    r = _cli("get", name, "k", "--lock-timeout", "0.1")
    assert r.returncode == 3 and str(pid) in r.stderr, r.stderr


def test_python_operations_time_out(stopped_holder: tuple[str, int, shmdict.SharedDict]) -> None:
    """The mapping methods that write, incr (that needs the dict lock: a TTL to set, a missing
    key), len, items and check raise LockTimeout (naming the holder) on a handle with
    lock_timeout=0.1; nothing is changed (the fixture checks k afterwards). Keyed reads take no
    lock (csrc/optread.c): they answer, and so do keys and scan; so would an incr of k alone (in
    place, under its stripe's lock: tests/test_stripes.py)."""
    _, pid, d = stopped_holder
    assert call_with_timeout(lambda: (d["k"], d.get("k"), "k" in d, d.ttl("k"), d.get_many(["k"]),
                                      d.get_keys(), d.scan()), 10) == (1, 1, True, 0, {"k": 1}, ["k"], (0, ["k"]))
    calls = [
        lambda: d.__setitem__("k", 2),
        lambda: d.__setitem__("k", "s"), lambda: d.set("k", 2.5, 10), lambda: d.incr("k", 1, 10),
        lambda: d.incr("new", 1.5, init=0), lambda: d.delete("k"), lambda: d.pop("k"), lambda: len(d),
        lambda: d.items(), lambda: d.set_many({"k": 3}), lambda: d.rpush("l", 1),
        lambda: d.check(), lambda: d.flush_all(), lambda: d.stats(),
    ]
    for call in calls:
        with pytest.raises(shmdict.LockTimeout) as e:
            call_with_timeout(call, 20)
        assert e.value.holder == pid


def test_operations_time_out_and_change_nothing(stopped_holder: tuple[str, int, shmdict.SharedDict],
                                                shm_dir: str) -> None:
    """Every kind of operation but a keyed read, on a handle with lock_timeout=0.1, raises LockTimeout while the holder is stopped."""
    name, pid, _ = stopped_holder
    # Attach before the stop is impossible here (the fixture stops first), so attach by the C
    # core with the trust check only, then bound the handle: SharedDict's own first call would wait.
    p = _lib.ffi.new("shmdict_t **")
    assert _lib.lib.shmdict_attach(shm_dir.encode(), name.encode(), 0, -1, _lib.ffi.NULL, p) == 0
    h = _lib.ffi.gc(p[0], _lib.lib.shmdict_close)
    _lib.lib.shmdict_set_lock_timeout(h, 0.1)
    out = _lib.ffi.new("shmdict_out_t *")
    buf = _lib.ffi.new("char[]", 64)
    # a keyed read takes no lock (csrc/optread.c), even on a handle that never locked
    assert call_with_timeout(lambda: _lib.lib.shmdict_get(h, b"k", 1, out, buf, 64), 10) == _lib.lib.SHMDICT_T_INT
    calls = [
        lambda: _lib.lib.shmdict_set(h, b"k", 1, _lib.lib.SHMDICT_T_INT, 2, 0.0, _lib.ffi.NULL, 0, 0.0, 0),
        lambda: _lib.lib.shmdict_delete(h, b"k", 1),
        # (a missing key: an incr of k would run in place, under its stripe's lock alone)
        lambda: _lib.lib.shmdict_incr(h, b"m", 1, _lib.lib.SHMDICT_T_INT, 1, 0.0, 0, 0, 0.0, 0.0, 0, 0.0, out),
        lambda: _lib.lib.shmdict_len(h),
        lambda: _lib.lib.shmdict_flush_all(h),
    ]
    for call in calls:
        rc, holder = call_with_timeout(lambda: (call(), _lib.lib.shmdict_lock_holder()), 10)
        assert rc == _lib.lib.SHMDICT_ELOCKTIMEOUT, rc
        assert holder == pid


@pytest.fixture
def unbounded_and_stopped(shm_dir: str) -> Iterator[tuple[shmdict.SharedDict, int]]:
    """A handle with no lock bound of its own (lock_timeout=None), then a stopped holder."""
    with _stopped_holder(shm_dir, None) as (_, pid, d):
        yield d, pid


def test_call_timeouts_are_honoured(unbounded_and_stopped: tuple[shmdict.SharedDict, int]) -> None:
    """wait, watch, get_or_set, lock() and NamedLock.acquire end by their own timeouts although the
    handle itself would wait for the lock forever (a hang fails the test through the watchdog)."""
    d, pid = unbounded_and_stopped
    with pytest.raises(TimeoutError) as e:
        call_with_timeout(lambda: d.wait("k", timeout=0.2, since=1), 20)
    assert isinstance(e.value, shmdict.LockTimeout) and e.value.holder == pid
    with pytest.raises(TimeoutError):
        call_with_timeout(lambda: list(d.watch(timeout=0.2)), 20)
    with pytest.raises(TimeoutError):
        call_with_timeout(lambda: d.get_or_set("new", lambda: 5, lock_timeout=0.2), 20)
    # Named locks are separate from the dict's lock: they are taken, and they time out by themselves.
    lk = d.lock("job", timeout=0.2)
    assert call_with_timeout(lk.acquire, 20) is True
    assert call_with_timeout(lambda: d.lock("job").acquire(timeout=0.2), 20) is False
    lk.release()
    with pytest.raises(TimeoutError):
        call_with_timeout(lambda: asyncio.run(d.await_change("k", timeout=0.3, since=1)), 20)


def test_garbage_lock_word_does_not_hang(shm_dir: str) -> None:
    """A damaged mutex word (header offset 256) makes operations raise LockTimeout, not hang; one with
    the owner-died bit set is recovered like a dead holder's."""
    for word in (0x3FFFFFF0, 4000000, 0x80000000 | 4000000):
        name = unique_name()
        with shmdict.new(name, "64k") as owner:
            owner["k"] = 1
            with open(_path(shm_dir, name), "r+b") as f:
                f.seek(MUTEX_OFFSET)
                f.write(word.to_bytes(4, "little"))
            with pytest.raises(shmdict.LockTimeout) as e:
                call_with_timeout(lambda: shmdict.get(name, lock_timeout=0.1), 10)
            assert e.value.holder is None
            with pytest.raises(shmdict.LockTimeout):
                call_with_timeout(lambda: shmdict.get(name, lock_timeout=0))
            with open(_path(shm_dir, name), "r+b") as f:  # repaired by hand: usable again
                f.seek(MUTEX_OFFSET)
                f.write(b"\0\0\0\0")
            assert owner["k"] == 1
    name = unique_name()
    with shmdict.new(name, "64k") as owner:
        owner["k"] = 1
        with open(_path(shm_dir, name), "r+b") as f:
            f.seek(MUTEX_OFFSET)
            f.write((0xDEADBEEF).to_bytes(4, "little"))  # 0x40000000: FUTEX_OWNER_DIED
        assert call_with_timeout(lambda: shmdict.get(name, lock_timeout=0.1)["k"]) == 1
        owner.check()


# ---- wait() sees every change ------------------------------------------------------------

NOTIFY_OFFSET = header_layout.offset("notify_seq")  # 129 futex words; the last is the ring's


def _waiter_armed(shm_dir: str, name: str) -> bool:
    with open(_path(shm_dir, name), "rb") as f:
        f.seek(NOTIFY_OFFSET)
        data = f.read(128 * 4)
    return any(int.from_bytes(data[i : i + 4], "little") & 0x80000000 for i in range(0, len(data), 4))


def _wait_in_thread(d: shmdict.SharedDict, shm_dir: str, key: str) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = d.wait(key, timeout=10)
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not _waiter_armed(shm_dir, d.name):  # the waiter is asleep on its futex word
        assert time.monotonic() < deadline, ("the waiter never armed", box)
        time.sleep(0.001)
    return t, box


@pytest.mark.parametrize("gone", ["delete", "pop", "expire"])
def test_wait_sees_set_then_gone(shm_dir: str, gone: str) -> None:
    """A missing key set and then deleted (or expired) before the waiter looks again is a change."""
    name = unique_name()
    with shmdict.new(name, "1m") as d:
        t, box = _wait_in_thread(d, shm_dir, "k")
        if gone == "expire":
            d.set("k", 1, exptime=0.5)
            _lib.clock_shift(1.0)
        else:
            d["k"] = 1
            d.delete("k") if gone == "delete" else d.pop("k")
        try:
            t.join(15)
        finally:
            if gone == "expire":
                _lib.clock_shift(-1.0)
        assert not t.is_alive()
        assert "error" not in box, box
        assert box["value"] in (None, 1)  # 1 only if it looked while the key was still there


# ---- watch() with keys of any size ----------------------------------------------------------


def test_watch_long_keys(d: shmdict.SharedDict) -> None:
    """A 5,000-byte key (and the longest key there is) is delivered, and so is every later event."""
    big, huge = "k" * 5000, "h" * 65535
    it = d.watch(timeout=1)
    d[big] = 1
    d["small"] = 2
    assert list(it) == [shmdict.Event("set", big), shmdict.Event("set", "small")]
    it = d.watch(timeout=1)
    d[huge] = 3  # larger than half of this dict's event ring: it cannot be kept...
    d["after"] = 4
    assert list(it) == [shmdict.Event("lost", 1), shmdict.Event("set", "after")]  # ...and says so
    with shmdict.new(unique_name(), "4m", events=4096) as e:  # a ring that holds it
        it = e.watch(timeout=1)
        e[huge] = 1
        e["after"] = 2
        assert list(it) == [shmdict.Event("set", huge), shmdict.Event("set", "after")]


def test_awatch_long_key(d: shmdict.SharedDict) -> None:
    async def main() -> list[shmdict.Event]:
        out = []
        agen = d.awatch(timeout=1)

        async def write() -> None:
            await asyncio.sleep(0.1)
            d["k" * 4094] = 1
            d["small"] = 2

        task = asyncio.ensure_future(write())
        async for ev in agen:  # (the cursor is pinned at the first iteration, before the writes land)
            out.append(ev)
        await task
        return out

    assert call_with_timeout(lambda: asyncio.run(main()), 20) == [
        shmdict.Event("set", "k" * 4094), shmdict.Event("set", "small")]


# ---- float overflow ---------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "delta"), [(1e308, 1e308), (-1e308, -1e308), (1.7e308, 0.2e308),
                                              (-1.7e308, -0.2e308)])
def test_float_incr_overflow(d: shmdict.SharedDict, start: float, delta: float) -> None:
    """A float result that overflows raises OverflowError and leaves the value unchanged (enforced in C)."""
    d["x"] = start
    with pytest.raises(OverflowError):
        d.incr("x", delta)
    assert d["x"] == start and type(d["x"]) is type(start)
    with pytest.raises(OverflowError):
        d.incr("new", delta, init=start)
    assert "new" not in d


def test_float_incr_near_the_edge(d: shmdict.SharedDict) -> None:
    d["x"] = 1e308
    assert d.incr("x", 1e307) == 1e308 + 1e307
    d["i"] = INF  # an inf already stored stays inf, as Python arithmetic has it
    assert d.incr("i", 1.0) == INF


# ---- asyncio in a forked child -----------------------------------------------------------------


def _await_in_child(name: str) -> int:
    d = shmdict.get(name)

    async def main() -> object:
        task = asyncio.ensure_future(d.await_change("k", timeout=10))
        await asyncio.sleep(0.05)
        d["k"] = "child"
        return await task

    return 0 if asyncio.run(main()) == "child" else 7


def test_asyncio_after_fork(d: shmdict.SharedDict) -> None:
    """await_change and awatch work in a child forked after the parent used them; no thread is left behind."""

    async def parent() -> object:
        task = asyncio.ensure_future(d.await_change("p", timeout=10))
        await asyncio.sleep(0.05)
        d["p"] = 1
        return await task

    assert asyncio.run(parent()) == 1
    deadline = time.monotonic() + 10
    while any(t.name == "shmdict-wait" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a waiting thread outlived its await"
        time.sleep(0.01)
    assert run_in_child(_await_in_child, d.name, timeout=30).exitcode == 0


def test_no_fork_warning_from_library_threads(d: shmdict.SharedDict) -> None:
    """After the library's asyncio helpers ran, fork() sees no thread of theirs (Python 3.12 would warn)."""
    import warnings

    async def once() -> None:
        with pytest.raises(TimeoutError):
            await d.await_change("nothing", timeout=0.05)
        async for _ in d.awatch(timeout=0.05):
            pass

    asyncio.run(once())
    deadline = time.monotonic() + 10
    while any(t.name == "shmdict-wait" for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_in_child(lambda: 0).exitcode == 0
    assert not [w for w in caught if "fork" in str(w.message)]


def test_wait_cursor_spans_calls(d: shmdict.SharedDict) -> None:
    """The cursor a wait keeps across calls (EINTR retries, await_change's slices): a set and a
    delete of a missing key between two calls is still a change."""
    cursor = d._wait_cursor(None)
    with pytest.raises(TimeoutError):
        d._wait("k", 0, cursor, None)  # first look: missing; pins the cursor
    d["k"] = 1
    del d["k"]
    assert d._wait("k", 0, cursor, None) is None  # between the slices: seen
    with pytest.raises(TimeoutError):
        d._wait("k", 0, d._wait_cursor(None), None)  # a fresh wait starts after it: nothing new


def test_await_change_sees_set_then_delete(d: shmdict.SharedDict) -> None:
    async def main() -> object:
        task = asyncio.ensure_future(d.await_change("k", timeout=10))
        await asyncio.sleep(0)  # await_change has taken its first look
        d["k"] = 1
        del d["k"]
        return await task

    assert call_with_timeout(lambda: asyncio.run(main()), 20) in (None, 1)  # 1: it looked in between


@pytest.mark.parametrize("libc", [b"M", b"G", b"\x00"])
def test_other_c_library_refused_by_name(shm_dir: str, libc: bytes) -> None:
    """A dict stamped by a process of another C library (musl and glibc mutexes are both
    40 bytes on x86-64, laid out differently) is refused with a message that says so."""
    import struct

    from shmdict import _lib

    mine = int(_lib.lib.shmdict_abi())
    name = unique_name()
    with shmdict.new(name, "64k") as d:
        d["k"] = "v"
        abi = (mine & 0x00FFFFFF) | libc[0] << 24
        with open(_path(shm_dir, name), "r+b") as f:
            f.seek(24)
            f.write(struct.pack("<I", abi))
        if abi == mine:
            assert shmdict.get(name)["k"] == "v"
            return
        with pytest.raises(shmdict.CorruptError, match="C library|unknown C library") as e:
            shmdict.get(name)
        assert "glibc" in str(e.value)  # this process's own library, named
        assert d["k"] == "v"  # the dict itself is untouched
