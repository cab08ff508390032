"""Make a bundle smaller for a device: keep only some of its golden cases. No torch.

Golden data is often most of a bundle (torch's outputs for every case). `strip_golden` rewrites a
checked bundle with its first `keep` cases, through the same atomic directory and manifest seal as
an export, so `gfedge verify` on the result checks the cases kept; the parity recorded at export
(over every case) stays in the manifest as it was measured.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from geofractal_edge.artifacts import atomic
from geofractal_edge.artifacts.bundle import Bundle, open_bundle, seal
from geofractal_edge.errors import GfedgeError


def strip_golden(path: Path, *, keep: int, out: Path | None = None) -> Bundle:
    """Write the bundle at `path` with only its first `keep` golden cases to `out` (default: in place)."""
    bundle = open_bundle(Path(path))
    if keep < 1:
        raise GfedgeError(f"--keep {keep} would leave no case to verify", "keep at least 1 golden case")
    kept = list(bundle.manifest.golden.files[:keep])
    data = {k: v for k, v in bundle.manifest.to_dict().items() if k != "files"}
    data["golden"] = {"files": kept, "cases": len(kept)}
    target = Path(out) if out is not None else bundle.path
    with atomic.directory(target, overwrite=out is None) as staging:
        for rel in bundle.manifest.files:
            if rel.startswith("golden/") and rel not in kept:
                continue
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle.file(rel), staging / rel)
        seal(staging, data)
        open_bundle(staging)  # every hash checked before it replaces anything
    return open_bundle(target)
