"""The onnxruntime backend: `loader` creates sessions (providers, options, keyed engine caches),
`runner` runs them (`Session`, `load`), `placement` measures which provider ran what.
onnxruntime itself is imported on first use."""

from geofractal_edge.backends.onnxruntime.runner import Session, load

__all__ = ["Session", "load"]
