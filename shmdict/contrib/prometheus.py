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

What is stored where, and how dead processes are told apart and compacted,
is in ``shmdict/contrib/_prometheus_store.py``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from typing import Any, Callable, Iterable, Optional, Union
from urllib.parse import parse_qs

from prometheus_client import metrics as _metrics
from prometheus_client import values as _values
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import mmap_key
from prometheus_client.multiprocess import MultiProcessCollector as _FileCollector
from prometheus_client.samples import Sample

import shmdict
from shmdict.contrib import _prometheus_store as _store
from shmdict.contrib._attach import attach_or_create

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
        _values.ValueClass = MultiProcessValue()
        _hook_info_and_enum()
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
        _unhook_info_and_enum()
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


# ---- the value class ------------------------------------------------------------------------


# A process learns that it is a fork's child from this counter (bumped in the
# child by os.register_at_fork) instead of asking os.getpid() on every update:
# getpid is a system call, a third of an update's cost.
# A fork's child also gets new per-class locks: a thread of the parent may have
# held one at the fork, and would never release it in the child.
_forks = [0]
_classes: weakref.WeakSet[Any] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    _forks[0] += 1
    for cls in list(_classes):
        cls._new_lock()


os.register_at_fork(after_in_child=_after_fork_in_child)

_SUM, _OWN, _PAIR = 0, 1, 2  # how a value is stored: share of a shared sum; own float; own (value, time)


def MultiProcessValue(process_identifier: Callable[[], Any] = os.getpid) -> type:  # noqa: N802 (prometheus_client's name)
    """A ``prometheus_client.values.ValueClass`` that keeps values in the enabled dict.

    The counterpart of ``prometheus_client.values.MultiProcessValue``:
    ``process_identifier()`` names the process (the ``pid`` label of
    ``all``/``liveall`` gauges) and must differ between processes running
    at the same time; when it changes (a fork) every value starts again, as
    in a new process. Each update is one atomic operation on the dict.
    With the default ``os.getpid``, a fork is noticed through
    :func:`os.register_at_fork` (a process forked by C code that bypasses
    it would keep its parent's gauge series; counters and histograms are
    shared series and stay exact either way).

    Raises:
        ValueError: (when a value is created) the mode is not enabled.

    .. versionadded:: 0.1
    """
    values: list[Any] = []
    lock = threading.Lock()
    me: list[Any] = [-1, 0, "", ""]  # fork count, pid, identifier, instance (pid.start)
    by_pid = process_identifier is os.getpid

    def check() -> None:
        """Start every value again if this is a new process (a fork) or a new identifier."""
        if by_pid:
            if me[0] == _forks[0]:
                return
            pid = os.getpid()
            ident = str(pid)
        else:
            pid = os.getpid()
            ident = str(process_identifier())
            if pid == me[1] and ident == me[2]:
                return
        if pid != me[1]:
            me[3] = _store.instance(pid)
        me[:3] = [_forks[0], pid, ident]
        for v in values:
            v._reset()

    def cleanup() -> None:
        values.clear()

    # values.close_all_multiprocess_files() (prometheus_client >= 0.22) forgets these values too
    cleanups = getattr(_values, "_multi_process_cleanups", None)
    if cleanups is not None:
        cleanups.append(cleanup)

    class SharedDictValue:
        """A float in the shared dict: one series per process or one for all (see _prometheus_store)."""

        _multiprocess = True
        _shmdict = True

        def __init__(self, typ: str, metric_name: str, name: str, labelnames: Any, labelvalues: Any,
                     help_text: str, multiprocess_mode: str = "", **kwargs: Any) -> None:
            kind = _store.kind_of(typ, multiprocess_mode)
            if kind in _store.SHARED_SUMS:
                self._how = _SUM
            elif kind in _store.TIMESTAMPED:
                self._how = _PAIR
            elif kind in _store.PER_PROCESS:
                self._how = _OWN
            else:
                raise ValueError(f"unsupported metric type or gauge mode: {typ!r} {multiprocess_mode!r}")
            self._kind = kind
            self._series = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
            self._d = _dict_for(None) if _enabled is not None else _not_enabled()
            self._incr = self._d.incr
            self._value = 0.0
            self._timestamp = 0.0
            with lock:
                check()
                self._reset()
                values.append(self)

        def _reset(self) -> None:
            """(Re)start in this process: prometheus_client reads the value its process
            stored before (0 when new); the shared series are this process's share."""
            kind, d = self._kind, self._d
            self._timestamp = 0.0
            if kind in _store.PER_PROCESS:
                self._key = _store.process_key(kind, me[3], me[2], self._series)
                if self._how == _PAIR:
                    d.add(self._key, _store.ZERO_PAIR)
                    self._value, self._timestamp = _store.unpack(d.get(self._key)) or (0.0, 0.0)
                else:
                    self._value = float(d.incr(self._key, 0.0, init=0.0))
            else:
                self._key = _store.shared_key(kind, self._series)
                if self._how == _PAIR:
                    d.add(self._key, _store.ZERO_PAIR)
                else:
                    d.incr(self._key, 0.0, init=0.0)
                self._value = 0.0

        def inc(self, amount: float) -> None:
            with lock:
                if me[0] != _forks[0] or not by_pid:  # check(), without a call on the hot path
                    check()
                how = self._how
                if how == _SUM:
                    self._incr(self._key, float(amount), init=0.0)
                    self._value += amount
                elif how == _OWN:
                    self._value = float(self._incr(self._key, float(amount), init=0.0))
                else:
                    self._store(self._value + amount, 0.0)  # as prometheus_client: an inc has no time

        def set(self, value: float, timestamp: Optional[float] = None) -> None:
            with lock:
                check()
                if self._how == _SUM:
                    # this process's share moves from _value to value
                    self._incr(self._key, float(value) - self._value, init=0.0)
                    self._value = value
                else:
                    self._store(value, timestamp or 0.0)

        def _store(self, value: float, timestamp: float) -> None:
            d, key, v = self._d, self._key, float(value)
            if self._kind == _store.MOSTRECENT:
                new = _store.pack(v, timestamp)
                while True:  # replace unless a newer value is there: compare-and-set
                    cur = d.get(key)
                    pair = _store.unpack(cur)
                    if pair is not None and pair[1] > timestamp:
                        break
                    if d.cas(key, cur, new):
                        break
            elif self._kind in _store.TIMESTAMPED:
                d.set(key, _store.pack(v, timestamp))
            else:
                d.set(key, v)
            self._value, self._timestamp = value, timestamp

        def set_exemplar(self, exemplar: Any) -> None:
            return  # as prometheus_client's multiprocess mode: no exemplars

        def get(self) -> float:
            with lock:
                check()
                return self._value

        def get_exemplar(self) -> None:
            return None

        @classmethod
        def close_all_files(cls) -> None:
            with lock:
                values.clear()

        @staticmethod
        def _new_lock() -> None:
            nonlocal lock
            lock = threading.Lock()

    _classes.add(SharedDictValue)
    return SharedDictValue


