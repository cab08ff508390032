"""What every request passes before any work: draining, Host, Origin, token, content type, body size.

An ASGI middleware in front of the routes. Each refusal is a JSON error, counted in
`gfedge_http_refused_total{reason}`, and closes the connection (its body is never read):
- draining (SIGTERM/SIGINT received): 503, so a client knows the request was not run;
- Host not the bind address or a name given with --allow-host: 403 (DNS rebinding: a page whose
  name resolves to 127.0.0.1 sends its own name as Host);
- an Origin header that is not this server: 403 (a page in a browser always sends its Origin on a
  cross-site POST);
- a token was given and `Authorization: Bearer <token>` does not match: 401 (compared in constant time);
- a POST body typed text/plain, form or multipart: 415. Those are the types a page can send without
  asking first (no CORS preflight), so this and the Origin check close the CSRF door. Accepted:
  application/json, application/octet-stream (binary tensors) and no type at all (tritonclient);
- Content-Length over the cap: 413 before a byte of the body is read.
Then the request counts as in flight until its answer is sent; the drain waits for that count.
"""

from __future__ import annotations

import hmac
import time
from urllib.parse import urlsplit

from geofractal_edge.runtimes.zoo.serving.replies import JSON, HTTPError, dumps

_BODY_TYPES = ("", "application/json", "application/octet-stream")


class Gate:
    """Draining state and requests in flight, shared by the guard and the server's shutdown."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self.last_seen = time.monotonic()


class Guard:
    def __init__(self, app, *, options, port: int, gate: Gate, metrics) -> None:
        self.app = app
        self.options = options
        self.hosts = options.host_names(port)
        self.token = options.token.encode() if options.token else None
        self.gate = gate
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.gate.last_seen = time.monotonic()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            reason, error = refusal
            self.metrics.refused.labels(reason).inc()
            await send_error(send, error)
            return
        self.gate.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.in_flight -= 1
            self.metrics.in_flight.dec()

    def _refusal(self, scope, headers: dict[str, str]) -> tuple[str, HTTPError] | None:
        if self.gate.draining:
            return "draining", HTTPError(503, "the server is shutting down; this request was not run", "send it again to a running server")
        if self.hosts and headers.get("host", "").lower() not in self.hosts:
            return "host", HTTPError(403, f"Host {headers.get('host', '')[:80]!r} is not this server", "address it by the name it was started with (--allow-host adds names)")
        origin = headers.get("origin")
        if origin is not None and self.hosts and not self._same_origin(origin):
            return "origin", HTTPError(403, f"requests from the page at {origin[:80]!r} are refused", "call the server from a program, not from another site's page")
        if self.token is not None and not self._authorized(headers.get("authorization", "")):
            return "token", HTTPError(401, "missing or wrong bearer token", "send Authorization: Bearer <the token in --token-file>",
                                      headers={"www-authenticate": "Bearer"})
        if scope["method"] in ("POST", "PUT", "PATCH"):
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind not in _BODY_TYPES:
                return "content_type", HTTPError(415, f"a body of type {kind[:60]!r} is refused", "send Content-Type: application/json (or application/octet-stream with binary tensors)")
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self.options.max_body_bytes:
                return "body_size", HTTPError(413, f"the body of {int(length):,} bytes is over {self.options.max_body_bytes:,}",
                                              "send fewer rows per request (or start the server with a larger --max-body)")
        return None

    def _same_origin(self, origin: str) -> bool:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() in self.hosts

    def _authorized(self, value: str) -> bool:
        scheme, _, given = value.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token)


async def send_error(send, error: HTTPError) -> None:
    body = dumps({"error": error.problem, "fix": error.fix})
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    headers += [(k.encode(), v.encode()) for k, v in error.headers.items() if k != "connection"]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
