"""How prometheus_client's metrics keep their values in the dict.

:func:`MultiProcessValue` is the ``prometheus_client.values.ValueClass``
that :func:`shmdict.contrib.prometheus.enable` installs: every Counter,
Gauge, Summary and Histogram value created afterwards is a series in the
dict (see ``_prometheus_store`` for which series, and why). Info and Enum do
not go through ``ValueClass``; :func:`hook_info_and_enum` wraps their
``__init__``, ``info``/``state`` and ``_child_samples`` so that their value
lives in the dict too. The dict is the one :func:`attach` was given.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from typing import Any, Callable, Iterable, Optional

from prometheus_client import metrics as _metrics
from prometheus_client import values as _values
from prometheus_client.mmap_dict import mmap_key
from prometheus_client.samples import Sample

from shmdict.contrib import _prometheus_store as _store

_current: list[Any] = [None]  # the enabled dict, or None


def attach(d: Any) -> None:
    _current[0] = d


def detach() -> None:
    _current[0] = None


def current() -> Any:
    """The dict that enable() attached, or ValueError."""
    d = _current[0]
    if d is None:
        raise ValueError("shmdict.contrib.prometheus is not enabled: call enable(NAME) or set SHMDICT_PROMETHEUS=NAME")
    return d


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
            self._d = current()
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


# ---- Info and Enum ---------------------------------------------------------------------------

_originals: dict[tuple[type, str], Any] = {}
_own: set[tuple[type, str]] = set()  # the hooked attributes the class defined itself (not inherited)


def _shared_of(metric: Any) -> Optional[tuple[Any, str]]:
    shared: Optional[tuple[Any, str]] = getattr(metric, "_shmdict_store", None)
    return shared


def _info_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _originals[(_metrics.Info, "__init__")](self, *args, **kwargs)
    if self._is_observable() and _current[0] is not None:
        key = _store.shared_key(_store.INFO, mmap_key(self._name, self._name + "_info", self._labelnames,
                                                      self._labelvalues, self._documentation))
        _current[0].add(key, "{}")
        self._shmdict_store = (_current[0], key)


def _info_info(self: Any, val: dict[str, str]) -> None:
    _originals[(_metrics.Info, "info")](self, val)  # validates
    shared = _shared_of(self)
    if shared is not None:
        shared[0].set(shared[1], json.dumps(dict(val)))


def _info_samples(self: Any) -> Iterable[Sample]:
    shared = _shared_of(self)
    if shared is None:
        samples: Iterable[Sample] = _originals[(_metrics.Info, "_child_samples")](self)
        return samples
    return (Sample("_info", _store.load_info(shared[0].get(shared[1])), 1.0, None, None),)


def _enum_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _originals[(_metrics.Enum, "__init__")](self, *args, **kwargs)
    if self._is_observable() and _current[0] is not None:
        key = _store.shared_key(_store.STATESET, mmap_key(self._name, self._name, self._labelnames,
                                                          self._labelvalues, self._documentation))
        _current[0].add(key, json.dumps({"states": list(self._states), "state": self._states[0]}))
        self._shmdict_store = (_current[0], key)


def _enum_state(self: Any, state: str) -> None:
    _originals[(_metrics.Enum, "state")](self, state)  # validates
    shared = _shared_of(self)
    if shared is not None:
        shared[0].set(shared[1], json.dumps({"states": list(self._states), "state": state}))


def _enum_samples(self: Any) -> Iterable[Sample]:
    shared = _shared_of(self)
    if shared is None:
        samples: Iterable[Sample] = _originals[(_metrics.Enum, "_child_samples")](self)
        return samples
    loaded = _store.load_enum(shared[0].get(shared[1]))
    state = loaded[1] if loaded else self._states[0]
    return [Sample("", {self._name: s}, 1 if s == state else 0, None, None) for s in self._states]


_HOOKS = [
    (_metrics.Info, "__init__", _info_init), (_metrics.Info, "info", _info_info),
    (_metrics.Info, "_child_samples", _info_samples),
    (_metrics.Enum, "__init__", _enum_init), (_metrics.Enum, "state", _enum_state),
    (_metrics.Enum, "_child_samples", _enum_samples),
]


def hook_info_and_enum() -> None:
    for cls, attr, fn in _HOOKS:
        if (cls, attr) not in _originals:
            _originals[(cls, attr)] = getattr(cls, attr)  # Info's __init__ is inherited
            if attr in cls.__dict__:
                _own.add((cls, attr))
            else:
                _own.discard((cls, attr))
            setattr(cls, attr, fn)


def unhook_info_and_enum() -> None:
    for cls, attr, _ in _HOOKS:
        orig = _originals.pop((cls, attr), None)
        if orig is None:
            continue
        if (cls, attr) in _own:
            setattr(cls, attr, orig)
        else:
            delattr(cls, attr)