def _not_enabled() -> Any:
    raise ValueError(f"shmdict.contrib.prometheus is not enabled: call enable(NAME) or set {ENV}=NAME")


# ---- Info and Enum ---------------------------------------------------------------------------

_originals: dict[tuple[type, str], Any] = {}
_own: set[tuple[type, str]] = set()  # the hooked attributes the class defined itself (not inherited)


def _shared_of(metric: Any) -> Optional[tuple[Any, str]]:
    shared: Optional[tuple[Any, str]] = getattr(metric, "_shmdict_store", None)
    return shared


def _info_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _originals[(_metrics.Info, "__init__")](self, *args, **kwargs)
    if self._is_observable() and _enabled is not None:
        key = _store.shared_key(_store.INFO, mmap_key(self._name, self._name + "_info", self._labelnames,
                                                      self._labelvalues, self._documentation))
        _enabled.dict.add(key, "{}")
        self._shmdict_store = (_enabled.dict, key)


def _info_info(self: Any, val: dict[str, str]) -> None:
    _originals[(_metrics.Info, "info")](self, val)  # validates
    shared = _shared_of(self)
    if shared is not None:
        shared[0].set(shared[1], json.dumps(dict(val)))


def _load_info(raw: object) -> dict[str, str]:
    try:
        val = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        val = None
    if isinstance(val, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in val.items()):
        return val
    return {}


def _info_samples(self: Any) -> Iterable[Sample]:
    shared = _shared_of(self)
    if shared is None:
        samples: Iterable[Sample] = _originals[(_metrics.Info, "_child_samples")](self)
        return samples
    return (Sample("_info", _load_info(shared[0].get(shared[1])), 1.0, None, None),)


def _enum_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _originals[(_metrics.Enum, "__init__")](self, *args, **kwargs)
    if self._is_observable() and _enabled is not None:
        key = _store.shared_key(_store.STATESET, mmap_key(self._name, self._name, self._labelnames,
                                                          self._labelvalues, self._documentation))
        _enabled.dict.add(key, json.dumps({"states": list(self._states), "state": self._states[0]}))
        self._shmdict_store = (_enabled.dict, key)


def _enum_state(self: Any, state: str) -> None:
    _originals[(_metrics.Enum, "state")](self, state)  # validates
    shared = _shared_of(self)
    if shared is not None:
        shared[0].set(shared[1], json.dumps({"states": list(self._states), "state": state}))


def _load_enum(raw: object) -> Optional[tuple[list[str], str]]:
    try:
        val = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        val = None
    if (isinstance(val, dict) and isinstance(val.get("states"), list) and isinstance(val.get("state"), str)
            and all(isinstance(s, str) for s in val["states"])):
        return val["states"], val["state"]
    return None


def _enum_samples(self: Any) -> Iterable[Sample]:
    shared = _shared_of(self)
    if shared is None:
        samples: Iterable[Sample] = _originals[(_metrics.Enum, "_child_samples")](self)
        return samples
    loaded = _load_enum(shared[0].get(shared[1]))
    state = loaded[1] if loaded else self._states[0]
    return [Sample("", {self._name: s}, 1 if s == state else 0, None, None) for s in self._states]


_HOOKS = [
    (_metrics.Info, "__init__", _info_init), (_metrics.Info, "info", _info_info),
    (_metrics.Info, "_child_samples", _info_samples),
    (_metrics.Enum, "__init__", _enum_init), (_metrics.Enum, "state", _enum_state),
    (_metrics.Enum, "_child_samples", _enum_samples),
]


def _hook_info_and_enum() -> None:
    for cls, attr, fn in _HOOKS:
        if (cls, attr) not in _originals:
            _originals[(cls, attr)] = getattr(cls, attr)  # Info's __init__ is inherited
            _own.add((cls, attr)) if attr in cls.__dict__ else _own.discard((cls, attr))
            setattr(cls, attr, fn)


def _unhook_info_and_enum() -> None:
    for cls, attr, _ in _HOOKS:
        orig = _originals.pop((cls, attr), None)
        if orig is None:
            continue
        if (cls, attr) in _own:
            setattr(cls, attr, orig)
        else:
            delattr(cls, attr)


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
        metric.add_sample(name, {**base, **_load_info(raw)}, 1.0)
        return
    loaded = _load_enum(raw)
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
