"""The on-device runtime: load bundles and run them. Imports no torch."""

from geofractal_edge.runtimes.keys import KeyCache
from geofractal_edge.runtimes.session import Session, load

__all__ = ["KeyCache", "Session", "load"]
