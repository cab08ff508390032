"""One helper for optional heavy dependencies: import on first use, or say how to install them."""

from __future__ import annotations

import importlib
from types import ModuleType

from geofractal_edge.errors import MissingDependencyError

_HINTS = {
    "torch": 'pip install "geofractal-edge[export]" (on Jetson, use NVIDIA\'s torch wheel for your JetPack)',
    "onnx": 'pip install "geofractal-edge[export]"',
    "onnxscript": 'pip install "geofractal-edge[export]"',
    "onnxruntime": 'pip install "geofractal-edge[runtime]"',
    "tensorrt": 'pip install "geofractal-edge[trt]" (on Jetson, TensorRT comes with JetPack)',
    "matplotlib": 'pip install "geofractal-edge[dev]"',
}


def require(module: str) -> ModuleType:
    """Import `module`, or raise a one-line error naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = _HINTS.get(top, f"pip install {top}")
        raise MissingDependencyError(f"{top} is not installed ({exc.msg})", hint) from exc
