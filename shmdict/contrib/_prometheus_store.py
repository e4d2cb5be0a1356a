"""What :mod:`shmdict.contrib.prometheus` keeps in its dict, and how it tells
a live process from a dead one.

KEYS. Every key starts with ``prom:`` and a *kind*, named like the files of
prometheus_client's multiprocess mode (``counter``, ``gauge_livesum``, ...),
and ends with the series' identity: prometheus_client's own ``mmap_key``, a
JSON list ``[metric_name, sample_name, {labels}, help]``::

    prom:<kind>:<series>                      one shared series
    prom:<kind>:<pid>.<start>:<ident>:<series> one process's series

SHARED series hold what every process adds to: counters, summaries,
histograms and ``sum`` gauges are one float that each process changes with
one atomic ``incr``. A process killed at any instant has added its update
wholly or not at all, and a dead process leaves nothing behind, so there is
nothing to compact and restarts never add keys. ``mostrecent`` gauges are
one ``(value, timestamp)`` that a newer timestamp replaces (compare-and-set),
Info and Enum one JSON value that the last call replaces.

PER-PROCESS series are the gauges whose result depends on each process's
current value: ``all``/``liveall`` (one sample per process, with a ``pid``
label), ``min``/``max`` and every ``live`` mode. ``<ident>`` is the
process identifier (the ``pid`` label, percent-quoted); ``<pid>.<start>`` is
the *instance*: the real pid and its start time in clock ticks since boot
(field 22 of ``/proc/PID/stat``). A pid can be reused by a later process,
never with the same start time, so "instance alive" cannot be fooled by pid
reuse. At collection a dead instance's series are

- dropped, in the ``live`` modes;
- folded into ``prom:retired_min:<series>`` / ``prom:retired_max:<series>``
  and dropped, for ``min``/``max``: the fold is a compare-and-set loop that
  may be repeated (min of the same value twice is the same), so a collector
  killed between the fold and the delete leaves a correct dict;
- kept for ``all`` (prometheus_client shows a dead process's last value with
  its pid label forever), except that an older instance with the same pid
  label gives way to a newer one, as one file per pid would.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Optional
from urllib.parse import quote, unquote

PREFIX = "prom:"

SHARED_SUMS = frozenset({"counter", "summary", "histogram", "gauge_sum"})
MOSTRECENT = "gauge_mostrecent"
INFO, STATESET = "info", "stateset"
PER_PROCESS = frozenset({"gauge_" + m for m in (
    "all", "liveall", "min", "livemin", "max", "livemax", "livesum", "livemostrecent")})
LIVE = frozenset(k for k in PER_PROCESS if k.startswith("gauge_live"))
RETIRED = {"gauge_min": "retired_min", "gauge_max": "retired_max"}
RETIRED_MODE = {"retired_min": "min", "retired_max": "max"}
TIMESTAMPED = frozenset({MOSTRECENT, "gauge_livemostrecent"})

_PAIR = struct.Struct("<dd")
ZERO_PAIR = _PAIR.pack(0.0, 0.0)


def kind_of(typ: str, mode: str) -> str:
    """The kind of a prometheus_client value (its ``typ`` and gauge mode)."""
    return f"gauge_{mode}" if typ == "gauge" else typ


def shared_key(kind: str, series: str) -> str:
    return f"{PREFIX}{kind}:{series}"


def process_key(kind: str, instance: str, ident: str, series: str) -> str:
    return f"{PREFIX}{kind}:{instance}:{quote(ident, safe='')}:{series}"


def parse(key: str) -> Optional[tuple[str, Optional[str], Optional[str], str]]:
    """(kind, instance, ident, series) of a key; instance and ident are None
    for shared series. None for a key this module did not write."""
    if not key.startswith(PREFIX):
        return None
    kind, sep, rest = key[len(PREFIX):].partition(":")
    if not sep:
        return None
    if kind in PER_PROCESS:
        parts = rest.split(":", 2)
        if len(parts) != 3:
            return None
        return kind, parts[0], unquote(parts[1]), parts[2]
    if kind in SHARED_SUMS or kind in RETIRED_MODE or kind in (MOSTRECENT, INFO, STATESET):
        return kind, None, None, rest
    return None


def series_of(series: str) -> Optional[tuple[str, str, dict[str, str], str]]:
    """(metric_name, sample_name, labels, help) of a series, or None if it is
    not what ``mmap_key`` writes."""
    try:
        metric_name, name, labels, help_text = json.loads(series)
    except (ValueError, TypeError):
        return None
    if not (isinstance(metric_name, str) and isinstance(name, str) and isinstance(labels, dict)
            and isinstance(help_text, str) and all(isinstance(v, str) for v in labels.values())):
        return None
    return metric_name, name, labels, help_text


def pack(value: float, timestamp: float) -> bytes:
    return _PAIR.pack(value, timestamp)


def unpack(raw: object) -> Optional[tuple[float, float]]:
    if isinstance(raw, bytes) and len(raw) == _PAIR.size:
        v, ts = _PAIR.unpack(raw)
        return float(v), float(ts)
    return None


# ---- Info and Enum values ------------------------------------------------------------


def load_info(raw: object) -> dict[str, str]:
    """An Info value: the JSON of its labels (anything else reads as no labels)."""
    try:
        val = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        val = None
    if isinstance(val, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in val.items()):
        return val
    return {}


def load_enum(raw: object) -> Optional[tuple[list[str], str]]:
    """An Enum value: (states, current state) from its JSON, or None."""
    try:
        val = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        val = None
    if (isinstance(val, dict) and isinstance(val.get("states"), list) and isinstance(val.get("state"), str)
            and all(isinstance(s, str) for s in val["states"])):
        return val["states"], val["state"]
    return None


# ---- process instances -------------------------------------------------------------


def _stat(pid: int) -> Optional[tuple[str, str]]:
    """(state, start time) of a process from /proc/PID/stat, or None if it has none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw.rpartition(b")")[2].split()  # the command name may hold spaces and ')'
    if len(fields) < 20:
        return None
    return fields[0].decode("ascii", "replace"), fields[19].decode("ascii", "replace")


