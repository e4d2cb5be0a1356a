"""shmdict.contrib.prometheus: prometheus_client's multiprocess mode in one shared dict.

The samples equal those of prometheus_client's own multiprocess mode for the
same operations (a differential test against its file-based mode); real
forked processes count exactly, also across a SIGKILL; dead processes are
told apart from live ones (pid reuse included) and compacted, so restarts do
not grow the dict; Info and Enum are shared; the mode can be enabled from
the environment; the exposition helpers work. The gunicorn example is run for
real at the end. prometheus_client's own TestMultiProcess runs through
tests/prometheus_suite.py (in CI).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

prometheus_client = pytest.importorskip("prometheus_client")

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from prometheus_client import (  # noqa: E402
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
    make_asgi_app,
    make_wsgi_app,
    start_http_server,
)
from prometheus_client import metrics as prom_metrics  # noqa: E402
from prometheus_client import multiprocess as prom_multiprocess  # noqa: E402
from prometheus_client import values as prom_values  # noqa: E402

import shmdict  # noqa: E402
from conftest import start_child, unique_name, wait_child  # noqa: E402
from shmdict.contrib import _prometheus_store as store  # noqa: E402
from shmdict.contrib import prometheus as prom  # noqa: E402

MODES = sorted(Gauge._MULTIPROC_MODES)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The folder the shmdict under test was imported from (this source tree when it
# is built in place, site-packages when the package is installed): first on the
# PYTHONPATH of the Pythons these tests start, so they import the same one.
HOME = os.path.dirname(os.path.dirname(os.path.abspath(shmdict.__file__)))


def _forget_values() -> None:
    """prometheus_client back to its in-process values (close_all_multiprocess_files: >= 0.23)."""
    close = getattr(prom_values, "close_all_multiprocess_files", None)
    if close is not None:
        close()
    prom_values.ValueClass = prom_values.MutexValue


@pytest.fixture
def enabled(shm_dir: str) -> Iterator[Any]:
    """The mode enabled on a fresh dict; afterwards prometheus_client is as it was."""
    name = unique_name("prom")
    d = prom.enable(name, "2m")
    try:
        yield d
    finally:
        prom.disable()
        _forget_values()
        shmdict.unlink(name)


def samples(registry_or_collector: Any) -> dict[str, tuple[str, str, list[tuple[str, tuple, float]]]]:
    """{metric: (type, help, sorted samples)}: what a scrape shows, independent of order."""
    out = {}
    for m in registry_or_collector.collect():
        out[m.name] = (m.type, m.documentation,
                       sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in m.samples))
    return out


def value(collector: Any, name: str, labels: dict[str, str] | None = None) -> float | None:
    for m in collector.collect():
        for s in m.samples:
            if s.name == name and s.labels == (labels or {}):
                return float(s.value)
    return None


# ---- the same samples as prometheus_client's own multiprocess mode ------------------------

PIDS = (11, 22, 33)
OPS = st.lists(st.one_of(
    st.tuples(st.just("op"), st.sampled_from(PIDS), st.integers(0, len(MODES) + 5), st.sampled_from("ab"),
              st.sampled_from(["inc", "dec", "set", "reset"]), st.integers(0, 6)),
    st.tuples(st.just("dead"), st.sampled_from(PIDS)),
), max_size=40)


def _build(pid: int, value_class: Any) -> tuple[Any, list[Any]]:
    """One process's value class and metrics (registry=None, as in multiprocess mode)."""
    prom_values.ValueClass = cls = value_class(lambda: pid)
    return cls, [
        *(Gauge(f"g_{m}", f"gauge {m}", ["l"], registry=None, multiprocess_mode=m) for m in MODES),
        Counter("c", "a counter", ["l"], registry=None),
        Histogram("h", "a histogram", ["l"], registry=None, buckets=(1, 3, 5)),
        Summary("s", "a summary", ["l"], registry=None),
        Gauge("plain", "a gauge without labels", registry=None, multiprocess_mode="livesum"),
        Counter("plain_c", "a counter without labels", registry=None),
        Histogram("plain_h", "a histogram without labels", registry=None),
    ]


