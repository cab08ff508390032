"""The bundle manifest, typed: what a device needs to know before it loads anything.

Every part is a frozen dataclass; `parse_manifest` reads JSON into them once, checking each field's
type and the rules between fields, and refuses a bad manifest in one line naming the field and the
fix. The exporter writes through the same schema (`manifest_from_dict` then `to_json`), so what is
written is what a reader accepts. `docs/bundle-format.md` is generated from these classes
(`python -m geofractal_edge.artifacts.format_doc`) and a test keeps the two equal.

Versions: `FORMAT_VERSION` changes when a reader of the old version could misread a new bundle. A
reader reads every version from `OLDEST_READABLE` to its own (older ones are upgraded in memory by
`_UPGRADES`) and refuses a newer one with "upgrade the runtime". The manifest's own hash sits
beside it in `manifest.json.sha256`, so a corrupted byte anywhere in the bundle is caught.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from geofractal_edge.artifacts.schema import JsonObject, SchemaError, dump, invalid, parse
from geofractal_edge.errors import BundleError
from geofractal_edge.targets import TargetProfile

FORMAT = "gfedge-bundle"
FORMAT_VERSION = 8  # 2: `weight_dialect`; model.onnx self-contained (TriX tiles packed inside it). 3: target.runtime
# writes `arena_shrinkage` and `mmap_threshold_kib` (always: the whole RuntimeSettings), which a version-2 reader refuses as unknown fields.
# 4: target.runtime writes `lut_gemm` (a version-3 reader would refuse it, and would run a LUT-parity bundle without the kernel)
# 5: target.runtime writes `shrink_above_batch` and `stop_spinning_after_call` (a version-4 reader would refuse them as unknown fields)
# 6: target.runtime writes `small_call_threads` and `small_call_batch` (a version-5 reader would refuse them as unknown fields)
# 7: `int4_choice`, export's measured int4 setting on onnxruntime targets (a version-6 reader would refuse it as an unknown field)
# 8: `lut_choice`, export's measurement behind `target.runtime.lut_gemm` (a version-7 reader would refuse it as an unknown field)
OLDEST_READABLE = 1
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.json.sha256"
MAX_MANIFEST_BYTES = 16 << 20  # the largest real manifest is ~100 KB (a TriX routing table)
DType = Literal["float32", "float16", "int64", "int32", "int8", "uint8", "bool"]
WeightDialect = Literal["ort", "qdq"]  # see geofractal_edge.targets.profile.WEIGHT_DIALECTS
_RE_EXPORT = "re-export the bundle with `gfedge export`; never edit a manifest by hand"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")  # a key or tensor name that is also a safe file name


@dataclass(frozen=True)
class TensorDecl:
    """One graph input or output: name, dtype, shape (ints fixed, strings named dynamic dims)."""

    name: str
    dtype: DType
    shape: tuple[int | str, ...]
    range: tuple[float, float] | None = None  # allowed values, checked by the runtime before a run
    role: str = "data"  # "data", "key" (bound from the key cache), "logits", "routes", ...

    def __post_init__(self) -> None:
        if not self.name:
            raise invalid("name", "is empty")
        if any(isinstance(d, int) and d < 1 for d in self.shape) or any(d == "" for d in self.shape):
            raise invalid("shape", f"has a fixed dimension < 1 or an unnamed one: {list(self.shape)}")
        if self.range is not None and self.range[0] > self.range[1]:
            raise invalid("range", f"low {self.range[0]} is above high {self.range[1]}")


@dataclass(frozen=True)
class DimRange:
    """min / opt / max of one dynamic dimension: the runtime's bound and TensorRT's profile."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise invalid("", f"needs 1 <= min <= opt <= max, got {self.min}, {self.opt}, {self.max}")


