"""The on-device runtime: load bundles and run them. Imports no torch.

The face most callers use: `load(path)` gives an onnxruntime runner (`run`, `close`, a context
manager), `load_chain` an encoder in front of a collective, `KeyCache` the keys. What runs the
graph lives in geofractal_edge.backends (onnxruntime, TensorRT); this package consumes runners:
chains, input files (`io`), the zoo.
"""

from geofractal_edge.backends.keys import KeyCache
from geofractal_edge.backends.onnxruntime import Session, load
from geofractal_edge.runtimes.chain import Chain, load_chain

__all__ = ["Chain", "KeyCache", "Session", "load", "load_chain"]