def _apply(ops: list[tuple], value_class: Any) -> None:
    built: dict[int, tuple[Any, list[Any]]] = {}
    dead: set[int] = set()
    for op in ops:
        if op[0] == "dead":
            if op[1] in built:  # a process that never created metrics left nothing to mark
                dead.add(op[1])
                (prom.mark_process_dead if value_class is prom.MultiProcessValue
                 else prom_multiprocess.mark_process_dead)(op[1])
            continue
        _, pid, i, label, verb, n = op
        if pid in dead:
            continue  # a dead process writes nothing more
        if pid not in built:
            built[pid] = _build(pid, value_class)
        prom_values.ValueClass, metrics = built[pid]  # a labelled child is made with the current ValueClass
        metric = metrics[i]
        child = metric if metric._name.startswith("plain") else metric.labels(label)
        if isinstance(child, (Histogram, Summary)):
            child.observe(n)
        elif isinstance(child, Counter):
            child.reset() if verb == "reset" and hasattr(child, "reset") else child.inc(n)
        elif child._multiprocess_mode in ("mostrecent", "livemostrecent") or verb in ("set", "reset"):
            child.set(n)
        else:
            (child.inc if verb == "inc" else child.dec)(n)


SUM, COUNTER = MODES.index("sum"), len(MODES)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
@example(ops=[("op", 11, SUM, "a", "set", 3), ("op", 11, SUM, "a", "dec", 1), ("op", 11, SUM, "a", "set", 5),
              ("op", 22, SUM, "a", "set", 2)])
@example(ops=[("op", 11, COUNTER, "a", "inc", 3), ("op", 22, COUNTER, "a", "inc", 4),
              ("op", 11, COUNTER, "a", "reset", 0), ("op", 11, COUNTER, "a", "inc", 1)])
@example(ops=[("op", p, i, "a", "set", p % 7) for p in PIDS for i in range(len(MODES))] + [("dead", 22)])
def test_same_samples_as_prometheus_client(shm_dir: str, monkeypatch: pytest.MonkeyPatch, ops: list[tuple]) -> None:
    """Any sequence of updates from several processes and deaths gives the samples that
    prometheus_client's file-based multiprocess mode gives for it."""
    clock = iter(range(1, 10**6))  # distinct timestamps: a tie in mostrecent is decided by file order
    monkeypatch.setattr(prom_metrics, "time", types.SimpleNamespace(time=lambda: float(next(clock))))
    results = []
    for ours in (False, True):
        tmp = tempfile.mkdtemp(dir=shm_dir)
        name = unique_name("diff")
        try:
            if ours:
                prom.enable(name, "1m")
                _apply(ops, prom.MultiProcessValue)
                results.append(samples(prom.MultiProcessCollector(None)))
            else:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = tmp
                _apply(ops, prom_values.MultiProcessValue)
                results.append(samples(prom_multiprocess.MultiProcessCollector(None, tmp)))
        finally:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            prom.disable()
            _forget_values()
            shutil.rmtree(tmp, ignore_errors=True)
            if ours:
                shmdict.unlink(name)
    assert results[1] == results[0]


def test_merge_without_accumulate_keeps_buckets_apart(enabled: Any) -> None:
    """merge(accumulate=False) gives per-bucket counts and no _count, as prometheus_client's merge."""
    for pid, amount in ((0, 1), (1, 5)):
        prom_values.ValueClass = prom.MultiProcessValue(lambda pid=pid: pid)
        Histogram("h", "help", ["l"], registry=None, buckets=(1, 2.5, 5, 10)).labels("x").observe(amount)
    (h,) = [m for m in prom.MultiProcessCollector(None).merge(accumulate=False) if m.name == "h"]
    got = {(s.name, s.labels.get("le")): s.value for s in h.samples}
    assert got == {("h_sum", None): 6.0, ("h_bucket", "1.0"): 1.0, ("h_bucket", "2.5"): 0.0,
                   ("h_bucket", "5.0"): 1.0, ("h_bucket", "10.0"): 0.0, ("h_bucket", "+Inf"): 0.0}


# ---- real processes -----------------------------------------------------------------------