@dataclass(frozen=True)
class Graph:
    file: str
    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...]
    dim_ranges: dict[str, DimRange] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_path(self.file, "file")
        for part, decls in (("inputs", self.inputs), ("outputs", self.outputs)):
            if not decls:
                raise invalid(part, "is empty")
            names = [d.name for d in decls]
            if len(set(names)) != len(names):
                raise invalid(part, f"repeats a name: {names}")
        for i, decl in enumerate(self.inputs):
            unbounded = [d for d in decl.shape if isinstance(d, str) and d not in self.dim_ranges]
            if unbounded:
                raise invalid(f"inputs[{i}].shape", f"names dimension '{unbounded[0]}' that dim_ranges does not bound")
        if sum(d.role == "key" for d in self.inputs) > 1:
            raise invalid("inputs", "has more than one input with role 'key'")

    @property
    def key_input(self) -> TensorDecl | None:
        """The input bound from the key cache, if the model takes a key."""
        return next((d for d in self.inputs if d.role == "key"), None)

    @property
    def data_inputs(self) -> tuple[TensorDecl, ...]:
        """The inputs a caller passes (everything but the key)."""
        return tuple(d for d in self.inputs if d.role != "key")

    @property
    def output_names(self) -> list[str]:
        return [d.name for d in self.outputs]


@dataclass(frozen=True)
class Keys:
    dir: str
    dim: int
    names: tuple[str, ...]
    default: str | None = None

    def __post_init__(self) -> None:
        _check_path(self.dir, "dir")
        if self.dim < 1:
            raise invalid("dim", f"must be >= 1, got {self.dim}")
        for i, name in enumerate(self.names):
            if not _NAME.fullmatch(name):
                raise invalid(f"names[{i}]", f"'{name[:40]}' is not a key name (letters, digits, _ . -)")
        if len(set(self.names)) != len(self.names):
            raise invalid("names", "repeats a name")
        if self.default is not None and self.default not in self.names:
            raise invalid("default", f"'{self.default}' is not one of names")

    def file(self, name: str) -> str:
        return f"{self.dir}/{name}.safetensors"


@dataclass(frozen=True)
class Golden:
    files: tuple[str, ...]
    cases: int

    def __post_init__(self) -> None:
        for i, rel in enumerate(self.files):
            _check_path(rel, f"files[{i}]")
        if self.cases != len(self.files):
            raise invalid("cases", f"says {self.cases} but files lists {len(self.files)}")


@dataclass(frozen=True)
class EncoderLink:
    """The bundle a collective of frozen-encoder streams runs behind, named by its weights' hash."""

    family: str
    core_sha256: str
    output: str
    folder: str | None = None  # where the encoder came from on the build host (informative only)


@dataclass(frozen=True)
class Task:
    """What the model does, for parity's task metric and the runtime's decoding."""

    metric: str
    vocab: str | None = None  # character models: index -> character
    classes: int | None = None
    labels: tuple[str, ...] | None = None
    streams: tuple[str, ...] | None = None
    route_outputs: tuple[str, ...] | None = None
    encoder: EncoderLink | None = None
    pooling: str | None = None
    normalize: bool | None = None


@dataclass(frozen=True)
class TokenizerInfo:
    """Text -> token ids on the device, torch-free: a `tokenizers` JSON file shipped in the bundle."""

    file: str
    kind: Literal["tokenizers-json"]
    max_length: int  # longer texts are truncated to this many tokens (the graph's `seq` maximum)
    pad_id: int
    pad_token: str

    def __post_init__(self) -> None:
        _check_path(self.file, "file")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    config: JsonObject  # the family's own config, as trained
    core_sha256: str  # the frozen core's weights: keys and chained models are checked against it
    source: JsonObject  # where the checkpoint came from


@dataclass(frozen=True)
class TernaryTensor:
    shape: tuple[int, ...]
    dtype: DType
    fp32_bytes: int


@dataclass(frozen=True)
class TernaryPacks:
    """Format 1 only: ternary codes stored 2-bit packed in `file`, named as external initializers of the graph."""

    file: str
    tensors: dict[str, TernaryTensor]

    def __post_init__(self) -> None:
        _check_path(self.file, "file")


@dataclass(frozen=True)
class ShapeRange:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class Dla:
    available_cores: int
    allowed_for_precision: bool
    use: bool
    why_not: str = ""
    core: int = 0


