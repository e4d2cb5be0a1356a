"""A WSGI app whose metrics are counted once across gunicorn's workers.

``/`` does some "work" and counts it; ``/metrics`` serves the samples merged
across every worker (prometheus_client's ``make_wsgi_app`` over a registry
holding shmdict's ``MultiProcessCollector``). Both answer with the worker's
pid in ``X-Worker-Pid``. Run it with ``gunicorn -c gunicorn.conf.py app:app``.
"""

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from shmdict.contrib.prometheus import MultiProcessCollector

REQUESTS = Counter("app_requests", "Requests served", ["path"])
LATENCY = Histogram("app_request_seconds", "Time spent serving a request")
IN_PROGRESS = Gauge("app_in_progress", "Requests being served", multiprocess_mode="livesum")
WORKERS = Gauge("app_workers", "Worker processes running", multiprocess_mode="livesum")
WORKERS.inc()  # this worker, until it exits (or dies: its live gauges are then dropped)

registry = CollectorRegistry()
MultiProcessCollector(registry)
metrics_app = make_wsgi_app(registry)


def app(environ, start_response):
    pid = [("X-Worker-Pid", str(os.getpid()))]
    if environ.get("PATH_INFO") == "/metrics":
        return metrics_app(environ, lambda status, headers: start_response(status, headers + pid))
    with IN_PROGRESS.track_inprogress(), LATENCY.time():
        REQUESTS.labels(environ.get("PATH_INFO", "/")).inc()
        time.sleep(0.001)
    start_response("200 OK", [("Content-Type", "text/plain")] + pid)
    return [b"ok\n"]