def _workload(n: int) -> None:
    c = Counter("jobs", "jobs done", ["kind"])
    h = Histogram("secs", "job seconds", buckets=(0.5, 1))
    live = Gauge("busy", "busy workers", multiprocess_mode="livesum")
    everyone = Gauge("last", "last job", multiprocess_mode="all")
    low = Gauge("low", "lowest", multiprocess_mode="min")
    live.inc()
    for i in range(n):
        c.labels("a" if i % 2 else "b").inc()
        h.observe(0.25)
    everyone.set(n)
    low.set(os.getpid() % 1000 + 1)


def test_forked_workers_count_exactly_and_dead_ones_leave(enabled: Any) -> None:
    """Concurrent forked workers lose no update; once they exit (without mark_process_dead)
    their live gauges are dropped, 'all' keeps one sample per pid, 'min' keeps their value."""
    n, workers = 400, 4
    pids = [start_child(_workload, n) for _ in range(workers)]
    assert all(wait_child(p).exitcode == 0 for p in pids)
    coll = prom.MultiProcessCollector(None)
    assert value(coll, "jobs_total", {"kind": "a"}) == workers * n / 2
    assert value(coll, "jobs_total", {"kind": "b"}) == workers * n / 2
    assert value(coll, "secs_count") == workers * n
    assert value(coll, "secs_bucket", {"le": "0.5"}) == workers * n
    assert value(coll, "busy") is None  # only dead processes counted themselves in: no series left
    assert sorted(value(coll, "last", {"pid": str(p)}) for p in pids) == [n] * workers
    assert value(coll, "low") == min(p % 1000 + 1 for p in pids)
    keys = enabled.get_keys()
    assert not [k for k in keys if k.startswith(("prom:gauge_livesum:", "prom:gauge_min:"))]
    assert [k for k in keys if k.startswith("prom:retired_min:")]


def _counting(n: int, wfd: int) -> None:
    c = Counter("hits", "hits")
    for _ in range(n):
        c.inc()
        os.write(wfd, b".")


def test_sigkill_loses_no_completed_increment(enabled: Any) -> None:
    """A worker SIGKILLed in the middle of counting leaves every increment it completed
    (and at most the one in flight); its neighbour's count is exact."""
    r, w = os.pipe()
    victim = start_child(_counting, 10**7, w)
    steady = start_child(_counting, 3000, os.open(os.devnull, os.O_WRONLY))
    os.close(w)
    got = b""
    while len(got) < 2000:  # it is counting
        chunk = os.read(r, 65536)
        assert chunk, "the counting worker ended early"
        got += chunk
    os.kill(victim, signal.SIGKILL)
    assert wait_child(victim).killed
    while chunk := os.read(r, 65536):
        got += chunk
    os.close(r)
    assert wait_child(steady).exitcode == 0
    total = value(prom.MultiProcessCollector(None), "hits_total")
    assert total is not None and 3000 + len(got) <= total <= 3000 + len(got) + 1


def test_a_lock_held_by_a_thread_at_fork_does_not_hang_the_child(enabled: Any) -> None:
    """A fork while another thread holds the value class's lock leaves the child a free lock."""
    import threading

    c = Counter("forked", "forked", registry=None)
    cells = type(c._value).inc.__closure__ or ()
    (lock,) = [x.cell_contents for x in cells if isinstance(x.cell_contents, type(threading.Lock()))]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    try:
        result = wait_child(start_child(c.inc, alarm=5), timeout=20)
    finally:
        release.set()
        t.join()
    assert result.exitcode == 0, result
    assert value(prom.MultiProcessCollector(None), "forked_total") == 1.0


def _restart(i: int) -> None:
    _workload(3)
    Gauge("mx", "highest", ["l"], multiprocess_mode="max").labels("x").set(i)
    Gauge("recent", "recent", multiprocess_mode="livemostrecent").set(i)
    Summary("sz", "sizes").observe(i)


def test_restarts_do_not_grow_the_dict(enabled: Any) -> None:
    """Workers that come and go (dying without mark_process_dead) leave no series once
    collected, except the one per pid that an 'all' gauge must show."""
    coll = prom.MultiProcessCollector(None)
    counts = []
    for i in range(12):
        assert wait_child(start_child(_restart, i)).exitcode == 0
        coll.collect()
        counts.append(len([k for k in enabled.get_keys() if not k.startswith("prom:gauge_all:")]))
    assert counts[1:] == [counts[0]] * 11
    assert value(coll, "mx", {"l": "x"}) == 11.0
    assert value(coll, "recent") is None  # livemostrecent: every writer is dead
    assert value(coll, "sz_count") == 12.0


