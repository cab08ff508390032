"""The bundle manifest: what a device needs to know before it loads anything.

A manifest is JSON. `FORMAT_VERSION` changes when a reader of the old version could misread a new
bundle; the runtime refuses versions it does not know, with the fix. Fields (format 1):

  format, format_version, created, family, model {name, config, core_sha256, source},
  target {the full profile}, precision, quantization {scheme config}, opset,
  toolchain {package versions}, graph {file, inputs, outputs, dim_ranges},
  keys {dir, dim, names, default}, golden {files, cases}, task {metric, ...},
  tensorrt {builder settings} or null, parity {results measured at export} or null,
  files {relative path: {sha256, bytes}}

The manifest's own hash sits beside it in `manifest.json.sha256`, so a corrupted byte anywhere in
the bundle is caught.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from geofractal_edge.errors import BundleError

FORMAT = "gfedge-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.json.sha256"
REQUIRED = ("format", "format_version", "family", "target", "precision", "graph", "files", "task")


@dataclass(frozen=True)
class Manifest:
    data: dict

    @property
    def family(self) -> str:
        return self.data["family"]

    @property
    def precision(self) -> str:
        return self.data["precision"]

    @property
    def target(self) -> dict:
        return self.data["target"]

    @property
    def graph(self) -> dict:
        return self.data["graph"]

    @property
    def inputs(self) -> list[dict]:
        return self.graph["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.graph["outputs"]

    @property
    def keys(self) -> dict | None:
        return self.data.get("keys")

    @property
    def files(self) -> dict[str, dict]:
        return self.data["files"]

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=False) + "\n"


def parse_manifest(text: str, *, source: Path) -> Manifest:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{source} is not valid JSON ({exc.msg})", "re-export the bundle") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{source} is not a gfedge bundle manifest", "point at a directory written by `gfedge export`")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"bundle format version {version} is not supported by this runtime (it reads {FORMAT_VERSION})",
            "re-export the bundle with this version of geofractal_edge, or upgrade the runtime",
        )
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise BundleError(f"{source} lacks fields {missing}", "re-export the bundle")
    for rel in data["files"]:
        check_relative(rel)
    return Manifest(data)


def check_relative(rel: str) -> PurePosixPath:
    """A manifest may name files inside its bundle only."""
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in rel:
        raise BundleError(f"manifest names a file outside the bundle: '{rel}'", "re-export the bundle; never edit manifest paths")
    return path
