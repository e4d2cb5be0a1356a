"""Helpers shared by the reliability tests (crash sweep, torture, fuzz,
stress, security).

The per-test ``SHMDICT_DIR`` on tmpfs comes from tests/conftest.py's autouse
``shm_dir`` fixture, like everywhere else in the suite.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import shmdict

from conftest import LONG  # noqa: E402,F401  (re-exported for the reliability tests)


def unique_name(prefix: str = "r") -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


def fork(fn: Callable[..., Any], *args: Any, alarm: int = 30) -> int:
    """Fork a child running fn(*args) and leaving through os._exit: fn's int
    result (0 for anything else), 99 if it raised. A hung child dies by
    SIGALRM, so it is never mistaken for one killed at a crash point."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 0  # pragma: no cover - child
    try:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(alarm)
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


def wait(pid: int, timeout: float = 30.0) -> int:
    """Wait for a child and return its raw wait status; on timeout kill it and
    fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"child {pid} did not finish within {timeout} s (hung?)")
        time.sleep(0.001)


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited {os.WEXITSTATUS(status)}"


def killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def exited_ok(status: int) -> bool:
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def promptly(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Run fn in a forked child with a deadline, then in this process: the
    child proves the call returns (a deadlock fails the test instead of
    hanging the suite), the second call returns the value."""
    status = wait(fork(lambda: (fn(), 0)[1], alarm=int(timeout) + 2), timeout)
    assert exited_ok(status), f"the next operation did not return normally: {describe(status)}"
    return fn()


_MISSING = object()


def snapshot(sd: shmdict.SharedDict) -> dict[str, tuple[type, Any, bool]]:
    """Live contents as {key: (type, value, has_ttl)}."""
    out: dict[str, tuple[type, Any, bool]] = {}
    for k in sd.get_keys():
        v = sd.get(k, _MISSING)
        t = sd.ttl(k)
        if v is not _MISSING and t is not None:
            out[k] = (type(v), v, t > 0)
    return out


def report(figure: str, **values: Any) -> None:
    """Append a measured figure to the JSON-lines file named by SHMDICT_FIGURES
    (if set): the numbers the README's Reliability section quotes."""
    path = os.environ.get("SHMDICT_FIGURES")
    if not path:
        return
    import json

    with open(path, "a") as f:
        f.write(json.dumps({"figure": figure, "pid": os.getpid(), **values}) + "\n")
