"""Create onnxruntime sessions for a bundle: the provider plan, provider options, and keyed engine caches.

Providers: the target profile's order, kept where this onnxruntime build offers them, decided
before loading (`plan_providers`). A bundle's model.onnx holds every weight in the form its runtime
executes (format 2: int4 and 2-bit TriX tiles as onnxruntime's packed operators on "ort" targets),
so the session is created from the file alone; only a format-1 TriX bundle still has codes in a
2-bit file of their own, unpacked here and handed over as the external initializers it names.
Session settings (threads, spinning, CPU arena, memory patterns, prepacking) are the target
profile's `runtime` table unless the caller passes others (`session_options`; `prepared_options` also applies
the process-wide mmap threshold they carry, as every session made here does).

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
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from geofractal_edge.artifacts import Bundle, atomic
from geofractal_edge.artifacts.hashing import canonical_sha256
from geofractal_edge.artifacts.manifest import TensorRTSettings
from geofractal_edge.backends.inputs import leading_dim
from geofractal_edge.backends.lazy import installed_version, require
from geofractal_edge.backends.process import session_mmap_threshold, trim_heap
from geofractal_edge.backends.tensorrt.adapter import Cuda, cuda_runtime
from geofractal_edge.backends.tensorrt.compat import external_sha256
from geofractal_edge.errors import BundleError, GfedgeError, MissingDependencyError
from geofractal_edge.targets.profile import RuntimeSettings

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ProviderPlan:
    requested: tuple[str, ...]  # the target profile's order
    available: tuple[str, ...]  # what this onnxruntime build offers
    chosen: tuple[str, ...]  # requested and available, in order

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(p for p in self.requested if p not in self.available)

    @property
    def preferred(self) -> str:
        return self.requested[0]


def plan_providers(bundle: Bundle, *, override: tuple[str, ...] | None = None) -> ProviderPlan:
    """Is this bundle runnable here, and with which providers? Refused before loading if with none."""
    ort = require("onnxruntime")
    requested = tuple(override or bundle.manifest.target.ort_providers)
    available = tuple(ort.get_available_providers())
    chosen = tuple(p for p in requested if p in available)
    if not chosen:
        raise BundleError(
            f"none of the providers {list(requested)} is available in this onnxruntime ({list(available)})",
            "install the onnxruntime build for this device, or export for a target this host can run",
        )
    return ProviderPlan(requested=requested, available=available, chosen=chosen)


def session_options(settings: RuntimeSettings):
    """onnxruntime.SessionOptions carrying the target's (or the caller's) runtime settings."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.enable_cpu_mem_arena = settings.cpu_mem_arena
    options.enable_mem_pattern = settings.mem_pattern
    spin = "1" if settings.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    if settings.allow_spinning and settings.stop_spinning_after_call:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    # onnxruntime's Python API has no PrepackedWeightsContainer (C, C++ and C# only), so
    # prepacked weights cannot be shared across sessions from here: each session packs its own.
    options.add_session_config_entry("session.disable_prepacking", "0" if settings.prepacking else "1")
    if settings.lut_gemm:
        options.add_session_config_entry("mlas.use_lut_gemm", "1")
    if settings.shared_arena and settings.cpu_mem_arena:
        register_shared_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


def prepared_options(settings: RuntimeSettings, *, asked_by: str):
    """`session_options(settings)`, made where a session is about to be made: the settings' `mmap_threshold_kib`,
    a process setting and not a session option, is applied too (glibc's, the first value holding for the process;
    `asked_by` names who asked in the warning a later, different value gets: `session_mmap_threshold`)."""
    options = session_options(settings)
    session_mmap_threshold(settings.mmap_threshold_kib, asked_by=asked_by)
    return options


_shared_arena = threading.Lock()
_registered: list[bool] = []


def register_shared_arena() -> None:
    """Register onnxruntime's process-wide CPU arena once; sessions opt in with `session.use_env_allocators`.

    The arena itself is the process's: registered by the first session asking for it, with
    onnxruntime's default arena settings (nothing per bundle configures it), and never unregistered,
    so what it grew to stays with the process after its sessions close. `shared_arena` is per
    session only in whether that session draws from it: bundles asking True and False in one
    process each get what they asked for, with no value for one to override in the other.
    """
    ort = require("onnxruntime")
    with _shared_arena:
        if not _registered:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, None)
            _registered.append(True)


