"""Write a Triton Inference Server model repository from bundles, for users who serve on a fleet.

One Triton model per bundle: `<repo>/<model>/config.pbtxt` and `<repo>/<model>/1/model.onnx`
(onnxruntime backend; packed ternary weights filled back into the graph, since Triton reads one
self-contained file), plus the bundle's keys under `<model>/keys/` and its manifest beside them
(Triton ignores non-numeric folders and extra files). Everything comes from the manifest, never
from the family: inputs and outputs with dtypes and dims, and batching only where every input and
output leads with the dynamic dimension the spec names "batch" (otherwise `max_batch_size: 0`, said
why in a comment). Given several bundles whose outputs feed later inputs by name, an ensemble wires them.
The text is written here; tests parse it with tritonclient's model_config protobuf.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from geofractal_edge.artifacts import Bundle, atomic, open_bundle
from geofractal_edge.artifacts.manifest import MANIFEST, TensorDecl
from geofractal_edge.backends.tensorrt.loader import standalone_onnx
from geofractal_edge.errors import GfedgeError

VERSION = "1"
TYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
    "int64": "TYPE_INT64", "int32": "TYPE_INT32", "int16": "TYPE_INT16", "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL",
}


class Enum(str):
    """A protobuf enum value: written bare (TYPE_FP32), not quoted."""


class Map(dict):
    """A protobuf map field: written as repeated `{ key: ... value: ... }` entries."""


@dataclass(frozen=True)
class TritonModel:
    name: str
    bundle: Bundle
    max_batch_size: int  # 0: Triton does not batch this model
    config: dict


@dataclass(frozen=True)
class TritonRepository:
    path: Path
    models: list[str]
    ensemble: str | None


def write_repository(
    bundles: Sequence[Bundle | Path | str], out: Path, *, names: Sequence[str] | None = None, ensemble: str | None = None,
    instances: int = 1, max_queue_delay_us: int = 100, overwrite: bool = False,
) -> TritonRepository:
    """Write the repository atomically; with `ensemble`, also a model of that name chaining the bundles in order."""
    opened = [b if isinstance(b, Bundle) else open_bundle(Path(b)) for b in bundles]
    if not opened:
        raise GfedgeError("no bundles to put in the Triton repository", "pass at least one bundle directory")
    names = list(names) if names else _unique([default_name(b) for b in opened])
    # Triton cannot chain a model it batches with one it does not: in such an ensemble every stage
    # takes full shapes (batch axis included) and none is batched by Triton.
    batched = not ensemble or len({batch_dim(b.manifest) for b in opened}) == 1
    models = [triton_model(b, name=n, instances=instances, max_queue_delay_us=max_queue_delay_us, batched=batched) for b, n in zip(opened, names, strict=True)]
    chain = ensemble_config(ensemble, models) if ensemble else None
    with atomic.directory(Path(out), overwrite=overwrite) as staging:
        for model in models:
            folder = staging / model.name
            (folder / VERSION).mkdir(parents=True)
            (folder / VERSION / "model.onnx").write_bytes(standalone_onnx(model.bundle))
            for key in model.bundle.key_names():
                (folder / "keys").mkdir(exist_ok=True)
                shutil.copyfile(model.bundle.file(model.bundle.manifest.keys.file(key)), folder / "keys" / f"{key}.safetensors")
            shutil.copyfile(model.bundle.path / MANIFEST, folder / "gfedge-manifest.json")
            (folder / "config.pbtxt").write_text(_header(model) + to_pbtxt(model.config), encoding="utf-8")
        if chain is not None:
            (staging / ensemble / VERSION).mkdir(parents=True)
            (staging / ensemble / "config.pbtxt").write_text("# gfedge: ensemble of " + " -> ".join(m.name for m in models) + "\n" + to_pbtxt(chain), encoding="utf-8")
    return TritonRepository(path=Path(out), models=[m.name for m in models], ensemble=ensemble)


def default_name(bundle: Bundle) -> str:
    m = bundle.manifest
    return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{m.family}_{m.model.name}_{m.target.name}_{m.precision}")


BATCH = "batch"  # a spec declares Triton's batch axis by naming the leading dynamic dimension so


def batch_dim(manifest) -> str | None:
    """The batch dimension, when every input and output leads with the one named "batch".

    Only a declared name counts: a shared leading dimension alone (Atlas's coordinate count `n`)
    does not say that rows are independent requests, so Triton must not stack them.
    """
    firsts = {tuple(t.shape[:1]) for t in manifest.inputs + manifest.outputs}
    return BATCH if firsts == {(BATCH,)} else None


def triton_model(bundle: Bundle, *, name: str, instances: int = 1, max_queue_delay_us: int = 100, batched: bool = True) -> TritonModel:
    """One model's config; `batched=False` leaves Triton's batching off even where the bundle allows it."""
    m = bundle.manifest
    batch = batch_dim(m) if batched else None
    ranges = m.graph.dim_ranges
    max_batch = ranges[batch].max if batch else 0
    config: dict = {
        "name": name,
        "backend": "onnxruntime",
        "max_batch_size": max_batch,
        "input": [_tensor(t, batched=batch is not None) for t in m.inputs],
        "output": [_tensor(t, batched=batch is not None) for t in m.outputs],
        "instance_group": [{"kind": Enum("KIND_GPU" if m.target.sm else "KIND_CPU"), "count": int(instances)}],
    }
    if batch:
        opt = ranges[batch].opt
        config["dynamic_batching"] = {"preferred_batch_size": [min(opt, max_batch)], "max_queue_delay_microseconds": int(max_queue_delay_us)}
    accelerator = _tensorrt_accelerator(m)
    if accelerator:
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [accelerator]}}
    return TritonModel(name=name, bundle=bundle, max_batch_size=max_batch, config=config)


def ensemble_config(name: str, models: Sequence[TritonModel]) -> dict:
    """Chain `models` in order: an input named like an earlier model's output is wired to it."""
    batched = {m.max_batch_size > 0 for m in models}
    if len(batched) > 1:
        raise GfedgeError("cannot chain models that Triton batches with models it does not", "export all stages with the same leading batch dimension")
    internal: set[str] = set()  # tensors passed between steps, not ensemble outputs
    produced: dict[str, tuple[str, dict]] = {}  # model output name -> (ensemble tensor, its config entry)
    inputs: dict[str, dict] = {}
    steps = []
    for index, model in enumerate(models):
        in_map = Map()
        for entry in model.config["input"]:
            if entry["name"] in produced:
                tensor, source = produced[entry["name"]]
                _check_wire(source, entry, f"{model.name}.{entry['name']}")
                in_map[entry["name"]] = tensor
            else:
                if entry["name"] in inputs:
                    _check_wire(inputs[entry["name"]], entry, f"{model.name}.{entry['name']}")
                inputs.setdefault(entry["name"], entry)
                in_map[entry["name"]] = entry["name"]
        out_map = Map()
        later_inputs = {t.name for later in models[index + 1:] for t in later.bundle.manifest.inputs}
        for entry in model.config["output"]:
            tensor = f"{model.name}__{entry['name']}" if entry["name"] in later_inputs else entry["name"]
            if tensor != entry["name"]:
                internal.add(tensor)
            out_map[entry["name"]] = tensor
            produced[entry["name"]] = (tensor, entry)
        steps.append({"model_name": model.name, "model_version": -1, "input_map": in_map, "output_map": out_map})
    outputs = [{**entry, "name": tensor} for tensor, entry in produced.values() if tensor not in internal]
    return {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": min(m.max_batch_size for m in models),
        "input": list(inputs.values()),
        "output": outputs,
        "ensemble_scheduling": {"step": steps},
    }


def _check_wire(source: dict, entry: dict, where: str) -> None:
    same_rank = len(source["dims"]) == len(entry["dims"])
    dims_ok = same_rank and all(a == b or -1 in (a, b) for a, b in zip(source["dims"], entry["dims"]))
    if source["data_type"] != entry["data_type"] or not dims_ok:
        raise GfedgeError(
            f"cannot wire {where}: it takes {entry['data_type']} {entry['dims']}, the tensor of that name is {source['data_type']} {source['dims']}",
            "chain bundles whose outputs match the next stage's inputs by name, dtype and shape",
        )


def _tensor(spec: TensorDecl, *, batched: bool) -> dict:
    if spec.dtype not in TYPES:
        raise GfedgeError(f"tensor '{spec.name}' has dtype {spec.dtype}, which Triton does not take", f"use one of {', '.join(TYPES)}")
    shape = spec.shape[1:] if batched else spec.shape
    dims = [d if isinstance(d, int) else -1 for d in shape]
    entry = {"name": spec.name, "data_type": Enum(TYPES[spec.dtype]), "dims": dims or [1]}
    if not dims:
        entry["reshape"] = {"shape": []}  # a scalar: Triton wants dims [1] reshaped to []
    return entry


def _tensorrt_accelerator(manifest) -> dict | None:
    """onnxruntime's TensorRT provider inside Triton, with the target's builder settings.

    Not for Jetson targets: Triton's JetPack builds ship the onnxruntime backend without TensorRT.
    Precision stays FP32 mode so that onnxruntime builds a strongly typed network from the
    already-typed graph (fp16 tensors, Q/DQ) instead of re-typing it.
    """
    settings = manifest.tensorrt
    if settings is None or manifest.target.jetpack:
        return None
    profile = settings.optimization_profiles[0]

    def shapes(use: str) -> str:
        return ",".join(f"{n}:{'x'.join(map(str, getattr(s, use)))}" for n, s in sorted(profile.items()))

    params = Map(
        precision_mode="FP32", max_workspace_size_bytes=str(settings.workspace_bytes), trt_engine_cache_enable="1",
        trt_profile_min_shapes=shapes("min"), trt_profile_opt_shapes=shapes("opt"), trt_profile_max_shapes=shapes("max"),
    )
    return {"name": "tensorrt", "parameters": params}


def _header(model: TritonModel) -> str:
    m = model.bundle.manifest
    lines = [f"# gfedge: {m.family} {m.model.name} {m.precision} for {m.target.name}, from bundle {model.bundle.path.name}"]
    if model.max_batch_size == 0:
        lines.append(f'# not batched by Triton: its inputs and outputs do not all lead with a dimension named "{BATCH}"')
    return "\n".join(lines) + "\n"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def to_pbtxt(message: dict, indent: int = 0) -> str:
    """Protobuf text format for a config given as plain data (dict, list, str, int, bool, Enum, Map)."""
    pad = "  " * indent
    lines = []
    for field, value in message.items():
        if isinstance(value, Map):
            for k, v in value.items():
                lines.append(f"{pad}{field} {{ key: {_scalar(k)} value: {_scalar(v)} }}")
        elif isinstance(value, dict):
            lines.append(f"{pad}{field} {{\n{to_pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            blocks = [f"{pad}  {{\n{to_pbtxt(v, indent + 2)}{pad}  }}" for v in value]
            lines.append(f"{pad}{field} [\n" + ",\n".join(blocks) + f"\n{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{field}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{field}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def _scalar(value) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
