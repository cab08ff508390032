"""The CLI's progress bars: a phase "bar | detail" moves one bar and shows its latest detail."""

import io

from rich.console import Console

from geofractal_edge.cli import render


def test_one_bar_per_name_before_the_bar_and_its_latest_detail_shown(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(render, "errors", Console(file=out, width=120, force_terminal=False))
    with render.progress_bar() as update:
        update("export trix int4 | trace", 0, 5)
        update("export trix int4 | quantize", 1, 5)
        update("export trix int4 | verify", 4, 5)
        update("tensorrt: build", 1, 3)
    text = out.getvalue()
    assert "export trix int4 | verify" in text and "4/5" in text and "tensorrt: build" in text
    assert text.count("export trix int4") == 1  # one bar, not one per phase


def test_disabled_yields_no_callback():
    with render.progress_bar(enabled=False) as update:
        assert update is None
