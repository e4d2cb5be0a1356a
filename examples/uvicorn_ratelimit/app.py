"""A Starlette app rate-limited by slowapi, shared by every uvicorn worker.

``uvicorn --workers N`` *spawns* its workers (no fork, no master hooks), and
with slowapi's ``memory://`` each keeps its own counters: N times the limit
(slowapi #226). Every worker here imports this module and attaches to, or
creates, the same dict through ``shmdict://`` (race-free), so the limit holds
once for the whole server. Install what it imports (from the repository's
root), then run it::

    pip install '.[limits]' starlette slowapi uvicorn
    cd examples/uvicorn_ratelimit
    uvicorn app:app --workers 4 --port 8000

uvicorn has no master hook to remove the dict at exit: it stays in /dev/shm
(with its counters) until ``shmdict rm ratelimit``. Environment as in
examples/gunicorn_ratelimit: RATELIMIT_NAME, RATELIMIT, RATELIMIT_STRATEGY.
"""

import os

from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import shmdict.contrib.limits  # noqa: F401  registers the shmdict:// storage scheme

NAME = os.environ.get("RATELIMIT_NAME", "ratelimit")

limiter = Limiter(
    key_func=lambda request: "global",  # one limit for everybody; slowapi.util.get_remote_address per client
    storage_uri=f"shmdict://{NAME}?size=16m",
    strategy=os.environ.get("RATELIMIT_STRATEGY", "moving-window"),
)


@limiter.limit(os.environ.get("RATELIMIT", "10/minute"))
async def index(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "worker": os.getpid()}, headers={"X-Worker-Pid": str(os.getpid())})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok", headers={"X-Worker-Pid": str(os.getpid())})


app = Starlette(routes=[Route("/", index), Route("/health", health)])
app.state.limiter = limiter
app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
