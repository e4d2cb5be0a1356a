"""The one rule for every timeout argument, for both engines.

``None`` waits forever, ``0`` does not wait, a positive number of seconds
bounds the wait. Anything else -- negative, NaN, infinite, or more than
``MAX_TIMEOUT`` seconds -- is a ``ValueError`` naming the argument; a value
that is not a number (``bool`` included) is a ``TypeError``. Every call that
takes a timeout (``lock_timeout=`` of a handle, ``wait``, ``watch``,
``awatch``, ``await_change``, ``lock``, ``NamedLock.acquire``,
``get_or_set``) checks it here, before it changes or waits for anything.
This module imports nothing of the package, so either engine may use it.
"""

from __future__ import annotations

import math
import time
from typing import Optional

__all__ = ["MAX_TIMEOUT", "check", "deadline", "or_forever", "remaining"]

MAX_TIMEOUT = 1e9
"""The largest timeout in seconds (about 31 years): anything longer is a
mistake (a unit error, ``2**63``), not a wish to wait, and would overflow a
deadline; ``None`` is the way to say "forever"."""


def check(value: object, what: str = "timeout") -> Optional[float]:
    """``value`` as seconds (a float in [0, MAX_TIMEOUT]), or ``None``.

    Raises:
        TypeError: not None, an int or a float (bool is not a number here).
        ValueError: negative, NaN, infinite or larger than MAX_TIMEOUT; the
            message names ``what``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, not {type(value).__name__}")
    try:
        t = float(value)
    except OverflowError:  # an int too large for a float
        t = math.inf
    if not 0 <= t <= MAX_TIMEOUT:  # NaN fails both comparisons
        raise ValueError(
            f"{what} must be None (no limit) or a number of seconds from 0 to {MAX_TIMEOUT:.0e}, not {value!r}"
        )
    return t


def deadline(timeout: Optional[float]) -> Optional[float]:
    """The ``time.monotonic()`` deadline of a checked timeout (None: none)."""
    return None if timeout is None else time.monotonic() + timeout


def remaining(deadline: Optional[float]) -> float:
    """Seconds left before ``deadline`` (0 once passed); -1.0 for no deadline
    (the C core's "no limit")."""
    if deadline is None:
        return -1.0
    return max(0.0, deadline - time.monotonic())


def or_forever(value: object, what: str = "timeout") -> float:
    """``check``, with ``None`` as -1.0: "no limit" for code (and the C core)
    that keeps a timeout as a float."""
    t = check(value, what)
    return -1.0 if t is None else t
