"""Target device profiles as data. Imports no torch."""

from geofractal_edge.targets.profile import TargetProfile
from geofractal_edge.targets.registry import all_targets, get_target

__all__ = ["TargetProfile", "all_targets", "get_target"]
