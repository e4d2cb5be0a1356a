"""gunicorn settings: 4 workers sharing one rate-limit dict.

The master creates the dict before it forks any worker and removes it when
it exits, so the counters live as long as the server (a dict left behind by
a SIGKILLed master is attached to, counters included, on the next start; see
``shmdict ls`` / ``shmdict rm``). Workers (and a
``--preload``ed app in the master) attach to it by name through
``shmdict://NAME`` in app.py; a worker that gunicorn SIGKILLs and replaces
never leaves the dict locked or corrupt.
"""

import os

import shmdict

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WORKERS", "4"))
timeout = 30

NAME = os.environ.get("RATELIMIT_NAME", "ratelimit")


def on_starting(server):
    # open = attach or create, race-free. Without --preload this creates the
    # dict; with --preload, app.py's storage (imported first, in this same
    # master) already has, and this attaches to it.
    server.ratelimit_dict = shmdict.open(NAME, "16m")


def on_exit(server):
    try:
        shmdict.unlink(NAME)  # handles still open keep working; the name is gone
    except FileNotFoundError:
        pass
