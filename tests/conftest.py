"""Shared fixtures and helpers for the shmdict test suite.

Every test runs with ``SHMDICT_DIR`` pointing at a fresh directory on tmpfs, so
tests behave like production (``/dev/shm``) without touching real dicts.
Long torture tests are marked ``slow`` and run only with ``SHMDICT_LONG=1``
or when ``-m slow`` is given.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest


def _test_the_installed_package() -> None:
    """Run against the installed shmdict when the source tree beside tests/ is not built.

    In an unpacked sdist whose package was installed the normal way (how
    distributions test a package), ``python -m pytest`` puts the folder first on
    ``sys.path``, and its ``shmdict/`` has no compiled modules. Drop that entry,
    and tell the Pythons the tests start (``python -m shmdict``, examples) to do
    the same (PYTHONSAFEPATH). A developer build in place is used as it is.
    """
    from importlib.machinery import EXTENSION_SUFFIXES

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = os.path.join(root, "shmdict")
    if any(os.path.exists(os.path.join(src, "_shmdict" + sfx)) for sfx in EXTENSION_SUFFIXES):
        return
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    os.environ["PYTHONSAFEPATH"] = "1"


_test_the_installed_package()

import shmdict  # noqa: E402
from shmdict import _lib  # noqa: E402

LONG = os.environ.get("SHMDICT_LONG", "") not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LONG or "slow" in (config.getoption("markexpr") or ""):
        return
    skip_slow = pytest.mark.skip(reason="slow: set SHMDICT_LONG=1 or pass -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Name the shuffled order even under -q (which hides pytest-randomly's header line),
    so a failure that depends on the order can be replayed."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int) and config.pluginmanager.hasplugin("randomly"):
        terminalreporter.write_line(f"test order: shuffled by pytest-randomly; replay with -p randomly --randomly-seed={seed}")


@pytest.fixture(autouse=True)
def shm_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private directory on tmpfs, exported as SHMDICT_DIR for the test.

    Afterwards, whatever the test did or however it ended: no crash point stays
    armed and the TTL clock is back to real time, so no test sees another's
    state and any subset of the suite passes in any order.
    """
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = tempfile.mkdtemp(prefix="shmdict-test-", dir=base)
    monkeypatch.setenv("SHMDICT_DIR", path)
    try:
        yield path
    finally:
        _lib.fault_arm(None)
        _lib.clock_reset()
        shutil.rmtree(path, ignore_errors=True)


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


def dict_path(name: str) -> str:
    return os.path.join(os.environ["SHMDICT_DIR"], f"shmdict.{name}")


@pytest.fixture
def name() -> str:
    return unique_name()


@pytest.fixture
def d(name: str) -> Iterator[shmdict.SharedDict]:
    """A fresh 1 MiB dict owned by this test, closed (and so unlinked) afterwards."""
    sd = shmdict.new(name, "1m")
    try:
        yield sd
    finally:
        sd.close()


MIN_SIZE: int = _lib.lib.SHMDICT_MIN_SIZE
MAX_KEY: int = _lib.lib.SHMDICT_MAX_KEY


# ---- child processes ----------------------------------------------------------


class ChildResult:
    """How a child process ended: ``exitcode`` if it exited, ``signal`` if killed."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.exitcode: int | None = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        self.signal: int | None = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None

    @property
    def killed(self) -> bool:
        return self.signal == signal.SIGKILL

    def __repr__(self) -> str:
        if self.signal is not None:
            return f"<child killed by signal {self.signal}>"
        return f"<child exited {self.exitcode}>"


def _child_main(fn: Callable[..., Any], args: tuple[Any, ...], alarm: int) -> None:
    """Run fn in a forked child and leave through os._exit, whatever happens."""
    code = 0
    try:
        if alarm:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(alarm)  # a hung child dies by SIGALRM, never mistaken for SIGKILL
        rv = fn(*args)
        code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
    except BaseException:
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:
            pass
        code = 99
    finally:
        os._exit(code)


def start_child(fn: Callable[..., Any], *args: Any, alarm: int = 30) -> int:
    """Fork a child running fn(*args); returns its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        _child_main(fn, args, alarm)
    return pid


def wait_child(pid: int, timeout: float = 30.0) -> ChildResult:
    """Wait for a child; on timeout kill it with SIGTERM and fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            return ChildResult(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            pytest.fail(f"child {pid} did not finish within {timeout} s (hung?)")
        time.sleep(0.002)


def run_in_child(fn: Callable[..., Any], *args: Any, timeout: float = 30.0) -> ChildResult:
    """Run fn(*args) in a forked child and return how it ended.

    The child exits with fn's int return value (0 otherwise), or 99 if fn
    raised (the traceback goes to stderr).
    """
    return wait_child(start_child(fn, *args, alarm=int(timeout) + 5), timeout)


def call_with_timeout(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Call fn in a daemon thread and fail the test if it does not return in time.

    A deadlocked shmdict call then fails the test instead of hanging the suite.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"call did not return within {timeout} s (deadlock?)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def snapshot(sd: shmdict.SharedDict) -> dict[str, tuple[type, Any]]:
    """The live contents of sd as {key: (type, value)}."""
    out: dict[str, tuple[type, Any]] = {}
    for k in sd.get_keys():
        v = sd.get(k, _MISSING)
        if v is not _MISSING:
            out[k] = (type(v), v)
    return out


def typed(mapping: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    return {k: (type(v), v) for k, v in mapping.items()}


_MISSING = object()
