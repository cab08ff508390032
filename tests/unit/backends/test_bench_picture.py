"""`gfedge bench --plot`: the picture of a report (latency per batch, memory, ratios to the first) and the name checked first."""

from __future__ import annotations

import pytest

from geofractal_edge.backends.bench import BatchTiming, BenchReport, BundleBench
from geofractal_edge.cli.plots import bench_picture, check_picture_path
from geofractal_edge.errors import GfedgeError

MIB = 1 << 20
MACHINE = {"cpu": "a CPU", "cores": 2, "onnxruntime": "1.0", "load_average_start": [0.5, 0.5, 0.5], "load_average_end": [0.7, 0.6, 0.5]}


def _subject(label: str, scale: float, *, batches=(1, 16), anon=True) -> BundleBench:
    return BundleBench(
        label=label, path=f"/b/{label}", family="atlas", precision=label, target="host-cpu", settings={}, weight_bytes=int(64 * MIB * scale),
        open_seconds=0.01, load_seconds=0.1, rss_before_bytes=100 * MIB, rss_load_bytes=int(70 * MIB * scale), rss_warm_bytes=int(72 * MIB * scale),
        rss_peak_bytes=int(90 * MIB * scale), anon_load_bytes=int(66 * MIB * scale) if anon else None, anon_warm_bytes=int(67 * MIB * scale) if anon else None,
        heap_load_bytes=None, heap_warm_bytes=None,
        batches=tuple(BatchTiming(batch=b, runs=5, p50_us=100.0 * b * scale, p99_us=130.0 * b * scale, items_per_s=1e4 / scale, bare_p50_us=99.0 * b * scale,
                                  overhead=0.01) for b in batches),
        reload_seconds=0.05, model_load_bytes=int(58 * MIB * scale), model_warm_bytes=int(60 * MIB * scale),
    )


def _report(*subjects) -> BenchReport:
    return BenchReport(subjects=subjects, runs=5, machine=MACHINE)


def test_the_picture_shows_every_bundle_with_its_ratios_to_the_first(tmp_path):
    path = tmp_path / "bench.svg"  # svg: the text can be read back
    bench_picture(_report(_subject("fp32", 1.0), _subject("int8", 0.25), _subject("int4", 0.5, batches=(1,), anon=False)), path)
    text = path.read_text()
    for words in ("fp32", "int8", "int4", "batch 1", "batch 16", "x0.25", "x0.50", "after warm-up", "private", "peak", "load 0.50 -&gt; 0.70"):
        assert words in text, words
    assert "x1.00" not in text  # the first bundle is the reference: no ratio drawn on it


def test_a_png_is_a_png(tmp_path):
    path = tmp_path / "bench.png"
    bench_picture(_report(_subject("fp32", 1.0), _subject("int8", 0.3)), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name, words", [("bench.txt", "neither .png nor .svg"), ("missing/bench.png", "does not exist"), ("folder.png", "is a folder")])
def test_a_bad_picture_name_is_refused_in_one_line(tmp_path, name, words):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(GfedgeError, match=words) as raised:
        check_picture_path(tmp_path / name)
    assert "\n" not in raised.value.problem and raised.value.fix


def test_a_picture_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    from geofractal_edge.cli import plots

    def refuse(path, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(plots.atomic, "write_bytes", refuse)
    with pytest.raises(GfedgeError, match="could not be written .Permission denied") as raised:
        bench_picture(_report(_subject("fp32", 1.0), _subject("int8", 0.3)), tmp_path / "bench.png")
    assert raised.value.fix and not (tmp_path / "bench.png").exists()
