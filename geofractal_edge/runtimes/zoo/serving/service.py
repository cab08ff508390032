"""What every handler reaches: the zoo, the options, the metrics, the drain gate, the workers; and how replies are made.

The zoo is blocking code, so every call to it runs in a thread; the event loop only reads bodies
and writes replies. Inference runs on `workers` (an anyio CapacityLimiter of `options.workers`
threads; a request waits for one at most `request_timeout_s`); control calls, which are short,
on anyio's default thread pool.
"""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.responses import Response

from geofractal_edge.runtimes.zoo.serving import body as body_io
from geofractal_edge.runtimes.zoo.serving.guard import Gate
from geofractal_edge.runtimes.zoo.serving.prometheus import ServeMetrics
from geofractal_edge.runtimes.zoo.serving.replies import JSON, HTTPError, dumps, error_body, status_of

CONTROL_BODY_BYTES = 64 << 10  # bodies of the control endpoints (feedback, keys, ...)


class Service:
    def __init__(self, zoo, options) -> None:
        self.zoo = zoo
        self.options = options
        self.gate = Gate()
        self.metrics = ServeMetrics(zoo)
        self.workers: anyio.CapacityLimiter | None = None  # made on the event loop, at startup

    async def call(self, fn, *args, **kwargs):
        """A blocking zoo call in a thread (not an inference worker: control calls are short)."""
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    async def json_body(self, request: Request) -> dict:
        """A small JSON object body (control endpoints); an empty body is {}."""
        with anyio.fail_after(self.options.request_timeout_s):
            raw = await body_io.read(request.stream(), max_bytes=CONTROL_BODY_BYTES)
        body = body_io.parse(raw, max_depth=self.options.max_json_depth, max_int_digits=self.options.max_int_digits)
        if not isinstance(body, dict):
            raise HTTPError(400, "the body must be a JSON object", "see the endpoint list in the README's serving section")
        return body


def reply(payload, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(payload), status_code=status, media_type=JSON, headers=headers)


def error_reply(exc: BaseException) -> Response:
    status = status_of(exc)
    headers = dict(getattr(exc, "headers", {}))
    return reply(error_body(exc), status, headers)


def handled(handler):
    """A route whose GfedgeError becomes its status and {"error", "fix"}, and whose bug becomes a 500 (printed)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, request.app.state.service)
        except TimeoutError:
            return error_reply(HTTPError(408, "the request took longer than the server's timeout to arrive or to get a worker",
                                         "send it faster, or retry when the server is less busy", headers={"connection": "close"}))
        except Exception as exc:
            return error_reply(exc)

    endpoint.__name__ = handler.__name__
    return endpoint
