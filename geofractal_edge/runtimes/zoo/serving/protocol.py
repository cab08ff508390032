"""The inference request of the Open Inference Protocol (v2), checked field by field into frozen dataclasses.

    {"id"?: str, "parameters"?: {name: bool|number|str},
     "inputs": [{"name", "shape": [int], "datatype": "FP32"|..., "parameters"?: {"binary_data_size"?: int}, "data"?: [...]}],
     "outputs"?: [{"name", "parameters"?: {"binary_data"?: bool}}]}

Request parameters the zoo reads: `key` (the Atlas key to bind), `context` (whose trust the answer
teaches; default: the key, else the family), `family` (with the model `_zoo`: only models of this
family are candidates), `binary_data_output` (every output as binary). `priority` and `timeout`,
which tritonclient may send, are accepted and ignored. Any other name is refused, so a misspelt
`famliy` does not silently choose another model. Tensor data is checked later, against the
model's manifest (`tensors.py`); here only its structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from geofractal_edge.errors import InputError

MAX_ID_CHARS = 256
MAX_DIM = 1 << 31
REQUEST_PARAMETERS = {"key": str, "context": str, "family": str, "binary_data_output": bool, "priority": int, "timeout": int}
_INPUT_PARAMETERS = {"binary_data_size": int}
_OUTPUT_PARAMETERS = {"binary_data": bool}
_FIX = "see the inference request in the README's serving section"


@dataclass(frozen=True)
class TensorIn:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any = None  # JSON list, or None when the tensor is binary
    binary_size: int | None = None


@dataclass(frozen=True)
class OutputWanted:
    name: str
    binary: bool | None = None  # None: the request's binary_data_output decides


@dataclass(frozen=True)
class InferRequest:
    inputs: tuple[TensorIn, ...]
    outputs: tuple[OutputWanted, ...] | None = None  # None: every output
    id: str | None = None
    key: str | None = None
    context: str | None = None
    family: str | None = None
    binary_output: bool = False


def infer_request(body: object) -> InferRequest:
    obj = _object(body, "the body", {"id", "parameters", "inputs", "outputs", "model_name", "model_version"})
    request_id = obj.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > MAX_ID_CHARS):
        raise InputError(f"'id' must be a string of at most {MAX_ID_CHARS} characters", _FIX)
    params = parameters(obj.get("parameters"), "the request", REQUEST_PARAMETERS)
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InputError("'inputs' must be a non-empty list of tensors", _FIX)
    tensors = tuple(_tensor_in(item, i) for i, item in enumerate(inputs))
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise InputError(f"'inputs' names a tensor twice: {names}", "send each input once")
    outputs = obj.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        raise InputError("'outputs' must be a list of {\"name\"}", _FIX)
    wanted = None if outputs is None else tuple(_output_wanted(item, i) for i, item in enumerate(outputs))
    return InferRequest(inputs=tensors, outputs=wanted, id=request_id, key=params.get("key"), context=params.get("context"),
                        family=params.get("family"), binary_output=bool(params.get("binary_data_output", False)))


def parameters(value: object, where: str, known: dict[str, type]) -> dict:
    """A parameters object holding only known names, each of its type (bool is not an int here)."""
    if value is None:
        return {}
    obj = _object(value, f"{where}'s parameters", set(known))
    for name, item in obj.items():
        kind = known[name]
        if isinstance(item, bool) != (kind is bool) or not isinstance(item, kind):
            raise InputError(f"parameter '{name}' of {where} must be {kind.__name__}, got {type(item).__name__}", _FIX)
    return obj


def _tensor_in(item: object, i: int) -> TensorIn:
    obj = _object(item, f"inputs[{i}]", {"name", "shape", "datatype", "parameters", "data"}, required=("name", "shape", "datatype"))
    name, datatype, shape = obj["name"], obj["datatype"], obj["shape"]
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise InputError(f"inputs[{i}]: 'name' and 'datatype' must be strings", _FIX)
    if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < MAX_DIM for d in shape):
        raise InputError(f"input '{name}': 'shape' must be a list of sizes >= 0", _FIX)
    size = parameters(obj.get("parameters"), f"input '{name}'", _INPUT_PARAMETERS).get("binary_data_size")
    if (size is None) == ("data" not in obj):
        raise InputError(f"input '{name}' needs exactly one of 'data' and parameters.binary_data_size", _FIX)
    return TensorIn(name=name, datatype=datatype, shape=tuple(shape), data=obj.get("data"), binary_size=size)


def _output_wanted(item: object, i: int) -> OutputWanted:
    obj = _object(item, f"outputs[{i}]", {"name", "parameters"}, required=("name",))
    if not isinstance(obj["name"], str):
        raise InputError(f"outputs[{i}]: 'name' must be a string", _FIX)
    return OutputWanted(name=obj["name"], binary=parameters(obj.get("parameters"), f"output '{obj['name']}'", _OUTPUT_PARAMETERS).get("binary_data"))


def _object(value: object, where: str, allowed: set[str], *, required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a JSON object", _FIX)
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InputError(f"{where} has unknown field(s) {unknown[:5]}", f"{where} takes {sorted(allowed)}")
    missing = [name for name in required if name not in value]
    if missing:
        raise InputError(f"{where} lacks {missing}", _FIX)
    return value
