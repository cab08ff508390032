"""The serving pieces without a server: options, body limits, the OIP request, tensors against a declaration, the guard."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from geofractal_edge.artifacts.manifest import DimRange, TensorDecl
from geofractal_edge.errors import GfedgeError, InputError
from geofractal_edge.runtimes.zoo.serving import body, protocol, tensors
from geofractal_edge.runtimes.zoo.serving.guard import Gate, Guard
from geofractal_edge.runtimes.zoo.serving.options import ServeOptions, is_loopback
from geofractal_edge.runtimes.zoo.serving.replies import HTTPError

X = TensorDecl(name="x", dtype="float32", shape=("n", 2))
RANGES = {"n": DimRange(min=1, opt=4, max=8)}


def _request(data=None, shape=(3, 2), **extra) -> protocol.InferRequest:
    tensor = {"name": "x", "shape": list(shape), "datatype": "FP32", **extra}
    if data is not None:
        tensor["data"] = data
    return protocol.infer_request({"inputs": [tensor]})


def test_a_non_loopback_address_needs_a_token():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    with pytest.raises(GfedgeError, match="without a token"):
        ServeOptions(host="0.0.0.0")
    with pytest.raises(GfedgeError, match="fewer than 16"):
        ServeOptions(token="short")
    assert "127.0.0.1:9" in ServeOptions().host_names(9) and "evil:9" not in ServeOptions().host_names(9)
    assert ServeOptions(host="0.0.0.0", token="t" * 20).host_names(9) == frozenset()  # every interface: the token guards


def test_body_limits_act_before_parsing():
    assert body.depth(b'{"a": [[1], "[[[[["]}') == 3
    with pytest.raises(HTTPError, match="deeper than 4"):
        body.parse(b"[[[[[1]]]]]", max_depth=4, max_int_digits=20)
    with pytest.raises(HTTPError, match="21 digits"):
        body.parse(b"[" + b"1" * 21 + b"]", max_depth=4, max_int_digits=20)
    with pytest.raises(HTTPError, match="NaN"):
        body.parse(b"[NaN]", max_depth=4, max_int_digits=20)
    assert body.parse(b'{"shape": [3], "data": [0.5, 1.5]}', max_depth=4, max_int_digits=20, skeleton=True) == {"shape": [3], "data": [0, 0]}
    header, rest = body.split(b'{"a": 1}abcd', "8")
    assert header == b'{"a": 1}' and bytes(rest) == b"abcd"
    with pytest.raises(HTTPError, match="Inference-Header-Content-Length"):
        body.split(b"{}", "99")


def test_the_request_is_checked_field_by_field():
    with pytest.raises(InputError, match="unknown field"):
        protocol.infer_request({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0.0]}], "parameters": {"famliy": "a"}})
    with pytest.raises(InputError, match="must be bool"):
        protocol.infer_request({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0.0]}], "parameters": {"binary_data_output": 1}})
    with pytest.raises(InputError, match="sizes >= 0"):
        _request([0.0], shape=(-1,))
    with pytest.raises(InputError, match="exactly one of"):
        _request(None)
    with pytest.raises(InputError, match="twice"):
        protocol.infer_request({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0.0]}] * 2})


def test_tensors_are_checked_against_the_declaration_before_they_are_built():
    flat, nested = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5], [[0.0, 0.5], [1.0, 1.5], [2.0, 2.5]]
    for data in (flat, nested):
        request = _request(data)
        tensors.check(request.inputs, [X], RANGES, binary_bytes=0)
        array = tensors.decode(request.inputs, [X], memoryview(b""))["x"]
        assert array.dtype == np.float32 and array.shape == (3, 2) and array[2, 1] == 2.5
    with pytest.raises(InputError, match=r"n=800 on axis 0, outside the declared 1..8"):
        tensors.check(_request([0.0], shape=(800, 2)).inputs, [X], RANGES, binary_bytes=0)  # refused on the shape alone
    with pytest.raises(InputError, match="its shape says"):
        tensors.check(_request(flat[:5]).inputs, [X], RANGES, binary_bytes=0)
    with pytest.raises(InputError, match="datatype FP64"):
        tensors.check(protocol.infer_request({"inputs": [{"name": "x", "shape": [3, 2], "datatype": "FP64", "data": flat}]}).inputs, [X], RANGES, binary_bytes=0)
    values = np.arange(6, dtype="<f4").reshape(3, 2)
    request = _request(None, parameters={"binary_data_size": 24})
    tensors.check(request.inputs, [X], RANGES, binary_bytes=24)
    np.testing.assert_array_equal(tensors.decode(request.inputs, [X], memoryview(values.tobytes()))["x"], values)
    with pytest.raises(InputError, match="needs 24 bytes"):
        tensors.check(_request(None, parameters={"binary_data_size": 20}).inputs, [X], RANGES, binary_bytes=20)


def test_outputs_encode_as_json_or_binary_and_metadata_uses_minus_one():
    out = {"logits": np.arange(6, dtype=np.float32).reshape(3, 2)}
    as_json, chunks = tensors.encode(out, None, binary_default=False)
    assert as_json == [{"name": "logits", "datatype": "FP32", "shape": [3, 2], "data": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}] and chunks == []
    as_binary, chunks = tensors.encode(out, [protocol.OutputWanted("logits", binary=True)], binary_default=False)
    assert as_binary[0]["parameters"] == {"binary_data_size": 24} and chunks == [out["logits"].tobytes()]
    with pytest.raises(InputError, match="unknown output"):
        tensors.encode(out, [protocol.OutputWanted("nope")], binary_default=False)
    assert tensors.metadata(X) == {"name": "x", "datatype": "FP32", "shape": [-1, 2]}


class _Refused:
    def __init__(self) -> None:
        self.reasons = []

    def labels(self, reason):
        self.reasons.append(reason)
        return self

    def inc(self) -> None:
        pass


class _Metrics:
    def __init__(self) -> None:
        self.refused = _Refused()
        self.in_flight = self

    def inc(self) -> None:
        pass

    def dec(self) -> None:
        pass


def _through_guard(headers: dict, *, method: str = "POST", token: str | None = None, draining: bool = False) -> tuple[int, list]:
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    gate, metrics, sent = Gate(), _Metrics(), []
    gate.draining = draining
    guard = Guard(app, options=ServeOptions(token=token, max_body_bytes=100), port=9, gate=gate, metrics=metrics)
    scope = {"type": "http", "method": method, "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, None, send))
    return sent[0]["status"], metrics.refused.reasons


def test_the_guard_refuses_before_any_work():
    ok = {"Host": "127.0.0.1:9", "Content-Type": "application/json"}
    assert _through_guard(ok) == (200, [])
    assert _through_guard({**ok, "Content-Type": "text/plain;charset=UTF-8"}) == (415, ["content_type"])
    assert _through_guard({**ok, "Origin": "http://evil.example"}) == (403, ["origin"])
    assert _through_guard({**ok, "Origin": "http://localhost:9"})[0] == 200
    assert _through_guard({**ok, "Host": "evil.example:9"}) == (403, ["host"])
    assert _through_guard({**ok, "Content-Length": "101"}) == (413, ["body_size"])
    assert _through_guard(ok, token="s" * 20) == (401, ["token"])
    assert _through_guard({**ok, "Authorization": "Bearer " + "s" * 20}, token="s" * 20)[0] == 200
    assert _through_guard(ok, draining=True) == (503, ["draining"])
