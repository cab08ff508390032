"""The collective as an exportable family: checkpoint or embedded default -> Exportable.

The exported module is the wide lowering of the trained collective (identical towers stacked).
Golden cases are the fixed digits held-out split, labelled with the true classes; int8 activation
ranges are calibrated on training images, never on the held-out ones. A collective of frozen-encoder
streams exports without its encoder (see `exportable_from_text_collective`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geofractal_edge import __version__
from geofractal_edge.artifacts.hashing import file_sha256
from geofractal_edge.models.collective.checkpoint import collective_sha256, load_checkpoint, load_data, save_checkpoint
from geofractal_edge.models.collective.collective import RouterCollective
from geofractal_edge.models.collective.config import CollectiveConfig
from geofractal_edge.models.collective.data import SPLIT_SEED, TEST_FRACTION, DigitsSplit, digits_split
from geofractal_edge.models.collective.lowering import lower
from geofractal_edge.models.collective.spec import CalibratedExportable, collective_spec
from geofractal_edge.models.collective.train import train_collective
from geofractal_edge.models.defaults import Recipe, resolve
from geofractal_edge.models.family import Case, Exportable, Progress

DEFAULT_SEED = 0
CALIBRATION_IMAGES = 256
CALIBRATION_TEXTS = 128


def default_recipe() -> Recipe:
    """What defines the embedded default collective: version, config, seed and the digits split."""
    config = CollectiveConfig.digits()
    return Recipe("collective", {"v": __version__, "config": config.to_dict(), "seed": DEFAULT_SEED, "split": [TEST_FRACTION, SPLIT_SEED]}, seed=DEFAULT_SEED)


def train_default(path: Path, progress: Progress | None = None) -> None:
    """Train the embedded default collective on the digits split from its recipe and write it to `path`."""
    collective, report = train_collective(CollectiveConfig.digits(), seed=DEFAULT_SEED, progress=_steps(progress, "train collective (default)"))
    save_checkpoint(path, collective, report=report)


def default_checkpoint(*, progress: Progress | None = None) -> Path:
    """The embedded default collective: shipped with the package, or trained once and cached (models/defaults.py)."""
    return resolve(default_recipe(), train=train_default, progress=progress)


def load_exportable(model: Path | None, *, progress: Progress | None = None, target=None) -> Exportable:
    """The collective at `model`, or the embedded default; it lowers the same way for every target."""
    path = Path(model) if model is not None else default_checkpoint(progress=progress)
    collective, _ = load_checkpoint(path)
    source = {"checkpoint": "embedded default" if model is None else path.name, "sha256": file_sha256(path)}
    name = "collective-default" if model is None else path.stem
    if any(s.kind == "array" for s in collective.config.streams):
        return exportable_from_arrays(collective, name=name, source=source, data=load_data(path))
    build = exportable_from_text_collective if collective.frozen else exportable_from_collective
    return build(collective, name=name, source=source)


def exportable_from_arrays(collective: RouterCollective, *, name: str, source: dict, data: dict | None) -> CalibratedExportable:
    """A collective trained on the user's arrays: golden case and calibration from the rows its checkpoint stores."""
    from geofractal_edge.errors import GfedgeError

    if data is None:
        raise GfedgeError(f"checkpoint {source.get('checkpoint')} has array streams but no stored held-out rows", "re-train it with `gfedge train collective --data FILE.npz`")
    config = collective.config
    case = Case(name="arrays-held-out", inputs={"features": data["x_test"].numpy().astype(np.float32)}, labels={"class": data["y_test"].numpy().astype(np.int64)})
    calibration = [{"features": data["x_calibration"][i : i + 64].numpy().astype(np.float32)} for i in range(0, len(data["x_calibration"]), 64)]
    # the features input is the streams' arrays concatenated in task.streams order (widths: model.config.streams)
    return _exportable(collective, name=name, source=source, case=case, calibration=calibration, input_dim=config.input_dim, bounded=False)


def exportable_from_collective(collective: RouterCollective, *, name: str, source: dict, split: DigitsSplit | None = None) -> CalibratedExportable:
    """One golden case: the whole held-out split, labelled with its classes."""
    split = split or digits_split()
    config = collective.config
    case = Case(name="digits-held-out", inputs={"features": split.x_test.numpy().astype(np.float32)}, labels={"class": split.y_test.numpy().astype(np.int64)})
    calibration = [{"features": split.x_train[i : i + 64].numpy().astype(np.float32)} for i in range(0, CALIBRATION_IMAGES, 64)]
    return _exportable(collective, name=name, source=source, case=case, calibration=calibration, input_dim=config.input_dim)


def exportable_from_text_collective(collective: RouterCollective, *, name: str, source: dict, split=None) -> CalibratedExportable:
    """A collective of frozen-encoder streams: its graph takes the encoder's sentence embedding.

    The golden case is the held-out pydoc topic split, embedded by the frozen encoder in torch and
    labelled with its topics. The manifest's task names the encoder by the sha256 of its weights
    (`task.encoder`), which is the `model.core_sha256` of the encoder's own bundle
    (`gfedge export --family collective-encoder`): `runtimes.load_chain` refuses any other encoder.
    """
    from geofractal_edge.models.collective.encoder import encoder_source
    from geofractal_edge.models.collective.text_data import TOPICS, topic_split
    from geofractal_edge.models.collective.train import embed_texts

    split = split or topic_split()
    port = next(iter(collective.streams.values())).port
    case = Case(name="topics-held-out", inputs={"sentence_embedding": embed_texts(port, split.test_texts).numpy()}, labels={"class": split.y_test.numpy().astype(np.int64)})
    calibration = [{"sentence_embedding": embed_texts(port, split.train_texts[:CALIBRATION_TEXTS]).numpy()}]
    encoder = {"family": "collective-encoder", "core_sha256": port.sha256, "folder": encoder_source(port.folder), "output": "sentence_embedding"}
    return _exportable(collective, name=name, source=source, case=case, calibration=calibration, input_dim=port.dim,
                       embedding=True, task={"labels": list(TOPICS), "encoder": encoder})


def _exportable(collective: RouterCollective, *, name: str, source: dict, case: Case, calibration: list, input_dim: int,
                embedding: bool = False, task: dict | None = None, bounded: bool = True) -> CalibratedExportable:
    config = collective.config
    spec = collective_spec(input_dim=input_dim, input_scale=config.input_scale, num_classes=config.num_classes, streams=config.num_streams,
                           slots=config.num_slots, routes=config.routes, embedding=embedding, bounded=bounded)
    return CalibratedExportable(
        family="collective",
        name=name,
        module=lower(collective),
        spec=spec,
        config=config.to_dict(),
        cases=[case],
        core_sha256=collective_sha256(collective),
        task={"classes": config.num_classes, "streams": collective.names, "route_outputs": ["routes"], **(task or {})},
        source=source,
        calibration_feeds=calibration,
    )


def _steps(progress: Progress | None, phase: str):
    if progress is None:
        return None
    return lambda step, total, loss: progress(phase, step, total)
