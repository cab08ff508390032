"""`gfedge train ... --steps N` (or --epochs N): the checkpoint's config, and so every manifest made from it, says N.

TriX: tests/unit/models/test_trix_sizes.py (with --context and --held-out).
"""


def test_atlas_steps_are_recorded_in_the_checkpoint(tmp_path):
    from geofractal_edge.models.atlas.cli_support import train_library_file
    from geofractal_edge.models.atlas.family import load_exportable

    out = tmp_path / "atlas.safetensors"
    report = train_library_file(texts={"a": "hello world, hello atlas"}, out=out, steps=3, seed=0)
    assert report["steps"] == 3
    assert load_exportable(out).config["steps"] == 3  # what the writer puts in the manifest


def test_collective_epochs_are_recorded_in_the_checkpoint(tmp_path):
    from geofractal_edge.models.collective import load_checkpoint
    from geofractal_edge.models.collective.cli_support import train_collective_file

    out = tmp_path / "collective.safetensors"
    report = train_collective_file(out=out, preset="tiny", epochs=1, seed=0)
    assert report["epochs"] == 1 and load_checkpoint(out)[0].config.epochs == 1
