"""Backends: what builds and runs a bundle's graph on the device, one package per engine.

`base.Runner` is the one contract (`run(inputs, *, key=None)`, `placement`, `cache_key`,
`close()`, a context manager); `onnxruntime/` and `tensorrt/` each have a `loader` (make the
session or build the engine) and a `runner`. `lazy` is the one importer for optional heavy
dependencies. Backends import only artifacts, targets, errors and each other: never torch,
never geofractal_edge.export or geofractal_edge.runtimes (a test scans for it).
(NVIDIA Polygraphy's backend/<name>/{loader,runner}.)
"""

from geofractal_edge.backends.base import Runner

__all__ = ["Runner"]
