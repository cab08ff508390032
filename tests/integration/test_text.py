"""Text out of character bundles, torch-free: Atlas recalls a key's text, TriX writes on from a prompt."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.errors import InputError
from geofractal_edge.runtimes import load
from geofractal_edge.runtimes.text import coordinates, generate, recall
from tests.conftest import ROOT
from tests.integration.test_device_side_without_torch import BLOCK_TORCH


def _cli_without_torch(*args: str) -> subprocess.CompletedProcess:
    script = BLOCK_TORCH + textwrap.dedent(f"""
        sys.argv = ["gfedge", *{list(map(str, args))!r}]
        from geofractal_edge.cli.main import main
        main()
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_coordinates_are_the_training_coordinates():
    pytest.importorskip("torch")
    from geofractal_edge.models.atlas.data import coordinates as torch_coordinates

    for n in (1, 2, 7, 300, 20_000):
        assert np.array_equal(coordinates(n), torch_coordinates(n).numpy()), n


def test_atlas_recall_prints_the_text_at_the_manifests_char_accuracy(bundle_factory):
    bundle = bundle_factory("fp32")
    manifest = open_bundle(bundle).manifest
    for key in manifest.keys.names:
        result = _cli_without_torch("run", bundle, "--key", key, "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["characters"] > 0 and len(report["text"]) == report["characters"]
        assert report["char_accuracy"] == pytest.approx(report["char_accuracy_at_export"], abs=1e-9), report


def test_recall_in_chunks_equals_one_call(bundle_factory):
    """Past the declared maximum the coordinates go in chunks; the function is pointwise, so nothing changes."""
    runner = load(bundle_factory("fp32"))
    n = runner.manifest.graph.dim_ranges["n"].max + 37
    whole = recall(runner, length=n)
    assert len(whole) == n
    x = coordinates(n)
    head = runner.run({"x": x[:100]})["logits"].argmax(-1)
    assert whole[:100] == "".join(runner.manifest.task.vocab[i] for i in head)


def test_trix_generate_streams_torch_free_and_padding_changes_nothing(trix_bundle_factory):
    bundle = trix_bundle_factory("fp32")
    result = _cli_without_torch("generate", bundle, "--prompt", "def ", "--max-new", "40", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("def ") and len(result.stdout.rstrip("\n")) == 44
    runner = load(bundle)
    context = runner.manifest.graph.inputs[0].shape[1]
    # Greedy continuation from a padded window equals the argmax of the full, unpadded window.
    text = "class Foo:\n    def __init__(self):\n        self.x = 1\n" * 3
    vocab = runner.manifest.task.vocab
    window = np.array([[vocab.index(c) for c in text[-context:]]], np.int64)
    full = vocab[int(runner.run({"tokens": window})["logits"][0, -1].argmax())]
    assert next(generate(runner, text, max_new=1, temperature=0)) == full
    short = text[:10]
    padded = np.zeros((1, context), np.int64)
    padded[0, :10] = [vocab.index(c) for c in short]
    other = padded.copy()
    other[0, 10:] = 1  # different padding: the 10th position's logits must not move
    a, b = (runner.run({"tokens": t})["logits"][0, 9] for t in (padded, other))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_generate_refuses_what_it_cannot_write(trix_bundle_factory, bundle_factory):
    runner = load(trix_bundle_factory("fp32"))
    with pytest.raises(InputError, match="never saw"):
        next(generate(runner, "\x07"))
    with pytest.raises(InputError, match="not a character LM"):
        next(generate(load(bundle_factory("fp32")), "a"))
