"""Fused hard routing on the host CPU: a small C kernel for the argmax and the second routing stage.

Eager torch pays for hierarchical routing in many small ops: tokens are grouped by cluster, every
group is padded to the fullest one, and a batched matmul of tiny matrices runs at a fraction of the
GEMM rate (benchmarks/RESULTS.md has the profile). `route_kernel.c` does the second stage in one
pass per token (each token reads its own cluster's member signatures, no grouping, no gather copy)
and replaces torch.argmax, which is scalar on CPU, by a vector max and a first-index scan. The
score matmuls stay torch GEMMs. Flat routing gets the same argmax, so the two compare fairly.
The kernel is single-threaded: on the small batches routing sees, extra threads lost more to
contention with torch's spinning OpenMP workers than they gained (measured on 2 cores; RESULTS.md).

This is an opt-in fast path for hard routing in torch on the host (`FusedRouter.from_ffn`); the
model's own `TrixFFN.routes` stays eager, so the torch reference that parity compares against
never depends on a compiler. Routes equal the eager ones wherever scores are computed exactly
(tests use integer-valued inputs, ties included); elsewhere a route can differ only on a near-tie,
because the kernel sums each score in another order than the GEMM.

The kernel is compiled on first use with the system C compiler ($CC, else cc or gcc) into the
cache ($GFEDGE_CACHE or ~/.cache/geofractal_edge/kernels), named by a hash of the source and the
CPU's feature flags (it is built with -march=native), and written atomically; later processes load
the cached library.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from geofractal_edge.errors import InputError, MissingDependencyError
from geofractal_edge.models.family import cache_dir

SOURCE = Path(__file__).with_name("route_kernel.c")
_LANES = 16  # V in route_kernel.c: member slots are padded to a multiple of this
_P, _I = ctypes.c_void_p, ctypes.c_int64


def compiler() -> str | None:
    """The C compiler to use: $CC, else `cc`, else `gcc` on PATH; None when there is none."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