def test_pid_reuse_and_zombies_count_as_dead(enabled: Any) -> None:
    """A series whose pid now belongs to a process that started at another time, or whose
    process is a zombie not yet reaped, is a dead process's series."""
    series = '["g", "g", {}, "help"]'
    me = store.instance(os.getpid())
    start = me.partition(".")[2]
    reused = f"{os.getpid()}.{int(start) + 1}"
    enabled.set(store.process_key("gauge_livesum", reused, "1", series), 5.0)
    enabled.set(store.process_key("gauge_livesum", me, "2", series), 7.0)
    zombie = start_child(lambda: 0)
    deadline = time.monotonic() + 10
    while store._stat(zombie)[0] != "Z":  # exited, not reaped
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert store.alive(me) and not store.alive(reused)
    zinst = store.instance(zombie)
    enabled.set(store.process_key("gauge_livesum", zinst, "3", series), 100.0)
    assert not store.alive(zinst)
    assert value(prom.MultiProcessCollector(None), "g") == 7.0
    wait_child(zombie)
    assert not store.alive("99999999.1") and not store.alive("junk")


def test_mark_process_dead_drops_only_live_gauges(enabled: Any) -> None:
    """mark_process_dead(pid) removes that pid's live-mode series and nothing else."""
    for pid in (5, 6):
        prom_values.ValueClass = prom.MultiProcessValue(lambda pid=pid: pid)
        for mode in MODES:
            g = Gauge(f"g_{mode}", "help", registry=None, multiprocess_mode=mode)
            g.set(pid)
    before = set(enabled.get_keys())
    prom.mark_process_dead(5)
    gone = before - set(enabled.get_keys())
    assert sorted(store.parse(k)[0] for k in gone) == sorted(f"gauge_{m}" for m in MODES if m.startswith("live"))
    assert all(store.parse(k)[2] == "5" for k in gone)
    coll = prom.MultiProcessCollector(None)
    assert value(coll, "g_livesum") == 6.0 and value(coll, "g_sum") == 11.0
    assert value(coll, "g_liveall", {"pid": "5"}) is None and value(coll, "g_all", {"pid": "5"}) == 5.0


def _set_info_and_state() -> None:
    Info("build", "build info", ["app"]).labels("web").info({"version": "2.0"})
    Enum("phase", "phase", states=["starting", "serving", "draining"]).state("draining")


def test_info_and_enum_are_shared(enabled: Any) -> None:
    """Info and Enum values live in the dict: the last call in any process is what the
    collector and every process's own registry show."""
    reg = CollectorRegistry()
    info = Info("build", "build info", ["app"], registry=reg)
    phase = Enum("phase", "phase", states=["starting", "serving", "draining"], registry=reg)
    info.labels("web").info({"version": "1.0"})
    assert wait_child(start_child(_set_info_and_state)).exitcode == 0
    expected = {
        "build": ("info", "build info", [("build_info", (("app", "web"), ("version", "2.0")), 1.0)]),
        "phase": ("stateset", "phase", [("phase", (("phase", "draining"),), 1.0),
                                        ("phase", (("phase", "serving"),), 0.0),
                                        ("phase", (("phase", "starting"),), 0.0)]),
    }
    assert samples(prom.MultiProcessCollector(None)) == expected
    assert samples(reg) == expected
    prom.disable()  # unhooked: new Info/Enum objects keep their values in the process again
    local = Enum("phase", "phase", states=["a", "b"], registry=None)
    local.state("b")
    assert [s.value for s in local.collect()[0].samples] == [0, 1]
    assert "_shmdict_store" not in vars(Info("x", "x", registry=None))


def test_counter_reset_and_gauge_set_move_only_this_process_share(enabled: Any) -> None:
    """Counter.reset() and a 'sum' gauge's set() change only this process's part of the total."""
    c = Counter("n", "n", registry=None)
    g = Gauge("s", "s", registry=None, multiprocess_mode="sum")
    c.inc(5)
    g.set(4)

    def other() -> None:
        Counter("n", "n").inc(2)
        Gauge("s", "s", multiprocess_mode="sum").set(3)

    assert wait_child(start_child(other)).exitcode == 0
    coll = prom.MultiProcessCollector(None)
    assert (value(coll, "n_total"), value(coll, "s")) == (7.0, 7.0)
    c.reset()
    g.set(1)
    assert (value(coll, "n_total"), value(coll, "s")) == (2.0, 4.0)
    assert (c._value.get(), g._value.get()) == (0, 1)


