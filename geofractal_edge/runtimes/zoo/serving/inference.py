"""POST /v2/models/{name}[/versions/1]/infer: one inference, from the body's bytes to the reply's, in a worker thread.

The order is the point: the JSON header is parsed within the body limits; the tensors' declared
shapes, datatypes and sizes are checked against the manifest (a large JSON body first as a
skeleton whose numbers are all 0, so a tensor 100x over its bound never becomes millions of
floats); only then are arrays built, and the zoo runs them. After a large body the parse garbage
is handed back to the OS (`zoo.trim`). A large body is parsed as the zoo's foreign work
(`Residency.foreign_work`): loads wait for it, so its memory is never measured as a model's.

`_zoo` as the model name lets the zoo choose: among the healthy models whose data inputs are the
request's (and whose family is the `family` parameter, if given) sage picks by trust in the
`context`, cost and residency. The tensors are checked against the first of those models that
accepts them. The reply's `model_name` is the model that served, and `parameters.request_id` a
single-use, unguessable handle for `POST /v2/gfedge/feedback`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from dataclasses import dataclass, field

from geofractal_edge.errors import InputError
from geofractal_edge.runtimes.zoo.errors import NoCandidateError
from geofractal_edge.runtimes.zoo.serving import body as body_io
from geofractal_edge.runtimes.zoo.serving import protocol, tensors
from geofractal_edge.runtimes.zoo.serving.replies import JSON, dumps

ZOO_MODEL = "_zoo"
VERSION = "1"
TRIM_AFTER_BODY = 1 << 20  # a body this large parses into many times its size in Python objects


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    model: str | None = None  # the model that served
    compute_s: float = 0.0


def infer(zoo, options, model: str, body: list[bytes], header_length: str | None) -> Reply:
    """The whole request after its body was read; raises GfedgeError (with its status) on refusal.

    `body` is a one-item list this call empties: the caller keeps no reference, so the body is
    garbage before the trim that follows a large one.
    """
    size = len(body[0])
    try:
        return _infer(zoo, options, model, body.pop(), header_length)
    finally:
        if size > TRIM_AFTER_BODY:
            zoo.trim()  # the body and its parse are garbage now; without this glibc keeps their tens of MB


def _infer(zoo, options, model: str, raw: bytes, header_length: str | None) -> Reply:
    # a large body is parsed as the zoo's foreign work: no load measures its memory as a model's
    with zoo.residency.foreign_work() if len(raw) > TRIM_AFTER_BODY else contextlib.nullcontext():
        request, arrays = _decoded(zoo, options, model, raw, header_length)
    answer = zoo.infer(arrays, key=request.key, context=request.context, family=request.family, model=None if model == ZOO_MODEL else model,
                       request_id=secrets.token_urlsafe(16))
    started = time.perf_counter()
    out, chunks = tensors.encode(answer.outputs, request.outputs, binary_default=request.binary_output)
    reply = {"model_name": answer.model, "model_version": VERSION, "parameters": _answer_parameters(answer), "outputs": out}
    if request.id is not None:
        reply = {"id": request.id, **reply}
    head = dumps(reply)
    compute_s = answer.seconds + time.perf_counter() - started
    if not chunks:
        return Reply(200, head, {"content-type": JSON}, model=answer.model, compute_s=compute_s)
    return Reply(200, head + b"".join(chunks), {"content-type": "application/octet-stream", "inference-header-content-length": str(len(head))},
                 model=answer.model, compute_s=compute_s)


def _decoded(zoo, options, model: str, raw: bytes, header_length: str | None) -> tuple[protocol.InferRequest, dict]:
    """(the request without its tensor data, its inputs as arrays), every check before any array."""
    header, binary = body_io.split(raw, header_length)
    limits = {"max_depth": options.max_json_depth, "max_int_digits": options.max_int_digits}
    if len(header) > TRIM_AFTER_BODY:  # shapes first, on a skeleton of zeros
        skeleton = protocol.infer_request(body_io.parse(header, skeleton=True, **limits))
        checked_declarations(zoo, model, skeleton, binary_bytes=len(binary))
        del skeleton
    request = protocol.infer_request(body_io.parse(header, **limits))
    decls, outputs = checked_declarations(zoo, model, request, binary_bytes=len(binary))
    if outputs is not None and request.outputs is not None:
        unknown = [w.name for w in request.outputs if w.name not in outputs]
        if unknown:
            raise InputError(f"unknown output {unknown}", f"model '{model}' gives {outputs}")
    arrays = tensors.decode(request.inputs, decls, binary)
    return dataclasses.replace(request, inputs=()), arrays  # the JSON lists are garbage now


def checked_declarations(zoo, model: str, request: protocol.InferRequest, *, binary_bytes: int):
    """(data input declarations, output names or None) of the model the tensors are checked against; InputError if none accepts them."""
    if model != ZOO_MODEL:
        entry = zoo.state.get(model)  # UnknownModelError: 404
        if entry.bundle is None:
            raise NoCandidateError(f"model '{model}' is quarantined ({entry.reason})",
                                   "quarantined: replace its bundle folder (it is checked again when its files change); `gfedge ps` lists why")
        graph = entry.manifest.graph
        tensors.check(request.inputs, graph.data_inputs, graph.dim_ranges, binary_bytes=binary_bytes)
        return graph.data_inputs, graph.output_names
    names = {t.name for t in request.inputs}
    candidates = [e for e in zoo.state.entries() if e.serviceable
                  and {d.name for d in e.data_inputs} == names and request.family in (None, e.manifest.family)]
    if not candidates:
        family = f" of family {request.family}" if request.family else ""
        raise NoCandidateError(f"no healthy model{family} in the zoo takes inputs {sorted(names)}",
                               "GET /v2/models/_zoo lists the inputs the zoo's models take")
    first_error = None
    for entry in candidates:
        graph = entry.manifest.graph
        try:
            tensors.check(request.inputs, graph.data_inputs, graph.dim_ranges, binary_bytes=binary_bytes)
            return graph.data_inputs, None
        except InputError as exc:
            first_error = first_error or exc
    raise first_error


def _answer_parameters(answer) -> dict:
    params = {"request_id": answer.request_id, "context": answer.context, "hit": answer.hit, "swapped": answer.swapped,
              "latency_ms": round(answer.seconds * 1e3, 3)}
    if answer.fallback_from is not None:
        params["fallback_from"] = answer.fallback_from
    if answer.decoded is not None:
        params["decoded"] = answer.decoded
    return params
