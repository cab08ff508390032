"""Atlas: training reaches high accuracy, key-only training freezes the core, checkpoints round-trip.

Uses the tiny config on two short real texts (pydoc topics), trained once per module (~ a few s).
"""

from __future__ import annotations

import json

import pytest
import torch

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.atlas import (
    AtlasConfig,
    AtlasCore,
    build_vocab,
    char_accuracy,
    coordinates,
    core_sha256,
    decode,
    default_texts,
    encode,
    load_checkpoint,
    save_checkpoint,
    train_key,
    train_library,
)

TINY_CHARS = 300


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    """The first two default texts cut to 300 characters (the same pair tests/conftest.py uses)."""
    return {name: text[:TINY_CHARS] for name, text in list(default_texts().items())[:2]}


@pytest.fixture(scope="module")
def trained(texts):
    library, report = train_library(texts, config=AtlasConfig.tiny(build_vocab(texts.values())), seed=0)
    return library, report


def test_default_texts_are_deterministic_real_text() -> None:
    first, second = default_texts(), default_texts()
    assert first == second
    assert len(first) == 8
    assert all(2000 <= len(text) <= 2400 for text in first.values())
    assert list(first) == sorted(first)


def test_encode_decode_and_coordinates() -> None:
    vocab = build_vocab(["hello world"])
    assert vocab == " dehlorw"
    assert decode(encode("hello", vocab).tolist(), vocab) == "hello"
    with pytest.raises(GfedgeError):
        encode("hello!", vocab)
    x = coordinates(5)
    assert x.dtype == torch.float32
    assert x.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_config_round_trips_through_json() -> None:
    config = AtlasConfig.default("abc“”")
    again = AtlasConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(GfedgeError):
        AtlasConfig.from_dict({**config.to_dict(), "no_such_field": 1})


def test_tiny_library_memorises_two_texts(trained, texts) -> None:
    # Wall time is not asserted: this runs on shared CI cores. The tiny config is sized for a few
    # seconds on 2 idle cores; report["seconds"] shows it in a failure message.
    library, report = trained
    assert report["min_accuracy"] >= 0.99, report
    assert set(report["accuracy"]) == set(texts)
    assert report["steps"] == library.config.steps
    assert not library.training


def test_eval_mode_is_deterministic_and_sparse_updates_only_in_training(texts) -> None:
    config = AtlasConfig.tiny(build_vocab(texts.values()))
    config = AtlasConfig.from_dict({**config.to_dict(), "sparse_update_prob": 0.5})
    torch.manual_seed(0)
    core = AtlasCore(config)
    x, key = coordinates(64), torch.randn(config.key_dim)
    core.eval()
    exact = core.forward_batch(x, key.expand(64, -1), sparse_update_prob=0.0)
    assert torch.equal(core(x, key), core(x, key))
    assert torch.allclose(core(x, key), exact, atol=1e-6)
    core.train()
    noisy_a, noisy_b = core(x, key), core(x, key)
    assert not torch.equal(noisy_a, noisy_b)
    assert not torch.allclose(noisy_a, exact, atol=1e-4)


def test_training_is_deterministic_under_a_seed(texts) -> None:
    config = AtlasConfig.tiny(build_vocab(texts.values()))
    first, _ = train_library(texts, config=config, steps=5, seed=3)
    second, _ = train_library(texts, config=config, steps=5, seed=3)
    assert torch.equal(first.keys, second.keys)
    assert core_sha256(first.core) == core_sha256(second.core)


def test_key_only_training_leaves_core_unchanged(trained, texts) -> None:
    library, _ = trained
    core = library.core
    before = {name: value.clone() for name, value in core.state_dict().items()}
    sha_before = core_sha256(core)
    new_text = next(iter(texts.values()))[::-1][:120]  # unseen order, characters in the vocabulary
    calls = []
    key, accuracy = train_key(core, new_text, steps=60, progress=lambda step, total, loss: calls.append(step))
    assert key.shape == (library.config.key_dim,)
    assert not key.requires_grad
    assert calls == list(range(1, 61))
    assert all(not p.requires_grad for p in core.parameters())
    assert all(torch.equal(before[name], value) for name, value in core.state_dict().items())
    assert core_sha256(core) == sha_before
    assert accuracy == pytest.approx(char_accuracy(core, new_text, key, library.config.vocab))


def test_checkpoint_round_trip_reproduces_logits_exactly(trained, texts, tmp_path) -> None:
    library, _ = trained
    path = tmp_path / "atlas.safetensors"
    save_checkpoint(path, library, texts)
    loaded, loaded_texts = load_checkpoint(path)
    assert loaded_texts == texts
    assert loaded.names == library.names
    assert loaded.config == library.config
    assert core_sha256(loaded.core) == core_sha256(library.core)
    with torch.no_grad():
        for i, name in enumerate(library.names):
            x = coordinates(len(texts[name]))
            assert torch.equal(loaded.core(x, loaded.keys[i]), library.core(x, library.keys[i]))


def test_loading_a_missing_or_corrupt_checkpoint_is_a_user_error(tmp_path) -> None:
    with pytest.raises(GfedgeError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(GfedgeError):
        load_checkpoint(bad)
    bad.write_bytes(b"")
    with pytest.raises(GfedgeError):
        load_checkpoint(bad)


def test_a_foreign_safetensors_file_is_refused(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "something-else"})
    with pytest.raises(GfedgeError, match="not an Atlas checkpoint"):
        load_checkpoint(path)


def test_core_exports_to_onnx_with_a_dynamic_length(trained, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    library, _ = trained
    core, key = library.core.eval(), library.keys[0].detach()
    path = tmp_path / "core.onnx"
    torch.onnx.export(core, (coordinates(300), key), str(path), dynamo=False, input_names=["x", "key"], output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    x = coordinates(77)
    (logits,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy(), "key": key.numpy()})
    with torch.no_grad():
        expected = core(x, key).numpy()
    assert logits.shape == expected.shape
    assert abs(logits - expected).max() < 1e-4
