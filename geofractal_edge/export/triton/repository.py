"""Write the repository: one folder per model, an ensemble folder when chained, atomically."""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from geofractal_edge.artifacts import Bundle, atomic, open_bundle
from geofractal_edge.artifacts.links import check_encoder
from geofractal_edge.artifacts.manifest import MANIFEST
from geofractal_edge.errors import GfedgeError
from geofractal_edge.export.triton.config import TritonModel, comments, ensemble_config, to_text, triton_model
from geofractal_edge.export.triton.served import batch_dim, served_graph

VERSION = "1"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")  # a Triton model name is its folder's name


@dataclass(frozen=True)
class TritonRepository:
    path: Path
    models: list[str]
    ensemble: str | None


def write_served(bundle: Bundle | Path | str, out: Path, *, name: str | None = None, encoder: Bundle | Path | str | None = None, overwrite: bool = False) -> TritonRepository:
    """What `gfedge export --format triton` writes: `bundle` as one model called `name`; with `encoder`,
    the encoder and `bundle` as two models and an ensemble called `name` taking the encoder's inputs."""
    if encoder is None:
        return write_repository([bundle], out, names=[name] if name else None, overwrite=overwrite)
    bundle, encoder = _open(bundle), _open(encoder)
    check_encoder(bundle, encoder)
    return write_repository([encoder, bundle], out, ensemble=name or f"{default_name(bundle)}_ensemble", overwrite=overwrite)


def write_repository(
    bundles: Sequence[Bundle | Path | str], out: Path, *, names: Sequence[str] | None = None, ensemble: str | None = None,
    instances: int = 1, max_queue_delay_us: int = 100, overwrite: bool = False,
) -> TritonRepository:
    """Write the repository atomically; with `ensemble`, also a model of that name chaining the bundles in order."""
    opened = [_open(b) for b in bundles]
    if not opened:
        raise GfedgeError("no bundles to put in the Triton repository", "pass at least one bundle directory")
    names = _names(opened, names, ensemble)
    if ensemble:
        _check_feeders(opened)
    served = [served_graph(b) for b in opened]
    # Triton cannot chain a model it batches with one it does not: in such an ensemble every stage
    # takes full shapes (batch axis included) and none is batched by Triton.
    batched = not ensemble or len({batch_dim(s) for s in served}) == 1
    models = [triton_model(b, s, name=n, instances=instances, max_queue_delay_us=max_queue_delay_us, batched=batched)
              for b, s, n in zip(opened, served, names, strict=True)]
    chain = ensemble_config(ensemble, models) if ensemble else None
    with atomic.directory(Path(out), overwrite=overwrite) as staging:
        for model in models:
            _write_model(staging / model.name, model)
        if chain is not None:
            (staging / ensemble / VERSION).mkdir(parents=True)
            (staging / ensemble / "config.pbtxt").write_text(to_text(chain, ["gfedge: ensemble of " + " -> ".join(m.name for m in models)]), encoding="utf-8")
    return TritonRepository(path=Path(out), models=[m.name for m in models], ensemble=ensemble)


def _write_model(folder: Path, model: TritonModel) -> None:
    """config.pbtxt, 1/model.onnx, the bundle's keys under keys/ and its manifest (Triton ignores both)."""
    bundle = model.bundle
    (folder / VERSION).mkdir(parents=True)
    (folder / VERSION / "model.onnx").write_bytes(model.served.onnx)
    for key in bundle.key_names():
        (folder / "keys").mkdir(exist_ok=True)
        shutil.copyfile(bundle.file(bundle.manifest.keys.file(key)), folder / "keys" / f"{key}.safetensors")
    shutil.copyfile(bundle.path / MANIFEST, folder / "gfedge-manifest.json")
    (folder / "config.pbtxt").write_text(to_text(model.config, comments(model)), encoding="utf-8")


def _names(opened: Sequence[Bundle], names: Sequence[str] | None, ensemble: str | None) -> list[str]:
    """The models' names (default: `default_name`, made unique), each checked, none repeated, none the ensemble's."""
    names = list(names) if names else _unique([default_name(b) for b in opened])
    everyone = names + ([ensemble] if ensemble else [])
    for name in everyone:
        check_name(name)
    if len(set(everyone)) != len(everyone) or len(names) != len(opened):
        raise GfedgeError(f"model names {everyone} for {len(opened)} bundles", "give every bundle and the ensemble a name of its own")
    return names


def _check_feeders(opened: Sequence[Bundle]) -> None:
    """In a chain, a stage that names its encoder and is fed by an earlier stage must be fed by that encoder."""
    for index, bundle in enumerate(opened):
        link = bundle.manifest.task.encoder
        feeder = next((b for b in reversed(opened[:index]) if link and link.output in b.manifest.graph.output_names), None)
        if feeder is not None:
            check_encoder(bundle, feeder)


def default_name(bundle: Bundle) -> str:
    m = bundle.manifest
    return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{m.family}_{m.model.name}_{m.target.name}_{m.precision}")


def check_name(name: str) -> str:
    """A Triton model name: a folder name of letters, digits, `_ . -`, not starting with `.` or `-`."""
    if not _NAME.fullmatch(name or ""):
        raise GfedgeError(f"'{str(name)[:60]}' cannot name a Triton model", "use letters, digits, _ . - (up to 128), starting with a letter, digit or _")
    return name


def _open(bundle: Bundle | Path | str) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else open_bundle(Path(bundle))


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out
