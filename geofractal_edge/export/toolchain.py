"""Versions of everything that shaped a bundle, for its manifest."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("geofractal-edge", "torch", "onnx", "onnxruntime", "onnxscript", "numpy", "safetensors")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
