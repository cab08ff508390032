"""gfedge build: turn a bundle's ONNX into a TensorRT engine on the device, and put it in the bundle.

Device-side, like the runner that loads the engine: the export host writes the builder settings,
the device builds (TensorRT cannot build for another GPU).

The builder settings come from the manifest (written at export from the target profile): strongly
typed network, workspace cap, builder optimization level, one optimization profile per entry of
the spec's dynamic dimension ranges, DLA only where the manifest asks for it (with a per-layer
placement check). A timing cache is reused when it was made by the same TensorRT on the same SM.
The engine, its timing cache and its compatibility key go into a staged copy of the bundle, which
is re-sealed and renamed over the old one: a reader sees the old bundle or the new, never half.
"""

from __future__ import annotations

import datetime
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geofractal_edge.artifacts import Bundle, atomic, open_bundle, seal
from geofractal_edge.artifacts.manifest import TensorRTSettings
from geofractal_edge.backends.lazy import require
from geofractal_edge.backends.tensorrt import adapter
from geofractal_edge.backends.tensorrt.compat import (
    ENGINE_FILE,
    TIMING_CACHE_FILE,
    EngineKey,
    engine_key,
    engine_record,
    tensorrt_settings,
)
from geofractal_edge.errors import BundleError, Bug, GfedgeError

Progress = Callable[[str, int, int], None]
STEPS = 4


@dataclass(frozen=True)
class BuildResult:
    path: Path
    key: EngineKey
    record: dict  # what the manifest now says about the engine

    @property
    def seconds(self) -> float:
        return self.record["built"]["seconds"]


def build_engine(bundle_path: Path | str, *, timing_cache: Path | None = None, progress: Progress | None = None) -> BuildResult:
    """Build engine.plan for this host from the bundle's ONNX and write it into the bundle.

    `timing_cache`: a file shared between builds on this device; read when it was made by this
    TensorRT on this SM, then updated. The bundle keeps its own copy next to the engine.
    """
    step = progress or (lambda phase, done, total: None)
    bundle = open_bundle(Path(bundle_path))
    settings = tensorrt_settings(bundle.manifest)
    api = adapter.load()
    sm = api.host_sm()
    _check_host(bundle, settings, api, sm)
    key = engine_key(bundle.manifest, tensorrt_version=api.version, sm=sm)
    trt = api.trt

    step("parse onnx", 0, STEPS)
    builder = trt.Builder(api.logger)
    network, _parser = _parse(api, builder, bundle)  # the parser owns weights the network refers to
    config = _configure(api, builder, network, settings, progress, precision=bundle.manifest.precision)
    blobs = _timing_blobs(bundle, timing_cache, api.version, sm)
    cache = config.create_timing_cache(blobs[0] if blobs else b"")
    for blob in blobs[1:]:
        cache.combine(config.create_timing_cache(blob), False)
    config.set_timing_cache(cache, False)
    dla = _place_on_dla(api, builder, network, config, settings)

    step("build engine", 1, STEPS)
    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if plan is None:
        raise GfedgeError(
            f"TensorRT {api.version} could not build an engine from {bundle.model_path.name} (see its messages above)",
            "on a memory-tight device lower workspace_mib in the target profile, close other GPU users, and retry",
        )
    plan = bytes(plan)
    timing = bytes(config.get_timing_cache().serialize())

    step("check engine", 2, STEPS)
    record = {
        "file": ENGINE_FILE,
        "key": key.to_dict(),
        "built": _built(api, sm, seconds=seconds, plan_bytes=len(plan), reused=bool(blobs)),
        "engine": _inspect(api, plan),
        "timing_cache": {"file": TIMING_CACHE_FILE, "tensorrt_version": api.version, "sm": sm},
        "dla": dla,
    }
    step("write bundle", 3, STEPS)
    _write(bundle, plan, timing, record)
    if timing_cache is not None:
        _save_timing_cache(Path(timing_cache), timing, api.version, sm)
    step("done", STEPS, STEPS)
    return BuildResult(path=bundle.path, key=key, record=record)


