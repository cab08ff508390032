"""File-level training entry point behind `gfedge train collective` (one process or torchrun)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.collective.checkpoint import save_checkpoint
from geofractal_edge.models.collective.config import CollectiveConfig
from geofractal_edge.models.collective.train import train_collective, train_text_collective

PRESETS = {"digits": CollectiveConfig.digits, "tiny": CollectiveConfig.tiny, "text": CollectiveConfig.text}  # text: pydoc topics over MiniLM


def train_collective_file(*, out: Path, preset: str = "digits", epochs: int | None = None, seed: int = 0, processes: int = 1, progress=None,
                          data: Path | None = None) -> dict:
    """Train on the digits split (the text preset: the pydoc topic task over the frozen MiniLM; `data`: the
    user's .npz, one array stream per stream_NAME) and write a checkpoint; with `processes` > 1, under torchrun (DDP, gloo)."""
    if data is not None:
        if preset != "digits":
            raise GfedgeError(f"--data and --preset {preset} both name the training data", "drop one of them")
        return _train_arrays(out=Path(out), data=Path(data), epochs=epochs, seed=seed, processes=processes, progress=progress)
    if preset not in PRESETS:
        raise GfedgeError(f"unknown collective preset '{preset}'", f"use one of: {', '.join(PRESETS)}")
    if processes < 1:
        raise GfedgeError(f"--processes must be at least 1, got {processes}", "pass e.g. --processes 2")
    if preset == "text" and processes > 1:
        raise GfedgeError("the text preset trains in one process (its encoder is frozen: only the small heads train)", "drop --processes")
    # epochs go into the config, so the checkpoint and every bundle made from it record the real recipe
    config = PRESETS[preset]() if epochs is None else PRESETS[preset]().replace(epochs=epochs)
    if preset == "text":
        collective, report = train_text_collective(config, epochs=epochs, seed=seed, progress=_bar(progress, "train collective (text)"))
        save_checkpoint(Path(out), collective, report=report)
    elif processes > 1:
        report = run_torchrun(out=Path(out), preset=preset, epochs=epochs, seed=seed, processes=processes)
    else:
        collective, report = train_collective(config, epochs=epochs, seed=seed, progress=_bar(progress, f"train collective ({preset})"))
        save_checkpoint(Path(out), collective, report=report)
    return {**{k: report[k] for k in ("accuracy", "history", "epochs", "steps", "seconds", "world_size")}, "out": str(out)}


def _train_arrays(*, out: Path, data: Path, epochs: int | None, seed: int, processes: int, progress) -> dict:
    """One array stream per stream_NAME of `data`; the checkpoint stores the held-out rows export measures on."""
    from geofractal_edge.models.collective.data import load_arrays

    if processes > 1:
        raise GfedgeError("--data trains in one process", "drop --processes")
    if not data.is_file():
        raise GfedgeError(f"data file {data} does not exist", "check the --data path")
    arrays = load_arrays(data)
    config = CollectiveConfig.arrays(arrays.widths, num_classes=arrays.num_classes)
    config = config if epochs is None else config.replace(epochs=epochs)
    collective, report = train_collective(config, split=arrays.split, seed=seed, progress=_bar(progress, "train collective (arrays)"))
    save_checkpoint(out, collective, report=report, data=arrays.split)
    return {**{k: report[k] for k in ("accuracy", "history", "epochs", "steps", "seconds", "world_size")}, "streams": arrays.widths, "out": str(out)}


def run_torchrun(*, out: Path, preset: str, epochs: int | None, seed: int, processes: int, timeout: float | None = None) -> dict:
    """`torchrun --standalone --nproc_per_node N -m geofractal_edge.models.collective.train ...`; the report rank 0 wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp, "report.json")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   "-m", "geofractal_edge.models.collective.train", "--out", str(out), "--config", preset, "--seed", str(seed), "--report", str(report_path)]
        if epochs is not None:
            command += ["--epochs", str(epochs)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not report_path.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise GfedgeError(f"torchrun training failed (exit {done.returncode}): {' | '.join(tail)}", "run it with --processes 1 to see the error, or check that gloo can open a local port")
        return json.loads(report_path.read_text(encoding="utf-8"))


def _bar(progress, phase: str):
    return None if progress is None else (lambda step, total, loss: progress(phase, step, total))
