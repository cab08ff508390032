"""Run a bundle's engine.plan with TensorRT and cuda-python, without torch.

The engine's compatibility key is checked against this host (TensorRT version, SM, graph and
settings) before TensorRT sees the plan; a foreign engine is refused with the reason and
"rebuild on the device". I/O is bound by tensor name (TensorRT 10+ API), device buffers grow on
demand and are reused, and each run is one CUDA stream: copy in, execute_async_v3, copy out,
synchronize. Inputs are validated against the manifest (backends/base.py) and the engine's
optimization profile first, and the latent key is bound from the key cache, as in the onnxruntime Session.
"""

from __future__ import annotations

import time
import weakref
from pathlib import Path

import numpy as np

from geofractal_edge.artifacts import Bundle, open_bundle
from geofractal_edge.backends.base import Runner
from geofractal_edge.backends.placement import ENGINE, PlacementReport
from geofractal_edge.backends.tensorrt import adapter
from geofractal_edge.backends.tensorrt.compat import REBUILD, check_engine_compat, engine_record
from geofractal_edge.errors import BundleError, GfedgeError, InputError


class TensorRTSession(Runner):
    def __init__(self, bundle: Bundle, *, key_capacity: int = 64, device: int = 0) -> None:
        api = adapter.load()  # no TensorRT or cuda-python here: one line naming JetPack, before anything else
        super().__init__(bundle, key_capacity=key_capacity)
        trt, self._cuda = api.trt, api.cuda
        self.engine_key = check_engine_compat(self.manifest, api.version, api.host_sm(device))
        record = engine_record(self.manifest)
        started = time.perf_counter()
        self._runtime = trt.Runtime(api.logger)
        self._engine = self._runtime.deserialize_cuda_engine(bundle.file(record.file).read_bytes())
        if self._engine is None:
            raise BundleError(f"TensorRT {api.version} could not deserialize {record.file}", REBUILD)
        self._context = self._engine.create_execution_context()
        self._stream = self._cuda.stream()
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._finalizer = weakref.finalize(self, _release, self._cuda, self._buffers, self._stream)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self._shapes = {n: tuple(self._engine.get_tensor_shape(n)) for n in self._inputs}  # -1: dynamic
        self.load_seconds = time.perf_counter() - started
        self.device_memory_bytes = api.device_memory_bytes(self._engine)
        self.providers_used = (ENGINE,)
        self.cache_key = self.engine_key.id
        self._placement = PlacementReport(
            target=self.manifest.target.name, requested=(ENGINE,), available=(ENGINE,), registered=(ENGINE,),
            kernels={ENGINE: int(self._engine.num_layers)}, dla=record.dla,
        )

    @property
    def placement(self) -> PlacementReport:
        """The engine runs every layer; DLA placement as recorded at build."""
        return self._placement

    def close(self) -> None:
        """Free the device buffers and the stream now (otherwise when the session is collected)."""
        self._finalizer()
        super().close()

    def _execute(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda, context = self._cuda, self._context
        staged = []  # host arrays must live until the stream is synchronized
        for name in self._inputs:
            array = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
            self._check_profile(name, array.shape)
            if not context.set_input_shape(name, array.shape):
                raise InputError(f"TensorRT refused shape {list(array.shape)} for input '{name}'", "pass a shape within the engine's optimization profile")
            pointer = self._buffer(name, array.nbytes)
            cuda.to_device(pointer, array.ctypes.data, array.nbytes, self._stream)
            context.set_tensor_address(name, pointer)
            staged.append(array)
        outputs = {}
        for name in self.manifest.graph.output_names:
            out = np.empty(tuple(context.get_tensor_shape(name)), dtype=self._dtypes[name])
            context.set_tensor_address(name, self._buffer(name, out.nbytes))
            outputs[name] = out
        if not context.execute_async_v3(self._stream):
            raise GfedgeError("TensorRT could not run the engine (see its messages above)", REBUILD)
        for name, out in outputs.items():
            cuda.to_host(out.ctypes.data, self._buffers[name][0], out.nbytes, self._stream)
        cuda.synchronize(self._stream)
        return outputs

    def _check_profile(self, name: str, shape: tuple[int, ...]) -> None:
        if -1 not in self._shapes[name]:
            low = high = self._shapes[name]
        else:
            low, _, high = (tuple(s) for s in self._engine.get_tensor_profile_shape(name, 0))
        if len(shape) != len(low) or any(not lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
            raise InputError(
                f"input '{name}' has shape {list(shape)}, outside the engine's range {list(low)}..{list(high)}",
                "pass a shape within that range, or widen the dimension's range in the export spec and rebuild",
            )

    def _buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least `nbytes` for this tensor, reused across runs."""
        pointer, size = self._buffers.get(name, (0, -1))
        if size < nbytes:
            if pointer:
                self._cuda.free(pointer)
            pointer = self._cuda.malloc(nbytes)
            self._buffers[name] = (pointer, nbytes)
        return pointer


def _release(cuda: adapter.Cuda, buffers: dict[str, tuple[int, int]], stream) -> None:
    for pointer, _ in buffers.values():
        cuda.free(pointer)
    buffers.clear()
    cuda.destroy(stream)


def load_engine(path: Path | str, **options) -> TensorRTSession:
    """Open and check a bundle, then load its TensorRT engine (refused if built elsewhere)."""
    return TensorRTSession(open_bundle(Path(path)), **options)