def _parse(api: adapter.TensorRT, builder, bundle: Bundle):
    trt = api.trt
    network = builder.create_network(api.network_flags())
    parser = trt.OnnxParser(network, api.logger)
    if not parser.parse(standalone_onnx(bundle)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(f"TensorRT {api.version} cannot parse {bundle.model_path.name}: {errors}", "re-export the bundle; report the op if it persists")
    _check_io(bundle, network)
    return network, parser


def standalone_onnx(bundle: Bundle) -> bytes:
    """model.onnx with its external initializers (packed ternary codes) filled in.

    TensorRT's parser and Triton's onnxruntime backend read one self-contained graph; onnxruntime
    sessions get the codes handed over instead. Needs the onnx package only when there are codes.
    """
    data = bundle.model_path.read_bytes()
    codes = bundle.ternary_codes()
    if not codes:
        return data
    onnx = require("onnx")
    model = onnx.load_from_string(data)
    for init in model.graph.initializer:
        if init.name in codes:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
            init.CopyFrom(onnx.numpy_helper.from_array(codes[init.name].astype(dtype), init.name))
    return model.SerializeToString()


def _built(api: adapter.TensorRT, sm: str, *, seconds: float, plan_bytes: int, reused: bool) -> dict:
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "tensorrt_version": api.version,
        "cuda_runtime": api.cuda.runtime_version(),
        "gpu": api.cuda.device_name(),
        "sm": sm,
        "plan_bytes": plan_bytes,
        "timing_cache_reused": reused,
    }


def _check_host(bundle: Bundle, settings: TensorRTSettings, api: adapter.TensorRT, sm: str) -> None:
    """This host must be the target's kind of device: same SM, same TensorRT major."""
    target = bundle.manifest.target.name
    if sm != settings.sm:
        raise BundleError(
            f"this GPU is SM {sm}, the bundle targets {target} (SM {settings.sm})",
            "build on the target device, or export for this GPU's target (gfedge targets list)",
        )
    if api.major != settings.tensorrt_major:
        raise BundleError(
            f"this host has TensorRT {api.version}, target {target} runs TensorRT {settings.tensorrt_version}",
            "build on the target device with its own TensorRT, or export for a target that runs this version",
        )


def _check_io(bundle: Bundle, network) -> None:
    got_in = sorted(network.get_input(i).name for i in range(network.num_inputs))
    got_out = sorted(network.get_output(i).name for i in range(network.num_outputs))
    want_in = sorted(t.name for t in bundle.manifest.inputs)
    want_out = sorted(t.name for t in bundle.manifest.outputs)
    if (got_in, got_out) != (want_in, want_out):
        raise BundleError(f"the parsed network has inputs {got_in} and outputs {got_out}; the manifest says {want_in} and {want_out}", "re-export the bundle")


def _configure(api: adapter.TensorRT, builder, network, settings: TensorRTSettings, progress: Progress | None, *, precision: str):
    trt = api.trt
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    config.builder_optimization_level = settings.builder_optimization_level
    if precision == "fp32":
        # TF32 is on by default on Ampere+; an fp32 bundle's parity tolerances assume real fp32.
        config.clear_flag(trt.BuilderFlag.TF32)
    # Per-layer detail in the plan, so the engine inspector can show where each layer runs.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if progress is not None:
        config.progress_monitor = _monitor(trt, progress)
    for shapes in settings.optimization_profiles:
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if all(d >= 0 for d in tensor.shape):
                continue  # static: nothing to choose
            if tensor.name not in shapes:
                raise BundleError(f"input '{tensor.name}' is dynamic but the manifest gives it no min/opt/max", "re-export the bundle")
            s = shapes[tensor.name]
            profile.set_shape(tensor.name, s.min, s.opt, s.max)
        config.add_optimization_profile(profile)
    return config