@dataclass(frozen=True)
class EngineRecord:
    """What `gfedge build` wrote about the engine it built on the device."""

    file: str
    key: JsonObject  # the EngineKey: TensorRT version, SM, graph and settings hashes
    built: JsonObject = field(default_factory=JsonObject)
    engine: JsonObject = field(default_factory=JsonObject)
    timing_cache: JsonObject = field(default_factory=JsonObject)
    dla: Any = None

    def __post_init__(self) -> None:
        _check_path(self.file, "file")


@dataclass(frozen=True)
class SmallCalls:
    """Export's measurement behind `target.runtime.small_call_threads` (export/small_calls.py), on the export host."""

    threads: int  # the small-call session's intra-op threads, as measured
    batch: int  # calls at or below this batch
    session_us: float | None  # median per-call time of such calls on the bundle's one session; None: not measured
    small_us: float | None  # the same calls on a small-call session, interleaved
    kept: bool  # whether target.runtime.small_call_threads keeps it
    why: str  # the reason in words


@dataclass(frozen=True)
class Int4Variant:
    """One int4 setting export built and measured (export/int4_choice.py)."""

    block_size: int
    accuracy_level: int
    parity_passed: bool
    sqnr_db: float | None  # the parity report's output SQNR; None: not finite
    weight_bytes: int  # bytes of the graph's initializers
    batches: tuple[int, ...]  # the batch sizes variants are timed at (0: the golden case as recorded)
    p50_us: tuple[float, ...]  # median microseconds per call at each of `batches`; (): not timed (not a candidate)
    error: str = ""  # why the variant could not be built or verified; "": it was


@dataclass(frozen=True)
class Int4Choice:
    """Export's choice of int4 block size and accuracy level on the export host, and the measurement behind it."""

    variants: tuple[Int4Variant, ...]  # the family's own choice first
    chosen: int  # index into variants: the bundle's setting
    why: str  # the reason, in words
    fp32_p50_us: tuple[float, ...] = ()  # the same model at fp32, timed with the variants at their `batches`; (): none timed

    def __post_init__(self) -> None:
        if not 0 <= self.chosen < len(self.variants):
            raise invalid("chosen", f"is {self.chosen}, not an index into the {len(self.variants)} variants")


@dataclass(frozen=True)
class LutChoice:
    """Export's measurement behind `target.runtime.lut_gemm` (export/lut_choice.py), on the export host.

    The bundle timed with onnxruntime's lookup-table 2-bit kernel and without it, beside the same model at fp32."""

    kept: bool  # whether target.runtime.lut_gemm keeps the kernel
    why: str  # the reason in words
    batches: tuple[int, ...] = ()  # the batch sizes timed (0: the golden case as recorded); (): not measured
    fp32_p50_us: tuple[float, ...] = ()  # median microseconds per call at each of `batches`: the same model at fp32
    on_p50_us: tuple[float, ...] = ()  # the bundle with the kernel
    off_p50_us: tuple[float, ...] = ()  # the bundle without it (the exact 2-bit kernel, signatures packed 2-bit)

    def __post_init__(self) -> None:
        for name in ("fp32_p50_us", "on_p50_us", "off_p50_us"):
            if len(getattr(self, name)) != len(self.batches):
                raise invalid(name, f"holds {len(getattr(self, name))} times for {len(self.batches)} batches")


@dataclass(frozen=True)
class TensorRTSettings:
    """Builder settings a device needs to build its engine from the bundle's ONNX."""

    tensorrt_version: str
    tensorrt_major: int
    sm: str
    strongly_typed: bool
    workspace_bytes: int
    builder_optimization_level: int
    optimization_profiles: tuple[dict[str, ShapeRange], ...]
    dla: Dla
    engine: EngineRecord | None = None


@dataclass(frozen=True)
class ParityCheck:
    name: str
    value: float
    limit: float
    kind: Literal["min", "max"]
    passed: bool


