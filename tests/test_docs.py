"""The user documentation runs: every code block in README.md and docs/*.md.

Each fenced block is collected with its language and checked by the handler
for that language, so a block that no longer matches the code fails here:

- ``pycon``: a file's blocks run as one doctest session, in order, against a
  private ``SHMDICT_DIR`` (so the suite leaves nothing in ``/dev/shm``).
- ``console``: ``$ shmdict ...`` lines run through the CLI against a fresh
  ``SHMDICT_DIR``, in order, and their output is compared with the block's.
  Commands that cannot run inside the test suite are listed in ``NOT_RUN``
  with the reason; any other command fails.
- ``python``: executed in a fresh interpreter (and ``SHMDICT_DIR``); a few
  blocks get an epilogue (``EPILOGUES``) that checks they did what the text
  around them says.
- ``text``: an exception tree, checked against the real classes.

Relative links (and their ``#anchors``) must resolve too.
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import shmdict
from redis_fixture import redis_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent
FILES = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.is_file()]

_FENCE = re.compile(r"^```([\w+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _blocks() -> list[Block]:
    out = []
    for path in FILES:
        text = path.read_text()
        for m in _FENCE.finditer(text):
            out.append(Block(path, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)))
    return out


BLOCKS = _blocks()


def _of(lang: str) -> list[Block]:
    return [b for b in BLOCKS if b.lang == lang]


def _ids(blocks: list[Block]) -> list[str]:
    return [b.where for b in blocks]


# ---- console ------------------------------------------------------------------

# Commands the suite cannot run, as (regex on the command, reason). Every rule
# must still match some command (test_not_run_rules_are_used).
NOT_RUN = [
    (r"pip (install|wheel) ", "installs packages into the running environment and needs the network"),
    (r"python -m pytest$", "the test suite itself"),
    (r"python -m benchmarks", "a benchmark run of several minutes"),
    (r"(CIBW_\S+ )?cibuildwheel ", "builds wheels in Docker/Podman containers; .ci/wheel builds, repairs and "
                                    "installs one without a compiler"),
    (r"python tests/limits_suite.py --fetch", "downloads limits' sdist and runs its suite for a minute: .ci/run runs it"),
    (r"cd examples/", "part of the example server session: tests/test_contrib_servers.py runs these servers"),
    (r"RATELIMIT=\S+ uvicorn ", "starts a server on a fixed port: tests/test_contrib_servers.py runs it on a free one"),
    (r"shmdict rm ratelimit$", "removes the dict the example server above made"),
    (r"RATELIMIT=\S+ gunicorn ", "starts a server on a fixed port: tests/test_contrib_servers.py runs it on a free one"),
    (r"SHMDICT_URL=\S+ gunicorn app:app", "an illustration: your app, your Redis server; test_python_block_on_redis runs the code"),
    (r"for i in .*curl ", "needs the server started above"),
    (r"python tests/prometheus_suite.py --fetch", "downloads prometheus_client's sdist and runs its multiprocess "
                                                  "tests: .ci/run runs them"),
    (r"python benchmarks/prometheus.py", "a benchmark run of a minute or two; .ci/run runs --quick"),
    (r"gunicorn -c gunicorn.conf.py app:app$", "starts a server on a fixed port: tests/test_contrib_prometheus.py "
                                               "runs the example on a free one"),
    (r"curl -s localhost:8000/metrics", "needs the server started above"),
]


def _not_run(cmd: str) -> str | None:
    for pattern, reason in NOT_RUN:
        if re.match(pattern, cmd):
            return reason
    return None


def _commands(text: str) -> Iterator[tuple[str, str]]:
    """(command, expected output) for each ``$`` line, the trailing comment removed."""
    cmd: str | None = None
    out: list[str] = []
    for ln in text.splitlines():
        if ln.startswith("$ "):
            if cmd is not None:
                yield cmd, "\n".join(out)
            cmd, out = re.sub(r"\s+#.*$", "", ln[2:]).strip(), []
        elif cmd is not None:
            out.append(ln)
    if cmd is not None:
        yield cmd, "\n".join(out)


def _normalize(cmd: str, text: str) -> str:
    """Make the parts of an output that differ from run to run comparable:
    the CREATOR column of ``shmdict ls`` is a process id."""
    if cmd.split()[:2] != ["shmdict", "ls"]:
        return text
    lines = text.splitlines()
    if not lines or "CREATOR" not in lines[0].split():
        return text
    col = lines[0].split().index("CREATOR")
    rows = [lines[0].split()]
    for ln in lines[1:]:
        cells = ln.split()
        if len(cells) > col and cells[col].isdigit():
            cells[col] = "PID"
        rows.append(cells)
    return "\n".join(" ".join(r) for r in rows)


_CHECKER = doctest.OutputChecker()
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _run_cli(cmd: str, env: dict[str, str]) -> str:
    args = shlex.split(cmd, comments=True)
    assert args[0] == "shmdict"
    p = subprocess.run([sys.executable, "-m", "shmdict", *args[1:]], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, f"$ {cmd}\nexit {p.returncode}\n{p.stderr}"
    return p.stdout


@pytest.fixture
def doc_dir() -> Iterator[str]:
    """A private dict directory for one block (on tmpfs where there is one)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="shmdict-docs-", dir=base) as d:
        yield d