def create_session(bundle: Bundle, providers: list, *, profile_prefix: str | None = None, settings: RuntimeSettings | None = None):
    """(onnxruntime.InferenceSession, the OrtValues it borrows): the codes must outlive the session.

    `providers`: names with their options (`provider_options`). `profile_prefix`: record one
    profile per run there (what placement measures). `settings`: threads, spinning, arena, memory
    patterns, prepacking; default: the bundle's target profile's `runtime`. Two of them reach past
    the session: `mmap_threshold_kib` is glibc's, one value per process, and the first session to
    set it holds it (a later one asking for another is warned about and keeps it; set it once with
    `backends.process.configure_process`); `shared_arena` opts this session into the one arena
    registered for the process (`register_shared_arena`).
    """
    ort = require("onnxruntime")
    settings = settings or bundle.manifest.target.runtime
    options = prepared_options(settings, asked_by=f"bundle '{bundle.path.name}'")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    # Format 1 only: TriX codes in a 2-bit file beside the graph, which names them as external data.
    codes = {name: ort.OrtValue.ortvalue_from_numpy(c) for name, c in bundle.ternary_codes().items()}
    if codes:
        options.add_external_initializers(list(codes), list(codes.values()))
    try:
        session = ort.InferenceSession(str(bundle.model_path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for unloadable graphs
        fix = ("install onnxruntime>=1.31 (the bundle's int4 and 2-bit weights use its packed operators), or export for a "
               "target whose weight_dialect is qdq") if bundle.manifest.weight_dialect == "ort" else "re-export the bundle for this runtime"
        raise BundleError(f"onnxruntime cannot load {bundle.model_path.name}: {str(exc).splitlines()[0][:300]}", fix) from exc
    trim_heap()  # the initializers' pages freed after prepacking
    return session, codes


def run_options(settings: RuntimeSettings):
    """onnxruntime.RunOptions for every call of a session with these settings; None: onnxruntime's defaults.

    `arena_shrinkage`: at the end of each call the CPU arena hands back its chunks no tensor holds
    (run config `memory.enable_memory_arena_shrinkage`), so between calls the session keeps its
    weights, not its largest call's activations; the next call allocates them again.
    """
    if not (settings.arena_shrinkage and settings.cpu_mem_arena):
        return None
    return shrinking_run_options()


def shrinking_run_options():
    """RunOptions whose call ends with the CPU arena handing back the chunks no tensor holds."""
    ort = require("onnxruntime")
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def shrinks_above(graph, settings: RuntimeSettings) -> tuple[str, int] | None:
    """(input name, batch): calls whose input of that name is longer than `batch` on its first axis end by
    handing their activations back (`shrink_above_batch`: the arena's free chunks, where there is an arena, then
    glibc's free pages); None where no call is treated apart (the setting off, every call shrinking already, or no
    dynamic leading dimension: a graph whose first input has a fixed leading size has no large calls to tell apart)."""
    if not settings.shrink_above_batch or settings.arena_shrinkage:
        return None
    name = batch_input(graph)
    return None if name is None else (name, settings.shrink_above_batch)


def batch_input(graph) -> str | None:
    """The input whose first axis is the batch that `shrink_above_batch` and `small_call_batch` count (the first data
    input, as `gfedge bench --batch`), or None where the graph has no dynamic leading dimension to count by."""
    return None if leading_dim(graph)[0] is None else graph.data_inputs[0].name


def small_calls(graph, settings: RuntimeSettings, providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> tuple[str, int] | None:
    """(input name, batch): calls whose input of that name is at most `batch` long on its first axis run through a
    second session of `small_call_threads` intra-op threads; None where every call runs on one session (the setting
    off, not fewer threads than the session's (its 0, onnxruntime's choice, read as the CPUs this process may use), a
    GPU provider first in `providers` (the session's chosen ones), where intra-op threads are not what runs the graph,
    or no dynamic leading dimension to tell small calls by)."""
    threads = settings.small_call_threads
    if not threads or threads >= (settings.intra_op_threads or usable_cpus()) or not settings.small_call_batch:
        return None
    if not providers or providers[0] != "CPUExecutionProvider":
        return None
    name = batch_input(graph)
    return None if name is None else (name, settings.small_call_batch)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def direct_run(session, options=None):
    """`run(output_names, feeds)` for a runner that has checked its feeds: onnxruntime's C session.

    `InferenceSession.run` re-checks the feed names, looks for OrtValues and graph capture, then
    calls its C session; at batch 1 that wrapper alone costs ~10 % of a small graph's run. A runner
    has already checked names, dtypes, shapes and values and passes numpy arrays only, so it calls
    the C session itself. Any failure is retried through the public `run`, which raises it as
    onnxruntime would, or falls back to other providers where onnxruntime does. A build without
    the C session attribute gets the public `run`. `options`: the RunOptions of every call (`run_options`).
    """
    if not callable(getattr(getattr(session, "_sess", None), "run", None)):
        return lambda output_names, feeds: session.run(output_names, feeds, options)

    def run(output_names: list[str], feeds: dict):
        try:
            return session._sess.run(output_names, feeds, options)  # looked up per call: a provider fallback replaces it
        except Exception:  # onnxruntime's own errors are untyped here; the public run raises them properly
            return session.run(output_names, feeds, options)

    return run


def engine_cache_id(providers: list) -> str | None:
    """The id of the TensorRT provider's engine-cache folder among `provider_options`, or None when off."""
    for entry in providers:
        if isinstance(entry, tuple) and entry[0] == TRT_EP and entry[1].get("trt_engine_cache_enable"):
            return Path(entry[1]["trt_engine_cache_path"]).name
    return None


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


def cache_root() -> Path:
    """$GFEDGE_CACHE/ort-trt, or ~/.cache/geofractal_edge/ort-trt."""
    root = os.environ.get("GFEDGE_CACHE") or Path.home() / ".cache" / "geofractal_edge"
    return Path(root) / "ort-trt"


def profile_shapes(settings: TensorRTSettings, use: str) -> str:
    """onnxruntime's profile option format, "name:d1xd2,name:d1": first optimization profile."""
    profile = settings.optimization_profiles[0]
    return ",".join(f"{name}:{'x'.join(str(d) for d in getattr(shapes, use))}" for name, shapes in sorted(profile.items()))


def trt_flags(settings: TensorRTSettings) -> dict:
    """The TensorRT provider options that change the engine (and so belong in the cache key)."""
    dla = settings.dla
    return {
        "trt_max_workspace_size": settings.workspace_bytes,
        "trt_builder_optimization_level": settings.builder_optimization_level,
        # Precision is in the graph: with these off, onnxruntime builds strongly typed networks.
        "trt_fp16_enable": False,
        "trt_int8_enable": False,
        "trt_dla_enable": dla.use,
        "trt_dla_core": dla.core,
        "trt_profile_min_shapes": profile_shapes(settings, "min"),
        "trt_profile_opt_shapes": profile_shapes(settings, "opt"),
        "trt_profile_max_shapes": profile_shapes(settings, "max"),
    }


def cache_key(bundle: Bundle, host: HostFacts) -> dict:
    """Everything a cached engine depends on; `key["id"]` names its folder."""
    fields = {
        "onnx_sha256": bundle.manifest.files[bundle.manifest.graph.file].sha256,
        "external_sha256": external_sha256(bundle.manifest),
        "precision": bundle.manifest.precision,
        "flags": trt_flags(bundle.manifest.tensorrt),
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
        if name == TRT_EP and bundle.manifest.tensorrt is not None:
            out.append((name, trt_options(bundle, host=host or detect_host(), root=root)))
        elif name == CUDA_EP:
            out.append((name, {"device_id": 0}))
        else:
            out.append(name)
    return out


def trt_options(bundle: Bundle, *, host: HostFacts, root: Path | None = None) -> dict:
    options = {"device_id": 0, **trt_flags(bundle.manifest.tensorrt)}
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
    cuda = _cuda()
    return HostFacts(
        tensorrt=_tensorrt_version(),
        cuda=_ask(cuda.runtime_version) if cuda else UNKNOWN,
        sm=_ask(cuda.sm) if cuda else UNKNOWN,
        onnxruntime=installed_version("onnxruntime") or UNKNOWN,
    )


def _tensorrt_version() -> str:
    """The libnvinfer onnxruntime will load: its getInferLibVersion(), else the Python package's."""
    for lib in ("libnvinfer.so.11", "libnvinfer.so.10"):
        try:
            v = int(ctypes.CDLL(lib).getInferLibVersion())
        except (OSError, AttributeError):
            continue
        # 10.x and later encode major*10000 + minor*100 + patch.
        return f"{v // 10000}.{(v // 100) % 100}.{v % 100}"
    return installed_version("tensorrt") or UNKNOWN


def _cuda() -> Cuda | None:
    try:
        return cuda_runtime()
    except MissingDependencyError:
        return None


def _ask(call) -> str:
    try:
        return call()
    except GfedgeError:  # a CUDA call failed: no GPU or no driver here
        return UNKNOWN