# ---- enabling -----------------------------------------------------------------------------


def test_enable_from_the_environment(shm_dir: str) -> None:
    """SHMDICT_PROMETHEUS=NAME enables the mode in a process that imports the module."""
    name = unique_name("env")
    code = ("import shmdict.contrib.prometheus as p\n"
            "from prometheus_client import Counter\n"
            "Counter('started', 'processes started').inc()\n"
            "print(p.enable() is p.enable())\n")
    env = {**os.environ, "SHMDICT_PROMETHEUS": f"{name}?size=1m"}
    env["PYTHONPATH"] = os.pathsep.join([HOME, *filter(None, [env.get("PYTHONPATH")])])
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "True"
    d = shmdict.get(name)
    try:
        assert d.size == 1 << 20
        assert value(prom.MultiProcessCollector(None, name=name), "started_total") == 2.0
    finally:
        prom.disable()
        d.close()
        shmdict.unlink(name)


SPAWNED = """
import multiprocessing, sys
from shmdict.contrib.prometheus import MultiProcessCollector, enable
enable(sys.argv[1] if __name__ == "__main__" else None)   # spawned children: from SHMDICT_PROMETHEUS
from prometheus_client import CollectorRegistry, Counter, generate_latest
TASKS = Counter("tasks", "tasks done")

def work(n):
    TASKS.inc(n)
    return n

if __name__ == "__main__":
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert sum(pool.map(work, range(10))) == 45
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    print(generate_latest(registry).decode())
"""


