"""An integration whose library is missing says what to install."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module, hidden, requirement",
    [("shmdict.contrib.limits", "limits", "limits>=5,<6"), ("shmdict.contrib.django", "django", "Django>=4.2"),
     ("shmdict.contrib.prometheus", "prometheus_client", "prometheus_client>=0.20")],
)
def test_missing_library_names_the_requirement(module: str, hidden: str, requirement: str) -> None:
    """Importing the integration without its library raises ModuleNotFoundError naming the
    missing module, the pip requirement and the extra (the library is hidden in a child)."""
    code = f"""
import sys
sys.modules[{hidden!r}] = None  # as if it were not installed
try:
    import {module}
except ModuleNotFoundError as e:
    print(e.name)
    print(e)
else:
    raise SystemExit("imported without {hidden}")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    name, message = p.stdout.splitlines()[:2]
    assert name == hidden
    assert f"pip install '{requirement}'" in message and "' extra of shmdict" in message
