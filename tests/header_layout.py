"""Offsets of header fields, asked of the compiler from csrc/layout.h.

Tests that poke or watch raw header words (the mutex, the futex words) use
these instead of numbers copied from layout.h, which go stale silently when
the layout changes.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")


@functools.lru_cache(maxsize=None)
def offset(field: str) -> int:
    """``offsetof(header_t, field)`` as this checkout's compiler lays it out."""
    src = (
        "#include <stdio.h>\n#include <stddef.h>\n#include \"layout.h\"\n"
        f'int main(void) {{ printf("%zu\\n", offsetof(header_t, {field})); return 0; }}\n'
    )
    with tempfile.TemporaryDirectory() as tmp:
        c, exe = os.path.join(tmp, "off.c"), os.path.join(tmp, "off")
        with open(c, "w") as f:
            f.write(src)
        cc = os.environ.get("CC", "cc").split()
        subprocess.run([*cc, "-std=c11", "-I", CSRC, "-o", exe, c], check=True, capture_output=True)
        return int(subprocess.run([exe], check=True, capture_output=True, text=True).stdout)
