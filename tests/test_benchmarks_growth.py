"""benchmarks/growth.py --quick (the smoke run CI does) runs, writes its page and leaves no dict behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not (ROOT / "benchmarks" / "growth.py").exists(),
                                reason="the benchmarks/ directory is not beside tests/")


def test_quick_run_writes_its_tables_and_cleans_up(tmp_path: Path, shm_dir: str) -> None:
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "growth.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "SHMDICT_DIR": shm_dir})
    assert p.returncode == 0, p.stderr
    page = (out / "growth-benchmark.md").read_text()
    assert page == p.stdout.rstrip("\n") + "\n"  # the page is what it printed
    lines = page.splitlines()
    for kind in ("int", "100-byte str"):
        assert any(ln.startswith(f"| 4 MiB → 8 MiB | {kind} | ") for ln in lines)  # resize: time, reader
        assert sum(ln.startswith(f"| 4 MiB → 8 MiB | {kind} | ") for ln in lines) == 2
        auto = [ln for ln in lines if ln.startswith(f"| 1 MiB → 4 MiB | {kind} | ")]
        assert len(auto) == 1 and "1 MiB → 2 MiB" in auto[0] and "2 MiB → 4 MiB" in auto[0]
    assert os.listdir(shm_dir) == []  # every dict and LMDB directory removed