def instance(pid: int) -> str:
    """``pid.start`` for a running process (``pid.0`` where /proc cannot say)."""
    st = _stat(pid)
    return f"{pid}.{st[1] if st else '0'}"


def alive(inst: str) -> bool:
    """Whether the process instance ``pid.start`` is still running. A zombie
    (dead, not yet reaped) is dead; a pid now held by a process that started
    at another time is dead too."""
    pid_s, _, start = inst.partition(".")
    try:
        pid = int(pid_s)
    except ValueError:
        return False
    if pid <= 0:
        return False
    st = _stat(pid)
    if st is None:
        if os.path.isdir("/proc/self"):
            return False  # /proc works and has no such process
        try:  # no /proc: the pid is all there is to check
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state, started = st
    if state in ("Z", "X"):
        return False
    return start in ("0", started)


# ---- folding dead min/max series ------------------------------------------------------


def fold(d: Any, kind: str, series: str, value: float) -> None:
    """Fold a dead process's ``min``/``max`` value into the retired series:
    a compare-and-set loop, so it is atomic, and repeating it is harmless."""
    key = shared_key(RETIRED[kind], series)
    better = min if kind == "gauge_min" else max
    while True:
        cur = d.get(key)
        if not isinstance(cur, float):
            # absent: add it (a lost race goes round again); not a float: not ours, replace it
            if cur is not None:
                d.set(key, float(value))
                return
            if d.cas(key, None, float(value)):
                return
            continue
        new = better(cur, value)
        if new is cur or new == cur or d.cas(key, cur, float(new)):
            return  # (min and max return their first argument when NaN makes them unordered)
