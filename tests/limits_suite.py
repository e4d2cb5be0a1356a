"""Run limits' own test suite against ``shmdict://`` and ``async+shmdict://``.

limits ships its tests in its sdist, not in the wheel. This script runs the
tests that limits marks ``memory`` (its storage, strategy and concurrency
tests, sync and async) with every in-memory storage parameter pointed at
shmdict instead::

    python tests/limits_suite.py --fetch        # pip download what is needed, then run
    python tests/limits_suite.py /path/to/limits-src
    LIMITS_SRC_DIR=/path/to/limits-src python tests/limits_suite.py

``--fetch`` downloads the sdist of the *installed* limits version with pip
into ``~/.cache/shmdict/`` (only its ``tests/`` and ``pytest.ini`` are
extracted), and installs the two pytest plugins limits' tests need
(pytest-asyncio, pytest-lazy-fixtures) into a directory beside it if they are
not importable already, so the current environment is left as it was.

How the suite is pointed at shmdict (this module is also the pytest plugin
that does it, loaded with ``-p limits_suite``):

- every parametrize value ``memory://`` becomes ``shmdict://limits-suite?size=16m``
  and ``async+memory://`` becomes ``async+shmdict://limits-suite?size=16m``;
  where a test also expects the storage class (``MemoryStorage``), it expects
  shmdict's class instead. Those parameters keep (or, in the one place limits
  left it off, get) the ``memory`` mark and are shown with the id ``shmdict``;
- each test gets a fresh, empty directory as ``SHMDICT_DIR``, so a fresh dict;
- no test starts in the last ``MARGIN`` seconds of a clock minute. limits'
  sliding-window-counter keys are aligned to the clock, so a test whose hits
  straddle a minute (or hour) boundary sees a new window and fails, with
  ``memory://`` as with shmdict; limits guards most of its tests against
  that and marks the others ``flaky`` to rerun them. Here nothing is rerun:
  such a test waits for the next minute to begin instead;
- limits' ``conftest.py`` (docker-backed fixtures for the other storages) is
  not loaded; the ``flaky`` mark is registered as a no-op, and rerun plugins
  are disabled;
- limits' ``pytest.ini`` is used as shipped (``filterwarnings = error``),
  without its ``addopts`` (coverage, verbosity);
- collection fails if a selected test still targets anything but shmdict.

The exit status is pytest's, and 1 if no test ran.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

import sdist_tests

NAME = "limits-suite"
MARGIN = 5.0  # seconds: longer than any of limits' tests with minute-long windows
URIS = {
    "memory://": f"shmdict://{NAME}?size=16m",
    "async+memory://": f"async+shmdict://{NAME}?size=16m",
}
PLUGINS = ("pytest-asyncio", "pytest-lazy-fixtures")
CACHE = sdist_tests.CACHE


# ---- the runner -----------------------------------------------------------------


def _limits_version() -> str:
    from importlib.metadata import version

    return version("limits")


def fetch() -> str:
    """Download and extract the tests of the installed limits version; returns their root."""
    keep = lambda rel: rel if rel == "pytest.ini" or rel.startswith("tests/") else None  # noqa: E731
    return str(sdist_tests.fetch("limits", _limits_version(), keep, "tests/utils.py"))



def _missing_plugins() -> list[str]:
    import importlib.util

    return [p for p in PLUGINS if importlib.util.find_spec(p.replace("-", "_")) is None]


def plugin_path(install: bool) -> str | None:
    """A directory to put on sys.path for the pytest plugins limits' tests need, if
    they are not importable already: the cache's, installed there first if ``install``."""
    missing = _missing_plugins()
    if not missing:
        return None
    target = CACHE / "limits-suite-plugins"
    if all((target / p.replace("-", "_")).is_dir() for p in missing):
        return str(target)  # installed by an earlier run
    if not install:
        return None  # pytest will say what is missing
    # --no-deps: their only requirements (pytest, typing-extensions) are already here,
    # and a second pytest in the target directory would shadow the installed one.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target",
                    str(target), *missing], check=True, timeout=300)
    return str(target)


