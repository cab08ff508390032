"""The contract between export and runtime: manifest, bundle, keys, golden I/O. Imports no torch."""

from geofractal_edge.artifacts.bundle import Bundle, open_bundle, seal
from geofractal_edge.artifacts.golden import GoldenCase
from geofractal_edge.artifacts.keys import Key, check_key, read_key, write_key
from geofractal_edge.artifacts.manifest import FORMAT_VERSION, Manifest

__all__ = ["FORMAT_VERSION", "Bundle", "GoldenCase", "Key", "Manifest", "check_key", "open_bundle", "read_key", "seal", "write_key"]
