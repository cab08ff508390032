"""2-bit packing of ternary weights {-1, 0, +1}: four weights per byte. numpy only (device side).

Codes: 0 -> 0b00, +1 -> 0b01, -1 -> 0b10; 0b11 never occurs, so a damaged pack is detected on unpack
even before (and independently of) the manifest's hash. Weight i sits in byte i // 4 at bits
2*(i % 4) .. 2*(i % 4)+1 (little end first).
"""

from __future__ import annotations

import numpy as np

from geofractal_edge.errors import BundleError

_INVALID = 0b11


def pack_ternary(values: np.ndarray) -> np.ndarray:
    """int8 {-1,0,1} of any shape -> uint8 [ceil(size / 4)]. The caller keeps the shape."""
    flat = np.asarray(values).reshape(-1)
    if not np.isin(flat, (-1, 0, 1)).all():
        raise ValueError("pack_ternary takes only -1, 0 and +1")
    codes = np.where(flat == 1, 1, np.where(flat == -1, 2, 0)).astype(np.uint8)
    codes = np.concatenate([codes, np.zeros((-codes.size) % 4, np.uint8)]).reshape(-1, 4)  # [bytes, 4]
    return (codes[:, 0] | codes[:, 1] << 2 | codes[:, 2] << 4 | codes[:, 3] << 6).astype(np.uint8)


def unpack_ternary(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 [ceil(size / 4)] -> int8 {-1,0,1} of `shape`; refuses a pack holding the unused code."""
    size = int(np.prod(shape))
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if packed.size != (size + 3) // 4:
        raise BundleError(f"packed ternary weights hold {packed.size} bytes, shape {list(shape)} needs {(size + 3) // 4}", "re-export the bundle")
    codes = np.stack([(packed >> shift) & 0b11 for shift in (0, 2, 4, 6)], axis=1).reshape(-1)[:size]  # [size]
    if (codes == _INVALID).any():
        raise BundleError("packed ternary weights hold an invalid 2-bit code (tampered or corrupted)", "re-export the bundle")
    return np.where(codes == 1, 1, np.where(codes == 2, -1, 0)).astype(np.int8).reshape(shape)


def unpack_tensors(packed: dict[str, np.ndarray], section) -> dict[str, np.ndarray]:
    """The manifest's ternary section (TernaryPacks) + packed arrays -> each tensor's codes in its graph dtype."""
    out = {}
    for name, meta in section.tensors.items():
        if name not in packed:
            raise BundleError(f"packed ternary tensor {name} is missing", "re-export the bundle")
        out[name] = unpack_ternary(packed[name], tuple(meta.shape)).astype(meta.dtype)
    return out
