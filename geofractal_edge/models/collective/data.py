"""Real data for the collective: scikit-learn's bundled digits (8x8 images, 10 classes, 1797 samples).

The held-out split is fixed: stratified, `test_fraction` = 0.25 (450 images), split seed 0, so
every run, the export's golden cases and the benchmarks score the same images. Features stay the
raw pixel values, integers in [0, 16], float32; the model scales them itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from geofractal_edge.errors import GfedgeError

TEST_FRACTION = 0.25
SPLIT_SEED = 0


@dataclass(frozen=True)
class DigitsSplit:
    x_train: Tensor  # [N, 64] float32 in [0, 16]
    y_train: Tensor  # [N] int64
    x_test: Tensor
    y_test: Tensor


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise GfedgeError("scikit-learn is not installed; the digits data ship with it", 'pip install "geofractal-edge[dev]"') from exc
    data = load_digits()
    return data.data.astype(np.float32), data.target.astype(np.int64)


def digits_split(*, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> DigitsSplit:
    """The fixed stratified train / held-out split."""
    from sklearn.model_selection import train_test_split

    x, y = load_digits_arrays()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return DigitsSplit(*(torch.from_numpy(np.ascontiguousarray(a)) for a in (x_train, y_train, x_test, y_test)))


def shift_images(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Move each 8x8 image by -1, 0 or +1 pixel along each axis (zero fill): [B, 64] -> [B, 64]."""
    img = torch.nn.functional.pad(x.reshape(-1, 8, 8), (1, 1, 1, 1))  # [B, 10, 10]
    dy, dx = torch.randint(0, 3, (2, x.shape[0]), generator=generator)
    rows = (dy[:, None] + torch.arange(8))[:, :, None]  # [B, 8, 1]
    cols = (dx[:, None] + torch.arange(8))[:, None, :]  # [B, 1, 8]
    return img[torch.arange(x.shape[0])[:, None, None], rows, cols].reshape(-1, 64)


@dataclass(frozen=True)
class ArrayData:
    """The user's own features: one array per stream, concatenated in file order, and a fixed held-out split."""

    widths: dict[str, int]  # stream name -> columns, in input order
    num_classes: int
    split: DigitsSplit  # x_* [N, sum(widths)] float32, y_* [N] int64


def load_arrays(path, *, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> ArrayData:
    """Read `path` (.npz: `stream_NAME` -> [N, width] per stream, `labels` -> [N] int) and split it.

    The held-out split is a seeded permutation's last `test_fraction` (at least one row each side);
    anything malformed is a one-line GfedgeError naming the array and the fix.
    """
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise GfedgeError(f"{path} is not a readable .npz file ({exc})", "write it with numpy.savez(path, stream_a=..., labels=...)") from exc
    streams = {key[len("stream_"):]: a for key, a in arrays.items() if key.startswith("stream_")}
    if not streams or "labels" not in arrays:
        raise GfedgeError(f"{path} needs arrays stream_NAME ([N, width], one per stream) and labels ([N] int)", "rename its arrays")
    labels = arrays["labels"]
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) < 2 or labels.min() < 0:
        raise GfedgeError(f"{path}: labels must be [N] non-negative integers, N >= 2 (got {labels.dtype} {labels.shape})", "store class indices 0..C-1")
    for name, a in streams.items():
        if a.ndim != 2 or len(a) != len(labels) or a.dtype.kind != "f" or not np.isfinite(a).all():
            raise GfedgeError(f"{path}: stream_{name} must be finite floats [N={len(labels)}, width] (got {a.dtype} {a.shape})", "store one row per label")
    n = len(labels)
    held = min(n - 1, max(1, int(round(n * test_fraction))))
    order = np.random.default_rng(seed).permutation(n)
    features = np.concatenate([streams[name].astype(np.float32) for name in streams], axis=1)  # [N, sum(widths)]
    train, test = order[: n - held], order[n - held :]
    parts = (features[train], labels[train].astype(np.int64), features[test], labels[test].astype(np.int64))
    split = DigitsSplit(*(torch.from_numpy(np.ascontiguousarray(a)) for a in parts))
    return ArrayData(widths={name: int(a.shape[1]) for name, a in streams.items()}, num_classes=int(labels.max()) + 1, split=split)
