"""cffi builder for shmdict's C core (API / out-of-line mode).

``csrc/shmdict.h`` is both compiled and fed to ``cdef``: the builder only drops
preprocessor lines (the include guard and ``#include``s), so a prototype changed
on one side breaks the build instead of drifting silently.

Set ``SHMDICT_SANITIZE=1`` to build with AddressSanitizer + UBSan,
``SHMDICT_DEBUG=1`` for ``-O0 -g`` with assertions, and ``SHMDICT_WERROR=1``
(CI and development) to make every compiler warning an error.
"""

import os
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).parent
SOURCES = [
    "errors.c", "fault.c", "hash.c", "seq.c", "lock.c", "notify.c", "table.c", "grow.c", "optread.c", "guard.c", "segment.c", "record.c",
    "kv.c", "list.c", "scan.c", "batch.c", "stats.c", "evict.c", "limit.c", "flock.c", "window.c",
    "snapshot.c", "resize.c", "repair.c", "watch.c", "api.c",
]


def _without_preprocessor_lines(path: Path) -> str:
    return "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    )


def _flags() -> tuple[list[str], list[str]]:
    cflags = ["-std=c11", "-Wall", "-Wextra", "-D_GNU_SOURCE", "-fvisibility=hidden"]
    # Warnings are errors in CI and development builds only: a user's
    # `pip install` must not fail because a newer compiler learned a new warning.
    if os.environ.get("SHMDICT_WERROR", "") not in ("", "0"):
        cflags.append("-Werror")
    ldflags: list[str] = ["-pthread"]
    if os.environ.get("SHMDICT_SANITIZE"):
        san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
        cflags += ["-O1", "-g", *san]
        ldflags += san
    elif os.environ.get("SHMDICT_DEBUG"):
        cflags += ["-O0", "-g"]
    else:
        cflags += ["-O2", "-DNDEBUG"]
    return cflags, ldflags


ffibuilder = FFI()
ffibuilder.cdef(_without_preprocessor_lines(CSRC / "shmdict.h"))
_cflags, _ldflags = _flags()
ffibuilder.set_source(
    "shmdict._shmdict",
    '#include "shmdict.h"',
    sources=[str(CSRC / f) for f in SOURCES],
    include_dirs=[str(CSRC)],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
    # Built for this CPython version, not the stable ABI (abi3): the package
    # also holds a module written against the full C API, and a wheel's tag
    # (cp312-cp312) must fit every module inside it. cffi would pick abi3 by default.
    py_limited_api=False,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
