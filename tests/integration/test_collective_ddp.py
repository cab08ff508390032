"""Two-process torchrun training (DDP, gloo on CPU) lands in the same accuracy band as one process."""

from __future__ import annotations

import pytest

from geofractal_edge.models.collective import CollectiveConfig, load_checkpoint, train_collective
from geofractal_edge.models.collective.cli_support import run_torchrun

EPOCHS = 8


@pytest.mark.slow
def test_torchrun_two_processes_matches_one_process(tmp_path) -> None:
    out = tmp_path / "ddp.safetensors"
    ddp = run_torchrun(out=out, preset="tiny", epochs=EPOCHS, seed=0, processes=2, timeout=240)
    _, single = train_collective(CollectiveConfig.tiny(), epochs=EPOCHS, seed=0)
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    print(f"torchrun x2: {ddp['accuracy']:.4f} in {ddp['seconds']} s; one process: {single['accuracy']:.4f} in {single['seconds']} s")
    assert set(ddp) == set(single)  # one results format
    assert ddp["steps"] == single["steps"]  # same global batches
    assert min(ddp["accuracy"], single["accuracy"]) >= 0.93, (ddp["accuracy"], single["accuracy"])
    assert abs(ddp["accuracy"] - single["accuracy"]) <= 0.02, (ddp["accuracy"], single["accuracy"])
    collective, report = load_checkpoint(out)  # rank 0 wrote a complete checkpoint
    assert report["world_size"] == 2 and collective.config == CollectiveConfig.tiny()
