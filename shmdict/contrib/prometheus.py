"""prometheus_client's multiprocess mode, kept in one shared dict instead of
one file per process and metric type.

The names are those of prometheus_client's own multiprocess mode, so moving
over changes two imports. Call :func:`enable` once, before any metric is
created -- in a gunicorn config file (the master) or at the top of a
multiprocessing program -- and every prometheus_client metric created
afterwards in this process or a child keeps its value in the dict::

    from shmdict.contrib.prometheus import enable, MultiProcessCollector, mark_process_dead
    enable("metrics")                      # gunicorn.conf.py: in the master, before the fork

    # in the app, as with prometheus_client's multiprocess mode:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)        # the merged samples of every process
    app = make_wsgi_app(registry)

    def child_exit(server, worker):        # gunicorn.conf.py
        mark_process_dead(worker.pid)

For processes you do not start yourself, set ``SHMDICT_PROMETHEUS=NAME``
(or ``NAME?size=16m&max_size=1g``): importing this module then enables it.
:func:`enable` sets that variable too, so that processes started with
``spawn`` enable themselves when they import this module.

How it hooks in: prometheus_client builds every value of a Counter, Gauge,
Summary and Histogram through ``prometheus_client.values.ValueClass``, chosen
once at import (its own multiprocess mode puts ``MultiProcessValue()`` there
when ``PROMETHEUS_MULTIPROC_DIR`` is set). :func:`enable` puts this module's
:func:`MultiProcessValue` there instead. Info and Enum keep their state
outside ``ValueClass`` (prometheus_client's multiprocess mode does not
support them); :func:`enable` wraps their ``__init__``, ``info``/``state``
and ``_child_samples`` so that their value, too, lives in the dict: the last
``info()`` / ``state()`` call in any process is the value every process and
the collector see.

The value class and the Info/Enum hooks are in
``shmdict/contrib/_prometheus_values.py``; what is stored where, and how dead
processes are told apart and compacted, in
``shmdict/contrib/_prometheus_store.py``. This module enables the mode,
collects and marks processes dead.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterable, Optional, Union
from urllib.parse import parse_qs

import shmdict
from shmdict.contrib._extras import missing

try:
    from prometheus_client import values as _values
    from prometheus_client.metrics_core import Metric
    from prometheus_client.multiprocess import MultiProcessCollector as _FileCollector
except ModuleNotFoundError as exc:
    raise missing(exc, "shmdict.contrib.prometheus", "prometheus_client>=0.20", "prometheus") from exc

from shmdict.contrib import _prometheus_store as _store
from shmdict.contrib import _prometheus_values as _hooks
from shmdict.contrib._attach import attach_or_create
from shmdict.contrib._prometheus_values import MultiProcessValue

__all__ = ["ENV", "MultiProcessCollector", "MultiProcessValue", "disable", "enable", "mark_process_dead"]

ENV = "SHMDICT_PROMETHEUS"
"""The environment variable that enables the mode on import: ``NAME`` or
``NAME?size=SIZE&max_size=SIZE``."""

DEFAULT_SIZE = "16m"
DEFAULT_MAX_SIZE = "1g"

Size = Union[int, str]


class _Enabled:
    def __init__(self, name: str, d: Any, previous: Any, env_before: Optional[str]) -> None:
        self.name, self.dict, self.previous, self.env_before = name, d, previous, env_before


_lock = threading.RLock()
_enabled: Optional[_Enabled] = None
_attached: dict[str, Any] = {}  # name -> handle, for collectors and mark_process_dead on other dicts


# ---- enable / disable -------------------------------------------------------------------


def _parse_env(spec: str) -> tuple[str, dict[str, str]]:
    name, _, query = spec.partition("?")
    options = {k: v[-1] for k, v in parse_qs(query, strict_parsing=bool(query)).items()}
    unknown = set(options) - {"size", "max_size"}
    if unknown:
        raise ValueError(f"{ENV}={spec!r}: unknown option(s) {sorted(unknown)}; expected NAME?size=16m&max_size=1g")
    return name, options


def enable(name: Optional[str] = None, size: Optional[Size] = None, **open_args: Any) -> Any:
    """Keep every prometheus_client metric created from now on in the dict ``name``.

    Call it once, before metrics are created; forked children inherit it.
    The dict is attached to, or created with ``size`` bytes (default
    ``16m``) if it does not exist; a ``size`` given also grows an existing
    smaller dict (as :func:`shmdict.open`). A full dict grows itself up to
    ``max_size`` (default ``1g``). Other keyword arguments (``mode``,
    ``group``, ``lock_timeout``, ...) go to :func:`shmdict.open`.

    Args:
        name: the dict's name; ``None`` reads it from ``$SHMDICT_PROMETHEUS``.
        size: the size of a dict created here.

    Returns:
        The :class:`shmdict.SharedDict` that holds the metrics.

    Raises:
        ValueError: no name, a bad name or size, ``evict=True`` (metrics must
            never be evicted), or already enabled with another dict.
        OSError: the dict cannot be created or attached to.

    .. versionadded:: 0.1
    """
    global _enabled
    env_before = os.environ.get(ENV)
    if name is None:
        if not env_before:
            raise ValueError(f"enable() needs a dict name, or {ENV}=NAME in the environment")
        name, options = _parse_env(env_before)
        if size is None and "size" in options:
            size = options["size"]
        open_args.setdefault("max_size", options.get("max_size", DEFAULT_MAX_SIZE))
    if open_args.get("evict"):
        raise ValueError("metrics must never be evicted: evict=True is not allowed")
    open_args.setdefault("max_size", DEFAULT_MAX_SIZE)
    with _lock:
        if _enabled is not None:
            if _enabled.name == name and not _enabled.dict.closed:
                return _enabled.dict
            raise ValueError(f"already enabled with the dict {_enabled.name!r}: call disable() first")
        d = _open(name, size, open_args)
        _enabled = _Enabled(name, d, _values.ValueClass, env_before)
        _hooks.attach(d)
        _values.ValueClass = MultiProcessValue()
        _hooks.hook_info_and_enum()
        spec = name if size is None else f"{name}?size={size}"
        if open_args.get("max_size") not in (None, DEFAULT_MAX_SIZE):
            spec += ("&" if "?" in spec else "?") + f"max_size={open_args['max_size']}"
        os.environ[ENV] = spec
        return d


def _open(name: str, size: Optional[Size], open_args: dict[str, Any]) -> Any:
    """Attach to ``name`` or create it. With only sizes given, the default size
    applies only to a new dict (as the other integrations); other options
    open it as :func:`shmdict.open` does."""
    args = dict(open_args)
    max_size = args.pop("max_size", None)
    if size is None and not args:
        return attach_or_create(name, None, DEFAULT_SIZE, max_size)
    return shmdict.open(name, DEFAULT_SIZE if size is None else size, max_size=max_size, **args)


def disable() -> None:
    """Undo :func:`enable` in this process: metrics created afterwards keep
    their values in the process again (prometheus_client's default), Info
    and Enum are unhooked, the handle is closed and ``$SHMDICT_PROMETHEUS``
    is restored. The dict itself stays. Metrics created while enabled stop
    working (their dict is closed). Meant for tests.

    .. versionadded:: 0.1
    """
    global _enabled
    with _lock:
        if _enabled is None:
            return
        e, _enabled = _enabled, None
        if isinstance(_values.ValueClass, type) and getattr(_values.ValueClass, "_shmdict", False):
            _values.ValueClass = e.previous
        _hooks.unhook_info_and_enum()
        _hooks.detach()
        if e.env_before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = e.env_before
        e.dict.close()
        for h in _attached.values():
            h.close()
        _attached.clear()


def _dict_for(name: Optional[str]) -> Any:
    """The enabled dict (``name`` None or its name), else a handle on ``name``."""
    with _lock:
        if _enabled is not None and name in (None, _enabled.name):
            return _enabled.dict
        if name is None:
            spec = os.environ.get(ENV)
            if not spec:
                raise ValueError(f"not enabled: call enable(NAME) or set {ENV}=NAME, or pass the dict's name")
            name = _parse_env(spec)[0]
        h = _attached.get(name)
        if h is None or h.closed:
            h = _attached[name] = shmdict.get(name)
        return h


# ---- collection -----------------------------------------------------------------------------


class MultiProcessCollector:
    """The merged samples of every process, as prometheus_client's
    ``MultiProcessCollector`` yields them for the same operations.

    Args:
        registry: registered with, if not None.
        name: the dict; by default the enabled one, else ``$SHMDICT_PROMETHEUS``.

    Raises:
        ValueError: no dict is named and the mode is not enabled.
        FileNotFoundError: the named dict does not exist.

    Each collection also tidies the dict: the series of processes that died
    are dropped (``live`` gauge modes) or folded into one retired series
    (``min``/``max``), so the dict does not grow as workers restart.

    .. versionadded:: 0.1
    """

    def __init__(self, registry: Any, name: Optional[str] = None) -> None:
        self._dict = _dict_for(name)
        if registry:
            registry.register(self)

    def collect(self) -> Iterable[Metric]:
        return self.merge(accumulate=True)

    def merge(self, accumulate: bool = True) -> list[Metric]:
        """The merged metrics; ``accumulate=False`` leaves histogram buckets
        per bucket, without ``_count`` (as prometheus_client's ``merge``).

        .. versionadded:: 0.1
        """
        raw, others = _gather(self._dict)
        merged: list[Metric] = list(_FileCollector._accumulate_metrics(raw, accumulate))  # type: ignore[no-untyped-call]
        return merged + others


def _gather(d: Any) -> tuple[dict[str, Metric], list[Metric]]:
    """Every series in the dict, as prometheus_client's ``_read_metrics``
    returns the contents of its files (gauges with a ``pid`` label), plus the
    Info and Enum metrics, which need no merging. Drops and folds the series
    of dead processes on the way."""
    items = sorted(d.items(match=_store.PREFIX + "*"))
    metrics: dict[str, Metric] = {}
    others: dict[str, Metric] = {}
    liveness: dict[str, bool] = {}
    newest_all: dict[tuple[str, str], tuple[tuple[bool, int], str, float]] = {}

    def add(kind: str, series: str, value: float, timestamp: float, pid: str) -> None:
        parsed = _store.series_of(series)
        if parsed is None:
            return
        metric_name, name, labels, help_text = parsed
        if kind in _store.RETIRED_MODE:
            mode = _store.RETIRED_MODE[kind]
        else:
            mode = kind[len("gauge_"):] if kind.startswith("gauge_") else ""
        typ = "gauge" if mode else kind
        metric = metrics.get(metric_name)
        if metric is None:
            metric = metrics[metric_name] = Metric(metric_name, help_text, typ)
        labels_key = tuple(sorted(labels.items()))
        if typ == "gauge":
            metric._multiprocess_mode = mode  # type: ignore[attr-defined]
            metric.add_sample(name, labels_key + (("pid", pid),), value, timestamp)  # type: ignore[arg-type]
        else:
            metric.add_sample(name, labels_key, value)  # type: ignore[arg-type]

    for key, value in items:
        parsed = _store.parse(key)
        if parsed is None:
            continue
        kind, inst, ident, series = parsed
        if kind in (_store.INFO, _store.STATESET):
            _add_other(others, kind, series, value)
            continue
        pair = _store.unpack(value) if kind in _store.TIMESTAMPED else (
            (value, 0.0) if isinstance(value, float) else None)
        if pair is None:
            continue
        if inst is None or ident is None:
            add(kind, series, pair[0], pair[1], "")
            continue
        live = liveness.get(inst)
        if live is None:
            live = liveness[inst] = _store.alive(inst)
        if not live:
            if kind in _store.LIVE:
                d.delete(key)
                continue
            if kind in _store.RETIRED:
                _store.fold(d, kind, series, pair[0])
                d.delete(key)
        if kind == "gauge_all":
            start = inst.partition(".")[2]
            rank = (live, int(start) if start.isdigit() else 0)
            slot = (ident, series)
            held = newest_all.get(slot)
            if held is None or rank > held[0]:
                if held is not None and not held[0][0]:
                    d.delete(held[1])  # an older dead process with this pid label: superseded
                newest_all[slot] = (rank, key, pair[0])
            elif not live:
                d.delete(key)
            continue
        add(kind, series, pair[0], pair[1], ident)
    for (ident, series), (_, _, v) in newest_all.items():
        add("gauge_all", series, v, 0.0, ident)
    return metrics, list(others.values())


def _add_other(others: dict[str, Metric], kind: str, series: str, raw: object) -> None:
    parsed = _store.series_of(series)
    if parsed is None:
        return
    metric_name, name, labels, help_text = parsed
    metric = others.get(metric_name)
    if metric is None:
        metric = others[metric_name] = Metric(metric_name, help_text, kind)
    base = dict(sorted(labels.items()))
    if kind == _store.INFO:
        metric.add_sample(name, {**base, **_store.load_info(raw)}, 1.0)
        return
    loaded = _store.load_enum(raw)
    if loaded is not None:
        states, state = loaded
        for s in states:
            metric.add_sample(name, {**base, metric_name: s}, 1.0 if s == state else 0.0)


def mark_process_dead(pid: int, name: Optional[str] = None) -> None:
    """Drop the ``live`` gauge series of the process ``pid`` (its ``pid``
    label). For gunicorn's ``child_exit`` hook; collections also drop the
    series of processes that died without it.

    Args:
        pid: the process identifier, as its metrics were written.
        name: the dict; by default the enabled one, else ``$SHMDICT_PROMETHEUS``.

    .. versionadded:: 0.1
    """
    d = _dict_for(name)
    ident = str(pid)
    for mode in ("liveall", "livemin", "livemax", "livesum", "livemostrecent"):
        pattern = _store.process_key(f"gauge_{mode}", "*", ident, "*")
        for key in d.get_keys(match=pattern):
            parsed = _store.parse(key)
            if parsed is not None and parsed[2] == ident:  # the glob's * may span a ':'
                d.delete(key)


if os.environ.get(ENV) and _enabled is None:
    enable()