def _place_on_dla(api: adapter.TensorRT, builder, network, config, settings: TensorRTSettings) -> dict | None:
    """Put every layer DLA can run on a DLA core; report the layers that fall back to the GPU."""
    dla = settings.dla
    if not dla.use:
        return None
    trt = api.trt
    if not api.has_dla or builder.num_DLA_cores == 0:
        raise BundleError(
            f"the manifest asks for DLA, but TensorRT {api.version} on this device offers no DLA core",
            "build on a Jetson AGX Orin with JetPack 6 (TensorRT 10.3), or re-export with DLA off",
        )
    core = dla.core
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    on_gpu = [layer.name for layer in layers if not config.can_run_on_DLA(layer)]
    return {"core": core, "layers": len(layers), "dla_layers": len(layers) - len(on_gpu), "gpu_fallback_layers": on_gpu}


def _inspect(api: adapter.TensorRT, plan: bytes) -> dict:
    """Load the plan back (it must deserialize here) and record what the runtime will need."""
    trt = api.trt
    engine = trt.Runtime(api.logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise Bug("TensorRT could not deserialize the engine it has just built")
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        io.append({"name": name, "mode": mode, "dtype": _dtype_name(trt, engine.get_tensor_dtype(name)), "shape": list(engine.get_tensor_shape(name))})
    return {"layers": int(engine.num_layers), "device_memory_bytes": api.device_memory_bytes(engine), "io": io}


def _dtype_name(trt, dtype) -> str:
    try:
        return np.dtype(trt.nptype(dtype)).name
    except TypeError:  # bf16, fp8, int4: no numpy type
        return str(dtype).rsplit(".", 1)[-1].lower()


def _timing_blobs(bundle: Bundle, external: Path | None, version: str, sm: str) -> list[bytes]:
    """Timing caches made by this TensorRT on this SM: the shared file's, then the bundle's own."""
    blobs = []
    if external is not None and Path(external).is_file() and _read_key(_key_file(Path(external))) == {"tensorrt_version": version, "sm": sm}:
        blobs.append(Path(external).read_bytes())
    record = engine_record(bundle.manifest)
    own = record.timing_cache if record is not None else {}
    if own.get("tensorrt_version") == version and own.get("sm") == sm and TIMING_CACHE_FILE in bundle.manifest.files:
        blobs.append(bundle.file(TIMING_CACHE_FILE).read_bytes())
    return blobs


def _key_file(path: Path) -> Path:
    return path.with_name(path.name + ".key.json")


def _read_key(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _save_timing_cache(path: Path, blob: bytes, version: str, sm: str) -> None:
    atomic.write_bytes(path, blob)
    atomic.write_text(_key_file(path), json.dumps({"tensorrt_version": version, "sm": sm}) + "\n")


def _write(bundle: Bundle, plan: bytes, timing: bytes, record: dict) -> None:
    data = {k: v for k, v in bundle.manifest.to_dict().items() if k != "files"}
    data["tensorrt"] = {**data["tensorrt"], "engine": record}
    with atomic.directory(bundle.path, overwrite=True) as staging:
        shutil.copytree(bundle.path, staging, dirs_exist_ok=True)
        atomic.write_bytes(staging / ENGINE_FILE, plan)
        atomic.write_bytes(staging / TIMING_CACHE_FILE, timing)
        seal(staging, data)
        open_bundle(staging)  # every hash checked before the rename


def _monitor(trt, progress: Progress):
    """Report TensorRT's top-level build phases through the CLI's progress callback."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._top: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                self._top[phase_name] = max(1, int(num_steps))
                progress(f"tensorrt: {phase_name}", 0, self._top[phase_name])

        def step_complete(self, phase_name, step):
            if phase_name in self._top:
                progress(f"tensorrt: {phase_name}", int(step) + 1, self._top[phase_name])
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            if phase_name in self._top:
                progress(f"tensorrt: {phase_name}", self._top[phase_name], self._top[phase_name])

    return Monitor()