@dataclass(frozen=True)
class ParityRecord:
    """The parity report measured at export (see geofractal_edge.parity.report)."""

    passed: bool
    family: str
    precision: str
    target: str
    task_metric: str
    metrics: JsonObject
    checks: tuple[ParityCheck, ...]
    cases: tuple[JsonObject, ...] = ()
    providers_used: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int

    def __post_init__(self) -> None:
        if not _HEX64.fullmatch(self.sha256):
            raise invalid("sha256", "is not 64 lowercase hex digits")
        if self.bytes < 0:
            raise invalid("bytes", f"is negative ({self.bytes})")


@dataclass(frozen=True)
class Manifest:
    format: Literal["gfedge-bundle"]
    format_version: int
    created: str
    family: str
    model: ModelInfo
    target: TargetProfile
    precision: str
    quantization: JsonObject  # the scheme's config: {"scheme", "precision", "version", fields...}
    weight_dialect: WeightDialect  # how low-bit weights sit in the graph: the target's dialect
    opset: int
    toolchain: dict[str, str | None]
    graph: Graph
    golden: Golden
    task: Task
    files: dict[str, FileEntry]
    keys: Keys | None = None
    family_info: JsonObject = field(default_factory=JsonObject)
    tolerance_overrides: dict[str, dict[str, float]] = field(default_factory=dict)
    ternary: TernaryPacks | None = None
    tensorrt: TensorRTSettings | None = None
    parity: ParityRecord | None = None
    tokenizer: TokenizerInfo | None = None
    small_calls: SmallCalls | None = None
    int4_choice: Int4Choice | None = None
    lut_choice: LutChoice | None = None

    def __post_init__(self) -> None:
        for i, rel in enumerate(self.files):
            _check_path(rel, f"files[{i}]")
        if self.quantization.get("precision") != self.precision:
            raise invalid("quantization.precision", f"is {self.quantization.get('precision')!r}, the bundle's precision is {self.precision!r}")
        if self.weight_dialect != self.target.weight_dialect:
            raise invalid("weight_dialect", f"is {self.weight_dialect!r}, the target {self.target.name} takes {self.target.weight_dialect!r}")
        if self.files:
            self._check_named_files()
        self._check_keys()
        if self.tensorrt is not None:
            want = {d.name for d in self.graph.inputs}
            for i, profile in enumerate(self.tensorrt.optimization_profiles):
                if set(profile) != want:
                    raise invalid(f"tensorrt.optimization_profiles[{i}]", f"covers {sorted(profile)}, the graph takes {sorted(want)}")

    def _check_named_files(self) -> None:
        named = [("graph.file", self.graph.file)] + [(f"golden.files[{i}]", f) for i, f in enumerate(self.golden.files)]
        if self.keys is not None:
            named += [(f"keys.names[{i}]", self.keys.file(n)) for i, n in enumerate(self.keys.names)]
        if self.ternary is not None:
            named.append(("ternary.file", self.ternary.file))
        if self.tokenizer is not None:
            named.append(("tokenizer.file", self.tokenizer.file))
        for where, rel in named:
            if rel not in self.files:
                raise invalid(where, f"names '{rel}', which the manifest's files do not list")

    def _check_keys(self) -> None:
        key_input = self.graph.key_input
        if (key_input is None) != (self.keys is None):
            raise invalid("keys", "must be present exactly when the graph has an input with role 'key'")
        if key_input is not None and list(key_input.shape) != [self.keys.dim]:
            raise invalid("keys.dim", f"is {self.keys.dim}, the graph's key input has shape {list(key_input.shape)}")

    # Short names for what nearly every reader wants.
    @property
    def inputs(self) -> tuple[TensorDecl, ...]:
        return self.graph.inputs

    @property
    def outputs(self) -> tuple[TensorDecl, ...]:
        return self.graph.outputs

    def to_dict(self) -> dict:
        data = dump(self)
        data["target"] = dump(self.target.to_dict())  # plain lists, as JSON has them
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


