"""The encoder bundle is usable from text on the device: its own tokenizer, no torch, no transformers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from geofractal_edge.artifacts import open_bundle
from tests.conftest import ROOT

BLOCK = textwrap.dedent("""
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers"):
                raise ImportError(f"{name} is blocked: this is the device side")
    sys.meta_path.insert(0, Block())
""")

TEXTS = ["The quick brown fox jumps over the lazy dog.",
         "A generator function returns an iterator; each yield suspends it.",
         "Unicode: naïve café, ünïcödé — and some [brackets] (too)!"]


def _run_blocked(*args: str) -> subprocess.CompletedProcess:
    script = BLOCK + textwrap.dedent(f"""
        sys.argv = ["gfedge", *{list(map(str, args))!r}]
        from geofractal_edge.cli.main import main
        main()
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_gfedge_run_text_equals_the_torch_encoder(encoder_bundle_factory, minilm_port, tmp_path):
    bundle = encoder_bundle_factory("fp32")
    out = tmp_path / "emb.npz"
    args = ["run", bundle, "--json", "--output", out]
    for text in TEXTS:
        args += ["--text", text]
    result = _run_blocked(*args)
    assert result.returncode == 0, result.stderr
    got = np.load(out)["sentence_embedding"].astype(np.float64)
    want = minilm_port.encode(TEXTS).numpy().astype(np.float64)
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999, cosine


def test_bundle_tokenizer_gives_the_transformers_token_ids(encoder_bundle_factory, minilm_port):
    from geofractal_edge.runtimes.tokenize import TextTokenizer

    ours = TextTokenizer(open_bundle(encoder_bundle_factory("fp32")))(TEXTS)
    theirs = minilm_port.preprocess(TEXTS)
    np.testing.assert_array_equal(ours["input_ids"], theirs["input_ids"].numpy())
    np.testing.assert_array_equal(ours["attention_mask"], theirs["attention_mask"].numpy())
    long = TextTokenizer(open_bundle(encoder_bundle_factory("fp32")))(["word " * 1000])
    assert long["input_ids"].shape == (1, 256)  # truncated to the graph's declared maximum


def test_encoder_manifest_has_no_build_host_paths(encoder_bundle_factory):
    text = (encoder_bundle_factory("fp32") / "manifest.json").read_text()
    assert str(ROOT) not in text and "site-packages" not in text and '"/' not in text


def test_a_bundle_without_tokenizer_says_how_to_pass_tokens(bundle_factory):
    from geofractal_edge.errors import BundleError
    from geofractal_edge.runtimes.tokenize import TextTokenizer

    with pytest.raises(BundleError, match="ships no tokenizer"):
        TextTokenizer(open_bundle(bundle_factory("fp32")))
