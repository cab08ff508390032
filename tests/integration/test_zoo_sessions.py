"""What the zoo forces on every session it loads, whatever the bundle's manifest asks: an arena of the
session's own (shared_arena False), never shrunk after calls (arena_shrinkage False), one session per model
(small_call_threads 0), so that what a model
is charged is what its eviction gives back (the tests assert the settings, not the memory); and what a
real load measures of its own peak."""

from __future__ import annotations

import shutil

import numpy as np

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.backends import process
from geofractal_edge.runtimes.zoo import Zoo
from tests.integration.test_zoo_integrity import reseal_edited

X = np.linspace(0.0, 1.0, 12, dtype=np.float32)


def _ask_for_a_shared_shrinking_arena(manifest: dict) -> None:
    manifest["target"]["runtime"].update(shared_arena=True, arena_shrinkage=True, shrink_above_batch=1, cpu_mem_arena=True,
                                         small_call_threads=1, intra_op_threads=2)


def test_a_zoo_session_keeps_its_own_unshrunk_arena_though_the_manifest_asks_otherwise(bundle_factory, tmp_path):
    root = tmp_path / "zoo"
    root.mkdir()
    reseal_edited(bundle_factory("fp32"), root / "m", _ask_for_a_shared_shrinking_arena)
    asked = open_bundle(root / "m").manifest.target.runtime
    assert asked.shared_arena and asked.arena_shrinkage and asked.shrink_above_batch == 1 and asked.small_call_threads == 1  # the bundle does ask
    zoo = Zoo(root, budget_bytes=64 << 20, warm=False)
    try:
        zoo.infer({"x": X}, model="m")
        session = zoo.state.get("m").session
        assert session.settings.shared_arena is False and session.settings.arena_shrinkage is False and session.settings.shrink_above_batch == 0
        assert session.settings.small_call_threads == 0 and session._small_session is None  # one session, one copy of the weights
        assert session.settings.cpu_mem_arena is True  # the rest as the manifest says
        assert session.run_options is None  # no per-call shrinkage reaches onnxruntime
    finally:
        zoo.close()


def test_a_zoo_load_measures_its_peak_at_or_above_its_cost(bundle_factory, tmp_path):
    root = tmp_path / "zoo"
    root.mkdir()
    shutil.copytree(bundle_factory("fp32"), root / "m")
    zoo = Zoo(root, budget_bytes=64 << 20, warm=False)
    try:
        zoo.infer({"x": X}, model="m")
        entry = zoo.state.get("m")
        if process.reset_peak_rss():  # Linux: the load's high-water mark is read
            assert entry.peak_bytes is not None and entry.peak_bytes >= entry.measured_bytes
            assert zoo.describe("m")["peak_bytes"] == entry.peak_bytes
    finally:
        zoo.close()
