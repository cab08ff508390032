"""The zoo as an HTTP service: the Open Inference Protocol (KServe v2) plus the zoo's extensions.

`serve(zoo, options)` listens (127.0.0.1 unless told otherwise; a token is required anywhere
else), answers until SIGTERM or SIGINT, drains the requests in flight and unloads every session.
The endpoints, limits and shutdown are described in `serving/` (routes.py, extensions.py,
guard.py, lifecycle.py) and in the README's serving section. Only `gfedge serve` imports this
module; the HTTP stack (starlette, uvicorn, prometheus_client) is imported when `serve` is
called, and a missing one is one line naming the extra that brings it.
"""

from __future__ import annotations

import importlib.util
import socket

from geofractal_edge.errors import MissingDependencyError

STACK = ("starlette", "uvicorn", "prometheus_client")


def listen(options) -> socket.socket:
    """Bind and listen now (before the zoo loads), so a bad address or a busy port is one line at once."""
    require_stack()
    from geofractal_edge.runtimes.zoo.serving.lifecycle import bind

    return bind(options.host, options.port, backlog=options.backlog)


def serve(zoo, options, *, sock: socket.socket | None = None, on_ready=None) -> None:
    """Serve `zoo` until a signal; `on_ready(port)` is called once requests are answered."""
    require_stack()
    from geofractal_edge.runtimes.zoo.serving import app, lifecycle

    sock = sock if sock is not None else listen(options)
    port = sock.getsockname()[1]
    asgi, service = app.build_app(zoo, options, port=port)
    lifecycle.run(asgi, sock, options=options, gate=service.gate, on_ready=None if on_ready is None else (lambda: on_ready(port)))


def require_stack() -> None:
    missing = [name for name in STACK if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(f"{', '.join(missing)} not installed here (the HTTP server needs them)", 'pip install "geofractal-edge[serve]"')
