"""config.pbtxt as tritonclient's `model_config_pb2.ModelConfig`, written with protobuf's text format.

Everything comes from the manifest and the served graph, never from the family: inputs and outputs
with dtypes and dims, and batching only where every served input and output leads with the dynamic
dimension the spec names "batch" (otherwise `max_batch_size: 0`, said why in a comment).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from geofractal_edge.artifacts import Bundle
from geofractal_edge.artifacts.manifest import TensorDecl
from geofractal_edge.backends.lazy import require
from geofractal_edge.errors import GfedgeError
from geofractal_edge.export.triton.served import BATCH, ServedGraph, batch_dim, served_graph

TYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
    "int64": "TYPE_INT64", "int32": "TYPE_INT32", "int16": "TYPE_INT16", "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL",
}


def pb2():
    """tritonclient's model_config protobuf module (installed with `pip install "tritonclient[grpc]"`)."""
    return require("tritonclient.grpc.model_config_pb2")


@dataclass(frozen=True)
class TritonModel:
    name: str
    bundle: Bundle
    served: ServedGraph
    max_batch_size: int  # 0: Triton does not batch this model
    config: Any  # model_config_pb2.ModelConfig


def triton_model(bundle: Bundle, served: ServedGraph | None = None, *, name: str, instances: int = 1, max_queue_delay_us: int = 100, batched: bool = True) -> TritonModel:
    """One model's config (`served` defaults to the bundle's served graph); `batched=False` leaves
    Triton's batching off even where the served graph allows it."""
    m, pb = bundle.manifest, pb2()
    served = served or served_graph(bundle)
    batch = batch_dim(served) if batched else None
    max_batch = m.graph.dim_ranges[batch].max if batch else 0
    config = pb.ModelConfig(name=name, backend="onnxruntime", max_batch_size=max_batch)
    for decl in served.inputs:
        _tensor(config.input.add(), decl, batched=batch is not None)
    for decl in served.outputs:
        _tensor(config.output.add(), decl, batched=batch is not None)
    kind = pb.ModelInstanceGroup.KIND_GPU if m.target.sm else pb.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=int(instances))
    if batch:
        config.dynamic_batching.preferred_batch_size.append(min(m.graph.dim_ranges[batch].opt, max_batch))
        config.dynamic_batching.max_queue_delay_microseconds = int(max_queue_delay_us)
    accelerator = _tensorrt_accelerator(m)
    if accelerator:
        config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt").parameters.update(accelerator)
    return TritonModel(name=name, bundle=bundle, served=served, max_batch_size=max_batch, config=config)


def ensemble_config(name: str, models: Sequence[TritonModel]):
    """Chain `models` in order: an input named like an earlier model's output is wired to it."""
    if len({m.max_batch_size > 0 for m in models}) > 1:
        raise GfedgeError("cannot chain models that Triton batches with models it does not", "export all stages with the same leading batch dimension")
    config = pb2().ModelConfig(name=name, platform="ensemble", max_batch_size=min(m.max_batch_size for m in models))
    produced: dict[str, tuple[str, Any]] = {}  # model output name -> (ensemble tensor, its config entry)
    inputs: dict[str, Any] = {}
    internal: set[str] = set()  # tensors passed between steps, not ensemble outputs
    for index, model in enumerate(models):
        step = config.ensemble_scheduling.step.add(model_name=model.name, model_version=-1)
        for entry in model.config.input:
            tensor, source = produced[entry.name] if entry.name in produced else (entry.name, inputs.setdefault(entry.name, entry))
            _check_wire(source, entry, f"{model.name}.{entry.name}")
            step.input_map[entry.name] = tensor
        later_inputs = {t.name for later in models[index + 1:] for t in later.served.inputs}
        for entry in model.config.output:
            tensor = f"{model.name}__{entry.name}" if entry.name in later_inputs else entry.name
            if tensor != entry.name:
                internal.add(tensor)
            step.output_map[entry.name] = tensor
            produced[entry.name] = (tensor, entry)
    config.input.extend(inputs.values())
    for tensor, entry in produced.values():
        if tensor not in internal:
            config.output.add().CopyFrom(entry)
            config.output[-1].name = tensor
    return config


def to_text(config, header: Sequence[str] = ()) -> str:
    """config.pbtxt: `# ` comment lines, then the message in protobuf text format."""
    pb2()  # protobuf comes with tritonclient[grpc]; its install hint is pb2's
    from google.protobuf import text_format

    return "".join(f"# {line}\n" for line in header) + text_format.MessageToString(config)


def comments(model: TritonModel) -> list[str]:
    """What a reader of config.pbtxt should know that the config itself does not say."""
    m = model.bundle.manifest
    lines = [f"gfedge: {m.family} {m.model.name} {m.precision} for {m.target.name}, from bundle {model.bundle.path.name}"]
    if model.max_batch_size == 0:
        lines.append(f'not batched by Triton: its inputs and outputs do not all lead with a dimension named "{BATCH}"')
    bundle_shapes = {t.name: list(t.shape) for t in m.outputs}
    for out in model.served.outputs:
        if out.name in model.served.transposed:
            lines.append(f"{out.name}: batch-major here {list(out.shape)}; the bundle's is {bundle_shapes[out.name]}")
    return lines


def _check_wire(source, entry, where: str) -> None:
    same_rank = len(source.dims) == len(entry.dims)
    dims_ok = same_rank and all(a == b or -1 in (a, b) for a, b in zip(source.dims, entry.dims))
    if source.data_type != entry.data_type or not dims_ok:
        name = pb2().DataType.Name
        raise GfedgeError(
            f"cannot wire {where}: it takes {name(entry.data_type)} {list(entry.dims)}, the tensor of that name is {name(source.data_type)} {list(source.dims)}",
            "chain bundles whose outputs match the next stage's inputs by name, dtype and shape",
        )


def _tensor(entry, spec: TensorDecl, *, batched: bool) -> None:
    """Fill a ModelInput or ModelOutput; with `batched`, the leading batch axis is Triton's, not listed."""
    if spec.dtype not in TYPES:
        raise GfedgeError(f"tensor '{spec.name}' has dtype {spec.dtype}, which Triton does not take", f"use one of {', '.join(TYPES)}")
    shape = spec.shape[1:] if batched else spec.shape
    entry.name = spec.name
    entry.data_type = pb2().DataType.Value(TYPES[spec.dtype])
    entry.dims.extend([d if isinstance(d, int) else -1 for d in shape] or [1])
    if not shape:
        entry.reshape.SetInParent()  # a scalar: Triton wants dims [1] reshaped to []


def _tensorrt_accelerator(manifest) -> dict[str, str] | None:
    """Parameters of onnxruntime's TensorRT provider inside Triton, with the target's builder settings.

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

    return {
        "precision_mode": "FP32", "max_workspace_size_bytes": str(settings.workspace_bytes), "trt_engine_cache_enable": "1",
        "trt_profile_min_shapes": shapes("min"), "trt_profile_opt_shapes": shapes("opt"), "trt_profile_max_shapes": shapes("max"),
    }