@functools.cache
def _cpu_features() -> bytes:
    """The CPU's feature flags where the OS lists them (Linux: /proc/cpuinfo), else the processor name."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.split(":")[0].strip() in ("flags", "Features"):
                return line.encode()
    except OSError:
        pass
    return platform.processor().encode()


_FLAGS = (["-O3", "-march=native", "-shared", "-fPIC"], ["-O3", "-shared", "-fPIC"])  # some compilers refuse -march=native
_NO_KERNEL = "or use the eager route (TrixFFN.routes)"


def build(cache: Path | None = None) -> Path:
    """The compiled kernel library, compiling it into `cache`/kernels on first use (atomic rename)."""
    cc = compiler()
    key = b"\0".join([SOURCE.read_bytes(), _cpu_features(), (cc or "").encode(), repr(_FLAGS).encode()])
    tag = hashlib.sha256(key).hexdigest()[:16]  # -march=native: a cache shared by other CPUs must not load it
    out = (cache or cache_dir()) / "kernels" / f"trix-route-{tag}-{platform.system().lower()}-{platform.machine()}.so"
    if out.exists():
        return out
    if cc is None:
        raise MissingDependencyError("no C compiler for the fused TriX routing kernel", f"install gcc (apt install gcc), {_NO_KERNEL}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp, out.name)
        for flags in _FLAGS:
            try:
                result = subprocess.run([*shlex.split(cc), *flags, "-o", str(staged), str(SOURCE)], capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.TimeoutExpired) as error:
                raise MissingDependencyError(f"could not run the C compiler {cc}: {getattr(error, 'strerror', None) or error}", f"set CC to a working gcc or clang, {_NO_KERNEL}") from None
            if result.returncode == 0:
                os.replace(staged, out)
                return out
    raise MissingDependencyError(f"{cc} could not compile {SOURCE.name}: {_first_error(result.stderr, result.returncode)}", f"set CC to a working gcc or clang, {_NO_KERNEL}")


def _first_error(stderr: str, code: int) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return next((line for line in lines if "error" in line.lower()), lines[-1] if lines else f"exit {code}")


@functools.cache
def _library(path: Path) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as error:
        raise MissingDependencyError(f"could not load the fused routing kernel {path.name}: {error}", f"delete {path} to rebuild it, mount the cache without noexec (or set GFEDGE_CACHE), {_NO_KERNEL}") from None
    lib.gf_argmax_rows.argtypes = [_P, _I, _I, _P]
    lib.gf_stage2.argtypes = [_P, _P, _P, _P, _P, _I, _I, _I, _P]
    for name in ("gf_argmax_rows", "gf_stage2", "gf_max_slots", "gf_lanes"):
        getattr(lib, name).restype = ctypes.c_int64
    return lib


def kernel(cache: Path | None = None) -> ctypes.CDLL:
    """The loaded kernel (compiled on first use); MissingDependencyError when it cannot be built."""
    return _library(build(cache))


def argmax_rows(lib: ctypes.CDLL, scores: Tensor) -> Tensor:
    """[N, n] float32 CPU scores, n >= 1 -> [N] int64: the first maximum of each row (torch.argmax's answer for finite scores)."""
    if scores.ndim != 2 or scores.shape[1] < 1 or scores.dtype != torch.float32 or scores.device.type != "cpu":
        raise InputError(f"argmax_rows takes [N, n >= 1] float32 CPU scores, got {list(scores.shape)} {scores.dtype} on {scores.device}", "reshape, cast or move the scores first")
    scores = scores.detach().contiguous()
    out = torch.empty(scores.shape[0], dtype=torch.int64)
    if lib.gf_argmax_rows(scores.data_ptr(), scores.shape[0], scores.shape[1], out.data_ptr()) != 0:
        raise AssertionError("gf_argmax_rows refused a width argmax_rows checked")  # a bug here, not bad input
    return out


@dataclass(frozen=True)
class FusedRouter:
    """Hard routes of one TriX FFN's current tables: flat (`signatures_t` only) or hierarchical.

    Call it on tokens [N, d] (CPU) to get routes [N] int64. Tables are copied at construction;
    build a new router after the weights change.
    """

    lib: ctypes.CDLL
    d_model: int
    signatures_t: Tensor | None = None  # flat: [d, n]
    cluster_signatures_t: Tensor | None = None  # hierarchical: [d, C]
    member_signatures_t: Tensor | None = None  # [C, d, Mp], Mp = capacity rounded up to 16 lanes, zero columns at padding
    pad: Tensor | None = None  # [C, Mp]: 0 or -inf
    members: Tensor | None = None  # [C, Mp] int64

    @classmethod
    def flat(cls, signatures: Tensor, *, cache: Path | None = None) -> FusedRouter:
        if signatures.ndim != 2 or signatures.shape[0] < 1:
            raise InputError(f"flat routing takes signatures [n_tiles >= 1, d], got {list(signatures.shape)}", "pass TrixFFN.signatures()")
        return cls(kernel(cache), signatures.shape[1], signatures_t=_copy(signatures.T))

    @classmethod
    def hierarchical(cls, cluster_signatures: Tensor, member_signatures: Tensor, members: Tensor, pad: Tensor, *, cache: Path | None = None) -> FusedRouter:
        """From `TrixFFN.hierarchy_tables()`: ([C, d], [C, M, d], [C, M], [C, M])."""
        _check_tables(cluster_signatures, member_signatures, members, pad)
        lib = kernel(cache)
        capacity = member_signatures.shape[1]
        slots = -(-capacity // _LANES) * _LANES
        if slots > lib.gf_max_slots():
            raise InputError(f"clusters of {capacity} tiles exceed the fused kernel's {lib.gf_max_slots()} slots", "use more clusters (n_clusters) or the eager route")
        extra = slots - capacity
        return cls(
            lib,
            cluster_signatures.shape[1],
            cluster_signatures_t=_copy(cluster_signatures.T),
            member_signatures_t=F.pad(member_signatures.detach().float().cpu().transpose(1, 2), (0, extra)).contiguous(),
            pad=F.pad(pad.detach().float().cpu(), (0, extra), value=float("-inf")).contiguous(),
            members=F.pad(members.detach().long().cpu(), (0, extra)).contiguous(),
        )

    @classmethod
    def from_ffn(cls, ffn, *, cache: Path | None = None) -> FusedRouter:
        """The router of a `TrixFFN` as it is now (its routing mode, signatures and clusters)."""
        if ffn.routing == "flat":
            return cls.flat(ffn.signatures(), cache=cache)
        return cls.hierarchical(*ffn.hierarchy_tables(), cache=cache)

    def __call__(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.d_model:
            raise InputError(f"fused routing expects tokens [N, {self.d_model}], got {list(x.shape)}", "flatten the leading dimensions first")
        if x.device.type != "cpu":
            raise InputError(f"fused routing runs on the CPU, got a tensor on {x.device}", "move the tokens to the CPU, or use TrixFFN.routes on the GPU")
        x = x.detach().to(torch.float32).contiguous()
        if self.signatures_t is not None:
            return argmax_rows(self.lib, x @ self.signatures_t)
        cluster = argmax_rows(self.lib, x @ self.cluster_signatures_t)
        route = torch.empty(x.shape[0], dtype=torch.int64)
        slots = self.member_signatures_t.shape[2]
        if self.lib.gf_stage2(x.data_ptr(), cluster.data_ptr(), self.member_signatures_t.data_ptr(), self.pad.data_ptr(), self.members.data_ptr(), x.shape[0], slots, self.d_model, route.data_ptr()) != 0:
            raise AssertionError(f"gf_stage2 refused {slots} slots that hierarchical() checked")  # a bug here, not bad input
        return route


def _copy(table: Tensor) -> Tensor:
    """A contiguous float32 CPU copy that shares no storage with the model (.contiguous() alone may not copy)."""
    return table.detach().to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format, copy=True)


def _check_tables(cluster_signatures: Tensor, member_signatures: Tensor, members: Tensor, pad: Tensor) -> None:
    """The kernel trusts its tables' sizes: refuse any that do not agree with one another."""
    if member_signatures.ndim != 3 or min(member_signatures.shape) < 1:
        raise InputError(f"member signatures must be [C, M >= 1, d], got {list(member_signatures.shape)}", "pass TrixFFN.hierarchy_tables()")
    c, m, d = member_signatures.shape
    expected = {"cluster signatures": (cluster_signatures, (c, d)), "members": (members, (c, m)), "pad": (pad, (c, m))}
    for name, (table, shape) in expected.items():
        if tuple(table.shape) != shape:
            raise InputError(f"{name} must be {list(shape)} to match member signatures {[c, m, d]}, got {list(table.shape)}", "pass TrixFFN.hierarchy_tables()")
