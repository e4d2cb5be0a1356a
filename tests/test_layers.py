"""The C core's files form a stack: no file depends on a file above it.

The stack is the table in csrc/README.md (floor, file, what it owns). Two checks:
(a) every ``#include "..."`` of a csrc file names its own header or a file on a
lower floor; (b) every symbol an object file takes from another csrc object is
defined on a lower floor (read with nm from objects compiled here). A circle
between two files cannot pass either check: one of them is not lower.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parent.parent / "csrc"
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def _stack() -> dict[str, int]:
    """file name -> floor, from the first fenced block of csrc/README.md."""
    text = (CSRC / "README.md").read_text()
    block = text.split("```", 2)[1]
    floors: dict[str, int] = {}
    for line in block.splitlines():
        m = re.match(r"\s*(\d+)\s+([\w.]+\.[ch])\s", line + " ")
        if m:
            assert m.group(2) not in floors, f"{m.group(2)} listed twice in csrc/README.md"
            floors[m.group(2)] = int(m.group(1))
    return floors


STACK = _stack()


def floor_of(name: str) -> int:
    if name in STACK:
        return STACK[name]
    if name.endswith(".h") and name[:-2] + ".c" in STACK:
        return STACK[name[:-2] + ".c"]
    raise AssertionError(f"csrc/{name} is on no floor: add it to the table in csrc/README.md")


def c_files() -> list[Path]:
    return sorted(CSRC.glob("*.c"))


def test_the_stack_is_declared_for_every_file() -> None:
    assert len(STACK) >= 10, "the table in csrc/README.md was not found"
    for path in sorted(CSRC.glob("*.[ch]")):
        floor_of(path.name)
    for name in STACK:
        assert (CSRC / name).exists(), f"csrc/README.md lists {name}, which does not exist"


def test_the_build_compiles_every_c_file() -> None:
    build = (CSRC / "build.py").read_text()
    listed = set(re.findall(r'"(\w+\.c)"', build.split("SOURCES", 1)[1].split("]", 1)[0]))
    assert listed == {p.name for p in c_files()}


def test_includes_point_down() -> None:
    edges = 0
    for path in sorted(CSRC.glob("*.[ch]")):
        own = path.stem + ".h"
        for inc in INCLUDE.findall(path.read_text()):
            if not (CSRC / inc).exists():
                continue  # not a csrc file
            edges += 1
            if path.suffix == ".c" and inc == own:
                continue
            assert floor_of(inc) < floor_of(path.name), (
                f"csrc/{path.name} (floor {floor_of(path.name)}) includes {inc} "
                f"(floor {floor_of(inc)}): a file may include only its own header and lower floors"
            )
    assert edges >= 20, "no includes found: the check would be vacuous"


def _symbols(obj: Path, *args: str) -> set[str]:
    out = subprocess.run(["nm", *args, str(obj)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("nm") is None, reason="needs gcc and nm")
def test_calls_point_down(tmp_path: Path) -> None:
    defined: dict[str, str] = {}
    undefined: dict[str, set[str]] = {}
    for src in c_files():
        obj = tmp_path / (src.stem + ".o")
        subprocess.run(
            ["gcc", "-c", "-std=c11", "-D_GNU_SOURCE", f"-I{CSRC}", "-o", str(obj), str(src)],
            check=True,
            capture_output=True,
        )
        for sym in _symbols(obj, "--defined-only", "-g"):
            assert sym not in defined, f"{sym} is defined in both {defined[sym]} and {src.name}"
            defined[sym] = src.name
        undefined[src.name] = _symbols(obj, "-u")
    edges = set()
    for user, syms in undefined.items():
        for sym in syms:
            owner = defined.get(sym)
            if owner is None:
                continue  # libc, pthread
            edges.add((user, owner))
            assert floor_of(owner) < floor_of(user), (
                f"{user} (floor {floor_of(user)}) uses {sym} from {owner} "
                f"(floor {floor_of(owner)}): calls must go to a lower floor"
            )
    # Not vacuous: the parse found the dependencies every operation has.
    assert ("kv.c", "guard.c") in edges and ("table.c", "lock.c") in edges
    assert len(edges) >= 30
