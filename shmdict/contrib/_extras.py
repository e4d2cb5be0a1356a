"""The error an integration raises when the library it plugs into is missing.

Each module in :mod:`shmdict.contrib` imports a third-party library at its
top. Without it, a bare ``ModuleNotFoundError: No module named 'limits'``
says nothing of what to install; :func:`missing` names the integration, the
requirement (as the extra pins it) and the extra itself.
"""

from __future__ import annotations


def missing(exc: ModuleNotFoundError, integration: str, requirement: str, extra: str) -> ModuleNotFoundError:
    """A ModuleNotFoundError for ``exc``, named for the missing top-level package, that says what to install."""
    package = (exc.name or extra).partition(".")[0]
    return ModuleNotFoundError(
        f"{integration} needs {package!r}, which is not installed: pip install '{requirement}' "
        f"(the '{extra}' extra of shmdict: pip install '.[{extra}]' from shmdict's source folder)",
        name=package,
    )
