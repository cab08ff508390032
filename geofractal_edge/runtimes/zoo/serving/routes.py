"""The Open Inference Protocol (KServe v2) over HTTP: health, metadata, readiness, inference; and /metrics.

    GET  /v2/health/live                                  {"live": true}
    GET  /v2/health/ready                                 200 {"ready": true} while serving and some model is healthy, else 503
    GET  /v2                                              {"name": "gfedge", "version", "extensions": [...]}
    GET  /v2/models/{name}[/versions/1]                   inputs/outputs from the manifest (datatype FP32, INT64, ...; -1 for a dynamic dim)
    GET  /v2/models/{name}[/versions/1]/ready             {"name", "ready"}: not quarantined (a healthy model loads on demand)
    POST /v2/models/{name}[/versions/1]/infer             JSON tensors or the binary tensor extension; `_zoo`: the zoo chooses
    GET  /metrics                                         Prometheus text (prometheus.py)

Every model has the one version "1". A model that is not resident is still ready: the zoo loads
it when a request needs it, within the budget.
"""

from __future__ import annotations

import time

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import geofractal_edge
from geofractal_edge.runtimes.zoo.errors import UnknownModelError
from geofractal_edge.runtimes.zoo.serving import body as body_io
from geofractal_edge.runtimes.zoo.serving import inference, tensors
from geofractal_edge.runtimes.zoo.serving.inference import VERSION, ZOO_MODEL
from geofractal_edge.runtimes.zoo.serving.prometheus import CONTENT_TYPE
from geofractal_edge.runtimes.zoo.serving.replies import HTTPError, status_of
from geofractal_edge.runtimes.zoo.serving.service import error_reply, handled, reply

EXTENSIONS = ["binary_tensor_data", "parameters", "model_repository", "gfedge_zoo"]
PLATFORM = "onnxruntime_onnx"


async def live(request: Request, service) -> Response:
    return reply({"live": True})


async def ready(request: Request, service) -> Response:
    healthy = await service.call(lambda: any(e.serviceable for e in service.zoo.state.entries()))
    ok = healthy and not service.gate.draining
    return reply({"ready": ok}, 200 if ok else 503)


async def server_metadata(request: Request, service) -> Response:
    return reply({"name": "gfedge", "version": geofractal_edge.__version__, "extensions": EXTENSIONS})


async def model_metadata(request: Request, service) -> Response:
    name = _model(request)
    return reply(await service.call(_metadata, service.zoo, name))


async def model_ready(request: Request, service) -> Response:
    name = _model(request)
    if name == ZOO_MODEL:
        ok = await service.call(lambda: any(e.serviceable for e in service.zoo.state.entries()))
    else:
        entry = await service.call(service.zoo.state.get, name)
        ok = entry.serviceable
    return reply({"name": name, "ready": ok}, 200 if ok else 503)


async def infer(request: Request, service) -> Response:
    """Read the body, wait for a worker, run `inference.infer` there; count it in the metrics."""
    name = _model(request)
    options, metrics = service.options, service.metrics
    label = name if name == ZOO_MODEL or any(e.id == name for e in service.zoo.state.entries()) else "_unknown"
    started = time.perf_counter()
    queue_s = 0.0
    try:
        with anyio.fail_after(options.request_timeout_s):
            raw = await body_io.read(request.stream(), max_bytes=options.max_body_bytes)
            metrics.waiting(label, 1)
            queued = time.perf_counter()
            try:
                await service.workers.acquire()
            finally:
                metrics.waiting(label, -1)
        queue_s = time.perf_counter() - queued
        body, raw = [raw], None  # the worker holds the only reference: freed before its trim
        try:
            result = await anyio.to_thread.run_sync(inference.infer, service.zoo, options, name, body,
                                                    request.headers.get("inference-header-content-length"))
        finally:
            service.workers.release()
    except Exception as exc:
        if isinstance(exc, TimeoutError):
            exc = HTTPError(408, f"the request did not arrive or get a worker within {options.request_timeout_s:g} s",
                            "send it faster, or retry when the server is less busy", headers={"connection": "close"})
        status = status_of(exc)
        metrics.failed(label, "REJECTED" if status in (408, 503) else "BACKEND" if status == 500 else "OTHER", total_s=time.perf_counter() - started)
        return error_reply(exc)
    metrics.succeeded(result.model, total_s=time.perf_counter() - started, queue_s=queue_s, compute_s=result.compute_s)
    return Response(result.body, status_code=result.status, headers=result.headers)


async def prometheus(request: Request, service) -> Response:
    return Response(await service.call(service.metrics.render), media_type=CONTENT_TYPE)


def _model(request: Request) -> str:
    name, version = request.path_params["name"], request.path_params.get("version")
    if version is not None and version != VERSION:
        raise UnknownModelError(f"model '{name}' has no version '{version}'", f"this server serves version {VERSION} of each model")
    return name


def _metadata(zoo, name: str) -> dict:
    if name == ZOO_MODEL:
        healthy = [e for e in zoo.state.entries() if e.serviceable]
        inputs = _union([tensors.metadata(d) for e in healthy for d in e.data_inputs])
        outputs = _union([tensors.metadata(d) for e in healthy for d in e.manifest.outputs])
        return {"name": ZOO_MODEL, "versions": [VERSION], "platform": "gfedge_zoo", "inputs": inputs, "outputs": outputs,
                "parameters": {"models": ",".join(e.id for e in healthy)}}
    entry = zoo.state.get(name)
    if entry.bundle is None:
        raise HTTPError(503, f"model '{name}' is quarantined ({entry.reason})", "replace its bundle folder; it is checked again when its files change")
    manifest = entry.manifest
    return {
        "name": name, "versions": [VERSION], "platform": PLATFORM,
        "inputs": [tensors.metadata(d) for d in entry.data_inputs], "outputs": [tensors.metadata(d) for d in manifest.outputs],
        "parameters": {"family": manifest.family, "precision": manifest.precision, "target": manifest.target.name, "state": entry.state,
                       "takes_key": entry.takes_key, "keys": ",".join(entry.bundle.key_names())},
    }


def _union(items: list[dict]) -> list[dict]:
    """One entry per tensor name; a dim the models disagree on becomes -1."""
    merged: dict[str, dict] = {}
    for item in items:
        seen = merged.setdefault(item["name"], dict(item))
        if seen["shape"] != item["shape"]:
            same_rank = len(seen["shape"]) == len(item["shape"])
            seen["shape"] = [a if same_rank and a == b else -1 for a, b in zip(seen["shape"], item["shape"])] if same_rank else [-1]
    return list(merged.values())


def _both(path: str, endpoint, methods: list[str]) -> list[Route]:
    """The route with and without /versions/{version}."""
    versioned = path.replace("{name}", "{name}/versions/{version}")
    return [Route(path, handled(endpoint), methods=methods), Route(versioned, handled(endpoint), methods=methods)]


ROUTES = [
    Route("/v2/health/live", handled(live), methods=["GET"]),
    Route("/v2/health/ready", handled(ready), methods=["GET"]),
    Route("/v2", handled(server_metadata), methods=["GET"]),
    *_both("/v2/models/{name}", model_metadata, ["GET"]),
    *_both("/v2/models/{name}/ready", model_ready, ["GET"]),
    *_both("/v2/models/{name}/infer", infer, ["POST"]),
    Route("/metrics", handled(prometheus), methods=["GET"]),
]
