"""Which TensorRT engine belongs to which bundle and host: the engine's compatibility key.

A plan runs only on the TensorRT version and GPU architecture (SM) it was built with, and it is
only right for the graph and builder settings it was built from. The key records all four, so the
runtime can refuse a foreign engine with the reason before TensorRT sees it. Pure Python: no
TensorRT, no CUDA, no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from geofractal_edge.artifacts import Manifest
from geofractal_edge.artifacts.hashing import canonical_sha256
from geofractal_edge.artifacts.manifest import EngineRecord, TensorRTSettings
from geofractal_edge.artifacts.schema import dump
from geofractal_edge.errors import BundleError

ENGINE_FILE = "engine.plan"
TIMING_CACHE_FILE = "engine.timing-cache"
# The builder settings that shape an engine (tensorrt_version and sm are key fields of their own).
SETTINGS_FIELDS = ("strongly_typed", "workspace_bytes", "builder_optimization_level", "dla")
REBUILD = "rebuild on the device: gfedge build BUNDLE"


@dataclass(frozen=True)
class EngineKey:
    tensorrt_version: str  # the full version of the TensorRT that built the plan, "10.3.0.30"
    sm: str  # compute capability of the GPU it was built on, "8.7"
    onnx_sha256: str  # the graph it was built from
    external_sha256: str  # weights kept outside model.onnx (packed ternary codes); "" when none
    precision: str
    profiles_sha256: str  # optimization profiles (min/opt/max of every dynamic input)
    settings_sha256: str  # workspace, optimization level, strong typing, DLA use

    @property
    def id(self) -> str:
        """A short name for logs and cache folders: trt10.3.0.30-sm87-<16 hex>."""
        return f"trt{self.tensorrt_version}-sm{self.sm.replace('.', '')}-{canonical_sha256(asdict(self))[:16]}"

    def to_dict(self) -> dict:
        return {**asdict(self), "id": self.id}

    @classmethod
    def from_dict(cls, data: dict) -> EngineKey:
        try:
            return cls(**{name: str(data[name]) for name in cls.__dataclass_fields__})
        except (KeyError, TypeError) as exc:
            raise BundleError(f"the engine key in the manifest is incomplete ({exc})", REBUILD) from exc


def tensorrt_settings(manifest: Manifest) -> TensorRTSettings:
    """The manifest's TensorRT builder settings, or a BundleError saying the target has none."""
    settings = manifest.tensorrt
    if settings is None:
        target = manifest.target.name
        raise BundleError(
            f"this bundle's target {target} runs without TensorRT (its manifest has no builder settings)",
            "export for a TensorRT target, e.g. gfedge export --target jetson-orin-nano",
        )
    return settings


def engine_key(manifest: Manifest, *, tensorrt_version: str, sm: str) -> EngineKey:
    """The key an engine built from this bundle on this TensorRT and SM must carry."""
    settings = tensorrt_settings(manifest)
    graph_file = manifest.graph.file
    return EngineKey(
        tensorrt_version=str(tensorrt_version),
        sm=str(sm),
        onnx_sha256=manifest.files[graph_file].sha256,
        external_sha256=external_sha256(manifest),
        precision=manifest.precision,
        profiles_sha256=canonical_sha256(dump(settings.optimization_profiles)),
        settings_sha256=canonical_sha256({name: dump(getattr(settings, name)) for name in SETTINGS_FIELDS}),
    )


def external_sha256(manifest: Manifest) -> str:
    """The hash of the packed ternary weights the graph names as external data, or ""."""
    section = manifest.ternary
    return manifest.files[section.file].sha256 if section else ""


def engine_record(manifest: Manifest) -> EngineRecord | None:
    """What `gfedge build` wrote about the engine (file, key, build facts), or None."""
    return manifest.tensorrt.engine if manifest.tensorrt is not None else None


def check_engine_compat(manifest: Manifest, host_trt_version: str, host_sm: str) -> EngineKey:
    """Return the engine's key if it runs on this host, else raise BundleError with the reason.

    Refused: no engine; another TensorRT version; another SM; an engine whose graph or builder
    settings are not this bundle's (it was copied in from elsewhere).
    """
    record = engine_record(manifest)
    if not record:
        raise BundleError(f"bundle for {manifest.target.name} has no TensorRT engine", "build one on the device: gfedge build BUNDLE")
    stored = EngineKey.from_dict(record.key)
    if stored.tensorrt_version != str(host_trt_version):
        raise BundleError(
            f"{ENGINE_FILE} was built with TensorRT {stored.tensorrt_version}, this host has TensorRT {host_trt_version}", REBUILD
        )
    if stored.sm != str(host_sm):
        raise BundleError(f"{ENGINE_FILE} was built for SM {stored.sm}, this GPU is SM {host_sm}", REBUILD)
    expected = engine_key(manifest, tensorrt_version=stored.tensorrt_version, sm=stored.sm)
    if expected != stored:
        what = [f for f in ("onnx_sha256", "external_sha256", "precision", "profiles_sha256", "settings_sha256") if getattr(expected, f) != getattr(stored, f)]
        raise BundleError(f"{ENGINE_FILE} was not built from this bundle's graph and settings (differs in {', '.join(what)})", REBUILD)
    return stored