def test_spawned_pool_workers_count_into_the_dict(shm_dir: str, tmp_path: Any) -> None:
    """A multiprocessing program that enables the mode at its top: spawned workers, which
    re-import it, find the dict through SHMDICT_PROMETHEUS and count into it."""
    script = tmp_path / "pool.py"
    script.write_text(SPAWNED)
    name = unique_name("pool")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HOME, *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("SHMDICT_PROMETHEUS", None)
    try:
        out = subprocess.run([sys.executable, str(script), name], env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert "tasks_total 45.0" in out.stdout
    finally:
        shmdict.unlink(name)


def test_enable_refuses_what_cannot_work(shm_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No name, an evicting dict, a second dict or a bad variable are ValueErrors that
    change nothing; disable() gives prometheus_client its own values back."""
    monkeypatch.delenv("SHMDICT_PROMETHEUS", raising=False)
    before = prom_values.ValueClass
    with pytest.raises(ValueError, match="needs a dict name"):
        prom.enable()
    with pytest.raises(ValueError, match="evicted"):
        prom.enable("m", evict=True)
    with pytest.raises(ValueError, match="not enabled"):
        prom.MultiProcessCollector(None)
    monkeypatch.setenv("SHMDICT_PROMETHEUS", "m?colour=blue")
    with pytest.raises(ValueError, match="unknown option"):
        prom.enable()
    assert prom_values.ValueClass is before and not os.path.exists(os.path.join(shm_dir, "shmdict.m"))
    monkeypatch.delenv("SHMDICT_PROMETHEUS")
    d = prom.enable("m")
    try:
        assert prom.enable("m") is d
        with pytest.raises(ValueError, match="already enabled"):
            prom.enable("other")
        assert os.environ["SHMDICT_PROMETHEUS"] == "m"
    finally:
        prom.disable()
        shmdict.unlink("m")
    assert prom_values.ValueClass is before and "SHMDICT_PROMETHEUS" not in os.environ


# ---- exposition ----------------------------------------------------------------------------


def test_exposition_helpers_serve_the_merged_samples(enabled: Any) -> None:
    """generate_latest, make_wsgi_app, make_asgi_app and start_http_server all show the
    samples merged across processes."""
    Counter("served", "requests served", registry=None).inc(2)
    assert wait_child(start_child(lambda: Counter("served", "requests served").inc(3))).exitcode == 0
    reg = CollectorRegistry()
    prom.MultiProcessCollector(reg)
    line = b"served_total 5.0"
    assert line in generate_latest(reg)

    status: list[str] = []
    body = b"".join(make_wsgi_app(reg)({"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""},
                                       lambda s, h: status.append(s)))
    assert status == ["200 OK"] and line in body

    sent: list[dict[str, Any]] = []

    async def asgi() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)

        scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": b"", "headers": []}
        await make_asgi_app(reg)(scope, receive, send)

    asyncio.run(asgi())
    assert sent[0]["status"] == 200 and line in b"".join(m.get("body", b"") for m in sent)

    server, thread = start_http_server(0, addr="127.0.0.1", registry=reg)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as r:
            assert line in r.read()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_stored_keys_are_readable_from_outside(enabled: Any) -> None:
    """Every key holds the series' identity as JSON, readable with `shmdict keys NAME 'prom:*'`."""
    Counter("c", "help", ["l"]).labels("x").inc()
    (key,) = [k for k in enabled.get_keys(match="prom:counter:*")]
    assert json.loads(store.parse(key)[3]) == ["c", "c_total", {"l": "x"}, "help"]
    assert store.parse("prom:nonsense:x") is None and store.parse("other") is None


# ---- the gunicorn example, for real --------------------------------------------------------

EXAMPLE = os.path.join(ROOT, "examples", "gunicorn_prometheus")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(port: int, path: str) -> tuple[int, int, str]:
    """(status, worker pid, body), or (0, 0, '') if the connection broke."""
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, int(r.headers.get("X-Worker-Pid", 0)), r.read().decode()
    except (ConnectionError, http.client.HTTPException):
        return 0, 0, ""
    finally:
        c.close()


def _scrape_every_worker(port: int, want: int, deadline: float) -> dict[int, str]:
    """/metrics from `want` distinct workers (concurrent requests spread them)."""
    from concurrent.futures import ThreadPoolExecutor

    seen: dict[int, str] = {}
    while len(seen) < want:
        assert time.monotonic() < deadline, f"only {len(seen)} of {want} workers answered /metrics"
        with ThreadPoolExecutor(8) as ex:
            for status, pid, body in ex.map(lambda _: _get(port, "/metrics"), range(16)):
                if status == 200:
                    seen[pid] = body
    return seen


def test_gunicorn_example_every_worker_serves_exact_totals(shm_dir: str) -> None:
    """gunicorn with 4 workers: after requests spread over them and a SIGKILLed worker
    (replaced by the master), every worker's /metrics shows the exact totals."""
    pytest.importorskip("gunicorn")
    from concurrent.futures import ThreadPoolExecutor

    port, name = _free_port(), unique_name("metrics")
    env = {**os.environ, "SHMDICT_DIR": shm_dir, "METRICS_NAME": name, "BIND": f"127.0.0.1:{port}",
           "WORKERS": "4", "PYTHONPATH": os.pathsep.join([HOME, *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("SHMDICT_PROMETHEUS", None)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"], cwd=EXAMPLE,
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        first = _scrape_every_worker(port, 4, deadline)
        with ThreadPoolExecutor(8) as ex:
            served = list(ex.map(lambda _: _get(port, "/"), range(200)))
        assert [s for s, _, _ in served] == [200] * 200
        assert len({p for _, p, _ in served}) >= 2  # spread over the workers

        victim = next(iter(first))
        os.kill(victim, signal.SIGKILL)
        while True:  # the master replaces it
            workers = _scrape_every_worker(port, 4, deadline)
            if victim not in workers:
                break
        with ThreadPoolExecutor(8) as ex:
            assert [s for s, _, _ in ex.map(lambda _: _get(port, "/"), range(100))] == [200] * 100

        for pid, body in _scrape_every_worker(port, 4, deadline).items():
            assert pid != victim
            assert 'app_requests_total{path="/"} 300.0' in body, body
            assert "app_request_seconds_count 300.0" in body
            assert "app_workers 4.0" in body  # the killed worker's live gauge is gone
            assert "app_in_progress 0.0" in body
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
        err = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.returncode == 0, err[-2000:]
    assert not os.path.exists(os.path.join(shm_dir, f"shmdict.{name}"))  # on_exit removed it