def main(argv: list[str]) -> int:
    fetching = bool(argv) and argv[0] == "--fetch"
    if fetching:
        src, argv = fetch(), argv[1:]
    elif argv and not argv[0].startswith("-"):
        src, argv = argv[0], argv[1:]
    else:
        src = os.environ.get("LIMITS_SRC_DIR", "")
    if not src or not os.path.exists(os.path.join(src, "tests", "utils.py")):
        print("usage: limits_suite.py --fetch | SRC_DIR [pytest args]   (or set LIMITS_SRC_DIR)", file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    extra_path = list(filter(None, [plugin_path(install=fetching)]))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([here, *extra_path, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("SHMDICT_DIR", None)
    cmd = [
        sys.executable, "-m", "pytest", "-p", "limits_suite", "-p", "no:cacheprovider",
        "-p", "no:randomly", "-p", "no:rerunfailures", "-p", "no:flaky",
        "--noconftest", "-c", "pytest.ini", "--rootdir", ".",
        "-o", "addopts=", "-o", "asyncio_default_fixture_loop_scope=function",
        "-m", "memory", "-q", "-rfE", "--ignore=tests/benchmarks", *argv, "tests",
    ]
    print(f"limits {_limits_version()} own tests from {src}", flush=True)
    rc = subprocess.run(cmd, cwd=src, env=env).returncode
    return 1 if rc == 5 else rc  # 5: no test collected


# ---- the pytest plugin ------------------------------------------------------------
# Loaded only in the subprocess above (pytest -p limits_suite).


def _storage_classes() -> list[tuple[Any, Any]]:
    import limits.aio.storage
    import limits.storage

    from shmdict.contrib.limits import AsyncSharedDictStorage, SharedDictStorage

    return [(limits.storage.MemoryStorage, SharedDictStorage), (limits.aio.storage.MemoryStorage, AsyncSharedDictStorage)]


_ParameterSet = type(pytest.param(None))


def _retarget_param(p: Any, classes: list[tuple[Any, Any]]) -> Any:
    """One parametrize value set, with limits' in-memory storage replaced by shmdict's."""
    values = p.values if isinstance(p, _ParameterSet) else (p if isinstance(p, tuple) else (p,))
    if not any(isinstance(v, str) and v in URIS for v in values):
        return p

    def swap(v: Any) -> Any:
        if isinstance(v, str):
            return URIS.get(v, v)
        return next((new for old, new in classes if v is old), v)

    marks = tuple(p.marks) if isinstance(p, _ParameterSet) else ()
    if not any(m.name == "memory" for m in marks):
        marks += (pytest.mark.memory.mark,)
    return pytest.param(*map(swap, values), marks=marks, id="shmdict")


def _retarget(mark: Any, classes: list[tuple[Any, Any]]) -> Any:
    if mark.name != "parametrize" or len(mark.args) < 2:
        return mark
    argvalues = [_retarget_param(p, classes) for p in mark.args[1]]
    if all(a is b for a, b in zip(argvalues, mark.args[1])):
        return mark
    return pytest.mark.parametrize(mark.args[0], argvalues, *mark.args[2:], **mark.kwargs).mark


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "flaky: a no-op here: limits' suite runs against shmdict without reruns")


def pytest_generate_tests(metafunc: Any) -> None:
    """Rewrite the parametrize marks of the test, its class and module before
    pytest's own pytest_generate_tests expands them (plugins run first)."""
    classes = _storage_classes()
    for node in metafunc.definition.listchain():
        node.own_markers[:] = [_retarget(m, classes) for m in node.own_markers]


_async_ids: set[str] = set()
_outcomes: dict[str, str] = {}  # nodeid -> passed / failed / skipped, the worst of its phases


@pytest.hookimpl(trylast=True)  # after -m has deselected the other storages
def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        uri = getattr(item, "callspec", None) and item.callspec.params.get("uri")
        if not (isinstance(uri, str) and uri in URIS.values()):
            raise pytest.UsageError(f"{item.nodeid} does not target shmdict (uri={uri!r})")
        if inspect.iscoroutinefunction(getattr(item, "obj", None)):
            _async_ids.add(item.nodeid)


def pytest_runtest_logreport(report: Any) -> None:
    if report.when == "call" or not report.passed:
        if _outcomes.get(report.nodeid) != "failed":
            _outcomes[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter: Any) -> None:
    def tally(kind: str) -> str:
        got = [o for n, o in _outcomes.items() if (n in _async_ids) == (kind == "async")]
        return f"{kind}: {got.count('passed')}/{len(got)}"

    ran = len(_outcomes)
    passed = sum(o == "passed" for o in _outcomes.values())
    terminalreporter.write_line(
        f"limits {_limits_version()} memory-marked tests against shmdict: ran {ran}, passed {passed} "
        f"({tally('sync')}, {tally('async')} passed)")


@pytest.fixture(autouse=True)
def shmdict_fresh_dict() -> Iterator[str]:
    """Each test of the suite sees an empty SHMDICT_DIR, so a new dict."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = tempfile.mkdtemp(prefix="shmdict-limits-", dir=base)
    old = os.environ.get("SHMDICT_DIR")
    os.environ["SHMDICT_DIR"] = path
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("SHMDICT_DIR", None)
        else:
            os.environ["SHMDICT_DIR"] = old
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def clear_of_minute_boundary() -> None:
    """Start each test at least MARGIN seconds before the clock's next minute."""
    left = 60.0 - time.time() % 60.0
    if left < MARGIN:
        time.sleep(left + 0.05)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
