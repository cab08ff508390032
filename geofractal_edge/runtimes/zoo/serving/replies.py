"""Replies: JSON bodies, and each error family's HTTP status.

An error is `{"error": problem, "fix": how}`: OIP clients read "error" (tritonclient raises it as
InferenceServerException), people read "fix". User errors are 4xx (404 unknown model or request,
503 budget held by models in use, 400 the rest); anything else is a bug: 500, printed to stderr
with its traceback, and the server keeps serving.
"""

from __future__ import annotations

import json
import sys
import traceback

import numpy as np

from geofractal_edge.errors import GfedgeError
from geofractal_edge.runtimes.zoo.errors import BusyError, NoCandidateError, UnknownModelError, UnknownRequestError

JSON = "application/json"


class HTTPError(GfedgeError):
    """A refusal with its own status (401, 403, 408, 413, 415, ...)."""

    def __init__(self, status: int, problem: str, fix: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(problem, fix)
        self.status = status
        self.headers = headers or {}


def status_of(exc: BaseException) -> int:
    if isinstance(exc, HTTPError):
        return exc.status
    if isinstance(exc, (UnknownModelError, UnknownRequestError, NoCandidateError)):
        return 404
    if isinstance(exc, BusyError):
        return 503
    if isinstance(exc, GfedgeError):
        return 400
    return 500


def error_body(exc: BaseException) -> dict:
    if isinstance(exc, GfedgeError):
        return {"error": exc.problem, "fix": exc.fix}
    traceback.print_exception(exc, file=sys.stderr)
    return {"error": f"bug in geofractal_edge: {type(exc).__name__}: {exc}", "fix": "please report it with the server's stderr"}


def dumps(payload) -> bytes:
    return json.dumps(payload, default=_jsonable, separators=(",", ":")).encode()


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
