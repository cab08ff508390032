"""A small client for a running `gfedge serve`: one JSON call at a time, standard library only."""

from __future__ import annotations

import http.client
import json

from geofractal_edge.errors import GfedgeError
from geofractal_edge.runtimes.zoo.server import HOST

DEFAULT_PORT = 8470


def call(path: str, body: dict | None = None, *, port: int = DEFAULT_PORT, timeout: float = 30.0) -> dict:
    """GET `path` (no body) or POST `body` as JSON; returns the JSON answer or raises GfedgeError."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        if body is None:
            connection.request("GET", path)
        else:
            connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = json.loads(response.read() or b"{}")
    except (ConnectionRefusedError, OSError) as exc:
        raise GfedgeError(f"no gfedge serve answers on {HOST}:{port} ({exc})", f"start one: gfedge serve ZOO_DIR --port {port}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise GfedgeError(f"{path}: {payload.get('error', response.reason)}", payload.get("fix", ""))
    return payload
