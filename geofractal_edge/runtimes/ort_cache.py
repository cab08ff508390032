"""onnxruntime CUDA / TensorRT provider options, with engine caches keyed so they cannot collide.

onnxruntime's TensorRT provider caches engines in a folder and names them after the graph; its
docs tell users to delete the folder by hand when the model, onnxruntime, TensorRT or the GPU
changes, and users have been served stale engines for other shapes (onnxruntime#32254, #16889).
Here every distinct (ONNX and external-weights sha256, profile shapes, precision, TensorRT, CUDA, onnxruntime, SM,
builder flags) gets its own folder, named by a hash of all of them, with key.json inside saying
what it is for. When a fact of the key cannot be found on this host, the engine cache is off
rather than shared. No torch; onnxruntime and CUDA are only asked, never required.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import json
import os
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from geofractal_edge.artifacts import Bundle, atomic

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class HostFacts:
    """What an engine built here depends on. UNKNOWN where this host could not tell."""

    tensorrt: str = UNKNOWN
    cuda: str = UNKNOWN
    sm: str = UNKNOWN
    onnxruntime: str = UNKNOWN

    @property
    def complete(self) -> bool:
        return UNKNOWN not in asdict(self).values()


def canonical_sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cache_root() -> Path:
    """$GFEDGE_CACHE/ort-trt, or ~/.cache/geofractal_edge/ort-trt."""
    root = os.environ.get("GFEDGE_CACHE") or Path.home() / ".cache" / "geofractal_edge"
    return Path(root) / "ort-trt"


def profile_shapes(settings: dict, use: str) -> str:
    """onnxruntime's profile option format, "name:d1xd2,name:d1": first optimization profile."""
    profile = settings["optimization_profiles"][0]
    return ",".join(f"{name}:{'x'.join(str(d) for d in shapes[use])}" for name, shapes in sorted(profile.items()))


def trt_flags(settings: dict) -> dict:
    """The TensorRT provider options that change the engine (and so belong in the cache key)."""
    dla = settings.get("dla") or {}
    return {
        "trt_max_workspace_size": int(settings["workspace_bytes"]),
        "trt_builder_optimization_level": int(settings["builder_optimization_level"]),
        # Precision is in the graph: with these off, onnxruntime builds strongly typed networks.
        "trt_fp16_enable": False,
        "trt_int8_enable": False,
        "trt_dla_enable": bool(dla.get("use")),
        "trt_dla_core": int(dla.get("core", 0)),
        "trt_profile_min_shapes": profile_shapes(settings, "min"),
        "trt_profile_opt_shapes": profile_shapes(settings, "opt"),
        "trt_profile_max_shapes": profile_shapes(settings, "max"),
    }


def cache_key(bundle: Bundle, host: HostFacts) -> dict:
    """Everything a cached engine depends on; `key["id"]` names its folder."""
    graph = bundle.manifest.graph["file"]
    ternary = bundle.manifest.data.get("ternary")
    fields = {
        "onnx_sha256": bundle.manifest.files[graph]["sha256"],
        "external_sha256": bundle.manifest.files[ternary["file"]]["sha256"] if ternary else "",
        "precision": bundle.manifest.precision,
        "flags": trt_flags(bundle.manifest.data["tensorrt"]),
        **{f"host_{k}": v for k, v in asdict(host).items()},
    }
    return {**fields, "id": canonical_sha256(fields)[:24]}


def provider_options(bundle: Bundle, providers: tuple[str, ...], *, host: HostFacts | None = None, root: Path | None = None) -> list:
    """The `providers` argument for onnxruntime.InferenceSession: names with their options.

    The TensorRT provider gets the target's builder settings and a cache folder of its own; it
    gets no cache at all when this host's facts are incomplete or the bundle has no TensorRT
    settings. Other providers are passed by name (CUDA with device 0).
    """
    out: list = []
    for name in providers:
        if name == TRT_EP and bundle.manifest.data.get("tensorrt"):
            out.append((name, trt_options(bundle, host=host or detect_host(), root=root)))
        elif name == CUDA_EP:
            out.append((name, {"device_id": 0}))
        else:
            out.append(name)
    return out


def trt_options(bundle: Bundle, *, host: HostFacts, root: Path | None = None) -> dict:
    options = {"device_id": 0, **trt_flags(bundle.manifest.data["tensorrt"])}
    if not host.complete:
        return {**options, "trt_engine_cache_enable": False, "trt_timing_cache_enable": False}
    key = cache_key(bundle, host)
    folder = (root or cache_root()) / key["id"]
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "key.json").is_file():
        atomic.write_text(folder / "key.json", json.dumps(key, indent=2, sort_keys=True) + "\n")
    return {
        **options,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(folder),
        "trt_engine_cache_prefix": f"gfedge_{key['id'][:12]}",
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(folder),
    }


def detect_host() -> HostFacts:
    """Ask, never require: TensorRT and CUDA versions, the GPU's SM, onnxruntime's version."""
    return HostFacts(tensorrt=_tensorrt_version(), cuda=_cuda_version(), sm=_sm(), onnxruntime=_package_version("onnxruntime", "onnxruntime-gpu"))


def _package_version(*names: str) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return UNKNOWN


def _tensorrt_version() -> str:
    """The libnvinfer onnxruntime will load: its getInferLibVersion(), else the Python package's."""
    for lib in ("libnvinfer.so.11", "libnvinfer.so.10"):
        try:
            v = int(ctypes.CDLL(lib).getInferLibVersion())
        except (OSError, AttributeError):
            continue
        # 10.x and later encode major*10000 + minor*100 + patch.
        return f"{v // 10000}.{(v // 100) % 100}.{v % 100}"
    return _package_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-libs")


def _cudart():
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _cuda_version() -> str:
    rt = _cudart()
    if rt is None:
        return UNKNOWN
    err, v = rt.cudaRuntimeGetVersion()
    return f"{v // 1000}.{(v % 1000) // 10}" if err == rt.cudaError_t.cudaSuccess else UNKNOWN


def _sm() -> str:
    rt = _cudart()
    if rt is None:
        return UNKNOWN
    attr = rt.cudaDeviceAttr
    err1, major = rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, 0)
    err2, minor = rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, 0)
    ok = err1 == rt.cudaError_t.cudaSuccess and err2 == rt.cudaError_t.cudaSuccess
    return f"{major}.{minor}" if ok else UNKNOWN
