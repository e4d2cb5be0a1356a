"""Run prometheus_client's own multiprocess tests against ``shmdict.contrib.prometheus``.

prometheus_client ships its tests in its sdist, not in the wheel. This script
runs the class ``TestMultiProcess`` of its ``tests/test_multiprocess.py``
with prometheus_client's file-based multiprocess mode replaced by shmdict's::

    python tests/prometheus_suite.py --fetch        # pip download the sdist, then run
    python tests/prometheus_suite.py /path/to/prometheus_client-src
    PROMETHEUS_SRC_DIR=/path/to/src python tests/prometheus_suite.py

``--fetch`` downloads the sdist of the *installed* prometheus_client version
with pip into ``~/.cache/shmdict/`` and extracts only its ``tests/``.

How the tests are pointed at shmdict (this module is also the pytest plugin
that does it, loaded with ``-p prometheus_suite``):

- the test module's names ``MultiProcessValue``, ``MultiProcessCollector``,
  ``mark_process_dead`` and ``get_value_class`` are rebound to shmdict's
  (prometheus_client's ``path`` argument names a directory of files; here
  the dict is the enabled one, so the wrappers drop that argument);
- "directory setup": each test gets a fresh, empty ``SHMDICT_DIR`` and
  ``enable()`` on a new dict there; the tests still create and remove their
  ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's ``remove()``/``clear()``
  warnings depend on it), but nothing is written there, which is checked;
- the tests in ``EXCLUDED`` test the file format itself and are deselected,
  each with its reason; any other test that fails, errors or is skipped
  fails the run, and so does a run with fewer tests than expected.

The exit status is pytest's, and 1 if no test ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

import sdist_tests

TARGET = "tests/test_multiprocess.py::TestMultiProcess"
NAME = "prometheus-suite"

EXCLUDED = {
    "test_initialization_detects_pid_change":
        "lists the .db files in PROMETHEUS_MULTIPROC_DIR: shmdict keeps no files (that a fork writes "
        "its own series is tested in tests/test_contrib_prometheus.py)",
    "test_merge_no_accumulate":
        "passes .db file paths to the static merge(files): shmdict's merge(accumulate=False) reads the "
        "dict (tests/test_contrib_prometheus.py checks it gives these same samples)",
    "test_missing_gauge_file_during_merge":
        "passes paths of missing .db files to merge(files): there are no files to go missing",
}


# ---- the runner -----------------------------------------------------------------


def _version() -> str:
    from importlib.metadata import version

    return version("prometheus_client")


def fetch() -> str:
    """Download and extract the tests of the installed prometheus_client; returns their root."""
    keep = lambda rel: rel if rel.startswith("tests/") else None  # noqa: E731
    return str(sdist_tests.fetch("prometheus_client", _version(), keep, "tests/test_multiprocess.py"))



def main(argv: list[str]) -> int:
    if argv and argv[0] == "--fetch":
        src, argv = fetch(), argv[1:]
    elif argv and not argv[0].startswith("-"):
        src, argv = argv[0], argv[1:]
    else:
        src = os.environ.get("PROMETHEUS_SRC_DIR", "")
    if not src or not os.path.exists(os.path.join(src, "tests", "test_multiprocess.py")):
        print("usage: prometheus_suite.py --fetch | SRC_DIR [pytest args]   (or set PROMETHEUS_SRC_DIR)",
              file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    env = dict(os.environ)
    # this directory for the plugin, the checkout's root for shmdict itself
    env["PYTHONPATH"] = os.pathsep.join([here, root, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("SHMDICT_DIR", None)
    env.pop("SHMDICT_PROMETHEUS", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "prometheus_suite", "-p", "no:cacheprovider",
           "-p", "no:randomly", "--noconftest", "--rootdir", ".", "-c", os.devnull,
           "-q", "-rfEs", *argv, TARGET]
    print(f"prometheus_client {_version()} own multiprocess tests from {src}", flush=True)
    rc = subprocess.run(cmd, cwd=src, env=env).returncode
    return 1 if rc == 5 else rc  # 5: no test collected


# ---- the pytest plugin ------------------------------------------------------------
# Loaded only in the subprocess above (pytest -p prometheus_suite).

_outcomes: dict[str, str] = {}
_expected = 0


def _rebind(module: Any) -> None:
    """Point the test module's multiprocess names at shmdict's."""
    from shmdict.contrib import prometheus as ours

    def collector(registry: Any, path: Any = None) -> Any:
        return ours.MultiProcessCollector(registry)

    def mark_process_dead(pid: Any, path: Any = None) -> None:
        ours.mark_process_dead(pid)

    module.MultiProcessValue = ours.MultiProcessValue
    module.MultiProcessCollector = collector
    module.mark_process_dead = mark_process_dead
    module.get_value_class = lambda: ours.MultiProcessValue()
    module.shutil = _EmptyDirCheck()


class _EmptyDirCheck:
    """The test module's ``shutil``: its tearDown removes PROMETHEUS_MULTIPROC_DIR,
    which must still be empty then (nothing went to prometheus_client's files)."""

    def rmtree(self, path: str, *args: Any, **kwargs: Any) -> None:
        left = os.listdir(path)
        shutil.rmtree(path, *args, **kwargs)
        assert left == [], f"prometheus_client's own files were written: {left}"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    global _expected
    kept, dropped = [], []
    for item in items:
        if getattr(item, "cls", None) is None or item.cls.__name__ != "TestMultiProcess":
            raise pytest.UsageError(f"{item.nodeid} is not in TestMultiProcess")
        _rebind(item.module)
        (dropped if item.name in EXCLUDED else kept).append(item)
    missing = set(EXCLUDED) - {i.name for i in dropped}
    if missing:
        raise pytest.UsageError(f"excluded tests that no longer exist: {sorted(missing)}")
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept
    _expected = len(kept)


def pytest_runtest_logreport(report: Any) -> None:
    if report.when == "call" or not report.passed:
        if _outcomes.get(report.nodeid) != "failed":
            _outcomes[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, reason in EXCLUDED.items():
        terminalreporter.write_line(f"excluded {name}: {reason}")
    passed = sum(o == "passed" for o in _outcomes.values())
    terminalreporter.write_line(
        f"prometheus_client {_version()} TestMultiProcess against shmdict: ran {len(_outcomes)}, "
        f"passed {passed}, excluded {len(EXCLUDED)}")


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    """A skipped test, or fewer tests than collected, fails the run too."""
    passed = sum(o == "passed" for o in _outcomes.values())
    if exitstatus == 0 and (passed != _expected or _expected == 0):
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def shmdict_fresh_dict() -> Iterator[None]:
    """Each test runs with the mode enabled on a new dict in an empty SHMDICT_DIR,
    and writes nothing to prometheus_client's directory."""
    from shmdict.contrib import prometheus as ours

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = tempfile.mkdtemp(prefix="shmdict-prometheus-", dir=base)
    os.environ["SHMDICT_DIR"] = path
    ours.enable(NAME, "4m")
    try:
        yield
    finally:
        ours.disable()
        os.environ.pop("SHMDICT_DIR", None)
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