@pytest.mark.parametrize("block", _of("console"), ids=_ids(_of("console")))
def test_console_block(block: Block, doc_dir: str) -> None:
    """Every shmdict command in a console block prints what the block shows; other commands are listed in NOT_RUN."""
    env = {**os.environ, "SHMDICT_DIR": doc_dir}
    ran, skipped = 0, []
    for cmd, expected in _commands(block.text):
        reason = _not_run(cmd)
        if reason is not None:
            skipped.append(f"$ {cmd}: {reason}")
            continue
        assert cmd.startswith("shmdict "), f"{block.where}: no runner for `$ {cmd}`: run it here or add it to NOT_RUN"
        got = _run_cli(cmd, env)
        want = _normalize(cmd, expected.strip()) + "\n"
        assert _CHECKER.check_output(want, _normalize(cmd, got.strip()) + "\n", _FLAGS), (
            f"{block.where}: $ {cmd}\nthe docs show:\n{expected}\nit prints:\n{got}"
        )
        ran += 1
    if not ran:
        pytest.skip("; ".join(skipped))


def test_not_run_rules_are_used() -> None:
    """Every NOT_RUN rule still matches a command in the docs, so the list cannot rot."""
    cmds = [cmd for b in _of("console") for cmd, _ in _commands(b.text)]
    for pattern, reason in NOT_RUN:
        assert any(re.match(pattern, c) for c in cmds), f"NOT_RUN rule {pattern!r} ({reason}) matches no command"


# ---- python ------------------------------------------------------------------

# Checks appended to the blocks that contain the key: what the text says the
# block does. Every key must match at least one block.
EPILOGUES = {
    # Flask-Limiter on shmdict://: the 11th request in the minute is refused,
    # and the counters live in the shared dict.
    '@limiter.limit("10/minute")': """
client = app.test_client()
codes = [client.get("/").status_code for _ in range(12)]
assert codes == [200] * 10 + [429] * 2, codes
with shmdict.get("ratelimit") as shared:
    assert any(k.startswith("LIMITS:") for k in shared), list(shared)
""",
    # The Django settings: a working cache whose incr is the dict's.
    '"BACKEND": "shmdict.contrib.django.SharedDictCache"': """
import django
from django.conf import settings
settings.configure(CACHES=CACHES)
django.setup()
from django.core.cache import cache
cache.set("greeting", "hello")
cache.set("n", 1)
assert cache.get("greeting") == "hello"
assert cache.incr("n") == 2
import shmdict
with shmdict.get(CACHES["default"]["LOCATION"]) as shared:
    assert len(shared) == 2 and 2 in shared.values()
""",
    # Prometheus: metrics created after enable() live in the dict, and the
    # collector merges what every process counted.
    'enable("metrics")': """
import os
from prometheus_client import generate_latest
pid = os.fork()
if pid == 0:
    REQUESTS.labels("/").inc(2)
    os._exit(0)
assert os.waitpid(pid, 0)[1] == 0
REQUESTS.labels("/").inc()
assert b'app_requests_total{path="/"} 3.0' in generate_latest(registry), generate_latest(registry)
""",
    # connect(): the same calls on whichever engine SHMDICT_URL names.
    'shmdict.connect(os.environ.get("SHMDICT_URL"': """
assert allowed and remaining == 29, (allowed, remaining, reset_after)
assert d.get(f"hits:{user}") == 1 and 0 < d.ttl(f"hits:{user}") <= 60
""",
}


def _program(block: Block) -> str:
    return block.text + "".join(epi for key, epi in EPILOGUES.items() if key in block.text)


