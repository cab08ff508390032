"""The on-device runtime: load bundles and run them. Imports no torch."""

from geofractal_edge.runtimes.chain import Chain, load_chain
from geofractal_edge.runtimes.keys import KeyCache
from geofractal_edge.runtimes.session import Session, load

__all__ = ["Chain", "KeyCache", "Session", "load", "load_chain"]
