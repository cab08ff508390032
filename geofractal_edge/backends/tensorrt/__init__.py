"""The TensorRT backend, all of it device-side: build an engine from a bundle's ONNX, then run it.

`compat` is pure Python (the engine's compatibility key; the runner checks it without TensorRT);
`adapter` imports TensorRT and cuda-python lazily and hides the 10 vs 11 differences; `loader`
builds engine.plan into the bundle (`gfedge build`); `runner` runs it (`TensorRTSession`,
`load_engine`). Nothing here imports TensorRT, CUDA or torch at import time.
"""

from geofractal_edge.backends.tensorrt.loader import build_engine
from geofractal_edge.backends.tensorrt.runner import TensorRTSession, load_engine

__all__ = ["TensorRTSession", "build_engine", "load_engine"]
