"""Parity: float64 statistics, tolerances as data, reports. Torch only lazily, on the host side."""

from geofractal_edge.parity.report import Check, ParityReport
from geofractal_edge.parity.verify import compare_cases, verify_bundle

__all__ = ["Check", "ParityReport", "compare_cases", "verify_bundle"]
