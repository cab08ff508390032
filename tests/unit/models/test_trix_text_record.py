"""The training text a TriX checkpoint records, and where export takes golden cases and calibration from."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.trix.checkpoint import MAX_TEXT_BYTES, TextRecord, load_with_text, save_checkpoint
from geofractal_edge.models.trix.config import TrixConfig
from geofractal_edge.models.trix.data import build_vocab, corpus, split, text_sha256
from geofractal_edge.models.trix.family import load_exportable
from geofractal_edge.models.trix.lm import TrixLM

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


def _model(text: str, **changes) -> TrixLM:
    torch.manual_seed(0)
    return TrixLM(dataclasses.replace(TrixConfig.tiny(build_vocab(text)), **changes)).eval()


def test_the_record_is_the_text_hash_and_the_head_of_its_held_out_split(tmp_path):
    model = _model(TEXT)
    save_checkpoint(tmp_path / "m.safetensors", model, text=TEXT)
    _, record = load_with_text(tmp_path / "m.safetensors")
    _, held = split(TEXT, model.config.held_out_fraction)
    assert record.sha256 == text_sha256(TEXT) and record.chars == len(TEXT)
    assert held.startswith(record.held_out) and len(record.held_out) == min(64, (len(held) - 1) // 16) * 16 + 1  # whole windows


def test_the_record_stays_bounded_for_a_long_context_and_wide_characters():
    text = "αβγδεζηθ ικλμ" * 20000  # 2-byte characters
    record = TextRecord.of(text, TrixConfig(vocab=build_vocab(text), context=512))
    assert len(record.held_out.encode()) <= MAX_TEXT_BYTES and (len(record.held_out) - 1) % 512 == 0


def test_export_measures_the_recorded_text_and_old_checkpoints_use_pydoc(tmp_path):
    model = _model(TEXT)
    save_checkpoint(tmp_path / "user.safetensors", model, text=TEXT)
    exportable = load_exportable(tmp_path / "user.safetensors")
    _, held = split(TEXT, model.config.held_out_fraction)
    first = "".join(model.config.vocab[int(i)] for i in exportable.cases[0].inputs["tokens"][0])
    assert held.startswith(first) and exportable.source["text_sha256"] == text_sha256(TEXT)

    old = _model(corpus())
    save_checkpoint(tmp_path / "old.safetensors", old)  # no text record: written as before
    assert load_with_text(tmp_path / "old.safetensors")[1] is None
    assert "text_sha256" not in load_exportable(tmp_path / "old.safetensors").source


def test_a_calibration_text_replaces_the_recorded_one_and_is_checked_in_one_line(tmp_path):
    save_checkpoint(tmp_path / "m.safetensors", _model(TEXT), text=TEXT)
    (tmp_path / "cal.txt").write_text("a lazy dog jumps over the brown fox. " * 10, encoding="utf-8")
    exportable = load_exportable(tmp_path / "m.safetensors", calibration=tmp_path / "cal.txt")
    assert exportable.source["calibration"]["file"] == "cal.txt"
    assert exportable.calibration()[0]["tokens"].shape == (16, 16)
    (tmp_path / "bad.txt").write_text("PYTHON!" * 10, encoding="utf-8")
    with pytest.raises(GfedgeError, match="bad.txt has characters outside") as err:
        load_exportable(tmp_path / "m.safetensors", calibration=tmp_path / "bad.txt")
    assert "\n" not in str(err.value)
