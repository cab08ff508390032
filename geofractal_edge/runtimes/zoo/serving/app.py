"""The ASGI application: the routes behind the guard, and the zoo's lifetime.

The lifespan makes the inference workers (an anyio CapacityLimiter of `workers` threads: it needs
the event loop), starts the rescan of the zoo folder and, at shutdown (after the drain), unloads
every session. Unknown paths and methods answer in the same {"error", "fix"} JSON as the rest.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import traceback

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from geofractal_edge.runtimes.zoo.serving import extensions, routes
from geofractal_edge.runtimes.zoo.serving.guard import Guard
from geofractal_edge.runtimes.zoo.serving.service import Service, reply


def build_app(zoo, options, *, port: int) -> tuple[Guard, Service]:
    service = Service(zoo, options)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.workers = anyio.CapacityLimiter(options.workers)
        stop = threading.Event()
        if options.rescan_s > 0:
            threading.Thread(target=_rescan, args=(zoo, stop, options.rescan_s), name="gfedge-rescan", daemon=True).start()
        try:
            yield
        finally:
            stop.set()
            zoo.close()  # after the drain: every idle session unloaded

    async def not_found(request: Request, exc: HTTPException) -> Response:
        what = "no endpoint" if exc.status_code == 404 else "method not allowed on"
        return reply({"error": f"{what} {request.method} {request.url.path}", "fix": "see the endpoint list in the README's serving section"}, exc.status_code)

    app = Starlette(routes=routes.ROUTES + extensions.ROUTES, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.service = service
    return Guard(app, options=options, port=port, gate=service.gate, metrics=service.metrics), service


def _rescan(zoo, stop: threading.Event, every_s: float) -> None:
    while not stop.wait(every_s):
        try:
            zoo.scan()
        except Exception:  # a scan must never take the service down
            traceback.print_exc(file=sys.stderr)
