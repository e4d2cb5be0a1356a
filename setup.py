"""Two extensions over one C core.

``shmdict._shmdict`` (cffi, csrc/build.py) holds the core and every entry
point. On CPython, ``shmdict._speed`` (csrc/python/pytype.c) adds the hot methods as
a CPython type that calls the same core through its ``shmdict_api()`` table:
it links no core code of its own. PyPy uses the cffi module alone.
"""

import importlib.util
import os
import platform
import sys

# pip checks requires-python only after resolving every dependency, so on an
# older Python `pip install '.[test]'` would search the extras' versions for
# minutes before saying why it fails. Say it at once, while the build starts.
if sys.version_info < (3, 11):
    sys.exit(f"shmdict requires Python >= 3.11 (pyproject.toml requires-python); this is {platform.python_version()}")

from setuptools import Extension, setup  # noqa: E402


def _core_flags() -> tuple[list[str], list[str]]:
    """The core's compiler flags (warnings as errors, SHMDICT_SANITIZE, ...)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "build.py")
    spec = importlib.util.spec_from_file_location("_shmdict_build", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod._flags()


ext_modules = []
if platform.python_implementation() == "CPython":
    cflags, ldflags = _core_flags()
    ext_modules.append(
        Extension(
            "shmdict._speed",
            sources=["csrc/python/pytype.c"],
            include_dirs=["csrc"],
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        )
    )

setup(cffi_modules=["csrc/build.py:ffibuilder"], ext_modules=ext_modules)
