"""TriX on a user's text: --context and --held-out reach the config, and a text too short for them is refused before training."""

import pytest

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.trix.data import check_sizes, corpus
from tests.conftest import gfedge

TEXT = corpus()[:3000]


def test_a_short_held_out_part_names_the_context_and_fraction_that_fit():
    check_sizes(TEXT, context=64, held_out_fraction=0.1)  # 300 held-out characters: enough
    with pytest.raises(GfedgeError) as err:
        check_sizes(TEXT, context=400, held_out_fraction=0.1)
    line = err.value.one_line()
    assert "held-out part of this 3,000-character text has 300 characters" in line and "needs 401" in line
    assert "--context 299" in line and "--held-out 0.14" in line and "\n" not in line
    check_sizes(TEXT, context=299, held_out_fraction=0.1)
    check_sizes(TEXT, context=400, held_out_fraction=0.14)  # both fixes it names do fit


def test_train_lm_refuses_before_the_first_step():
    from geofractal_edge.models.trix.config import TrixConfig
    from geofractal_edge.models.trix.data import build_vocab
    from geofractal_edge.models.trix.train import train_lm

    steps = []
    config = TrixConfig(vocab=build_vocab(TEXT), context=400, steps=5)
    with pytest.raises(GfedgeError, match="too few for a context of 400"):
        train_lm(config, text=TEXT, progress=lambda step, total, loss: steps.append(step))
    assert steps == []


def test_context_and_held_out_are_the_checkpoints_recipe(tmp_path):
    from geofractal_edge.models.trix.checkpoint import load_checkpoint
    from geofractal_edge.models.trix.cli_support import train_trix_file

    out = tmp_path / "trix.safetensors"
    report = train_trix_file(text=TEXT, out=out, tiles=None, hierarchical=False, dense=False, steps=2, seed=0, context=32, held_out=0.2)
    config = load_checkpoint(out).config
    assert (config.context, config.held_out_fraction, config.steps) == (32, 0.2, 2) and report["held_out_chars"] == 600


def test_cli_refuses_a_short_text_in_one_line_before_training(tmp_path):
    (tmp_path / "short.txt").write_text(TEXT[:640], encoding="utf-8")
    result = gfedge("train", "trix", "--text", tmp_path / "short.txt", "--out", tmp_path / "m.safetensors")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "too few for a context of 64" in lines[0] and "--context 63" in lines[0], result.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_gather_by_route_declares_a_batch_range_its_tile_gathers_fit():
    """Above GATHER_BYTES per tile gather the declared batch shrinks: export checks the graph at the max."""
    from geofractal_edge.models.trix.spec import GATHER_BYTES, MAX_BATCH, max_batch, trix_spec

    wide = dict(context=64, d_model=256, d_hidden=256)  # 16 MiB of float32 tile per window
    assert max_batch(**wide, lowering="gather_by_route") == GATHER_BYTES // (64 * 256 * 256 * 4) == 64
    assert max_batch(**wide, lowering="compute_all_select") == MAX_BATCH
    assert max_batch(context=64, d_model=128, d_hidden=128, lowering="gather_by_route") == MAX_BATCH  # the default's size
    assert max_batch(context=4096, d_model=1024, d_hidden=1024, lowering="gather_by_route") == 1  # never below one window
    narrow = trix_spec(vocab_size=10, context=64, n_layers=2, batch_max=8).dim_ranges["batch"]
    assert (narrow.min, narrow.opt, narrow.max) == (1, 8, 8)
