"""A library's own tests, taken from its sdist on PyPI, for the runners that
play them against shmdict (limits_suite.py, prometheus_suite.py,
django_cache_suite.py): the version installed here, downloaded once and kept
under ~/.cache/shmdict, extracted whole or not at all.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Optional

CACHE = Path.home() / ".cache" / "shmdict"


def fetch(dist: str, version: str, rename: Callable[[str], Optional[str]], marker: str) -> Path:
    """The files of the sdist of ``dist==version`` that ``rename`` keeps, under
    ``CACHE/<dist>-<version>-tests``; returns that folder.

    ``rename`` gets each regular file's path below the sdist's top folder and
    returns its path in the result, or None to leave it out. ``marker`` (a
    path in the result) says a previous fetch is complete.
    """
    root = CACHE / f"{dist}-{version}-tests"
    if (root / marker).exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"{dist}=={version}", "-d", tmp], check=True, timeout=300)
        (sdist,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as tar:
            top = tar.getnames()[0].split("/")[0] + "/"
            members = []
            for m in tar.getmembers():
                rel = m.name[len(top):] if m.name.startswith(top) else ""
                if not m.isfile() or not rel or ".." in rel.split("/"):
                    continue
                name = rename(rel)
                if name:
                    m.name = name
                    members.append(m)
            staging = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=CACHE))
            try:
                tar.extractall(staging, members=members, filter="data")
            except TypeError:  # Python without extraction filters: the names were checked above
                tar.extractall(staging, members=members)
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)  # whole or absent, never half-extracted
    return root
