"""gunicorn settings: 4 workers whose prometheus_client metrics live in one dict.

The master enables the mode when gunicorn reads this file, before it forks
any worker, so every metric a worker creates keeps its value in the dict
``METRICS_NAME`` (default ``metrics``); each worker's ``/metrics`` shows the
totals of all of them. ``child_exit`` drops a dead worker's ``live`` gauges
at once (a scrape would also notice it is gone); the master removes the dict
when it exits.
"""

import os

import shmdict
from shmdict.contrib.prometheus import enable, mark_process_dead

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WORKERS", "4"))
timeout = 30

NAME = os.environ.get("METRICS_NAME", "metrics")
enable(NAME, "16m")  # here, in the master: before any metric is created


def child_exit(server, worker):
    mark_process_dead(worker.pid)


def on_exit(server):
    try:
        shmdict.unlink(NAME)  # handles still open keep working; the name is gone
    except FileNotFoundError:
        pass
