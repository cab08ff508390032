"""The zoo's extensions: the model repository (load, unload, index) and gfedge's own, under /v2/gfedge.

    POST /v2/repository/index                         [{"name", "version", "state", "reason"}]; {"ready": true} lists ready ones only
    POST /v2/repository/models/{name}/load            load now (a quarantined model is retried, its bundle checked again)
    POST /v2/repository/models/{name}/unload          unload now, measuring what came back (503 while it serves a request)
    GET  /v2/gfedge/status                            models (state, bytes measured/estimated, pins, hits, loads, trust), memory, metrics
    GET  /v2/gfedge/keys                              bundle keys, folder keys and the models that take them, rejected keys with reasons
    POST /v2/gfedge/keys       {"folder"?}            hot-add a key folder inside the zoo or under a --keys folder (none: rescan)
    POST /v2/gfedge/feedback   {"request_id", "quality": 0..1}   once per answer; moves the trust of (model, context)
    POST /v2/gfedge/prefetch   {"key"?, "context"?, "family"?, "model"?}
    POST /v2/gfedge/power      {"low": bool}
    POST /v2/gfedge/rescan                            register bundles dropped into the zoo folder since the last scan

Repository states, in Triton's words: READY (resident), LOADING, UNAVAILABLE (not resident: loaded
on demand; or quarantined, with the reason).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from geofractal_edge.errors import InputError
from geofractal_edge.runtimes.zoo.catalog import LOADING, QUARANTINED, RESIDENT
from geofractal_edge.runtimes.zoo.serving.inference import VERSION
from geofractal_edge.runtimes.zoo.serving.replies import HTTPError
from geofractal_edge.runtimes.zoo.serving.service import handled, reply

_FIX = "see the endpoint list in the README's serving section"


async def index(request: Request, service) -> Response:
    body = await service.json_body(request)
    only_ready = _fields(body, {"ready": bool}).get("ready", False)
    rows = [_row(e) for e in await service.call(service.zoo.state.entries)]
    return reply([r for r in rows if r["state"] == "READY" or not only_ready])


async def load(request: Request, service) -> Response:
    if _fields(await service.json_body(request), {"parameters": dict}).get("parameters"):
        raise InputError("load parameters (a config or files) are not supported", "the zoo loads the bundle folder as it is on disk: send {}")
    return reply(await service.call(service.zoo.load, request.path_params["name"]))


async def unload(request: Request, service) -> Response:
    _fields(await service.json_body(request), {"parameters": dict})
    return reply(await service.call(service.zoo.unload, request.path_params["name"]))


async def status(request: Request, service) -> Response:
    return reply(await service.call(service.zoo.status))


async def keys(request: Request, service) -> Response:
    zoo = service.zoo
    if request.method == "GET":
        return reply(await service.call(zoo.keys_status))
    folder = _fields(await service.json_body(request), {"folder": str}).get("folder")
    if not folder:
        await service.call(zoo.keyring.rescan)
        return reply(await service.call(zoo.keys_status))
    return reply(await service.call(zoo.add_key_folder, _allowed_key_folder(Path(folder), zoo.folder, service.options.key_roots)))


async def feedback(request: Request, service) -> Response:
    body = _fields(await service.json_body(request), {"request_id": str, "quality": (int, float)}, required=("request_id", "quality"))
    return reply(await service.call(service.zoo.feedback, body["request_id"], body["quality"]))


async def prefetch(request: Request, service) -> Response:
    body = _fields(await service.json_body(request), {"key": str, "context": str, "family": str, "model": str})
    return reply({"model": await service.call(service.zoo.prefetch, **body)})


async def power(request: Request, service) -> Response:
    low = _fields(await service.json_body(request), {"low": bool}, required=("low",))["low"]
    await service.call(service.zoo.set_power, low=low)
    return reply({"low_power": service.zoo.low_power})


async def rescan(request: Request, service) -> Response:
    await service.json_body(request)
    return reply(await service.call(service.zoo.scan))


def _row(entry) -> dict:
    state = {RESIDENT: "READY", LOADING: "LOADING"}.get(entry.state, "UNAVAILABLE")
    reason = entry.reason if entry.state == QUARANTINED else "" if state != "UNAVAILABLE" else "not resident; loaded on demand"
    return {"name": entry.id, "version": VERSION, "state": state, "reason": reason}


def _fields(body: dict, kinds: dict, *, required: tuple[str, ...] = ()) -> dict:
    """The body's fields, each known and of its type (bool is not a number here)."""
    unknown = sorted(set(body) - set(kinds))
    if unknown:
        raise InputError(f"the body has unknown field(s) {unknown[:5]}", f"this endpoint takes {sorted(kinds)}")
    missing = [name for name in required if name not in body]
    if missing:
        raise InputError(f"the body lacks {missing}", _FIX)
    for name, value in body.items():
        kind = kinds[name]
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise InputError(f"'{name}' must be {getattr(kind, '__name__', 'a number')}, got {type(value).__name__}", _FIX)
    return body


def _allowed_key_folder(folder: Path, zoo_folder: Path, roots: tuple[Path, ...]) -> Path:
    """A hot-added key folder must lie in the zoo folder or under a folder named at start (symlinks resolved)."""
    resolved = folder.resolve()
    allowed = [Path(zoo_folder).resolve(), *(Path(r).resolve() for r in roots)]
    if not any(resolved == root or resolved.is_relative_to(root) for root in allowed):
        raise HTTPError(403, f"key folder {folder} is outside the zoo folder and the --keys folders",
                        "put it inside one of those, or name it with --keys when starting gfedge serve")
    return resolved


ROUTES = [
    Route("/v2/repository/index", handled(index), methods=["GET", "POST"]),
    Route("/v2/repository/models/{name}/load", handled(load), methods=["POST"]),
    Route("/v2/repository/models/{name}/unload", handled(unload), methods=["POST"]),
    Route("/v2/gfedge/status", handled(status), methods=["GET"]),
    Route("/v2/gfedge/keys", handled(keys), methods=["GET", "POST"]),
    Route("/v2/gfedge/feedback", handled(feedback), methods=["POST"]),
    Route("/v2/gfedge/prefetch", handled(prefetch), methods=["POST"]),
    Route("/v2/gfedge/power", handled(power), methods=["POST"]),
    Route("/v2/gfedge/rescan", handled(rescan), methods=["POST"]),
]