def _run_python(block: Block, env: dict[str, str], cwd: str) -> None:
    p = subprocess.run([sys.executable, "-c", _program(block)], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    assert p.returncode == 0, f"{block.where}: the python block failed\n{p.stdout}\n{p.stderr}"


@pytest.mark.parametrize("block", _of("python"), ids=_ids(_of("python")))
def test_python_block(block: Block, doc_dir: str) -> None:
    """Every python block runs, with the checks EPILOGUES adds."""
    env = {k: v for k, v in os.environ.items() if k != "SHMDICT_URL"}
    _run_python(block, {**env, "SHMDICT_DIR": doc_dir}, doc_dir)


@pytest.mark.parametrize("block", [b for b in _of("python") if "SHMDICT_URL" in b.text],
                         ids=_ids([b for b in _of("python") if "SHMDICT_URL" in b.text]))
def test_python_block_on_redis(block: Block, doc_dir: str, redis_server) -> None:  # noqa: F811
    """A block that reads SHMDICT_URL does the same on Redis as on shared memory."""
    url = redis_server.url(prefix=f"docs-{uuid.uuid4().hex[:8]}:")
    _run_python(block, {**os.environ, "SHMDICT_DIR": doc_dir, "SHMDICT_URL": url}, doc_dir)


def test_epilogues_are_used() -> None:
    """Every epilogue still matches a python block."""
    for key in EPILOGUES:
        assert any(key in b.text for b in _of("python")), f"EPILOGUES key {key!r} matches no python block"


# ---- text: the exception tree ----------------------------------------------

_CLASS_LINE = re.compile(r"^\s*shmdict\.(\w+)\(([^)]*)\)", re.M)


@pytest.mark.parametrize("block", _of("text"), ids=_ids(_of("text")))
def test_exception_tree(block: Block) -> None:
    """An exception tree names each class with its real bases, and every exception shmdict exports."""
    found = _CLASS_LINE.findall(block.text)
    assert found, f"{block.where}: no check for this text block (only exception trees are checked)"
    for name, bases in found:
        cls = getattr(shmdict, name)
        assert [b.strip() for b in bases.split(",")] == [b.__name__ for b in cls.__bases__], (name, cls.__bases__)
    exported = {n for n in shmdict.__all__ if isinstance(getattr(shmdict, n), type) and issubclass(getattr(shmdict, n), Exception)}
    assert exported == {n for n, _ in found}, f"{block.where}: the tree lists {sorted(n for n, _ in found)}, shmdict exports {sorted(exported)}"


# ---- pycon: one doctest session per file -------------------------------------


def _run_doctest(text: str, name: str, filename: str, globs: dict[str, object]) -> None:
    test = doctest.DocTestParser().get_doctest(text, globs, name, filename, 0)
    assert test.examples, f"{name}: no >>> examples"
    out: list[str] = []
    runner = doctest.DocTestRunner(optionflags=_FLAGS)
    runner.run(test, out=out.append)
    assert not runner.failures, "".join(out)


@pytest.mark.parametrize("path", sorted({b.path for b in _of("pycon")}), ids=lambda p: str(p.relative_to(ROOT)))
def test_pycon_blocks(path: Path) -> None:
    """A file's pycon blocks run as one doctest session, in order (a block may use
    what an earlier one made), against the test's private SHMDICT_DIR, so trying
    them here leaves nothing in /dev/shm."""
    blocks = [b for b in _of("pycon") if b.path == path]
    for b in blocks:
        assert b.text.endswith("\n\n"), f"{b.where}: end the block with a blank line, or the fence reads as output"
    globs: dict[str, object] = {}
    _run_doctest("".join(b.text for b in blocks), str(path.relative_to(ROOT)), str(path), globs)


def test_package_docstring_runs() -> None:
    """The package's own docstring example works."""
    assert shmdict.__doc__ and ">>>" in shmdict.__doc__
    _run_doctest(shmdict.__doc__, "shmdict", shmdict.__file__ or "shmdict", {})


# ---- every block has a handler; links resolve --------------------------------

HANDLED = {"pycon", "console", "python", "text"}


def test_every_block_has_a_language_that_is_checked() -> None:
    """No code block escapes: each one's language has a handler above."""
    bad = [f"{b.where} ({b.lang or 'no language'})" for b in BLOCKS if b.lang not in HANDLED]
    assert not bad, f"blocks nobody checks: {bad}"


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text())
    heads = re.findall(r"^#+ +(.+?)\s*$", text, re.M)
    slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}
    return slugs | set(re.findall(r'<a id="([^"]+)"', text))


def test_relative_links_resolve() -> None:
    """Every relative link in the docs points at a file that exists (and a heading that exists)."""
    bad = []
    for path in FILES:
        text = _FENCE.sub("", path.read_text())
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                bad.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, bad
