"""geofractal_edge: train small routed models, export them per target, run them without torch."""

__version__ = "0.1.0"