def manifest_from_dict(data: Any, *, source: str = "manifest") -> Manifest:
    """Parsed JSON -> Manifest, or BundleError naming the first bad field and the fix."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{source} is not a gfedge bundle manifest", "point at a directory written by `gfedge export`")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{source}: format_version must be an integer, got {version!r}", _RE_EXPORT)
    if version > FORMAT_VERSION:
        raise BundleError(f"bundle format version {version} is newer than this runtime reads ({FORMAT_VERSION})",
                          "upgrade geofractal_edge on the device, or re-export with the version it runs")
    if version < OLDEST_READABLE:
        raise BundleError(f"bundle format version {version} is older than this runtime reads ({OLDEST_READABLE}..{FORMAT_VERSION})", _RE_EXPORT)
    data = _upgrade(dict(data), version)
    if isinstance(data.get("target"), dict):
        data["target"] = {k: v for k, v in data["target"].items() if k != "tensorrt_major"}  # derived; written for readers
    try:
        return parse(Manifest, data)
    except SchemaError as exc:
        raise BundleError(f"{source}: field '{exc.path}' {exc.problem}", _RE_EXPORT) from None


def parse_manifest(raw: bytes | str, *, source: Path | str) -> Manifest:
    """The bytes of manifest.json -> Manifest; every failure is one BundleError line."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{source} is {len(raw):,} bytes, over the {MAX_MANIFEST_BYTES:,} a manifest may have", _RE_EXPORT)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, a 5,000-digit number, deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0][:80]
        raise BundleError(f"{source} is not valid JSON ({reason})", _RE_EXPORT) from None
    return manifest_from_dict(data, source=str(source))


def check_relative(rel: str) -> PurePosixPath:
    """A manifest may name files inside its bundle only."""
    try:
        _check_path(rel, "")
    except SchemaError:
        raise BundleError(f"manifest names a file outside the bundle: {rel[:80]!r}", _RE_EXPORT) from None
    return PurePosixPath(rel)


def _check_path(rel: str, where: str) -> None:
    path = PurePosixPath(rel)
    if not rel or path.is_absolute() or ".." in path.parts or "\\" in rel or "\x00" in rel or len(rel) > 255:
        raise invalid(where, f"names {rel[:40]!r}, a file outside the bundle (only relative paths inside it)")


def _v1_to_v2(data: dict) -> dict:
    """Format 1 had no dialects: its low-bit weights are standard DequantizeLinear, its TriX tiles an
    external 2-bit pack (`ternary`), which the runtime still hands to onnxruntime."""
    return {**data, "weight_dialect": "qdq"}


def _v2_to_v3(data: dict) -> dict:
    """Format 2's runtime settings lack `arena_shrinkage` and `mmap_threshold_kib`: they take their
    defaults (off, glibc's own threshold), which is how a format-2 bundle ran."""
    return data


def _v3_to_v4(data: dict) -> dict:
    """Format 3's runtime settings lack `lut_gemm`: it takes its default (off), how a format-3 bundle ran."""
    return data


def _v4_to_v5(data: dict) -> dict:
    """Format 4's runtime settings lack `shrink_above_batch` and `stop_spinning_after_call`: they take their defaults (off),
    how a format-4 bundle ran."""
    return data


def _v5_to_v6(data: dict) -> dict:
    """Format 5's runtime settings lack `small_call_threads` and `small_call_batch`: they take their defaults (off: every
    call on one session), how a format-5 bundle ran."""
    return data


def _v6_to_v7(data: dict) -> dict:
    """Format 6 has no `int4_choice`: its int4 settings are the family's or the config's, as recorded in `quantization`."""
    return data


def _v7_to_v8(data: dict) -> dict:
    """Format 7 has no `lut_choice`: its `target.runtime.lut_gemm` is the family's choice, not measured."""
    return data


# version -> function turning a manifest of that version into the next one.
_UPGRADES: dict[int, Any] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5, 5: _v5_to_v6, 6: _v6_to_v7, 7: _v7_to_v8}


def _upgrade(data: dict, version: int) -> dict:
    while version < FORMAT_VERSION:
        data = _UPGRADES[version](data)
        version += 1
        data["format_version"] = version
    return data
