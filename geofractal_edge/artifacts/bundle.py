"""Write and open bundles.

A bundle is a directory: manifest.json (+ its sha256), model.onnx, keys/, golden/, and later
engine files. `seal` hashes every file into the manifest; `open_bundle` checks every hash, every
path and the format version before anything is loaded, and refuses with the reason and the fix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load

from geofractal_edge.artifacts import atomic
from geofractal_edge.artifacts.golden import GoldenCase, read_case
from geofractal_edge.artifacts.hashing import file_sha256
from geofractal_edge.artifacts.keys import Key, read_key
from geofractal_edge.artifacts.ternary import unpack_tensors
from geofractal_edge.artifacts.manifest import MANIFEST, MANIFEST_HASH, MAX_MANIFEST_BYTES, FileEntry, Manifest, check_relative, manifest_from_dict, parse_manifest
from geofractal_edge.errors import BundleError, Bug

_RE_EXPORT = "re-export it with `gfedge export`"


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest

    def file(self, rel: str) -> Path:
        check_relative(rel)
        if rel not in self.manifest.files:
            raise BundleError(f"bundle {self.path} has no file '{rel}' in its manifest", _RE_EXPORT)
        return self.path / rel

    @property
    def model_path(self) -> Path:
        return self.file(self.manifest.graph.file)

    def key_names(self) -> list[str]:
        keys = self.manifest.keys
        return list(keys.names) if keys else []

    def key(self, name: str) -> Key:
        keys = self.manifest.keys
        if not keys or name not in keys.names:
            known = ", ".join(self.key_names()) or "none"
            raise BundleError(f"bundle has no key '{name}'", f"known keys: {known}")
        return read_key(self.file(keys.file(name)))

    def golden_cases(self) -> list[GoldenCase]:
        return [read_case(self.file(rel), name=Path(rel).stem) for rel in self.manifest.golden.files]

    def ternary_codes(self) -> dict[str, np.ndarray]:
        """Unpacked ternary codes for the graph's external initializers ({} when there are none)."""
        section = self.manifest.ternary
        if section is None:
            return {}
        try:
            packed = load(self.file(section.file).read_bytes())
        except SafetensorError as exc:
            raise BundleError(f"packed ternary weights cannot be read ({exc})", _RE_EXPORT) from exc
        return unpack_tensors(packed, section)

    @property
    def model_bytes(self) -> int:
        return sum(v.bytes for k, v in self.manifest.files.items() if not k.startswith("golden/"))

    @property
    def total_bytes(self) -> int:
        return sum(v.bytes for v in self.manifest.files.values())


def seal(staging: Path, data: dict) -> Manifest:
    """Hash every file under `staging` into the manifest and write it with its own hash.

    `data` is the manifest without `files`; it passes through the same schema a reader uses, so a
    manifest that a reader would refuse is never written.
    """
    staging = Path(staging)
    files = {}
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        rel = path.relative_to(staging).as_posix()
        if rel in (MANIFEST, MANIFEST_HASH):
            continue
        files[rel] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    try:
        # Through JSON and back first: the reader sees lists, never the writer's tuples.
        plain = json.loads(json.dumps({**data, "files": files}))
        manifest = manifest_from_dict(plain, source="the manifest being written")
    except BundleError as exc:
        raise Bug(f"the exporter wrote a manifest its own reader refuses: {exc.problem}") from exc
    text = manifest.to_json()
    atomic.write_text(staging / MANIFEST, text)
    atomic.write_text(staging / MANIFEST_HASH, hashlib.sha256(text.encode()).hexdigest() + "\n")
    return manifest


def open_bundle(path: Path) -> Bundle:
    """Check a bundle completely, then return it. Nothing is loaded from an unchecked bundle."""
    path = Path(path)
    if not path.is_dir():
        what = "is a file, not a bundle directory" if path.exists() else "does not exist"
        raise BundleError(f"bundle {path} {what}", "pass the directory written by `gfedge export --out`")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path} has no {MANIFEST}", "pass the directory written by `gfedge export --out`")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path} is larger than a manifest may be ({MAX_MANIFEST_BYTES:,} bytes)", _RE_EXPORT)
    raw = manifest_path.read_bytes()
    _check_manifest_hash(path, raw)
    manifest = parse_manifest(raw, source=manifest_path)
    for rel, meta in manifest.files.items():
        _check_file(path, rel, meta)
    return Bundle(path=path, manifest=manifest)


def _check_manifest_hash(path: Path, raw: bytes) -> None:
    sidecar = path / MANIFEST_HASH
    if not sidecar.is_file():
        raise BundleError(f"{path} has no {MANIFEST_HASH}", _RE_EXPORT)
    # Exact bytes: a damaged trailing newline must not be forgiven by strip().
    if sidecar.read_bytes() != (hashlib.sha256(raw).hexdigest() + "\n").encode():
        raise BundleError(f"{path / MANIFEST} does not match its recorded sha256 (corrupted or edited)", _RE_EXPORT)


def _check_file(root: Path, rel: str, meta: FileEntry) -> None:
    file = root / check_relative(rel)
    if not file.resolve().is_relative_to(root.resolve()):
        raise BundleError(f"manifest names a file outside the bundle: '{rel}'", _RE_EXPORT)
    if not file.is_file():
        raise BundleError(f"bundle file '{rel}' is missing", _RE_EXPORT)
    if file.stat().st_size != meta.bytes or file_sha256(file) != meta.sha256:
        raise BundleError(f"bundle file '{rel}' does not match its sha256 in the manifest (corrupted)", _RE_EXPORT)
