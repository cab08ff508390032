"""Listening and stopping: the socket bound before anything else, and a drain on SIGTERM/SIGINT.

The socket is bound first, so a port in use or an address this host lacks is one line before the
zoo loads anything, and `--port 0` knows its port. The server is uvicorn (h11), with open
connections capped at `max_connections` (the next one is answered 503).

On SIGTERM or SIGINT the gate turns to draining: every new request is answered 503 "shutting
down" with `Connection: close` (refused before any work, and the client knows it), while requests
in flight finish. The listener stays open meanwhile, because closing it resets the connections
that the kernel has accepted and the server has not: those clients could not tell whether their
request ran. The drain ends when nothing is in flight and no request arrived for `quiet_s` (or no
connection is left), or at `drain_timeout_s`; then uvicorn closes the listener and the idle
connections, the lifespan unloads every session, and the process exits 0. A second signal stops
at once.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import sys
import threading
import time

import uvicorn

from geofractal_edge.errors import GfedgeError

QUIET_S = 0.5
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def bind(host: str, port: int, *, backlog: int) -> socket.socket:
    address = "127.0.0.1" if host == "localhost" else host.strip("[]")
    # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on each connection (it checks sock.proto): without it
    # a reply's header and body segments wait on the client's delayed ACK, ~40 ms per keep-alive request
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise GfedgeError(f"port {port} on {host} is in use", "pick another --port, or --port 0 for any free one") from None
        raise GfedgeError(f"cannot listen on {host}:{port} ({exc.strerror})", "pass an address of this host with --host") from None
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, gate, drain_timeout_s: float, quiet_s: float = QUIET_S, on_ready=None) -> None:
        super().__init__(config)
        self.gate = gate
        self.drain_timeout_s = drain_timeout_s
        self.quiet_s = quiet_s
        self.on_ready = on_ready
        self._deadline = float("inf")

    @contextlib.contextmanager
    def capture_signals(self):
        """Our handlers instead of uvicorn's (which re-raise the signal at the end, so the exit code is not 0)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        if self.gate.draining:  # the second signal: stop now
            self.force_exit = self.should_exit = True
            return
        self._deadline = time.monotonic() + self.drain_timeout_s
        self.gate.draining = True

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit and self.on_ready is not None:
            self.on_ready()

    async def on_tick(self, counter: int) -> bool:
        if self.gate.draining and not self.should_exit and self._drained():
            self.should_exit = True
        return await super().on_tick(counter)

    def _drained(self) -> bool:
        now = time.monotonic()
        if now >= self._deadline:
            if self.gate.in_flight:
                print(f"gfedge serve: drain deadline passed with {self.gate.in_flight} request(s) in flight", file=sys.stderr)
            return True
        quiet = not self.server_state.connections or now - self.gate.last_seen >= self.quiet_s
        return self.gate.in_flight == 0 and quiet


def run(app, sock: socket.socket, *, options, gate, on_ready=None) -> None:
    """Serve on `sock` until a signal has drained it (or the second signal)."""
    config = uvicorn.Config(app, http="h11", loop="asyncio", lifespan="on", log_level="warning", access_log=False,
                            limit_concurrency=options.max_connections + 1,  # uvicorn answers 503 once it *reaches* the limit
                            backlog=options.backlog, timeout_keep_alive=5,
                            timeout_graceful_shutdown=5, proxy_headers=False, server_header=False)
    DrainingServer(config, gate=gate, drain_timeout_s=options.drain_timeout_s, on_ready=on_ready).run(sockets=[sock])
