"""TensorRT 10 vs 11, and the CUDA runtime bindings, chosen once per process.

What differs, per NVIDIA's 10.x -> 11.x migration guide and Python API reference:

- Strong typing. 10.x builds strongly typed networks only with the STRONGLY_TYPED creation flag;
  11.x removed weak typing (BuilderFlag.FP16/INT8/..., precision constraints), always types
  strongly, and keeps the flag only as a deprecated no-op. EXPLICIT_BATCH is gone from 11.x.
- Device memory. 11.x removed ICudaEngine.device_memory_size; device_memory_size_v2 replaces it.
- DLA. 10.x through 10.7 has it (JetPack 6's 10.3 included); 11.0-11.3 have none; 11.4.1 supports
  AGX Orin's DLA again (JetPack 7.2.2+).

cuda-python moved its runtime module from `cuda.cudart` (12.x) to `cuda.bindings.runtime`
(12.6+, the only path in 13.x); both are tried here, so the rest of the code never asks.
Nothing is imported until `load()` is called, and then through the one lazy importer
(backends/lazy.py: install hints, version floors).
"""

from __future__ import annotations

import functools
from types import ModuleType

from geofractal_edge.backends.lazy import DEPENDENCIES, require, version_tuple
from geofractal_edge.errors import GfedgeError, MissingDependencyError

SUPPORTED_MAJORS = (10, 11)
NO_GPU_FIX = "run on the device with its NVIDIA GPU; check the driver with nvidia-smi (on Jetson: tegrastats)"


class Cuda:
    """The few CUDA runtime calls the engine runtime needs, with errors turned into GfedgeError."""

    def __init__(self, cudart: ModuleType) -> None:
        self.rt = cudart

    def check(self, result, what: str):
        """cuda-python returns (error, *values); raise on error, return the value(s)."""
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise GfedgeError(f"CUDA call {what} failed: {err}", NO_GPU_FIX)
        return values[0] if len(values) == 1 else tuple(values)

    def sm(self, device: int = 0) -> str:
        attr = self.rt.cudaDeviceAttr
        major = self.check(self.rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute")
        minor = self.check(self.rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute")
        return f"{major}.{minor}"

    def device_name(self, device: int = 0) -> str:
        props = self.check(self.rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        name = props.name
        return (name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(name, bytes) else str(name)).strip()

    def runtime_version(self) -> str:
        v = int(self.check(self.rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
        return f"{v // 1000}.{(v % 1000) // 10}"

    def stream(self) -> int:
        return self.check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def malloc(self, nbytes: int) -> int:
        return int(self.check(self.rt.cudaMalloc(max(1, nbytes)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self.check(self.rt.cudaFree(ptr), "cudaFree")

    def to_device(self, dst: int, host, nbytes: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check(self.rt.cudaMemcpyAsync(dst, host, nbytes, kind, stream), "cudaMemcpyAsync(host->device)")

    def to_host(self, host, src: int, nbytes: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check(self.rt.cudaMemcpyAsync(host, src, nbytes, kind, stream), "cudaMemcpyAsync(device->host)")

    def synchronize(self, stream) -> None:
        self.check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def destroy(self, stream) -> None:
        self.check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")


class TensorRT:
    """One TensorRT install: its module, version, logger and the calls that differ by major."""

    def __init__(self, trt: ModuleType, cuda: Cuda) -> None:
        self.trt = trt
        self.cuda = cuda
        self.version = str(trt.__version__)
        self.major = version_tuple(self.version)[0]
        self.logger = trt.Logger(trt.Logger.WARNING)

    def network_flags(self) -> int:
        raise NotImplementedError

    def device_memory_bytes(self, engine) -> int:
        raise NotImplementedError

    @property
    def has_dla(self) -> bool:
        raise NotImplementedError

    def host_sm(self, device: int = 0) -> str:
        return self.cuda.sm(device)


class TensorRT10(TensorRT):
    def network_flags(self) -> int:
        # Precision lives in the graph (fp16 tensors, Q/DQ); weak typing would let TensorRT re-type it.
        return 1 << int(self.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)

    def device_memory_bytes(self, engine) -> int:
        return int(engine.device_memory_size)

    @property
    def has_dla(self) -> bool:
        return True  # whether this device has cores is the builder's num_DLA_cores


class TensorRT11(TensorRT):
    def network_flags(self) -> int:
        return 0  # always strongly typed; STRONGLY_TYPED is a deprecated no-op, EXPLICIT_BATCH is gone

    def device_memory_bytes(self, engine) -> int:
        return int(engine.device_memory_size_v2)

    @property
    def has_dla(self) -> bool:
        return version_tuple(self.version) >= (11, 4, 1)


def cuda_runtime() -> Cuda:
    """The CUDA runtime bindings of cuda-python, new module path first."""
    try:
        return Cuda(require("cuda.bindings.runtime"))
    except MissingDependencyError:
        return Cuda(require("cuda.cudart"))


@functools.cache
def load() -> TensorRT:
    """Import TensorRT and cuda-python and pick the adapter for this TensorRT major, once."""
    trt = require("tensorrt")
    cuda = cuda_runtime()
    major = version_tuple(str(trt.__version__))[0]
    if major not in SUPPORTED_MAJORS:
        raise MissingDependencyError(
            f"TensorRT {trt.__version__} is not supported (gfedge builds with TensorRT {' or '.join(map(str, SUPPORTED_MAJORS))})",
            DEPENDENCIES["tensorrt"].hint,
        )
    return (TensorRT10 if major == 10 else TensorRT11)(trt, cuda)
