"""A Flask app whose rate limit holds across every gunicorn worker.

With ``storage_uri="memory://"`` each of gunicorn's N workers keeps its own
counters, so clients get N times the limit (flask-limiter #40, #441). Here the
counters live in one shmdict that all workers share.

Install what it imports (from the repository's root), then run it (4 workers,
the dict created by the master in gunicorn.conf.py)::

    pip install '.[limits]' flask flask-limiter gunicorn
    cd examples/gunicorn_ratelimit
    gunicorn -c gunicorn.conf.py app:app
    for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code}\n' localhost:8000/; done

Environment: RATELIMIT_NAME (dict name, default "ratelimit"), RATELIMIT
(default "10/minute"), RATELIMIT_STRATEGY (fixed-window, moving-window or
sliding-window-counter; default moving-window).
"""

import os

from flask import Flask, jsonify
from flask_limiter import Limiter

import shmdict.contrib.limits  # noqa: F401  registers the shmdict:// storage scheme

NAME = os.environ.get("RATELIMIT_NAME", "ratelimit")

app = Flask(__name__)
limiter = Limiter(
    lambda: "global",  # one limit for everybody; use flask_limiter.util.get_remote_address per client
    app=app,
    storage_uri=f"shmdict://{NAME}?size=16m",
    strategy=os.environ.get("RATELIMIT_STRATEGY", "moving-window"),
)


@app.after_request
def tag_worker(response):  # which worker answered: the test checks that several do
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


@app.route("/")
@limiter.limit(os.environ.get("RATELIMIT", "10/minute"))
def index():
    return jsonify(ok=True, worker=os.getpid())


@app.route("/health")
@limiter.exempt
def health():
    return "ok"
