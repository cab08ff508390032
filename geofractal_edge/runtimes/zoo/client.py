"""A small client for a running `gfedge serve`: one JSON call at a time, standard library only."""

from __future__ import annotations

import http.client
import json

from geofractal_edge.errors import GfedgeError

HOST = "127.0.0.1"
DEFAULT_PORT = 8470


def call(path: str, body: dict | None = None, *, host: str = HOST, port: int = DEFAULT_PORT, token: str | None = None,
         timeout: float = 30.0):
    """GET `path` (no body) or POST `body` as JSON; returns the JSON answer or raises GfedgeError."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        if body is None:
            connection.request("GET", path, headers=headers)
        else:
            connection.request("POST", path, body=json.dumps(body), headers={**headers, "Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
    except OSError as exc:
        raise GfedgeError(f"no gfedge serve answers on {host}:{port} ({exc})", f"start one: gfedge serve ZOO_DIR --port {port}") from None
    finally:
        connection.close()
    try:
        payload = json.loads(raw or b"{}")
    except ValueError:
        payload = {"error": raw[:200].decode("utf-8", "replace")}
    if response.status != 200:
        error = payload.get("error", response.reason) if isinstance(payload, dict) else response.reason
        fix = payload.get("fix", "") if isinstance(payload, dict) else ""
        raise GfedgeError(f"{path}: {error}", fix)
    return payload
