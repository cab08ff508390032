"""Fill a staging directory with a bundle's files and return the manifest data for them.

Runs torch once per golden case to record the reference outputs. The caller seals the manifest and
renames the directory into place (see geofractal_edge.pipeline).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import onnx

from geofractal_edge.artifacts import GoldenCase, Key, atomic, write_key
from geofractal_edge.artifacts.golden import write_case
from geofractal_edge.artifacts.manifest import FORMAT, FORMAT_VERSION
from geofractal_edge.backends.lazy import require
from geofractal_edge.export.builder_settings import builder_settings
from geofractal_edge.export.quantize import QuantConfig
from geofractal_edge.export.toolchain import versions
from geofractal_edge.models.family import Exportable
from geofractal_edge.targets import TargetProfile

MODEL_FILE = "model.onnx"


def write_files(staging: Path, exportable: Exportable, model: onnx.ModelProto, *, profile: TargetProfile, config: QuantConfig,
                golden_cases: int | None = None) -> dict:
    staging = Path(staging)
    (staging / MODEL_FILE).write_bytes(model.SerializeToString())  # self-contained: every weight is inside it
    key_names = _write_keys(staging / "keys", exportable)
    golden = _write_golden(staging / "golden", exportable, limit=golden_cases)
    for rel, data in exportable.files.items():
        atomic.write_bytes(staging / rel, data)
    spec = exportable.spec
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "family": exportable.family,
        "model": {"name": exportable.name, "config": exportable.config, "core_sha256": exportable.core_sha256, "source": exportable.source},
        "target": profile.to_dict(),
        "precision": config.precision,
        "quantization": config.to_dict(),
        "weight_dialect": profile.weight_dialect,
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "toolchain": versions(),
        "graph": {
            "file": MODEL_FILE,
            "inputs": [t.to_dict() for t in spec.inputs],
            "outputs": [t.to_dict() for t in spec.outputs],
            "dim_ranges": {k: vars(v) for k, v in spec.dim_ranges.items()},
        },
        "keys": _keys_section(exportable, key_names),
        "golden": {"files": golden, "cases": len(golden)},
        "task": {"metric": spec.task_metric, **exportable.task},
        "family_info": exportable.info,
        "tolerance_overrides": spec.tolerance_overrides,
        "ternary": None,  # format 1 kept TriX codes in a file of their own; they are in model.onnx now
        "tensorrt": builder_settings(profile, spec, precision=config.precision),
        "parity": None,
        "tokenizer": exportable.tokenizer,
    }


def _write_keys(folder: Path, exportable: Exportable) -> list[str]:
    for name, vector in exportable.keys.items():
        write_key(folder / f"{name}.safetensors", Key(name=name, vector=vector, core_sha256=exportable.core_sha256, family=exportable.family,
                                                      length=exportable.key_lengths.get(name)))
    return list(exportable.keys)


def _keys_section(exportable: Exportable, names: list[str]) -> dict | None:
    if exportable.spec.key_input is None:
        return None
    dim = int(exportable.spec.input(exportable.spec.key_input).shape[0])
    return {"dir": "keys", "dim": dim, "names": names, "default": names[0] if names else None}


def _write_golden(folder: Path, exportable: Exportable, *, limit: int | None = None) -> list[str]:
    """The first `limit` cases (all by default) with torch's outputs; calibration still sees every case."""
    torch = require("torch")
    spec = exportable.spec
    files = []
    for index, case in enumerate(exportable.cases[:limit]):
        feeds = exportable.feeds(case)
        with torch.no_grad():
            out = exportable.module(*(torch.from_numpy(feeds[t.name]) for t in spec.inputs))
        out = out if isinstance(out, (tuple, list)) else (out,)
        outputs = {t.name: o.detach().cpu().numpy().astype(np.float32) for t, o in zip(spec.outputs, out)}
        rel = f"golden/case_{index:03d}.safetensors"
        write_case(folder.parent / rel, GoldenCase(name=case.name, inputs=case.inputs, outputs=outputs, labels=case.labels, key=case.key))
        files.append(rel)
    return files
