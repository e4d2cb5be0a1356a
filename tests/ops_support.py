"""Helpers for the tests of the extra operations (tests/test_ops_*.py).

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
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import shmdict


def uname(prefix: str = "ops") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sd(shm_dir: str) -> Iterator[shmdict.SharedDict]:
    """A fresh 1 MiB dict, closed (and unlinked) afterwards."""
    d = shmdict.new(uname(), "1m")
    try:
        yield d
    finally:
        d.close()


def fork(fn: Callable[..., Any], *args: Any, alarm: int = 30) -> int:
    """Run fn(*args) in a forked child; exit code = fn's int result (0), 99 if it raised."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(alarm)
            rv = fn(*args)
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except BaseException:
            traceback.print_exc()
            code = 99
        finally:
            os._exit(code)
    return pid


def join(pid: int, timeout: float = 30.0) -> int:
    """Wait for a child; returns its raw wait status. Fails the test on a hang."""
    deadline = time.monotonic() + timeout
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"child {pid} hung")
        time.sleep(0.002)


def exit_code(status: int) -> int | None:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else None


def killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def contents(d: shmdict.SharedDict) -> dict[str, tuple[type, Any]]:
    return {k: (type(v), v) for k, v in d.items()}
