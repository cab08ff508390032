"""A target profile: what one kind of device is, as data. No torch, no device branches."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from geofractal_edge.errors import GfedgeError
from geofractal_edge.targets.precisions import PRECISIONS

MIB = 1 << 20
GIB = 1 << 30
# How low-bit weights are written into the graph, chosen per target (see export/lowbit.py):
# "ort": onnxruntime's own packed operators (com.microsoft MatMulNBits / GatherBlockQuantized), so
#        4-bit and 2-bit weights stay packed in the session; "qdq": standard blocked DequantizeLinear,
#        the form TensorRT builds from (and any ONNX runtime reads).
WEIGHT_DIALECTS = ("ort", "qdq")
# How int8 quantizes activations on this target (export/quantize/int8.py): "static": explicit Q/DQ
# with scales calibrated at export (TensorRT's form, any runtime reads it); "dynamic": onnxruntime's
# MatMulInteger with the scale measured per call (needs weight_dialect "ort").
INT8_ACTIVATIONS = ("static", "dynamic")
MMAP_THRESHOLD_MAX_KIB = 32 << 10  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit


def check_mmap_threshold_kib(value, what: str) -> int:
    """`value` if it is a whole number of KiB from 0 (glibc's own threshold) to MMAP_THRESHOLD_MAX_KIB; else refused in one line."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MMAP_THRESHOLD_MAX_KIB:
        raise GfedgeError(f"{what} is {value!r}", f"use a whole number of KiB from 0 (glibc's own) to {MMAP_THRESHOLD_MAX_KIB}")
    return value


@dataclass(frozen=True)
class RuntimeSettings:
    """How onnxruntime runs a bundle on this kind of device: the profile's `[runtime]` table.

    A call site overrides any of them by keyword (`load(path, intra_op_threads=1)`). The host-cpu
    values were chosen by measurement (benchmarks/session_options.py, recorded in RESULTS.md).
    """

    intra_op_threads: int = 0  # threads inside one operator; 0: onnxruntime's choice (one per physical core)
    inter_op_threads: int = 0  # threads across operators (parallel execution mode only); 0: onnxruntime's choice
    allow_spinning: bool = True  # idle intra-op threads spin: lower latency, a busier core (session.intra_op.allow_spinning)
    # With allow_spinning: the threads stop spinning when a call returns (session.force_spinning_stop), so they spin
    # between one call's parallel sections, where a wake-up costs more than a small operator, not between calls.
    stop_spinning_after_call: bool = False
    cpu_mem_arena: bool = True  # onnxruntime's CPU arena keeps freed buffers for reuse (enable_cpu_mem_arena)
    mem_pattern: bool = True  # plan activation buffers from the shapes seen (enable_mem_pattern)
    prepacking: bool = True  # re-lay weights at load for faster kernels, a second copy of them (off: session.disable_prepacking)
    # Per session: this session draws from the process's one CPU arena (onnxruntime's environment allocator, registered
    # once with onnxruntime's defaults by the first session asking, never unregistered) instead of keeping an arena of
    # its own: several models loaded in one process (load, load_chain) keep one activation high-water mark, not one
    # each. The zoo turns it off per session, so that an eviction frees what it charged.
    shared_arena: bool = False
    # glibc: C buffers of at least this many KiB are mapped per allocation and unmapped when freed, so with the
    # arena off a call's activations go back to the OS when it ends (0: ask for nothing, leaving glibc's threshold,
    # which by default rises as buffers are freed and then keeps them). Process-wide: the first session that sets a
    # non-zero value holds it for the process; a later session asking another keeps it and logs one warning (logger
    # geofractal_edge.backends.process). Set it once with backends.process.configure_process(mmap_threshold_kib=N)
    # before the first load. Ignored off glibc.
    mmap_threshold_kib: int = 0
    # At the end of every call the CPU arena hands back the chunks no tensor holds (RunOptions
    # memory.enable_memory_arena_shrinkage): between calls a session holds its weights, not its largest call's activations.
    arena_shrinkage: bool = False
    # The same hand-back, only after calls whose batch (the first data input's leading dynamic dimension, what
    # `gfedge bench --batch` counts) is above this, and then glibc's free pages too (malloc_trim, ~0.1 ms): smaller calls
    # keep theirs in the arena for the next one (0: off). A session then holds its weights plus a small call's
    # activations between calls, and only the large calls, whose compute dwarfs faulting their buffers in again, pay
    # for it, without mmap_threshold_kib's process-wide change. `arena_shrinkage` true hands back after every call.
    shrink_above_batch: int = 0
    # onnxruntime's lookup-table kernel for 2-bit MatMulNBits (session config mlas.use_lut_gemm): it quantizes each
    # call's activations to int8, so export turns it on per bundle only where the family asks for it at that precision
    # (ExportSpec.lut_gemm_precisions: TriX int8/int4 under dispatch_by_route) and the export host measured it faster at
    # the bundle's worst batch against fp32 (export/lut_choice.py); parity then gates the bundle.
    # onnxruntime 1.32 uses it only where the CPU has the kernel (AVX2 on x86), prepacking is on and a weight's N is a
    # multiple of 128 and K and the block of 32; elsewhere it runs the exact kernel. Parity measures the export host's
    # choice: a device that has the kernel where the export host had none runs arithmetic parity did not see.
    lut_gemm: bool = False
    # Calls whose batch (as shrink_above_batch counts it) is at most `small_call_batch` run through a second onnxruntime
    # session of the same graph with this many intra-op threads (0: off, every call on one session). Without spinning, a
    # parallel section wakes a sleeping worker, which costs more than a small graph's operators: the shipped Atlas and
    # collective defaults at batch 1 ran x1.42-1.47 slower on 2 threads than on 1, and x0.53-0.66 faster at their typical
    # batch (benchmarks/RESULTS.md, "Issue 11, tenth session"). Export keeps it per bundle only where it measured the small
    # calls faster (export/small_calls.py); the second session holds a second copy of the weights, so only small graphs.
    # A small call never shrinks (shrink_above_batch), even where small_call_batch is above it.
    small_call_threads: int = 0
    small_call_batch: int = 1

    def __post_init__(self) -> None:
        for name, zero in (("intra_op_threads", "onnxruntime's choice"), ("inter_op_threads", "onnxruntime's choice"), ("shrink_above_batch", "off"),
                           ("small_call_threads", "off"), ("small_call_batch", "off")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise GfedgeError(f"runtime setting {name} is {value!r}", f"use a whole number >= 0 (0: {zero})")
        check_mmap_threshold_kib(self.mmap_threshold_kib, "runtime setting mmap_threshold_kib")
        for name in ("allow_spinning", "stop_spinning_after_call", "cpu_mem_arena", "mem_pattern", "prepacking", "shared_arena", "arena_shrinkage",
                     "lut_gemm"):
            if not isinstance(getattr(self, name), bool):
                raise GfedgeError(f"runtime setting {name} is {getattr(self, name)!r}", "use true or false")

    @classmethod
    def from_dict(cls, data: dict) -> RuntimeSettings:
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise GfedgeError(f"runtime settings have unknown fields {unknown}", f"allowed: {', '.join(names)}")
        return cls(**data)

    def but(self, **overrides) -> RuntimeSettings:
        """These settings with some replaced; None keeps a value, an unknown name is refused."""
        return RuntimeSettings.from_dict({**dataclasses.asdict(self), **{k: v for k, v in overrides.items() if v is not None}})


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    precisions: tuple[str, ...]
    default_precision: str
    ort_providers: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    gpu: str = ""
    sm: str | None = None  # CUDA compute capability, "8.7"; None for a CPU-only target
    memory_gib: float | None = None  # None: measured on the host at run time
    memory_shared: bool = False  # one pool for CPU and GPU (Jetson)
    reserve_mib: int = 0  # kept back for the OS and the application in that pool
    budget_fraction: float = 0.9  # of what is left after the reserve
    dla_cores: int = 0
    dla_precisions: tuple[str, ...] = ()
    tensorrt_version: str | None = None  # the TensorRT the device runs; None: no TensorRT
    jetpack: str | None = None
    workspace_mib: int | None = None  # TensorRT builder workspace cap
    builder_optimization_level: int = 3
    # Routed (TriX) export: compute every tile and select up to this many tiles; above: dispatch by route on
    # onnxruntime ("ort") targets, gather by route on TensorRT ("qdq") ones (models/trix/family.choose_lowering).
    compute_all_max_tiles: int = 8
    # One of WEIGHT_DIALECTS; "qdq" (what every bundle held before dialects existed) when absent.
    weight_dialect: str = "qdq"
    # One of INT8_ACTIVATIONS; "static" (what every int8 bundle held before) when absent.
    int8_activations: str = "static"
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)  # onnxruntime session settings
    sources: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def sm_tuple(self) -> tuple[int, int] | None:
        if self.sm is None:
            return None
        major, minor = self.sm.split(".")
        return int(major), int(minor)

    @property
    def tensorrt_major(self) -> int | None:
        return None if self.tensorrt_version is None else int(self.tensorrt_version.split(".")[0])

    def budget_bytes(self, *, host_total_bytes: int | None = None) -> int:
        """The runtime's memory budget: (pool - reserve) x fraction.

        A profile without a fixed memory size (host-cpu) uses the host's measured total.
        """
        if self.memory_gib is not None:
            pool = int(self.memory_gib * GIB)
        elif host_total_bytes is not None:
            pool = host_total_bytes
        else:
            raise GfedgeError(f"target {self.name} has no fixed memory size", "pass the host's measured memory")
        return max(0, int((pool - self.reserve_mib * MIB) * self.budget_fraction))

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["tensorrt_major"] = self.tensorrt_major
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TargetProfile:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"tensorrt_major"})
        if unknown:
            raise GfedgeError(f"target profile has unknown fields {unknown}", f"allowed fields: {sorted(names)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        if isinstance(kwargs.get("runtime"), dict):
            kwargs["runtime"] = RuntimeSettings.from_dict(kwargs["runtime"])
        return cls(**kwargs)


def _validate(p: TargetProfile) -> None:
    for field_name in ("precisions", "dla_precisions"):
        bad = [x for x in getattr(p, field_name) if x not in PRECISIONS]
        if bad:
            raise GfedgeError(f"target {p.name}: {field_name} {bad} cannot be exported", f"remove them; {field_name} may list only {', '.join(PRECISIONS)}")
    if p.default_precision not in p.precisions:
        raise GfedgeError(f"target {p.name}: default precision {p.default_precision} is not allowed", "add it to precisions")
    if p.dla_cores and not p.dla_precisions:
        raise GfedgeError(f"target {p.name}: DLA cores without DLA precisions", "set dla_precisions")
    if p.tensorrt_version is not None and (p.sm is None or p.workspace_mib is None):
        raise GfedgeError(f"target {p.name}: TensorRT needs sm and workspace_mib", "add them to the profile")
    if p.weight_dialect not in WEIGHT_DIALECTS:
        raise GfedgeError(f"target {p.name}: weight_dialect {p.weight_dialect!r} is unknown", f"use one of {', '.join(WEIGHT_DIALECTS)}")
    if p.int8_activations not in INT8_ACTIVATIONS:
        raise GfedgeError(f"target {p.name}: int8_activations {p.int8_activations!r} is unknown", f"use one of {', '.join(INT8_ACTIVATIONS)}")
    if p.int8_activations == "dynamic" and p.weight_dialect != "ort":
        raise GfedgeError(f"target {p.name}: int8_activations \"dynamic\" needs weight_dialect \"ort\" (TensorRT builds int8 from explicit Q/DQ only)",
                          'set int8_activations = "static"')
    if not p.ort_providers:
        raise GfedgeError(f"target {p.name}: no onnxruntime providers", "list at least CPUExecutionProvider")
    if not isinstance(p.runtime, RuntimeSettings):
        raise GfedgeError(f"target {p.name}: runtime is {type(p.runtime).__name__}", "make it a [runtime] table of onnxruntime settings")
